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

/// Who asked to launch, from the control socket's peer credentials.
public struct LaunchRequester: Sendable, Equatable {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32
    public var groups: [UInt32]
    public init(pid: Int32, uid: UInt32, gid: UInt32, groups: [UInt32]) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
        self.groups = groups
    }
}

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
            let w = s.baselineGateways != policy.vdi.gateways
            if w { s.baselineGateways = policy.vdi.gateways }
            return (s.appliedBinding == key, w)
        }
        if writeBaseline, let path = baselinePath {
            do {
                try binding.writeBaseline(gateways: policy.vdi.gateways, to: path)
            } catch {
                logger.error("cannot write the boot-time baseline table", metadata: ["file": "\(path)", "error": "\(error)"])
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
            try? binding.apply(NftablesRuleset.transaction(table: binding.table, gateways: policy.vdi.gateways, allowedInterfaces: [], mode: .enforce))
            record(.bindingFailed, reason: "\(error)")
        }
    }

    func scheduleTermination(decision: Decision, policy: Policy, eventNanos: UInt64) {
        let mode = policy.enforcement.sessionTermination
        if decision.isAuthorized || mode == .off {
            let cancelled = state.withLock { s -> Bool in
                defer { s.graceStartedAt = nil; s.graceToken &+= 1 }
                return s.graceStartedAt != nil
            }
            if cancelled && decision.isAuthorized {
                logger.notice("authorized path back within the grace period: sessions kept", metadata: ["interfaces": "\(decision.authorizedInterfaces.joined(separator: ","))"])
            }
            return
        }
        guard let tracker, !tracker.sessions().isEmpty else { return }
        let token = state.withLock { s -> UInt64? in
            guard s.graceStartedAt == nil else { return nil }
            s.graceStartedAt = eventNanos
            s.graceToken &+= 1
            return s.graceToken
        }
        guard let token else { return }
        let grace = policy.enforcement.graceSeconds
        if grace > 0 {
            logger.warning("segment lost: VDI traffic blocked, sessions end unless an authorized path returns", metadata: ["grace_s": "\(grace)"])
        }
        let work: @Sendable () -> Void = { [self] in
            let (current, pol, started, valid) = state.withLock { s in (s.decision, s.policy, s.graceStartedAt, s.graceToken == token) }
            guard valid, let pol, !current.isAuthorized, let started else { return }
            state.withLock { $0.graceStartedAt = nil }
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
        guard let policy else { return refuse("segguardd has no policy loaded yet") }
        guard let profile = policy.profile(named: profileName) else {
            let names = policy.profiles.map(\.name)
            return refuse("unknown profile '\(profileName)' (profiles in the policy: \(names.isEmpty ? "none" : names.joined(separator: ", ")))")
        }
        if !profile.allowedGroups.isEmpty {
            let gids = profile.allowedGroups.compactMap { getgrnam($0).map { $0.pointee.gr_gid } }
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
                sessionID = try tracker.register(pid: requester.pid, uid: requester.uid, profile: profile.name).id
            } catch {
                return refuse("cannot track the session: \(error)")
            }
        }
        record(.launchAllowed, profile: profile.name, reason: reason, uid: requester.uid)
        return LaunchReply(
            allowed: true, reason: reason, profile: profile.name, sessionID: sessionID, command: base + profile.enforceArguments,
            configFiles: profile.configFiles.map { ConfigFileEdit(path: $0.path, section: $0.section, set: $0.set) })
    }

    // MARK: Queries and events

    public func sessions() -> [SessionInfo] { tracker?.sessions() ?? [] }

    /// Newest last.
    public func events(denialsOnly: Bool = false) -> [EnforcementEvent] {
        state.withLock { s in denialsOnly ? s.events.filter(\.isDenial) : s.events }
    }

    /// Waits until the enforcement queue has run everything scheduled before now (tests, shutdown).
    public func drain() { queue.sync {} }

    func record(_ kind: EnforcementEvent.Kind, profile: String? = nil, sessions: [SessionInfo] = [], reason: String, latencyMs: Double? = nil, uid: UInt32? = nil) {
        let event = state.withLock { s -> EnforcementEvent in
            let e = EnforcementEvent(id: s.nextEventID, time: Date(), kind: kind, profile: profile, sessions: sessions, reason: reason, latencyMs: latencyMs, uid: uid)
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
        logger.log(level: event.isDenial ? .warning : .notice, "enforcement event", metadata: meta)
        onEvent(event)
    }
}
