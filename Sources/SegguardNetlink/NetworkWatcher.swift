// The live network watcher. Owns: one rtnetlink socket and one generic-netlink (nl80211)
// socket, an eventfd to wake its thread, and the thread itself; the RouteTable and
// WirelessTracker it feeds are confined to that thread. Must not own: decisions, policy,
// logging configuration. It blocks in poll(2) with no timeout: every snapshot it publishes is
// the consequence of a kernel message, never of a timer.
//
// Failure table:
//   recv ENOBUFS (socket overrun)      -> drop the socket, open a fresh one, full re-dump (resync)
//   NLM_F_DUMP_INTR (dump inconsistent) -> same
//   unparseable message                 -> counted, logged (rate-limited), skipped
//   nl80211 family absent (no cfg80211) -> wireless monitoring off, reported in the snapshot
//   poll/socket failure                 -> thread exits, `onFailure` is called (the daemon exits)

import CLibNL
import CSegguardShims
import Foundation
import Logging
import SegguardPolicy
import SegguardEventLoop
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Watches links, addresses, default routes and Wi-Fi associations through netlink and
/// publishes an immutable `NetworkSnapshot` after each batch of changes.
public final class NetworkWatcher: Sendable {
    /// How to watch.
    public struct Options: Sendable {
        /// Path of a network namespace to watch (e.g. `/run/netns/NAME`); nil = this process's.
        public var networkNamespace: String?
        /// SO_RCVBUF of the netlink sockets, bytes. Small values make overruns (and resyncs) likely.
        public var receiveBufferSize: Int32
        /// Watch nl80211 (skipped when the kernel has no cfg80211).
        public var watchWireless: Bool
        /// Test hook: called on the watcher thread before each read of the sockets.
        public var beforeRead: (@Sendable () -> Void)?
        /// With a service watchdog: ping at least every `interval / 2` seconds, from the loop
        /// itself, so a loop that hangs stops the pings and the service manager restarts it.
        /// (The only timed wakeup of the loop; it never produces a snapshot.)
        public var watchdog: (interval: Double, ping: @Sendable () -> Void)?

        public init(networkNamespace: String? = nil, receiveBufferSize: Int32 = 1 << 20, watchWireless: Bool = true,
                    beforeRead: (@Sendable () -> Void)? = nil, watchdog: (interval: Double, ping: @Sendable () -> Void)? = nil) {
            self.networkNamespace = networkNamespace
            self.receiveBufferSize = receiveBufferSize
            self.watchWireless = watchWireless
            self.beforeRead = beforeRead
            self.watchdog = watchdog
        }
    }

    /// Counters, for status output and tests.
    public struct Statistics: Sendable, Equatable {
        public var messages: UInt64 = 0
        /// Returns from poll(2). The loop has no timeout, so this grows only when the kernel
        /// sends something (or on stop): an idle network leaves it unchanged.
        public var wakeups: UInt64 = 0
        /// Wakeups on which no message could be read (should stay 0: nothing wakes the loop
        /// but the kernel or `stop()`).
        public var emptyWakeups: UInt64 = 0
        /// Watchdog pings sent from the loop.
        public var watchdogPings: UInt64 = 0
        public var snapshots: UInt64 = 0
        /// Full re-dumps after an overrun or an interrupted dump.
        public var resyncs: UInt64 = 0
        public var parseErrors: UInt64 = 0
        public var lastParseError: String?
        public init() {}
    }

    /// A setup failure, naming the call and errno.
    public struct SetupError: Error, CustomStringConvertible {
        public var description: String
    }

    let options: Options
    let logger: Logger
    let stats = Mutex(Statistics())
    let stopSignal = StopSignal()

    public init(options: Options = Options(), logger: Logger = Logger(label: "segguard.netlink")) {
        self.options = options
        self.logger = logger
    }

    public var statistics: Statistics { stats.withLock { $0 } }

    /// Opens the sockets on a new thread (inside the namespace, if one is given), requests the
    /// first dump and returns; `onSnapshot` is then called on that thread for the first full
    /// picture and after every change. `onFailure` is called if the thread dies.
    public func start(
        onSnapshot: @escaping @Sendable (NetworkSnapshot) -> Void,
        onFailure: @escaping @Sendable (String) -> Void = { _ in }
    ) throws {
        let setup = Mutex<Result<Void, SetupError>?>(nil)
        let ready = DispatchSemaphore(value: 0)
        stopSignal.arm()
        let thread = Thread { [self] in
            let loop: WatcherLoop
            do {
                loop = try WatcherLoop(watcher: self, onSnapshot: onSnapshot)
                setup.withLock { $0 = .success(()) }
                ready.signal()
            } catch let error as SetupError {
                setup.withLock { $0 = .failure(error) }
                ready.signal()
                return
            } catch {
                setup.withLock { $0 = .failure(SetupError(description: "\(error)")) }
                ready.signal()
                return
            }
            if let failure = loop.run() { onFailure(failure) }
            loop.close()
        }
        thread.name = "segguard-netlink"
        thread.start()
        ready.wait()
        if case let .failure(e) = setup.withLock({ $0 })! { throw e }
    }

    /// Asks the watcher thread to close its sockets and exit.
    public func stop() { stopSignal.stop() }

    /// Snapshots as an async sequence (the newest one wins if the consumer falls behind).
    public func snapshots(onFailure: @escaping @Sendable (String) -> Void = { _ in }) throws -> AsyncStream<NetworkSnapshot> {
        let (stream, continuation) = AsyncStream.makeStream(of: NetworkSnapshot.self, bufferingPolicy: .bufferingNewest(1))
        try start(onSnapshot: { continuation.yield($0) }, onFailure: { why in
            onFailure(why)
            continuation.finish()
        })
        return stream
    }
}

/// One netlink socket and the dump requests waiting to go out on it (one dump at a time).
private final class NetlinkChannel {
    let protocolNumber: Int32
    let name: String
    var sock: OpaquePointer?
    var fd: Int32 = -1

    init(protocolNumber: Int32, name: String) {
        self.protocolNumber = protocolNumber
        self.name = name
    }

    func open(bufferSize: Int32, groups: [Int32], context: UnsafeMutableRawPointer,
              valid: nl_recvmsg_msg_cb_t, finish: nl_recvmsg_msg_cb_t) throws(NetworkWatcher.SetupError) {
        guard let s = nl_socket_alloc() else { throw NetworkWatcher.SetupError(description: "\(name): nl_socket_alloc failed") }
        nl_socket_disable_seq_check(s)
        nl_socket_disable_auto_ack(s)
        nl_socket_modify_cb(s, NL_CB_VALID, NL_CB_CUSTOM, valid, context)
        nl_socket_modify_cb(s, NL_CB_FINISH, NL_CB_CUSTOM, finish, context)
        var rc = nl_connect(s, protocolNumber)
        if rc < 0 {
            nl_socket_free(s)
            throw NetworkWatcher.SetupError(description: "\(name): nl_connect: \(String(cString: nl_geterror(rc)))")
        }
        nl_socket_set_buffer_size(s, bufferSize, 0)
        for g in groups {
            rc = nl_socket_add_membership(s, g)
            if rc < 0 {
                nl_socket_free(s)
                throw NetworkWatcher.SetupError(description: "\(name): join multicast group \(g): \(String(cString: nl_geterror(rc)))")
            }
        }
        nl_socket_set_nonblocking(s)
        sock = s
        fd = nl_socket_get_fd(s)
    }

    func close() {
        if let s = sock { nl_socket_free(s) }
        sock = nil
        fd = -1
    }

    /// Sends a prepared request and frees it.
    func send(_ msg: OpaquePointer) -> Int32 {
        defer { nlmsg_free(msg) }
        guard let s = sock else { return -1 }
        return nl_send_auto(s, msg)
    }
}

/// The watcher thread's state. Confined to that thread.
private final class WatcherLoop {
    enum RouteDump: CaseIterable { case links, addresses, routes }

    unowned let watcher: NetworkWatcher
    let onSnapshot: @Sendable (NetworkSnapshot) -> Void
    let route = NetlinkChannel(protocolNumber: Int32(NETLINK_ROUTE), name: "rtnetlink")
    let genl = NetlinkChannel(protocolNumber: Int32(NETLINK_GENERIC), name: "nl80211")
    var nl80211Family: Int32 = -1
    var nl80211Groups: [Int32] = []

    var state = NetworkState()
    var routeQueue: [RouteDump] = []
    var routeInFlight: RouteDump?
    var genlQueue: [WirelessReadRequest] = []
    var genlInFlight: WirelessReadRequest?
    /// True until the first complete dump after (re)opening: snapshots are held back meanwhile.
    var routeSyncing = true
    var wirelessSyncing = false
    var generation: UInt64 = 0
    var lastPublished: [InterfaceState]?
    var deviceTypes: [String: String?] = [:]
    var failure: String?
    var parseErrorsLogged = 0

    init(watcher: NetworkWatcher, onSnapshot: @escaping @Sendable (NetworkSnapshot) -> Void) throws {
        self.watcher = watcher
        self.onSnapshot = onSnapshot
        if let path = watcher.options.networkNamespace {
            let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw NetworkWatcher.SetupError(description: "open \(path): \(String(cString: strerror(errno))) (errno \(errno))") }
            defer { Glibc.close(fd) }
            let rc = sg_enter_netns(fd)
            guard rc == 0 else {
                throw NetworkWatcher.SetupError(description: "setns \(path): \(String(cString: strerror(-rc))) (errno \(-rc))")
            }
        }
        try openRoute()
        if watcher.options.watchWireless { try openWireless() }
    }

    var context: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    func openRoute() throws(NetworkWatcher.SetupError) {
        let groups = [RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE].map { Int32($0.rawValue) }
        try route.open(bufferSize: watcher.options.receiveBufferSize, groups: groups, context: context, valid: routeValidCallback, finish: routeFinishCallback)
        state.routes = RouteTable()
        routeSyncing = true
        routeInFlight = nil
        routeQueue = RouteDump.allCases
        sendNextRouteDump()
    }

    func openWireless() throws(NetworkWatcher.SetupError) {
        // Resolve the family on a plain socket first: on kernels without cfg80211 it is absent.
        guard let probe = nl_socket_alloc() else { throw NetworkWatcher.SetupError(description: "nl80211: nl_socket_alloc failed") }
        defer { nl_socket_free(probe) }
        guard genl_connect(probe) == 0 else { throw NetworkWatcher.SetupError(description: "nl80211: genl_connect failed") }
        let family = genl_ctrl_resolve(probe, "nl80211")
        guard family >= 0 else {
            watcher.logger.notice("nl80211 not available: Wi-Fi is not monitored", metadata: ["error": "\(String(cString: nl_geterror(family)))"])
            nl80211Family = -1
            state.nl80211Family = -1
            return
        }
        nl80211Family = family
        state.nl80211Family = family
        nl80211Groups = ["mlme", "config"].compactMap { name in
            let g = genl_ctrl_resolve_grp(probe, "nl80211", name)
            return g >= 0 ? g : nil
        }
        try genl.open(bufferSize: watcher.options.receiveBufferSize, groups: nl80211Groups, context: context, valid: genlValidCallback, finish: genlFinishCallback)
        state.wireless = WirelessTracker()
        wirelessSyncing = true
        genlInFlight = nil
        genlQueue = [.interfaces]
        sendNextWirelessRead()
    }

    var wirelessMonitoring: Bool { nl80211Family >= 0 }

    // MARK: Requests

    func sendNextRouteDump() {
        guard routeInFlight == nil, !routeQueue.isEmpty else { return }
        let next = routeQueue.removeFirst()
        let type: Int32
        switch next {
        case .links: type = Int32(RTM_GETLINK)
        case .addresses: type = Int32(RTM_GETADDR)
        case .routes: type = Int32(RTM_GETROUTE)
        }
        guard let msg = nlmsg_alloc_simple(type, Int32(NLM_F_REQUEST | NLM_F_DUMP)) else { return }
        var gen = rtgenmsg(rtgen_family: UInt8(AF_UNSPEC))
        _ = nlmsg_append(msg, &gen, MemoryLayout<rtgenmsg>.size, Int32(NLMSG_ALIGNTO))
        let rc = route.send(msg)
        if rc < 0 {
            failure = "rtnetlink: sending dump request: \(String(cString: nl_geterror(rc)))"
            return
        }
        routeInFlight = next
    }

    func sendNextWirelessRead() {
        guard genlInFlight == nil, !genlQueue.isEmpty, nl80211Family >= 0 else { return }
        let next = genlQueue.removeFirst()
        let msg: OpaquePointer?
        switch next {
        case .interfaces:
            msg = NL80211Requests.getInterfaceDump(familyID: nl80211Family)
            state.wireless.beginInterfaceDump()
        case let .scan(ifindex):
            msg = NL80211Requests.getScanDump(familyID: nl80211Family, ifindex: ifindex)
            state.wireless.beginScanDump(ifindex: ifindex)
        }
        guard let msg else { return }
        let rc = genl.send(msg)
        if rc < 0 {
            watcher.logger.warning("nl80211: sending request failed", metadata: ["error": "\(String(cString: nl_geterror(rc)))"])
            return
        }
        genlInFlight = next
    }

    func enqueueWireless(_ requests: [WirelessReadRequest]) {
        for r in requests where r != genlInFlight && !genlQueue.contains(r) { genlQueue.append(r) }
        sendNextWirelessRead()
    }

    // MARK: Message handling (called from libnl callbacks on this thread)

    func handleRoute(_ hdr: UnsafeMutablePointer<nlmsghdr>) {
        watcher.stats.withLock { $0.messages += 1 }
        do {
            try state.handleRoute(hdr)
        } catch {
            noteParseError(error)
        }
    }

    func routeDumpDone() {
        routeInFlight = nil
        if routeQueue.isEmpty {
            routeSyncing = false
        } else {
            sendNextRouteDump()
        }
    }

    func handleGenl(_ hdr: UnsafeMutablePointer<nlmsghdr>) {
        watcher.stats.withLock { $0.messages += 1 }
        do {
            enqueueWireless(try state.handleWireless(hdr))
        } catch {
            noteParseError(error)
        }
    }

    func genlDumpDone() {
        switch genlInFlight {
        case .interfaces:
            state.wireless.endInterfaceDump()
            // Read the association of every Wi-Fi interface the dump found.
            enqueueWireless(state.wireless.wirelessIfindexes.sorted().map { .scan(ifindex: $0) })
        case let .scan(ifindex):
            state.wireless.endScanDump(ifindex: ifindex)
        case nil:
            break
        }
        genlInFlight = nil
        if genlQueue.isEmpty { wirelessSyncing = false }
        sendNextWirelessRead()
    }

    func noteParseError(_ error: any Error) {
        let text = "\(error)"
        watcher.stats.withLock {
            $0.parseErrors += 1
            $0.lastParseError = text
        }
        // Rate-limited: the first 10, then every 1000th.
        parseErrorsLogged += 1
        if parseErrorsLogged <= 10 || parseErrorsLogged % 1000 == 0 {
            watcher.logger.warning("netlink message skipped", metadata: ["error": "\(text)", "count": "\(parseErrorsLogged)"])
        }
    }

    // MARK: The loop

    /// Runs until stopped (nil) or a fatal error (its description).
    func run() -> String? {
        let watchdog = watcher.options.watchdog
        let half = watchdog.map { UInt64($0.interval * 1e9 / 2) } ?? 0
        var lastPing: UInt64 = 0
        while watcher.stopSignal.isRunning {
            if let watchdog {
                let now = loopNanos()
                if now &- lastPing >= half {
                    watchdog.ping()
                    lastPing = now
                    watcher.stats.withLock { $0.watchdogPings += 1 }
                }
            }
            var fds = [pollfd(fd: watcher.stopSignal.fd, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: route.fd, events: Int16(POLLIN), revents: 0)]
            if genl.fd >= 0 { fds.append(pollfd(fd: genl.fd, events: Int16(POLLIN), revents: 0)) }
            let timeout: Int32 = watchdog == nil ? -1 : Int32(max(1, half / 1_000_000))
            let n = poll(&fds, nfds_t(fds.count), timeout)
            if n < 0 {
                if errno == EINTR { continue }
                return "poll: \(String(cString: strerror(errno))) (errno \(errno))"
            }
            if n == 0 { continue }  // watchdog timeout only
            watcher.stats.withLock { $0.wakeups += 1 }
            if fds[0].revents != 0 { continue }
            watcher.options.beforeRead?()
            let before = watcher.stats.withLock { $0.messages }
            if fds[1].revents != 0 { drain(route, isRoute: true) }
            if fds.count > 2, fds[2].revents != 0 { drain(genl, isRoute: false) }
            watcher.stats.withLock { if $0.messages == before { $0.emptyWakeups += 1 } }
            if let failure { return failure }
            publishIfChanged()
        }
        return nil
    }

    /// Reads every message waiting on a channel; resyncs on overrun.
    func drain(_ channel: NetlinkChannel, isRoute: Bool) {
        guard let s = channel.sock else { return }
        while true {
            let rc = nl_recvmsgs_report(s, nl_socket_get_cb(s))
            if rc > 0 { continue }
            if rc == 0 || rc == -NLE_AGAIN { return }
            let why = String(cString: nl_geterror(rc))
            if rc == -NLE_NOMEM || rc == -NLE_DUMP_INTR {
                watcher.stats.withLock { $0.resyncs += 1 }
                watcher.logger.warning("netlink overrun or interrupted dump: re-reading everything", metadata: ["socket": "\(channel.name)", "error": "\(why)"])
            } else {
                watcher.logger.error("netlink receive failed: re-reading everything", metadata: ["socket": "\(channel.name)", "error": "\(why)"])
                watcher.stats.withLock { $0.resyncs += 1 }
            }
            resync(isRoute: isRoute)
            return
        }
    }

    func resync(isRoute: Bool) {
        do {
            if isRoute {
                route.close()
                try openRoute()
            } else {
                genl.close()
                try openWireless()
            }
        } catch {
            failure = "\(error)"
        }
    }

    func publishIfChanged() {
        guard !routeSyncing, !wirelessSyncing else { return }
        let interfaces = state.interfaces(deviceType: { self.deviceType($0) })
        guard interfaces != lastPublished else { return }
        lastPublished = interfaces
        generation += 1
        watcher.stats.withLock { $0.snapshots += 1 }
        onSnapshot(NetworkSnapshot(interfaces: interfaces, generation: generation, wirelessMonitoring: wirelessMonitoring))
    }

    /// udev's DEVTYPE (wlan, wwan, …) from sysfs, a fallback classification when nl80211 is
    /// absent. Only meaningful for this process's own namespace, so skipped when watching another.
    func deviceType(_ link: LinkInfo) -> String? {
        guard watcher.options.networkNamespace == nil else { return nil }
        if let cached = deviceTypes[link.name] { return cached }
        var value: String?
        if let text = try? String(contentsOfFile: "/sys/class/net/\(link.name)/uevent", encoding: .utf8) {
            for line in text.split(separator: "\n") where line.hasPrefix("DEVTYPE=") {
                value = String(line.dropFirst("DEVTYPE=".count))
            }
        }
        deviceTypes[link.name] = value
        return value
    }

    func close() {
        route.close()
        genl.close()
    }
}

/// CLOCK_MONOTONIC in nanoseconds.
private func loopNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

private func loop(_ arg: UnsafeMutableRawPointer?) -> WatcherLoop {
    Unmanaged<WatcherLoop>.fromOpaque(arg!).takeUnretainedValue()
}

private let routeValidCallback: nl_recvmsg_msg_cb_t = { msg, arg in
    loop(arg).handleRoute(nlmsg_hdr(msg))
    return Int32(NL_OK.rawValue)
}

private let routeFinishCallback: nl_recvmsg_msg_cb_t = { _, arg in
    loop(arg).routeDumpDone()
    return Int32(NL_OK.rawValue)
}

private let genlValidCallback: nl_recvmsg_msg_cb_t = { msg, arg in
    loop(arg).handleGenl(nlmsg_hdr(msg))
    return Int32(NL_OK.rawValue)
}

private let genlFinishCallback: nl_recvmsg_msg_cb_t = { _, arg in
    loop(arg).genlDumpDone()
    return Int32(NL_OK.rawValue)
}
