// The libnftables context of the network binding. Owns one `nft_ctx` (behind a Mutex: a
// context is not thread-safe) and, through it, the kernel table `inet <table>`. Releasing the
// object frees only the context: the table stays in the kernel (fail closed).

import CNftables
import FoundationEssentials
import SegguardEssentials
import SegguardPolicy
import SegguardSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A libnftables (or file) operation that failed: what was being done and libnftables' text.
public struct NftablesError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What was being done, e.g. "apply the transaction to table inet segguard".
    public var operation: String
    /// libnftables' error buffer (or the system error), trimmed.
    public var detail: String

    public init(operation: String, detail: String) {
        self.operation = operation
        self.detail = detail
    }

    public var description: String { "nftables: cannot \(operation): \(detail.isEmpty ? "no error text from libnftables" : detail)" }
}

/// The binding's handle on the kernel's nftables: applies `NftablesRuleset` batches in one
/// transaction each, lists and deletes the table.
///
/// The binding acts in the network namespace of the thread that CREATED it (libnftables 1.0.6
/// opens its netlink socket in `nft_ctx_new`); create it on a thread inside the namespace
/// whose table it manages. Releasing it never deletes the table.
public final class NftablesBinding: Sendable {
    /// The table name (family `inet`).
    public let table: String
    /// Transactions go through `ctx`; listings through `listCtx`, so that a listing (which
    /// fills libnftables' cache with every rule) never leaves work for the next transaction.
    private let ctx: Mutex<OpaquePointer>
    private let listCtx: Mutex<OpaquePointer>
    /// Reads the table straight from the kernel for the periodic check (no libnftables).
    private let reader: NftablesFingerprintReader
    /// The nf_tables notifications about the table (made with `watchChanges: true`).
    private let monitor: Mutex<NftablesMonitor?>
    /// The refused gateway packets (made with `watchChanges: true`), or why they cannot be read.
    private let refusals: Mutex<Result<GatewayRefusalMonitor, NftablesError>?>
    /// Thread ids that have run a transaction through this binding: their notifications are
    /// this process's own changes, not a foreign one.
    private let ownThreads = OwnThreads()

    /// Every libnftables call of the process, across contexts, holds this lock: libnftables
    /// is not documented as thread-safe and keeps process-global state (one-time library
    /// setup in `nft_ctx_new`, an interface-name cache), so two contexts must not run on two
    /// threads at once. segguardd has one context; tests and benchmarks have several.
    private static let library = Mutex(())

    /// A context with JSON output and buffered output and errors. With `watchChanges`, also
    /// subscribes (now, in this thread's namespace) to nf_tables' notifications for the table
    /// (`changeFeed()`) and to the refused gateway packets the table logs (`refusalFeed()`; a
    /// failure there is handed out by it, not thrown here).
    public init(table: String = "segguard", watchChanges: Bool = false) throws(NftablesError) {
        guard NftablesRuleset.isValidTableName(table) else {
            throw NftablesError(operation: "use table name \"\(table)\"", detail: "a table name here has 1 to 64 ASCII letters, digits, '_' or '-', starting with a letter")
        }
        let c = try Self.makeContext()
        let l: OpaquePointer
        do {
            l = try Self.makeContext()
        } catch {
            Self.library.withLock { _ in nft_ctx_free(c) }
            throw error
        }
        do {
            reader = try NftablesFingerprintReader()
        } catch {
            Self.library.withLock { _ in
                nft_ctx_free(c)
                nft_ctx_free(l)
            }
            throw error
        }
        self.table = table
        self.ctx = Mutex(c)
        self.listCtx = Mutex(l)
        self.monitor = Mutex(nil)
        self.refusals = Mutex(nil)
        if watchChanges {
            do throws(NftablesError) {
                let r = try GatewayRefusalMonitor()
                refusals.withLock { $0 = .success(r) }
            } catch {
                refusals.withLock { $0 = .failure(error) }
            }
            let own = ownThreads
            let m = try NftablesMonitor(table: table) { tid, name in own.contains(tid, name: name) }
            monitor.withLock { $0 = m }
        }
    }

    /// The feed of foreign changes to the table, handed out once (nil without `watchChanges`).
    public func changeFeed() -> (any TableChangeFeed)? {
        monitor.withLock { m in
            defer { m = nil }
            return m
        }
    }

    /// The refused gateway packets, handed out once (nil without `watchChanges`).
    public func refusalFeed() throws(NftablesError) -> (any GatewayRefusalFeed)? {
        let r = refusals.withLock { r in
            defer { r = nil }
            return r
        }
        switch r {
        case .success(let m): return m
        case .failure(let e): throw e
        case nil: return nil
        }
    }

    /// The table as the kernel holds it, as bytes without handles or counter values; nil when
    /// it is absent. Equal fingerprints: nobody changed the table in between.
    public func fingerprint() throws(NftablesError) -> [UInt8]? {
        try reader.read(table: table)
    }

    private static func makeContext() throws(NftablesError) -> OpaquePointer {
        let made: OpaquePointer? = Self.library.withLock { _ in
            guard let c = nft_ctx_new(UInt32(NFT_CTX_DEFAULT)) else { return nil }
            // In libnftables 1.0.6 the JSON output flag also makes it parse JSON input.
            nft_ctx_output_set_flags(c, UInt32(NFT_CTX_OUTPUT_JSON))
            guard nft_ctx_buffer_output(c) == 0, nft_ctx_buffer_error(c) == 0 else {
                nft_ctx_free(c)
                return OpaquePointer(bitPattern: 1)
            }
            return c
        }
        guard let c = made else {
            throw NftablesError(operation: "create a libnftables context", detail: "nft_ctx_new returned NULL")
        }
        guard c != OpaquePointer(bitPattern: 1) else {
            throw NftablesError(operation: "create a libnftables context", detail: "cannot buffer output")
        }
        return c
    }

    deinit {
        // Only the contexts: the table is deliberately left in the kernel.
        ctx.withLock { c in Self.library.withLock { _ in nft_ctx_free(c) } }
        listCtx.withLock { c in Self.library.withLock { _ in nft_ctx_free(c) } }
    }

    /// Runs one batch (from `NftablesRuleset`, or a baseline file) in a single
    /// `nft_run_cmd_from_buffer` call (nft text; a context with JSON output also takes JSON).
    /// On failure nothing of the batch is committed: the kernel keeps the previous table.
    public func apply(_ transaction: Data) throws(NftablesError) {
        _ = try run(transaction, "apply the transaction to table inet \(table)", in: ctx)
    }

    /// The JSON listing of `inet <table>` (with counters), or nil when the table is absent.
    public func listTable() throws(NftablesError) -> String? {
        do {
            return try run(NftablesRuleset.listCommand(table: table), "list table inet \(table)", in: listCtx)
        } catch {
            // Tell "absent" from a real failure by looking at the table list.
            let tables = try run(NftablesRuleset.listTablesCommand(), "list tables", in: listCtx)
            if hasTable(in: tables) { throw error }
            return nil
        }
    }

    /// Deletes the table; no error when it is absent (uninstall and tests).
    public func deleteTable() throws(NftablesError) {
        _ = try run(NftablesRuleset.deleteCommand(table: table), "delete table inet \(table)", in: ctx)
    }

    /// Writes `NftablesRuleset.baseline` for this table to `path` atomically (`AtomicFile`),
    /// mode 0644, for `nft -f PATH` at boot and after a stop.
    public func writeBaseline(gateways: [Gateway], mode: ControlMode = .enforce, to path: String) throws(NftablesError) {
        do {
            try AtomicFile.write(NftablesRuleset.baseline(table: table, gateways: gateways, mode: mode), to: path, mode: 0o644)
        } catch {
            throw NftablesError(operation: "write the baseline ruleset to \(path)", detail: error.description)
        }
    }

    // MARK: - libnftables

    /// Runs one JSON batch; returns the output buffer or throws with the error buffer.
    private func run(_ json: Data, _ what: String, in context: borrowing Mutex<OpaquePointer>) throws(NftablesError) -> String {
        // One copy, NUL-terminated for C; a batch with a NUL (none that NftablesRuleset
        // builds) would be cut short by C, so it is refused.
        var text = [CChar](repeating: 0, count: json.count + 1)
        var hasNUL = false
        json.withUnsafeBytes { raw in
            for (i, b) in raw.enumerated() {
                if b == 0 { hasNUL = true }
                text[i] = CChar(bitPattern: b)
            }
        }
        guard !hasNUL else { throw NftablesError(operation: what, detail: "the batch contains a NUL byte") }
        let tid = currentThreadID()
        ownThreads.insert(tid)
        return try context.withLock { (c: inout OpaquePointer) throws(NftablesError) -> String in
            let (rc, out, err) = Self.library.withLock { _ in
                let rc = nft_run_cmd_from_buffer(c, text)
                // Reading a buffer rewinds it, so read both every time.
                let out = nft_ctx_get_output_buffer(c).map { String(cString: $0) } ?? ""
                let err = nft_ctx_get_error_buffer(c).map { String(cString: $0) } ?? ""
                return (rc, out, err)
            }
            guard rc == 0 else {
                throw NftablesError(operation: what, detail: err.trimmed())
            }
            return out
        }
    }

    private func hasTable(in listing: String) -> Bool {
        guard let root = JSONValue.parse(Data(listing.utf8)), let items = root["nftables"]?.array else { return false }
        return items.contains { item in
            guard let t = item["table"] else { return false }
            return t["family"]?.string == NftablesRuleset.family && t["name"]?.string == table
        }
    }
}

/// The thread ids that ran this binding's transactions (at most 64: the daemon uses one or two).
final class OwnThreads: Sendable {
    private let ids = Mutex<(tids: Set<Int32>, names: Set<String>)>(([], []))
    /// nf_tables names the committing task by its pid in the initial pid namespace; in another
    /// one (a container) this process cannot know its own, so its threads are known by name.
    static let inInitialPIDNamespace = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/pid")) == "pid:[4026531836]"

    /// Records the calling thread (`tid`, and its name as the kernel's comm).
    /// Called before every transaction: the thread's name is read only the first time.
    func insert(_ tid: Int32) {
        guard ids.withLock({ !$0.tids.contains(tid) && $0.tids.count < 64 }) else { return }
        let name = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8))?.trimmed(where: \.isNewline) ?? ""
        ids.withLock { _ = $0.tids.insert(tid); _ = $0.names.insert(name) }
    }

    /// The task that committed a transaction (pid and comm from NFT_MSG_NEWGEN) is one of ours.
    func contains(_ tid: Int32, name: String) -> Bool {
        ids.withLock { Self.inInitialPIDNamespace ? $0.tids.contains(tid) : (!name.isEmpty && $0.names.contains(name)) }
    }
}
