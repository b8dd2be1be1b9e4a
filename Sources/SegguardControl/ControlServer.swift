// The daemon's end of the local control socket. Owns: the listening Unix socket, its file
// and the accept thread. Every connection is identified by its peer credentials
// (SO_PEERCRED, SO_PEERGROUPS) before any request is read; only root or members of the
// admin group are answered.

import CSegguardShims
import Foundation
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
    /// Connections being served right now (each on its own thread).
    let active = Mutex(0)
    /// More concurrent connections than this are refused at once.
    public static let maxConnections = 16
    /// A connection gets this long, in total, to send its request and take the reply.
    public static let connectionDeadline = 2.0
    let groupName: String

    /// Creates the socket file (replacing a stale one), mode 0666: access is decided by peer
    /// credentials, so that the refusal names the reason instead of a bare EACCES.
    public init(path: String, adminGroup: UInt32?, adminGroupName: String = "segguard", logger: Logger) throws {
        self.path = path
        self.adminGroup = adminGroup
        self.groupName = adminGroupName
        self.logger = logger
        let dir = (path as NSString).deletingLastPathComponent
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
        guard listen(fd, 16) == 0 else {
            let e = errno
            close(fd)
            throw SystemError(call: "listen \(path)", errno: e)
        }
        listenFd = fd
    }

    /// Starts the accept thread; each connection is served on a thread of its own (at most
    /// `maxConnections` at once), so a client that sends nothing delays no one else.
    public func start(handler: @escaping @Sendable (ControlRequest, PeerCredentials) -> ControlReply) {
        startThread(name: "sg-control") { [self] in
            while !stopped.withLock({ $0 }) {
                let conn = accept(listenFd, nil, nil)
                if conn < 0 {
                    let e = errno
                    if stopped.withLock({ $0 }) { return }
                    if e == EINTR || e == ECONNABORTED { continue }
                    // Out of fds or memory: say so (rate-limited by the pause) and keep serving.
                    logger.error("control socket accept failed; retrying", metadata: ["error": "\(SystemError(call: "accept", errno: e))"])
                    usleep(100_000)
                    continue
                }
                _ = fcntl(conn, F_SETFD, FD_CLOEXEC)
                let admitted = active.withLock { n -> Bool in
                    guard n < ControlServer.maxConnections else { return false }
                    n += 1
                    return true
                }
                guard admitted else {
                    logger.warning("control socket busy: connection refused", metadata: ["limit": "\(ControlServer.maxConnections)"])
                    close(conn)
                    continue
                }
                startThread(name: "sg-control-conn") { [self] in
                    serve(conn, handler)
                    close(conn)
                    active.withLock { $0 -= 1 }
                }
            }
        }
    }

    /// Stops accepting and removes the socket file; a second call does nothing (the listening
    /// descriptor is closed once, never a number reused since).
    public func stop() {
        guard stopped.withLock({ s in defer { s = true }; return !s }) else { return }
        shutdown(listenFd, Int32(SHUT_RDWR))
        close(listenFd)
        unlink(path)
    }

    func credentials(_ fd: Int32) -> PeerCredentials? {
        var pid: pid_t = 0, uid: uid_t = 0, gid: gid_t = 0
        guard sg_peer_credentials(fd, &pid, &uid, &gid) == 0 else { return nil }
        var groups = [gid_t](repeating: 0, count: 256)
        var count: Int32 = 256
        let rc = sg_peer_groups(fd, &groups, &count)
        let pidfd = sg_peer_pidfd(fd)
        return PeerCredentials(pid: pid, uid: uid, gid: gid, groups: rc == 0 ? Array(groups.prefix(Int(count))) : [], pidfd: max(pidfd, -1))
    }

    /// Root always; otherwise membership (primary or supplementary) of the admin group.
    public static func isAuthorized(_ peer: PeerCredentials, adminGroup: UInt32?) -> Bool {
        if peer.uid == 0 { return true }
        guard let g = adminGroup else { return false }
        return peer.gid == g || peer.groups.contains(g)
    }

    func serve(_ fd: Int32, _ handler: @Sendable (ControlRequest, PeerCredentials) -> ControlReply) {
        // Credentials first (taken at connect time), then the request within one deadline.
        let peer = credentials(fd)
        defer { if let p = peer, p.pidfd >= 0 { close(p.pidfd) } }
        var tv = timeval(tv_sec: Int(ControlServer.connectionDeadline), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        // Read the request before answering, even a refusal, so the client never meets a closed socket.
        let request = read(fd, deadline: Double(DispatchTime.now().uptimeNanoseconds) / 1e9 + ControlServer.connectionDeadline)
        let reply: ControlReply
        if let peer {
            if request?.command.isOpenToUsers != true && !ControlServer.isAuthorized(peer, adminGroup: adminGroup) {
                logger.notice("control request refused", metadata: ["uid": "\(peer.uid)", "pid": "\(peer.pid)"])
                reply = ControlReply(error: "permission denied: uid \(peer.uid) is neither root nor in the admin group '\(groupName)'")
            } else if let request {
                reply = handler(request, peer)
            } else {
                reply = ControlReply(error: "bad request: expected one JSON line such as {\"version\":1,\"command\":\"status\"}")
            }
        } else {
            reply = ControlReply(error: "cannot read peer credentials")
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
