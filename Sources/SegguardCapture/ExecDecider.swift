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
    let allowPaths: Set<String>
    let allowHashes: Set<String>

    public init(rule: CaptureRule) {
        self.rule = rule
        names = Set(rule.blockNames)
        paths = Set(rule.blockPaths)
        hashes = Set(rule.blockSHA256)
        allowPaths = Set(rule.allowPaths)
        allowHashes = Set(rule.allowSHA256)
    }

    /// The verdict from the path alone, at once.
    public func quick(path: String, protection: CaptureProtectionState) -> QuickVerdict {
        guard protection.level != .none else { return .allow }
        if paths.contains(path) { return .deny(reason: "\(path) is listed in capture.block.paths") }
        let name = path.lastIndex(of: "/").map { String(path[path.index(after: $0)...]) } ?? path
        if names.contains(name) { return .deny(reason: "executable name \"\(name)\" is listed in capture.block.names") }
        if protection.level == .trustedOnly { return .needsContent }
        return hashes.isEmpty ? .allow : .needsContent
    }

    /// The verdict once the content is known. `packaged` is nil when unknown (not needed or
    /// not found in time), else whether dpkg's md5sums list this path with this content.
    public func decide(path: String, sha256: String, packaged: Bool?, protection: CaptureProtectionState) -> ExecVerdict {
        if case .deny(let reason) = quick(path: path, protection: protection) { return .deny(reason: reason) }
        guard protection.level != .none else { return .allow }
        if hashes.contains(sha256) { return .deny(reason: "SHA-256 \(sha256) of \(path) is listed in capture.block.sha256 (a copy or renamed capture tool)") }
        guard protection.level == .trustedOnly else { return .allow }
        if allowPaths.contains(path) || allowHashes.contains(sha256) || packaged == true { return .allow }
        let who = protection.profile.map { "profile '\($0)'" } ?? "the policy"
        if packaged == false {
            return .deny(reason: "\(path) is not part of an installed package (or differs from it) and not in capture.allow: \(who) allows trusted executables only")
        }
        return .deny(reason: "\(path) could not be checked against the installed packages: \(who) allows trusted executables only")
    }

    /// Interpreters whose script (argv[1]) is matched against the names too.
    static let interpreters: Set<String> = ["sh", "dash", "bash", "zsh", "ksh", "python", "python3", "perl", "ruby", "node", "nodejs", "lua", "tclsh", "wish", "php"]

    /// Whether the command line is needed to judge a running `executable` (an interpreter, or
    /// a tool named in an argument rule): most execs are judged from the executable alone.
    public func needsCommandLine(executable: String) -> Bool {
        let base = executable.lastIndex(of: "/").map { String(executable[executable.index(after: $0)...]) } ?? executable
        let stem = base.prefix { !$0.isNumber && $0 != "." }  // python3.11 -> python
        return Self.interpreters.contains(base) || Self.interpreters.contains(String(stem)) || rule.blockArguments.contains { $0.name == base }
    }

    /// Why a running process is a capture tool, or nil. `executable` is /proc/PID/exe, `argv`
    /// its command line; an interpreted tool is matched by its script too (argv[1]).
    public func running(executable: String, argv: [String], protection: CaptureProtectionState) -> String? {
        guard protection.level != .none else { return nil }
        func base(_ p: String) -> String { p.split(separator: "/").last.map(String.init) ?? p }
        if paths.contains(executable) { return "running \(executable) is listed in capture.block.paths" }
        let candidates = [base(executable)] + argv.prefix(2).map(base)
        if let hit = candidates.first(where: names.contains) { return "running \"\(hit)\" (\(executable)) is listed in capture.block.names" }
        for rule in rule.blockArguments where candidates.contains(rule.name) {
            if let word = rule.anyOf.first(where: { w in argv.dropFirst().contains { $0.contains(w) } }) {
                return "running \(rule.name) with \"\(word)\" in its arguments (capture.block.arguments)"
            }
        }
        return nil
    }

    /// Whether any SHA-256 is listed (running processes are hashed only then).
    public var hasHashes: Bool { !hashes.isEmpty }

    /// Why a running process is a capture tool by its executable's content, or nil: a
    /// renamed or copied listed binary started before the protection began.
    public func running(sha256: String, executable: String, protection: CaptureProtectionState) -> String? {
        guard protection.level != .none, hashes.contains(sha256) else { return nil }
        return "running \(executable) has SHA-256 \(sha256), listed in capture.block.sha256 (a copy or renamed capture tool)"
    }

    /// The answer when the content cannot be read in time.
    public func failAnswer(path: String) -> ExecVerdict {
        switch rule.failMode {
        case .allow: .allow
        case .deny: .deny(reason: "no decision for \(path) within \(rule.decisionTimeoutMs) ms (capture.fail_mode: deny)")
        }
    }
}
