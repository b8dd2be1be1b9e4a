// Binds the segment decision to the VDI. Owns: the enforcement event log, the pending
// grace timer, and the last network-binding state it applied; it drives the NftablesBinding
// and the SessionTracker it is given. Must not own: the decision itself (it is told every
// decision) or the policy (it is handed the one in force each time).
//
// Failure table:
//   nftables transaction refused  -> fall back to the baseline (drop all gateway traffic), event binding-failed
//   session cannot be tracked     -> launch refused (fail closed), event launch-refused
//   SIGTERM ignored past timeout  -> SIGKILL through cgroup.kill

import Dispatch
import Foundation
import Logging
import SegguardDecision
import SegguardPolicy
import SegguardWire
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Who asked to launch: the control socket's peer credentials.
public typealias LaunchRequester = PeerCredentials

/// Applies the launch gate, session termination and the network binding, each in its mode.
public final class Enforcer: Sendable {
    struct State {
        var decision: Decision = .failClosed("no decision yet")
        var policy: Policy?
        /// Mode, allowed interfaces and gateways of the table as last applied.
        var appliedBinding: String?
        var baselineGateways: [Gateway]?
        /// Set while a grace period runs; the netlink event time that started it.
        var graceStartedAt: UInt64?
        var graceToken: UInt64 = 0
        /// The grace of this unauthorized period has expired (and sessions were ended, or
        /// would have been in audit mode): no re-arming until an authorized decision.
        var graceFired = false
        var reconciling = false
        var events: [EnforcementEvent] = []
        var nextEventID: UInt64 = 1
    }

    let binding: NftablesBinding?
    let tracker: SessionTracker?
    let baselinePath: String?
    let logger: Logger
    let state = Mutex(State())
    let queue = DispatchQueue(label: "segguard.enforce")
    let eventCapacity: Int
    /// Holds the reconcile timer (Dispatch sources are not Sendable); set once, under `state`'s `reconciling` flag.
    final class TimerHolder: @unchecked Sendable { var timer: (any DispatchSourceTimer)? }
    let timerHolder = TimerHolder()
    /// Called for every event (the reporter will subscribe here).
    let onEvent: @Sendable (EnforcementEvent) -> Void

    public init(
        binding: NftablesBinding?, tracker: SessionTracker?, baselinePath: String?, logger: Logger,
        eventCapacity: Int = 500, onEvent: @escaping @Sendable (EnforcementEvent) -> Void = { _ in }
    ) {
        self.binding = binding
        self.tracker = tracker
        self.baselinePath = baselinePath
        self.logger = logger
        self.eventCapacity = eventCapacity
        self.onEvent = onEvent
    }

    // MARK: Decision changes

    /// Tells the enforcer the decision and policy in force, after every snapshot and reload.
    /// `eventNanos` is the monotonic time the netlink event was read. The network binding is
    /// replaced here, synchronously; sessions are ended on the enforcement queue.
    public func update(decision: Decision, policy: Policy, eventNanos: UInt64) {
        let previous = state.withLock { s -> Decision in
            let p = s.decision
            s.decision = decision
            s.policy = policy
            return p
        }
        applyBinding(decision: decision, policy: policy, eventNanos: eventNanos, changed: previous != decision)
        scheduleTermination(decision: decision, policy: policy, eventNanos: eventNanos)
    }

    func applyBinding(decision: Decision, policy: Policy, eventNanos: UInt64, changed: Bool) {
        guard let binding else { return }
        let mode = policy.enforcement.networkBinding
        let allowed = decision.isAuthorized ? decision.authorizedInterfaces : []
        let key = "\(mode.rawValue)|\(allowed.joined(separator: ","))|\(policy.vdi.gateways.map { "\($0.prefix) \($0.transport) \($0.ports)" })"
        let (skip, writeBaseline) = state.withLock { s -> (Bool, Bool) in
            (s.appliedBinding == key, s.baselineGateways != policy.vdi.gateways)
        }
        if writeBaseline, let path = baselinePath {
            do {
                try binding.writeBaseline(gateways: policy.vdi.gateways, to: path)
                state.withLock { $0.baselineGateways = policy.vdi.gateways }
            } catch {
                logger.error("cannot write the boot-time baseline table; will retry", metadata: ["file": "\(path)", "error": "\(error)"])
            }
        }
        guard !skip else { return }
        do {
            try binding.apply(NftablesRuleset.transaction(table: binding.table, gateways: policy.vdi.gateways, allowedInterfaces: allowed, mode: mode))
            state.withLock { $0.appliedBinding = key }
            let ms = Double(monotonicNanos() &- eventNanos) / 1e6
            logger.info("network binding applied", metadata: [
                "mode": "\(mode.rawValue)", "allowed": "\(allowed.joined(separator: ","))", "latency_ms": "\(String(format: "%.3f", ms))",
            ])
            if changed {
                record(.bindingApplied, reason: "VDI gateway traffic allowed via [\(allowed.joined(separator: ", "))] (\(mode.rawValue))", latencyMs: ms)
            }
        } catch {
            logger.critical("nftables transaction refused; loading the drop-all baseline", metadata: ["error": "\(error)"])
            state.withLock { $0.appliedBinding = nil }
            var inForce = "the drop-all baseline is in force (no interface may reach the VDI gateways)"
            do {
                try binding.apply(NftablesRuleset.baseline(table: binding.table, gateways: policy.vdi.gateways))
            } catch {
                inForce = "the drop-all baseline was refused too (\(error)); the previous table stays in force"
            }
            record(.bindingFailed, reason: "\(error); \(inForce); retrying every \(Int(Enforcer.reconcileInterval)) s")
        }
    }

    /// How often the table is checked against the kernel (a flush by another tool, a failed
    /// transaction to retry). Decisions never wait for this: it only repairs.
    public static let reconcileInterval: Double = 5

    /// Loads the drop-all table now (before the first decision), so that a table left by an
    /// earlier run that allowed some interface is not in force while segguardd starts.
    public func applyBaseline(policy: Policy) {
        guard let binding else { return }
        if policy.enforcement.networkBinding == .enforce {
            do {
                try binding.apply(NftablesRuleset.baseline(table: binding.table, gateways: policy.vdi.gateways))
            } catch {
                logger.critical("cannot load the drop-all baseline at start", metadata: ["error": "\(error)"])
            }
        }
        state.withLock { $0.policy = policy }
        startReconciling()
    }

    /// Every `reconcileInterval` seconds: if the table is missing (nft flush ruleset, someone
    /// deleted it) or the last transaction failed, apply the current decision again.
    func startReconciling() {
        let first = state.withLock { s -> Bool in
            defer { s.reconciling = true }
            return !s.reconciling
        }
        guard first, let binding else { return }
        let timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: .now() + Enforcer.reconcileInterval, repeating: Enforcer.reconcileInterval)
        timer.setEventHandler { [self] in
            let (decision, policy, applied) = state.withLock { ($0.decision, $0.policy, $0.appliedBinding) }
            guard let policy, policy.enforcement.networkBinding != .off else { return }
            let present = (try? binding.listTable()) != nil
            guard !present || applied == nil else { return }
            if !present { logger.warning("the nftables table is gone: putting it back", metadata: ["table": "\(binding.table)"]) }
            state.withLock { $0.appliedBinding = nil }
            applyBinding(decision: decision, policy: policy, eventNanos: monotonicNanos(), changed: true)
        }
        timer.resume()
        // The timer lives as long as the enforcer: keep it in the state.
        timerHolder.timer = timer
    }

    func scheduleTermination(decision: Decision, policy: Policy, eventNanos: UInt64) {
        let mode = policy.enforcement.sessionTermination
        if decision.isAuthorized || mode == .off {
            let cancelled = state.withLock { s -> Bool in
                defer { s.graceStartedAt = nil; s.graceToken &+= 1; s.graceFired = false }
                return s.graceStartedAt != nil
            }
            if cancelled && decision.isAuthorized {
                logger.notice("authorized path back within the grace period: sessions kept", metadata: ["interfaces": "\(decision.authorizedInterfaces.joined(separator: ","))"])
            }
            return
        }
        guard let tracker, !tracker.sessions().isEmpty else { return }
        let token = state.withLock { s -> UInt64? in
            guard s.graceStartedAt == nil, !s.graceFired else { return nil }
            s.graceStartedAt = eventNanos
            s.graceToken &+= 1
            return s.graceToken
        }
        guard let token else { return }
        let grace = policy.enforcement.graceSeconds
        // A session launched while already unauthorized (audit gate) is picked up when the
        // grace expires; a later launch during the same unauthorized period re-arms below.
        if grace > 0 {
            logger.warning("segment lost: VDI traffic blocked, sessions end unless an authorized path returns", metadata: ["grace_s": "\(grace)"])
        }
        let work: @Sendable () -> Void = { [self] in
            // Check and claim in one step: a cancel cannot slip in between.
            let claim = state.withLock { s -> (Decision, Policy, UInt64)? in
                guard s.graceToken == token, let pol = s.policy, !s.decision.isAuthorized, let started = s.graceStartedAt else { return nil }
                s.graceStartedAt = nil
                s.graceFired = true
                return (s.decision, pol, started)
            }
            guard let (current, pol, started) = claim else { return }
            endSessions(reason: current.reason, policy: pol, eventNanos: started)
        }
        // No grace: at once (a timer, even of zero, is subject to Dispatch's timer leeway).
        if grace > 0 {
            queue.asyncAfter(deadline: .now() + grace, execute: work)
        } else {
            queue.async(execute: work)
        }
    }

    func endSessions(reason: String, policy: Policy, eventNanos: UInt64) {
        guard let tracker else { return }
        let protected = Set(policy.profiles.filter(\.needsAuthorizedSegment).map(\.name))
        // A session whose profile left the policy still needed the segment when it started.
        let known = Set(policy.profiles.map(\.name))
        let matching: (String) -> Bool = { protected.contains($0) || !known.contains($0) }
        let targets = tracker.sessions().filter { matching($0.profile) }
        guard !targets.isEmpty else { return }
        switch policy.enforcement.sessionTermination {
        case .off:
            return
        case .audit:
            record(.sessionsWouldBeEnded, sessions: targets, reason: reason)
        case .enforce:
            let results = tracker.terminate(matching: matching, killTimeout: policy.enforcement.killTimeoutSeconds)
            let last = results.map(\.reapedAtNanos).max() ?? 0
            let ms = last > 0 ? Double(last &- eventNanos) / 1e6 : nil
            let notReaped = results.filter { !$0.reaped }
            var why = reason
            if results.contains(where: \.killed) { why += " (SIGKILL after \(policy.enforcement.killTimeoutSeconds) s)" }
            if !notReaped.isEmpty { why += "; NOT reaped: sessions \(notReaped.map { String($0.session.id) }.joined(separator: ","))" }
            record(.sessionsEnded, sessions: results.map(\.session), reason: why, latencyMs: ms)
        }
    }

    // MARK: Launch gate

    /// Decides a launch request and, when allowed for a My Number profile, starts tracking the
    /// requester (which then execs the client) in a session cgroup before answering.
    public func launch(profileName: String, command: [String], requester: LaunchRequester) -> LaunchReply {
        let (decision, policy) = state.withLock { ($0.decision, $0.policy) }
        func refuse(_ why: String, kind: EnforcementEvent.Kind = .launchRefused) -> LaunchReply {
            record(kind, profile: profileName, reason: why, uid: requester.uid)
            return LaunchReply(allowed: false, reason: why, profile: profileName, sessionID: nil, command: [], configFiles: [])
        }
        guard profileName.count <= 64, profileName.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
            let shown = String(profileName.prefix(64).map { $0.isASCII && !$0.isNewline ? $0 : "?" })
            return refuse("'\(shown)' is not a profile name (letters, digits, - and _, at most 64)")
        }
        guard let policy else { return refuse("segguardd has not decided the segment yet (network dump in progress); try again") }
        guard let profile = policy.profile(named: profileName) else {
            let names = policy.profiles.map(\.name)
            return refuse("unknown profile '\(profileName)' (profiles in the policy: \(names.isEmpty ? "none" : names.joined(separator: ", ")))")
        }
        if !profile.allowedGroups.isEmpty {
            let resolved = profile.allowedGroups.map { name in (name, Enforcer.gid(of: name)) }
            let missing = resolved.filter { $0.1 == nil }.map(\.0)
            if !missing.isEmpty {
                logger.error("allowed_groups names groups unknown on this host", metadata: ["profile": "\(profile.name)", "groups": "\(missing.joined(separator: ","))"])
            }
            let gids = resolved.compactMap(\.1)
            let member = requester.uid == 0 || gids.contains(requester.gid) || gids.contains { requester.groups.contains($0) }
            guard member else {
                return refuse("uid \(requester.uid) is not in a group allowed to launch profile '\(profile.name)' (\(profile.allowedGroups.joined(separator: ", ")))")
            }
        }
        let base = profile.command.isEmpty ? command : profile.command
        guard !base.isEmpty else { return refuse("profile '\(profile.name)' has no command and none was given after --") }
        var reason = "profile '\(profile.name)' (\(profile.segment.rawValue)) may start: \(decision.reason)"
        if profile.needsAuthorizedSegment && !decision.isAuthorized {
            let why = "profile '\(profile.name)' needs the My Number segment: \(decision.reason)"
            switch policy.enforcement.launchGate {
            case .enforce: return refuse(why)
            case .audit:
                record(.launchWouldBeRefused, profile: profile.name, reason: why, uid: requester.uid)
                reason = "audit mode: \(why)"
            case .off: reason = "launch gate off: \(why)"
            }
        }
        var sessionID: UInt64?
        if profile.needsAuthorizedSegment && policy.enforcement.sessionTermination != .off {
            guard let tracker else {
                return refuse("cannot track a My Number session: no cgroup v2 on this system")
            }
            do {
                sessionID = try tracker.register(pid: requester.pid, uid: requester.uid, profile: profile.name, peerPidfd: requester.pidfd).id
            } catch {
                return refuse("cannot track the session: \(error)")
            }
            // The decision may have turned while the session was being registered (or the
            // gate is in audit/off): make sure a termination is pending if it must be.
            let (now, pol) = state.withLock { ($0.decision, $0.policy) }
            if let pol, !now.isAuthorized { scheduleTermination(decision: now, policy: pol, eventNanos: monotonicNanos()) }
        }
        record(.launchAllowed, profile: profile.name, reason: reason, uid: requester.uid)
        return LaunchReply(
            allowed: true, reason: reason, profile: profile.name, sessionID: sessionID, command: base + profile.enforceArguments,
            configFiles: profile.configFiles.map { ConfigFileEdit(path: $0.path, section: $0.section, set: $0.set) })
    }

    /// getgrnam_r (getgrnam is not reentrant and the control socket serves connections concurrently).
    static func gid(of name: String) -> UInt32? {
        var grp = Glibc.group()
        var buf = [CChar](repeating: 0, count: 16384)
        var result: UnsafeMutablePointer<Glibc.group>?
        guard getgrnam_r(name, &grp, &buf, buf.count, &result) == 0, result != nil else { return nil }
        return grp.gr_gid
    }

    // MARK: Queries and events

    public func sessions() -> [SessionInfo] { tracker?.sessions() ?? [] }

    /// Newest last.
    public func events(denialsOnly: Bool = false) -> [EnforcementEvent] {
        state.withLock { s in denialsOnly ? s.events.filter(\.isDenial) : s.events }
    }

    /// Waits until the enforcement queue has run everything scheduled before now (tests, shutdown).
    public func drain() { queue.sync {} }

    /// Records an event of another control (capture blocking) in the same numbered log.
    public func recordExternal(_ kind: EnforcementEvent.Kind, profile: String?, reason: String, uid: UInt32?, exec: EnforcementEvent.ExecDetails?) {
        record(kind, profile: profile, reason: reason, uid: uid, exec: exec)
    }

    func record(_ kind: EnforcementEvent.Kind, profile: String? = nil, sessions: [SessionInfo] = [], reason: String, latencyMs: Double? = nil, uid: UInt32? = nil,
                exec: EnforcementEvent.ExecDetails? = nil) {
        let event = state.withLock { s -> EnforcementEvent in
            let e = EnforcementEvent(id: s.nextEventID, time: Date(), kind: kind, profile: profile, sessions: sessions, reason: reason, latencyMs: latencyMs, uid: uid,
                                     exec: exec)
            s.nextEventID += 1
            s.events.append(e)
            if s.events.count > eventCapacity { s.events.removeFirst(s.events.count - eventCapacity) }
            return e
        }
        var meta: Logger.Metadata = ["event": "\(kind.rawValue)", "event_id": "\(event.id)", "reason": "\(reason)"]
        if let profile { meta["profile"] = "\(profile)" }
        if !sessions.isEmpty { meta["sessions"] = "\(sessions.map { "\($0.id)(pid \($0.pid))" }.joined(separator: ","))" }
        if let latencyMs { meta["latency_ms"] = "\(String(format: "%.3f", latencyMs))" }
        if let uid { meta["uid"] = "\(uid)" }
        if let exec {
            meta["path"] = "\(exec.path)"
            meta["pid"] = "\(exec.pid)"
            if let h = exec.sha256 { meta["sha256"] = "\(h)" }
            if let p = exec.parentPid { meta["ppid"] = "\(p)" }
            if let p = exec.parentExecutable { meta["parent"] = "\(p)" }
        }
        logger.log(level: event.isDenial ? .warning : .notice, "enforcement event", metadata: meta)
        onEvent(event)
    }
}
