// segguardctl: the admin's command line. `status` and `why` query the daemon over the control
// socket; `check-policy` validates a policy file offline, with no daemon.

import ArgumentParser
import FoundationEssentials
import SegguardEssentials
import Glibc
import SegguardControl
import SegguardDecision
import SegguardPolicy
import SegguardReport
import SegguardSystem
import SegguardWire

/// segguardctl's entry point (its own executable in development, a personality of the agent's
/// multi-call binary when installed).
public func segguardctlMain() {
    // Run to its end (ArgumentParser exits with the command's status) before returning.
    try? runBlocking { await Segguardctl.main() }
}

/// The segment-guard control tool.
struct Segguardctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "segguardctl",
        abstract: "Query segguardd, check segment policies, sign and push policy bundles, create a test PKI.",
        version: segguardVersion,
        subcommands: [Status.self, Why.self, Sessions.self, WhyDenied.self, CheckPolicy.self, Simulate.self, PolicyCommand.self, PKICommand.self, Enroll.self])
}

/// Options shared by the commands that talk to the daemon.
struct DaemonOptions: ParsableArguments {
    @Option(name: .long, help: "Control socket of segguardd.")
    var socket: String = ControlClient.defaultPath

    @Flag(name: .long, help: "Print the raw JSON reply.")
    var json = false

    func query(_ command: ControlRequest.Command) throws -> (StatusReply, String) {
        let (reply, raw) = try send(command)
        guard let s = reply.status else { throw CLIError("segguardd sent an empty reply") }
        return (s, raw)
    }

    /// The reply and its JSON text; an error reply becomes a CLIError.
    func send(_ command: ControlRequest.Command) throws -> (ControlReply, String) {
        let reply: ControlReply
        do {
            reply = try ControlClient.send(ControlRequest(command: command), path: socket)
        } catch {
            throw CLIError("\(error)")
        }
        if let e = reply.error { throw CLIError("segguardd: \(e.message)") }
        let data = try ControlCoding.encoder().encode(reply)
        return (reply, String(decoding: data, as: UTF8.self))
    }
}

/// A failure printed as one line on stderr, exit status 1.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the current decision and every interface.")
    @OptionGroup var options: DaemonOptions

    func run() throws {
        let (s, raw) = try options.query(.status)
        if options.json { print(raw); return }
        print(Render.status(s))
    }
}

struct Why: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Explain the current decision: the rule and interface behind it, and each interface's finding.")
    @OptionGroup var options: DaemonOptions

    func run() throws {
        let (s, raw) = try options.query(.why)
        if options.json { print(raw); return }
        print(Render.why(s))
    }
}

struct Sessions: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the VDI sessions segguardd tracks (started through segguard-launch).")
    @OptionGroup var options: DaemonOptions

    func run() throws {
        let (reply, raw) = try options.send(.sessions)
        if options.json { print(raw); return }
        let sessions = reply.sessions ?? []
        if sessions.isEmpty { print("no tracked sessions"); return }
        for s in sessions {
            print("session \(s.id)  profile \(s.profile)  pid \(s.pid)  uid \(s.uid)  since \(Render.iso(s.startedAt))")
            print("  processes: \(s.pids.map(String.init).joined(separator: " "))  cgroup: \(s.cgroup)")
        }
    }
}

struct WhyDenied: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "why-denied", abstract: "The last launch refusals, session terminations and denied execs, with their reasons (newest last).")
    @OptionGroup var options: DaemonOptions

    @Option(name: .long, help: "Show at most this many.")
    var last = 20

    func run() throws {
        let (reply, raw) = try options.send(.whyDenied)
        if options.json { print(raw); return }
        let events = (reply.events ?? []).suffix(last)
        if events.isEmpty { print("no refusals or terminations since segguardd started"); return }
        for e in events {
            var head = "\(Render.iso(e.time))  \(e.kind)"
            if let p = e.profile { head += "  profile \(p)" }
            if let u = e.uid { head += "  uid \(u)" }
            if let ms = e.latencyMs { head += format("  %.1f ms after the network event", ms) }
            print(head)
            if !e.sessions.isEmpty { print("  sessions: \(e.sessions.map { "\($0.id) (pid \($0.pid), \($0.profile))" }.joined(separator: ", "))") }
            if let x = e.exec {
                var line = "  exec: \(x.path) pid \(x.pid)"
                if let p = x.parentPid { line += ", parent \(p)\(x.parentExecutable.map { " (\($0))" } ?? "")" }
                if let h = x.sha256 { line += ", sha256 \(h)" }
                print(line)
            }
            print("  \(e.reason)")
        }
    }
}

struct CheckPolicy: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-policy",
        abstract: "Validate a policy file; print every error with its line and column (exit 1) or a summary (exit 0).")

    @Argument(help: "The policy file (YAML).")
    var file: String

    @Flag(name: .long, help: "Print the result as JSON on standard output (for CI pipelines): {\"file\", \"valid\", \"name\", \"sha256\", \"errors\": [{\"line\", \"column\", \"path\", \"message\", \"hint\"}], \"warnings\"}; exit 1 when invalid.")
    var json = false

    /// The JSON report of `--json`.
    struct Report: Encodable {
        struct Issue: Encodable {
            var line: Int, column: Int, path: String, message: String, hint: String?
        }
        var file: String
        var valid: Bool
        var name: String?
        var sha256: String?
        var errors: [Issue]
        var warnings: [String]
    }

    func run() throws {
        var report = Report(file: file, valid: false, errors: [], warnings: [])
        do {
            let p = try PolicyLoader.load(file: file)
            report.valid = true
            report.name = p.name
            report.sha256 = FileManager.default.contents(atPath: file).map(PolicySigning.sha256Hex)
            report.warnings = p.warnings
            if !json {
                print(Render.policySummary(p, file: file))
                for w in p.warnings { print("warning: \(w)") }
            }
        } catch let error as PolicyLoadError {
            report.errors = error.issues.map { Report.Issue(line: $0.line, column: $0.column, path: $0.path, message: $0.message, hint: $0.hint) }
            if !json { writeStandardError("\(error)\n") }
        } catch {
            report.errors = [Report.Issue(line: 1, column: 1, path: "", message: "\(error)", hint: nil)]
            if !json { writeStandardError("\(error)\n") }
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        }
        if !report.valid { throw ExitCode(1) }
    }
}

struct Simulate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decide a described network state against a policy, offline: the same output as 'why' (or --json).",
        discussion: """
            STATE_FILE describes the interfaces (addresses, routes, neighbours, Wi-Fi association, 802.1X, \
            trusted-server results); its format and examples are in Config/states/. Test a policy before \
            pushing it: segguardctl simulate Config/states/home-router.yaml --policy new-policy.yaml
            """)

    @Argument(help: "The state file (YAML or JSON).")
    var stateFile: String

    @Option(name: .long, help: "The policy to decide with.")
    var policy: String = "/etc/segguard/policy.yaml"

    @Flag(name: .long, help: "Print the decision as JSON.")
    var json = false

    func run() throws {
        let p: Policy
        let snapshot: NetworkSnapshot
        do {
            p = try PolicyLoader.load(file: policy)
            snapshot = try StateFile.load(file: stateFile)
        } catch {
            writeStandardError("\(error)\n")
            throw ExitCode(2)
        }
        // Each office-area fence as a fresh association sees it: inside once the signal
        // reaches the entry level (the hysteresis over time is the daemon's).
        var state = snapshot
        for i in state.interfaces.indices {
            let ifc = state.interfaces[i]
            state.interfaces[i].signalFences = SegmentDecider.signalFences(for: ifc, p).map {
                SignalFenceState.step(nil, fence: $0, signal: ifc.wireless?.signalDBM, now: 0).0
            }
        }
        let d = SegmentDecider.decide(state, p)
        if json {
            let encoder = ControlCoding.encoder()
            print(String(decoding: try encoder.encode(d), as: UTF8.self))
        } else {
            print(Render.decision(d, policyName: p.name, policyFile: policy))
        }
    }
}

/// Text output for people.
enum Render {
    static func status(_ s: StatusReply) -> String {
        var out = ""
        out += "decision:  \(s.decision.segment.rawValue)\n"
        out += "reason:    \(s.decision.reason)\n"
        if !s.decision.authorizedInterfaces.isEmpty {
            out += "via:       \(s.decision.authorizedInterfaces.joined(separator: ", "))\n"
        }
        out += "since:     \(iso(s.decidedAt)) (\(s.decisionChanges) change\(s.decisionChanges == 1 ? "" : "s") since start)\n"
        out += "policy:    \(s.policyName) (\(s.policyFile), loaded \(iso(s.policyLoadedAt)))\n"
        if let e = s.lastPolicyError {
            out += "last reload REFUSED, previous policy kept:\n" + e.split(separator: "\n").map { "  \($0)" }.joined(separator: "\n") + "\n"
        }
        out += "daemon:    segguardd \(s.daemonVersion), pid \(s.pid); netlink: \(s.netlinkMessages) messages, \(s.netlinkResyncs) resyncs, \(s.netlinkParseErrors) parse errors\n"
        if let p = s.pipeline {
            let stages = p.stages.filter { $0.name != "snapshot" }.map { "\($0.name) " + format("p50 %.0f / p99 %.0f µs", $0.p50Micros, $0.p99Micros) }
            out += "pipeline:  netlink message -> table, last \(p.samples) change\(p.samples == 1 ? "" : "s"): \(stages.joined(separator: "; "))\n"
        }
        out += "wireless:  \(s.snapshot.wirelessMonitoring ? "monitored (nl80211)" : "not monitored (no nl80211 in this kernel)")\n"
        if let c = s.capture {
            if let e = c.error {
                out += "capture:   NOT RUNNING (\(c.mode)): \(e)\n"
            } else {
                let who = c.profile.map { " for profile '\($0)'" } ?? ""
                out += "capture:   \(c.mode), \(c.level)\(who); watching \(c.watched.joined(separator: ", ")); \(c.events) execs checked, \(c.denied) denied, \(c.failModeAnswers) by fail mode\n"
            }
        }
        if let r = s.reporting {
            let last = r.lastHeartbeatAt.map { "last heartbeat \($0.ISO8601Format())" } ?? "no heartbeat delivered yet"
            let bundle = r.bundleVersion.map { ", policy bundle v\($0)" } ?? ""
            out += "reporting: \(r.agentID) (group \(r.group)) to \(r.collector): \(r.heartbeatsSent) heartbeats ok, \(r.heartbeatFailures) failed, \(last); \(r.eventsDelivered) events delivered\(bundle)\n"
            if let e = r.lastError { out += "           last error: \(e)\n" }
        }
        out += "\ninterfaces (snapshot \(s.snapshot.generation)):\n"
        for i in s.snapshot.interfaces {
            var line = "  \(i.name.padded(to: 12)) \(i.kind.rawValue)"
            if let k = i.linkKind { line += "/\(k)" }
            line += "  \(i.isAdminUp ? "up" : "down"), \(i.hasCarrier ? "carrier" : "no carrier"), oper \(i.operState.rawValue)"
            if let m = i.mac, m.bytes.contains(where: { $0 != 0 }) { line += ", mac \(m)" }
            out += line + "\n"
            if let w = i.wireless {
                if let b = w.bssid {
                    let f = w.frequencyMHz.map { " \($0) MHz" } ?? ""
                    out += "      wifi: SSID '\(w.ssid?.description ?? "?")' BSSID \(b)\(f), security \(w.security.rawValue)\n"
                } else {
                    out += "      wifi: not associated\n"
                }
            }
            if let a = i.deviceAuth {
                var line = "      802.1X: port \(a.portStatus.rawValue)"
                line += " (" + [a.eapMethod.map { "EAP-\($0)" }, a.eapState.map { "EAP state \($0)" }, a.keyManagement].compactMap { $0 }.joined(separator: ", ") + ")"
                if a.isReauthenticating { line += ", re-authenticating" }
                if let id = a.identity { line += ", identity \(id)" }
                if let since = a.since { line += ", since \(iso(Date(timeIntervalSince1970: since)))" }
                out += line + "\n"
            }
            if !i.addresses.isEmpty { out += "      addresses: \(i.addresses.map(\.description).joined(separator: ", "))\n" }
            for r in i.defaultRoutes { out += "      default route: \(r)\n" }
        }
        return out.trimmed(where: \.isNewline)
    }

    static func why(_ s: StatusReply) -> String {
        decision(s.decision, policyName: s.policyName, policyFile: s.policyFile)
    }

    /// A decision with its per-interface findings (`why`, `simulate`).
    static func decision(_ d: Decision, policyName: String, policyFile: String) -> String {
        var out = "\(d.segment.rawValue): \(d.reason)\n"
        if !d.findings.isEmpty { out += "\nper interface:\n" }
        for f in d.findings {
            let site = f.site.map { " [site \($0)]" } ?? ""
            out += "  \(f.status.rawValue.padded(to: 18)) \(f.detail)\(site)\n"
        }
        out += "\npolicy: \(policyName) (\(policyFile))"
        return out
    }

    static func policySummary(_ p: Policy, file: String) -> String {
        var out = "\(file): OK: policy \"\(p.name)\", schema \(p.schemaVersion)\n"
        for site in p.sites {
            out += "  site \(site.name): \(site.wireless.count) Wi-Fi rule\(site.wireless.count == 1 ? "" : "s"), \(site.wired.count) wired rule\(site.wired.count == 1 ? "" : "s")\n"
            for w in site.wireless {
                let sec = w.security.map(\.rawValue).sorted().joined(separator: "/")
                let aps = w.bssids.isEmpty ? "any access point" : "\(w.bssids.count) pinned access point\(w.bssids.count == 1 ? "" : "s")"
                let auth = w.deviceAuth == .none ? "" : ", device auth \(w.deviceAuth.rawValue)"
                let network = w.identity.namesNothing && w.identity.server.isEmpty ? "" : ", " + identitySummary(w.identity, interfaceOnlyDefault: false, deviceAuth: w.deviceAuth != .none)
                out += "    wifi  SSID '\(w.ssid)' \(sec), \(aps)\(auth)\(network)\n"
            }
            for r in site.wired {
                var parts: [String] = []
                if !r.interfaces.isEmpty { parts.append("interfaces \(r.interfaces.joined(separator: " "))") }
                if !r.macs.isEmpty { parts.append("MACs \(r.macs.sorted().map(\.description).joined(separator: " "))") }
                if !r.linkKinds.isEmpty { parts.append("also link kinds \(r.linkKinds.sorted().joined(separator: " "))") }
                if r.deviceAuth != .none { parts.append("device auth \(r.deviceAuth.rawValue)") }
                parts.append(identitySummary(r.identity, interfaceOnlyDefault: r.deviceAuth == .none, deviceAuth: r.deviceAuth != .none))
                out += "    wired \(parts.joined(separator: ", "))\n"
            }
        }
        out += "  other uplinks: \(p.uplinks.otherUplinks.rawValue)"
        if !p.uplinks.ignore.isEmpty { out += " (ignoring \(p.uplinks.ignore.joined(separator: " ")))" }
        out += "\n  VDI gateways: \(p.vdi.gateways.isEmpty ? "none" : p.vdi.gateways.map { g in "\(g.prefix) \(g.transport.rawValue)\(g.ports.isEmpty ? "" : " " + g.ports.map(String.init).joined(separator: ","))" }.joined(separator: "; "))"
        let c = p.capture
        if c.mode == .off {
            out += "\n  capture blocking: off"
        } else {
            out += "\n  capture blocking: \(c.mode.rawValue), scope \(c.scope.rawValue), watching \(c.watch.joined(separator: " ")); blocklist \(c.blockNames.count) names, \(c.blockPaths.count) paths, \(c.blockSHA256.count) hashes; fail mode \(c.failMode.rawValue) after \(c.decisionTimeoutMs) ms"
            let protecting = p.profiles.filter { $0.capture != .none }
            if !protecting.isEmpty { out += "\n    during sessions: " + protecting.map { "\($0.name) \($0.capture.rawValue)" }.joined(separator: ", ") }
        }
        return out
    }

    /// What a rule requires of the network, in one phrase.
    static func identitySummary(_ id: NetworkIdentity, interfaceOnlyDefault: Bool, deviceAuth: Bool) -> String {
        var parts: [String] = []
        if !id.gateways.isEmpty { parts.append("gateway \(id.gateways.map(\.description).joined(separator: " or "))") }
        if !id.prefixes.isEmpty { parts.append("inside \(id.prefixes.map(\.description).joined(separator: " "))") }
        if let t = id.trustedServer { parts.append("trusted server \(t.endpoint) (\(t.spkiSHA256.count) pinned key\(t.spkiSHA256.count == 1 ? "" : "s"))") }
        if !id.server.certSHA256.isEmpty { parts.append("802.1X server certificate pinned") }
        if !id.server.caSHA256.isEmpty { parts.append("802.1X server CA pinned") }
        if let d = id.server.domain { parts.append("802.1X server \(d)") }
        if deviceAuth && id.server.isEmpty { parts.append("802.1X server not pinned (the supplicant's ca_cert is the only check)") }
        if parts.isEmpty {
            if id.interfaceOnly { return "network: interface only (acknowledged; any LAN on the port counts)" }
            if interfaceOnlyDefault { return "network: NOT CHECKED (any LAN on the port counts)" }
            return "network: not checked"
        }
        return "network: " + parts.joined(separator: ", ")
    }

    static func iso(_ d: Date) -> String { d.ISO8601Format() }
}

