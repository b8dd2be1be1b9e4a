// Reads a policy file (YAML) into a validated `Policy`. Owns no state: every call parses
// from scratch. Every problem found is collected with its file:line:column and key path, so
// an admin sees all mistakes at once; any problem refuses the whole policy.

import FoundationEssentials
import SegguardEssentials

#if canImport(Glibc)
import Glibc
#endif

/// One problem in a policy file, located by file, line, column and key path.
public struct PolicyIssue: Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    /// Dotted key path, e.g. `sites[0].wireless[1].bssids[2]`.
    public var path: String
    public var message: String
    /// A known fix, shown on its own line.
    public var hint: String?

    public init(file: String, line: Int, column: Int, path: String, message: String, hint: String? = nil) {
        self.file = file
        self.line = line
        self.column = column
        self.path = path
        self.message = message
        self.hint = hint
    }

    public var description: String {
        var s = "\(file):\(line):\(column): \(path.isEmpty ? "" : path + ": ")\(message)"
        if let hint { s += "\n  hint: \(hint)" }
        return s
    }
}

/// A refused policy: every issue found, in file order.
public struct PolicyLoadError: Error, Sendable, Equatable, CustomStringConvertible {
    public var issues: [PolicyIssue]
    public init(issues: [PolicyIssue]) { self.issues = issues }
    public var description: String {
        issues.map(\.description).joined(separator: "\n") + "\n\(issues.count) error\(issues.count == 1 ? "" : "s"); policy refused"
    }
}

/// Parses and validates policy text.
public enum PolicyLoader {
    /// Reads and parses the file at `path`; an unreadable file is one issue at line 1.
    public static func load(file path: String) throws(PolicyLoadError) -> Policy {
        try load(text: readText(path, what: "the policy file"), file: path)
    }

    /// The text of `path`; an unreadable file is one issue at line 1 naming `what` it is and
    /// why, as the system said it ("No such file or directory (errno 2)", "Is a directory",
    /// "Permission denied") or that it is not UTF-8 text.
    static func readText(_ path: String, what: String) throws(PolicyLoadError) -> String {
        do {
            return try readTextFile(path)
        } catch {
            throw PolicyLoadError(issues: [PolicyIssue(file: path, line: 1, column: 1, path: "", message: "cannot read \(what): \(error.reason)")])
        }
    }

    /// Parses `text` (the contents of `file`, used only in messages).
    public static func load(text: String, file: String) throws(PolicyLoadError) -> Policy {
        var ctx = Context(file: file)
        let root = try ctx.compose(text, emptyHint: "start with 'schema_version: \(Policy.supportedSchemaVersion)'; see Config/ for examples")
        let policy = ctx.policy(root)
        if !ctx.issues.isEmpty {
            throw PolicyLoadError(issues: ctx.issues.sorted { ($0.line, $0.column) < ($1.line, $1.column) })
        }
        return policy!
    }
}

// MARK: - Walking the YAML tree

struct Context {
    let file: String
    var issues: [PolicyIssue] = []
    /// Accepted, but shown by check-policy and logged by segguardd.
    var warnings: [PolicyIssue] = []
    var schemaVersion = Policy.supportedSchemaVersion

    init(file: String) { self.file = file }

    /// The YAML tree of `text`; a syntax error or an empty file is the one issue thrown.
    func compose(_ text: String, emptyHint: String) throws(PolicyLoadError) -> Node {
        let root: Node?
        do {
            root = try YAML.compose(text)
        } catch {
            throw PolicyLoadError(issues: [yamlIssue(error)])
        }
        guard let root else {
            throw PolicyLoadError(issues: [PolicyIssue(file: file, line: 1, column: 1, path: "", message: "the file is empty", hint: emptyHint)])
        }
        return root
    }

    mutating func report(_ node: Node?, _ path: String, _ message: String, hint: String? = nil) {
        let mark = node?.mark
        issues.append(PolicyIssue(file: file, line: mark?.line ?? 1, column: mark?.column ?? 1, path: path, message: message, hint: hint))
    }

    func yamlIssue(_ error: YAMLError) -> PolicyIssue {
        let message = switch error.kind {
        case .syntax: "YAML syntax: \(error.problem)\(error.context.map { " (\($0))" } ?? "")"
        case .reader: "YAML reader: \(error.problem)"
        case .structure: error.problem + (error.context.map { " (\($0))" } ?? "")
        }
        return PolicyIssue(file: file, line: error.mark.line, column: error.mark.column, path: "", message: message)
    }

    /// The keys of a mapping, with unknown and duplicate keys reported.
    mutating func mapping(_ node: Node, _ path: String, allowed: [String]) -> [String: Node]? {
        guard case let .mapping(m) = node else {
            report(node, path, "expected a mapping (key: value lines), found \(kindName(node))")
            return nil
        }
        var out: [String: Node] = [:]
        for (k, v) in m {
            guard let key = k.scalar?.string else {
                report(k, path, "keys must be plain names")
                continue
            }
            let keyPath = path.isEmpty ? key : "\(path).\(key)"
            if !allowed.contains(key) {
                let near = allowed.first { editDistance($0, key) <= 2 }
                report(k, keyPath, "unknown key \"\(key)\"", hint: near.map { "did you mean \"\($0)\"?" } ?? "allowed keys here: \(allowed.joined(separator: ", "))")
                continue
            }
            if out[key] != nil {
                report(k, keyPath, "key \"\(key)\" given twice")
                continue
            }
            out[key] = v
        }
        return out
    }

    mutating func sequence(_ node: Node, _ path: String) -> [Node]? {
        if case let .sequence(s) = node { return Array(s) }
        report(node, path, "expected a list, found \(kindName(node))", hint: "write a list as [a, b] or as '- a' lines")
        return nil
    }

    mutating func string(_ node: Node, _ path: String) -> String? {
        guard case let .scalar(s) = node else {
            report(node, path, "expected a text value, found \(kindName(node))")
            return nil
        }
        return s.string
    }

    mutating func int(_ node: Node, _ path: String, range: ClosedRange<Int>) -> Int? {
        guard case let .scalar(s) = node, s.style == .plain, let v = Int(s.string) else {
            report(node, path, "expected a whole number, found \(describe(node))")
            return nil
        }
        guard range.contains(v) else {
            report(node, path, "\(v) is out of range \(range.lowerBound)...\(range.upperBound)")
            return nil
        }
        return v
    }

    mutating func oneOf<E: RawRepresentable & CaseIterable & Equatable>(_ node: Node, _ path: String, _: E.Type, excluding: [E] = []) -> E? where E.RawValue == String {
        guard let s = string(node, path) else { return nil }
        if let v = E(rawValue: s), !excluding.contains(v) { return v }
        let allowed = E.allCases.filter { !excluding.contains($0) }.map(\.rawValue)
        report(node, path, "\"\(s)\" is not one of: \(allowed.joined(separator: ", "))")
        return nil
    }

    func kindName(_ node: Node) -> String {
        switch node {
        case .scalar: "a single value"
        case .mapping: "a mapping"
        case .sequence: "a list"
        }
    }

    func describe(_ node: Node) -> String {
        if case let .scalar(s) = node { return "\"\(s.string)\"" }
        return kindName(node)
    }

    /// A present, non-empty list (or any non-list value, reported elsewhere).
    func nonEmpty(_ node: Node?) -> Bool {
        guard let node else { return false }
        if case let .sequence(s) = node { return !s.isEmpty }
        return true
    }

    /// The value of `key` in a mapping node, without reporting anything.
    func child(_ node: Node?, _ key: String) -> Node? {
        guard case let .mapping(m)? = node else { return nil }
        return m.first { $0.key.scalar?.string == key }?.value
    }

    func location(_ node: Node) -> String { "\(file):\(node.mark.line)" }

    // MARK: Sections

    mutating func policy(_ root: Node) -> Policy? {
        guard let top = mapping(root, "", allowed: ["schema_version", "name", "sites", "uplinks", "vdi", "enforcement", "profiles", "capture", "report", "helpdesk"]) else { return nil }
        var version: Int?
        if let v = top["schema_version"] {
            version = int(v, "schema_version", range: 0...Int.max)
            if let got = version, !Policy.supportedSchemaVersions.contains(got) {
                report(v, "schema_version", "schema version \(got) is not supported by this segguardd",
                       hint: "this build reads schema_version \(Policy.supportedSchemaVersions.map(String.init).joined(separator: " or "))")
            }
            // An unreadable or unsupported version is already refused: judge the rest by
            // version 1 rules, so the admin sees that one problem, not its echoes.
            schemaVersion = version.flatMap { Policy.supportedSchemaVersions.contains($0) ? $0 : nil } ?? 1
        } else {
            schemaVersion = 1
            report(root, "schema_version", "missing", hint: "add 'schema_version: \(Policy.supportedSchemaVersion)' at the top")
        }
        let name = top["name"].flatMap { string($0, "name") } ?? "unnamed policy"
        var sites: [Site] = []
        if let s = top["sites"] {
            if let items = sequence(s, "sites") {
                if items.isEmpty { report(s, "sites", "no sites: nothing could ever be authorized", hint: "add at least one site with a wireless or wired rule") }
                var seen: [String: Int] = [:]
                for (i, item) in items.enumerated() {
                    guard let site = site(item, "sites[\(i)]") else { continue }
                    if let first = seen[site.name] {
                        report(item, "sites[\(i)].name", "site \"\(site.name)\" is already defined as sites[\(first)]")
                    }
                    if seen[site.name] == nil { seen[site.name] = i }
                    sites.append(site)
                }
            }
        } else {
            report(root, "sites", "missing", hint: "the office area is a list of sites, each with wireless and/or wired rules")
        }
        var uplinks = UplinkRule()
        if let u = top["uplinks"], let m = mapping(u, "uplinks", allowed: ["other_uplinks", "ignore"]) {
            if let o = m["other_uplinks"], let v = oneOf(o, "uplinks.other_uplinks", UplinkRule.OtherUplinks.self) { uplinks.otherUplinks = v }
            if let ig = m["ignore"] { uplinks.ignore = patterns(ig, "uplinks.ignore") }
        }
        var vdi = VDIRule()
        if let v = top["vdi"], let m = mapping(v, "vdi", allowed: ["gateways"]) {
            if let g = m["gateways"], let items = sequence(g, "vdi.gateways") {
                for (i, item) in items.enumerated() {
                    if let gw = gateway(item, "vdi.gateways[\(i)]") { vdi.gateways.append(gw) }
                }
            }
        }
        var enforcement = EnforcementRule()
        if let e = top["enforcement"] { enforcement = self.enforcement(e) }
        if enforcement.networkBinding == .enforce && vdi.gateways.isEmpty && !issues.contains(where: { $0.path.hasPrefix("vdi") }) {
            // An enforced binding with nothing to guard would install empty chains and guard nothing.
            let at = child(top["vdi"], "gateways") ?? top["vdi"] ?? child(top["enforcement"], "network_binding") ?? root
            report(at, "vdi.gateways", "network_binding is enforce but no VDI gateway is listed: nothing would be guarded",
                   hint: "list the My Number VDI gateways under vdi.gateways, or set enforcement.network_binding: audit or off")
        }
        var profiles: [LaunchProfile] = []
        if let p = top["profiles"], let items = sequence(p, "profiles") {
            var seen: [String: Int] = [:]
            for (i, item) in items.enumerated() {
                guard let profile = profile(item, "profiles[\(i)]") else { continue }
                if let first = seen[profile.name] {
                    report(item, "profiles[\(i)].name", "profile \"\(profile.name)\" is already defined as profiles[\(first)]")
                    continue
                }
                seen[profile.name] = i
                profiles.append(profile)
            }
        }
        guard let version else { return nil }
        var capture = CaptureRule()
        if let c = top["capture"] { capture = self.capture(c) }
        var reportRule = ReportRule()
        if let r = top["report"] { reportRule = report(r) }
        var policy = Policy(schemaVersion: version, name: name, sites: sites, uplinks: uplinks, vdi: vdi, enforcement: enforcement, profiles: profiles,
                            capture: capture, report: reportRule)
        if let h = top["helpdesk"] { policy.helpdesk = helpdesk(h) }
        policy.warnings = warnings.map(\.description)
        return policy
    }

    /// `helpdesk: {name: …, contact: …}`: one line a user reads, so short plain text.
    mutating func helpdesk(_ node: Node) -> HelpDesk? {
        guard let m = mapping(node, "helpdesk", allowed: ["name", "contact"]) else { return nil }
        var parts: [String] = []
        for key in ["name", "contact"] {
            guard let v = m[key] else {
                report(node, "helpdesk.\(key)", "missing", hint: "helpdesk: {name: \"情報政策課 ヘルプデスク\", contact: \"内線 2345\"}")
                return nil
            }
            guard let text = string(v, "helpdesk.\(key)") else { return nil }
            let trimmed = text.trimmed()
            // One line as the user reads it: no control, line or paragraph separators, no
            // invisible format characters (a right-to-left override), no markup a
            // notification server would interpret.
            let unfit: Set<Unicode.GeneralCategory> = [.control, .lineSeparator, .paragraphSeparator, .format]
            if trimmed.isEmpty || trimmed.count > 80 || trimmed.unicodeScalars.contains(where: { unfit.contains($0.properties.generalCategory) })
                || trimmed.contains(where: { "<>&".contains($0) }) {
                report(v, "helpdesk.\(key)", "must be 1 to 80 characters of one line, without < > &")
                return nil
            }
            parts.append(trimmed)
        }
        return HelpDesk(name: parts[0], contact: parts[1])
    }

    /// The `report:` section.
    mutating func report(_ node: Node) -> ReportRule {
        let path = "report"
        var rule = ReportRule()
        guard let m = mapping(node, path, allowed: ["heartbeat_seconds", "jitter", "batch_size", "spool_max_events", "overflow", "max_backoff_seconds"]) else {
            return rule
        }
        if let v = m["heartbeat_seconds"], let n = int(v, "\(path).heartbeat_seconds", range: 1...ReportRule.maxHeartbeatSeconds) { rule.heartbeatSeconds = n }
        if let v = m["jitter"], let d = double(v, "\(path).jitter", range: 0...0.5) { rule.jitter = d }
        if let v = m["batch_size"], let n = int(v, "\(path).batch_size", range: 1...1000) { rule.batchSize = n }
        if let v = m["spool_max_events"], let n = int(v, "\(path).spool_max_events", range: 10...10_000_000) { rule.spoolMaxEvents = n }
        if let v = m["overflow"], let o = oneOf(v, "\(path).overflow", SpoolOverflow.self) { rule.overflow = o }
        if let v = m["max_backoff_seconds"], let n = int(v, "\(path).max_backoff_seconds", range: 1...86_400) { rule.maxBackoffSeconds = n }
        return rule
    }

    mutating func double(_ node: Node, _ path: String, range: ClosedRange<Double>) -> Double? {
        guard case let .scalar(s) = node, s.style == .plain, let v = Double(s.string), v.isFinite else {
            report(node, path, "expected a number, found \(describe(node))")
            return nil
        }
        guard range.contains(v) else {
            report(node, path, "\(s.string) is out of range \(range.lowerBound)...\(range.upperBound)")
            return nil
        }
        return v
    }

    mutating func bool(_ node: Node, _ path: String) -> Bool? {
        if case let .scalar(s) = node, s.style == .plain {
            if s.string == "true" { return true }
            if s.string == "false" { return false }
        }
        report(node, path, "expected true or false, found \(describe(node))")
        return nil
    }

    mutating func strings(_ node: Node, _ path: String) -> [String] {
        guard let items = sequence(node, path) else { return [] }
        var out: [String] = []
        for (i, item) in items.enumerated() {
            if let v = string(item, "\(path)[\(i)]") { out.append(v) }
        }
        return out
    }

    mutating func enforcement(_ node: Node) -> EnforcementRule {
        var rule = EnforcementRule()
        let path = "enforcement"
        guard let m = mapping(node, path, allowed: ["launch_gate", "session_termination", "network_binding", "grace_seconds", "kill_timeout_seconds",
                                                    "bind_to_sessions"]) else { return rule }
        if let v = m["bind_to_sessions"], let b = bool(v, "\(path).bind_to_sessions") { rule.bindToSessions = b }
        if let v = m["launch_gate"], let mode = oneOf(v, "\(path).launch_gate", ControlMode.self) { rule.launchGate = mode }
        if let v = m["session_termination"], let mode = oneOf(v, "\(path).session_termination", ControlMode.self) { rule.sessionTermination = mode }
        if let v = m["network_binding"], let mode = oneOf(v, "\(path).network_binding", ControlMode.self) { rule.networkBinding = mode }
        if let v = m["grace_seconds"], let d = double(v, "\(path).grace_seconds", range: 0...3600) { rule.graceSeconds = d }
        if let v = m["kill_timeout_seconds"], let d = double(v, "\(path).kill_timeout_seconds", range: 0.1...600) { rule.killTimeoutSeconds = d }
        return rule
    }

    /// The `capture:` section. Present means enforce unless `mode` says otherwise.
    mutating func capture(_ node: Node) -> CaptureRule {
        let path = "capture"
        var rule = CaptureRule(mode: .enforce)
        guard let m = mapping(node, path, allowed: ["mode", "scope", "watch", "fail_mode", "decision_timeout_ms", "block", "allow", "loader"]) else { return rule }
        if let v = m["loader"], let l = oneOf(v, "\(path).loader", LoaderRule.self) { rule.loader = l }
        if let v = m["mode"], let mode = oneOf(v, "\(path).mode", ControlMode.self) { rule.mode = mode }
        if let v = m["scope"], let scope = oneOf(v, "\(path).scope", CaptureScope.self) { rule.scope = scope }
        if let v = m["fail_mode"], let f = oneOf(v, "\(path).fail_mode", CaptureFailMode.self) { rule.failMode = f }
        if let v = m["decision_timeout_ms"], let t = int(v, "\(path).decision_timeout_ms", range: 10...5000) { rule.decisionTimeoutMs = t }
        if let v = m["watch"] {
            let paths = strings(v, "\(path).watch")
            for (i, p) in paths.enumerated() where !p.hasPrefix("/") {
                report(v, "\(path).watch[\(i)]", "\"\(p)\" is not an absolute path", hint: "the mounts to watch, e.g. [/, /home, /tmp]")
            }
            if paths.isEmpty { report(v, "\(path).watch", "empty", hint: "name at least one mount, e.g. [/]") }
            rule.watch = paths.filter { $0.hasPrefix("/") }
        }
        func hashes(_ v: Node, _ p: String, single: Bool = false) -> [String] {
            var out: [String] = []
            let list = single ? (string(v, p).map { [$0] } ?? []) : strings(v, p)
            for (i, h) in list.enumerated() {
                let lower = h.lowercased()
                if lower.count == 64, lower.allSatisfy(\.isHexDigit) { out.append(lower) } else {
                    report(v, single ? p : "\(p)[\(i)]", "\"\(h.prefix(70))\" is not a SHA-256 (64 hex digits)", hint: "sha256sum /usr/bin/TOOL prints it")
                }
            }
            return out
        }
        func absolute(_ v: Node, _ p: String) -> [String] {
            let paths = strings(v, p)
            for (i, x) in paths.enumerated() where !x.hasPrefix("/") {
                report(v, "\(p)[\(i)]", "\"\(x)\" is not an absolute path", hint: "list bare file names under names:")
            }
            return paths.filter { $0.hasPrefix("/") }
        }
        if let b = m["block"], let bm = mapping(b, "\(path).block", allowed: ["names", "paths", "sha256", "arguments"]) {
            if let v = bm["arguments"], let items = sequence(v, "\(path).block.arguments") {
                for (i, item) in items.enumerated() {
                    let p = "\(path).block.arguments[\(i)]"
                    guard let am = mapping(item, p, allowed: ["name", "any_of"]) else { continue }
                    guard let nameNode = am["name"], let name = string(nameNode, "\(p).name"), !name.isEmpty, !name.contains("/") else {
                        report(item, "\(p).name", "missing or not a file name", hint: "e.g. name: ffmpeg")
                        continue
                    }
                    let words = am["any_of"].map { strings($0, "\(p).any_of") } ?? []
                    guard !words.isEmpty, !words.contains(where: \.isEmpty) else {
                        report(item, "\(p).any_of", "missing or empty", hint: "the arguments that make it capture, e.g. [x11grab, kmsgrab]")
                        continue
                    }
                    rule.blockArguments.append(ArgumentRule(name: name, anyOf: words))
                }
            }
            if let v = bm["names"] {
                let names = strings(v, "\(path).block.names")
                for (i, n) in names.enumerated() where n.isEmpty || n.contains("/") {
                    report(v, "\(path).block.names[\(i)]", "\"\(n)\" is not a file name", hint: "a name without /, e.g. scrot; full paths go under paths:")
                }
                rule.blockNames = names.filter { !$0.isEmpty && !$0.contains("/") }
            }
            if let v = bm["paths"] { rule.blockPaths = absolute(v, "\(path).block.paths") }
            if let v = bm["sha256"] { rule.blockSHA256 = hashes(v, "\(path).block.sha256") }
        }
        if let a = m["allow"], let am = mapping(a, "\(path).allow", allowed: ["paths", "sha256"]) {
            if let v = am["paths"], let items = sequence(v, "\(path).allow.paths") {
                for (i, item) in items.enumerated() {
                    let p = "\(path).allow.paths[\(i)]"
                    if case .scalar = item {
                        report(item, p, "a path alone is not trusted: it needs its sha256",
                               hint: "write {path: /opt/vdi/bin/client, sha256: <sha256sum of it>} (a user namespace can bind-mount any binary onto a path)")
                        continue
                    }
                    guard let em = mapping(item, p, allowed: ["path", "sha256"]) else { continue }
                    guard let pn = em["path"], let x = string(pn, "\(p).path"), x.hasPrefix("/") else {
                        report(item, "\(p).path", "missing or not an absolute path", hint: "e.g. path: /opt/vdi/bin/client")
                        continue
                    }
                    guard let hn = em["sha256"] else {
                        report(item, "\(p).sha256", "missing", hint: "sha256sum \(x) prints it")
                        continue
                    }
                    guard let h = hashes(hn, "\(p).sha256", single: true).first else { continue }
                    rule.allowPaths.append(AllowedExecutable(path: x, sha256: h))
                }
            }
            if let v = am["sha256"] { rule.allowSHA256 = hashes(v, "\(path).allow.sha256") }
        }
        return rule
    }

    mutating func profile(_ node: Node, _ path: String) -> LaunchProfile? {
        guard let m = mapping(node, path, allowed: ["name", "segment", "command", "enforce_arguments", "config_files", "options", "allowed_groups", "capture"]) else { return nil }
        var name: String?
        if let n = m["name"], let text = string(n, "\(path).name") {
            if !text.isEmpty, text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) {
                name = text
            } else {
                report(n, "\(path).name", "\"\(text)\" is not a profile name", hint: "use letters, digits, - and _, e.g. mynumber-freerdp")
            }
        } else if m["name"] == nil {
            report(node, "\(path).name", "missing", hint: "segguard-launch --profile NAME selects a profile by this name")
        }
        var segment: LaunchProfile.SegmentRequirement?
        if let v = m["segment"] {
            segment = oneOf(v, "\(path).segment", LaunchProfile.SegmentRequirement.self)
        } else {
            report(node, "\(path).segment", "missing", hint: "mynumber (only on the authorized segment) or lgwan (anywhere)")
        }
        var command: [String] = []
        if let c = m["command"] {
            command = strings(c, "\(path).command")
            if let first = command.first, !first.hasPrefix("/") {
                report(c, "\(path).command[0]", "\"\(first)\" is not an absolute path", hint: "name the client binary by its full path, e.g. /usr/bin/xfreerdp")
            }
        }
        let enforceArguments = m["enforce_arguments"].map { strings($0, "\(path).enforce_arguments") } ?? []
        var configFiles: [LaunchProfile.ConfigFile] = []
        if let c = m["config_files"], let items = sequence(c, "\(path).config_files") {
            for (i, item) in items.enumerated() {
                let p = "\(path).config_files[\(i)]"
                guard let f = mapping(item, p, allowed: ["path", "section", "set"]) else { continue }
                guard let pathNode = f["path"], let filePath = string(pathNode, "\(p).path") else {
                    if f["path"] == nil { report(item, "\(p).path", "missing") }
                    continue
                }
                if !(filePath.hasPrefix("/") || filePath.hasPrefix("~/")) || filePath.split(separator: "/").contains("..") {
                    report(pathNode, "\(p).path", "\"\(filePath)\" must be absolute or start with ~/ and contain no ..")
                    continue
                }
                let section = f["section"].flatMap { string($0, "\(p).section") }
                var values: [String: String] = [:]
                if let setNode = f["set"] {
                    if case let .mapping(kv) = setNode {
                        for (k, v) in kv {
                            guard let key = k.scalar?.string, let value = string(v, "\(p).set.\(k.scalar?.string ?? "?")") else { continue }
                            if key.contains("=") || key.contains(where: \.isNewline) || value.contains(where: \.isNewline) {
                                report(k, "\(p).set.\(key)", "keys may not contain '=' and values no line breaks")
                                continue
                            }
                            values[key] = value
                        }
                    } else {
                        report(setNode, "\(p).set", "expected a mapping of key: value")
                    }
                }
                if values.isEmpty { report(item, "\(p).set", "nothing to set", hint: "e.g. set: {ClipboardAllowed: \"Off\"}") }
                configFiles.append(LaunchProfile.ConfigFile(path: filePath, section: section, set: values))
            }
        }
        var options = LaunchProfile.ClientOptions()
        if let o = m["options"], let om = mapping(o, "\(path).options", allowed: ["clipboard", "drives", "printing", "screen_capture"]) {
            if let v = om["clipboard"], let b = bool(v, "\(path).options.clipboard") { options.clipboard = b }
            if let v = om["drives"], let b = bool(v, "\(path).options.drives") { options.drives = b }
            if let v = om["printing"], let b = bool(v, "\(path).options.printing") { options.printing = b }
            if let v = om["screen_capture"], let b = bool(v, "\(path).options.screen_capture") { options.screenCapture = b }
        }
        let groups = m["allowed_groups"].map { strings($0, "\(path).allowed_groups") } ?? []
        let capture = m["capture"].flatMap { oneOf($0, "\(path).capture", CaptureProtection.self) } ?? .none
        guard let name, let segment else { return nil }
        return LaunchProfile(name: name, segment: segment, command: command, enforceArguments: enforceArguments, configFiles: configFiles,
                             options: options, allowedGroups: groups, location: location(node), capture: capture)
    }

    mutating func site(_ node: Node, _ path: String) -> Site? {
        guard let m = mapping(node, path, allowed: ["name", "wireless", "wired"]) else { return nil }
        guard let nameNode = m["name"] else {
            report(node, "\(path).name", "missing", hint: "give each site a name, e.g. 'main-building'")
            return nil
        }
        guard let name = string(nameNode, "\(path).name") else { return nil }
        if name.isEmpty { report(nameNode, "\(path).name", "empty site name") }
        var site = Site(name: name)
        if let w = m["wireless"], let items = sequence(w, "\(path).wireless") {
            for (i, item) in items.enumerated() {
                if let r = wirelessRule(item, "\(path).wireless[\(i)]") { site.wireless.append(r) }
            }
        }
        if let w = m["wired"], let items = sequence(w, "\(path).wired") {
            for (i, item) in items.enumerated() {
                if let r = wiredRule(item, "\(path).wired[\(i)]") { site.wired.append(r) }
            }
        }
        if !nonEmpty(m["wireless"]) && !nonEmpty(m["wired"]) {
            report(node, path, "site \"\(name)\" has neither wireless nor wired rules", hint: "add a 'wireless:' or 'wired:' list")
        }
        return site
    }

    mutating func wirelessRule(_ node: Node, _ path: String) -> WirelessRule? {
        guard let m = mapping(node, path, allowed: ["ssid", "ssid_hex", "security", "bssids", "device_auth", "min_signal_dbm", "leave_below_dbm", "leave_after_seconds", "gateway", "prefixes", "trusted_server", "server_ca_sha256", "server_cert_sha256", "server_domain", "identity"]) else { return nil }
        var ssid: SSID?
        switch (m["ssid"], m["ssid_hex"]) {
        case let (s?, nil):
            if let text = string(s, "\(path).ssid") {
                if text.utf8.isEmpty {
                    report(s, "\(path).ssid", "empty SSID", hint: "a hidden network still has a name: give the SSID it is configured with")
                } else if text.utf8.count > 32 {
                    report(s, "\(path).ssid", "SSID \"\(text)\" is \(text.utf8.count) bytes in UTF-8; an SSID has at most 32")
                } else {
                    ssid = SSID(text)
                }
            }
        case let (nil, h?):
            if let text = string(h, "\(path).ssid_hex") {
                if let bytes = hexBytes(text), (1...32).contains(bytes.count) {
                    ssid = SSID(bytes: bytes)
                } else {
                    report(h, "\(path).ssid_hex", "\"\(text)\" is not 1 to 32 bytes of hex", hint: "e.g. ssid_hex: \"6d6e2d6f6666696365\"")
                }
            }
        case (_?, _?):
            report(node, path, "give either ssid or ssid_hex, not both")
        case (nil, nil):
            report(node, "\(path).ssid", "missing", hint: "name the authorized network: ssid: \"mn-office\"")
        }
        var security: Set<WirelessSecurity> = [.enterprise]
        if let s = m["security"], let items = sequence(s, "\(path).security") {
            security = []
            for (i, item) in items.enumerated() {
                guard let v = oneOf(item, "\(path).security[\(i)]", WirelessSecurity.self, excluding: [.unknown]) else { continue }
                security.insert(v)
            }
            if items.isEmpty { report(s, "\(path).security", "empty list: no association could match", hint: "e.g. security: [enterprise]") }
        }
        var bssids: Set<MACAddress> = []
        if let b = m["bssids"], let items = sequence(b, "\(path).bssids") {
            for (i, item) in items.enumerated() {
                guard let text = string(item, "\(path).bssids[\(i)]") else { continue }
                if let mac = MACAddress(text) {
                    if bssids.contains(mac) { report(item, "\(path).bssids[\(i)]", "BSSID \(mac) listed twice") }
                    bssids.insert(mac)
                } else {
                    report(item, "\(path).bssids[\(i)]", "\"\(text)\" is not a BSSID", hint: "write six hex bytes: aa:bb:cc:dd:ee:ff")
                }
            }
        }
        var deviceAuth = DeviceAuthRequirement.none
        if let d = m["device_auth"], let v = oneOf(d, "\(path).device_auth", DeviceAuthRequirement.self) {
            deviceAuth = v
            if v == .eapTLS && !security.isSubset(of: [.enterprise]) {
                report(d, "\(path).device_auth", "eap-tls needs security [enterprise] (802.1X); this rule also accepts \(security.subtracting([.enterprise]).map(\.rawValue).sorted().joined(separator: ", "))")
            }
        }
        let identity = networkIdentity(m, node, path, deviceAuth: deviceAuth, wired: false)
        var fence: SignalFence?
        if let v = m["min_signal_dbm"], let enter = int(v, "\(path).min_signal_dbm", range: -110...0) {
            var leave = enter - 5
            if let l = m["leave_below_dbm"], let n = int(l, "\(path).leave_below_dbm", range: -110...0) {
                if n > enter { report(l, "\(path).leave_below_dbm", "\(n) dBm is above min_signal_dbm (\(enter) dBm): the fence would be left before it is entered", hint: "e.g. \(enter - 5)") }
                leave = n
            }
            var after = 10.0
            if let a = m["leave_after_seconds"], let n = double(a, "\(path).leave_after_seconds", range: 0...600) { after = n }
            fence = SignalFence(enterDBM: Int32(enter), leaveBelowDBM: Int32(leave), leaveAfterSeconds: after)
        } else {
            for key in ["leave_below_dbm", "leave_after_seconds"] where m[key] != nil {
                report(m[key], "\(path).\(key)", "without min_signal_dbm there is no fence to leave", hint: "add min_signal_dbm, e.g. -70")
            }
        }
        guard let ssid else { return nil }
        return WirelessRule(ssid: ssid, security: security, bssids: bssids, deviceAuth: deviceAuth, identity: identity, fence: fence, location: location(node))
    }

    mutating func wiredRule(_ node: Node, _ path: String) -> WiredRule? {
        guard let m = mapping(node, path, allowed: ["interfaces", "macs", "link_kinds", "device_auth", "gateway", "prefixes", "trusted_server", "server_ca_sha256", "server_cert_sha256", "server_domain", "identity"]) else { return nil }
        var rule = WiredRule(location: location(node))
        if let d = m["device_auth"], let v = oneOf(d, "\(path).device_auth", DeviceAuthRequirement.self) { rule.deviceAuth = v }
        if let i = m["interfaces"] { rule.interfaces = patterns(i, "\(path).interfaces") }
        if let ms = m["macs"], let items = sequence(ms, "\(path).macs") {
            for (i, item) in items.enumerated() {
                guard let text = string(item, "\(path).macs[\(i)]") else { continue }
                if let mac = MACAddress(text) { rule.macs.insert(mac) } else {
                    report(item, "\(path).macs[\(i)]", "\"\(text)\" is not a MAC address", hint: "write six hex bytes: aa:bb:cc:dd:ee:ff")
                }
            }
        }
        if let k = m["link_kinds"], let items = sequence(k, "\(path).link_kinds") {
            for (i, item) in items.enumerated() {
                guard let text = string(item, "\(path).link_kinds[\(i)]") else { continue }
                if text.isEmpty || !text.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }) {
                    report(item, "\(path).link_kinds[\(i)]", "\"\(text)\" is not a link kind", hint: "kernel link kinds look like vlan, veth, bond")
                } else {
                    rule.linkKinds.insert(text)
                }
            }
        }
        // Empty lists mean "any": a rule with neither would authorize every wired port.
        if !nonEmpty(m["interfaces"]) && !nonEmpty(m["macs"]) {
            report(node, path, "a wired rule needs 'interfaces' (name patterns) or 'macs' (or both)",
                   hint: "an empty rule would authorize every wired port")
        }
        rule.identity = networkIdentity(m, node, path, deviceAuth: rule.deviceAuth, wired: true)
        return rule
    }

    /// The network-identity keys shared by wired and Wi-Fi rules.
    mutating func networkIdentity(_ m: [String: Node], _ node: Node, _ path: String, deviceAuth: DeviceAuthRequirement, wired: Bool) -> NetworkIdentity {
        var id = NetworkIdentity()
        if let g = m["gateway"], let items = sequence(g, "\(path).gateway") {
            for (i, item) in items.enumerated() {
                let p = "\(path).gateway[\(i)]"
                guard let gm = mapping(item, p, allowed: ["address", "mac"]) else { continue }
                var address: IPAddress?, mac: MACAddress?
                if let a = gm["address"], let text = string(a, "\(p).address") {
                    address = IPAddress(text)
                    if address == nil { report(a, "\(p).address", "\"\(text)\" is not an IPv4/IPv6 address", hint: "the office router's address, e.g. 10.20.0.1") }
                } else if gm["address"] == nil {
                    report(item, "\(p).address", "missing", hint: "the office router's address, e.g. 10.20.0.1")
                }
                if let a = gm["mac"], let text = string(a, "\(p).mac") {
                    mac = MACAddress(text)
                    if mac == nil { report(a, "\(p).mac", "\"\(text)\" is not a MAC address", hint: "write six hex bytes: aa:bb:cc:dd:ee:ff ('ip neigh' on an office client shows it)") }
                } else if gm["mac"] == nil {
                    report(item, "\(p).mac", "missing", hint: "the router's MAC as the office LAN sees it ('ip neigh show ADDRESS')")
                }
                if let address, let mac {
                    if id.gateways.contains(where: { $0.address == address && $0.mac == mac }) { report(item, p, "gateway \(address) at \(mac) listed twice") }
                    id.gateways.append(GatewayPin(address: address, mac: mac))
                }
            }
            if items.isEmpty { report(g, "\(path).gateway", "empty list", hint: "list the office routers, or remove the key") }
        }
        if let v = m["prefixes"], let items = sequence(v, "\(path).prefixes") {
            for (i, item) in items.enumerated() {
                guard let text = string(item, "\(path).prefixes[\(i)]") else { continue }
                if let prefix = IPPrefix(text) {
                    id.prefixes.append(prefix)
                } else if let network = IPPrefix.network(of: text) {
                    report(item, "\(path).prefixes[\(i)]", "\"\(text)\" has host bits set past /\(network.length)", hint: "did you mean \(network)?")
                } else {
                    report(item, "\(path).prefixes[\(i)]", "\"\(text)\" is not an IPv4/IPv6 prefix", hint: "e.g. 10.20.0.0/16")
                }
            }
            if items.isEmpty { report(v, "\(path).prefixes", "empty list", hint: "list the office address ranges, or remove the key") }
        }
        if let t = m["trusted_server"] {
            let p = "\(path).trusted_server"
            if let tm = mapping(t, p, allowed: ["address", "port", "server_name", "spki_sha256"]) {
                var address: IPAddress?
                if let a = tm["address"], let text = string(a, "\(p).address") {
                    address = IPAddress(text)
                    if address == nil { report(a, "\(p).address", "\"\(text)\" is not an IPv4/IPv6 address", hint: "an IP address: the probe must not depend on DNS") }
                } else if tm["address"] == nil {
                    report(t, "\(p).address", "missing", hint: "an office server's IP address, e.g. 10.20.0.5")
                }
                var port: UInt16 = 443
                if let v = tm["port"], let n = int(v, "\(p).port", range: 1...65535) { port = UInt16(n) }
                var serverName: String?
                if let v = tm["server_name"], let text = string(v, "\(p).server_name") {
                    if text.isEmpty || text.count > 253 || !text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "-") }) {
                        report(v, "\(p).server_name", "\"\(text.prefix(80))\" is not a DNS name")
                    } else {
                        serverName = text.lowercased()
                    }
                }
                var pins: [String] = []
                if let v = tm["spki_sha256"] {
                    pins = sha256List(v, "\(p).spki_sha256",
                                      hint: "openssl s_client -connect HOST:PORT </dev/null | openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | sha256sum")
                    if pins.isEmpty && !issues.contains(where: { $0.path.hasPrefix("\(p).spki_sha256") }) {
                        report(v, "\(p).spki_sha256", "empty list: no key could be proven")
                    }
                } else {
                    report(t, "\(p).spki_sha256", "missing", hint: "the SHA-256 of the server's public key (SubjectPublicKeyInfo, DER), 64 hex digits")
                }
                if let address, !pins.isEmpty {
                    id.trustedServer = TrustedServerRule(address: address, port: port, serverName: serverName, spkiSHA256: pins)
                }
            }
        }
        if let v = m["server_ca_sha256"] { id.server.caSHA256 = Set(sha256List(v, "\(path).server_ca_sha256", hint: "openssl x509 -in CA.pem -outform der | sha256sum")) }
        if let v = m["server_cert_sha256"] { id.server.certSHA256 = Set(sha256List(v, "\(path).server_cert_sha256", hint: "openssl x509 -in SERVER.pem -outform der | sha256sum")) }
        if let v = m["server_domain"], let text = string(v, "\(path).server_domain") {
            if text.isEmpty || !text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "-") }) {
                report(v, "\(path).server_domain", "\"\(text.prefix(80))\" is not a DNS name", hint: "the RADIUS server's name, e.g. radius.example.lg.jp")
            } else {
                id.server.domain = text.lowercased()
            }
        }
        for key in ["server_ca_sha256", "server_cert_sha256", "server_domain"] where m[key] != nil && deviceAuth == .none {
            report(m[key], "\(path).\(key)", "pins the 802.1X server, but the rule has no device_auth", hint: "add device_auth: eap-tls")
        }
        if let v = m["identity"], let text = string(v, "\(path).identity") {
            if text == "interface-only" {
                id.interfaceOnly = true
                if !id.namesNothing || deviceAuth != .none {
                    report(v, "\(path).identity", "interface-only, yet the rule names the network (gateway, prefixes, trusted_server or device_auth)",
                           hint: "remove 'identity: interface-only'")
                }
            } else {
                report(v, "\(path).identity", "\"\(text)\" is not a known value", hint: "the only value is interface-only")
            }
        }
        let namesNetwork = ["gateway", "prefixes", "trusted_server", "device_auth", "identity"].contains { m[$0] != nil }
        if wired && !namesNetwork {
            let message = "the wired rule names nothing about the network: any LAN plugged into the port (a home router) would count as the office"
            let hint = "add gateway (office router address + MAC), prefixes, trusted_server or device_auth: eap-tls; or acknowledge it with 'identity: interface-only'"
            if schemaVersion >= 2 {
                report(node, path, message, hint: hint)
            } else {
                let mark = node.mark
                warnings.append(PolicyIssue(file: file, line: mark.line, column: mark.column, path: path,
                                            message: message + " (schema_version 2 refuses it)", hint: hint))
            }
        }
        return id
    }

    /// A list of SHA-256 values (64 hex digits, any case), lower-cased.
    mutating func sha256List(_ v: Node, _ p: String, hint: String) -> [String] {
        var out: [String] = []
        for (i, h) in strings(v, p).enumerated() {
            let lower = h.lowercased().replacing(":", with: "")
            if lower.count == 64, lower.allSatisfy(\.isHexDigit) {
                if !out.contains(lower) { out.append(lower) }
            } else {
                report(v, "\(p)[\(i)]", "\"\(h.prefix(70))\" is not a SHA-256 (64 hex digits)", hint: hint)
            }
        }
        return out
    }

    mutating func patterns(_ node: Node, _ path: String) -> [String] {
        guard let items = sequence(node, path) else { return [] }
        var out: [String] = []
        for (i, item) in items.enumerated() {
            guard let p = string(item, "\(path)[\(i)]") else { continue }
            if let problem = NamePattern.problem(in: p) {
                report(item, "\(path)[\(i)]", problem)
            } else if p.utf8.count > 15 && !p.contains(where: { "*?[".contains($0) }) {
                report(item, "\(path)[\(i)]", "\"\(p)\" is longer than an interface name can be (15 bytes)")
            } else {
                out.append(p)
            }
        }
        return out
    }

    mutating func gateway(_ node: Node, _ path: String) -> Gateway? {
        guard let m = mapping(node, path, allowed: ["address", "ports", "protocol"]) else { return nil }
        var prefix: IPPrefix?
        if let a = m["address"] {
            if let text = string(a, "\(path).address") {
                prefix = IPPrefix(text)
                if prefix == nil, let network = IPPrefix.network(of: text) {
                    report(a, "\(path).address", "\"\(text)\" has host bits set past /\(network.length)",
                           hint: "did you mean \(network)?")
                } else if prefix == nil {
                    report(a, "\(path).address", "\"\(text)\" is not an IPv4/IPv6 address or prefix",
                           hint: "e.g. 10.20.0.10, 10.20.0.0/24 or 2001:db8::10 (host bits past the prefix must be zero)")
                }
            }
        } else {
            report(node, "\(path).address", "missing")
        }
        var ports: [UInt16] = []
        if let p = m["ports"], let items = sequence(p, "\(path).ports") {
            for (i, item) in items.enumerated() {
                if let v = int(item, "\(path).ports[\(i)]", range: 1...65535) { ports.append(UInt16(v)) }
            }
        }
        var transport = Gateway.Transport.tcp
        if let t = m["protocol"], let v = oneOf(t, "\(path).protocol", Gateway.Transport.self) { transport = v }
        guard let prefix else { return nil }
        return Gateway(prefix: prefix, ports: ports, transport: transport)
    }
}

func hexBytes(_ text: String) -> [UInt8]? {
    let chars = Array(text.utf8.filter { $0 != UInt8(ascii: ":") && $0 != UInt8(ascii: " ") })
    guard chars.count % 2 == 0, chars.allSatisfy({ Character(Unicode.Scalar($0)).isHexDigit }) else { return nil }
    var out: [UInt8] = []
    var i = 0
    while i < chars.count {
        guard let b = UInt8(String(decoding: chars[i..<i + 2], as: UTF8.self), radix: 16) else { return nil }
        out.append(b)
        i += 2
    }
    return out
}

private func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty { return b.count }
    var prev = Array(0...b.count)
    for i in 1...a.count {
        var cur = [i] + Array(repeating: 0, count: b.count)
        for j in stride(from: 1, through: b.count, by: 1) {
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        prev = cur
    }
    return prev[b.count]
}
