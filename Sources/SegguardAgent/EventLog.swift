// The agent's numbered log of enforcement events (the last `capacity`, for why-denied), and
// how an event is told to the control socket and to the collector.

import FoundationEssentials
import SegguardEssentials
import Glibc
import SegguardEnforce
import SegguardWire

/// The last enforcement events, numbered from 1 for the life of the agent.
struct EventLog {
    let capacity: Int
    private(set) var events: [EnforcementEvent] = []
    private var nextID: UInt64 = 1

    init(capacity: Int) { self.capacity = max(1, capacity) }

    mutating func append(_ kind: EnforcementEvent.Kind, profile: String?, sessions: [SessionInfo], reason: String, latencyMs: Double?,
                         uid: UInt32?, exec: EnforcementEvent.ExecDetails?, repeated: Int? = nil, time: Date = Date()) -> EnforcementEvent {
        let e = EnforcementEvent(id: nextID, time: time, kind: kind, profile: profile, sessions: sessions, reason: reason, latencyMs: latencyMs,
                                 uid: uid, exec: exec, repeated: repeated)
        nextID += 1
        events.append(e)
        if events.count > capacity { events.removeFirst(events.count - capacity) }
        return e
    }
}

extension SessionEntry {
    init(_ s: SessionInfo) {
        self.init(id: s.id, profile: s.profile, pid: s.pid, uid: s.uid, startedAt: s.startedAt, cgroup: s.cgroup, pids: s.pids)
    }
}

extension EventEntry {
    init(_ e: EnforcementEvent) {
        self.init(id: e.id, time: e.time, kind: e.kind.rawValue, profile: e.profile, sessions: e.sessions.map(SessionEntry.init), reason: e.reason,
                  latencyMs: e.latencyMs, uid: e.uid,
                  exec: e.exec.map { Exec(path: $0.path, sha256: $0.sha256, pid: $0.pid, parentPid: $0.parentPid, parentExecutable: $0.parentExecutable) })
    }
}

extension EnforcementEvent {
    /// The event as the collector stores it: severity and string details.
    var report: (severity: String, details: [String: String]) {
        var details: [String: String] = [:]
        if let p = profile { details["profile"] = p }
        if let u = uid { details["uid"] = "\(u)" }
        if let l = latencyMs { details["latency_ms"] = format("%.3f", l) }
        if let r = repeated { details["repeated"] = "\(r)" }
        if !sessions.isEmpty { details["sessions"] = sessions.map { "\($0.id)(pid \($0.pid))" }.joined(separator: ",") }
        if let x = exec {
            details["path"] = x.path
            details["pid"] = "\(x.pid)"
            if let h = x.sha256 { details["sha256"] = h }
            if let p = x.parentPid { details["ppid"] = "\(p)" }
            if let p = x.parentExecutable { details["parent"] = p }
        }
        let severity = kind == .bindingFailed || kind == .bindingTampered ? "critical" : (isDenial ? "warning" : "info")
        return (severity, details)
    }
}
