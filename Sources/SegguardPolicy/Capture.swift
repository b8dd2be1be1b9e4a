// The screen-capture part of the policy: which executables are capture tools, where exec is
// watched, and when blocking applies. Plain values; PolicyLoader fills them in.

/// When capture blocking applies.
public enum CaptureScope: String, Sendable, Codable, CaseIterable {
    /// The blocklist applies at all times.
    case always
    /// Only while a VDI session of a profile with `capture: blocklist` or `trusted-only` runs.
    case sessions
}

/// The answer for an exec that cannot be decided in time (hashing too slow, internal error).
public enum CaptureFailMode: String, Sendable, Codable, CaseIterable {
    /// Allow it (executables listed by path or name are still denied: those need no hash).
    case allow
    /// Deny it.
    case deny
}

/// What a launch profile asks of capture blocking while its sessions run.
public enum CaptureProtection: String, Sendable, Codable, CaseIterable, Comparable {
    /// Nothing beyond the global rule.
    case none
    /// The blocklist applies while the session runs (for `scope: sessions`).
    case blocklist
    /// The blocklist, and only executables of installed Debian packages (checked against
    /// dpkg's md5sums) or of `capture.allow` may run while the session runs.
    case trustedOnly = "trusted-only"

    public static func < (a: CaptureProtection, b: CaptureProtection) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// What a direct run of the dynamic loader (`/lib64/ld-linux-x86-64.so.2 ./tool`) gets.
public enum LoaderRule: String, Sendable, Codable, CaseIterable {
    /// Judged by the program it loads (name, path, hash, trust), like an exec of that program.
    case judge
    /// Ended at once for every user but root, whatever it loads (`capture.loader: deny`).
    case deny
}

/// An executable trusted-only mode allows by path AND content: a path alone is not enough (a
/// bind mount in a user namespace can put any binary at any path).
public struct AllowedExecutable: Sendable, Equatable, Codable {
    public var path: String
    public var sha256: String
    public init(path: String, sha256: String) {
        self.path = path
        self.sha256 = sha256
    }
}

/// A tool that captures only with certain arguments (ffmpeg -f x11grab): denied while running
/// when its name matches and any argument contains one of `anyOf`. Seen by the process
/// watcher after the exec (the kernel asks fanotify before the new program has arguments).
public struct ArgumentRule: Sendable, Equatable, Codable {
    public var name: String
    public var anyOf: [String]
    public init(name: String, anyOf: [String]) {
        self.name = name
        self.anyOf = anyOf
    }
}

/// The policy's `capture:` section.
public struct CaptureRule: Sendable, Equatable, Codable {
    public var mode: ControlMode
    public var scope: CaptureScope
    /// Paths whose filesystems are watched for exec (fanotify marks the filesystem holding each).
    public var watch: [String]
    public var failMode: CaptureFailMode
    /// How long an exec may wait for its decision (hashing) before `failMode` answers.
    public var decisionTimeoutMs: Int
    /// Executable file names (the last path component), e.g. "scrot".
    public var blockNames: [String]
    /// Absolute paths of executables.
    public var blockPaths: [String]
    /// SHA-256 of executables (lower-case hex): a renamed or copied tool is still denied.
    public var blockSHA256: [String]
    /// Tools denied only with certain arguments (checked on running processes).
    public var blockArguments: [ArgumentRule]
    /// Trusted-only mode: executables allowed besides those of installed packages, by path
    /// and content, or by content wherever they lie.
    public var allowPaths: [AllowedExecutable]
    public var allowSHA256: [String]
    /// Direct runs of the dynamic loader.
    public var loader: LoaderRule

    public init(mode: ControlMode = .off, scope: CaptureScope = .always, watch: [String] = ["/"], failMode: CaptureFailMode = .allow,
                decisionTimeoutMs: Int = 250, blockNames: [String] = [], blockPaths: [String] = [], blockSHA256: [String] = [],
                allowPaths: [AllowedExecutable] = [], allowSHA256: [String] = [], blockArguments: [ArgumentRule] = [], loader: LoaderRule = .judge) {
        self.blockArguments = blockArguments
        self.loader = loader
        self.mode = mode
        self.scope = scope
        self.watch = watch
        self.failMode = failMode
        self.decisionTimeoutMs = decisionTimeoutMs
        self.blockNames = blockNames
        self.blockPaths = blockPaths
        self.blockSHA256 = blockSHA256
        self.allowPaths = allowPaths
        self.allowSHA256 = allowSHA256
    }

    /// True when a policy has a blocklist to apply at all.
    public var hasBlocklist: Bool { !blockNames.isEmpty || !blockPaths.isEmpty || !blockSHA256.isEmpty }
}
