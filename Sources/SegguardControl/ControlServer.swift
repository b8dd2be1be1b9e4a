// The daemon's end of the local control socket. Owns: the listening Unix socket, its file,
// the accept thread and the count of connections being served, per uid. Every connection is
// identified by its peer credentials (SO_PEERCRED, SO_PEERGROUPS) as it is accepted, before
// it takes a slot: root and members of the admin group may ask anything and have slots kept
// for them; any other user may only ask `launch`, with a few connections at a time.
//
// Failure table:
//   a user at its connection limit   -> the connection is closed at once (one log line per 10 s)
//   all slots for users taken        -> the same; root and the admin group still get in
//   all slots taken                  -> the same for everyone (the limit bounds threads)
//   no credentials                   -> closed at once
//   accept fails (out of fds)        -> logged (once per 10 s), retried after 0.1 s

import CSegguardShims
import FoundationEssentials
import SegguardEssentials
import Dispatch
import Logging
import SegguardSystem
import SegguardWire
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Serves `ControlRequest`s on a Unix stream socket.
public final class ControlServer: Sendable {
    public let path: String
    /// Group whose members (besides root) may query the daemon; nil = root only.
    public let adminGroup: UInt32?
    let listenFd: Int32
    let logger: Logger
    let stopped = Mutex(false)
    /// Connections being served right now (each on its own thread), in all and per uid.
    let active: Mutex<ConnectionSlots>
    public let limits: Limits
    /// Log lines that a flood could repeat: at most one per kind every 10 s, with a count.
    let refusedLog = RateLimitedLog(interval: 10)
    let deniedLog = RateLimitedLog(interval: 10)
    let acceptLog = RateLimitedLog(interval: 10)
    /// A connection gets this long, in total, to send its request and take the reply.
    public static let connectionDeadline = 2.0
    let groupName: String

    /// How many connections are served at once.
    public struct Limits: Sendable, Equatable {
        /// In all (each is a thread for up to `connectionDeadline`).
        public var total: Int
        /// Kept for root and the admin group: other users together get `total - reservedForAdmins`.
        public var reservedForAdmins: Int
        /// For one uid that is neither root nor in the admin group.
        public var perUser: Int
        public init(total: Int = 64, reservedForAdmins: Int = 8, perUser: Int = 4) {
            self.total = max(1, total)
            self.reservedForAdmins = min(max(0, reservedForAdmins), self.total)
            self.perUser = max(1, perUser)
        }
    }

    /// Creates the socket file (replacing a stale one), mode 0666: access is decided by peer
    /// credentials, so that the refusal names the reason instead of a bare EACCES.
    public init(path: String, adminGroup: UInt32?, adminGroupName: String = "segguard", limits: Limits = Limits(), logger: Logger) throws {
        self.path = path
        self.limits = limits
        self.active = Mutex(ConnectionSlots(limits: limits))
        self.adminGroup = adminGroup
        self.groupName = adminGroupName
        self.logger = logger
        let dir = PathName.directory(path)
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError(call: "socket(AF_UNIX)", errno: errno) }
        unlink(path)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            close(fd)
            throw SystemError(call: "bind \(path) (path too long)", errno: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw SystemError(call: "bind \(path)", errno: e)
        }
        chmod(path, 0o666)
        guard listen(fd, 128) == 0 else {
            let e = errno
            close(fd)
            throw SystemError(call: "listen \(path)", errno: e)
        }
        listenFd = fd
    }

    /// Starts the accept thread; each admitted connection is served on a thread of its own, so
    /// a client that sends nothing delays no one else. Credentials are read as the connection is
    /// accepted; a connection over its limits is closed at once, before it holds a thread.
    public func start(handler: @escaping @Sendable (ControlRequest, PeerCredentials) -> ControlReply) {
        startThread(name: "sg-control") { [self] in
            while !stopped.withLock({ $0 }) {
                let conn = accept(listenFd, nil, nil)
                if conn < 0 {
                    let e = errno
                    if stopped.withLock({ $0 }) { return }
                    if e == EINTR || e == ECONNABORTED { continue }
                    // Out of fds or memory: say so (rate-limited) and keep serving.
                    acceptLog.note(logger, level: .error, "control socket accept failed; retrying", ["error": "\(SystemError(call: "accept", errno: e))"])
                    usleep(100_000)
                    continue
                }
                _ = fcntl(conn, F_SETFD, FD_CLOEXEC)
                guard let peer = credentials(conn) else {
                    close(conn)
                    continue
                }
                let admin = ControlServer.isAuthorized(peer, adminGroup: adminGroup)
                guard admit(uid: peer.uid, admin: admin) else {
                    refusedLog.note(logger, level: .warning, "control socket: connection refused, limit reached", [
                        "uid": "\(peer.uid)", "limits": "\(limits.perUser) per user, \(limits.total - limits.reservedForAdmins) for users, \(limits.total) in all",
                    ])
                    close(conn)
                    continue
                }
                startThread(name: "sg-control-conn") { [self] in
                    serve(conn, peer: peer, admin: admin, handler)
                    close(conn)
                    release(uid: peer.uid)
                }
            }
        }
    }

    func admit(uid: UInt32, admin: Bool) -> Bool { active.withLock { $0.admit(uid: uid, admin: admin) } }
    func release(uid: UInt32) { active.withLock { $0.release(uid: uid) } }

    /// Connections being served now (tests).
    public var activeConnections: Int { active.withLock { $0.total } }

    /// Stops accepting and removes the socket file; a second call does nothing (the listening
    /// descriptor is closed once, never a number reused since).
    public func stop() {
        guard stopped.withLock({ s in defer { s = true }; return !s }) else { return }
        shutdown(listenFd, Int32(SHUT_RDWR))
        close(listenFd)
        unlink(path)
    }

    /// The peer as it connected (no pidfd: taken only for a launch, in `serve`).
    func credentials(_ fd: Int32) -> PeerCredentials? {
        var pid: pid_t = 0, uid: uid_t = 0, gid: gid_t = 0
        guard sg_peer_credentials(fd, &pid, &uid, &gid) == 0 else { return nil }
        var groups = [gid_t](repeating: 0, count: 256)
        var count: Int32 = 256
        let rc = sg_peer_groups(fd, &groups, &count)
        return PeerCredentials(pid: pid, uid: uid, gid: gid, groups: rc == 0 ? Array(groups.prefix(Int(count))) : [], pidfd: -1)
    }

    /// Root always; otherwise membership (primary or supplementary) of the admin group.
    public static func isAuthorized(_ peer: PeerCredentials, adminGroup: UInt32?) -> Bool {
        if peer.uid == 0 { return true }
        guard let g = adminGroup else { return false }
        return peer.gid == g || peer.groups.contains(g)
    }

    func serve(_ fd: Int32, peer: PeerCredentials, admin: Bool, _ handler: @Sendable (ControlRequest, PeerCredentials) -> ControlReply) {
        var tv = timeval(tv_sec: Int(ControlServer.connectionDeadline), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        // Read the request before answering, even a refusal, so the client never meets a closed socket.
        let request = read(fd, deadline: Double(DispatchTime.now().uptimeNanoseconds) / 1e9 + ControlServer.connectionDeadline)
        let reply: ControlReply
        if request?.command.isOpenToUsers != true && !admin {
            deniedLog.note(logger, level: .notice, "control request refused", ["uid": "\(peer.uid)", "pid": "\(peer.pid)"])
            reply = ControlReply(error: "permission denied: uid \(peer.uid) is neither root nor in the admin group '\(groupName)'")
        } else if let request {
            // A launch tracks the very process that asked: its pidfd, taken now (the kernel
            // keeps the peer as it connected), closed when the reply is sent.
            var asking = peer
            if request.command == .launch { asking.pidfd = max(sg_peer_pidfd(fd), -1) }
            defer { if asking.pidfd >= 0 { close(asking.pidfd) } }
            reply = handler(request, asking)
        } else {
            reply = ControlReply(error: "bad request: expected one JSON line such as {\"version\":1,\"command\":\"status\"}")
        }
        guard var data = try? ControlCoding.encoder().encode(reply) else { return }
        data.append(0x0a)
        data.withUnsafeBytes { raw in
            var off = 0
            while off < raw.count {
                let n = send(fd, raw.baseAddress! + off, raw.count - off, Int32(MSG_NOSIGNAL))
                if n <= 0 { return }
                off += n
            }
        }
    }

    /// One request line, at most 64 KiB, arriving before `deadline` (uptime seconds).
    func read(_ fd: Int32, deadline: Double) -> ControlRequest? {
        var buf = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 4096)
        while buf.count < 65536 {
            let left = deadline - Double(DispatchTime.now().uptimeNanoseconds) / 1e9
            guard left > 0 else { break }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, Int32(left * 1000) + 1) > 0 else { break }
            let n = recv(fd, &chunk, chunk.count, Int32(MSG_DONTWAIT))
            if n <= 0 { break }
            buf += chunk[0..<n]
            if buf.contains(0x0a) { break }
        }
        if let nl = buf.firstIndex(of: 0x0a) { buf = Array(buf[..<nl]) }
        return try? ControlCoding.decoder().decode(ControlRequest.self, from: Data(buf))
    }
}

/// The connections being served, in all and per uid, against `Limits`. Pure.
public struct ConnectionSlots: Sendable, Equatable {
    public let limits: ControlServer.Limits
    public private(set) var total = 0
    public private(set) var byUID: [UInt32: Int] = [:]

    public init(limits: ControlServer.Limits) { self.limits = limits }

    /// Takes a slot for a connection of `uid` if its limits allow: an admin while any slot is
    /// free; another user while it holds fewer than `perUser` and the users' share is not used up.
    public mutating func admit(uid: UInt32, admin: Bool) -> Bool {
        if admin {
            guard total < limits.total else { return false }
        } else {
            guard total < limits.total - limits.reservedForAdmins, byUID[uid, default: 0] < limits.perUser else { return false }
        }
        total += 1
        byUID[uid, default: 0] += 1
        return true
    }

    /// Gives back a slot `admit` gave `uid`.
    public mutating func release(uid: UInt32) {
        guard let n = byUID[uid], n > 0 else { return }
        total -= 1
        byUID[uid] = n == 1 ? nil : n - 1
    }
}

/// A log line a flood could repeat: written at most once per `interval` seconds, with the
/// number of times it was held back since.
final class RateLimitedLog: Sendable {
    let interval: UInt64
    private let state = Mutex<(last: UInt64, held: Int)>((0, 0))

    init(interval: Double) { self.interval = UInt64(interval * 1e9) }

    func note(_ logger: Logger, level: Logger.Level, _ message: Logger.Message, _ metadata: Logger.Metadata) {
        let now = monotonicNanos()
        let held: Int? = state.withLock { s in
            guard s.last == 0 || now &- s.last >= interval else {
                s.held += 1
                return nil
            }
            defer { s = (now, 0) }
            return s.held
        }
        guard let held else { return }
        var meta = metadata
        if held > 0 { meta["repeated"] = "\(held) more since the last such line" }
        logger.log(level: level, message, metadata: meta)
    }
}
