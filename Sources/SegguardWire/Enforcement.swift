// Records of what the enforcement did, shared by the daemon (which makes them) and
// segguardctl (which prints them): sessions, terminations, refusals.

import Foundation
import SegguardPolicy

/// A tracked session, as status output shows it.
public struct SessionInfo: Sendable, Equatable, Codable {
    public var id: UInt64
    public var profile: String
    /// The launcher's pid, which became the client by exec.
    public var pid: Int32
    public var uid: UInt32
    public var startedAt: Date
    public var cgroup: String
    /// Processes in the session's cgroup when last looked at.
    public var pids: [Int32]

    public init(id: UInt64, profile: String, pid: Int32, uid: UInt32, startedAt: Date, cgroup: String, pids: [Int32]) {
        self.id = id
        self.profile = profile
        self.pid = pid
        self.uid = uid
        self.startedAt = startedAt
        self.cgroup = cgroup
        self.pids = pids
    }
}

/// What ending one session did.
public struct TerminationResult: Sendable, Equatable, Codable {
    public var session: SessionInfo
    /// SIGKILL was needed (SIGTERM did not end every process within the timeout).
    public var killed: Bool
    /// Every process of the session is gone.
    public var reaped: Bool
    /// Monotonic nanoseconds when the cgroup was seen empty (0 if never).
    public var reapedAtNanos: UInt64

    public init(session: SessionInfo, killed: Bool, reaped: Bool, reapedAtNanos: UInt64) {
        self.session = session
        self.killed = killed
        self.reaped = reaped
        self.reapedAtNanos = reapedAtNanos
    }
}

/// Who is on the other end of a control connection, as the kernel reports it (SO_PEERCRED,
/// SO_PEERGROUPS, SO_PEERPIDFD); the daemon trusts nothing a client says about itself.
public struct PeerCredentials: Sendable, Equatable {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32
    public var groups: [UInt32]
    /// SO_PEERPIDFD of the connecting process (-1 where the kernel has none). Owned by the
    /// control server: valid only while the request is handled.
    public var pidfd: Int32

    public init(pid: Int32, uid: UInt32, gid: UInt32, groups: [UInt32], pidfd: Int32 = -1) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
        self.groups = groups
        self.pidfd = pidfd
    }
}

/// One thing the enforcement did or (in audit mode) would have done.
public struct EnforcementEvent: Sendable, Equatable, Codable {
    /// What happened.
    public enum Kind: String, Sendable, Codable {
        case launchAllowed = "launch-allowed"
        case launchRefused = "launch-refused"
        /// Audit mode: the launch would have been refused.
        case launchWouldBeRefused = "launch-would-be-refused"
        case sessionsEnded = "sessions-ended"
        /// Audit mode: the sessions would have been ended.
        case sessionsWouldBeEnded = "sessions-would-be-ended"
        case bindingApplied = "binding-applied"
        case bindingFailed = "binding-failed"
        /// Capture blocking denied an exec (fanotify).
        case execDenied = "exec-denied"
        /// Audit mode: the exec would have been denied.
        case execWouldBeDenied = "exec-would-be-denied"
        /// An exec answered by capture.fail_mode because no decision came in time.
        case execFailMode = "exec-fail-mode"
        /// A running capture tool was ended (process watcher).
        case processKilled = "process-killed"
        /// Audit mode: the running capture tool would have been ended.
        case processWouldBeKilled = "process-would-be-killed"
    }

    /// The exec a capture event is about.
    public struct ExecDetails: Sendable, Equatable, Codable {
        public var path: String
        public var sha256: String?
        public var pid: Int32
        public var parentPid: Int32?
        /// The parent's executable (/proc/PPID/exe).
        public var parentExecutable: String?
        public init(path: String, sha256: String? = nil, pid: Int32, parentPid: Int32? = nil, parentExecutable: String? = nil) {
            self.path = path
            self.sha256 = sha256
            self.pid = pid
            self.parentPid = parentPid
            self.parentExecutable = parentExecutable
        }
    }

    public var id: UInt64
    public var time: Date
    public var kind: Kind
    public var profile: String?
    public var sessions: [SessionInfo]
    /// The decision's reason (or the refusal's).
    public var reason: String
    /// From the netlink event to the action (nftables replaced, processes reaped), ms.
    public var latencyMs: Double?
    public var uid: UInt32?
    /// Capture events: the exec.
    public var exec: ExecDetails?

    public init(id: UInt64, time: Date, kind: Kind, profile: String? = nil, sessions: [SessionInfo] = [], reason: String,
                latencyMs: Double? = nil, uid: UInt32? = nil, exec: ExecDetails? = nil) {
        self.exec = exec
        self.id = id
        self.time = time
        self.kind = kind
        self.profile = profile
        self.sessions = sessions
        self.reason = reason
        self.latencyMs = latencyMs
        self.uid = uid
    }

    /// Refusals and kills (and their audit twins): what `segguardctl why-denied` lists.
    public var isDenial: Bool {
        switch kind {
        case .launchRefused, .launchWouldBeRefused, .sessionsEnded, .sessionsWouldBeEnded, .bindingFailed,
             .execDenied, .execWouldBeDenied, .processKilled, .processWouldBeKilled: true
        default: false
        }
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

    public init(allowed: Bool, reason: String, profile: String, sessionID: UInt64?, command: [String], configFiles: [ConfigFileEdit]) {
        self.allowed = allowed
        self.reason = reason
        self.profile = profile
        self.sessionID = sessionID
        self.command = command
        self.configFiles = configFiles
    }
}

/// Keys to set in one INI-style client configuration file: the policy's own type.
public typealias ConfigFileEdit = LaunchProfile.ConfigFile

extension LaunchProfile.ConfigFile {
    /// The text with each key of `set` given its value inside `section` (added if missing).
    public func rewrite(_ text: String) -> String {
        // Any line ending (LF, CRLF — one Character in Swift) splits; the result is written with LF.
        var lines = text.isEmpty ? [] : text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).map(String.init)
        if lines.last == "" { lines.removeLast() }
        var remaining = set
        var current: String? = nil
        var inTarget = section == nil
        var lastTargetLine = section == nil ? -1 : nil as Int?
        var drop: [Int] = []
        for i in lines.indices {
            let t = lines[i].trimmingCharacters(in: .whitespacesAndNewlines)
            if t.hasPrefix("[") && t.hasSuffix("]") {
                current = String(t.dropFirst().dropLast())
                inTarget = current == section
                if inTarget { lastTargetLine = i }
                continue
            }
            guard inTarget, let eq = t.firstIndex(of: "=") else { if inTarget { lastTargetLine = i }; continue }
            let key = t[..<eq].trimmingCharacters(in: .whitespaces)
            if let v = remaining.removeValue(forKey: key) {
                lines[i] = "\(key)=\(v)"
            } else if set[key] != nil {
                // A later duplicate would win in last-wins parsers: drop it.
                drop.append(i)
            }
            lastTargetLine = i
        }
        for i in drop.reversed() {
            lines.remove(at: i)
            if let l = lastTargetLine, l >= i { lastTargetLine = l - 1 }
        }
        let additions = remaining.keys.sorted().map { "\($0)=\(remaining[$0]!)" }
        if !additions.isEmpty {
            if let at = lastTargetLine {
                lines.insert(contentsOf: additions, at: at + 1)
            } else if let section {
                lines += ["[\(section)]"] + additions
            } else {
                lines = additions + lines
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
