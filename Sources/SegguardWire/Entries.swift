// What the control socket carries about sessions, enforcement events and launches: plain
// Codable entries mapped from the agent's records (SegguardEnforce), so that segguardctl and
// segguard-launch link none of the daemon's modules. Kinds travel as strings: a newer daemon's
// new kind does not make an older client fail to read the reply.

import FoundationEssentials
import Glibc
import SegguardPolicy

/// A tracked VDI session, as `segguardctl sessions` shows it.
public struct SessionEntry: Codable, Sendable, Equatable {
    public var id: UInt64, profile: String, pid: Int32, uid: UInt32
    public var startedAt: Date, cgroup: String
    /// Processes in the session's cgroup when the reply was made.
    public var pids: [Int32]

    public init(id: UInt64, profile: String, pid: Int32, uid: UInt32, startedAt: Date, cgroup: String, pids: [Int32]) {
        (self.id, self.profile, self.pid, self.uid) = (id, profile, pid, uid)
        (self.startedAt, self.cgroup, self.pids) = (startedAt, cgroup, pids)
    }
}

/// An enforcement event, as `segguardctl why-denied` shows it.
public struct EventEntry: Codable, Sendable, Equatable {
    /// The exec of a capture event.
    public struct Exec: Codable, Sendable, Equatable {
        public var path: String, sha256: String?, pid: Int32
        public var parentPid: Int32?, parentExecutable: String?
        public init(path: String, sha256: String?, pid: Int32, parentPid: Int32?, parentExecutable: String?) {
            (self.path, self.sha256, self.pid, self.parentPid, self.parentExecutable) = (path, sha256, pid, parentPid, parentExecutable)
        }
    }

    public var id: UInt64, time: Date
    /// `launch-refused`, `sessions-ended`, `exec-denied`, … (see the admin guide).
    public var kind: String
    public var profile: String?, sessions: [SessionEntry], reason: String
    /// From the network event to the action, ms.
    public var latencyMs: Double?
    public var uid: UInt32?, exec: Exec?

    public init(id: UInt64, time: Date, kind: String, profile: String?, sessions: [SessionEntry], reason: String, latencyMs: Double?, uid: UInt32?, exec: Exec?) {
        (self.id, self.time, self.kind, self.profile, self.sessions) = (id, time, kind, profile, sessions)
        (self.reason, self.latencyMs, self.uid, self.exec) = (reason, latencyMs, uid, exec)
    }
}

/// The daemon's answer to a launch request.
public struct LaunchReply: Sendable, Equatable, Codable {
    public var allowed: Bool
    public var reason: String
    public var profile: String
    public var sessionID: UInt64?
    /// The client command to exec (the profile's, or the launcher's after `--`) with the
    /// profile's enforced arguments appended.
    public var command: [String]
    /// Config files the launcher must rewrite before exec.
    public var configFiles: [ConfigFileEdit]
    /// A refusal in the user's terms (the launcher words it in the user's language); nil from
    /// an older segguardd.
    public var notice: UserNotice?
    /// The policy's help desk, shown under the message.
    public var helpdesk: HelpDesk?

    public init(allowed: Bool, reason: String, profile: String, sessionID: UInt64?, command: [String], configFiles: [ConfigFileEdit],
                notice: UserNotice? = nil, helpdesk: HelpDesk? = nil) {
        self.allowed = allowed
        self.reason = reason
        self.profile = profile
        self.sessionID = sessionID
        self.command = command
        self.configFiles = configFiles
        self.notice = notice
        self.helpdesk = helpdesk
    }
}
