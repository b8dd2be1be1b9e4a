// segguardctl's end of the control socket: connect, send one request, read one reply.

import FoundationEssentials
import SegguardWire

#if canImport(Glibc)
import Glibc
#endif

/// A failed query, with a message for the admin.
public struct ControlClientError: Error, CustomStringConvertible, Sendable {
    public var description: String
}

/// Sends one request to the daemon and returns its reply.
public enum ControlClient {
    public static let defaultPath = "/run/segguard/control.sock"

    public static func send(_ request: ControlRequest, path: String = defaultPath) throws(ControlClientError) -> ControlReply {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ControlClientError(description: "socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw ControlClientError(description: "\(path): path too long") }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            throw ControlClientError(description: "cannot reach segguardd at \(path): \(String(cString: strerror(e))) (errno \(e))\nhint: is segguardd running? (systemctl status segguardd)")
        }
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        guard var data = try? ControlCoding.encoder().encode(request) else { throw ControlClientError(description: "cannot encode request") }
        data.append(0x0a)
        let sent = data.withUnsafeBytes { Glibc.send(fd, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == data.count else { throw ControlClientError(description: "sending to \(path): \(String(cString: strerror(errno)))") }
        var buf = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &chunk, chunk.count, 0)
            if n < 0 {
                let e = errno
                if e == EAGAIN || e == EWOULDBLOCK { throw ControlClientError(description: "segguardd at \(path) sent no reply within 5 s") }
                throw ControlClientError(description: "reading from \(path): \(String(cString: strerror(e)))")
            }
            if n == 0 { break }
            buf += chunk[0..<n]
            if buf.last == 0x0a { break }
        }
        do {
            let reply = try ControlCoding.decoder().decode(ControlReply.self, from: Data(buf))
            guard reply.version == controlProtocolVersion else {
                throw ControlClientError(description: "segguardd speaks control protocol \(reply.version), this segguardctl speaks \(controlProtocolVersion)")
            }
            return reply
        } catch let e as ControlClientError {
            throw e
        } catch {
            throw ControlClientError(description: "unreadable reply from segguardd (\(buf.count) bytes): \(error)")
        }
    }
}
