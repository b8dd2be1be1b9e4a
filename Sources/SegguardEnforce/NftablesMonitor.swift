// nf_tables' change notifications (the NFNLGRP_NFTABLES multicast group: what `nft monitor`
// reads), filtered to one table and to transactions made by other processes. Owns one
// non-blocking NETLINK_NETFILTER socket, opened in the namespace of the thread that creates
// it; the agent watches its descriptor on its loop and drains it when readable.
//
// The kernel sends, for each committed transaction, one message per table, chain, rule, set
// or element it changed, then NFT_MSG_NEWGEN carrying the new generation and the pid and
// name of the task that committed it. A transaction that touched our table and whose task is
// not one of the binding's own threads is a foreign change.
//
// Failure table:
//   socket or group membership refused -> init throws (the agent falls back to the periodic check)
//   the socket overflowed (ENOBUFS)    -> `.overflow`: messages were lost, the table must be checked
//   a malformed message                -> skipped (it cannot make a change look like ours)

import CLibNL
import FoundationEssentials
import SegguardSystem

#if canImport(Glibc)
import Glibc
#endif

/// A committed nf_tables transaction that changed the binding's table.
public struct TableChange: Sendable, Equatable {
    /// The generation the transaction committed (NFTA_GEN_ID).
    public var generation: UInt32
    /// The task that committed it (a thread id; the process's pid for a single-threaded
    /// program such as `nft`) and its name (comm).
    public var pid: Int32
    public var process: String
    public init(generation: UInt32, pid: Int32, process: String) {
        self.generation = generation
        self.pid = pid
        self.process = process
    }
}

/// What one drain of the notification socket found.
public struct TableChanges: Sendable, Equatable {
    /// Transactions by other processes that touched the table, in order.
    public var foreign: [TableChange] = []
    /// Notifications were lost (the socket's buffer overflowed): the table may have changed
    /// without a message saying so.
    public var overflow = false
    public init(foreign: [TableChange] = [], overflow: Bool = false) {
        self.foreign = foreign
        self.overflow = overflow
    }
    public var isEmpty: Bool { foreign.isEmpty && !overflow }
}

/// A source of foreign changes to the binding's table, watched on the agent's loop.
/// `NftablesMonitor` is the real one; SegguardTestFakes has a fake.
public protocol TableChangeFeed: AnyObject {
    /// Readable when there is something to drain.
    var fd: Int32 { get }
    /// Reads everything pending without blocking.
    func drain() -> TableChanges
}

/// Subscribes to nf_tables notifications and reports the foreign changes to one table. Used by
/// one thread at a time (made on one, drained on the agent's loop).
public final class NftablesMonitor: TableChangeFeed, @unchecked Sendable {
    private let socket: NetfilterSocket
    public var fd: Int32 { socket.fd }
    private var parser: NftablesNotificationParser
    private var buffer = [UInt8](repeating: 0, count: 256 * 1024)

    static let group: Int32 = 7  // NFNLGRP_NFTABLES

    /// Opens the socket in the calling thread's network namespace and joins the group.
    public init(table: String, isOwn: @escaping @Sendable (Int32, String) -> Bool) throws(NftablesError) {
        // A burst of foreign changes should not overflow it.
        socket = try NetfilterSocket(purpose: "nf_tables notifications", receiveBuffer: 4 * 1024 * 1024)
        parser = NftablesNotificationParser(table: table, isOwn: isOwn)
        var group = Self.group
        guard setsockopt(socket.fd, 270 /* SOL_NETLINK */, 1 /* NETLINK_ADD_MEMBERSHIP */, &group, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            let e = errno
            throw NftablesError(operation: "join the nf_tables notification group", detail: "\(String(cString: strerror(e))) (errno \(e))")
        }
    }

    public func drain() -> TableChanges {
        var out = TableChanges()
        out.overflow = socket.drain(into: &buffer, lost: { parser.touched = false }) { bytes, n in
            out.foreign += parser.parse(bytes, count: n)
        }
        return out
    }
}

/// Reads nf_tables notifications (as they come, over any number of datagrams) into the foreign
/// changes to one table. Pure: tests drive it with constructed messages, no socket.
struct NftablesNotificationParser {
    let table: String
    /// True for a task (id, comm) that is one of this process's binding threads (its own
    /// transactions).
    let isOwn: @Sendable (Int32, String) -> Bool
    /// A change to the table seen in the transaction being read (until its NEWGEN).
    var touched = false

    static let newGeneration: UInt8 = 15  // NFT_MSG_NEWGEN
    static let genID: UInt16 = 1, genPID: UInt16 = 2, genName: UInt16 = 3  // NFTA_GEN_*

    /// The foreign changes in one datagram (several netlink messages).
    mutating func parse(_ bytes: [UInt8], count: Int) -> [TableChange] {
        var out: [TableChange] = []
        var off = 0
        while off + 16 <= count {
            let len = Int(NftablesFingerprintReader.readU32(bytes, off)), type = NftablesFingerprintReader.readU16(bytes, off + 4)
            guard len >= 16, off + len <= count else { break }
            defer { off += (len + 3) & ~3 }
            guard type >> 8 == NftablesFingerprintReader.subsystem, len >= 20 else { continue }
            let message = UInt8(type & 0xff)
            let family = bytes[off + 16]
            let attributes = NftablesFingerprintReader.attributes(of: Array(bytes[(off + 20)..<(off + len)]))
            if message == Self.newGeneration {
                defer { touched = false }
                guard touched else { continue }
                let id = attributes.first { $0.type == Self.genID }.map { Self.bigEndianU32($0.payload) } ?? 0
                let pid = attributes.first { $0.type == Self.genPID }.map { Int32(bitPattern: Self.bigEndianU32($0.payload)) } ?? 0
                let name = attributes.first { $0.type == Self.genName }.map { String(decoding: $0.payload.prefix { $0 != 0 }, as: UTF8.self) } ?? ""
                if !isOwn(pid, name) { out.append(TableChange(generation: id, pid: pid, process: name)) }
                continue
            }
            // Every object message names its table in attribute 1 (NFTA_TABLE_NAME,
            // NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, NFTA_SET_TABLE, NFTA_SET_ELEM_LIST_TABLE,
            // NFTA_OBJ_TABLE, NFTA_FLOWTABLE_TABLE).
            guard family == NftablesFingerprintReader.familyInet, let name = attributes.first(where: { $0.type == 1 }) else { continue }
            if name.payload.prefix(while: { $0 != 0 }).elementsEqual(table.utf8) { touched = true }
        }
        return out
    }

    static func bigEndianU32(_ b: [UInt8]) -> UInt32 {
        guard b.count >= 4 else { return 0 }
        return UInt32(b[0]) << 24 | UInt32(b[1]) << 16 | UInt32(b[2]) << 8 | UInt32(b[3])
    }
}
