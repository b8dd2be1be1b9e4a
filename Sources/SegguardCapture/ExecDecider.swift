// Which execs are screen-capture tools, and what to answer. Pure: CaptureBlocker feeds it the
// facts (path, hash, package membership); unit tests drive it without a kernel.

import SegguardPolicy

/// What the protection in force asks for, from the policy and the sessions running now.
public struct CaptureProtectionState: Sendable, Equatable {
    public var level: CaptureProtection
    /// The profile whose session asks for `level` (nil when it comes from `scope: always`).
    public var profile: String?
    public init(level: CaptureProtection, profile: String? = nil) {
        self.level = level
        self.profile = profile
    }

    /// The protection for `rule` while sessions of `sessionProfiles` run.
    public static func current(_ rule: CaptureRule, sessionProfiles: [LaunchProfile]) -> CaptureProtectionState {
        guard rule.mode != .off else { return .init(level: .none) }
        let strongest = sessionProfiles.max { $0.capture < $1.capture }
        var state = CaptureProtectionState(level: strongest?.capture ?? .none, profile: strongest?.capture == CaptureProtection.none ? nil : strongest?.name)
        if rule.scope == .always, state.level < .blocklist { state = .init(level: .blocklist) }
        return state
    }
}

/// The first answer, from the path alone.
public enum QuickVerdict: Sendable, Equatable {
    case allow
    case deny(reason: String)
    /// The file's SHA-256 (and, in trusted-only mode, its package) is needed.
    case needsContent
}

/// What dpkg's index says about a path.
public enum PackageRecord: Sendable, Equatable {
    /// The index is not loaded (yet).
    case unknown
    /// No installed package ships this path.
    case none
    /// The MD5 dpkg recorded for it.
    case md5(String)
}

/// The answer for one exec.
public enum ExecVerdict: Sendable, Equatable {
    case allow
    case deny(reason: String)

    public var isDeny: Bool { if case .deny = self { true } else { false } }
}

/// Matches execs against the policy's capture blocklist and, in trusted-only mode, the
/// installed packages and the allowlist.
public struct ExecDecider: Sendable {
    public let rule: CaptureRule
    let names: Set<String>
    let paths: Set<String>
    let hashes: Set<String>
    let allowPaths: [String: Set<String>]
    let allowHashes: Set<String>
    /// SHA-256 of the system's dynamic loaders: a copy of one elsewhere is a loader too.
    let loaderHashes: Set<String>

    public init(rule: CaptureRule, loaderHashes: Set<String> = []) {
        self.rule = rule
        names = Set(rule.blockNames)
        paths = Set(rule.blockPaths)
        hashes = Set(rule.blockSHA256)
        allowPaths = Dictionary(rule.allowPaths.map { ($0.path, [$0.sha256]) }) { $0.union($1) }
        allowHashes = Set(rule.allowSHA256)
        self.loaderHashes = loaderHashes
    }

    /// The verdict from the path (and, in trusted-only mode, dpkg's record of it), at once.
    /// Under trusted-only a path no package ships is denied here, with no hashing, unless
    /// capture.allow could still allow it by content.
    public func quick(path: String, protection: CaptureProtectionState, package: PackageRecord = .unknown) -> QuickVerdict {
        guard protection.level != .none else { return .allow }
        if paths.contains(path) { return .deny(reason: "\(path) is listed in capture.block.paths") }
        let name = Self.baseName(path)
        if names.contains(name) { return .deny(reason: "executable name \"\(name)\" is listed in capture.block.names") }
        if protection.level == .trustedOnly {
            let allowable = !allowHashes.isEmpty || allowPaths[path] != nil
            switch package {
            case .none where !allowable: return .deny(reason: untrusted(path, protection))
            case .unknown where !allowable: return .deny(reason: unchecked(path, protection))
            default: return .needsContent
            }
        }
        return hashes.isEmpty ? .allow : .needsContent
    }

    /// The verdict once the content is known. `packaged` is nil when unknown (not needed or
    /// not found in time), else whether dpkg's md5sums list this path with this content.
    public func decide(path: String, sha256: String, packaged: Bool?, protection: CaptureProtectionState) -> ExecVerdict {
        if case .deny(let reason) = quick(path: path, protection: protection, package: .md5("")) { return .deny(reason: reason) }
        guard protection.level != .none else { return .allow }
        if hashes.contains(sha256) { return .deny(reason: "SHA-256 \(sha256) of \(path) is listed in capture.block.sha256 (a copy or renamed capture tool)") }
        if loaderHashes.contains(sha256) && !Self.isLoader(path) {
            return .deny(reason: "\(path) is a copy of the dynamic loader (SHA-256 \(sha256)): it would run any program unseen")
        }
        guard protection.level == .trustedOnly else { return .allow }
        if allowPaths[path]?.contains(sha256) == true || allowHashes.contains(sha256) || packaged == true { return .allow }
        if packaged == false { return .deny(reason: untrusted(path, protection, differs: true)) }
        return .deny(reason: unchecked(path, protection))
    }

    func who(_ protection: CaptureProtectionState) -> String { protection.profile.map { "profile '\($0)'" } ?? "the policy" }

    func untrusted(_ path: String, _ protection: CaptureProtectionState, differs: Bool = false) -> String {
        "\(path) is not part of an installed package\(differs ? " (or differs from it)" : "") and not in capture.allow: \(who(protection)) allows trusted executables only"
    }

    func unchecked(_ path: String, _ protection: CaptureProtectionState) -> String {
        "\(path) could not be checked against the installed packages: \(who(protection)) allows trusted executables only"
    }

    /// Interpreters whose script (argv[1]) is matched against the names too.
    static let interpreters: Set<String> = ["sh", "dash", "bash", "zsh", "ksh", "python", "python3", "perl", "ruby", "node", "nodejs", "lua", "tclsh", "wish", "php"]

    static func baseName(_ p: String) -> String {
        p.lastIndex(of: "/").map { String(p[p.index(after: $0)...]) } ?? p
    }

    /// Whether `path` names a dynamic loader (ld-linux-x86-64.so.2, ld.so, ld-musl-x86_64.so.1,
    /// ld-2.31.so, ld64.so.2): run directly, it loads the program named in its arguments.
    public static func isLoader(_ path: String) -> Bool {
        let name = Substring(baseName(path))
        guard name.hasPrefix("ld-") || name.hasPrefix("ld.so") || name.hasPrefix("ld64.so") else { return false }
        guard let so = name.firstRange(of: ".so") else { return false }
        // After ".so": nothing, or version numbers (".2", ".1.0").
        return name[so.upperBound...].allSatisfy { $0 == "." || $0.isNumber }
    }

    /// The program a direct run of the loader loads: the first argument after argv[0] that is
    /// not one of the loader's own options (glibc's ld.so stops at the first word it does not
    /// know, and loads that). Nil when there is none (`ld.so --help`).
    public static func loaderProgram(_ argv: [String]) -> (program: String, index: Int)? {
        let withValue: Set<String> = ["--library-path", "--inhibit-rpath", "--audit", "--preload", "--argv0", "--glibc-hwcaps-prepend", "--glibc-hwcaps-mask"]
        let flags: Set<String> = ["--list", "--verify", "--inhibit-cache", "--list-tunables", "--list-diagnostics", "--help", "--version"]
        var i = 1
        while i < argv.count {
            if withValue.contains(argv[i]) && i + 1 < argv.count { i += 2; continue }
            if flags.contains(argv[i]) { i += 1; continue }
            return (argv[i], i)
        }
        return nil
    }

    /// For an executable with no file of its own: a memfd (`/memfd:NAME (deleted)`) or a
    /// deleted file (`/path (deleted)`), the name it carries; nil for an ordinary file.
    public static func anonymousName(_ exe: String) -> String? {
        if exe.hasPrefix("/memfd:") {
            var name = exe.dropFirst("/memfd:".count)
            if name.hasSuffix(" (deleted)") { name = name.dropLast(" (deleted)".count) }
            return String(name)
        }
        if exe.hasSuffix(" (deleted)") { return baseName(String(exe.dropLast(" (deleted)".count))) }
        return nil
    }

    /// Whether the command line is needed to judge a running `executable` (an interpreter, the
    /// loader, or a tool named in an argument rule): most execs are judged from the executable alone.
    public func needsCommandLine(executable: String) -> Bool {
        let base = Self.baseName(executable)
        let stem = base.prefix { !$0.isNumber && $0 != "." }  // python3.11 -> python
        return Self.interpreters.contains(base) || Self.interpreters.contains(String(stem)) || rule.blockArguments.contains { $0.name == base }
            || Self.isLoader(executable)
    }

    /// Why a running process is a capture tool, or nil. `executable` is /proc/PID/exe, `argv`
    /// its command line; an interpreted tool is matched by its script too (argv[1]).
    public func running(executable: String, argv: [String], protection: CaptureProtectionState) -> String? {
        guard protection.level != .none else { return nil }
        if paths.contains(executable) { return "running \(executable) is listed in capture.block.paths" }
        let candidates = [Self.baseName(executable)] + argv.prefix(2).map(Self.baseName)
        if let hit = candidates.first(where: names.contains) { return "running \"\(hit)\" (\(executable)) is listed in capture.block.names" }
        for rule in rule.blockArguments where candidates.contains(rule.name) {
            // Bytes, as the program parses them: a word followed by a combining mark is still
            // the word here (Characters would merge them), and Foundation is not needed.
            if let word = rule.anyOf.first(where: { w in argv.dropFirst().contains { $0.utf8.firstRange(of: w.utf8) != nil } }) {
                return "running \(rule.name) with \"\(word)\" in its arguments (capture.block.arguments)"
            }
        }
        return nil
    }

    /// Whether any SHA-256 is listed (running processes are hashed only then).
    public var hasHashes: Bool { !hashes.isEmpty }

    /// Whether capture.allow could allow some content (then untrusted files must be hashed).
    public var allowsByContent: Bool { !allowHashes.isEmpty || !allowPaths.isEmpty }

    /// Why a running process is a capture tool by its executable's content, or nil: a
    /// renamed or copied listed binary started before the protection began.
    public func running(sha256: String, executable: String, protection: CaptureProtectionState) -> String? {
        guard protection.level != .none, hashes.contains(sha256) else { return nil }
        return "running \(executable) has SHA-256 \(sha256), listed in capture.block.sha256 (a copy or renamed capture tool)"
    }

    /// Why a running process is not trusted under trusted-only, or nil when it is (or the
    /// protection is lower). `packaged`: whether dpkg ships `path` with this content (nil:
    /// unknown or not applicable, e.g. a memfd).
    public func untrustedRunning(path: String, sha256: String?, packaged: Bool?, protection: CaptureProtectionState) -> String? {
        guard protection.level == .trustedOnly else { return nil }
        if let sha256, allowPaths[path]?.contains(sha256) == true || allowHashes.contains(sha256) { return nil }
        if packaged == true { return nil }
        if packaged == false { return "running " + untrusted(path, protection, differs: sha256 != nil) }
        return "running " + unchecked(path, protection)
    }

    /// The answer when the content cannot be read in time: capture.fail_mode, except under
    /// trusted-only, which always fails closed.
    public func failAnswer(path: String, protection: CaptureProtectionState = .init(level: .blocklist)) -> ExecVerdict {
        if protection.level == .trustedOnly {
            return .deny(reason: "no decision for \(path) within \(rule.decisionTimeoutMs) ms: \(who(protection)) allows trusted executables only, so it fails closed")
        }
        return switch rule.failMode {
        case .allow: .allow
        case .deny: .deny(reason: "no decision for \(path) within \(rule.decisionTimeoutMs) ms (capture.fail_mode: deny)")
        }
    }
}
