// What the enforcement did: sessions, terminations, refusals, capture actions. Domain records
// of the agent; the control socket carries them as `SegguardWire` entries, the reporter as
// report events.

import FoundationEssentials
import Glibc

/// A tracked VDI session.
public struct SessionInfo: Sendable, Equatable {
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
public struct TerminationResult: Sendable, Equatable {
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

/// One thing the enforcement did or (in audit mode) would have done.
public struct EnforcementEvent: Sendable, Equatable {
    /// What happened; the raw value is the name logs, reports and `segguardctl` use.
    public enum Kind: String, Sendable, CaseIterable {
        case launchAllowed = "launch-allowed"
        case launchRefused = "launch-refused"
        /// Audit mode: the launch would have been refused.
        case launchWouldBeRefused = "launch-would-be-refused"
        case sessionsEnded = "sessions-ended"
        /// Audit mode: the sessions would have been ended.
        case sessionsWouldBeEnded = "sessions-would-be-ended"
        case bindingApplied = "binding-applied"
        case bindingFailed = "binding-failed"
        /// Another process changed the binding's table; it was put back.
        case bindingTampered = "binding-tampered"
        /// The table refused gateway traffic on an authorized interface from a process outside
        /// a My Number session (a client not started through the launch gate), or to a port
        /// the policy does not list.
        case gatewayRefused = "gateway-refused"
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

        /// What a local user can cause at will, as often as it likes (held back when repeated:
        /// the agent's EventThrottle).
        public var isUserCaused: Bool {
            switch self {
            case .launchAllowed, .launchRefused, .launchWouldBeRefused, .gatewayRefused, .execDenied, .execWouldBeDenied, .execFailMode, .processKilled, .processWouldBeKilled: true
            default: false
            }
        }

        /// Refusals and kills (and their audit twins), and execs let through by the fail mode:
        /// what `segguardctl why-denied` lists.
        public var isDenial: Bool {
            switch self {
            case .launchAllowed, .bindingApplied: false
            default: true
            }
        }
    }

    /// The exec a capture event is about.
    public struct ExecDetails: Sendable, Equatable {
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
    /// A summary of events held back (rate limit): how many more like this one there were.
    public var repeated: Int?

    public init(id: UInt64, time: Date, kind: Kind, profile: String? = nil, sessions: [SessionInfo] = [], reason: String,
                latencyMs: Double? = nil, uid: UInt32? = nil, exec: ExecDetails? = nil, repeated: Int? = nil) {
        self.id = id
        self.time = time
        self.kind = kind
        self.profile = profile
        self.sessions = sessions
        self.reason = reason
        self.latencyMs = latencyMs
        self.uid = uid
        self.exec = exec
        self.repeated = repeated
    }

    public var isDenial: Bool { kind.isDenial }
}
