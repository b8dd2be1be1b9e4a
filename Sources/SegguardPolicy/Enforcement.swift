// The enforcement part of the policy: how each control runs (enforce / audit / off), the
// grace before sessions are ended, and the launch profiles of the VDI clients.

/// How one control runs, for staged rollout across a municipality.
public enum ControlMode: String, Sendable, Codable, CaseIterable {
    /// Act: refuse, kill, drop.
    case enforce
    /// Decide, log and report what would have been done; block nothing.
    case audit
    /// Do nothing.
    case off
}

/// How the decision is bound to the VDI: modes of each control and the timings.
public struct EnforcementRule: Sendable, Equatable, Codable {
    /// Launch gate: `segguard-launch` refused off-segment.
    public var launchGate: ControlMode
    /// Ending running sessions when the segment is lost.
    public var sessionTermination: ControlMode
    /// nftables table letting VDI gateway traffic out only through authorized interfaces.
    public var networkBinding: ControlMode
    /// Seconds an unauthorized decision may last before sessions are ended (a Wi-Fi roam or
    /// a cable/Wi-Fi switch must not end a session); the network path is blocked at once.
    public var graceSeconds: Double
    /// Seconds between SIGTERM and SIGKILL when a session is ended.
    public var killTimeoutSeconds: Double
    /// The network binding lets gateway traffic out only from sockets of processes in a My
    /// Number session (started through the launch gate): a client started any other way does
    /// not reach the gateway. Off: any process on the authorized segment does.
    public var bindToSessions: Bool

    public init(launchGate: ControlMode = .enforce, sessionTermination: ControlMode = .enforce, networkBinding: ControlMode = .enforce,
                graceSeconds: Double = 5, killTimeoutSeconds: Double = 3, bindToSessions: Bool = true) {
        self.bindToSessions = bindToSessions
        self.launchGate = launchGate
        self.sessionTermination = sessionTermination
        self.networkBinding = networkBinding
        self.graceSeconds = graceSeconds
        self.killTimeoutSeconds = killTimeoutSeconds
    }
}

/// A launcher setting for one VDI client on one segment.
public struct LaunchProfile: Sendable, Equatable, Codable {
    /// Which segment a profile's sessions belong to.
    public enum SegmentRequirement: String, Sendable, Codable, CaseIterable {
        /// The My Number segment: only on an authorized decision; sessions are tracked and ended.
        case mynumber
        /// The LGWAN-connected segment: allowed anywhere.
        case lgwan
    }

    /// Client-side features a profile turns off.
    public struct ClientOptions: Sendable, Equatable, Codable {
        public var clipboard: Bool
        public var drives: Bool
        public var printing: Bool
        public var screenCapture: Bool
        public init(clipboard: Bool = false, drives: Bool = false, printing: Bool = false, screenCapture: Bool = false) {
            self.clipboard = clipboard
            self.drives = drives
            self.printing = printing
            self.screenCapture = screenCapture
        }
    }

    /// A client configuration file the launcher rewrites before starting the client.
    public struct ConfigFile: Sendable, Equatable, Codable {
        /// Path; a leading `~/` is the launching user's home.
        public var path: String
        /// INI section, e.g. `WFClient` (nil: keys outside any section).
        public var section: String?
        /// Keys set to these values (other lines are kept).
        public var set: [String: String]
        public init(path: String, section: String?, set: [String: String]) {
            self.path = path
            self.section = section
            self.set = set
        }
    }

    public var name: String
    public var segment: SegmentRequirement
    /// The client command; when empty, the launcher's command after `--` is used.
    public var command: [String]
    /// Arguments appended to the client command to enforce the options (e.g. FreeRDP `-clipboard`).
    public var enforceArguments: [String]
    public var configFiles: [ConfigFile]
    /// What the profile is meant to enforce, for documentation and status output.
    public var options: ClientOptions
    /// Groups whose members may launch it (empty: any local user).
    public var allowedGroups: [String]
    public var location: String
    /// Capture blocking while this profile's sessions run (`capture:`; default none).
    public var capture: CaptureProtection

    public init(name: String, segment: SegmentRequirement, command: [String] = [], enforceArguments: [String] = [],
                configFiles: [ConfigFile] = [], options: ClientOptions = .init(), allowedGroups: [String] = [], location: String = "",
                capture: CaptureProtection = .none) {
        self.capture = capture
        self.name = name
        self.segment = segment
        self.command = command
        self.enforceArguments = enforceArguments
        self.configFiles = configFiles
        self.options = options
        self.allowedGroups = allowedGroups
        self.location = location
    }

    /// True when the profile may only run on the authorized segment.
    public var needsAuthorizedSegment: Bool { segment == .mynumber }
}
