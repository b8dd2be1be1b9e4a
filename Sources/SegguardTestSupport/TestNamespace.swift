// Network namespaces for privileged tests and the benchmark. Owns the namespaces it creates
// (named `<prefix>-<pid>-<n>` so that concurrent runs never collide) and deletes them in
// `destroy()`; namespaces left by a crashed run of a dead process are removed on the next run.

import CLibNL
import CSegguardShims
import Foundation
import SegguardNetlink
import SegguardSystem
import SegguardPolicy
import SegguardSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A command that failed, with its output.
public struct CommandError: Error, CustomStringConvertible {
    public var description: String
    public init(description: String) { self.description = description }
}

/// Runs a program and returns its standard output; throws with stderr on a non-zero exit.
@discardableResult
public func runCommand(_ argv: [String], allowFailure: Bool = false) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: argv[0].hasPrefix("/") ? argv[0] : "/usr/bin/env")
    p.arguments = argv[0].hasPrefix("/") ? Array(argv.dropFirst()) : argv
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    if p.terminationStatus != 0 && !allowFailure {
        throw CommandError(description: "\(argv.joined(separator: " ")) exited \(p.terminationStatus): \(String(decoding: e, as: UTF8.self))")
    }
    return String(decoding: o, as: UTF8.self)
}

/// True when running as root (privileged tests skip otherwise, saying so).
public var isRoot: Bool { geteuid() == 0 }

/// Whether `ip netns` can be used here (root and iproute2 present).
public var canCreateNamespaces: Bool { isRoot && FileManager.default.isExecutableFile(atPath: "/usr/bin/ip") || FileManager.default.isExecutableFile(atPath: "/sbin/ip") }

/// A network namespace made for one test; `destroy()` deletes it and everything in it.
public final class TestNamespace: Sendable {
    private static let counter = Mutex(0)
    public let name: String
    public var path: String { "/run/netns/\(name)" }

    public init(prefix: String = "sgtest") throws {
        TestNamespace.removeStale(prefix: prefix)
        let n = TestNamespace.counter.withLock { c -> Int in
            c += 1
            return c
        }
        name = "\(prefix)-\(getpid())-\(n)"
        try runCommand(["ip", "netns", "add", name])
        try ip("link", "set", "lo", "up")
    }

    /// `ip -n NAME ARGS…`
    @discardableResult
    public func ip(_ args: String...) throws -> String {
        try runCommand(["ip", "-n", name] + args)
    }

    /// Runs `ip -n NAME -batch -` style commands from a list of lines.
    public func ipBatch(_ lines: [String]) throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-batch-\(UUID().uuidString)")
        try lines.joined(separator: "\n").appending("\n").write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        try runCommand(["ip", "-n", name, "-batch", file.path])
    }

    /// A veth pair inside the namespace with distinct ifindexes (equal indexes make the
    /// kernel treat the pair like a physical NIC and delay carrier events up to 1 s).
    public func addVeth(_ a: String, index ai: Int, peer b: String, index bi: Int, up: Bool = true) throws {
        try ip("link", "add", a, "index", "\(ai)", "type", "veth", "peer", "name", b, "index", "\(bi)")
        if up {
            try ip("link", "set", a, "up")
            try ip("link", "set", b, "up")
        }
    }

    public func destroy() {
        _ = try? runCommand(["ip", "netns", "del", name], allowFailure: true)
    }

    /// Deletes `<prefix>-<pid>-<n>` namespaces whose process no longer exists.
    static func removeStale(prefix: String) {
        guard let list = try? FileManager.default.contentsOfDirectory(atPath: "/run/netns") else { return }
        for entry in list where entry.hasPrefix(prefix + "-") {
            let parts = entry.split(separator: "-")
            guard parts.count >= 3, let pid = Int32(parts[parts.count - 2]), pid != getpid() else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH {
                _ = try? runCommand(["ip", "netns", "del", entry], allowFailure: true)
            }
        }
    }
}

/// Collects snapshots from a watcher and lets a test wait until one satisfies a condition.
/// The timeout only bounds a failing test; the waiter is woken by each snapshot, not polled.
public final class SnapshotRecorder: Sendable {
    private let state = Mutex<[NetworkSnapshot]>([])
    private let condition = NSCondition()

    public init() {}

    public func record(_ s: NetworkSnapshot) {
        condition.lock()
        state.withLock { $0.append(s) }
        condition.broadcast()
        condition.unlock()
    }

    public var all: [NetworkSnapshot] { state.withLock { $0 } }
    public var latest: NetworkSnapshot? { state.withLock { $0.last } }

    /// The first snapshot after `after` (generation) that satisfies `predicate`, or nil on timeout.
    public func wait(after generation: UInt64 = 0, timeout: TimeInterval = 10, _ predicate: (NetworkSnapshot) -> Bool) -> NetworkSnapshot? {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while true {
            if let hit = state.withLock({ $0.first { $0.generation > generation && predicate($0) } }) { return hit }
            if !condition.wait(until: deadline) { return nil }
        }
    }
}

/// Flips a link's administrative state by sending RTM_NEWLINK over libnl from a socket opened
/// inside a namespace (a socket stays in the namespace it was created in).
public final class LinkToggler: @unchecked Sendable {
    private let sock: OpaquePointer

    /// Result of opening the socket on the helper thread.
    private final class Opened: @unchecked Sendable {
        var sock: OpaquePointer?
        var failure: String?
    }

    public init(namespacePath: String) throws {
        let box = Opened()
        let done = DispatchSemaphore(value: 0)
        // setns affects only the calling thread, so enter the namespace on a throwaway thread.
        startThread(name: "sg-test-toggler") {
            defer { done.signal() }
            do { try enterNetworkNamespace(namespacePath) } catch { box.failure = "\(error)"; return }
            guard let s = nl_socket_alloc() else { box.failure = "nl_socket_alloc"; return }
            let c = nl_connect(s, Int32(NETLINK_ROUTE))
            guard c == 0 else { box.failure = "nl_connect: \(String(cString: nl_geterror(c)))"; nl_socket_free(s); return }
            box.sock = s
        }
        done.wait()
        guard let made = box.sock else { throw CommandError(description: "LinkToggler: \(box.failure ?? "unknown failure")") }
        sock = made
    }

    deinit { nl_socket_free(sock) }

    /// Sets IFF_UP on or off for `ifindex` and waits for the kernel's acknowledgement.
    public func setUp(_ ifindex: Int32, _ up: Bool) throws {
        guard let msg = nlmsg_alloc_simple(Int32(RTM_NEWLINK), Int32(NLM_F_REQUEST | NLM_F_ACK)) else { throw CommandError(description: "nlmsg_alloc_simple") }
        defer { nlmsg_free(msg) }
        var ifi = ifinfomsg()
        ifi.ifi_family = UInt8(AF_UNSPEC)
        ifi.ifi_index = ifindex
        ifi.ifi_flags = up ? UInt32(IFF_UP.rawValue) : 0
        ifi.ifi_change = UInt32(IFF_UP.rawValue)
        _ = nlmsg_append(msg, &ifi, MemoryLayout<ifinfomsg>.size, Int32(NLMSG_ALIGNTO))
        let sent = nl_send_auto(sock, msg)
        guard sent >= 0 else { throw CommandError(description: "nl_send_auto: \(String(cString: nl_geterror(sent)))") }
        let ack = nl_wait_for_ack(sock)
        guard ack >= 0 else { throw CommandError(description: "RTM_NEWLINK ifindex \(ifindex): \(String(cString: nl_geterror(ack)))") }
    }
}
