// The wpa_supplicant control-interface source of 802.1X state. Owns: for each interface
// whose control socket appears in the control directory, two datagram sockets (one ATTACHed
// for events, one for STATUS requests) with their local socket files, an inotify watch on the
// directory, and the thread that polls them all. Event-driven: a CTRL-EVENT line or a socket
// appearing/disappearing triggers a STATUS read; nothing is read on a timer.

import CSegguardShims
import Foundation
import Logging
import SegguardPolicy
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A control-interface socket that failed, with the call and errno.
public struct WPAConnectionError: Error, CustomStringConvertible, Sendable {
    public var description: String
}

/// One datagram connection to a wpa_supplicant control socket.
final class WPAControlConnection {
    let fd: Int32
    let localPath: String
    private static let counter = Mutex(0)

    /// `localDirectory` holds this end's socket file: wpa_supplicant sends its replies there, so
    /// it must be reachable from wpa_supplicant (not a service's private /tmp).
    init(serverPath: String, localDirectory: String) throws(WPAConnectionError) {
        let n = WPAControlConnection.counter.withLock { c -> Int in
            c += 1
            return c
        }
        localPath = "\(localDirectory)/wpa-\(getpid())-\(n)"
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw WPAConnectionError(description: "socket: \(String(cString: strerror(errno)))") }
        unlink(localPath)
        guard Self.withAddress(localPath, { bind(fd, $0, $1) }) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw WPAConnectionError(description: "bind \(localPath): \(String(cString: strerror(e))) (errno \(e))")
        }
        guard Self.withAddress(serverPath, { connect(fd, $0, $1) }) == 0 else {
            let e = errno
            Glibc.close(fd)
            unlink(localPath)
            throw WPAConnectionError(description: "connect \(serverPath): \(String(cString: strerror(e))) (errno \(e))")
        }
    }

    static func withAddress(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return -1 }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
        return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
    }

    /// Sends a command and returns its reply, skipping event lines ("<N>…") that arrive meanwhile.
    func request(_ command: String, timeout: Double = 2) throws(WPAConnectionError) -> String {
        let sent = command.withCString { send(fd, $0, strlen($0), 0) }
        guard sent >= 0 else { throw WPAConnectionError(description: "send \(command): \(String(cString: strerror(errno))) (errno \(errno))") }
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { throw WPAConnectionError(description: "\(command): no reply within \(timeout) s") }
            guard let msg = try receive(timeoutMs: Int32(left * 1000) + 1) else { continue }
            if msg.hasPrefix("<") { continue }
            return msg
        }
    }

    /// One datagram, or nil on timeout.
    func receive(timeoutMs: Int32) throws(WPAConnectionError) -> String? {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let n = poll(&pfd, 1, timeoutMs)
        if n == 0 { return nil }
        var buf = [UInt8](repeating: 0, count: 8192)
        let got = recv(fd, &buf, buf.count, Int32(MSG_DONTWAIT))
        guard got >= 0 else { throw WPAConnectionError(description: "recv: \(String(cString: strerror(errno))) (errno \(errno))") }
        return String(decoding: buf[0..<got], as: UTF8.self)
    }

    func close() {
        Glibc.close(fd)
        unlink(localPath)
    }
}

/// Watches every wpa_supplicant control socket in a directory and reports the 802.1X state per
/// interface name.
public final class WPAControlSource: Sendable {
    public let directory: String
    public let localDirectory: String
    let logger: Logger
    let running = Mutex(false)
    let wakeFd: Int32

    public init(directory: String = "/run/wpa_supplicant", localDirectory: String = "/run/segguard",
                logger: Logger = Logger(label: "segguard.deviceauth")) {
        self.directory = directory
        self.localDirectory = localDirectory
        self.logger = logger
        self.wakeFd = sg_eventfd()
    }

    deinit { close(wakeFd) }

    /// Starts the watcher thread; `onChange` gets the full map after every change.
    public func start(onChange: @escaping @Sendable ([String: DeviceAuthState]) -> Void) {
        running.withLock { $0 = true }
        let t = Thread { [self] in
            let loop = Loop(source: self, onChange: onChange)
            loop.run()
            loop.closeAll()
        }
        t.name = "segguard-wpa"
        t.start()
    }

    public func stop() {
        running.withLock { $0 = false }
        var one: UInt64 = 1
        _ = write(wakeFd, &one, 8)
    }

    /// The watcher thread's state.
    final class Loop {
        struct Attached {
            var events: WPAControlConnection
            var requests: WPAControlConnection
        }

        unowned let source: WPAControlSource
        let onChange: @Sendable ([String: DeviceAuthState]) -> Void
        var attached: [String: Attached] = [:]
        var states: [String: DeviceAuthState] = [:]
        var inotifyFd: Int32 = -1

        init(source: WPAControlSource, onChange: @escaping @Sendable ([String: DeviceAuthState]) -> Void) {
            self.source = source
            self.onChange = onChange
        }

        func run() {
            try? FileManager.default.createDirectory(atPath: source.directory, withIntermediateDirectories: true)
            inotifyFd = inotify_init1(Int32(IN_CLOEXEC) | Int32(IN_NONBLOCK))
            if inotifyFd >= 0 { _ = inotify_add_watch(inotifyFd, source.directory, UInt32(IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_ATTRIB)) }
            rescan()
            while source.running.withLock({ $0 }) {
                let names = attached.keys.sorted()
                var fds = [pollfd(fd: source.wakeFd, events: Int16(POLLIN), revents: 0), pollfd(fd: inotifyFd, events: Int16(POLLIN), revents: 0)]
                fds += names.map { pollfd(fd: attached[$0]!.events.fd, events: Int16(POLLIN), revents: 0) }
                let n = poll(&fds, nfds_t(fds.count), -1)
                if n < 0 { if errno == EINTR { continue } else { return } }
                if fds[0].revents != 0 { continue }
                if fds[1].revents != 0 {
                    var buf = [UInt8](repeating: 0, count: 4096)
                    _ = read(inotifyFd, &buf, buf.count)
                    rescan()
                }
                for (i, name) in names.enumerated() where fds[i + 2].revents != 0 {
                    handleEvents(name)
                }
            }
        }

        /// Attaches to sockets that appeared, forgets those that vanished.
        func rescan() {
            let present = Set(((try? FileManager.default.contentsOfDirectory(atPath: source.directory)) ?? []).filter { name in
                var st = stat()
                return stat("\(source.directory)/\(name)", &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK
            })
            for name in attached.keys where !present.contains(name) { detach(name, why: "control socket removed") }
            for name in present where attached[name] == nil { attach(name) }
        }

        func attach(_ name: String) {
            let path = "\(source.directory)/\(name)"
            do {
                let events = try WPAControlConnection(serverPath: path, localDirectory: source.localDirectory)
                let requests: WPAControlConnection
                do {
                    requests = try WPAControlConnection(serverPath: path, localDirectory: source.localDirectory)
                } catch {
                    events.close()
                    throw error
                }
                let ok = try events.request("ATTACH")
                guard ok.hasPrefix("OK") else { throw WPAConnectionError(description: "ATTACH answered \(ok)") }
                attached[name] = Attached(events: events, requests: requests)
                source.logger.info("watching wpa_supplicant", metadata: ["interface": "\(name)", "socket": "\(path)"])
                refresh(name)
            } catch {
                source.logger.warning("cannot attach to wpa_supplicant", metadata: ["interface": "\(name)", "error": "\(error)"])
            }
        }

        func detach(_ name: String, why: String) {
            if let a = attached.removeValue(forKey: name) {
                a.events.close()
                a.requests.close()
            }
            if states.removeValue(forKey: name) != nil {
                source.logger.warning("802.1X state lost", metadata: ["interface": "\(name)", "why": "\(why)"])
                onChange(states)
            }
        }

        func handleEvents(_ name: String) {
            guard let a = attached[name] else { return }
            var changed = false
            while true {
                let msg: String?
                do {
                    msg = try a.events.receive(timeoutMs: 0)
                } catch {
                    detach(name, why: "\(error)")
                    return
                }
                guard let msg else { break }
                if let event = try? WPAControlProtocol.parseEvent(msg), event.changesState { changed = true }
            }
            if changed { refresh(name) }
        }

        func refresh(_ name: String) {
            guard let a = attached[name] else { return }
            do {
                var state = try WPAControlProtocol.parseStatus(try a.requests.request("STATUS"))
                if let old = states[name], old.eapState == state.eapState, old.portStatus == state.portStatus, old.eapMethod == state.eapMethod {
                    state.since = old.since
                } else {
                    state.since = Date().timeIntervalSince1970
                }
                if states[name] != state {
                    states[name] = state
                    onChange(states)
                }
            } catch let e as WPAParseError {
                source.logger.warning("unreadable STATUS from wpa_supplicant", metadata: ["interface": "\(name)", "error": "\(e)"])
            } catch {
                detach(name, why: "\(error)")
            }
        }

        func closeAll() {
            for (_, a) in attached {
                a.events.close()
                a.requests.close()
            }
            attached = [:]
            if inotifyFd >= 0 { close(inotifyFd) }
        }
    }
}
