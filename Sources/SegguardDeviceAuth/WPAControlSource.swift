// The wpa_supplicant control-interface source of 802.1X state. Owns: for each interface
// whose control socket appears in the control directory, two datagram sockets (one ATTACHed
// for events, one for STATUS requests) with their local socket files, an inotify watch on the
// directory, and the thread that polls them all. Event-driven: a CTRL-EVENT line or a socket
// appearing/disappearing triggers a STATUS read; nothing is read on a timer.

import CSegguardShims
import Foundation
import Logging
import SegguardPolicy
import SegguardSystem
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

    /// Event lines ("<N>…") that arrived while a request waited for its reply, oldest first.
    var pendingEvents: [String] = []

    /// Sends a command and returns its reply; event lines that arrive meanwhile are kept in
    /// `pendingEvents`, so that waiting for a reply never loses an event.
    func request(_ command: String, timeout: Double = 2) throws(WPAConnectionError) -> String {
        let sent = command.withCString { send(fd, $0, strlen($0), 0) }
        guard sent >= 0 else { throw WPAConnectionError(description: "send \(command): \(String(cString: strerror(errno))) (errno \(errno))") }
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { throw WPAConnectionError(description: "\(command): no reply within \(timeout) s") }
            guard let msg = try receive(timeoutMs: Int32(left * 1000) + 1) else { continue }
            if msg.hasPrefix("<") {
                pendingEvents.append(msg)
                continue
            }
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
    let stopSignal = StopSignal()

    public init(directory: String = "/run/wpa_supplicant", localDirectory: String = "/run/segguard",
                logger: Logger = Logger(label: "segguard.deviceauth")) {
        self.directory = directory
        self.localDirectory = localDirectory
        self.logger = logger
    }

    /// Starts the watcher thread; `onChange` gets the full map after every change.
    public func start(onChange: @escaping @Sendable ([String: DeviceAuthState]) -> Void) {
        stopSignal.arm()
        startThread(name: "sg-wpa") { [self] in
            let loop = Loop(source: self, onChange: onChange)
            loop.run()
            loop.closeAll()
        }
    }

    public func stop() { stopSignal.stop() }

    /// TODO(issue 17, in progress): send the re-authentication request to the supplicant.
    public func reauthenticate(interface: String) {}

    /// The watcher thread's state.
    final class Loop {

        unowned let source: WPAControlSource
        let onChange: @Sendable ([String: DeviceAuthState]) -> Void
        /// One ATTACHed connection per interface, also used for STATUS: wpa_supplicant allows
        /// a monitor only max_dgram_qlen (10) unread datagrams and detaches it after more than
        /// ten failed sends, so the thread never waits anywhere without reading this socket.
        var attached: [String: WPAControlConnection] = [:]
        /// onChange runs here, off the thread that reads the sockets.
        let delivery = DispatchQueue(label: "segguard.wpa.delivery")
        var states: [String: DeviceAuthState] = [:]
        var inotifyFd: Int32 = -1

        init(source: WPAControlSource, onChange: @escaping @Sendable ([String: DeviceAuthState]) -> Void) {
            self.source = source
            self.onChange = onChange
        }

        func run() {
            inotifyFd = inotify_init1(Int32(IN_CLOEXEC) | Int32(IN_NONBLOCK))
            // wpa_supplicant removes the directory when its last interface goes and makes it
            // again at the next start: the parent is watched too, to watch the new directory.
            let parent = (source.directory as NSString).deletingLastPathComponent
            if inotifyFd >= 0 { _ = inotify_add_watch(inotifyFd, parent, UInt32(IN_CREATE | IN_MOVED_TO)) }
            watchDirectory()
            rescan()
            while source.stopSignal.isRunning {
                let names = attached.keys.sorted()
                var fds = [pollfd(fd: source.stopSignal.fd, events: Int16(POLLIN), revents: 0), pollfd(fd: inotifyFd, events: Int16(POLLIN), revents: 0)]
                fds += names.map { pollfd(fd: attached[$0]!.fd, events: Int16(POLLIN), revents: 0) }
                let n = poll(&fds, nfds_t(fds.count), -1)
                if n < 0 { if errno == EINTR { continue } else { return } }
                if fds[0].revents != 0 { continue }
                if fds[1].revents != 0 {
                    var buf = [UInt8](repeating: 0, count: 4096)
                    while read(inotifyFd, &buf, buf.count) > 0 {}
                    watchDirectory()
                    rescan()
                }
                for (i, name) in names.enumerated() where fds[i + 2].revents != 0 {
                    handleEvents(name)
                }
            }
        }

        /// (Re)adds the watch on the control directory; the same watch when it still exists.
        func watchDirectory() {
            guard inotifyFd >= 0 else { return }
            _ = inotify_add_watch(inotifyFd, source.directory, UInt32(IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_ATTRIB))
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
                let connection = try WPAControlConnection(serverPath: path, localDirectory: source.localDirectory)
                do {
                    let ok = try connection.request("ATTACH")
                    guard ok.hasPrefix("OK") else { throw WPAConnectionError(description: "ATTACH answered \(ok)") }
                } catch {
                    connection.close()
                    throw error
                }
                attached[name] = connection
                source.logger.info("watching wpa_supplicant", metadata: ["interface": "\(name)", "socket": "\(path)"])
                refresh(name)
            } catch {
                // A socket file left by a supplicant that exited refuses connections; the next
                // supplicant replaces the file, and inotify brings us back here.
                let stale = "\(error)".contains("errno \(ECONNREFUSED))")
                source.logger.log(level: stale ? .debug : .warning, "cannot attach to wpa_supplicant", metadata: ["interface": "\(name)", "error": "\(error)"])
            }
        }

        func detach(_ name: String, why: String) {
            attached.removeValue(forKey: name)?.close()
            if states.removeValue(forKey: name) != nil {
                source.logger.warning("802.1X state lost", metadata: ["interface": "\(name)", "why": "\(why)"])
                publish()
            }
        }

        /// Reads every event waiting on the interface's socket, then STATUS when one of them
        /// changes the state (again while events that came during STATUS say so).
        func handleEvents(_ name: String) {
            guard let connection = attached[name] else { return }
            var events = connection.pendingEvents
            connection.pendingEvents = []
            while true {
                do {
                    guard let msg = try connection.receive(timeoutMs: 0) else { break }
                    events.append(msg)
                } catch {
                    detach(name, why: "\(error)")
                    return
                }
            }
            for _ in 0..<8 {
                var changed = false
                for line in events {
                    guard let event = try? WPAControlProtocol.parseEvent(line) else { continue }
                    if event == .terminating {
                        detach(name, why: "wpa_supplicant is terminating")
                        return
                    }
                    if event.changesState { changed = true }
                }
                guard changed else { return }
                refresh(name)
                guard let c = attached[name] else { return }
                events = c.pendingEvents
                c.pendingEvents = []
            }
        }

        func refresh(_ name: String) {
            guard let connection = attached[name] else { return }
            do {
                let reply = try connection.request("STATUS")
                var read = try WPAControlProtocol.parseStatus(reply)
                if read.identity == nil, let id = WPAControlProtocol.networkID(reply) {
                    // STATUS names the identity only for some methods; the network block has it.
                    read.identity = WPAControlProtocol.parseNetworkString(try connection.request("GET_NETWORK \(id) identity"))
                }
                let state = DeviceAuthState.continuing(read, from: states[name], now: Date().timeIntervalSince1970)
                if states[name] != state {
                    states[name] = state
                    publish()
                }
            } catch let e as WPAParseError {
                source.logger.warning("unreadable STATUS from wpa_supplicant", metadata: ["interface": "\(name)", "error": "\(e)"])
            } catch {
                detach(name, why: "\(error)")
            }
        }

        /// Hands the map to onChange without waiting for it.
        func publish() {
            let snapshot = states
            let onChange = self.onChange
            delivery.async { onChange(snapshot) }
        }

        func closeAll() {
            for (_, connection) in attached { connection.close() }
            attached = [:]
            if inotifyFd >= 0 { close(inotifyFd) }
        }
    }
}
