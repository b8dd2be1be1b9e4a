// A fake of every kernel source the agent reads or drives, so that its behaviour — fail
// closed when nftables refuses, grace and termination, reload and bundle order, repair, every
// control reply — is tested without root, on the agent's real loop with a manual clock.

import Foundation
import SegguardAgent
import SegguardCapture
import SegguardDecision
import SegguardDeviceAuth
import SegguardEnforce
import SegguardNetlink
import SegguardPolicy
import SegguardSystem
import SegguardWire
import Synchronization

/// A monotonic clock the test moves by hand (the agent's timers follow it).
public final class ManualClock: Sendable {
    private let now = Mutex<UInt64>(1_000_000_000)
    public init() {}
    public var nanos: UInt64 { now.withLock { $0 } }
    public func advance(seconds: Double) { now.withLock { $0 &+= nanoseconds(seconds) } }
    /// The clock as the agent's loop reads it.
    public var clock: PollLoop.Clock { { [self] in nanos } }
}

/// Network snapshots sent by the test, delivered on the agent's loop as the watcher would.
public final class FakeNetworkSource: NetworkSource, Sendable {
    private let state = Mutex<(loop: PollLoop?, generation: UInt64, stopped: Bool, statistics: NetlinkStatistics)>((nil, 0, false, NetlinkStatistics()))
    private let callbacks = Mutex<LoopBound<(snapshot: (NetworkSnapshot, UInt64) -> Void, failure: (String) -> Void)?>?>(nil)
    /// Thrown by `start` when set.
    public let startError = Mutex<String?>(nil)

    public init() {}

    private let thresholds = Mutex<[Int32]>([])
    public func setSignalThresholds(_ dBm: [Int32]) { thresholds.withLock { $0 = dBm } }
    /// The signal thresholds the agent asked for last.
    public var signalThresholds: [Int32] { thresholds.withLock { $0 } }

    public func start(on loop: PollLoop, onSnapshot: @escaping (NetworkSnapshot, UInt64) -> Void, onFailure: @escaping (String) -> Void) throws {
        if let why = startError.withLock({ $0 }) { throw FakeError(why) }
        state.withLock { $0.loop = loop }
        callbacks.withLock { $0 = LoopBound((onSnapshot, onFailure), loop: loop) }
    }

    public func stop() { state.withLock { $0.stopped = true } }
    public var isStopped: Bool { state.withLock { $0.stopped } }
    public var statistics: NetlinkStatistics { state.withLock { $0.statistics } }

    /// Delivers `interfaces` as the next snapshot (generation +1), as if the loop had just
    /// woken for a netlink message.
    public func send(_ interfaces: [InterfaceState], wirelessMonitoring: Bool = true) {
        let (loop, generation) = state.withLock { s -> (PollLoop?, UInt64) in
            s.generation += 1
            s.statistics.messages += 1
            s.statistics.snapshots += 1
            return (s.loop, s.generation)
        }
        guard let loop, let bound = callbacks.withLock({ $0 }) else { preconditionFailure("FakeNetworkSource.send before start") }
        let snapshot = NetworkSnapshot(interfaces: interfaces, generation: generation, wirelessMonitoring: wirelessMonitoring)
        loop.post { bound.value?.snapshot(snapshot, loop.clock()) }
    }

    /// The source fails for good (the watcher's socket broke).
    public func fail(_ why: String) {
        guard let loop = state.withLock({ $0.loop }), let bound = callbacks.withLock({ $0 }) else { return }
        loop.post { bound.value?.failure(why) }
    }
}

/// Interfaces to build snapshots from.
public enum FakeInterfaces {
    /// A wired port (a plain NIC) with or without carrier.
    public static func wired(_ name: String, index: Int32 = 2, carrier: Bool = true, defaultRoute: Bool = true) -> InterfaceState {
        InterfaceState(index: index, name: name, kind: .wired, mac: MACAddress("02:00:00:00:00:\(String(format: "%02x", index & 0xff))"),
                       operState: carrier ? .up : .lowerLayerDown, hasCarrier: carrier,
                       defaultRoutes: defaultRoute ? [DefaultRoute(family: .ipv4, gateway: IPAddress("192.0.2.1"), metric: 100)] : [])
    }

    /// A Wi-Fi station associated to `ssid` through `bssid` (nil: not associated).
    public static func wifi(_ name: String, index: Int32 = 3, ssid: String?, bssid: String?, security: WirelessSecurity = .enterprise) -> InterfaceState {
        let link = ssid.map { WirelessLink(ssid: SSID($0), bssid: bssid.flatMap(MACAddress.init), frequencyMHz: 5180, security: security) } ?? .disconnected
        return InterfaceState(index: index, name: name, kind: .wireless, operState: link.isAssociated ? .up : .dormant, hasCarrier: link.isAssociated,
                              defaultRoutes: link.isAssociated ? [DefaultRoute(family: .ipv4, gateway: IPAddress("192.0.2.1"), metric: 600)] : [],
                              wireless: link)
    }

    public static let loopback = InterfaceState(index: 1, name: "lo", kind: .loopback)
}

/// 802.1X states sent by the test.
public final class FakeDeviceAuthSource: DeviceAuthSource, Sendable {
    private let onChange = Mutex<(@Sendable ([String: DeviceAuthState]) -> Void)?>(nil)
    private let stopped = Mutex(false)
    public init() {}
    public func start(onChange: @escaping @Sendable ([String: DeviceAuthState]) -> Void) { self.onChange.withLock { $0 = onChange } }
    public func stop() { stopped.withLock { $0 = true } }
    public var isStopped: Bool { stopped.withLock { $0 } }
    private let reauth = Mutex<[String]>([])
    public func reauthenticate(interface: String) { reauth.withLock { $0.append(interface) } }
    /// Interfaces the agent asked to re-authenticate, in order.
    public var reauthenticated: [String] { reauth.withLock { $0 } }
    /// As wpa_supplicant's source calls it: the full map after a change.
    public func send(_ states: [String: DeviceAuthState]) { onChange.withLock { $0 }?(states) }
}

/// A trusted-server prober whose probes finish when the test says: each request is kept with
/// its completion.
public final class FakeProber: TrustedServerProbing, Sendable {
    public struct Request: Sendable {
        public var server: TrustedServerRule
        public var interfaceIndex: Int32
        public var interfaceName: String
        public var completion: @Sendable (TrustedServerResult) -> Void
    }
    private let requests = Mutex<[Request]>([])
    public init() {}
    public func probe(_ server: TrustedServerRule, interfaceIndex: Int32, interfaceName: String, completion: @escaping @Sendable (TrustedServerResult) -> Void) {
        requests.withLock { $0.append(Request(server: server, interfaceIndex: interfaceIndex, interfaceName: interfaceName, completion: completion)) }
    }
    /// Every probe asked for so far, oldest first.
    public var asked: [Request] { requests.withLock { $0 } }
    /// Finishes the oldest unfinished probe with `proven` (and removes it).
    public func finishNext(proven: Bool, detail: String = "fake") {
        guard let r = requests.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else { return }
        r.completion(TrustedServerResult(server: r.server.endpoint, proven: proven, detail: detail))
    }
}

/// A network binding that records every transaction and can be told to refuse them or to
/// lose its table.
public final class FakeNetworkBinding: NetworkBinding, Sendable {
    public struct Applied: Sendable, Equatable {
        /// "enforce", "audit" or "off" (from the batch).
        public var mode: String
        /// The interfaces the batch lets reach the gateways (empty: none).
        public var allowed: [String]
        public var accepted: Bool
        public var data: Data
        /// Only the chain's rules (`NftablesRuleset.update`), not the whole table.
        public var isRulesUpdate = false
        /// The rules' comments, in order.
        public var comments: [String] = []
    }

    public let table: String
    private let state = Mutex<(applied: [Applied], refuse: ((Applied) -> Bool)?, present: Bool, listings: Int, rules: [(comment: String?, expr: String)], flags: [String])>(([], nil, false, 0, [], []))
    /// With `announcesChanges`: what the kernel's notifications would say of the by-hand changes.
    public let feed: FakeTableChangeFeed?
    private let feedHandedOut = Mutex(false)

    /// What `refusalFeed()` hands out: push refused packets into it as nfnetlink_log would.
    public let refusals: FakeRefusalFeed?
    private let refusalsHandedOut = Mutex(false)

    /// `announcesChanges`: the by-hand changes below are also announced on `changeFeed()`, as
    /// nf_tables' notifications announce them (else only the periodic check finds them).
    /// `logsRefusals`: `refusalFeed()` hands out `refusals`.
    public init(table: String = "segguard", announcesChanges: Bool = false, logsRefusals: Bool = false) {
        self.table = table
        self.feed = announcesChanges ? FakeTableChangeFeed() : nil
        self.refusals = logsRefusals ? FakeRefusalFeed() : nil
    }

    public func refusalFeed() throws(NftablesError) -> (any GatewayRefusalFeed)? {
        refusalsHandedOut.withLock { given in
            defer { given = true }
            return given ? nil : refusals
        }
    }

    public func changeFeed() -> (any TableChangeFeed)? {
        feedHandedOut.withLock { given in
            defer { given = true }
            return given ? nil : feed
        }
    }

    private func announce(_ by: TableChange?) {
        if let by { feed?.push(TableChanges(foreign: [by])) }
    }

    /// A foreign change as `nft` run by root would be announced.
    public static let byNft = TableChange(generation: 7, pid: 4242, process: "nft")

    public func apply(_ transaction: Data) throws(NftablesError) {
        let parsed = Self.parse(transaction)
        let refusal = state.withLock { s -> String? in
            var a = parsed
            var why: String?
            if s.refuse?(parsed) ?? false { why = "Error: Could not process rule: No buffer space available (fake)" }
            // As the kernel: the rules of a chain that is not there cannot be replaced.
            if a.isRulesUpdate && !s.present { why = "Error: No such file or directory; did you mean table 'segguard' in family inet? (fake)" }
            a.accepted = why == nil
            s.applied.append(a)
            if a.accepted {
                s.present = a.mode != "off"
                s.rules = a.comments.map { ($0, "as applied") }
                if !a.isRulesUpdate { s.flags = [] }
            }
            return why
        }
        if let refusal { throw NftablesError(operation: "apply the transaction to table inet \(table)", detail: refusal) }
    }

    /// A listing as libnftables prints it: the table, the output base chain, the rules in force.
    public func listTable() throws(NftablesError) -> String? {
        state.withLock { s in
            s.listings += 1
            guard s.present else { return nil }
            var t: [String: Any] = ["family": "inet", "name": table, "handle": 1]
            if !s.flags.isEmpty { t["flags"] = s.flags }
            var items: [[String: Any]] = [
                ["table": t],
                ["chain": ["family": "inet", "table": table, "name": "output", "handle": 1, "type": "filter", "hook": "output", "prio": 0, "policy": "accept"]],
            ]
            for (i, r) in s.rules.enumerated() {
                var rule: [String: Any] = ["family": "inet", "table": table, "chain": "output", "handle": i + 2,
                                           "expr": [["counter": ["packets": s.listings, "bytes": 0]], ["comment-stand-in": r.expr]]]
                if let comment = r.comment { rule["comment"] = comment }
                items.append(["rule": rule])
            }
            let data = try! JSONSerialization.data(withJSONObject: ["nftables": items])
            return String(decoding: data, as: UTF8.self)
        }
    }

    /// Flags, then each rule's comment and expression (what the kernel's fingerprint covers).
    public func fingerprint() throws(NftablesError) -> [UInt8]? {
        state.withLock { s in
            s.listings += 1
            guard s.present else { return nil }
            return Array((s.flags.joined(separator: ",") + "|" + s.rules.map { "\($0.comment ?? "-"):\($0.expr)" }.joined(separator: ";")).utf8)
        }
    }

    /// `nft insert rule inet segguard output accept` by someone else.
    public func insertRuleByHand(_ by: TableChange? = byNft) {
        state.withLock { $0.rules.insert((nil, "accept"), at: 0) }
        announce(by)
    }
    /// `nft replace rule … handle N …` keeping the rule's comment.
    public func replaceRuleByHand(_ index: Int = 0, _ by: TableChange? = byNft) {
        state.withLock { $0.rules[index].expr = "replaced" }
        announce(by)
    }
    /// `nft add table inet segguard '{ flags dormant; }'`: every chain unhooked.
    public func makeDormantByHand(_ by: TableChange? = byNft) {
        state.withLock { $0.flags = ["dormant"] }
        announce(by)
    }

    /// Refuse the transactions `predicate` picks (nil: accept all).
    public func refuse(_ predicate: (@Sendable (Applied) -> Bool)?) { state.withLock { $0.refuse = predicate } }
    /// `nft flush ruleset` by someone else.
    public func loseTable(_ by: TableChange? = byNft) {
        state.withLock { $0.present = false }
        announce(by)
    }
    public var applied: [Applied] { state.withLock { $0.applied } }
    public var accepted: [Applied] { applied.filter(\.accepted) }
    public var isTablePresent: Bool { state.withLock { $0.present } }
    public var listings: Int { state.withLock { $0.listings } }

    /// Reads mode and allowed interfaces back from a batch of `NftablesRuleset` (nft text):
    /// the comments of the `output` chain's rules, in order, and the interfaces of its
    /// `oifname` match (unquoted; a wildcard star stays escaped, `eth\*`).
    static func parse(_ data: Data) -> Applied {
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
        guard lines.allSatisfy({ $0.hasPrefix("add ") || $0.hasPrefix("delete ") || $0.hasPrefix("flush ") }), !lines.isEmpty else {
            return Applied(mode: "?", allowed: [], accepted: true, data: data)
        }
        var mode = "off", allowed: [String] = [], comments: [String] = []
        for line in lines {
            let words = line.split(separator: " ", maxSplits: 5).map(String.init)
            guard words.count > 5, words[0] == "add", words[1] == "rule", words[4] == NftablesRuleset.chainName else { continue }
            let comment = line.range(of: " comment \"").map { String(line[$0.upperBound...].dropLast()) } ?? ""
            comments.append(comment)
            mode = comment.hasSuffix("(audit)") ? "audit" : "enforce"
            guard let oif = line.range(of: "oifname ") else { continue }
            let rest = line[oif.upperBound...]
            let list = rest.hasPrefix("{") ? String(rest.dropFirst(2).prefix { $0 != "}" }) : String(rest.prefix { $0 != " " })
            allowed = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }.filter { !$0.isEmpty }
        }
        let update = lines.contains { $0.hasPrefix("flush chain ") }
        if mode == "off", update || lines.contains(where: { $0.hasPrefix("add chain ") }) { mode = "enforce" }
        return Applied(mode: mode, allowed: allowed, accepted: true, data: data, isRulesUpdate: update, comments: comments)
    }
}

/// What a test pushes for the agent's loop to drain, with a pipe that makes `fd` readable as
/// the real socket is: the shared part of the fake feeds below.
public final class FakeFeedQueue<Item: Sendable>: Sendable {
    public let fd: Int32
    private let writeEnd: Int32
    private let pending = Mutex<[Item]>([])

    public init() {
        var fds: [Int32] = [-1, -1]
        precondition(pipe(&fds) == 0, "pipe failed")
        _ = fcntl(fds[0], F_SETFL, O_NONBLOCK)
        _ = fcntl(fds[1], F_SETFL, O_NONBLOCK)
        (fd, writeEnd) = (fds[0], fds[1])
    }

    deinit {
        close(fd)
        close(writeEnd)
    }

    /// Queues `items` and makes `fd` readable.
    public func push(_ items: [Item]) {
        pending.withLock { $0 += items }
        var one: UInt8 = 1
        _ = write(writeEnd, &one, 1)
    }

    /// Everything queued, and `fd` no longer readable.
    public func take() -> [Item] {
        var sink = [UInt8](repeating: 0, count: 256)
        while read(fd, &sink, sink.count) > 0 {}
        return pending.withLock { all in
            defer { all = [] }
            return all
        }
    }
}

/// Refused gateway packets pushed by a test, as nfnetlink_log would deliver them.
public final class FakeRefusalFeed: GatewayRefusalFeed, Sendable {
    private let queue = FakeFeedQueue<GatewayRefusal>()
    public init() {}
    public var fd: Int32 { queue.fd }
    public func push(_ refusals: [GatewayRefusal]) { queue.push(refusals) }
    public func drain() -> GatewayRefusals { GatewayRefusals(refusals: queue.take()) }
}

/// Announced table changes, as nf_tables' notifications would deliver them.
public final class FakeTableChangeFeed: TableChangeFeed, Sendable {
    private let queue = FakeFeedQueue<TableChanges>()
    public init() {}
    public var fd: Int32 { queue.fd }
    public func push(_ changes: TableChanges) { queue.push([changes]) }
    public func drain() -> TableChanges {
        let all = queue.take()
        return TableChanges(foreign: all.flatMap(\.foreign), overflow: all.contains { $0.overflow })
    }
}

/// Sessions kept in memory; `terminate` ends them at once (or leaves them, when told to).
public final class FakeSessionControl: SessionControl, Sendable {
    private let state = Mutex<(next: UInt64, sessions: [SessionInfo], terminations: [[UInt64]], refuse: String?, stubborn: Bool)>((1, [], [], nil, false))
    public let socketMatch: NftablesRuleset.SessionMatch?
    /// `socketMatch`: as the real tracker would name its base for nftables (nil: it cannot).
    public init(socketMatch: NftablesRuleset.SessionMatch? = NftablesRuleset.SessionMatch(path: "segguard", level: 1)) {
        self.socketMatch = socketMatch
    }

    public func register(pid: Int32, uid: UInt32, profile: String, peerPidfd: Int32) throws(SessionError) -> SessionInfo {
        let result = state.withLock { s -> Result<SessionInfo, SessionError> in
            if let why = s.refuse { return .failure(SessionError(why)) }
            let info = SessionInfo(id: s.next, profile: profile, pid: pid, uid: uid, startedAt: Date(), cgroup: "/fake/session-\(s.next)", pids: [pid])
            s.next += 1
            s.sessions.append(info)
            return .success(info)
        }
        return try result.get()
    }

    public func sessions() -> [SessionInfo] { state.withLock { $0.sessions } }

    public func terminate(matching: @escaping @Sendable (String) -> Bool, killTimeout: Double) -> [TerminationResult] {
        state.withLock { s in
            let targets = s.sessions.filter { matching($0.profile) }
            s.terminations.append(targets.map(\.id))
            if !s.stubborn { s.sessions.removeAll { matching($0.profile) } }
            return targets.map { TerminationResult(session: $0, killed: s.stubborn, reaped: !s.stubborn, reapedAtNanos: s.stubborn ? 0 : monotonicNanos()) }
        }
    }

    /// Registration fails with `why` (nil: succeeds).
    public func refuseRegistration(_ why: String?) { state.withLock { $0.refuse = why } }
    /// Sessions survive termination (processes that ignore SIGKILL: not reaped).
    public func makeStubborn() { state.withLock { $0.stubborn = true } }
    /// A session left by an earlier run, adopted at start.
    public func adopt(profile: String = SessionTracker.adoptedProfile, pid: Int32 = 4242) {
        state.withLock { s in
            s.sessions.append(SessionInfo(id: s.next, profile: profile, pid: pid, uid: 1000, startedAt: Date(), cgroup: "/fake/session-\(s.next)", pids: [pid]))
            s.next += 1
        }
    }
    /// Each call of `terminate`: the ids it ended.
    public var terminations: [[UInt64]] { state.withLock { $0.terminations } }
}

/// An exec gate that records what the agent tells it and plays capture records.
public final class FakeExecGate: ExecGate, Sendable {
    private struct State {
        var watched: [String] = []
        var updates: [CaptureProtectionState] = []
        var started = false
        var stopped = false
        var stale: (@Sendable () -> Void)?
        var sessionUsers: Set<UInt32> = []
        var trustedOnlyPossible = false
    }
    private let state = Mutex(State())
    let onRecord: @Sendable (CaptureDecisionRecord) -> Void

    public init(onRecord: @escaping @Sendable (CaptureDecisionRecord) -> Void) { self.onRecord = onRecord }

    public func watch(_ paths: [String]) throws(CaptureSetupError) { state.withLock { $0.watched += paths } }
    public func rewatch(_ paths: [String]) throws(CaptureSetupError) { state.withLock { $0.watched = paths } }
    public var watched: [String] { state.withLock { $0.watched } }
    public func update(rule: CaptureRule, sessions: CaptureSessions) {
        state.withLock {
            $0.updates.append(CaptureProtectionState.current(rule, sessionProfiles: sessions.profiles))
            $0.sessionUsers = sessions.users
            $0.trustedOnlyPossible = sessions.trustedOnlyPossible
        }
    }
    /// The session users and the trusted-only hint of the last update.
    public var sessionUsers: Set<UInt32> { state.withLock { $0.sessionUsers } }
    public var trustedOnlyPossible: Bool { state.withLock { $0.trustedOnlyPossible } }
    public var protection: CaptureProtectionState { state.withLock { $0.updates.last ?? .init(level: .none) } }
    public var statistics: CaptureStatistics { CaptureStatistics() }
    public func onStaleProtection(_ hint: @escaping @Sendable () -> Void) { state.withLock { $0.stale = hint } }
    public func start(procConnector: Int32) { state.withLock { $0.started = true } }
    public func stop() { state.withLock { $0.stopped = true } }

    public var updates: [CaptureProtectionState] { state.withLock { $0.updates } }
    public var isStarted: Bool { state.withLock { $0.started } }
    public var isStopped: Bool { state.withLock { $0.stopped } }
    /// As the fanotify or process thread would report an exec.
    public func emit(_ record: CaptureDecisionRecord) { onRecord(record) }
    /// Sessions may have ended (an exec after a session's end).
    public func hintStale() { state.withLock { $0.stale }?() }
}

/// Keeps the exec gate the agent made, for the test to drive.
public final class FakeExecGateFactory: Sendable {
    private let made = Mutex<FakeExecGate?>(nil)
    private let failure = Mutex<String?>(nil)
    public init() {}
    public var gate: FakeExecGate? { made.withLock { $0 } }
    /// The next gate cannot be made (no fanotify): `why`.
    public func fail(_ why: String?) { failure.withLock { $0 = why } }
    public var factory: ExecGateFactory {
        { [self] _, onRecord in
            if let why = failure.withLock({ $0 }) { throw CaptureSetupError(description: why) }
            let g = FakeExecGate(onRecord: onRecord)
            made.withLock { $0 = g }
            return g
        }
    }
}

/// What the agent told the service manager and its instruments, in order.
public final class RecordingObserver: AgentObserver, Sendable {
    public enum Note: Sendable, Equatable {
        case ready(String), status(String), reloading, reloaded(String), watchdog, stopping
    }
    private let state = Mutex<(notes: [Note], changes: [DecisionChange], events: [EnforcementEvent])>(([], [], []))
    public init() {}
    public func ready(status: String) { state.withLock { $0.notes.append(.ready(status)) } }
    public func status(_ text: String) { state.withLock { $0.notes.append(.status(text)) } }
    public func reloading() { state.withLock { $0.notes.append(.reloading) } }
    public func reloaded(status: String) { state.withLock { $0.notes.append(.reloaded(status)) } }
    public func watchdog() { state.withLock { $0.notes.append(.watchdog) } }
    public func stopping() { state.withLock { $0.notes.append(.stopping) } }
    public func decisionChanged(_ change: DecisionChange, eventNanos: UInt64) { state.withLock { $0.changes.append(change) } }
    public func recorded(_ event: EnforcementEvent) { state.withLock { $0.events.append(event) } }
    public var notes: [Note] { state.withLock { $0.notes } }
    public var changes: [DecisionChange] { state.withLock { $0.changes } }
    public var events: [EnforcementEvent] { state.withLock { $0.events } }
}

/// A stand-in for the reporter: keeps what the agent reports.
public final class RecordingReporter: AgentReporting, Sendable {
    public struct Event: Sendable, Equatable {
        public var kind: String, severity: String, reason: String, details: [String: String]
    }
    private let state = Mutex<(events: [Event], heartbeatsAsked: Int, rules: [ReportRule])>(([], 0, []))
    public init() {}
    public func record(kind: String, severity: String, reason: String, details: [String: String], time: Date,
                       afterCommit: (@Sendable (String?) -> Void)?) {
        let n = state.withLock { s -> Int in
            s.events.append(Event(kind: kind, severity: severity, reason: reason, details: details))
            return s.events.count
        }
        afterCommit?("recorded-\(n)")
    }
    public func heartbeatNow() { state.withLock { $0.heartbeatsAsked += 1 } }
    public func update(rule: ReportRule) { state.withLock { $0.rules.append(rule) } }
    public var reportingStatus: StatusReply.ReportingStatus {
        .init(collector: "https://collector.test:8443", agentID: "tc-test", group: "mynumber", heartbeatsSent: 0, heartbeatFailures: 0, lastHeartbeatAt: nil,
              eventsDelivered: state.withLock { $0.events.count }, lastError: nil, bundleVersion: nil)
    }
    public var events: [Event] { state.withLock { $0.events } }
    public var heartbeatsAsked: Int { state.withLock { $0.heartbeatsAsked } }
}

/// A failure of a fake, with its reason.
public struct FakeError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ d: String) { description = d }
}
