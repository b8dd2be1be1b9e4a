// segguardd: wiring only. Loads the policy, starts the netlink watcher and the control
// socket, feeds snapshots into the SegmentMonitor and logs every decision change. Signals:
// SIGHUP reloads the policy (a bad one is refused and the old one kept), SIGTERM/SIGINT stop.

import ArgumentParser
import CSegguardShims
import Dispatch
import Foundation
import Logging
import SegguardControl
import SegguardDecision
import SegguardCapture
import SegguardDeviceAuth
import SegguardEnforce
import SegguardNetlink
import SegguardPKI
import SegguardPolicy
import SegguardReport
import SegguardReporter
import SegguardService
import SegguardWire
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The segment-guard daemon.
struct Segguardd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "segguardd",
        abstract: "Decides whether this thin client is on the authorized My Number segment, from netlink events.",
        version: segguardVersion)

    @Option(name: .long, help: "Policy file (YAML).")
    var policy: String = "/etc/segguard/policy.yaml"

    @Option(name: .long, help: "Control socket path.")
    var socket: String = ControlClient.defaultPath

    @Option(name: .long, help: "Group (besides root) allowed to query the control socket.")
    var adminGroup: String = "segguard"

    @Option(name: .long, help: "Run in this network namespace (path such as /run/netns/NAME): watch it, bind its nftables, keep the host's mounts (cgroups).")
    var netns: String?

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Option(name: .long, help: "nftables table (family inet) the network binding owns.")
    var nftTable: String = "segguard"

    @Option(name: .long, help: "Where to keep the boot-time baseline table (nft -j -f loads it before the network is up).")
    var baselineFile: String = "/var/lib/segguard/baseline.nft.json"

    @Option(name: .long, help: "cgroup v2 directory for VDI sessions (default: <cgroup2 mount>/segguard).")
    var sessionCgroup: String?

    @Option(name: .long, help: "Where 802.1X state for device_auth rules comes from: control (wpa_supplicant's control sockets) or dbus (its D-Bus API, where NetworkManager runs it).")
    var deviceAuthSource: DeviceAuthSourceKind = .control

    @Option(name: .long, help: "wpa_supplicant control interface directory (--device-auth-source control).")
    var wpaControlDir: String = "/run/wpa_supplicant"

    @Option(name: .long, help: "D-Bus address of the bus wpa_supplicant is on (--device-auth-source dbus; default: the system bus).")
    var wpaDbusAddress: String?

    @Option(name: .long, help: "Collector to report to (https://HOST:PORT); without it nothing is reported.")
    var collector: String?

    @Option(name: .long, help: "CA certificate (PEM) that issued the collector's server certificate.")
    var collectorCa: String = "/etc/segguard/collector-ca.pem"

    @Option(name: .long, help: "This thin client's device certificate (PEM): its CN is the agent id, its OU the policy group.")
    var clientCert: String = "/etc/segguard/device.pem"

    @Option(name: .long, help: "The device certificate's key (PEM).")
    var clientKey: String = "/etc/segguard/device.key"

    @Option(name: .long, help: "Durable event spool (SQLite); events wait here until the collector acknowledged them.")
    var spool: String = "/var/lib/segguard/spool.sqlite"

    @Option(name: .long, help: "Admin policy-signing public key (base64 Ed25519): fetch, verify and apply the group's signed policy bundles.")
    var policyPublicKey: String?

    @Option(name: .long, help: "Where the applied bundle and its policy are kept (bundle.json, bundle-policy.yaml).")
    var bundleDir: String = "/var/lib/segguard"

    @Option(name: .long, help: ArgumentHelp("Test only: delay every hash of capture blocking by this many ms (proves the fail-mode bound).", visibility: .hidden))
    var captureTestHashDelayMs: Int = 0

    @Option(name: .long, help: ArgumentHelp("dpkg's info directory, whose *.md5sums define trusted executables (trusted-only capture mode).", visibility: .hidden))
    var dpkgInfoDir: String = "/var/lib/dpkg/info"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level: \"\(logLevel)\" is not one of trace, debug, info, notice, warning, error, critical")
        }
    }

    func run() throws {
        // Enter the namespace before any thread exists, so that every thread (netlink watcher,
        // nftables, control socket) inherits it. Unlike `ip netns exec`, the mounts stay the host's.
        // The process connector speaks only in the initial network namespace: with --netns
        // (tests, demo) its socket is opened before entering the namespace.
        var procConnector: Int32 = -1
        if let netns {
            procConnector = sg_proc_connector_open()
            let fd = open(netns, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                FileHandle.standardError.write(Data("segguardd: --netns \(netns): \(String(cString: strerror(errno))) (errno \(errno))\n".utf8))
                throw ExitCode(2)
            }
            let rc = sg_enter_netns(fd)
            close(fd)
            guard rc == 0 else {
                FileHandle.standardError.write(Data("segguardd: --netns \(netns): setns: \(String(cString: strerror(-rc))) (errno \(-rc))\n".utf8))
                throw ExitCode(2)
            }
        }
        // Under systemd (stderr is the journal stream): structured journal fields; else stderr.
        JournalLogHandler.bootstrap(level: Logger.Level(rawValue: logLevel) ?? .info)
        let notifier = ServiceNotifier()
        let logger = Logger(label: "segguardd")

        // A bundle applied earlier (verified again now) takes precedence over the local file.
        var policyPath = policy
        var applied: AppliedBundle?
        if collector != nil, let keyPath = policyPublicKey {
            do {
                (applied, policyPath) = try Self.appliedBundle(keyPath: keyPath, certificatePath: clientCert, bundleDir: bundleDir, fallback: policy)
            } catch {
                logger.error("the saved policy bundle does not verify; using the local policy file", metadata: ["error": "\(error)", "file": "\(policy)"])
            }
        }
        let loaded: Policy
        do {
            loaded = try loadPolicy(policyPath)
        } catch {
            FileHandle.standardError.write(Data("segguardd: \(error)\n".utf8))
            throw ExitCode(2)
        }
        let reporterBox = ReporterBox()
        let enforcer: Enforcer
        do {
            enforcer = try makeEnforcer(logger: logger, reporter: reporterBox)
        } catch {
            logger.critical("cannot set up enforcement", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
        let daemon = Daemon(policy: loaded, policyFile: policyPath, enforcer: enforcer, notifier: notifier, logger: logger)
        daemon.reporterBox = reporterBox
        daemon.bundlePolicyPath = bundleDir + "/bundle-policy.yaml"
        logger.notice("policy loaded", metadata: ["policy": "\(loaded.name)", "file": "\(policy)", "sites": "\(loaded.sites.count)"])

        let group = getgrnam(adminGroup).map { $0.pointee.gr_gid }
        if group == nil { logger.info("admin group not found: only root may query the control socket", metadata: ["group": "\(adminGroup)"]) }
        let server: ControlServer
        do {
            server = try ControlServer(path: socket, adminGroup: group, adminGroupName: adminGroup, logger: logger)
        } catch {
            logger.critical("cannot open the control socket", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
        server.start { request, peer in daemon.reply(to: request, peer: peer) }

        // Until the first decision nothing may reach the VDI gateways, whatever table an
        // earlier run left behind.
        enforcer.applyBaseline(policy: loaded)
        var options = NetworkWatcher.Options()
        if let interval = notifier.watchdogInterval {
            // Fault injection for the install test: with this file present the netlink loop
            // hangs in its next watchdog ping, so the service manager must restart segguardd.
            let hangSwitch = (socket as NSString).deletingLastPathComponent + "/fault-hang-netlink-loop"
            options.watchdog = (interval: interval, ping: {
                if access(hangSwitch, F_OK) == 0 {
                    logger.critical("fault injection: netlink loop hangs now", metadata: ["switch": "\(hangSwitch)"])
                    while true { sleep(3600) }
                }
                notifier.watchdog()
            })
            logger.info("watchdog enabled", metadata: ["interval_s": "\(interval)"])
        }
        let watcher = NetworkWatcher(options: options, logger: logger)
        do {
            try watcher.start(
                onSnapshot: { daemon.observe($0, statistics: watcher.statistics, eventNanos: monotonicNanos()) },
                onFailure: { why in
                    logger.critical("netlink watcher failed; exiting so that the service manager restarts segguardd", metadata: ["error": "\(why)"])
                    server.stop()
                    Foundation.exit(1)
                })
        } catch {
            logger.critical("cannot start the netlink watcher", metadata: ["error": "\(error)"])
            server.stop()
            throw ExitCode(1)
        }
        daemon.watcher = watcher

        // Screen-capture blocking (fanotify); its failure to start is reported, not fatal:
        // the segment controls keep working and status says why capture blocking does not.
        daemon.startCapture(hashDelayMs: captureTestHashDelayMs, dpkgInfoDirectory: dpkgInfoDir, procConnector: procConnector)

        // 802.1X state for device_auth rules, from wpa_supplicant.
        let deviceAuth: any DeviceAuthSource = switch deviceAuthSource {
        case .control: WPAControlSource(directory: wpaControlDir, localDirectory: (socket as NSString).deletingLastPathComponent, logger: logger)
        case .dbus: WPADBusSource(address: wpaDbusAddress, logger: logger)
        }
        deviceAuth.start { states in daemon.deviceAuthChanged(states) }

        // Reporting to the collector: spool first, so that no event is lost while it is away.
        if let collector {
            let appliedBundle = applied
            do {
                let reporter = try Self.blocking {
                    let spool = try await Spool(path: spool, maxEvents: loaded.report.spoolMaxEvents, overflow: loaded.report.overflow)
                    let unclean = try await spool.markRunning()
                    let config = ReporterConfiguration(collectorURL: collector, caPath: collectorCa, certificatePath: clientCert, keyPath: clientKey,
                                                       policyPublicKeyPath: policyPublicKey, bundleStatePath: bundleDir + "/bundle.json")
                    let reporter = try Reporter(configuration: config, spool: spool, rule: loaded.report, logger: logger, applied: appliedBundle,
                                                heartbeat: { daemon.heartbeat() }, applyBundle: { try daemon.applyBundle($0) })
                    return (reporter, unclean)
                }
                reporter.0.record(kind: "agent-started", severity: "info", reason: "segguardd \(segguardVersion) started with policy '\(loaded.name)'",
                                  details: ["policy_file": policyPath, "policy_sha256": daemon.policySHA256])
                if reporter.1 {
                    reporter.0.record(kind: "agent-restarted-uncleanly", severity: "warning",
                                      reason: "the previous segguardd run ended without a clean stop (killed, crashed or power lost): a possible tamper sign")
                }
                reporterBox.set(reporter.0)
                reporter.0.start()
                logger.notice("reporting to the collector", metadata: ["collector": "\(collector)", "agent": "\(reporter.0.identity.agentID)", "group": "\(reporter.0.identity.group)"])
            } catch {
                reporterBox.disable()
                logger.critical("cannot report to the collector", metadata: ["error": "\(error)"])
            }
        } else {
            reporterBox.disable()
        }

        signal(SIGHUP, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        signal(SIGINT, SIG_IGN)
        let hup = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .main)
        hup.setEventHandler { daemon.reload() }
        hup.resume()
        var stops: [any DispatchSourceSignal] = []
        for sig in [SIGTERM, SIGINT] {
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .main)
            s.setEventHandler {
                logger.notice("stopping", metadata: ["signal": "\(sig == SIGTERM ? "SIGTERM" : "SIGINT")"])
                notifier.stopping()
                watcher.stop()
                server.stop()
                if let reporter = reporterBox.get() {
                    _ = try? Self.blocking { await reporter.stop() }
                }
                Foundation.exit(0)
            }
            s.resume()
            stops.append(s)
        }
        withExtendedLifetime((hup, stops)) { dispatchMain() }
    }
}

extension Segguardd {
    /// The nftables binding (its table is left alone until the first decision replaces it,
    /// so a crashed daemon's fail-closed table stays meanwhile) and the session tracker.
    func makeEnforcer(logger: Logger, reporter: ReporterBox) throws -> Enforcer {
        let binding = try NftablesBinding(table: nftTable)
        var tracker: SessionTracker?
        if let base = sessionCgroup ?? SessionTracker.defaultBase() {
            do {
                tracker = try SessionTracker(base: base)
            } catch {
                logger.error("no session tracking: My Number launches will be refused", metadata: ["error": "\(error)"])
            }
        } else {
            logger.error("no cgroup v2 mount: My Number launches will be refused")
        }
        try? FileManager.default.createDirectory(atPath: (baselineFile as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        return Enforcer(binding: binding, tracker: tracker, baselinePath: baselineFile, logger: logger) { event in reporter.with { $0.record(event) } }
    }
}

/// Reads and validates a policy file; errors carry every issue with its location.
func loadPolicy(_ path: String) throws -> Policy {
    try PolicyLoader.load(file: path)
}

/// The daemon's shared state: the monitor behind a lock, plus what status output needs.
final class Daemon: Sendable {
    struct State {
        var monitor: SegmentMonitor
        var policyLoadedAt = Date()
        var decidedAt = Date()
        var lastPolicyError: String?
        var statistics = NetworkWatcher.Statistics()
    }

    let state: Mutex<State>
    /// Serializes (decide, enforce) pairs from the netlink thread and from SIGHUP reloads, so a
    /// stale decision can never be applied after a newer one.
    let applyLock = NSLock()
    let policyFileBox: Mutex<String>
    /// The policy file in force: the local one, or the applied bundle's.
    var policyFile: String { policyFileBox.withLock { $0 } }
    /// SHA-256 of the policy file's bytes as loaded (heartbeats).
    let policyDigest = Mutex<String>("")
    var policySHA256: String { policyDigest.withLock { $0 } }
    let reporterBoxStorage = Mutex<ReporterBox?>(nil)
    var reporterBox: ReporterBox? {
        get { reporterBoxStorage.withLock { $0 } }
        set { reporterBoxStorage.withLock { $0 = newValue } }
    }
    let bundlePathStorage = Mutex<String>("")
    var bundlePolicyPath: String {
        get { bundlePathStorage.withLock { $0 } }
        set { bundlePathStorage.withLock { $0 = newValue } }
    }
    let enforcer: Enforcer
    let notifier: ServiceNotifier
    let logger: Logger
    let watcherBox = Mutex<NetworkWatcher?>(nil)

    var watcher: NetworkWatcher? {
        get { watcherBox.withLock { $0 } }
        set { watcherBox.withLock { $0 = newValue } }
    }

    init(policy: Policy, policyFile: String, enforcer: Enforcer, notifier: ServiceNotifier, logger: Logger) {
        self.state = Mutex(State(monitor: SegmentMonitor(policy: policy)))
        self.policyFileBox = Mutex(policyFile)
        self.policyDigest.withLock { $0 = Daemon.digest(ofFile: policyFile) }
        self.enforcer = enforcer
        self.notifier = notifier
        self.logger = logger
    }

    /// Called on the watcher thread for every new snapshot.
    /// The latest netlink snapshot and 802.1X states, merged into what the monitor decides on.
    struct Inputs {
        var snapshot: NetworkSnapshot?
        var deviceAuth: [String: DeviceAuthState] = [:]
    }
    let inputs = Mutex(Inputs())

    /// Capture blocking, when the policy turns it on; the error when it could not start.
    let capture = Mutex<(blocker: CaptureBlocker?, error: String?)>((nil, nil))

    /// Starts or reconfigures capture blocking for the current policy.
    func startCapture(hashDelayMs: Int = 0, dpkgInfoDirectory: String = "/var/lib/dpkg/info", procConnector: Int32 = -1) {
        let policy = state.withLock { $0.monitor.policy }
        let rule = policy.capture
        let existing = capture.withLock { $0.blocker }
        if let blocker = existing {
            do {
                if blocker.watched != rule.watch { try blocker.rewatch(rule.watch) }
                capture.withLock { $0.error = nil }
            } catch {
                capture.withLock { $0.error = "\(error)" }
                logger.error("capture blocking: cannot watch the policy's mounts", metadata: ["error": "\(error)"])
            }
            refreshCapture()
            return
        }
        guard rule.mode != .off else { return }
        do {
            let blocker = try CaptureBlocker(rule: rule, dpkg: DpkgIndex(infoDirectory: dpkgInfoDirectory), logger: logger, hashDelayMs: hashDelayMs) { [enforcer] record in
                let kind: EnforcementEvent.Kind = switch record.outcome {
                case .denied: .execDenied
                case .wouldBeDenied: .execWouldBeDenied
                case .failMode: .execFailMode
                case .killed: .processKilled
                case .wouldBeKilled: .processWouldBeKilled
                }
                enforcer.recordExternal(kind, profile: record.profile, reason: record.reason, uid: record.uid,
                                        exec: .init(path: record.path, sha256: record.sha256, pid: record.pid,
                                                    parentPid: record.parentPid, parentExecutable: record.parentExecutable))
            }
            try blocker.watch(rule.watch)
            blocker.onStaleProtection { [weak self] in self?.refreshCapture() }
            capture.withLock { $0 = (blocker, nil) }
            refreshCapture()
            blocker.start(procConnector: procConnector)
            logger.notice("capture blocking started", metadata: ["mode": "\(rule.mode.rawValue)", "scope": "\(rule.scope.rawValue)", "watch": "\(rule.watch.joined(separator: ","))"])
        } catch {
            capture.withLock { $0.error = "\(error)" }
            logger.critical("capture blocking is NOT running", metadata: ["error": "\(error)"])
        }
    }

    /// Recomputes the capture protection from the policy and the sessions running now.
    func refreshCapture() {
        guard let blocker = capture.withLock({ $0.blocker }) else { return }
        let policy = state.withLock { $0.monitor.policy }
        let running = Set(enforcer.sessions().map(\.profile))
        blocker.update(rule: policy.capture, sessionProfiles: policy.profiles.filter { running.contains($0.name) })
    }

    func merged(_ snapshot: NetworkSnapshot, _ auth: [String: DeviceAuthState]) -> NetworkSnapshot {
        var s = snapshot
        for i in s.interfaces.indices { s.interfaces[i].deviceAuth = auth[s.interfaces[i].name] }
        return s
    }

    /// Called on the wpa_supplicant thread after every 802.1X state change.
    func deviceAuthChanged(_ states: [String: DeviceAuthState]) {
        let snapshot = inputs.withLock { i -> NetworkSnapshot? in
            i.deviceAuth = states
            return i.snapshot
        }
        guard let snapshot else { return }
        let stats = state.withLock { $0.statistics }
        observe(snapshot, statistics: stats, eventNanos: monotonicNanos())
    }

    func observe(_ raw: NetworkSnapshot, statistics: NetworkWatcher.Statistics, eventNanos: UInt64) {
        applyLock.lock()
        defer { applyLock.unlock() }
        let snapshot = inputs.withLock { i -> NetworkSnapshot in
            i.snapshot = raw
            return merged(raw, i.deviceAuth)
        }
        let (change, decision, policy) = state.withLock { s -> (DecisionChange?, Decision, Policy) in
            s.statistics = statistics
            let c = s.monitor.update(snapshot)
            if c != nil { s.decidedAt = Date() }
            return (c, s.monitor.decision, s.monitor.policy)
        }
        logger.debug("network snapshot", metadata: ["generation": "\(snapshot.generation)", "interfaces": "\(summary(snapshot))"])
        if let change { log(change) }
        enforcer.update(decision: decision, policy: policy, eventNanos: eventNanos)
        // READY=1 only now: the first netlink dump is decided and the table is in place.
        if let change {
            if change.isInitial { notifier.ready(status: Daemon.statusLine(decision)) } else { notifier.status(Daemon.statusLine(decision)) }
        }
    }

    /// The STATUS= line: the decision and its interfaces or reason.
    static func statusLine(_ d: Decision) -> String {
        d.isAuthorized ? "\(d.segment.rawValue) via \(d.authorizedInterfaces.joined(separator: ", "))" : "unauthorized: \(d.reason)"
    }

    func reload() {
        logger.notice("reloading policy", metadata: ["file": "\(policyFile)"])
        notifier.reloading()
        defer { notifier.reloaded(status: Daemon.statusLine(state.withLock { $0.monitor.decision })) }
        do {
            let p = try loadPolicy(policyFile)
            applyLock.lock()
            defer { applyLock.unlock() }
            let (change, decision, hasDecided) = state.withLock { s -> (DecisionChange?, Decision, Bool) in
                s.lastPolicyError = nil
                s.policyLoadedAt = Date()
                let c = s.monitor.replacePolicy(p)
                if c != nil { s.decidedAt = Date() }
                return (c, s.monitor.decision, s.monitor.hasDecided)
            }
            logger.notice("policy loaded", metadata: ["policy": "\(p.name)", "file": "\(policyFile)"])
            let digest = Daemon.digest(ofFile: policyFile)
            policyDigest.withLock { $0 = digest }
            if let reporter = reporterBox?.get() {
                reporter.update(rule: p.report)
                reporter.record(kind: "policy-loaded", severity: "info", reason: "policy '\(p.name)' loaded from \(policyFile)",
                                details: ["policy_file": policyFile, "policy_sha256": digest])
                reporter.heartbeatNow()
            }
            if let change { log(change) }
            if hasDecided { enforcer.update(decision: decision, policy: p, eventNanos: monotonicNanos()) }
            startCapture()
        } catch {
            state.withLock { $0.lastPolicyError = "\(error)" }
            logger.error("policy refused; keeping the previous policy", metadata: ["file": "\(policyFile)", "errors": "\(error)"])
            reporterBox?.get()?.record(kind: "policy-refused", severity: "warning", reason: "policy \(policyFile) refused, the previous one is kept: \(error)",
                                       details: ["policy_file": policyFile])
        }
    }

    func reportingStatus() -> StatusReply.ReportingStatus? {
        guard let r = reporterBox?.get() else { return nil }
        let st = r.statistics
        return .init(collector: r.configuration.collectorURL, agentID: r.identity.agentID, group: r.identity.group, heartbeatsSent: st.heartbeatsSent,
                     heartbeatFailures: st.heartbeatFailures, lastHeartbeatAt: st.lastHeartbeatAt, eventsDelivered: st.eventsDelivered,
                     lastError: st.lastError, bundleVersion: r.appliedBundle?.version)
    }

    func captureStatus(_ policy: Policy) -> StatusReply.CaptureStatus? {
        let (blocker, error) = capture.withLock { ($0.blocker, $0.error) }
        guard policy.capture.mode != .off || blocker != nil else { return nil }
        let p = blocker?.protection
        let st = blocker?.statistics ?? CaptureStatistics()
        return .init(mode: policy.capture.mode.rawValue, level: p?.level.rawValue ?? "none", profile: p?.profile, watched: blocker?.watched ?? [],
                     events: st.events, denied: st.denied, failModeAnswers: st.failModeAnswers, error: error)
    }

    func log(_ change: DecisionChange) {
        let d = change.current
        reporterBox?.with { reporter in
            reporter.record(kind: "decision-changed", severity: d.isAuthorized ? "info" : "warning",
                            reason: d.isAuthorized ? "\(d.segment.rawValue) via \(d.authorizedInterfaces.joined(separator: ", "))" : d.reason,
                            details: ["segment": d.segment.rawValue, "previous": change.previous.segment.rawValue,
                                      "interfaces": d.authorizedInterfaces.joined(separator: ","), "initial": change.isInitial ? "true" : "false"])
            reporter.heartbeatNow()
        }
        let level: Logger.Level = d.isAuthorized ? .notice : .warning
        // The first decision after start replaces the fail-closed placeholder: not a change.
        logger.log(level: level, change.isInitial ? "initial segment decision" : "segment decision changed", metadata: [
            "decision": "\(d.segment.rawValue)",
            "previous": "\(change.previous.segment.rawValue)",
            "interfaces": "\(d.authorizedInterfaces.joined(separator: ","))",
            "reason": "\(d.reason)",
        ])
    }

    func reply(to request: ControlRequest, peer: PeerCredentials) -> ControlReply {
        guard request.version == controlProtocolVersion else {
            return ControlReply(error: "control protocol \(request.version) is not supported; segguardd \(segguardVersion) speaks \(controlProtocolVersion)")
        }
        switch request.command {
        case .launch:
            guard let profile = request.profile, !profile.isEmpty else { return ControlReply(error: "launch: no profile named") }
            let reply = enforcer.launch(profileName: profile, command: request.clientCommand ?? [], requester: peer)
            // A session of a protecting profile raises capture protection before the client runs.
            refreshCapture()
            return ControlReply(launch: reply)
        case .sessions:
            return ControlReply(sessions: enforcer.sessions())
        case .whyDenied:
            return ControlReply(events: enforcer.events(denialsOnly: true))
        case .status, .why:
            break
        }
        let s = state.withLock { $0 }
        let stats = watcher?.statistics ?? s.statistics
        return ControlReply(status: StatusReply(
            daemonVersion: segguardVersion, pid: getpid(), policyName: s.monitor.policy.name, policyFile: policyFile,
            policyLoadedAt: s.policyLoadedAt, lastPolicyError: s.lastPolicyError,
            snapshot: s.monitor.snapshot ?? .empty, decision: s.monitor.decision, decidedAt: s.decidedAt,
            decisionChanges: s.monitor.changes, netlinkMessages: stats.messages, netlinkResyncs: stats.resyncs,
            netlinkParseErrors: stats.parseErrors, capture: captureStatus(s.monitor.policy), reporting: reportingStatus()))
    }

    func summary(_ snapshot: NetworkSnapshot) -> String {
        snapshot.interfaces.map { "\($0.name):\($0.isRunning ? "up" : "down")" }.joined(separator: " ")
    }
}

Segguardd.main()

/// Where segguardd reads 802.1X state from.
enum DeviceAuthSourceKind: String, ExpressibleByArgument, CaseIterable {
    case control, dbus
}

/// The reporter, once it exists (the enforcer is made before it and reports through this).
/// Events recorded before it exists (the first decision, the baseline binding) are kept
/// and handed over when it is set, so the spool gets every event of the run.
final class ReporterBox: Sendable {
    private let state = Mutex<(reporter: Reporter?, early: [@Sendable (Reporter) -> Void], disabled: Bool)>((nil, [], false))

    func set(_ r: Reporter) {
        let early = state.withLock { s in
            s.reporter = r
            defer { s.early = [] }
            return s.early
        }
        for record in early { record(r) }
    }

    func get() -> Reporter? { state.withLock { $0.reporter } }

    /// Runs `body` now, or once the reporter exists.
    func with(_ body: @escaping @Sendable (Reporter) -> Void) {
        let r = state.withLock { s -> Reporter? in
            if s.reporter == nil && !s.disabled && s.early.count < 10_000 { s.early.append(body) }
            return s.reporter
        }
        if let r { body(r) }
    }

    /// Drops what was kept when no reporter will ever come (no --collector).
    func disable() {
        state.withLock { s in
            s.early = []
            s.disabled = true
        }
    }
}

extension Segguardd {
    /// Runs async start-up/shutdown work from this synchronous command.
    static func blocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
        let result = Mutex<Result<T, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            let r: Result<T, any Error>
            do { r = .success(try await body()) } catch { r = .failure(error) }
            result.withLock { $0 = r }
            done.signal()
        }
        done.wait()
        return try result.withLock { $0! }.get()
    }

    /// The saved bundle, verified against the pinned key and this device's group, and the
    /// path of its policy (rewritten from the verified payload when missing or different).
    static func appliedBundle(keyPath: String, certificatePath: String, bundleDir: String, fallback: String) throws -> (AppliedBundle?, String) {
        let key = try PolicySigningKey(base64: try String(contentsOfFile: keyPath, encoding: .utf8))
        let identity = try DeviceIdentity(certificatePEM: try String(contentsOfFile: certificatePath, encoding: .utf8))
        guard let (saved, payload) = try AppliedBundle.load(path: bundleDir + "/bundle.json", key: key, group: identity.group) else { return (nil, fallback) }
        let path = bundleDir + "/bundle-policy.yaml"
        if Daemon.digest(ofFile: path) != payload.policySHA256 {
            try AtomicFile.write(Data(payload.policyYAML.utf8), to: path, mode: 0o644)
        }
        return (saved, path)
    }
}

extension Reporter {
    /// An enforcement or capture event, as reported.
    func record(_ e: EnforcementEvent) {
        var details: [String: String] = [:]
        if let p = e.profile { details["profile"] = p }
        if let u = e.uid { details["uid"] = "\(u)" }
        if let l = e.latencyMs { details["latency_ms"] = String(format: "%.3f", l) }
        if !e.sessions.isEmpty { details["sessions"] = e.sessions.map { "\($0.id)(pid \($0.pid))" }.joined(separator: ",") }
        if let x = e.exec {
            details["path"] = x.path
            details["pid"] = "\(x.pid)"
            if let h = x.sha256 { details["sha256"] = h }
            if let p = x.parentPid { details["ppid"] = "\(p)" }
            if let p = x.parentExecutable { details["parent"] = p }
        }
        let severity: String = switch e.kind {
        case .bindingFailed: "critical"
        default: e.isDenial ? "warning" : "info"
        }
        record(kind: e.kind.rawValue, severity: severity, reason: e.reason, details: details, time: e.time)
    }
}

extension Daemon {
    /// gethostname(2) (Foundation's hostName may resolve names, which can block).
    static func hostname() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        guard gethostname(&buf, buf.count - 1) == 0 else { return "unknown" }
        let name = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return name.isEmpty ? "unknown" : name
    }

    static func digest(ofFile path: String) -> String {
        guard let data = FileManager.default.contents(atPath: path) else { return "" }
        return PolicySigning.sha256Hex(data)
    }

    /// The heartbeat: who we are, the policy and decision in force, the interfaces.
    func heartbeat() -> Heartbeat {
        let s = state.withLock { $0 }
        let d = s.monitor.decision
        let snapshot = s.monitor.snapshot ?? .empty
        let interfaces = snapshot.interfaces.filter { $0.kind != .loopback }.prefix(64).map { i in
            InterfaceSummary(name: i.name, wireless: i.kind == .wireless, up: i.isRunning, ssid: i.wireless?.ssid.map { "\($0)" },
                             bssid: i.wireless?.bssid.map { "\($0)" },
                             deviceAuth: i.deviceAuth.map { "\($0.portStatus.rawValue)\($0.eapMethod.map { " (\($0))" } ?? "")" })
        }
        return Heartbeat(hostname: Daemon.hostname(), agentVersion: segguardVersion,
                         policy: PolicySummary(name: s.monitor.policy.name, sha256: policySHA256), 
                         decision: DecisionSummary(segment: d.segment.rawValue, authorized: d.isAuthorized, reason: d.reason,
                                                   interfaces: d.authorizedInterfaces, since: s.decidedAt),
                         interfaces: Array(interfaces), intervalSeconds: s.monitor.policy.report.heartbeatSeconds,
                         spool: SpoolSummary(pending: 0, dropped: 0), sentAt: Date())
    }

    /// A verified bundle: validate its policy (refused with the reason, nothing changed), then
    /// write it and switch to it through the normal reload path.
    func applyBundle(_ payload: PolicyBundlePayload) throws {
        let path = bundlePolicyPath
        _ = try PolicyLoader.load(text: payload.policyYAML, file: "bundle v\(payload.version)")
        try AtomicFile.write(Data(payload.policyYAML.utf8), to: path, mode: 0o644)
        policyFileBox.withLock { $0 = path }
        logger.notice("policy bundle applied", metadata: ["version": "\(payload.version)", "group": "\(payload.group)", "file": "\(path)"])
        reload()
    }
}
