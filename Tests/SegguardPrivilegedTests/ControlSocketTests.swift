// The control socket without a daemon: a ControlServer on a temporary path, queried by
// ControlClient and by raw bytes. Needs no root.

import Foundation
import SegguardControl
import SegguardDecision
import SegguardPolicy
import SegguardSystem
import SegguardWire
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A server on a fresh temporary socket path answering a fixed status.
func withServer(_ body: (String) throws -> Void) throws {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("sgctl-\(getpid())-\(UUID().uuidString.prefix(8)).sock").path
    let server = try ControlServer(path: path, adminGroup: nil, logger: .init(label: "test"))
    defer { server.stop() }
    let status = StatusReply(
        daemonVersion: segguardVersion, pid: 1, policyName: "p", policyFile: "/etc/segguard/policy.yaml",
        policyLoadedAt: Date(timeIntervalSince1970: 0), lastPolicyError: nil, snapshot: .empty,
        decision: .failClosed("no network snapshot yet"), decidedAt: Date(timeIntervalSince1970: 0),
        decisionChanges: 0, netlinkMessages: 0, netlinkResyncs: 0, netlinkParseErrors: 0)
    server.start { request, _ in
        request.version == controlProtocolVersion ? ControlReply(status: status) : ControlReply(error: "control protocol \(request.version) is not supported")
    }
    try body(path)
}

/// Sends raw bytes and returns the raw reply line.
func rawExchange(_ path: String, _ bytes: String) throws -> String {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
    let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
    try #require(rc == 0)
    _ = bytes.withCString { send(fd, $0, strlen($0), 0) }
    shutdown(fd, Int32(SHUT_WR))
    var out = [UInt8](), chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = recv(fd, &chunk, chunk.count, 0)
        if n <= 0 { break }
        out += chunk[0..<n]
    }
    return String(decoding: out, as: UTF8.self)
}

@Suite("Control socket")
struct ControlSocketTests {
    @Test("a status request is answered with the daemon's state")
    func statusRoundTrip() throws {
        try withServer { path in
            let reply = try ControlClient.send(ControlRequest(command: .status), path: path)
            #expect(reply.error == nil)
            #expect(reply.status?.decision.segment == .unauthorized)
            #expect(reply.status?.decision.reason == "no network snapshot yet")
            #expect(reply.status?.policyFile == "/etc/segguard/policy.yaml")
        }
    }

    @Test("garbage and unknown commands get a clear error reply, and the server keeps serving")
    func badRequests() throws {
        try withServer { path in
            let garbage = try rawExchange(path, "hello\n")
            #expect(garbage.contains("\"message\":\"bad request: expected one JSON line such as"))
            let unknown = try rawExchange(path, "{\"version\":1,\"command\":\"reboot\"}\n")
            #expect(unknown.contains("bad request"))
            let future = try rawExchange(path, "{\"version\":7,\"command\":\"status\"}\n")
            #expect(future.contains("control protocol 7 is not supported"))
            #expect(try ControlClient.send(ControlRequest(command: .why), path: path).status != nil)
        }
    }

    @Test("a client that connects and sends nothing delays no one else")
    func silentClientDoesNotBlock() throws {
        try withServer { path in
            // Three silent connections, each holding a connection thread until its 2 s deadline.
            var silent: [Int32] = []
            defer { silent.forEach { close($0) } }
            for _ in 0..<3 {
                let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
                var addr = sockaddr_un()
                addr.sun_family = sa_family_t(AF_UNIX)
                withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
                let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
                try #require(rc == 0)
                silent.append(fd)
            }
            let start = Date()
            let reply = try ControlClient.send(ControlRequest(command: .status), path: path)
            #expect(reply.status != nil)
            // Served concurrently: well before the silent clients' 2 s deadline.
            #expect(Date().timeIntervalSince(start) < 1.5)
        }
    }

    @Test("connection slots: a few per user, the users' share bounded, slots kept for root and the admin group")
    func connectionSlots() {
        var slots = ConnectionSlots(limits: ControlServer.Limits(total: 10, reservedForAdmins: 3, perUser: 2))
        func take(_ uid: UInt32, admin: Bool = false) -> Bool { slots.admit(uid: uid, admin: admin) }
        #expect(take(1000) && take(1000))
        #expect(!take(1000), "a third connection of uid 1000")
        for uid in UInt32(1001)...1002 { #expect(take(uid) && take(uid)) }
        #expect(slots.total == 6)
        #expect(take(1003))
        #expect(!take(1004), "the users' share (10 - 3) is used up")
        for _ in 0..<3 { #expect(take(0, admin: true), "kept for admins") }
        #expect(!take(0, admin: true), "all 10 taken")
        slots.release(uid: 1000)
        #expect(!take(1004), "one free slot, but it is below the reserve")
        #expect(take(0, admin: true))
        slots.release(uid: 4242)  // never admitted: nothing changes
        #expect(slots.total == 10)
        for uid: UInt32 in [1000, 1001, 1001, 1002, 1002, 1003, 0, 0, 0, 0] { slots.release(uid: uid) }
        #expect(slots.total == 0 && slots.byUID.isEmpty)
    }

    @Test("no daemon: the client names the socket and hints at the service")
    func noDaemon() {
        #expect(throws: ControlClientError.self) { try ControlClient.send(ControlRequest(command: .status), path: "/nonexistent/segguard.sock") }
        do {
            _ = try ControlClient.send(ControlRequest(command: .status), path: "/nonexistent/segguard.sock")
        } catch {
            #expect(error.description.hasPrefix("cannot reach segguardd at /nonexistent/segguard.sock: No such file or directory (errno 2)"))
            #expect(error.description.contains("hint: is segguardd running?"))
        }
    }

    @Test("only root or members of the admin group are answered", arguments: [
        (PeerCredentials(pid: 1, uid: 0, gid: 0, groups: []), UInt32?.none, true),
        (PeerCredentials(pid: 1, uid: 1000, gid: 1000, groups: []), UInt32?.none, false),
        (PeerCredentials(pid: 1, uid: 1000, gid: 1000, groups: [27, 990]), UInt32?(990), true),
        (PeerCredentials(pid: 1, uid: 1000, gid: 990, groups: []), UInt32?(990), true),
        (PeerCredentials(pid: 1, uid: 1000, gid: 1000, groups: [27]), UInt32?(990), false),
    ])
    func authorization(peer: PeerCredentials, group: UInt32?, allowed: Bool) {
        #expect(ControlServer.isAuthorized(peer, adminGroup: group) == allowed)
    }
}
