// The collector's one store interface. Two implementations: SQLiteStore (a file, the default,
// no setup) and PostgresStore (several collector replicas share one database). Every method
// is one transaction or one statement, so replicas never need each other's memory; the same
// test suite runs against both.

import Foundation
import SegguardPolicy
import SegguardReport

/// The agent a request comes from, taken from its verified client certificate. Two identities
/// are equal when agent id and group are (the certificate's expiry is carried along, not
/// compared: a renewed certificate names the same agent).
public struct AgentIdentity: Sendable, Equatable, Hashable {
    public let agentID: String
    public let group: String
    /// The client certificate's notAfter (nil: not known, e.g. an identity made by a test or a
    /// store's own event).
    public let certificateNotAfter: Date?
    /// The client certificate's serial number (lower-case hex; nil: not known).
    public let certificateSerial: String?
    /// The group the certificate names (OU); `group` is the collector's (its device row's) when it has one.
    public let certificateGroup: String
    public init(agentID: String, group: String, certificateNotAfter: Date? = nil, certificateSerial: String? = nil) {
        self.agentID = agentID
        self.group = group
        self.certificateNotAfter = certificateNotAfter
        self.certificateSerial = certificateSerial
        certificateGroup = group
    }

    init(agentID: String, group: String, certificateNotAfter: Date?, certificateSerial: String?, certificateGroup: String) {
        self.agentID = agentID
        self.group = group
        self.certificateNotAfter = certificateNotAfter
        self.certificateSerial = certificateSerial
        self.certificateGroup = certificateGroup
    }

    /// The same agent and certificate in the group the collector assigned.
    func moved(to group: String) -> AgentIdentity {
        AgentIdentity(agentID: agentID, group: group, certificateNotAfter: certificateNotAfter, certificateSerial: certificateSerial,
                      certificateGroup: certificateGroup)
    }
    public static func == (a: AgentIdentity, b: AgentIdentity) -> Bool { a.agentID == b.agentID && a.group == b.group }
    public func hash(into h: inout Hasher) {
        h.combine(agentID)
        h.combine(group)
    }
}

/// What the store knows of one agent (from its latest heartbeat).
public struct AgentRecord: Sendable, Equatable, Codable {
    public var agentID: String
    public var group: String
    public var hostname: String
    public var agentVersion: String
    public var policyName: String
    public var policySHA256: String
    public var bundleVersion: Int64?
    public var segment: String
    public var authorized: Bool
    public var reason: String
    public var interfaces: [InterfaceSummary]
    public var intervalSeconds: Int
    public var spoolPending: Int
    public var spoolDropped: Int
    public var firstSeen: Date
    public var lastSeen: Date
    public var stale: Bool
    public var heartbeats: Int64
    public var events: Int64
    /// Events the agent holds because the collector refused them (a 4xx; retried later).
    public var spoolHeld: Int = 0
    /// Age of the agent's oldest undelivered event at its last heartbeat (nil: none, or an
    /// agent of wire revision 1).
    public var spoolOldestSeconds: Int?
    /// The end of validity of the certificate the agent's latest heartbeat came with.
    public var certificateNotAfter: Date?
    /// That certificate's serial number (lower-case hex): what `revoke` names by default.
    public var certificateSerial: String?

    enum CodingKeys: String, CodingKey {
        case agentID = "agent_id", group, hostname, agentVersion = "agent_version", policyName = "policy_name"
        case policySHA256 = "policy_sha256", bundleVersion = "bundle_version", segment, authorized, reason, interfaces
        case intervalSeconds = "interval_s", spoolPending = "spool_pending", spoolDropped = "spool_dropped"
        case firstSeen = "first_seen", lastSeen = "last_seen", stale, heartbeats, events
        case spoolHeld = "spool_held", spoolOldestSeconds = "spool_oldest_s", certificateNotAfter = "cert_not_after", certificateSerial = "cert_serial"
    }

    /// Agents whose certificate ends within this many days are flagged (page, metric, alert).
    public static let certificateWarningDays = 30

    /// An agent whose events are not getting through: some refused, or the oldest
    /// undelivered one older than an hour. The dashboard flags it.
    public var deliveryBacklog: Bool { spoolHeld > 0 || (spoolOldestSeconds ?? 0) > Self.backlogSeconds }
    public static let backlogSeconds = 3600

    /// "stale", "authorized" or "unauthorized": what the dashboard filters on.
    public var state: String { stale ? "stale" : (authorized ? "authorized" : "unauthorized") }
}

/// An event as stored: the agent's fields plus who sent it and when it arrived.
public struct StoredEvent: Sendable, Equatable, Codable {
    public var agentID: String
    public var group: String
    public var event: ReportedEvent
    public var receivedAt: Date
    enum CodingKeys: String, CodingKey { case agentID = "agent_id", group, event, receivedAt = "received_at" }
    public init(agentID: String, group: String, event: ReportedEvent, receivedAt: Date) {
        self.agentID = agentID
        self.group = group
        self.event = event
        self.receivedAt = receivedAt
    }
}

/// A bundle as pushed by an admin.
public struct StoredBundle: Sendable, Equatable, Codable {
    public var group: String
    public var version: Int64
    public var policySHA256: String
    public var bundle: SignedPolicyBundle
    public var pushedAt: Date
    public var pushedBy: String
    enum CodingKeys: String, CodingKey {
        case group, version, policySHA256 = "policy_sha256", bundle, pushedAt = "pushed_at", pushedBy = "pushed_by"
    }
    public init(group: String, version: Int64, policySHA256: String, bundle: SignedPolicyBundle, pushedAt: Date, pushedBy: String) {
        self.group = group
        self.version = version
        self.policySHA256 = policySHA256
        self.bundle = bundle
        self.pushedAt = pushedAt
        self.pushedBy = pushedBy
    }

    /// The HTTP entity tag agents send back in If-None-Match.
    public var etag: String { "\"\(group)-\(version)-\(policySHA256.prefix(16))\"" }
}

/// Filters for the dashboard and the admin API.
public struct AgentFilter: Sendable, Equatable {
    public var group: String?
    /// authorized, unauthorized, stale.
    public var state: String?
    /// A part of the agent id or host name (case-insensitive).
    public var search: String?
    /// The segment decided (the policy's segment name, or "none"): exact.
    public var segment: String?
    /// A page of the (group, agent id) order: skip `offset`, at most `limit` (nil: all).
    public var offset = 0
    public var limit: Int?
    public init(group: String? = nil, state: String? = nil, search: String? = nil, segment: String? = nil, offset: Int = 0, limit: Int? = nil) {
        self.group = group
        self.state = state
        self.search = search
        self.segment = segment
        self.offset = offset
        self.limit = limit
    }

    /// The LIKE pattern of `search` (% and _ escaped with \), lower-cased.
    var likePattern: String? {
        guard let s = search, !s.isEmpty else { return nil }
        let escaped = s.lowercased().replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%")
            .replacingOccurrences(of: "_", with: "\\_")
        return "%" + escaped + "%"
    }
}

public struct EventFilter: Sendable, Equatable {
    public var agentID: String?
    public var group: String?
    public var kind: String?
    public var limit: Int
    public init(agentID: String? = nil, group: String? = nil, kind: String? = nil, limit: Int = 100) {
        self.agentID = agentID
        self.group = group
        self.kind = kind
        self.limit = limit
    }
}

/// An event sent under an id the agent already used for another event (the batch is not
/// stored; the collector answers 409 and records an `event-id-conflict`).
public struct EventIDConflict: Error, CustomStringConvertible, Sendable {
    public let stored: ReportedEvent
    public let sent: ReportedEvent
    public var description: String {
        "event id \(sent.id) is stored already with other content (stored: seq \(stored.seq) \(stored.kind) at \(RFC3339.format(stored.time)); "
            + "sent: seq \(sent.seq) \(sent.kind) at \(RFC3339.format(sent.time)))"
    }
}

/// Events of a time range (the agents' event times, `from` included, `to` excluded), for the
/// evidence export.
public struct ExportRange: Sendable, Equatable {
    public var from: Date
    public var to: Date
    public var group: String?
    public var agentID: String?
    public init(from: Date, to: Date, group: String? = nil, agentID: String? = nil) {
        self.from = from
        self.to = to
        self.group = group
        self.agentID = agentID
    }
}

/// Where an export page ended: the next page starts after this event (keyset pagination, so
/// an export of any size reads the store in bounded pages, in a stable order).
public struct ExportCursor: Sendable, Equatable {
    public var timeMillis: Int64
    public var agentID: String
    public var eventID: String
    public init(after e: StoredEvent) {
        timeMillis = e.event.time.millis
        agentID = e.agentID
        eventID = e.event.id
    }
}

/// How many events of a batch were new.
public struct InsertResult: Sendable, Equatable {
    public var inserted: Int
    public var duplicates: Int
    public init(inserted: Int, duplicates: Int) {
        self.inserted = inserted
        self.duplicates = duplicates
    }
}

/// Counts for the metrics endpoint.
public struct StoreCounts: Sendable, Equatable {
    public var agents: Int
    public var authorized: Int
    public var unauthorized: Int
    public var stale: Int
    public var events: Int64
    /// Agents whose events are not getting through (`AgentRecord.deliveryBacklog`).
    public var backlogged: Int
    /// Events refused by the collector that agents hold (sum of their last heartbeats).
    public var heldEvents: Int64
    /// Agents whose certificate ends before the date `counts` was given (stale ones and ended
    /// certificates included: a device in a drawer is renewed too, or removed).
    public var certificatesExpiring: Int = 0
    public init(agents: Int = 0, authorized: Int = 0, unauthorized: Int = 0, stale: Int = 0, events: Int64 = 0, backlogged: Int = 0, heldEvents: Int64 = 0,
                certificatesExpiring: Int = 0) {
        self.certificatesExpiring = certificatesExpiring
        self.agents = agents
        self.authorized = authorized
        self.unauthorized = unauthorized
        self.stale = stale
        self.events = events
        self.backlogged = backlogged
        self.heldEvents = heldEvents
    }
}

/// Something an operator did on the collector (a policy push, refused or stored; an evidence
/// export), kept with who and when; the dashboard's "Operator actions" page lists them.
public struct AdminAction: Sendable, Equatable, Codable {
    public var time: Date
    /// The operator's name, or "admin-token".
    public var by: String
    /// `policy-push`, `policy-push-refused` or `export`.
    public var action: String
    /// The group pushed to, or what was exported.
    public var target: String
    /// The bundle version and policy digest, the refusal, the export's range.
    public var detail: String
    public init(time: Date, by: String, action: String, target: String, detail: String) {
        self.time = time
        self.by = by
        self.action = action
        self.target = target
        self.detail = String(detail.prefix(2000))
    }
}

/// A device certificate the collector refuses from now on (stolen, lost, retired device).
public struct Revocation: Sendable, Equatable, Codable {
    /// The certificate's serial number, lower-case hex.
    public var serial: String
    public var agentID: String
    public var reason: String
    public var time: Date
    /// The operator's name, or "admin-token".
    public var by: String
    enum CodingKeys: String, CodingKey { case serial, agentID = "agent_id", reason, time, by }
    public init(serial: String, agentID: String, reason: String, time: Date, by: String) {
        self.serial = serial
        self.agentID = agentID
        self.reason = String(reason.prefix(500))
        self.time = time
        self.by = by
    }
}

/// The outcome of a bundle push.
public enum PutBundleResult: Sendable, Equatable {
    case stored
    /// The group already has this version or a newer one.
    case notNewer(current: Int64)
}

/// The collector's persistent state, shared by every replica.
public protocol CollectorStore: EnrollmentStore {
    /// Creates or upgrades the schema (idempotent; safe when several replicas start at once).
    func migrate() async throws
    /// Upserts the agent's row; returns true when the agent was stale until now.
    func recordHeartbeat(_ heartbeat: Heartbeat, from agent: AgentIdentity, at time: Date) async throws -> Bool
    /// Several heartbeats in one transaction (group commit); one result per heartbeat, in order.
    func recordHeartbeats(_ heartbeats: [(Heartbeat, AgentIdentity)], at time: Date) async throws -> [Bool]
    /// Stores each event once per (agent, id): a resent event is a duplicate, not a new row.
    func insertEvents(_ events: [ReportedEvent], from agent: AgentIdentity, at time: Date) async throws -> InsertResult
    func agents(_ filter: AgentFilter) async throws -> [AgentRecord]
    /// How many agents match `filter` (its offset and limit aside).
    func agentCount(_ filter: AgentFilter) async throws -> Int
    /// One agent, nil when it never reported.
    func agent(id: String) async throws -> AgentRecord?
    /// Every group that has an agent, sorted.
    func groups() async throws -> [String]
    /// Every segment agents have reported, sorted (for the dashboard's decision filter).
    func segments() async throws -> [String]
    /// Records a revocation and its operator action in one transaction; false when that
    /// serial was revoked already (nothing changed).
    func revoke(_ revocation: Revocation, recording action: AdminAction) async throws -> Bool
    /// Every revocation, oldest first (a few per month: the collector keeps them in memory).
    func revocations() async throws -> [Revocation]
    /// Records an operator's action.
    func recordAction(_ action: AdminAction) async throws
    /// The latest actions, newest first.
    func actions(limit: Int) async throws -> [AdminAction]
    /// Newest first.
    func events(_ filter: EventFilter) async throws -> [StoredEvent]
    /// Marks agents silent for `intervals` of their own heartbeat interval as stale, records an
    /// `agent-stale` event for each (once, whichever replica gets there first) and returns them.
    func markStale(now: Date, intervals: Int) async throws -> [AgentRecord]
    /// Stores the bundle when its version is above the group's current one.
    /// Stores a bundle when it is newer than the group's; `action`, when given, is recorded in
    /// the same transaction (only when the bundle is stored).
    func putBundle(_ bundle: StoredBundle, recording action: AdminAction?) async throws -> PutBundleResult
    func bundle(group: String) async throws -> StoredBundle?
    /// Counts for /metrics; `certificatesExpiring` counts agents whose certificate ends before
    /// `expiringBefore`.
    func counts(expiringBefore: Date) async throws -> StoreCounts
    /// One page of an export: events in `range`, ordered by (time, agent, id), after `cursor`.
    func exportEvents(_ range: ExportRange, after cursor: ExportCursor?, limit: Int) async throws -> [StoredEvent]
    /// Deletes events the collector received before `date` (retention); returns how many.
    func pruneEvents(receivedBefore date: Date) async throws -> Int
    func close() async throws
}

/// Failures of a store, with the operation that failed.
public struct StoreError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

extension Date {
    var millis: Int64 { Int64((timeIntervalSince1970 * 1000).rounded()) }
    init(millis: Int64) { self.init(timeIntervalSince1970: Double(millis) / 1000) }
}

/// JSON columns (interfaces, details, bundles) are written and read with the report coding.
enum ColumnJSON {
    static func encode<T: Encodable>(_ v: T) throws -> String { String(decoding: try ReportCoding.encoder().encode(v), as: UTF8.self) }
    static func decode<T: Decodable>(_ t: T.Type, _ s: String) throws -> T { try ReportCoding.decoder().decode(T.self, from: Data(s.utf8)) }

    /// The interfaces column of every heartbeat, written by hand (sorted keys, nil fields left
    /// out, as ReportCoding.encoder writes them, except that `/` is not escaped) without
    /// JSONEncoder's generic machinery, which costs more than the rest of the row on a busy
    /// collector.
    static func encode(interfaces: [InterfaceSummary]) -> String {
        var out = "["
        for (n, f) in interfaces.enumerated() {
            if n > 0 { out += "," }
            out += "{"
            var first = true
            func field(_ key: String, _ value: String) {
                if !first { out += "," }
                first = false
                out += "\"\(key)\":\(value)"
            }
            if let b = f.bssid { field("bssid", quoted(b)) }
            if let d = f.deviceAuth { field("device_auth", quoted(d)) }
            field("name", quoted(f.name))
            if let s = f.ssid { field("ssid", quoted(s)) }
            field("up", f.up ? "true" : "false")
            field("wireless", f.wireless ? "true" : "false")
            out += "}"
        }
        return out + "]"
    }

    /// A JSON string literal: quote, backslash and control characters escaped.
    static func quoted(_ s: String) -> String {
        var out = "\""
        out.reserveCapacity(s.utf8.count + 2)
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    out += String(format: "\\u%04x", u.value)
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }
}

extension CollectorStore {
    public func putBundle(_ bundle: StoredBundle) async throws -> PutBundleResult { try await putBundle(bundle, recording: nil) }

    /// Counts, with certificates ending within `AgentRecord.certificateWarningDays` as expiring.
    public func counts() async throws -> StoreCounts {
        try await counts(expiringBefore: Date().addingTimeInterval(Double(AgentRecord.certificateWarningDays) * 86_400))
    }

    public func recordHeartbeat(_ heartbeat: Heartbeat, from agent: AgentIdentity, at time: Date) async throws -> Bool {
        try await recordHeartbeats([(heartbeat, agent)], at: time)[0]
    }
}

/// A batch of heartbeats as rows to upsert: one row per agent (its latest heartbeat, with how
/// many heartbeats of the batch it stands for: PostgreSQL cannot upsert one row twice in a
/// statement), and the way back to one result per heartbeat.
struct HeartbeatRows {
    /// (latest heartbeat, agent, interfaces as JSON, heartbeats of this agent in the batch).
    var latest: [(Heartbeat, AgentIdentity, String, Int)] = []
    /// For each heartbeat of the batch, in order: its agent id, and whether it is its agent's latest.
    var order: [(String, Bool)] = []

    init(_ heartbeats: [(Heartbeat, AgentIdentity)]) {
        var index: [String: Int] = [:]
        var lastPosition: [String: Int] = [:]
        for (position, (hb, agent)) in heartbeats.enumerated() {
            lastPosition[agent.agentID] = position
            if let i = index[agent.agentID] {
                latest[i] = (hb, agent, latest[i].2, latest[i].3 + 1)
            } else {
                index[agent.agentID] = latest.count
                latest.append((hb, agent, "", 1))
            }
        }
        for i in latest.indices { latest[i].2 = ColumnJSON.encode(interfaces: latest[i].0.interfaces) }
        order = heartbeats.enumerated().map { position, item in (item.1.agentID, lastPosition[item.1.agentID] == position) }
    }

    /// One result per heartbeat: an agent's recovery is reported on its latest heartbeat.
    func results(recovered: Set<String>) -> [Bool] {
        order.map { id, isLatest in isLatest && recovered.contains(id) }
    }
}

/// The event the collector records itself when an agent goes stale.
func staleEvent(for agent: AgentRecord, now: Date, intervals: Int) -> ReportedEvent {
    ReportedEvent(
        id: "stale-\(agent.lastSeen.millis)", seq: 0, time: now, kind: "agent-stale", severity: "warning",
        reason: "no heartbeat for \(Int(now.timeIntervalSince(agent.lastSeen))) s (\(intervals) intervals of \(min(agent.intervalSeconds, ReportRule.maxHeartbeatSeconds)) s)",
        details: ["last_seen": agent.lastSeen.formatted(.iso8601), "source": "collector"])
}

/// The event the collector records when a stale agent heartbeats again (SQLite writes it
/// from a trigger, PostgreSQL from the heartbeat statement: both from these constants).
enum RecoveredEvent {
    static let idPrefix = "recovered-"
    static let kind = "agent-recovered"
    static let severity = "info"
    static let reason = "heartbeats again after being stale"
    static let detailsJSON = #"{"source":"collector"}"#
}

