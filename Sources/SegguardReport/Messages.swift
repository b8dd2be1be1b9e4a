// What an agent sends to the collector and what it gets back. JSON with snake_case keys
// (explicit CodingKeys), dates as RFC 3339 with fractional seconds. Pure: the agent's reporter,
// the collector and the tests share these types.

import FoundationEssentials
import SegguardEssentials
import Glibc

/// The version of the agent <-> collector API (the /api/v1 prefix).
public let reportAPIVersion = 1

/// The wire revision within /api/v1, announced by the collector in the `Segguard-Wire`
/// response header of every agent call. 1 (no header): the first collectors, whose strict
/// reader refuses any field it does not know. 2: messages may carry an `ext` object (members a
/// reader does not know are ignored, never refused) and the heartbeat's `spool` carries
/// `held` and `oldest_s`. An agent sends a revision's fields only to a collector that
/// announced it, so agents may be upgraded before or after their collector.
public enum ReportWire {
    public static let version = 2
    public static let header = "Segguard-Wire"
}

/// A heartbeat: the agent's current state, sent every `interval_s` (with jitter).
public struct Heartbeat: Codable, StrictDecodable, Sendable, Equatable {
    /// Optional: when present it must be the id in the agent's certificate (identity comes
    /// from the certificate, never from the body).
    public var agentID: String?
    public var hostname: String
    public var agentVersion: String
    public var policy: PolicySummary
    public var decision: DecisionSummary
    public var interfaces: [InterfaceSummary]
    /// The heartbeat interval the agent uses now (stale after three of them).
    public var intervalSeconds: Int
    public var spool: SpoolSummary
    public var sentAt: Date
    /// Wire 2: optional members a newer agent adds; a collector ignores those it does not know.
    public var ext: [String: JSONValue]?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case agentID = "agent_id", hostname, agentVersion = "agent_version", policy, decision, interfaces
        case intervalSeconds = "interval_s", spool, sentAt = "sent_at", ext
    }
    public init(reading r: inout StrictJSONReader) throws(ReportDecodingError) {
        var agentID: String?, hostname = "", agentVersion = "", policy: PolicySummary?, decision: DecisionSummary?
        var interfaces: [InterfaceSummary] = [], intervalSeconds = 0, spool: SpoolSummary?, sentAt = Date(), ext: [String: JSONValue]?
        let seen = try r.object { (r: inout StrictJSONReader, key: String) throws(ReportDecodingError) in
            switch key {
            case "agent_id": agentID = try r.optionalString()
            case "hostname": hostname = try r.string()
            case "agent_version": agentVersion = try r.string()
            case "policy": policy = try PolicySummary(reading: &r)
            case "decision": decision = try DecisionSummary(reading: &r)
            case "interfaces": interfaces = try r.array { (r: inout StrictJSONReader) throws(ReportDecodingError) in try InterfaceSummary(reading: &r) }
            case "interval_s": intervalSeconds = try r.int()
            case "spool": spool = try SpoolSummary(reading: &r)
            case "sent_at": sentAt = try r.date()
            case "ext": ext = try r.extensions()
            default: throw r.unknown()
            }
        }
        try r.require(["hostname", "agent_version", "policy", "decision", "interfaces", "interval_s", "spool", "sent_at"], in: seen)
        self.init(agentID: agentID, hostname: hostname, agentVersion: agentVersion, policy: policy!, decision: decision!,
                  interfaces: interfaces, intervalSeconds: intervalSeconds, spool: spool!, sentAt: sentAt, ext: ext)
    }

    /// The heartbeat as a collector of wire revision `wire` reads it: fields of later
    /// revisions removed (a revision-1 collector refuses any field it does not know).
    public func forWire(_ wire: Int) -> Heartbeat {
        guard wire < 2 else { return self }
        var h = self
        h.ext = nil
        h.spool.held = nil
        h.spool.oldestSeconds = nil
        return h
    }


    public init(agentID: String? = nil, hostname: String, agentVersion: String, policy: PolicySummary, decision: DecisionSummary,
                interfaces: [InterfaceSummary], intervalSeconds: Int, spool: SpoolSummary, sentAt: Date, ext: [String: JSONValue]? = nil) {
        self.agentID = agentID
        self.hostname = hostname
        self.agentVersion = agentVersion
        self.policy = policy
        self.decision = decision
        self.interfaces = interfaces
        self.intervalSeconds = intervalSeconds
        self.spool = spool
        self.sentAt = sentAt
        self.ext = ext
    }

    /// A spool holds at most this many events (the policy's largest `spool_max_events` is far below).
    public static let maxSpoolEvents = 100_000_000
    /// Ten years.
    public static let maxOldestSeconds = 315_360_000

    /// Field limits the collector enforces (and the agent respects).
    public func validate() throws(ReportValidationError) {
        try ReportValidationError.check(hostname, "hostname", max: 255)
        try ReportValidationError.check(agentVersion, "agent_version", max: 64)
        try ReportValidationError.check(policy.name, "policy.name", max: 256)
        try ReportValidationError.check(policy.sha256, "policy.sha256", max: 64)
        try ReportValidationError.check(decision.segment, "decision.segment", max: 64)
        try ReportValidationError.check(decision.reason, "decision.reason", max: 4096, allowEmpty: true)
        guard (1...86_400).contains(intervalSeconds) else { throw .init("interval_s: \(intervalSeconds) is outside 1...86400") }
        if let v = policy.bundleVersion, v < 0 { throw .init("policy.bundle_version: \(v) is negative") }
        guard interfaces.count <= 64 else { throw .init("interfaces: \(interfaces.count) entries, at most 64") }
        for (i, f) in interfaces.enumerated() { try ReportValidationError.check(f.name, "interfaces[\(i)].name", max: 15) }
        guard (0...Self.maxSpoolEvents).contains(spool.pending) else { throw .init("spool.pending: \(spool.pending) is outside 0...\(Self.maxSpoolEvents)") }
        guard spool.dropped >= 0 else { throw .init("spool.dropped: \(spool.dropped) is negative") }
        if let h = spool.held, !(0...spool.pending).contains(h) { throw .init("spool.held: \(h) is outside 0...pending (\(spool.pending))") }
        if let o = spool.oldestSeconds, !(0...Self.maxOldestSeconds).contains(o) { throw .init("spool.oldest_s: \(o) is outside 0...\(Self.maxOldestSeconds)") }
    }
}

/// Which policy the agent runs.
public struct PolicySummary: Codable, StrictDecodable, Sendable, Equatable {
    public var name: String
    /// SHA-256 (hex) of the policy file's bytes.
    public var sha256: String
    /// The signed bundle's version, when the policy came from one.
    public var bundleVersion: Int64?
    enum CodingKeys: String, CodingKey, CaseIterable { case name, sha256, bundleVersion = "bundle_version" }
    public init(reading r: inout StrictJSONReader) throws(ReportDecodingError) {
        var name = "", sha256 = "", bundleVersion: Int64?
        let seen = try r.object { (r: inout StrictJSONReader, key: String) throws(ReportDecodingError) in
            switch key {
            case "name": name = try r.string()
            case "sha256": sha256 = try r.string()
            case "bundle_version": bundleVersion = try r.optionalInt64()
            default: throw r.unknown()
            }
        }
        try r.require(["name", "sha256"], in: seen)
        self.init(name: name, sha256: sha256, bundleVersion: bundleVersion)
    }
    public init(name: String, sha256: String, bundleVersion: Int64? = nil) {
        self.name = name
        self.sha256 = sha256
        self.bundleVersion = bundleVersion
    }
}

/// The segment decision in force.
public struct DecisionSummary: Codable, StrictDecodable, Sendable, Equatable {
    /// my-number / lgwan / ... or "unauthorized".
    public var segment: String
    public var authorized: Bool
    public var reason: String
    public var interfaces: [String]
    public var since: Date
    enum CodingKeys: String, CodingKey, CaseIterable { case segment, authorized, reason, interfaces, since }
    public init(reading r: inout StrictJSONReader) throws(ReportDecodingError) {
        var segment = "", authorized = false, reason = "", interfaces: [String] = [], since = Date()
        let seen = try r.object { (r: inout StrictJSONReader, key: String) throws(ReportDecodingError) in
            switch key {
            case "segment": segment = try r.string()
            case "authorized": authorized = try r.bool()
            case "reason": reason = try r.string()
            case "interfaces": interfaces = try r.array { (r: inout StrictJSONReader) throws(ReportDecodingError) in try r.string() }
            case "since": since = try r.date()
            default: throw r.unknown()
            }
        }
        try r.require(["segment", "authorized", "reason", "interfaces", "since"], in: seen)
        self.init(segment: segment, authorized: authorized, reason: reason, interfaces: interfaces, since: since)
    }
    public init(segment: String, authorized: Bool, reason: String, interfaces: [String], since: Date) {
        self.segment = segment
        self.authorized = authorized
        self.reason = reason
        self.interfaces = interfaces
        self.since = since
    }
}

/// One network interface as the agent sees it.
public struct InterfaceSummary: Codable, StrictDecodable, Sendable, Equatable {
    public var name: String
    public var wireless: Bool
    public var up: Bool
    public var ssid: String?
    public var bssid: String?
    /// "authorized (EAP-TLS)", "unauthorized", nil when no 802.1X.
    public var deviceAuth: String?
    enum CodingKeys: String, CodingKey, CaseIterable { case name, wireless, up, ssid, bssid, deviceAuth = "device_auth" }
    public init(reading r: inout StrictJSONReader) throws(ReportDecodingError) {
        var name = "", wireless = false, up = false, ssid: String?, bssid: String?, deviceAuth: String?
        let seen = try r.object { (r: inout StrictJSONReader, key: String) throws(ReportDecodingError) in
            switch key {
            case "name": name = try r.string()
            case "wireless": wireless = try r.bool()
            case "up": up = try r.bool()
            case "ssid": ssid = try r.optionalString()
            case "bssid": bssid = try r.optionalString()
            case "device_auth": deviceAuth = try r.optionalString()
            default: throw r.unknown()
            }
        }
        try r.require(["name", "wireless", "up"], in: seen)
        self.init(name: name, wireless: wireless, up: up, ssid: ssid, bssid: bssid, deviceAuth: deviceAuth)
    }
    public init(name: String, wireless: Bool, up: Bool, ssid: String? = nil, bssid: String? = nil, deviceAuth: String? = nil) {
        self.name = name
        self.wireless = wireless
        self.up = up
        self.ssid = ssid
        self.bssid = bssid
        self.deviceAuth = deviceAuth
    }
}

/// The agent's delivery backlog.
public struct SpoolSummary: Codable, StrictDecodable, Sendable, Equatable {
    /// Events written but not yet acknowledged by the collector.
    public var pending: Int
    /// Events the overflow policy dropped since the spool was created.
    public var dropped: Int
    /// Wire 2: events the collector refused (a 4xx), kept and retried with a long backoff
    /// (included in `pending`).
    public var held: Int?
    /// Wire 2: age in seconds of the oldest undelivered event (nil: none).
    public var oldestSeconds: Int?
    enum CodingKeys: String, CodingKey, CaseIterable { case pending, dropped, held, oldestSeconds = "oldest_s" }
    public init(reading r: inout StrictJSONReader) throws(ReportDecodingError) {
        var pending = 0, dropped = 0, held: Int?, oldest: Int?
        let seen = try r.object { (r: inout StrictJSONReader, key: String) throws(ReportDecodingError) in
            switch key {
            case "pending": pending = try r.int()
            case "dropped": dropped = try r.int()
            case "held": held = try r.null() ? nil : r.int()
            case "oldest_s": oldest = try r.null() ? nil : r.int()
            default: throw r.unknown()
            }
        }
        try r.require(["pending", "dropped"], in: seen)
        self.init(pending: pending, dropped: dropped, held: held, oldestSeconds: oldest)
    }
    public init(pending: Int, dropped: Int, held: Int? = nil, oldestSeconds: Int? = nil) {
        self.pending = pending
        self.dropped = dropped
        self.held = held
        self.oldestSeconds = oldestSeconds
    }
}

/// One event, as the agent spooled it. `id` is unique (a UUID), `seq` counts the agent's
/// events from 1 with no gap: the collector stores each id once, so a resend is harmless.
public struct ReportedEvent: Codable, StrictDecodable, Sendable, Equatable {
    public var id: String
    public var seq: Int64
    public var time: Date
    /// decision-changed, launch-refused, sessions-ended, exec-denied, process-killed,
    /// policy-loaded, policy-refused, bundle-applied, bundle-refused, agent-started,
    /// agent-restarted-uncleanly, spool-overflow, ...
    public var kind: String
    /// info, warning or critical.
    public var severity: String
    public var reason: String
    public var details: [String: String]
    /// Wire 2: optional members a newer agent adds; a collector ignores those it does not know.
    public var ext: [String: JSONValue]?

    enum CodingKeys: String, CodingKey, CaseIterable { case id, seq, time, kind, severity, reason, details, ext }
    public init(reading r: inout StrictJSONReader) throws(ReportDecodingError) {
        var id = "", seq: Int64 = 0, time = Date(), kind = "", severity = "", reason = "", details: [String: String] = [:]
        var ext: [String: JSONValue]?
        let seen = try r.object { (r: inout StrictJSONReader, key: String) throws(ReportDecodingError) in
            switch key {
            case "id": id = try r.string()
            case "seq": seq = try r.int64()
            case "time": time = try r.date()
            case "kind": kind = try r.string()
            case "severity": severity = try r.string()
            case "reason": reason = try r.string()
            case "details": details = try r.stringMap()
            case "ext": ext = try r.extensions()
            default: throw r.unknown()
            }
        }
        try r.require(["id", "seq", "time", "kind", "severity", "reason", "details"], in: seen)
        self.init(id: id, seq: seq, time: time, kind: kind, severity: severity, reason: reason, details: details, ext: ext)
    }

    /// Whether `other` is this event (same id) with the same content: what the collector
    /// compares when an id arrives again (times to the millisecond, as stored; `ext` aside).
    public func sameContent(as other: ReportedEvent) -> Bool {
        id == other.id && seq == other.seq && kind == other.kind && severity == other.severity && reason == other.reason
            && details == other.details && (time.timeIntervalSince1970 * 1000).rounded() == (other.time.timeIntervalSince1970 * 1000).rounded()
    }

    public init(id: String, seq: Int64, time: Date, kind: String, severity: String, reason: String, details: [String: String] = [:],
                ext: [String: JSONValue]? = nil) {
        self.id = id
        self.seq = seq
        self.time = time
        self.kind = kind
        self.severity = severity
        self.reason = reason
        self.details = details
        self.ext = ext
    }

    public static let severities: Set<String> = ["info", "warning", "critical"]
    /// Ids of the events the collector records itself (agent-stale, agent-recovered).
    public static let reservedIDPrefixes = ["stale-", "recovered-", "interval-", "conflict-"]

    public func validate(at path: String) throws(ReportValidationError) {
        try ReportValidationError.check(id, "\(path).id", max: 64)
        if let prefix = Self.reservedIDPrefixes.first(where: { id.hasPrefix($0) }) {
            throw .init("\(path).id: \"\(id)\" starts with \"\(prefix)\", which the collector reserves for its own events")
        }
        try ReportValidationError.check(kind, "\(path).kind", max: 64)
        try ReportValidationError.check(reason, "\(path).reason", max: 4096, allowEmpty: true)
        guard seq >= 1 else { throw .init("\(path).seq: \(seq) (sequence numbers start at 1)") }
        guard Self.severities.contains(severity) else { throw .init("\(path).severity: \"\(severity)\" is not one of info, warning, critical") }
        guard details.count <= 32 else { throw .init("\(path).details: \(details.count) entries, at most 32") }
        for (k, v) in details {
            try ReportValidationError.check(k, "\(path).details key", max: 64)
            try ReportValidationError.check(v, "\(path).details.\(k)", max: 4096, allowEmpty: true)
        }
    }
}

/// A batch of spooled events, oldest first.
public struct EventBatch: Codable, StrictDecodable, Sendable, Equatable {
    /// Optional, as in the heartbeat: must match the certificate.
    public var agentID: String?
    public var events: [ReportedEvent]
    /// Wire 2: optional members a newer agent adds; a collector ignores those it does not know.
    public var ext: [String: JSONValue]?
    enum CodingKeys: String, CodingKey, CaseIterable { case agentID = "agent_id", events, ext }
    public init(reading r: inout StrictJSONReader) throws(ReportDecodingError) {
        var agentID: String?, events: [ReportedEvent] = [], ext: [String: JSONValue]?
        let seen = try r.object { (r: inout StrictJSONReader, key: String) throws(ReportDecodingError) in
            switch key {
            case "agent_id": agentID = try r.optionalString()
            case "events": events = try r.array { (r: inout StrictJSONReader) throws(ReportDecodingError) in try ReportedEvent(reading: &r) }
            case "ext": ext = try r.extensions()
            default: throw r.unknown()
            }
        }
        try r.require(["events"], in: seen)
        self.init(agentID: agentID, events: events, ext: ext)
    }
    public init(agentID: String? = nil, events: [ReportedEvent], ext: [String: JSONValue]? = nil) {
        self.agentID = agentID
        self.events = events
        self.ext = ext
    }

    /// The batch as a collector of wire revision `wire` reads it.
    public func forWire(_ wire: Int) -> EventBatch {
        guard wire < 2 else { return self }
        return EventBatch(agentID: agentID, events: events.map { var e = $0; e.ext = nil; return e })
    }

    public static let maxEvents = 1000

    public func validate() throws(ReportValidationError) {
        guard !events.isEmpty else { throw .init("events: empty batch") }
        guard events.count <= Self.maxEvents else { throw .init("events: \(events.count) in one batch, at most \(Self.maxEvents)") }
        for (i, e) in events.enumerated() { try e.validate(at: "events[\(i)]") }
    }
}

/// The collector's answer to a batch: every id in `stored` is in the store now (just written
/// or written by an earlier attempt); the agent may drop them from its spool.
public struct BatchAck: Codable, Sendable, Equatable {
    public var stored: [String]
    public var inserted: Int
    public var duplicates: Int
    public init(stored: [String], inserted: Int, duplicates: Int) {
        self.stored = stored
        self.inserted = inserted
        self.duplicates = duplicates
    }
}

/// An error reply's body.
public struct ErrorReply: Codable, Sendable, Equatable {
    public var error: String
    public init(error: String) { self.error = error }
}

/// A field outside its limits, named by its path.
public struct ReportValidationError: Error, CustomStringConvertible, Equatable {
    public var description: String
    public init(_ d: String) { description = d }

    /// `path` is only built when the check fails (the collector validates every heartbeat).
    static func check(_ s: String, _ path: @autoclosure () -> String, max: Int, allowEmpty: Bool = false) throws(ReportValidationError) {
        if !allowEmpty && s.isEmpty { throw .init("\(path()): empty") }
        if s.utf8.count > max { throw .init("\(path()): \(s.utf8.count) bytes, at most \(max)") }
    }
}

/// The encoders and the strict decoder both sides use.
public enum ReportCoding {
    public static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .custom { date, enc in
            var c = enc.singleValueContainer()
            try c.encode(RFC3339.format(date))
        }
        e.outputFormatting = [.sortedKeys]
        return e
    }

    public static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .custom { dec in
            let c = try dec.singleValueContainer()
            let s = try c.decode(String.self)
            if let date = RFC3339.parse(s) { return date }
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "\"\(s)\" is not an RFC 3339 date (2026-11-26T05:00:00.000Z)")
        }
        return d
    }

    /// Reads `T` with the strict reader: refuses fields `T` does not know (a typo must not be
    /// silently dropped), fields given twice, wrong types. Errors name the field's path:
    /// `events[2].severity: expected a string`.
    public static func decodeStrict<T: StrictDecodable>(_ type: T.Type, from data: Data) throws(ReportDecodingError) -> T {
        try StrictJSONReader.read(T.self, from: data)
    }
}

/// A body that is not the expected JSON, with the path of the first problem.
public struct ReportDecodingError: Error, CustomStringConvertible, Equatable {
    public var description: String
    public init(_ d: String) { description = d }
}
