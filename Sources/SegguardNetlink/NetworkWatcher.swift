// The live network watcher. Owns: one rtnetlink socket and one generic-netlink (nl80211)
// socket, and the RouteTable and WirelessTracker they feed, all confined to the thread of the
// PollLoop it runs on (the agent's executor in segguardd, or a loop of its own). Must not own:
// decisions, policy, logging configuration. Its sockets wake the loop; every snapshot it
// publishes is the consequence of a kernel message, never of a timer.
//
// Failure table:
//   recv ENOBUFS (socket overrun)      -> drop the socket, open a fresh one, full re-dump (resync)
//   NLM_F_DUMP_INTR (dump inconsistent) -> same
//   unparseable message                 -> counted, logged (rate-limited), skipped
//   nl80211 family absent (no cfg80211) -> wireless monitoring off, reported in the snapshot
//   socket failure                      -> `onFailure` is called (segguardd exits, systemd restarts it)

import CLibNL
import CSegguardShims
import FoundationEssentials
import Logging
import SegguardPolicy
import SegguardSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Counters of a network source, for status output and tests.
public struct NetlinkStatistics: Sendable, Equatable {
    public var messages: UInt64 = 0
    /// Times the loop woke for one of the source's sockets. Nothing but the kernel wakes
    /// them, so an idle network leaves this unchanged.
    public var wakeups: UInt64 = 0
    /// Wakeups on which no message could be read (should stay 0).
    public var emptyWakeups: UInt64 = 0
    public var snapshots: UInt64 = 0
    /// Full re-dumps after an overrun or an interrupted dump.
    public var resyncs: UInt64 = 0
    public var parseErrors: UInt64 = 0
    public var lastParseError: String?
    public init() {}
}

/// A source of network snapshots, behind which the agent reads the kernel. `NetworkWatcher`
/// is the real one (rtnetlink and nl80211); SegguardTestFakes has a fake.
public protocol NetworkSource: AnyObject, Sendable {
    /// Starts on `loop`; call it on the loop's thread. `onSnapshot` then runs on that thread
    /// with the first full picture and after every change, with the monotonic time the loop
    /// woke for the first message behind it; `onFailure` once the source cannot go on.
    func start(on loop: PollLoop, onSnapshot: @escaping (NetworkSnapshot, UInt64) -> Void, onFailure: @escaping (String) -> Void) throws
    /// Closes the sockets (from any thread).
    func stop()
    var statistics: NetlinkStatistics { get }
    /// The signal levels (dBm) the policy's office-area fences use: Wi-Fi interfaces report
    /// crossing them (nl80211 connection-quality monitoring) from their next association on.
    func setSignalThresholds(_ dBm: [Int32])
}

/// Watches links, addresses, default routes and Wi-Fi associations through netlink and
/// publishes an immutable `NetworkSnapshot` after each batch of changes.
public final class NetworkWatcher: NetworkSource, Sendable {
    /// How to watch.
    public struct Options: Sendable {
        /// Path of a network namespace to watch (e.g. `/run/netns/NAME`); nil = the thread's.
        /// The thread that starts the watcher enters it (the loop's thread).
        public var networkNamespace: String?
        /// SO_RCVBUF of the netlink sockets, bytes. Small values make overruns (and resyncs) likely.
        public var receiveBufferSize: Int32
        /// Watch nl80211 (skipped when the kernel has no cfg80211).
        public var watchWireless: Bool
        /// Test hook: called on the loop's thread before each read of the sockets.
        public var beforeRead: (@Sendable () -> Void)?

        public init(networkNamespace: String? = nil, receiveBufferSize: Int32 = 1 << 20, watchWireless: Bool = true,
                    beforeRead: (@Sendable () -> Void)? = nil) {
            self.networkNamespace = networkNamespace
            self.receiveBufferSize = receiveBufferSize
            self.watchWireless = watchWireless
            self.beforeRead = beforeRead
        }
    }

    public typealias Statistics = NetlinkStatistics

    /// A setup failure, naming the call and errno.
    public struct SetupError: Error, CustomStringConvertible {
        public var description: String
    }

    let options: Options
    let logger: Logger
    let stats = Mutex(NetlinkStatistics())
    /// The loop it runs on, and its loop-confined state; `ownsLoop` when it started the loop.
    let running = Mutex<(loop: PollLoop, state: LoopBound<WatcherLoop?>, ownsLoop: Bool)?>(nil)

    public init(options: Options = Options(), logger: Logger = Logger(label: "segguard.netlink")) {
        self.options = options
        self.logger = logger
    }

    public var statistics: NetlinkStatistics { stats.withLock { $0 } }

    /// Signal thresholds for connection-quality monitoring (set by the agent from the policy).
    let signalThresholds = Mutex<[Int32]>([])
    public func setSignalThresholds(_ dBm: [Int32]) { signalThresholds.withLock { $0 = Array(Set(dBm)).sorted() } }

    public func start(on loop: PollLoop, onSnapshot: @escaping (NetworkSnapshot, UInt64) -> Void, onFailure: @escaping (String) -> Void) throws {
        try start(on: loop, ownsLoop: false, onSnapshot: onSnapshot, onFailure: onFailure)
    }

    func start(on loop: PollLoop, ownsLoop: Bool, onSnapshot: @escaping (NetworkSnapshot, UInt64) -> Void, onFailure: @escaping (String) -> Void) throws {
        loop.preconditionInLoop()
        let state = try WatcherLoop(watcher: self, loop: loop, onSnapshot: onSnapshot, onFailure: onFailure)
        running.withLock { $0 = (loop, LoopBound(state, loop: loop), ownsLoop) }
        loop.onStop { state.close() }
    }

    /// Runs on a loop of its own (thread `sg-netlink`): opens the sockets inside the namespace,
    /// requests the first dump and returns; `onSnapshot` is then called on that thread.
    public func start(onSnapshot: @escaping @Sendable (NetworkSnapshot) -> Void, onFailure: @escaping @Sendable (String) -> Void = { _ in }) throws {
        let loop = PollLoop(name: "sg-netlink")
        let setup = Mutex<SetupError?>(nil)
        loop.start { [self] in
            do {
                try start(on: loop, ownsLoop: true, onSnapshot: { snapshot, _ in onSnapshot(snapshot) }, onFailure: { why in
                    onFailure(why)
                    loop.stop()
                })
            } catch {
                setup.withLock { $0 = error as? SetupError ?? SetupError(description: "\(error)") }
                loop.stop()
            }
        }
        if let e = setup.withLock({ $0 }) { throw e }
    }

    /// Closes the sockets (and stops the loop when it is the watcher's own).
    public func stop() {
        guard let (loop, state, owns) = running.withLock({ r in defer { r = nil }; return r }) else { return }
        if owns {
            loop.stop()
        } else if loop.inLoop {
            state.value?.close()
        } else {
            loop.post { state.value?.close() }
        }
    }

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
final class NetlinkChannel {
    let protocolNumber: Int32
    let name: String
    var sock: OpaquePointer?
    var fd: Int32 = -1
    var watch: PollLoop.WatchID?

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
        // One recvmsg per datagram into a buffer large enough for any (the kernel's dump
        // skbs are at most 32 KiB), instead of a MSG_PEEK for its size first: half the calls.
        nl_socket_disable_msg_peek(s)
        _ = nl_socket_set_msg_buf_size(s, 64 * 1024)
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

    func close(on loop: PollLoop) {
        if let w = watch { loop.unwatch(w) }
        watch = nil
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
/// The watcher's sockets and state, confined to the loop's thread.
final class WatcherLoop {
    /// Nexthop objects before the routes that name them; neighbours last.
    enum RouteDump: CaseIterable { case links, addresses, nexthops, routes, neighbours }

    unowned let watcher: NetworkWatcher
    let loop: PollLoop
    let onSnapshot: (NetworkSnapshot, UInt64) -> Void
    let onFailure: (String) -> Void
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
    var interfaceCache = InterfaceCache()
    var deviceTypes: [String: String?] = [:]
    var failure: String?
    var parseErrorsLogged = 0
    /// When the loop woke for the first message not yet published; a publish is posted.
    var pendingSince: UInt64?
    var closed = false

    init(watcher: NetworkWatcher, loop: PollLoop, onSnapshot: @escaping (NetworkSnapshot, UInt64) -> Void, onFailure: @escaping (String) -> Void) throws {
        self.watcher = watcher
        self.loop = loop
        self.onSnapshot = onSnapshot
        self.onFailure = onFailure
        if let path = watcher.options.networkNamespace {
            do { try enterNetworkNamespace(path) } catch { throw NetworkWatcher.SetupError(description: error.description) }
        }
        try openRoute()
        if watcher.options.watchWireless { try openWireless() }
    }

    var context: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    func openRoute() throws(NetworkWatcher.SetupError) {
        let groups = [RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE].map { Int32($0.rawValue) }
            + [RtnetlinkNumbers.groupNeighbour, RtnetlinkNumbers.groupNexthop]
        try route.open(bufferSize: watcher.options.receiveBufferSize, groups: groups, context: context, valid: routeValidCallback, finish: routeFinishCallback)
        // A kernel without nexthop objects refuses their dump: that dump is then done, empty.
        if let cb = nl_socket_get_cb(route.sock) {
            nl_cb_err(cb, NL_CB_CUSTOM, routeErrorCallback, context)
            nl_cb_put(cb)
        }
        route.watch = loop.watch(route.fd) { [unowned self] in readable(route, isRoute: true) }
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
        genl.watch = loop.watch(genl.fd) { [unowned self] in readable(genl, isRoute: false) }
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
        case .nexthops: type = RtnetlinkNumbers.getNexthop
        case .routes: type = Int32(RTM_GETROUTE)
        case .neighbours: type = RtnetlinkNumbers.getNeighbour
        }
        guard let msg = nlmsg_alloc_simple(type, Int32(NLM_F_REQUEST | NLM_F_DUMP)) else { return }
        switch next {
        case .nexthops:
            // The nexthop dump wants its own header (struct nhmsg), all zero: every nexthop.
            var h = NexthopMessageHeader()
            _ = nlmsg_append(msg, &h, MemoryLayout<NexthopMessageHeader>.size, Int32(NLMSG_ALIGNTO))
        case .neighbours:
            var h = NeighbourMessageHeader()
            _ = nlmsg_append(msg, &h, MemoryLayout<NeighbourMessageHeader>.size, Int32(NLMSG_ALIGNTO))
        default:
            var gen = rtgenmsg(rtgen_family: UInt8(AF_UNSPEC))
            _ = nlmsg_append(msg, &gen, MemoryLayout<rtgenmsg>.size, Int32(NLMSG_ALIGNTO))
        }
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
        case let .station(ifindex):
            msg = NL80211Requests.getStationDump(familyID: nl80211Family, ifindex: ifindex)
            setCQM(ifindex)
        }
        guard let msg else { return }
        let rc = genl.send(msg)
        if rc < 0 {
            watcher.logger.warning("nl80211: sending request failed", metadata: ["error": "\(String(cString: nl_geterror(rc)))"])
            return
        }
        genlInFlight = next
    }

    /// Asks the kernel for connection-quality events at the signal thresholds the policy's
    /// fences use, on its own short-lived socket (a driver without CQM answers with an error,
    /// which must not look like a failed receive on the event socket). After each association.
    func setCQM(_ ifindex: Int32) {
        let thresholds = watcher.signalThresholds.withLock { $0 }
        guard !thresholds.isEmpty, nl80211Family >= 0, let sock = nl_socket_alloc() else { return }
        defer { nl_socket_free(sock) }
        guard genl_connect(sock) == 0, let msg = NL80211Requests.setCQM(familyID: nl80211Family, ifindex: ifindex, thresholds: thresholds, hysteresis: 0) else { return }
        var rc = nl_send_auto(sock, msg)
        nlmsg_free(msg)
        if rc >= 0 { rc = nl_wait_for_ack(sock) }
        if rc < 0 {
            watcher.logger.warning("nl80211: connection-quality thresholds refused; the signal is read at each association only",
                                   metadata: ["ifindex": "\(ifindex)", "thresholds": "\(thresholds)", "error": "\(String(cString: nl_geterror(rc)))"])
        }
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

    /// An error reply on the rtnetlink socket: a refused nexthop dump (a kernel without
    /// nexthop objects) ends that dump; any other error is the receive's failure (resync).
    func routeError(_ error: Int32) -> Bool {
        guard routeInFlight == .nexthops else { return false }
        watcher.logger.notice("rtnetlink: no nexthop objects on this kernel", metadata: ["error": "\(String(cString: strerror(-error)))"])
        routeDumpDone()
        return true
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
        case .station:
            break
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

    /// A socket woke the loop: read everything waiting on it and on the other socket (so a
    /// link change and an association change that came together make one snapshot), then
    /// publish at once, on this thread: the agent decides and enforces before the loop reads on.
    func readable(_ channel: NetlinkChannel, isRoute: Bool) {
        guard !closed else { return }
        watcher.stats.withLock { $0.wakeups += 1 }
        watcher.options.beforeRead?()
        let before = watcher.stats.withLock { $0.messages }
        drain(channel, isRoute: isRoute)
        let other = isRoute ? genl : route
        if failure == nil, other.sock != nil { drain(other, isRoute: !isRoute) }
        watcher.stats.withLock { if $0.messages == before { $0.emptyWakeups += 1 } }
        if let failure {
            close()
            onFailure(failure)
            return
        }
        // A snapshot held back by a dump in progress carries the time of its first message.
        let since = pendingSince ?? loop.wokeAt
        pendingSince = since
        guard !routeSyncing, !wirelessSyncing else { return }
        pendingSince = nil
        publishIfChanged(eventNanos: since)
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
                route.close(on: loop)
                try openRoute()
            } else {
                genl.close(on: loop)
                try openWireless()
            }
        } catch {
            failure = "\(error)"
        }
    }

    func publishIfChanged(eventNanos: UInt64) {
        guard !routeSyncing, !wirelessSyncing else { return }
        let interfaces = state.interfaces(deviceType: { self.deviceType($0) }, reusing: &interfaceCache)
        guard interfaces != lastPublished else { return }
        lastPublished = interfaces
        generation += 1
        watcher.stats.withLock { $0.snapshots += 1 }
        onSnapshot(NetworkSnapshot(interfaces: interfaces, generation: generation, wirelessMonitoring: wirelessMonitoring), eventNanos)
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
        closed = true
        route.close(on: loop)
        genl.close(on: loop)
    }
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

private let routeErrorCallback: nl_recvmsg_err_cb_t = { _, err, arg in
    guard let err else { return Int32(NL_STOP.rawValue) }
    return loop(arg).routeError(err.pointee.error) ? Int32(NL_SKIP.rawValue) : Int32(NL_STOP.rawValue)
}

private let genlValidCallback: nl_recvmsg_msg_cb_t = { msg, arg in
    loop(arg).handleGenl(nlmsg_hdr(msg))
    return Int32(NL_OK.rawValue)
}

private let genlFinishCallback: nl_recvmsg_msg_cb_t = { _, arg in
    loop(arg).genlDumpDone()
    return Int32(NL_OK.rawValue)
}
