// The wpa_supplicant control-interface source of 802.1X state. Owns: for each interface
// whose control socket appears in the control directory, two datagram sockets (one ATTACHed
// for events, one for STATUS requests) with their local socket files, an inotify watch on the
// directory, and the thread that polls them all. Event-driven: a CTRL-EVENT line or a socket
// appearing/disappearing triggers a STATUS read; nothing is read on a timer. Per interface it
// also holds a pidfd of the supplicant serving the socket (its exit is the event a SIGKILL
// leaves) and a packet socket seeing the interface's EAPOL-Start/-Logoff frames (wpa_supplicant
// says nothing on its control socket when a client sends it LOGOFF or LOGON).

import CSegguardShims
import Crypto
import FoundationEssentials
import SegguardEssentials
import Dispatch
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

    /// A pidfd of the supplicant serving the socket, or -1: while a request waits for its
    /// reply, the supplicant's exit ends the wait at once instead of at the timeout.
    var pidfd: Int32 = -1
    /// Called when `pidfd` becomes readable during a wait: true when another process still
    /// serves the socket (and `pidfd` now names it), false when the supplicant is gone.
    var processExited: (() -> Bool)?

    /// One datagram, or nil on timeout.
    func receive(timeoutMs: Int32) throws(WPAConnectionError) -> String? {
        var pfds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)]
        let n = poll(&pfds, pidfd >= 0 ? 2 : 1, timeoutMs)
        if n < 0 && errno == EINTR { return nil }
        if n == 0 { return nil }
        if pidfd >= 0 && pfds[1].revents != 0 && pfds[0].revents == 0 {
            if processExited?() == true { return nil }
            throw WPAConnectionError(description: "wpa_supplicant exited")
        }
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
    /// Interfaces `reauthenticate` was asked for, taken by the source's thread when `wake` fires.
    let reauthRequests = Mutex<[String]>([])
    /// An eventfd the thread polls beside its sockets; `reauthenticate` writes it.
    let wakeFd: Int32 = sg_eventfd()

    public init(directory: String = "/run/wpa_supplicant", localDirectory: String = "/run/segguard",
                logger: Logger = Logger(label: "segguard.deviceauth")) {
        self.directory = directory
        self.localDirectory = localDirectory
        self.logger = logger
    }

    deinit { close(wakeFd) }

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

    /// Hands the request to the source's thread and returns: that thread sends REAUTHENTICATE
    /// (an EAPOL-Start) when the supplicant's port is AUTHENTICATED, LOGON after a LOGOFF, and
    /// LOGOFF then LOGON from any other PAE state (CONNECTING/HELD/…, where wpa_supplicant
    /// ignores REAUTHENTICATE; the port is unauthorized there anyway).
    public func reauthenticate(interface: String) {
        reauthRequests.withLock { $0.append(interface) }
        var one: UInt64 = 1
        _ = write(wakeFd, &one, 8)
    }

    /// What the thread holds for one interface's supplicant.
    final class Attachment {
        let connection: WPAControlConnection
        /// The supplicant serving the control socket, and a pidfd of it; 0 and -1 when unknown.
        var pid: pid_t = 0
        var pidfd: Int32 = -1
        /// EAPOL frames on the interface (in the supplicant's network namespace), or -1.
        var eapolFd: Int32 = -1
        /// Server certificates reported since the latest CTRL-EVENT-EAP-STARTED, by depth.
        var collecting: [PeerCertificate] = []
        /// The DER of each certificate collected, by depth, for the signature check.
        var collectingDER: [Int: [UInt8]] = [:]
        /// The chain of the latest completed EAP exchange (success or failure).
        var chain: [PeerCertificate] = []
        var successes: UInt64 = 0

        init(connection: WPAControlConnection) { self.connection = connection }

        func close() {
            connection.close()
            if pidfd >= 0 { Glibc.close(pidfd) }
            if eapolFd >= 0 { Glibc.close(eapolFd) }
        }

        /// Applies a certificate event to the chain being collected.
        func record(_ event: WPAEvent) {
            switch event {
            case .eapStarted:
                collecting = []
                collectingDER = [:]
            case .peerCertificate(let report):
                if let der = report.der { collectingDER[report.depth] = der }
                var sha = report.sha256
                if sha == nil, let der = report.der {
                    sha = hexString(SHA256.hash(data: der))
                }
                if let i = collecting.firstIndex(where: { $0.depth == report.depth }) {
                    // The hash= and cert= lines of one certificate; a different subject at the
                    // same depth replaces it (a new handshake without EAP-STARTED between).
                    if collecting[i].subject == report.subject {
                        if collecting[i].sha256 == nil { collecting[i].sha256 = sha }
                    } else {
                        collecting[i] = PeerCertificate(depth: report.depth, subject: report.subject, sha256: sha)
                    }
                } else {
                    collecting.append(PeerCertificate(depth: report.depth, subject: report.subject, sha256: sha))
                    collecting.sort { $0.depth < $1.depth }
                }
            case .peerAltSubject(let depth, let name):
                if let i = collecting.firstIndex(where: { $0.depth == depth }) {
                    if !collecting[i].altSubjects.contains(name) { collecting[i].altSubjects.append(name) }
                } else {
                    collecting.append(PeerCertificate(depth: depth, subject: "", altSubjects: [name]))
                    collecting.sort { $0.depth < $1.depth }
                }
            case .eapSuccess:
                successes += 1
                // A resumed TLS session shows no certificate: it proves the server of the
                // previous full handshake, whose chain stays.
                if !collecting.isEmpty { chain = ServerChainCheck.marked(collecting, der: collectingDER) }
            case .eapFailure:
                chain = ServerChainCheck.marked(collecting, der: collectingDER)
            default:
                break
            }
        }
    }

    /// The watcher thread's state.
    final class Loop {

        unowned let source: WPAControlSource
        let onChange: @Sendable ([String: DeviceAuthState]) -> Void
        /// One ATTACHed connection per interface, also used for STATUS: wpa_supplicant allows
        /// a monitor only max_dgram_qlen (10) unread datagrams and detaches it after more than
        /// ten failed sends, so the thread never waits anywhere without reading this socket.
        var attached: [String: Attachment] = [:]
        /// onChange runs here, off the thread that reads the sockets.
        let delivery = DispatchQueue(label: "segguard.wpa.delivery")
        var states: [String: DeviceAuthState] = [:]
        /// The supplicants' client certificates, read again only when their files change.
        var certificates = CertificateKeyCache()
        var inotifyFd: Int32 = -1

        init(source: WPAControlSource, onChange: @escaping @Sendable ([String: DeviceAuthState]) -> Void) {
            self.source = source
            self.onChange = onChange
        }

        enum Watched { case control, exit, eapol }

        func run() {
            inotifyFd = inotify_init1(Int32(IN_CLOEXEC) | Int32(IN_NONBLOCK))
            // wpa_supplicant removes the directory when its last interface goes and makes it
            // again at the next start: the parent is watched too, to watch the new directory.
            let parent = PathName.directory(source.directory)
            if inotifyFd >= 0 { _ = inotify_add_watch(inotifyFd, parent, UInt32(IN_CREATE | IN_MOVED_TO)) }
            watchDirectory()
            rescan()
            while source.stopSignal.isRunning {
                var fds = [pollfd(fd: source.stopSignal.fd, events: Int16(POLLIN), revents: 0),
                           pollfd(fd: inotifyFd, events: Int16(POLLIN), revents: 0),
                           pollfd(fd: source.wakeFd, events: Int16(POLLIN), revents: 0)]
                var owners: [(String, Watched)] = []
                for name in attached.keys.sorted() {
                    let a = attached[name]!
                    fds.append(pollfd(fd: a.connection.fd, events: Int16(POLLIN), revents: 0))
                    owners.append((name, .control))
                    if a.pidfd >= 0 {
                        fds.append(pollfd(fd: a.pidfd, events: Int16(POLLIN), revents: 0))
                        owners.append((name, .exit))
                    }
                    if a.eapolFd >= 0 {
                        fds.append(pollfd(fd: a.eapolFd, events: Int16(POLLIN), revents: 0))
                        owners.append((name, .eapol))
                    }
                }
                let n = poll(&fds, nfds_t(fds.count), -1)
                if n < 0 { if errno == EINTR { continue } else { return } }
                if fds[0].revents != 0 { continue }
                // Exits first: nothing else of a dead supplicant needs reading.
                for (i, (name, kind)) in owners.enumerated() where kind == .exit && fds[i + 3].revents != 0 {
                    guard let a = attached[name] else { continue }
                    let pid = a.pid
                    // wpa_supplicant -B opens its control socket before it forks into the
                    // background: the process found at attach may be the parent, which exits
                    // while its child keeps the socket. Gone only when no process holds it.
                    if !rewatch(a, name: name) { detach(name, why: "wpa_supplicant (pid \(pid)) exited") }
                }
                if fds[1].revents != 0 {
                    var buf = [UInt8](repeating: 0, count: 4096)
                    while read(inotifyFd, &buf, buf.count) > 0 {}
                    watchDirectory()
                    rescan()
                }
                for (i, (name, kind)) in owners.enumerated() where fds[i + 3].revents != 0 {
                    switch kind {
                    case .control: handleEvents(name)
                    case .eapol: handleFrames(name)
                    case .exit: break
                    }
                }
                if fds[2].revents != 0 {
                    var count: UInt64 = 0
                    _ = read(source.wakeFd, &count, 8)
                    let names = source.reauthRequests.withLock { r -> [String] in
                        defer { r = [] }
                        return r
                    }
                    for name in Set(names).sorted() { reauthenticate(name) }
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
                let attachment = Attachment(connection: connection)
                watchProcess(attachment, name: name, socketPath: path)
                connection.processExited = { [unowned self, unowned attachment] in self.rewatch(attachment, name: name) }
                attached[name] = attachment
                source.logger.info("watching wpa_supplicant", metadata: ["interface": "\(name)", "socket": "\(path)", "pid": "\(attachment.pid)"])
                refresh(name)
            } catch {
                // A socket file left by a supplicant that exited refuses connections; the next
                // supplicant replaces the file, and inotify brings us back here.
                let stale = "\(error)".firstRange(of: "errno \(ECONNREFUSED))") != nil
                source.logger.log(level: stale ? .debug : .warning, "cannot attach to wpa_supplicant", metadata: ["interface": "\(name)", "error": "\(error)"])
            }
        }

        /// Finds the supplicant serving `socketPath`, opens a pidfd of it and, in its network
        /// namespace, the EAPOL packet socket of the interface. Each part that fails is logged
        /// and left out: the control socket alone still works (a crash is then noticed only at
        /// the next request, a LOGOFF only at the next event).
        func watchProcess(_ a: Attachment, name: String, socketPath: String) {
            guard let pid = WPASupplicantProcess.owner(ofSocket: socketPath) else {
                source.logger.warning("no process found serving the wpa_supplicant control socket: its exit is seen only when a request fails",
                                      metadata: ["interface": "\(name)", "socket": "\(socketPath)"])
                return
            }
            let pidfd = sg_pidfd_open(pid)
            if pidfd >= 0 {
                // The pid could have been reused between the search and pidfd_open: the
                // process the pidfd names must still serve the socket.
                if let inode = WPASupplicantProcess.socketInode(pid: pid, socketPath: socketPath),
                   WPASupplicantProcess.holds(pid: pid, socketInode: inode) {
                    a.pid = pid
                    a.pidfd = pidfd
                    a.connection.pidfd = pidfd
                } else {
                    close(pidfd)
                    source.logger.warning("wpa_supplicant pid \(pid) no longer serves its socket", metadata: ["interface": "\(name)"])
                    return
                }
            } else {
                source.logger.warning("pidfd_open failed", metadata: ["interface": "\(name)", "pid": "\(pid)", "errno": "\(-pidfd)"])
            }
            a.eapolFd = openEAPOLSocket(interface: name, pid: pid)
        }

        /// After the watched process exited: watches the process that still holds the control
        /// socket, if one does. False when none does (the supplicant is gone).
        func rewatch(_ a: Attachment, name: String) -> Bool {
            let socketPath = "\(source.directory)/\(name)"
            let old = a.pid
            close(a.pidfd)
            a.pidfd = -1
            a.connection.pidfd = -1
            guard let pid = WPASupplicantProcess.owner(ofSocket: socketPath), pid != old else { return false }
            let pidfd = sg_pidfd_open(pid)
            guard pidfd >= 0 else { return false }
            guard let inode = WPASupplicantProcess.socketInode(pid: pid, socketPath: socketPath),
                  WPASupplicantProcess.holds(pid: pid, socketInode: inode) else {
                close(pidfd)
                return false
            }
            a.pid = pid
            a.pidfd = pidfd
            a.connection.pidfd = pidfd
            source.logger.debug("wpa_supplicant socket now held by another process", metadata: ["interface": "\(name)", "pid": "\(pid)", "was": "\(old)"])
            return true
        }

        /// The EAPOL packet socket for `interface` in the network namespace of `pid`, or -1.
        func openEAPOLSocket(interface: String, pid: pid_t) -> Int32 {
            var mine = stat(), theirs = stat()
            let theirPath = "/proc/\(pid)/ns/net"
            guard stat("/proc/thread-self/ns/net", &mine) == 0, stat(theirPath, &theirs) == 0 else { return -1 }
            var fd: Int32
            if mine.st_ino == theirs.st_ino && mine.st_dev == theirs.st_dev {
                fd = sg_eapol_socket(interface)
            } else {
                // This thread enters the supplicant's namespace for the socket() call only.
                let back = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
                let there = open(theirPath, O_RDONLY | O_CLOEXEC)
                defer {
                    if back >= 0 { close(back) }
                    if there >= 0 { close(there) }
                }
                guard back >= 0, there >= 0 else { return -1 }
                let entered = sg_enter_netns(there)
                guard entered == 0 else {
                    source.logger.warning("cannot enter wpa_supplicant's network namespace", metadata: ["interface": "\(interface)", "errno": "\(-entered)"])
                    return -1
                }
                fd = sg_eapol_socket(interface)
                let returned = sg_enter_netns(back)
                if returned != 0 {
                    source.logger.error("cannot return to our network namespace after opening the EAPOL socket", metadata: ["errno": "\(-returned)"])
                }
            }
            if fd < 0 {
                source.logger.warning("no EAPOL packet socket: LOGOFF/LOGON by another client is seen only at the next event",
                                      metadata: ["interface": "\(interface)", "errno": "\(-fd)"])
                return -1
            }
            return fd
        }

        func detach(_ name: String, why: String) {
            attached.removeValue(forKey: name)?.close()
            if states.removeValue(forKey: name) != nil {
                source.logger.warning("802.1X state lost", metadata: ["interface": "\(name)", "why": "\(why)"])
                publish()
            }
        }

        /// Reads the EAPOL frames seen on the interface; an EAPOL-Start or -Logoff (the
        /// supplicant's, after LOGON/LOGOFF/REAUTHENTICATE) moves the port state: STATUS.
        func handleFrames(_ name: String) {
            guard let a = attached[name], a.eapolFd >= 0 else { return }
            var buf = [UInt8](repeating: 0, count: 64)
            var startOrLogoff = false
            while true {
                let n = recv(a.eapolFd, &buf, buf.count, Int32(MSG_DONTWAIT))
                if n < 0 {
                    if errno == EINTR { continue }
                    if errno != EAGAIN {
                        source.logger.warning("EAPOL packet socket failed", metadata: ["interface": "\(name)", "errno": "\(errno)"])
                        close(a.eapolFd)
                        a.eapolFd = -1
                    }
                    break
                }
                // Ethernet header (14), EAPOL version, packet type: 1 Start, 2 Logoff.
                if n >= 16 && (buf[15] == 1 || buf[15] == 2) { startOrLogoff = true }
            }
            if startOrLogoff {
                refresh(name)
                if attached[name]?.connection.pendingEvents.isEmpty == false { handleEvents(name) }
            }
        }

        /// Reads every event waiting on the interface's socket, then STATUS when one of them
        /// changes the state (again while events that came during STATUS say so).
        func handleEvents(_ name: String) {
            guard let a = attached[name] else { return }
            let connection = a.connection
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
                    switch event {
                    case .terminating:
                        detach(name, why: "wpa_supplicant is terminating")
                        return
                    case .disconnected:
                        // Not authorized from this event on, without waiting for STATUS (which a
                        // supplicant shutting down may be slow to answer).
                        if var s = states[name], s.portStatus != .unauthorized {
                            s.portStatus = .unauthorized
                            s.paeState = "DISCONNECTED"
                            s.since = Date().timeIntervalSince1970
                            states[name] = s
                            publish()
                        }
                    default:
                        a.record(event)
                    }
                    if event.changesState { changed = true }
                }
                guard changed else { return }
                refresh(name)
                guard let c = attached[name] else { return }
                events = c.connection.pendingEvents
                c.connection.pendingEvents = []
            }
        }

        func refresh(_ name: String) {
            guard let a = attached[name] else { return }
            let connection = a.connection
            do {
                let reply = try connection.request("STATUS")
                var read = try WPAControlProtocol.parseStatus(reply)
                let id = WPAControlProtocol.networkID(reply)
                if read.identity == nil, let id {
                    // STATUS names the identity only for some methods; the network block has it.
                    read.identity = WPAControlProtocol.parseNetworkString(try connection.request("GET_NETWORK \(id) identity"))
                }
                if read.portStatus == .authorized, let id {
                    // The certificate it authenticates with, to compare with this device's
                    // (read on each refresh: a small file, and refreshes follow events only).
                    let value = WPAControlProtocol.parseNetworkString(try connection.request("GET_NETWORK \(id) client_cert"))
                    let key = WPAControlProtocol.parseNetworkString(try connection.request("GET_NETWORK \(id) private_key"))
                    let engine = try connection.request("GET_NETWORK \(id) engine").trimmed()
                    let found = certificates.finding(clientCert: value, privateKey: key, engine: engine.hasPrefix("FAIL") ? nil : engine)
                    (read.clientKeySHA256, read.clientCertificate) = (found.keySHA256, found.description)
                }
                read.serverChain = a.chain
                read.successes = a.successes
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

        /// Asks the interface's supplicant for a fresh authentication (see `reauthenticate`).
        func reauthenticate(_ name: String) {
            guard let a = attached[name] else {
                source.logger.info("re-authentication asked for an interface without wpa_supplicant", metadata: ["interface": "\(name)"])
                return
            }
            do {
                let pae = try WPAControlProtocol.parseStatus(try a.connection.request("STATUS")).paeState
                let commands: [String]
                switch pae {
                case "AUTHENTICATED": commands = ["REAUTHENTICATE"]
                case "LOGOFF": commands = ["LOGON"]
                default: commands = ["LOGOFF", "LOGON"]
                }
                for command in commands {
                    let reply = try a.connection.request(command)
                    guard reply.hasPrefix("OK") else { throw WPAConnectionError(description: "\(command) answered \(reply.prefix(40))") }
                }
                source.logger.info("802.1X re-authentication requested", metadata: ["interface": "\(name)", "pae": "\(pae ?? "?")", "sent": "\(commands.joined(separator: "+"))"])
            } catch let e as WPAParseError {
                source.logger.warning("re-authentication: unreadable STATUS", metadata: ["interface": "\(name)", "error": "\(e)"])
            } catch {
                detach(name, why: "\(error)")
                return
            }
            if attached[name]?.connection.pendingEvents.isEmpty == false { handleEvents(name) }
        }

        /// Hands the map to onChange without waiting for it.
        func publish() {
            let snapshot = states
            let onChange = self.onChange
            delivery.async { onChange(snapshot) }
        }

        func closeAll() {
            for (_, a) in attached { a.close() }
            attached = [:]
            if inotifyFd >= 0 { close(inotifyFd) }
        }
    }
}
