// Sockets and code run inside a network namespace, for privileged tests. setns(CLONE_NEWNET)
// affects only the calling thread, so each helper enters the namespace on a thread of its own
// (never a Swift concurrency thread). `NamespaceTCPServer` owns its listening socket, the
// connections it accepted and its accept thread until `stop()`.

import CSegguardShims
import Foundation
import SegguardPolicy
import SegguardSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Why a socket operation failed: the errno (nil for a timeout) and its text.
public struct SocketFailure: Error, Equatable, Sendable, CustomStringConvertible {
    public var errno: Int32?
    /// `strerror` text (e.g. "Operation not permitted") or "timed out".
    public var message: String

    public init(errno: Int32?, message: String) {
        self.errno = errno
        self.message = message
    }

    /// From an errno value.
    public init(errno e: Int32) { self.init(errno: e, message: String(cString: strerror(e))) }

    /// A connect that got no answer in time (what an output-hook drop does to TCP: the kernel
    /// keeps retransmitting the SYN, so the drop shows as a timeout, not EPERM).
    public static let timedOut = SocketFailure(errno: nil, message: "timed out")
    /// What an nftables drop in the output hook makes `sendto`/`connect` fail with.
    public static let notPermitted = SocketFailure(errno: EPERM)

    public var description: String { message }
}

/// Result box handed from the namespace thread back to the caller.
private final class Box<T>: @unchecked Sendable {
    var value: T?
}

/// Runs `body` on a new thread that has entered the network namespace at `path` (e.g.
/// `/run/netns/NAME`) and returns its result. libnftables, sockets and netlink opened in
/// `body` act in that namespace.
public func withNetworkNamespace<T>(_ path: String, _ body: () throws -> T) throws -> T {
    try withoutActuallyEscaping(body) { escapable in
        let work = Box<() throws -> T>()
        work.value = escapable
        let out = Box<Result<T, any Error>>()
        let done = DispatchSemaphore(value: 0)
        startThread(name: "sg-test-netns", stackSize: 8 << 20) {
            out.value = run(work, in: path)
            done.signal()
        }
        done.wait()
        return try out.value!.get()
    }
}

/// Enters the namespace and runs the boxed body once, releasing it before returning (the
/// body must not outlive `withoutActuallyEscaping`).
private func run<T>(_ work: Box<() throws -> T>, in path: String) -> Result<T, any Error> {
    guard let body = work.value else { return .failure(CommandError(description: "no body")) }
    work.value = nil
    if let failure = enterNamespace(path) { return .failure(CommandError(description: failure)) }
    return Result { try body() }
}

/// Enters the namespace for the calling thread; nil or what failed.
private func enterNamespace(_ path: String) -> String? {
    do { try enterNetworkNamespace(path) } catch { return error.description }
    return nil
}

/// A socket address for `address` and `port`, passed to `body` with its length.
private func withSockaddr<R>(_ address: IPAddress, _ port: UInt16, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
    if address.family == .ipv4 {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        withUnsafeMutableBytes(of: &sin.sin_addr) { $0.copyBytes(from: address.bytes) }
        return withUnsafePointer(to: &sin) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    }
    var sin6 = sockaddr_in6()
    sin6.sin6_family = sa_family_t(AF_INET6)
    sin6.sin6_port = port.bigEndian
    withUnsafeMutableBytes(of: &sin6.sin6_addr) { $0.copyBytes(from: address.bytes) }
    return withUnsafePointer(to: &sin6) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
}

private func domain(_ a: IPAddress) -> Int32 { a.family == .ipv4 ? AF_INET : AF_INET6 }

/// A TCP server listening on `address:port` inside a namespace; accepted connections are kept
/// open (and counted) until `stop()`.
public final class NamespaceTCPServer: Sendable {
    private struct State {
        var listenFD: Int32 = -1
        var wakeFD: Int32 = -1
        var connections: [Int32] = []
        var accepted = 0
        var stopped = false
    }

    /// What the accept thread shares with the object (not the object itself, so that
    /// releasing the server still stops it).
    private final class Shared: Sendable {
        let state = Mutex(State())
        let finished = DispatchSemaphore(value: 0)
        /// Broadcast after each accepted connection.
        let accepted = NSCondition()
    }

    private let shared = Shared()
    public let address: IPAddress
    public let port: UInt16

    /// Starts listening; returns once the socket listens, or throws what failed.
    public init(namespacePath: String, address: IPAddress, port: UInt16) throws {
        self.address = address
        self.port = port
        let started = Box<String>()
        let ready = DispatchSemaphore(value: 0)
        let sh = shared
        startThread(name: "sg-test-tcp") {
            defer { sh.finished.signal() }
            if let failure = enterNamespace(namespacePath) {
                started.value = failure
                ready.signal()
                return
            }
            let fd = socket(domain(address), Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { started.value = "socket: \(String(cString: strerror(errno)))"; ready.signal(); return }
            var one: Int32 = 1
            _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            let b = withSockaddr(address, port) { bind(fd, $0, $1) }
            guard b == 0, listen(fd, 64) == 0 else {
                started.value = "bind/listen \(address):\(port): \(String(cString: strerror(errno)))"
                close(fd)
                ready.signal()
                return
            }
            let wake = sg_eventfd()
            guard wake >= 0 else { started.value = "eventfd: \(String(cString: strerror(-wake)))"; close(fd); ready.signal(); return }
            sh.state.withLock { $0.listenFD = fd; $0.wakeFD = wake }
            ready.signal()
            NamespaceTCPServer.acceptLoop(fd, wake, sh)
        }
        ready.wait()
        if let failure = started.value {
            shared.finished.wait()
            throw CommandError(description: "NamespaceTCPServer: \(failure)")
        }
    }

    private static func acceptLoop(_ fd: Int32, _ wake: Int32, _ sh: Shared) {
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wake, events: Int16(POLLIN), revents: 0)]
        while true {
            let n = poll(&fds, 2, -1)
            if n < 0 && errno == EINTR { continue }
            if n < 0 || fds[1].revents != 0 { return }
            if fds[0].revents != 0 {
                let c = accept(fd, nil, nil)
                if c >= 0 {
                    _ = fcntl(c, F_SETFD, FD_CLOEXEC)
                    let keep = sh.state.withLock { s -> Bool in
                        guard !s.stopped else { return false }
                        s.connections.append(c)
                        s.accepted += 1
                        return true
                    }
                    if !keep { close(c) }
                    sh.accepted.lock()
                    sh.accepted.broadcast()
                    sh.accepted.unlock()
                }
            }
        }
    }

    /// Connections accepted so far.
    public var acceptedCount: Int { shared.state.withLock { $0.accepted } }

    /// Waits until at least `count` connections were accepted (a client's connect can return
    /// before the server thread has called accept) or `timeout` passed; returns the count.
    public func waitForAccepted(_ count: Int, timeout: Double = 5) -> Int {
        let deadline = Date().addingTimeInterval(timeout)
        shared.accepted.lock()
        defer { shared.accepted.unlock() }
        while true {
            let n = acceptedCount
            if n >= count || !shared.accepted.wait(until: deadline) { return acceptedCount }
        }
    }

    /// Stops accepting and closes the listening socket and every accepted connection.
    public func stop() {
        let wake = shared.state.withLock { s -> Int32 in
            guard !s.stopped else { return -1 }
            s.stopped = true
            return s.wakeFD
        }
        guard wake >= 0 else { return }
        var one: UInt64 = 1
        _ = write(wake, &one, 8)
        shared.finished.wait()
        shared.state.withLock { s in
            for c in s.connections { close(c) }
            s.connections = []
            close(s.listenFD)
            close(s.wakeFD)
            s.listenFD = -1
            s.wakeFD = -1
        }
    }

    deinit { stop() }
}

/// Connects over TCP to `address:port` from inside the namespace (non-blocking connect, waits
/// up to `timeout` seconds) and closes the connection. `.timedOut` when nothing answered.
public func tcpConnect(namespacePath: String, address: IPAddress, port: UInt16, timeout: Double) -> Result<Void, SocketFailure> {
    let outcome: Result<Void, SocketFailure>
    do {
        outcome = try withNetworkNamespace(namespacePath) { () -> Result<Void, SocketFailure> in
            let fd = socket(domain(address), Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { return .failure(SocketFailure(errno: errno)) }
            defer { close(fd) }
            let rc = withSockaddr(address, port) { connect(fd, $0, $1) }
            if rc == 0 { return .success(()) }
            guard errno == EINPROGRESS else { return .failure(SocketFailure(errno: errno)) }
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            let deadline = Date().addingTimeInterval(timeout)
            while true {
                let left = deadline.timeIntervalSinceNow
                if left <= 0 { return .failure(.timedOut) }
                let n = poll(&p, 1, Int32(max(1, (left * 1000).rounded(.up))))
                if n < 0 && errno == EINTR { continue }
                if n < 0 { return .failure(SocketFailure(errno: errno)) }
                if n == 0 { continue }
                break
            }
            var err: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 else { return .failure(SocketFailure(errno: errno)) }
            return err == 0 ? .success(()) : .failure(SocketFailure(errno: err))
        }
    } catch {
        return .failure(SocketFailure(errno: nil, message: "\(error)"))
    }
    return outcome
}

/// Sends one UDP datagram to `address:port` from inside the namespace. An nftables drop in
/// the output hook makes it fail at once with `.notPermitted` (EPERM).
public func udpSend(namespacePath: String, address: IPAddress, port: UInt16, payload: [UInt8] = Array("segguard".utf8)) -> Result<Void, SocketFailure> {
    do {
        return try withNetworkNamespace(namespacePath) { () -> Result<Void, SocketFailure> in
            let fd = socket(domain(address), Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { return .failure(SocketFailure(errno: errno)) }
            defer { close(fd) }
            let n = payload.withUnsafeBytes { raw in
                withSockaddr(address, port) { sendto(fd, raw.baseAddress, raw.count, 0, $0, $1) }
            }
            return n < 0 ? .failure(SocketFailure(errno: errno)) : .success(())
        }
    } catch {
        return .failure(SocketFailure(errno: nil, message: "\(error)"))
    }
}
