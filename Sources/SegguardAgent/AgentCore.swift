// The agent: the one owner of segment-guard's state. Owns: the policy in force and the file it
// came from, the latest network snapshot and 802.1X states, the decision (SegmentMonitor) and
// its generation, the binding controller, the grace period, the event log, the exec gate, the
// pipeline timings. Must not own: the kernel sources' sockets and threads (they are behind
// protocols), the control socket, the reporter's spool.
//
// Everything here runs on the agent's loop, one thread: a netlink message (read on that very
// thread), an 802.1X change, a SIGHUP reload, a policy bundle, the repair tick, the grace
// timer, a control request, a capture record: each is one job, run to the end before the
// next. So there are no locks, and a decision is enforced before the next one is made.
//
// Failure table:
//   nftables transaction refused   -> drop-all baseline, event binding-failed, retried by the repair tick
//   table gone (flushed by hand)   -> put back at the next repair tick (every repairInterval s)
//   session cannot be tracked      -> launch refused (fail closed), event launch-refused
//   policy invalid on reload       -> refused with every error, the previous policy stays (status, event)
//   exec gate cannot start         -> said in status and the log; the segment controls go on
//   network source fails           -> the agent stops with the reason (segguardd exits 1, systemd restarts it)
//   the agent stops (any reason)   -> the baseline is loaded: under enforce nothing reaches the gateways

import FoundationEssentials
import SegguardEssentials
import Dispatch
import Logging
import SegguardCapture
import SegguardDecision
import SegguardDeviceAuth
import SegguardEnforce
import SegguardNetlink
import SegguardPolicy
import SegguardReport
import SegguardSystem
import SegguardWire
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A policy as loaded: the model and the SHA-256 of the file's bytes.
public struct LoadedPolicy: Sendable {
    public var policy: Policy
    public var file: String
    public var sha256: String
}

/// Posts jobs to the core from any thread.
struct Mailbox: Sendable {
    let loop: PollLoop
    let core: LoopBound<AgentCore?>
    let captureBacklog: CaptureBacklog

    func post(_ job: @escaping @Sendable (AgentCore) -> Void) {
        loop.post { [core] in
            if let c = core.value { job(c) }
        }
    }

    /// A capture record from the gate's threads: queued unless that many are waiting already.
    func postCapture(_ record: CaptureDecisionRecord) {
        guard captureBacklog.enter() else { return }
        post { [captureBacklog] core in
            let dropped = captureBacklog.leave()
            if dropped > 0 { core.captureRecordsDropped(dropped) }
            core.captured(record)
        }
    }
}

/// Capture records waiting for the loop, and those dropped because too many were waiting.
final class CaptureBacklog: Sendable {
    let limit: Int
    private let state = Mutex<(pending: Int, dropped: UInt64)>((0, 0))

    init(limit: Int) { self.limit = limit }

    /// True when the record may be queued.
    func enter() -> Bool {
        state.withLock { b in
            guard b.pending < limit else {
                b.dropped += 1
                return false
            }
            b.pending += 1
            return true
        }
    }

    /// One record taken off the queue; returns (and clears) the count dropped meanwhile.
    func leave() -> UInt64 {
        state.withLock { b in
            b.pending -= 1
            defer { b.dropped = 0 }
            return b.dropped
        }
    }
}

/// The agent's state and what it does with each input. Confined to the agent's loop.
final class AgentCore {
    let loop: PollLoop
    let mailbox: Mailbox
    let configuration: AgentConfiguration
    let sources: AgentSources
    let observer: any AgentObserver
    let reporting: (any AgentReporting)?
    let logger: Logger
    /// Ending sessions waits for their processes (up to the kill timeout): off the loop.
    let terminator = DispatchQueue(label: "segguard.sessions")
    /// Called once when a source fails for good.
    let onFailure: @Sendable (String) -> Void
    /// The group names the policy's profiles allow, for `Agent.reply` to resolve off the loop.
    let groupNames: GroupNames

    // The policy in force.
    private(set) var policy: Policy
    private(set) var policyFile: String
    private(set) var policyDigest: String
    private(set) var policyLoadedAt = Date()
    private(set) var lastPolicyError: String?

    // Inputs.
    private(set) var snapshot: NetworkSnapshot?
    private(set) var deviceAuth: [String: DeviceAuthState] = [:]
    /// A wired port as last seen, and the 802.1X success count that predates its last link loss.
    struct AuthLink {
        var index: Int32
        var up: Bool
        var staleThrough: UInt64?
        var carrierChanges: UInt32?
    }
    private(set) var authLinks: [String: AuthLink] = [:]

    /// What a trusted-server proof is valid for: the link (ifindex and its carrier epoch), its
    /// global addresses and the MACs of its gateways. Any change and the proof is gone.
    struct ProbeKey: Hashable {
        var index: Int32
        var epoch: UInt64
        var addresses: [InterfaceAddress]
        var gatewayMACs: [MACAddress]
        var server: String
    }
    struct ProbeEntry {
        var result: TrustedServerResult?
        var inFlight: Bool
        var failures: Int
        var retry: PollLoop.TimerID?
    }
    /// Probes by key; keys no longer current are dropped at each snapshot.
    private(set) var probes: [ProbeKey: ProbeEntry] = [:]
    /// Carrier losses per ifindex: a proof never survives one (a cable moved).
    private(set) var linkEpochs: [Int32: (up: Bool, epoch: UInt64, changes: UInt32?)] = [:]
    /// Probes made and their outcomes, for status and tests.
    private(set) var probeCount = (started: 0, proven: 0, refused: 0)
    /// Office-area fence states by (ifindex, BSSID, fence): a new association starts outside.
    struct FenceKey: Hashable {
        var index: Int32
        var bssid: MACAddress?
        var fence: SignalFence
    }
    private(set) var fences: [FenceKey: SignalFenceState] = [:]
    var fenceTimer: PollLoop.TimerID?
    /// Seconds a trusted-server proof stands before it is made again.
    static let proofLifetime = 60.0
    /// Pinned gateways the agent made the kernel resolve, per link epoch (once each).
    private(set) var nudged: Set<String> = []

    // The decision, and its generation: +1 at every change, whatever caused it.
    private(set) var monitor: SegmentMonitor
    private(set) var generation: UInt64 = 0
    private(set) var decidedAt = Date()

    // Enforcement.
    let binding: BindingController?
    private(set) var grace = GracePeriod()
    private var graceTimer: PollLoop.TimerID?
    /// What users are to be told (grace countdown, session ended, tool blocked), oldest first,
    /// at most `maxUserNotices`; `segguard-launch --watch` in each desktop session asks for
    /// its own uid's (`notices`).
    /// Kept per uid, so one user's burst never pushes out another's.
    private(set) var userNotices: [UInt32: [NoticesReply.Entry]] = [:]
    private var noticeSeq: UInt64 = 0
    /// The users told their VDI will close (a grace countdown running): told again if the
    /// office network returns in time.
    private var countdownTold: Set<UInt32> = []
    /// Notices kept per user, and users kept (the least recent user goes first).
    static let maxNoticesPerUser = 64
    static let maxNoticeUsers = 1024
    /// This run of segguardd: a watcher that sees it change starts from the new run's first notice.
    let noticeInstance = UUID().uuidString
    private var repairTimer: PollLoop.TimerID?
    private var watchdogTimer: PollLoop.TimerID?
    private var readBackTimer: PollLoop.TimerID?
    /// nf_tables' announcements of foreign changes to the table, and the loop's watch on them.
    private var tableFeed: (feed: any TableChangeFeed, watch: PollLoop.WatchID)?
    /// Gateway packets the table refused and logged, and the loop's watch on them.
    private var refusalFeed: (feed: any GatewayRefusalFeed, watch: PollLoop.WatchID)?
    /// Tamper events: the last one's time, and the restores not reported since (at most one
    /// event a second, so that a process fighting the table cannot flood the log).
    private var lastTamperEvent: UInt64 = 0
    private var tamperUnreported: (count: Int, first: TableChange?, outcome: BindingController.Outcome?, ms: Double) = (0, nil, nil, 0)
    private var tamperTimer: PollLoop.TimerID?
    /// User-caused events held back when they repeat or come too fast, and the timer that
    /// writes their summaries.
    private var throttle = EventThrottle<HeldEvent>()
    private var throttleTimer: PollLoop.TimerID?

    /// What a held-back event's summary repeats of it.
    struct HeldEvent {
        var profile: String?
        var reason: String
        var exec: EnforcementEvent.ExecDetails?
    }
    /// Session terminations running on `terminator`.
    private(set) var terminationsInFlight = 0
    private(set) var events: EventLog
    private(set) var timings: PipelineTimings

    // Capture blocking.
    private(set) var gate: (any ExecGate)?
    private(set) var gateError: String?

    private var stopped = false

    /// This device's certificate key (`configuration.deviceCertificateFile`), or why unknown;
    /// put on every 802.1X state for the EAP-TLS requirement.
    private(set) var deviceKey = CertificateKeyFinding(keySHA256: nil, description: "no device certificate configured")
    /// The key this device had before its certificate was renewed (by the reporter, in place):
    /// the supplicant's state still names it until its next refresh reads the new file, and it
    /// is this device's too. Forgotten once a state names the new key, and at restart.
    private(set) var previousDeviceKey: CertificateKeyFinding?

    init(loop: PollLoop, mailbox: Mailbox, policy: LoadedPolicy, configuration: AgentConfiguration, sources: AgentSources,
         observer: any AgentObserver, reporting: (any AgentReporting)?, logger: Logger, groupNames: GroupNames, onFailure: @escaping @Sendable (String) -> Void) {
        self.groupNames = groupNames
        groupNames.set(from: policy.policy)
        self.loop = loop
        self.mailbox = mailbox
        self.configuration = configuration
        self.sources = sources
        self.observer = observer
        self.reporting = reporting
        self.logger = logger
        self.onFailure = onFailure
        self.policy = policy.policy
        self.policyFile = policy.file
        self.policyDigest = policy.sha256
        self.monitor = SegmentMonitor(policy: policy.policy)
        self.binding = sources.binding.map {
            BindingController(binding: $0, baselinePath: configuration.baselineFile, sessions: sources.sessions?.socketMatch, logger: logger)
        }
        self.events = EventLog(capacity: configuration.eventCapacity)
        self.timings = PipelineTimings(capacity: configuration.timingsCapacity)
        readDeviceKey()
    }

    /// Reads this device's certificate for its key (at start and on each reload: an enrolled
    /// device's certificate is renewed in place).
    func readDeviceKey() {
        guard let path = configuration.deviceCertificateFile else { return }
        let old = deviceKey
        do {
            let k = try CertificateKey.read(path: path)
            deviceKey = CertificateKeyFinding(keySHA256: k.keySHA256, description: k.description)
        } catch {
            deviceKey = CertificateKeyFinding(keySHA256: nil, description: "\(error)")
            if old != deviceKey, policy.requiresEAPTLS {
                logger.error("this device's certificate cannot be read: no EAP-TLS rule can be met", metadata: ["error": "\(error)"])
            }
        }
    }

    /// The reporter renewed the device certificate (new key, same files): the new key is
    /// this device's, and the old one stays accepted until the supplicant's state moves to
    /// the new one, so a renewal never costs the segment.
    func deviceCertificateRenewed() {
        let old = deviceKey
        readDeviceKey()
        guard old != deviceKey else { return }
        if old.keySHA256 != nil { previousDeviceKey = old }
        logger.notice("device certificate renewed; its key is re-read", metadata: ["certificate": "\(deviceKey.description)"])
        if let s = snapshot { decide(merged(s), eventNanos: monotonicNanos(), stages: nil) }
    }

    // MARK: - Start and stop

    /// Until the first decision nothing may reach the VDI gateways, whatever table an earlier
    /// run left: the baseline first, then the sources.
    func start() throws {
        if binding != nil && policy.enforcement.bindToSessions && sources.sessions?.socketMatch == nil {
            logger.critical("""
                VDI sessions cannot be named for nftables (no session cgroup under /sys/fs/cgroup): \
                while enforcement.bind_to_sessions is on, no process may reach the VDI gateways
                """)
        }
        binding?.applyBaseline(policy: policy)
        for w in policy.warnings { logger.warning("policy warning: \(w)") }
        warnUserCommandProfiles()
        if let feed = binding?.binding.changeFeed() {
            tableFeed = (feed, loop.watch(feed.fd) { [unowned self] in tableChanged() })
        }
        do {
            if let feed = try binding?.binding.refusalFeed() {
                refusalFeed = (feed, loop.watch(feed.fd) { [unowned self] in gatewayRefused() })
            }
        } catch {
            logger.error("refused gateway traffic is dropped but not recorded", metadata: ["error": "\(error)"])
        }
        scheduleRepair()
        if configuration.watchdogInterval != nil {
            observer.watchdog()
            scheduleWatchdog()
        }
        sources.network.setSignalThresholds(signalThresholds)
        try sources.network.start(
            on: loop,
            onSnapshot: { [unowned self] snapshot, woke in network(snapshot, woke: woke) },
            onFailure: { [unowned self] why in fail("network source: \(why)") })
        startCapture()
        if let source = sources.deviceAuth {
            let mailbox = self.mailbox
            let clock = loop.clock
            source.start { states in
                let at = clock()
                mailbox.post { core in core.deviceAuthChanged(states, at: at) }
            }
        }
    }

    /// Stops the sources in order (802.1X, netlink, capture), loads the binding's baseline
    /// (`BindingController.close`) and writes the timings file.
    func stop() {
        guard !stopped else { return }
        stopped = true
        observer.stopping()
        sources.deviceAuth?.stop()
        sources.network.stop()
        gate?.stop()
        for t in [graceTimer, repairTimer, watchdogTimer, readBackTimer, tamperTimer, throttleTimer].compactMap({ $0 }) { loop.cancel(t) }
        for t in probes.values.compactMap(\.retry) { loop.cancel(t) }
        if let t = fenceTimer { loop.cancel(t) }
        probes = [:]
        writeThrottleSummaries(all: true)
        if let t = tableFeed { loop.unwatch(t.watch) }
        tableFeed = nil
        if let r = refusalFeed { loop.unwatch(r.watch) }
        refusalFeed = nil
        // Nothing watches the network from here on: nothing may stay open (fail closed).
        if let binding {
            let inForce = binding.close(policy: policy)
            logger.notice("agent stopped; the network binding now holds \(inForce)")
        }
        if let path = configuration.timingsFile {
            do {
                try AtomicFile.write(Data(timings.jsonLines().utf8), to: path, mode: 0o644)
            } catch {
                logger.error("cannot write the pipeline timings", metadata: ["file": "\(path)", "error": "\(error)"])
            }
        }
    }

    func fail(_ why: String) {
        logger.critical("a kernel source failed; the agent stops", metadata: ["error": "\(why)"])
        onFailure(why)
    }

    // MARK: - Network and 802.1X: decide, then enforce

    /// A snapshot from the network source, on this loop: `woke` is when the loop woke for the
    /// first message behind it.
    func network(_ s: NetworkSnapshot, woke: UInt64) {
        let received = monotonicNanos()
        snapshot = s
        let reauthenticate = trackAuthLinks(s)
        trackLinkEpochs(s)
        updateFences(s)
        decide(merged(s), eventNanos: woke, stages: (woke, received))
        // After the table: a fresh 802.1X authentication for ports whose carrier came back,
        // and the trusted-server probes the new network calls for.
        for name in reauthenticate { sources.deviceAuth?.reauthenticate(interface: name) }
        scheduleProbes()
        resolveGateways(s)
    }

    /// A pinned office gateway on the link with no neighbour entry: the kernel learns its MAC
    /// only when something is sent to it, and a quiet thin client may send nothing. One empty
    /// UDP datagram to its discard port, out of that interface, makes the kernel resolve it
    /// (ARP / neighbour discovery); once per gateway and link epoch, only when the address is
    /// on the link (inside one of the interface's prefixes), so nothing is routed elsewhere.
    func resolveGateways(_ s: NetworkSnapshot) {
        var wanted: Set<String> = []
        for ifc in s.interfaces where ifc.isRunning && ifc.kind != .loopback {
            let pins = SegmentDecider.identities(for: ifc, policy).flatMap(\.gateways)
            guard !pins.isEmpty else { continue }
            let epoch = linkEpochs[ifc.index]?.epoch ?? 0
            for pin in pins where ifc.neighbour(pin.address) == nil {
                guard ifc.addresses.contains(where: { a in
                    let text = "\(a.address)/\(a.prefixLength)"
                    return (IPPrefix(text) ?? IPPrefix.network(of: text))?.contains(pin.address) == true
                }) else { continue }
                let key = "\(ifc.index)/\(epoch)/\(pin.address)"
                wanted.insert(key)
                guard !nudged.contains(key) else { continue }
                let rc = nudgeNeighbour(interfaceIndex: ifc.index, address: pin.address.bytes)
                logger.debug("resolving a pinned gateway", metadata: ["interface": "\(ifc.name)", "gateway": "\(pin.address)", "errno": "\(rc)"])
            }
        }
        nudged = wanted
    }

    // MARK: - Office-area signal fences

    var nowSeconds: Double { Double(loop.clock()) / 1e9 }

    /// Steps every fence of every associated Wi-Fi interface with its current signal; a fade
    /// below a fence's leave level is looked at again when it would have lasted long enough.
    func updateFences(_ s: NetworkSnapshot) {
        let now = nowSeconds
        var next: [FenceKey: SignalFenceState] = [:]
        var recheck: Double?
        for ifc in s.interfaces where ifc.kind == .wireless {
            guard let link = ifc.wireless, link.isAssociated else { continue }
            for fence in SegmentDecider.signalFences(for: ifc, policy) {
                let key = FenceKey(index: ifc.index, bssid: link.bssid, fence: fence)
                let (state, at) = SignalFenceState.step(fences[key], fence: fence, signal: link.signalDBM, now: now)
                next[key] = state
                if let at { recheck = min(recheck ?? at, at) }
            }
        }
        fences = next
        if let t = fenceTimer { loop.cancel(t) }
        fenceTimer = nil
        if let recheck {
            fenceTimer = loop.schedule(after: max(0, recheck - now) + 0.001) { [unowned self] in
                fenceTimer = nil
                guard let s = snapshot else { return }
                updateFences(s)
                decide(merged(s), eventNanos: monotonicNanos(), stages: nil)
            }
        }
    }

    /// The signal levels the policy's fences use, for the network source's CQM thresholds.
    var signalThresholds: [Int32] {
        policy.sites.flatMap(\.wireless).compactMap(\.fence).flatMap { [$0.enterDBM, $0.leaveBelowDBM] }
    }

    // MARK: - Trusted-server probes (off the decision path)

    func trackLinkEpochs(_ s: NetworkSnapshot) {
        var next: [Int32: (up: Bool, epoch: UInt64, changes: UInt32?)] = [:]
        for ifc in s.interfaces {
            let up = ifc.isRunning
            var e = linkEpochs[ifc.index] ?? (up: up, epoch: 0, changes: ifc.carrierChanges)
            // A carrier loss seen, or one the kernel counted that no snapshot showed.
            if (e.up && !up) || (e.changes != nil && ifc.carrierChanges != nil && e.changes != ifc.carrierChanges) { e.epoch &+= 1 }
            e.up = up
            e.changes = ifc.carrierChanges
            next[ifc.index] = e
        }
        linkEpochs = next
    }

    /// The probe keys the snapshot and policy call for, by interface.
    func probeKeys(_ s: NetworkSnapshot) -> [(InterfaceState, TrustedServerRule, ProbeKey)] {
        var out: [(InterfaceState, TrustedServerRule, ProbeKey)] = []
        for ifc in s.interfaces where ifc.isRunning && ifc.kind != .loopback {
            let servers = SegmentDecider.trustedServers(for: ifc, policy)
            guard !servers.isEmpty else { continue }
            let addresses = ifc.addresses.filter(\.isGlobal)
            guard !addresses.isEmpty else { continue }
            let macs = Set(ifc.defaultRoutes.compactMap { $0.gateway.flatMap { ifc.neighbour($0)?.mac } }).sorted()
            for server in servers {
                out.append((ifc, server, ProbeKey(index: ifc.index, epoch: linkEpochs[ifc.index]?.epoch ?? 0, addresses: addresses,
                                                  gatewayMACs: macs, server: server.endpoint)))
            }
        }
        return out
    }

    /// Drops proofs whose network changed and starts the probes missing. A refused probe is
    /// retried after 2, 4, … up to 60 s while its network stays the same.
    func scheduleProbes() {
        guard let s = snapshot else { return }
        let wanted = probeKeys(s)
        let current = Set(wanted.map(\.2))
        for (key, entry) in probes where !current.contains(key) {
            if let t = entry.retry { loop.cancel(t) }
            probes[key] = nil
        }
        guard let prober = sources.prober else { return }
        for (ifc, server, key) in wanted where probes[key] == nil {
            probes[key] = ProbeEntry(result: nil, inFlight: false, failures: 0, retry: nil)
            startProbe(prober, ifc.name, server, key)
        }
    }

    func startProbe(_ prober: any TrustedServerProbing, _ name: String, _ server: TrustedServerRule, _ key: ProbeKey) {
        guard probes[key] != nil, probes[key]?.inFlight == false else { return }
        probes[key]?.inFlight = true
        probes[key]?.retry = nil
        probeCount.started += 1
        let mailbox = self.mailbox
        prober.probe(server, interfaceIndex: key.index, interfaceName: name) { result in
            mailbox.post { core in core.probeFinished(key, server: server, name: name, result) }
        }
    }

    func probeFinished(_ key: ProbeKey, server: TrustedServerRule, name: String, _ result: TrustedServerResult) {
        guard var entry = probes[key] else { return }  // the network changed meanwhile: stale
        entry.inFlight = false
        let changed = entry.result != result
        entry.result = result
        if result.proven {
            probeCount.proven += 1
            entry.failures = 0
            // A proof is not forever: the LAN behind a switch the user put in between can change
            // without any carrier loss here. Proven again every minute; the proof stands while
            // the new probe runs, a refusal ends it.
            if let prober = sources.prober {
                entry.retry = loop.schedule(after: AgentCore.proofLifetime) { [unowned self] in startProbe(prober, name, server, key) }
            }
        } else {
            probeCount.refused += 1
            entry.failures += 1
            let delay = min(60, pow(2, Double(min(entry.failures, 6))))
            if let prober = sources.prober {
                entry.retry = loop.schedule(after: delay) { [unowned self] in startProbe(prober, name, server, key) }
            }
        }
        probes[key] = entry
        if changed {
            logger.log(level: result.proven ? .notice : .warning, result.proven ? "trusted server proven" : "trusted server not proven", metadata: [
                "interface": "\(name)", "server": "\(result.server)", "detail": "\(result.detail)",
            ])
            if let s = snapshot { decide(merged(s), eventNanos: monotonicNanos(), stages: nil) }
        }
    }

    func deviceAuthChanged(_ states: [String: DeviceAuthState], at: UInt64) {
        for (name, link) in authLinks where link.staleThrough != nil {
            // The supplicant went away or restarted (its count began again): its next success
            // is on the link as it is now.
            if let old = deviceAuth[name], let new = states[name], new.successes >= old.successes { continue }
            authLinks[name]?.staleThrough = nil
        }
        deviceAuth = states
        if previousDeviceKey != nil, let current = deviceKey.keySHA256,
           states.values.contains(where: { $0.clientKeySHA256 == current }), !states.values.contains(where: { $0.clientKeySHA256 == previousDeviceKey?.keySHA256 }) {
            previousDeviceKey = nil
        }
        guard let s = snapshot else { return }
        decide(merged(s), eventNanos: at, stages: nil)
    }

    /// Ties 802.1X states to wired links: when a port loses carrier (or its name comes back
    /// with another ifindex), the success count it had is recorded; a state with no newer
    /// success no longer counts (`predatesLinkLoss`). Wi-Fi is not tracked here: each
    /// association derives its keys from the 802.1X authentication (a roam with a cached PMK
    /// authenticates nothing anew, and must not block). Returns the ports whose carrier came
    /// back after a loss, to re-authenticate.
    func trackAuthLinks(_ s: NetworkSnapshot) -> [String] {
        guard sources.deviceAuth != nil else { return [] }
        var back: [String] = []
        for ifc in s.interfaces where ifc.kind != .wireless && ifc.kind != .loopback {
            let up = ifc.isAdminUp && ifc.hasCarrier
            guard var link = authLinks[ifc.name] else {
                authLinks[ifc.name] = AuthLink(index: ifc.index, up: up, carrierChanges: ifc.carrierChanges)
                continue
            }
            let unseenFlap = link.carrierChanges != nil && ifc.carrierChanges != nil && link.carrierChanges != ifc.carrierChanges && link.up && up
            if link.index != ifc.index || (link.up && !up) || unseenFlap {
                let through = deviceAuth[ifc.name]?.successes ?? 0
                link.staleThrough = max(through, link.staleThrough ?? 0)
                if deviceAuth[ifc.name] != nil {
                    logger.notice("802.1X state no longer counts: the link lost carrier or changed", metadata: [
                        "interface": "\(ifc.name)", "ifindex": "\(ifc.index)", "successes": "\(through)",
                    ])
                }
            }
            if (!link.up || unseenFlap) && up && link.staleThrough != nil { back.append(ifc.name) }
            link.index = ifc.index
            link.up = up
            link.carrierChanges = ifc.carrierChanges
            authLinks[ifc.name] = link
        }
        return back
    }

    func merged(_ s: NetworkSnapshot) -> NetworkSnapshot {
        var out = s
        if !fences.isEmpty {
            for i in out.interfaces.indices where out.interfaces[i].kind == .wireless {
                let ifc = out.interfaces[i]
                out.interfaces[i].signalFences = fences.filter { $0.key.index == ifc.index && $0.key.bssid == ifc.wireless?.bssid }.map(\.value)
                    .sorted { ($0.fence.enterDBM, $0.fence.leaveBelowDBM) < ($1.fence.enterDBM, $1.fence.leaveBelowDBM) }
            }
        }
        if !probes.isEmpty {
            for (ifc, _, key) in probeKeys(s) {
                guard let result = probes[key]?.result, let i = out.interfaces.firstIndex(where: { $0.index == ifc.index }) else { continue }
                out.interfaces[i].trustedServers.append(result)
            }
        }
        guard !deviceAuth.isEmpty || s.interfaces.contains(where: { $0.deviceAuth != nil }) else { return out }
        for i in out.interfaces.indices {
            let name = out.interfaces[i].name
            var state = deviceAuth[name]
            if let through = authLinks[name]?.staleThrough, let st = state, st.successes <= through, out.interfaces[i].kind != .wireless {
                state?.predatesLinkLoss = true
            }
            if state != nil {
                if let previous = previousDeviceKey, let key = previous.keySHA256, state?.clientKeySHA256 == key {
                    state?.deviceKeySHA256 = key
                    state?.deviceCertificate = previous.description + " (before its renewal)"
                } else {
                    state?.deviceKeySHA256 = deviceKey.keySHA256
                    state?.deviceCertificate = deviceKey.description
                }
            }
            out.interfaces[i].deviceAuth = state
        }
        return out
    }

    /// The hot path: the decision, then at once the table; everything else after.
    func decide(_ merged: NetworkSnapshot, eventNanos: UInt64, stages: (woke: UInt64, received: UInt64)?) {
        guard let change = monitor.update(merged) else { return }
        let decided = monotonicNanos()
        generation += 1
        decidedAt = Date()
        let outcome = binding?.enforce(change.current, policy: policy, generation: generation)
        if let stages, case .applied? = outcome, let t = binding?.lastTiming {
            timings.add(PipelineSample(woke: stages.woke, snapshot: stages.received, decided: decided, handedToKernel: t.handedToKernel, committed: t.returned,
                                       authorized: change.current.isAuthorized))
        }
        let status = statusLine
        if change.isInitial {
            // READY once the first decision is in the journal (after its event is spooled, when
            // reporting): systemd's "Started" never precedes the decision it vouches for.
            let observer = self.observer
            logDecision(change) { observer.ready(status: status) }
        } else {
            logDecision(change)
        }
        if let outcome { recordBinding(outcome, eventNanos: eventNanos, decisionChanged: true) }
        updateGrace(eventNanos: eventNanos)
        if !change.isInitial { observer.status(status) }
        observer.decisionChanged(change, eventNanos: eventNanos)
    }

    /// The STATUS= line: the decision and its interfaces or reason.
    var statusLine: String {
        let d = monitor.decision
        return d.isAuthorized ? "\(d.segment.rawValue) via \(d.authorizedInterfaces.joined(separator: ", "))" : "unauthorized: \(d.reason)"
    }

    /// Logs a decision (once its event is spooled, when reporting), then runs `then`.
    func logDecision(_ change: DecisionChange, then: (@Sendable () -> Void)? = nil) {
        let d = change.current
        // The first decision after start replaces the fail-closed placeholder: not a change.
        let level: Logger.Level = d.isAuthorized ? .notice : .warning
        let message: Logger.Message = change.isInitial ? "initial segment decision" : "segment decision changed"
        let metadata: Logger.Metadata = [
            "decision": "\(d.segment.rawValue)",
            "previous": "\(change.previous.segment.rawValue)",
            "interfaces": "\(d.authorizedInterfaces.joined(separator: ","))",
            "reason": "\(d.reason)",
        ]
        guard let reporting else {
            logger.log(level: level, message, metadata: metadata)
            then?()
            return
        }
        // Logged once the event is in the spool: a decision in the journal is never missing
        // from the spool, whatever kills the agent in between.
        let logger = self.logger
        reporting.record(kind: "decision-changed", severity: d.isAuthorized ? "info" : "warning",
                         reason: d.isAuthorized ? "\(d.segment.rawValue) via \(d.authorizedInterfaces.joined(separator: ", "))" : d.reason,
                         details: ["segment": d.segment.rawValue, "previous": change.previous.segment.rawValue,
                                   "interfaces": d.authorizedInterfaces.joined(separator: ","), "initial": change.isInitial ? "true" : "false"],
                         time: Date(), afterCommit: { id in
                             var m = metadata
                             m["event_id"] = "\(id ?? "not spooled")"
                             logger.log(level: level, message, metadata: m)
                             then?()
                         })
        reporting.heartbeatNow()
    }

    func recordBinding(_ outcome: BindingController.Outcome, eventNanos: UInt64, decisionChanged: Bool) {
        scheduleReadBack()
        switch outcome {
        case .unchanged:
            return
        case let .applied(mode, allowed):
            let ms = Double(monotonicNanos() &- eventNanos) / 1e6
            logger.info("network binding applied", metadata: [
                "mode": "\(mode.rawValue)", "allowed": "\(allowed.joined(separator: ","))", "latency_ms": "\(format("%.3f", ms))",
            ])
            if decisionChanged {
                record(.bindingApplied, reason: "VDI gateway traffic allowed via [\(allowed.joined(separator: ", "))] (\(mode.rawValue))", latencyMs: ms)
            }
        case let .failed(error, inForce):
            record(.bindingFailed, reason: "\(error); \(inForce); retrying every \(Int(configuration.repairInterval)) s")
        }
    }

    // MARK: - Repair and watchdog ticks

    /// The table's fingerprint is read back a moment after a transaction (0.1 s; a newer
    /// transaction moves it), off the moment the kernel delivers the change's notifications.
    func scheduleReadBack() {
        guard let binding, binding.readBackPending else { return }
        if let t = readBackTimer { loop.cancel(t) }
        readBackTimer = loop.schedule(after: AgentCore.readBackDelay) { [unowned self] in
            readBackTimer = nil
            binding.readBack()
        }
    }

    static let readBackDelay = 0.1

    func scheduleRepair() {
        guard binding != nil else { return }
        repairTimer = loop.schedule(after: configuration.repairInterval) { [unowned self] in
            repairTimer = nil
            repair()
            if !stopped { scheduleRepair() }
        }
    }

    /// Puts the table back when it is gone or the last transaction was refused: always the
    /// decision in force now, never one remembered from earlier.
    /// The session's first process exiting (its pidfd readable) is when the session may have
    /// ended: capture protection follows at once (vm.memfd_noexec put back, trusted-only
    /// lifted) rather than at the next exec or tick.
    func watchSessionEnd(peerPidfd: Int32) {
        guard peerPidfd >= 0 else { return }
        let fd = fcntl(peerPidfd, F_DUPFD_CLOEXEC, 0)
        guard fd >= 0 else { return }
        var id: PollLoop.WatchID?
        id = loop.watch(fd) { [unowned self] in
            if let id { loop.unwatch(id) }
            close(fd)
            refreshCapture()
            // The session's cgroup empties only once its last process is reaped by its parent:
            // look again shortly after.
            loop.schedule(after: 1) { [unowned self] in refreshCapture() }
        }
    }

    func repair() {
        // Sessions that ended unseen (the client left its launcher's process) lift capture
        // protection here at the latest.
        if gate?.protection.profile != nil { refreshCapture() }
        guard let binding, let outcome = binding.repair(monitor.decision, policy: policy, generation: generation) else { return }
        recordBinding(outcome, eventNanos: monotonicNanos(), decisionChanged: true)
    }

    /// nf_tables announced changes: another process's to our table are undone at once (the
    /// whole table for the decision in force) and reported; lost announcements mean a check.
    func tableChanged() {
        guard let feed = tableFeed?.feed, let binding else { return }
        let changes = feed.drain()
        guard !changes.isEmpty, !stopped else { return }
        guard let first = changes.foreign.first else {
            logger.warning("nf_tables notifications were lost; checking the table")
            repair()
            return
        }
        let woke = loop.wokeAt
        guard let outcome = binding.restoreAfterForeignChange(monitor.decision, policy: policy, generation: generation) else { return }
        let ms = Double(loop.clock() &- woke) / 1e6
        recordBinding(outcome, eventNanos: woke, decisionChanged: false)
        if tamperUnreported.first == nil { tamperUnreported.first = first }
        tamperUnreported.count += changes.foreign.count
        tamperUnreported.outcome = outcome
        tamperUnreported.ms = max(tamperUnreported.ms, ms)
        let now = loop.clock()
        if lastTamperEvent == 0 || now &- lastTamperEvent >= 1_000_000_000 {
            reportTamper()
        } else if tamperTimer == nil {
            tamperTimer = loop.schedule(at: lastTamperEvent &+ 1_000_000_000) { [unowned self] in
                tamperTimer = nil
                reportTamper()
            }
        }
    }

    /// A My Number profile without `command` runs the user's own command (after `--`) inside
    /// the session, where bind_to_sessions lets it reach the gateways: said at start and reload.
    func warnUserCommandProfiles() {
        guard policy.enforcement.bindToSessions, binding != nil else { return }
        let open = policy.profiles.filter { $0.segment == .mynumber && $0.command.isEmpty }.map(\.name)
        guard !open.isEmpty else { return }
        logger.warning("""
            My Number profiles without a command run whatever command the user gives inside the session, where it reaches the VDI \
            gateways: give each one a command
            """, metadata: ["profiles": "\(open.joined(separator: ","))"])
    }

    /// The uid recorded for a refused packet that had no local socket (nobody's: held back
    /// like a user's events).
    static let noSocketOwner: UInt32 = 4_294_967_294

    /// The table refused gateway packets (logged by its `refused` rules): one gateway-refused
    /// event each, held back per uid like every user-caused event.
    func gatewayRefused() {
        guard let feed = refusalFeed?.feed else { return }
        let found = feed.drain()
        guard !stopped else { return }
        if found.overflow { logger.warning("some refused gateway packets were not seen (the log socket overflowed)") }
        for r in found.refusals {
            let name = snapshot?.interfaces.first { $0.index == r.outInterfaceIndex }?.name ?? "ifindex \(r.outInterfaceIndex)"
            let listed = r.destination.map { d in policy.vdi.gateways.contains { $0.prefix.contains(d) && $0.allows(transport: r.transport, port: r.port) } } ?? false
            let to = "\(r.destination?.description ?? "a VDI gateway") \(r.transport)\(r.port.map { "/\($0)" } ?? "")"
            let who = r.uid.map { "a process of uid \($0)" } ?? "a packet without a local socket"
            let why = listed
                ? "not started through segguard-launch (not in a My Number session); only sessions reach the VDI gateways"
                : "the policy does not list this port for the gateway"
            // Packets without a socket owner (a reset or an ack of a closed connection) are
            // held back under one key of their own, as a user's are.
            record(.gatewayRefused, reason: "\(who) sent to \(to) via \(name): refused, \(why)", uid: r.uid ?? Self.noSocketOwner)
        }
    }

    /// One binding-tampered event for the restores since the last one.
    func reportTamper() {
        guard let binding, let by = tamperUnreported.first, let outcome = tamperUnreported.outcome else { return }
        lastTamperEvent = loop.clock()
        let (count, ms) = (tamperUnreported.count, tamperUnreported.ms)
        tamperUnreported = (0, nil, nil, 0)
        let who = "\(by.process.isEmpty ? "an unnamed task" : by.process) (pid \(by.pid))"
        let more = count > 1 ? " (\(count) changes since the last report)" : ""
        let restored: String
        switch outcome {
        case .failed(let error, let inForce): restored = "could not put it back (\(error)); \(inForce)"
        default: restored = "the table for the decision in force was put back"
        }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(by.pid)/exe")) ?? "[\(by.process)]"
        record(.bindingTampered, reason: "table inet \(binding.binding.table) changed by \(who)\(more): \(restored)", latencyMs: ms,
               exec: EnforcementEvent.ExecDetails(path: exe, pid: by.pid))
    }

    func scheduleWatchdog() {
        guard let interval = configuration.watchdogInterval else { return }
        watchdogTimer = loop.schedule(after: interval / 2) { [unowned self] in
            watchdogTimer = nil
            observer.watchdog()
            if !stopped { scheduleWatchdog() }
        }
    }

    // MARK: - Grace and session termination

    func updateGrace(eventNanos: UInt64) {
        let d = monitor.decision
        let mode = policy.enforcement.sessionTermination
        // Reading the sessions costs cgroup reads: only when they could be ended.
        let hasSessions = !d.isAuthorized && mode != .off && !(sources.sessions?.sessions().isEmpty ?? true)
        let step = grace.decision(authorized: d.isAuthorized, mode: mode, hasSessions: hasSessions, eventNanos: eventNanos,
                                  graceSeconds: policy.enforcement.graceSeconds)
        follow(step)
    }

    func follow(_ step: GracePeriod.Step) {
        switch step {
        case .nothing:
            return
        case .cancelled:
            if let t = graceTimer { loop.cancel(t) }
            graceTimer = nil
            if monitor.decision.isAuthorized {
                logger.notice("authorized path back within the grace period: sessions kept", metadata: ["interfaces": "\(monitor.decision.authorizedInterfaces.joined(separator: ","))"])
                // Whoever was told the VDI would close is told it stays.
                for uid in countdownTold { tellUser(uid, .sessionKept) }
            }
            countdownTold = []
        case let .arm(deadline, token):
            if let t = graceTimer { loop.cancel(t) }
            if policy.enforcement.graceSeconds > 0 {
                logger.warning("segment lost: VDI traffic blocked, sessions end unless an authorized path returns",
                               metadata: ["grace_s": "\(policy.enforcement.graceSeconds)"])
                if policy.enforcement.sessionTermination == .enforce {
                    let seconds = "\(Int(policy.enforcement.graceSeconds.rounded(.up)))"
                    let users = Set(endable().map(\.uid))
                    for uid in users { tellUser(uid, .sessionEndingSoon, ["seconds": seconds]) }
                    countdownTold.formUnion(users)
                }
            }
            graceTimer = loop.schedule(at: deadline) { [unowned self] in
                graceTimer = nil
                graceExpired(token)
            }
        }
    }

    func graceExpired(_ token: UInt64) {
        guard !monitor.decision.isAuthorized, let started = grace.expire(token) else { return }
        countdownTold = []
        endSessions(reason: monitor.decision.reason, eventNanos: started)
    }

    /// Ends the sessions of profiles that need the segment (and adopted ones, whose profile is
    /// unknown): in audit mode only an event; in enforce mode on `terminator`, the result
    /// coming back here as a job.
    func endSessions(reason: String, eventNanos: UInt64) {
        guard let sessions = sources.sessions else { return }
        let matching = endsOnSegmentLoss()
        let targets = sessions.sessions().filter { matching($0.profile) }
        guard !targets.isEmpty else { return }
        switch policy.enforcement.sessionTermination {
        case .off:
            return
        case .audit:
            record(.sessionsWouldBeEnded, sessions: targets, reason: reason)
        case .enforce:
            let killTimeout = policy.enforcement.killTimeoutSeconds
            terminationsInFlight += 1
            let mailbox = self.mailbox
            terminator.async {
                let results = sessions.terminate(matching: matching, killTimeout: killTimeout)
                mailbox.post { core in core.sessionsTerminated(results, reason: reason, killTimeout: killTimeout, eventNanos: eventNanos) }
            }
        }
    }

    /// Whether a session of a profile ends when the segment is lost: profiles that need the
    /// segment, and adopted ones (their profile unknown; a profile that left the policy still
    /// needed the segment when its session started).
    func endsOnSegmentLoss() -> @Sendable (String) -> Bool {
        let protected = Set(policy.profiles.filter(\.needsAuthorizedSegment).map(\.name))
        let known = Set(policy.profiles.map(\.name))
        return { protected.contains($0) || !known.contains($0) }
    }

    /// The sessions a lost segment ends (`endsOnSegmentLoss`).
    func endable() -> [SessionInfo] {
        guard let sessions = sources.sessions else { return [] }
        let matching = endsOnSegmentLoss()
        return sessions.sessions().filter { matching($0.profile) }
    }

    /// Queues a notice for `uid`'s desktop session. A refused program is told once per 10 s
    /// for that user (a loop of refused programs, under any names, is one notice); another
    /// notice is not repeated when it is the user's last one, within 10 s (a countdown, the
    /// network back and a second countdown are all told). Each user's notices are kept apart
    /// (at most `maxNoticesPerUser`).
    func tellUser(_ uid: UInt32, _ notice: UserNotice, _ values: [String: String] = [:]) {
        let now = Date()
        var mine = userNotices[uid] ?? []
        let recent = mine.reversed().prefix { now.timeIntervalSince($0.time) < 10 }
        let repeated = notice == .toolBlocked
            ? recent.contains { $0.notice == .toolBlocked }
            : recent.first.map { $0.notice == notice && $0.values == values } ?? false
        if repeated { return }
        noticeSeq += 1
        mine.append(NoticesReply.Entry(seq: noticeSeq, time: now, notice: notice, values: values))
        if mine.count > Self.maxNoticesPerUser { mine.removeFirst(mine.count - Self.maxNoticesPerUser) }
        userNotices[uid] = mine
        if userNotices.count > Self.maxNoticeUsers,
           let stalest = userNotices.min(by: { ($0.value.last?.seq ?? 0) < ($1.value.last?.seq ?? 0) })?.key {
            userNotices.removeValue(forKey: stalest)
        }
    }

    func sessionsTerminated(_ results: [TerminationResult], reason: String, killTimeout: Double, eventNanos: UInt64) {
        terminationsInFlight -= 1
        refreshCapture()
        guard !results.isEmpty else { return }
        for uid in Set(results.map(\.session.uid)) { tellUser(uid, .sessionEnded) }
        let last = results.map(\.reapedAtNanos).max() ?? 0
        let ms = last > 0 ? Double(last &- eventNanos) / 1e6 : nil
        let notReaped = results.filter { !$0.reaped }
        var why = reason
        if results.contains(where: \.killed) { why += " (SIGKILL after \(killTimeout) s)" }
        if !notReaped.isEmpty { why += "; NOT reaped: sessions \(notReaped.map { String($0.session.id) }.joined(separator: ","))" }
        record(.sessionsEnded, sessions: results.map(\.session), reason: why, latencyMs: ms)
    }

    // MARK: - Launch gate

    /// `groups`: the ids of the groups the policy's profiles name, resolved by the caller off
    /// this loop (a group lookup may ask LDAP or sssd and must not stall decisions).
    func launch(profileName: String, command: [String], requester: PeerCredentials, groups: [String: UInt32]) -> LaunchReply {
        let verdict = LaunchGate.evaluate(profileName: profileName, command: command, requester: requester, decision: monitor.decision, policy: policy,
                                          gid: { name in
                                              if groups[name] == nil { logger.error("allowed_groups names a group unknown on this host", metadata: ["group": "\(name)"]) }
                                              return groups[name]
                                          })
        let shownProfile = LaunchGate.isProfileName(profileName) ? profileName : nil
        func refuse(_ why: String, _ notice: UserNotice) -> LaunchReply {
            record(.launchRefused, profile: shownProfile, reason: why, uid: requester.uid)
            return LaunchReply(allowed: false, reason: why, profile: profileName, sessionID: nil, command: [], configFiles: [], notice: notice,
                               helpdesk: policy.helpdesk)
        }
        switch verdict {
        case .refuse(let why, let notice):
            return refuse(why, notice)
        case let .allow(profile, command, reason, track, wouldRefuse):
            if let wouldRefuse { record(.launchWouldBeRefused, profile: profile.name, reason: wouldRefuse, uid: requester.uid) }
            var sessionID: UInt64?
            if track {
                // No cgroup v2: a My Number session could not be ended, so it does not start.
                guard let sessions = sources.sessions else { return refuse("cannot track a My Number session: no cgroup v2 on this system", .launchUnavailable) }
                let running = sessions.sessions().filter { $0.uid == requester.uid }.count
                if requester.uid != 0 && running >= configuration.maxSessionsPerUser {
                    return refuse("uid \(requester.uid) already has \(running) My Number sessions (at most \(configuration.maxSessionsPerUser) per user)", .launchTooManySessions)
                }
                do {
                    sessionID = try sessions.register(pid: requester.pid, uid: requester.uid, profile: profile.name, peerPidfd: requester.pidfd).id
                    watchSessionEnd(peerPidfd: requester.pidfd)
                } catch {
                    return refuse("cannot track the session: \(error)", .launchUnavailable)
                }
                // Started while unauthorized (gate in audit or off): its own grace, if none runs.
                follow(grace.sessionStarted(authorized: monitor.decision.isAuthorized, mode: policy.enforcement.sessionTermination, now: loop.clock(),
                                            graceSeconds: policy.enforcement.graceSeconds))
            }
            record(.launchAllowed, profile: profile.name, reason: reason, uid: requester.uid)
            // A session of a protecting profile raises capture protection before the client runs.
            refreshCapture()
            return LaunchReply(allowed: true, reason: reason, profile: profile.name, sessionID: sessionID, command: command, configFiles: profile.configFiles)
        }
    }

    // MARK: - Events

    func record(_ kind: EnforcementEvent.Kind, profile: String? = nil, sessions: [SessionInfo] = [], reason: String, latencyMs: Double? = nil,
                uid: UInt32? = nil, exec: EnforcementEvent.ExecDetails? = nil, repeated: Int? = nil) {
        // What a user can cause at will: the first of each kind a minute, at most 20 a minute.
        if repeated == nil, let uid, uid != 0, kind.isUserCaused {
            writeThrottleSummaries(all: false)
            let key = EventThrottle<HeldEvent>.Key(kind: kind, uid: uid, subject: exec?.path ?? profile ?? "")
            guard throttle.admit(key, sample: HeldEvent(profile: profile, reason: reason, exec: exec), now: loop.clock()) else {
                scheduleThrottleSummaries()
                return
            }
        }
        let event = events.append(kind, profile: profile, sessions: sessions, reason: reason, latencyMs: latencyMs, uid: uid, exec: exec, repeated: repeated)
        let level: Logger.Level = event.isDenial ? .warning : .notice
        if let reporting {
            // Logged once the event is in the spool (see logDecision).
            let (severity, details) = event.report
            let logger = self.logger
            reporting.record(kind: kind.rawValue, severity: severity, reason: reason, details: details, time: event.time, afterCommit: { id in
                var m = Self.metadata(event)
                m["event_id"] = "\(id ?? "not spooled")"
                logger.log(level: level, "enforcement event", metadata: m)
            })
        } else {
            // Built only when the level is logged (the metadata is an autoclosure).
            logger.log(level: level, "enforcement event", metadata: Self.metadata(event))
        }
        observer.recorded(event)
    }

    /// One event for each key whose events were held back in a window that has ended (`all`:
    /// every window, at stop).
    func writeThrottleSummaries(all: Bool) {
        let now = all ? UInt64.max : loop.clock()
        for (key, held) in throttle.due(now: now) {
            let what = key.subject == EventThrottle<HeldEvent>.otherSubjects ? "other events of this kind" : "more like this"
            record(key.kind, profile: held.first.profile,
                   reason: "\(held.first.reason) (and \(held.count) \(what) from uid \(key.uid) within \(throttle.windowSeconds) s, held back)",
                   uid: key.uid, exec: held.first.exec, repeated: held.count)
        }
    }

    func scheduleThrottleSummaries() {
        guard throttleTimer == nil, let at = throttle.nextDue else { return }
        throttleTimer = loop.schedule(at: at) { [unowned self] in
            throttleTimer = nil
            writeThrottleSummaries(all: false)
            scheduleThrottleSummaries()
        }
    }

    /// An event's log fields (`event=`, `reason=`, … : journal fields EVENT=, REASON=, …).
    static func metadata(_ e: EnforcementEvent) -> Logger.Metadata {
        var meta: Logger.Metadata = ["event": "\(e.kind.rawValue)", "event_id": "\(e.id)", "reason": "\(e.reason)"]
        if let profile = e.profile { meta["profile"] = "\(profile)" }
        if !e.sessions.isEmpty { meta["sessions"] = "\(e.sessions.map { "\($0.id)(pid \($0.pid))" }.joined(separator: ","))" }
        if let latencyMs = e.latencyMs { meta["latency_ms"] = "\(format("%.3f", latencyMs))" }
        if let uid = e.uid { meta["uid"] = "\(uid)" }
        if let r = e.repeated { meta["repeated"] = "\(r)" }
        if let exec = e.exec {
            meta["path"] = "\(exec.path)"
            meta["pid"] = "\(exec.pid)"
            if let h = exec.sha256 { meta["sha256"] = "\(h)" }
            if let p = exec.parentPid { meta["ppid"] = "\(p)" }
            if let p = exec.parentExecutable { meta["parent"] = "\(p)" }
        }
        return meta
    }

    // MARK: - Policy: reload and bundles

    /// SIGHUP: re-reads the policy file in force; an invalid one is refused and the old one stays.
    func reload() {
        logger.notice("reloading policy", metadata: ["file": "\(policyFile)"])
        observer.reloading()
        defer { observer.reloaded(status: statusLine) }
        readDeviceKey()
        do {
            adopt(try Agent.loadPolicy(file: policyFile))
        } catch {
            lastPolicyError = "\(error)"
            logger.error("policy refused; keeping the previous policy", metadata: ["file": "\(policyFile)", "errors": "\(error)"])
            reporting?.record(kind: "policy-refused", severity: "warning", reason: "policy \(policyFile) refused, the previous one is kept: \(error)",
                              details: ["policy_file": policyFile], time: Date())
        }
    }

    /// A verified bundle: its policy is validated (refused with the reason, nothing changed),
    /// written atomically and taken through the reload path. In order with every reload.
    func applyBundle(_ payload: PolicyBundlePayload) throws {
        guard let path = configuration.bundlePolicyFile else {
            throw AgentError("this agent takes no policy bundles (no bundle directory)")
        }
        _ = try PolicyLoader.load(text: payload.policyYAML, file: "bundle v\(payload.version)")
        try AtomicFile.write(Data(payload.policyYAML.utf8), to: path, mode: 0o644)
        policyFile = path
        logger.notice("policy bundle applied", metadata: ["version": "\(payload.version)", "group": "\(payload.group)", "file": "\(path)"])
        reload()
    }

    /// Puts a validated policy in force: decision, table, grace, capture.
    func adopt(_ loaded: LoadedPolicy) {
        let p = loaded.policy
        lastPolicyError = nil
        policyLoadedAt = Date()
        policy = p
        groupNames.set(from: p)
        policyDigest = loaded.sha256
        let change = monitor.replacePolicy(p)
        logger.notice("policy loaded", metadata: ["policy": "\(p.name)", "file": "\(loaded.file)"])
        for w in p.warnings { logger.warning("policy warning: \(w)") }
        warnUserCommandProfiles()
        if let reporting {
            reporting.update(rule: p.report)
            reporting.record(kind: "policy-loaded", severity: "info", reason: "policy '\(p.name)' loaded from \(loaded.file)",
                             details: ["policy_file": loaded.file, "policy_sha256": loaded.sha256], time: Date())
            reporting.heartbeatNow()
        }
        let now = monotonicNanos()
        if let change {
            generation += 1
            decidedAt = Date()
            logDecision(change)
        }
        if let binding {
            binding.prepare(p)
            if monitor.hasDecided {
                recordBinding(binding.enforce(monitor.decision, policy: p, generation: generation), eventNanos: now, decisionChanged: change != nil)
            } else {
                binding.applyBaseline(policy: p)
            }
        }
        if monitor.hasDecided { updateGrace(eventNanos: now) }
        startCapture()
        scheduleProbes()
        sources.network.setSignalThresholds(signalThresholds)
        if let s = snapshot {
            updateFences(s)
            decide(merged(s), eventNanos: monotonicNanos(), stages: nil)
        }
    }

    // MARK: - Capture blocking

    /// Starts or reconfigures the exec gate for the policy in force.
    func startCapture() {
        let rule = policy.capture
        if let gate {
            do {
                if gate.watched != rule.watch { try gate.rewatch(rule.watch) }
                gateError = nil
            } catch {
                gateError = "\(error)"
                logger.error("capture blocking: cannot watch the policy's mounts", metadata: ["error": "\(error)"])
            }
            refreshCapture()
            return
        }
        guard rule.mode != .off else { return }
        guard let factory = sources.execGate else {
            gateError = "capture blocking is not available to this agent"
            logger.critical("capture blocking is NOT running", metadata: ["error": "\(gateError!)"])
            return
        }
        do {
            let mailbox = self.mailbox
            let gate = try factory(rule) { record in mailbox.postCapture(record) }
            try gate.watch(rule.watch)
            gate.onStaleProtection { mailbox.post { core in core.refreshCapture() } }
            self.gate = gate
            gateError = nil
            refreshCapture()
            gate.start(procConnector: configuration.procConnector)
            logger.notice("capture blocking started", metadata: ["mode": "\(rule.mode.rawValue)", "scope": "\(rule.scope.rawValue)", "watch": "\(rule.watch.joined(separator: ","))"])
        } catch {
            gateError = "\(error)"
            logger.critical("capture blocking is NOT running", metadata: ["error": "\(error)"])
        }
    }

    /// The protection follows the policy and the profiles of the sessions running now.
    func refreshCapture() {
        guard let gate else { return }
        let sessions = sources.sessions?.sessions() ?? []
        let running = Set(sessions.map(\.profile))
        gate.update(rule: policy.capture, sessions: CaptureSessions(profiles: policy.profiles.filter { running.contains($0.name) },
                                                                    users: Set(sessions.map(\.uid)),
                                                                    trustedOnlyPossible: policy.profiles.contains { $0.capture == .trustedOnly }))
    }

    /// The loop fell behind a flood of capture records: the execs were still answered (and
    /// counted by the gate); only their events are missing.
    func captureRecordsDropped(_ count: UInt64) {
        logger.warning("capture events dropped: the agent fell behind", metadata: ["dropped": "\(count)"])
        reporting?.record(kind: "capture-events-dropped", severity: "warning",
                          reason: "\(count) capture event(s) not recorded: more than \(mailbox.captureBacklog.limit) were waiting (a flood of execs)",
                          details: ["dropped": "\(count)"], time: Date())
    }

    func captured(_ r: CaptureDecisionRecord) {
        let kind: EnforcementEvent.Kind = switch r.outcome {
        case .denied: .execDenied
        case .wouldBeDenied: .execWouldBeDenied
        case .failMode: .execFailMode
        case .killed: .processKilled
        case .wouldBeKilled: .processWouldBeKilled
        }
        record(kind, profile: r.profile, reason: r.reason, uid: r.uid,
               exec: .init(path: r.path, sha256: r.sha256, pid: r.pid, parentPid: r.parentPid, parentExecutable: r.parentExecutable))
        if let uid = r.uid, r.outcome == .denied || r.outcome == .killed {
            tellUser(uid, .toolBlocked, ["tool": String(r.path.split(separator: "/").last ?? Substring(r.path))])
        }
    }

    // MARK: - Control requests, status, heartbeat

    func reply(to request: ControlRequest, peer: PeerCredentials, groups: [String: UInt32] = [:]) -> ControlReply {
        guard request.version == controlProtocolVersion else {
            return ControlReply(error: "control protocol \(request.version) is not supported; segguardd \(segguardVersion) speaks \(controlProtocolVersion)")
        }
        switch request.command {
        case .launch:
            guard let profile = request.profile, !profile.isEmpty else { return ControlReply(error: "launch: no profile named") }
            return ControlReply(launch: launch(profileName: profile, command: request.clientCommand ?? [], requester: peer, groups: groups))
        case .sessions:
            return ControlReply(sessions: (sources.sessions?.sessions() ?? []).map(SessionEntry.init))
        case .whyDenied:
            return ControlReply(events: events.events.filter(\.isDenial).map(EventEntry.init))
        case .notices:
            // Only the asker's own; without `since`, just where to start from.
            let mine = request.since.map { since in (userNotices[peer.uid] ?? []).filter { $0.seq > since } } ?? []
            return ControlReply(notices: NoticesReply(latest: noticeSeq, entries: mine, helpdesk: policy.helpdesk, instance: noticeInstance))
        case .status, .why:
            return ControlReply(status: status())
        }
    }

    func status() -> StatusReply {
        let stats = sources.network.statistics
        return StatusReply(
            daemonVersion: segguardVersion, pid: getpid(), policyName: policy.name, policyFile: policyFile,
            policyLoadedAt: policyLoadedAt, lastPolicyError: lastPolicyError,
            snapshot: monitor.snapshot ?? .empty, decision: monitor.decision, decidedAt: decidedAt,
            decisionChanges: monitor.changes, netlinkMessages: stats.messages, netlinkResyncs: stats.resyncs,
            netlinkParseErrors: stats.parseErrors, capture: captureStatus(), reporting: reporting?.reportingStatus, pipeline: timings.status)
    }

    func captureStatus() -> StatusReply.CaptureStatus? {
        guard policy.capture.mode != .off || gate != nil else { return nil }
        let p = gate?.protection
        let st = gate?.statistics ?? CaptureStatistics()
        return .init(mode: policy.capture.mode.rawValue, level: p?.level.rawValue ?? "none", profile: p?.profile, watched: gate?.watched ?? [],
                     events: st.events, denied: st.denied, failModeAnswers: st.failModeAnswers, error: gateError)
    }

    /// The heartbeat: who we are, the policy and decision in force, the interfaces.
    func heartbeat() -> Heartbeat {
        let d = monitor.decision
        let interfaces = (monitor.snapshot ?? .empty).interfaces.filter { $0.kind != .loopback }.prefix(64).map { i in
            InterfaceSummary(name: i.name, wireless: i.kind == .wireless, up: i.isRunning, ssid: i.wireless?.ssid.map { "\($0)" },
                             bssid: i.wireless?.bssid.map { "\($0)" },
                             deviceAuth: i.deviceAuth.map { "\($0.portStatus.rawValue)\($0.eapMethod.map { " (\($0))" } ?? "")" })
        }
        return Heartbeat(hostname: configuration.hostname, agentVersion: segguardVersion,
                         policy: PolicySummary(name: policy.name, sha256: policyDigest),
                         decision: DecisionSummary(segment: d.segment.rawValue, authorized: d.isAuthorized, reason: d.reason,
                                                   interfaces: d.authorizedInterfaces, since: decidedAt),
                         interfaces: Array(interfaces), intervalSeconds: policy.report.heartbeatSeconds,
                         spool: SpoolSummary(pending: 0, dropped: 0), sentAt: Date())
    }
}

/// The group names of the policy in force's `allowed_groups`, readable from any thread.
final class GroupNames: Sendable {
    private let names = Mutex<[String]>([])
    func set(from policy: Policy) { names.withLock { $0 = Array(Set(policy.profiles.flatMap(\.allowedGroups))).sorted() } }
    /// Each name's id (getgrnam_r); unknown names are left out.
    func resolve() -> [String: UInt32] {
        var out: [String: UInt32] = [:]
        for name in names.withLock({ $0 }) { if let gid = groupID(named: name) { out[name] = gid } }
        return out
    }
}

/// A request the agent refuses, with the reason.
public struct AgentError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
