// The versioned messages spoken on the local control socket between segguardd and
// segguardctl: one JSON request line, one JSON reply line.

import FoundationEssentials
import Glibc
import SegguardDecision
import SegguardPolicy

/// Version of the control protocol; a reply with another major version is refused by the client.
public let controlProtocolVersion = 1

/// The product version, printed by `--version` and carried in status replies.
public let segguardVersion = "0.2.0"

/// A request from a client.
public struct ControlRequest: Codable, Sendable, Equatable {
    /// What the client asks for.
    public enum Command: String, Codable, Sendable, CaseIterable {
        /// The current snapshot, decision and daemon state.
        case status
        /// The decision with every finding (same payload; the client prints it differently).
        case why
        /// May this profile start now? (segguard-launch; open to every local user)
        case launch
        /// Tracked VDI sessions.
        case sessions
        /// The last refusals and kills.
        case whyDenied = "why-denied"
        /// What the asking user is to be told (grace countdown, session ended, tool blocked),
        /// after `since`: `segguard-launch --watch` in the user's desktop session polls it.
        case notices

        /// Commands any local user may send; the rest need root or the admin group. `notices`
        /// answers only the asking uid's own notices.
        public var isOpenToUsers: Bool { self == .launch || self == .notices }
    }

    public var version: Int
    public var command: Command
    /// For `launch`: the profile name.
    public var profile: String?
    /// For `launch`: the client command given after `--` (used when the profile names none).
    public var clientCommand: [String]?
    /// For `notices`: the last sequence number the asker has seen (nil: only the newest
    /// number comes back, with no notices, to start from).
    public var since: UInt64?

    public init(command: Command, profile: String? = nil, clientCommand: [String]? = nil, since: UInt64? = nil, version: Int = controlProtocolVersion) {
        self.version = version
        self.command = command
        self.profile = profile
        self.clientCommand = clientCommand
        self.since = since
    }
}

/// The daemon's state as `segguardctl status` shows it.
public struct StatusReply: Codable, Sendable, Equatable {
    public var daemonVersion: String
    public var pid: Int32
    public var policyName: String
    public var policyFile: String
    public var policyLoadedAt: Date
    /// The last policy reload that was refused (the old policy stayed), if any.
    public var lastPolicyError: String?
    public var snapshot: NetworkSnapshot
    public var decision: Decision
    public var decidedAt: Date
    /// Decision changes since start.
    public var decisionChanges: UInt64
    public var netlinkMessages: UInt64
    public var netlinkResyncs: UInt64
    public var netlinkParseErrors: UInt64
    /// Screen-capture blocking; nil when the policy has it off.
    public var capture: CaptureStatus?
    /// Reporting to the collector; nil when segguardd runs without --collector.
    public var reporting: ReportingStatus?
    /// How fast the last binding changes went; nil before the first one.
    public var pipeline: PipelineStatus?

    /// Latency of the path from a netlink message to the nftables transaction, over the last
    /// binding changes caused by a network event. Every stage is counted from the moment the
    /// agent's loop woke up with the message.
    public struct PipelineStatus: Codable, Sendable, Equatable {
        /// One stage: when it was reached after the wakeup, in microseconds.
        public struct Stage: Codable, Sendable, Equatable {
            /// `snapshot` (parsed, snapshot published), `decided`, `handed-to-kernel` (the
            /// transaction handed to libnftables), `committed` (libnftables returned).
            public var name: String
            public var p50Micros: Double
            public var p99Micros: Double
            public var maxMicros: Double
            public init(name: String, p50Micros: Double, p99Micros: Double, maxMicros: Double) {
                (self.name, self.p50Micros, self.p99Micros, self.maxMicros) = (name, p50Micros, p99Micros, maxMicros)
            }
        }
        public var samples: Int
        public var stages: [Stage]
        public init(samples: Int, stages: [Stage]) {
            self.samples = samples
            self.stages = stages
        }
    }

    /// What the reporter is doing.
    public struct ReportingStatus: Codable, Sendable, Equatable {
        public var collector: String
        public var agentID: String
        public var group: String
        public var heartbeatsSent: Int
        public var heartbeatFailures: Int
        public var lastHeartbeatAt: Date?
        public var eventsDelivered: Int
        public var lastError: String?
        public var bundleVersion: Int64?
        public init(collector: String, agentID: String, group: String, heartbeatsSent: Int, heartbeatFailures: Int, lastHeartbeatAt: Date?,
                    eventsDelivered: Int, lastError: String?, bundleVersion: Int64?) {
            self.collector = collector
            self.agentID = agentID
            self.group = group
            self.heartbeatsSent = heartbeatsSent
            self.heartbeatFailures = heartbeatFailures
            self.lastHeartbeatAt = lastHeartbeatAt
            self.eventsDelivered = eventsDelivered
            self.lastError = lastError
            self.bundleVersion = bundleVersion
        }
    }

    /// What capture blocking is doing.
    public struct CaptureStatus: Codable, Sendable, Equatable {
        public var mode: String
        /// none, blocklist or trusted-only: what applies to the next exec.
        public var level: String
        public var profile: String?
        public var watched: [String]
        public var events: UInt64
        public var denied: UInt64
        public var failModeAnswers: UInt64
        /// Why blocking is not running (fanotify unavailable, a mount that cannot be marked).
        public var error: String?
        public init(mode: String, level: String, profile: String?, watched: [String], events: UInt64, denied: UInt64, failModeAnswers: UInt64, error: String?) {
            self.mode = mode
            self.level = level
            self.profile = profile
            self.watched = watched
            self.events = events
            self.denied = denied
            self.failModeAnswers = failModeAnswers
            self.error = error
        }
    }

    public init(
        daemonVersion: String, pid: Int32, policyName: String, policyFile: String, policyLoadedAt: Date,
        lastPolicyError: String?, snapshot: NetworkSnapshot, decision: Decision, decidedAt: Date,
        decisionChanges: UInt64, netlinkMessages: UInt64, netlinkResyncs: UInt64, netlinkParseErrors: UInt64,
        capture: CaptureStatus? = nil, reporting: ReportingStatus? = nil, pipeline: PipelineStatus? = nil
    ) {
        self.pipeline = pipeline
        self.capture = capture
        self.reporting = reporting
        self.daemonVersion = daemonVersion
        self.pid = pid
        self.policyName = policyName
        self.policyFile = policyFile
        self.policyLoadedAt = policyLoadedAt
        self.lastPolicyError = lastPolicyError
        self.snapshot = snapshot
        self.decision = decision
        self.decidedAt = decidedAt
        self.decisionChanges = decisionChanges
        self.netlinkMessages = netlinkMessages
        self.netlinkResyncs = netlinkResyncs
        self.netlinkParseErrors = netlinkParseErrors
    }
}

/// The asking user's notices after `since`, and the newest sequence number (the next `since`).
public struct NoticesReply: Codable, Sendable, Equatable {
    /// One thing to tell the user.
    public struct Entry: Codable, Sendable, Equatable {
        public var seq: UInt64
        public var time: Date
        public var notice: UserNotice
        /// Placeholders of the message: `seconds`, `tool`, `profile`.
        public var values: [String: String]
        public init(seq: UInt64, time: Date, notice: UserNotice, values: [String: String]) {
            self.seq = seq
            self.time = time
            self.notice = notice
            self.values = values
        }
    }
    public var latest: UInt64
    public var entries: [Entry]
    /// The policy's help desk.
    public var helpdesk: HelpDesk?
    /// This run of segguardd (numbers start again at 1 in the next one).
    public var instance: String
    public init(latest: UInt64, entries: [Entry], helpdesk: HelpDesk?, instance: String) {
        self.latest = latest
        self.entries = entries
        self.helpdesk = helpdesk
        self.instance = instance
    }
}

/// The reply to a request: a payload or an error message.
public struct ControlReply: Codable, Sendable, Equatable {
    /// Why a request failed.
    public struct Failure: Codable, Sendable, Equatable {
        public var message: String
        public init(message: String) { self.message = message }
    }

    public var version: Int
    public var status: StatusReply?
    public var launch: LaunchReply?
    public var sessions: [SessionEntry]?
    public var events: [EventEntry]?
    public var notices: NoticesReply?
    public var error: Failure?

    public init(status: StatusReply? = nil, launch: LaunchReply? = nil, sessions: [SessionEntry]? = nil, events: [EventEntry]? = nil,
                notices: NoticesReply? = nil) {
        self.version = controlProtocolVersion
        self.status = status
        self.launch = launch
        self.sessions = sessions
        self.events = events
        self.notices = notices
        self.error = nil
    }

    public init(error message: String) {
        self.version = controlProtocolVersion
        self.error = Failure(message: message)
    }
}

/// JSON coding shared by both ends (ISO 8601 dates, sorted keys for stable output).
public enum ControlCoding {
    public static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .iso8601
        e.outputFormatting = [.sortedKeys]
        return e
    }

    public static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return d
    }
}
