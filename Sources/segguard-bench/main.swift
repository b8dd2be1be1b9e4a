// segguard-bench: measures the shipped pipeline on the real kernel (needs root). Every figure
// comes from SegguardAgent driven by its real kernel sources (NetworkWatcher, NftablesBinding,
// SessionTracker, WPAControlSource), in private network namespaces:
//  1. decision: a link change in a namespace to the new segment decision, over N changes
//     (carrier lost / back on a veth), p50/p90/p99/max; and the idle RSS of a running segguardd;
//  2. enforce: a carrier loss to the nftables table replaced and to the VDI session reaped;
//  3. eap: an EAP failure to the new decision; exec-loop and collector: see their help.

import ArgumentParser
import Foundation
import Logging
import SegguardAgent
import SegguardDecision
import SegguardDeviceAuth
import SegguardEnforce
import SegguardNetlink
import SegguardPolicy
import SegguardSystem
import SegguardTestSupport
import SegguardWire
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What the agent decided and did, with the instant it was told (on the agent's loop, right
/// after the decision was enforced).
final class BenchObserver: AgentObserver, Sendable {
    enum Entry { case decision(Segment), event(EnforcementEvent.Kind, String) }
    private let state = Mutex<[(Entry, UInt64)]>([])
    private let condition = NSCondition()

    func decisionChanged(_ change: DecisionChange, eventNanos: UInt64) { append(.decision(change.current.segment)) }
    func recorded(_ event: EnforcementEvent) { append(.event(event.kind, event.reason)) }

    private func append(_ e: Entry) {
        let now = monotonicNanos()
        condition.lock()
        state.withLock { $0.append((e, now)) }
        condition.broadcast()
        condition.unlock()
    }

    var count: Int { state.withLock { $0.count } }

    /// Waits for the first entry at index >= `from`, no earlier than `notBefore`, that `matches`;
    /// returns the index after it and its time.
    func wait(from: Int, notBefore: UInt64 = 0, timeout: TimeInterval = 5, _ matches: (Entry) -> Bool) -> (Int, UInt64)? {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while true {
            let hit: (Int, UInt64)? = state.withLock { s in
                for i in from..<s.count where s[i].1 >= notBefore && matches(s[i].0) { return (i + 1, s[i].1) }
                return nil
            }
            if let hit { return hit }
            if !condition.wait(until: deadline) { return nil }
        }
    }

    func wait(for segment: Segment, from: Int, timeout: TimeInterval = 5) -> (Int, UInt64)? {
        wait(from: from, timeout: timeout) { if case .decision(let s) = $0 { return s == segment } else { return false } }
    }

    func wait(_ kind: EnforcementEvent.Kind, from: Int, notBefore: UInt64 = 0, reasonContains: String = "") -> (Int, UInt64)? {
        wait(from: from, notBefore: notBefore) {
            if case let .event(k, reason) = $0 { return k == kind && (reasonContains.isEmpty || reason.contains(reasonContains)) } else { return false }
        }
    }
}

/// An agent on the real kernel sources in a bench namespace, with its policy file in `dir`.
struct BenchAgent {
    let agent: Agent
    let observer = BenchObserver()
    let dir: String

    init(policy yaml: String, sources: AgentSources, deviceCertificate: String? = nil) throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("sgbench-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try yaml.write(toFile: dir + "/policy.yaml", atomically: true, encoding: .utf8)
        var logger = Logger(label: "segguard-bench")
        logger.logLevel = .critical
        var configuration = AgentConfiguration(policyFile: dir + "/policy.yaml")
        configuration.deviceCertificateFile = deviceCertificate
        agent = Agent(policy: try Agent.loadPolicy(file: dir + "/policy.yaml"), configuration: configuration,
                      sources: sources, observer: observer, logger: logger)
        try agent.start()
    }

    func stop() {
        agent.stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// The agent's own breakdown (segguardctl status' pipeline line).
    func pipeline() -> String {
        guard let p = agent.reply(to: ControlRequest(command: .status), peer: PeerCredentials(pid: getpid(), uid: 0, gid: 0, groups: [])).status?.pipeline else {
            return "  (no pipeline timings)"
        }
        return "  inside the agent, from the loop's wakeup (\(p.samples) table changes):\n" + p.stages.map {
            "    " + $0.name.padding(toLength: 17, withPad: " ", startingAt: 0)
                + String(format: " p50 %7.1f us   p99 %7.1f us   max %7.1f us", $0.p50Micros, $0.p99Micros, $0.maxMicros)
        }.joined(separator: "\n")
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "segguard-bench",
        abstract: "Measurements on the real kernel, in private network namespaces (root).",
        subcommands: [DecisionBench.self, EnforceBench.self, TamperBench.self, EAPBench.self, ExecLoop.self, CollectorBench.self],
        defaultSubcommand: DecisionBench.self)
}

struct DecisionBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decision",
        abstract: "Link-change-to-decision latency through SegguardAgent, and segguardd idle RSS.")

    @Option(help: "Number of link changes (half carrier-lost, half carrier-back).")
    var changes = 400

    @Option(help: "Seconds to let segguardd idle before reading its RSS.")
    var idleSeconds = 3.0

    @Option(help: "Path of segguardd (default: next to this binary).")
    var segguardd: String?

    static let policy = "schema_version: 1\nname: bench\nsites:\n  - name: bench\n    wired:\n      - interfaces: [\"sgb*\"]\n        link_kinds: [veth]\nvdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}\n"

    func run() throws {
        guard isRoot else { throw ValidationError("segguard-bench needs root (network namespaces)") }
        let ns = try TestNamespace(prefix: "sgbench")
        defer { ns.destroy() }
        try runCommand(["ip", "netns", "exec", ns.name, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])
        try ns.addVeth("sgb0", index: 4001, peer: "sgbpeer0", index: 4002)

        let bench = try BenchAgent(policy: Self.policy, sources: AgentSources(network: NetworkWatcher(options: .init(networkNamespace: ns.path))))
        defer { bench.stop() }
        guard var (cursor, _) = bench.observer.wait(for: .authorizedWired, from: 0) else { throw CommandError(description: "no initial authorized-wired decision") }

        let toggler = try LinkToggler(namespacePath: ns.path)
        var samples: [Double] = []
        for i in 0..<changes {
            let up = i % 2 == 1
            let expect: Segment = up ? .authorizedWired : .unauthorized
            let t0 = monotonicNanos()
            try toggler.setUp(4002, up)
            guard let (next, at) = bench.observer.wait(for: expect, from: cursor) else {
                throw CommandError(description: "change \(i): no \(expect.rawValue) decision within 5 s")
            }
            cursor = next
            samples.append(Double(at - t0) / 1e6)
        }
        let status = bench.agent.reply(to: ControlRequest(command: .status), peer: PeerCredentials(pid: getpid(), uid: 0, gid: 0, groups: [])).status
        print("link change -> decision latency through SegguardAgent over \(samples.count) changes (veth carrier lost/back, ifindex 4001/4002):")
        print("  " + percentiles(samples))
        print("  netlink: \(status?.netlinkMessages ?? 0) messages, \(status?.netlinkResyncs ?? 0) resyncs; agent loop: \(bench.agent.loop.statistics.wakeups) wakeups")

        // Idle RSS of the real daemon watching the same namespace.
        let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let daemonPath = segguardd ?? dir.appendingPathComponent("segguardd").path
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("sgbench-\(getpid())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        let policyFile = tmp.appendingPathComponent("policy.yaml")
        try Self.policy.write(to: policyFile, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: daemonPath)
        let sessions = benchSessionCgroup("rss")
        defer { removeSessionCgroups(sessions) }
        p.arguments = ["--policy", policyFile.path, "--netns", ns.path, "--socket", tmp.appendingPathComponent("control.sock").path, "--log-level", "warning",
                       "--baseline-file", tmp.appendingPathComponent("baseline.nft").path, "--nft-table", "sgbench_rss", "--session-cgroup", sessions]
        p.standardError = FileHandle.nullDevice
        try p.run()
        Thread.sleep(forTimeInterval: idleSeconds)
        let procStatus = (try? String(contentsOfFile: "/proc/\(p.processIdentifier)/status", encoding: .utf8)) ?? ""
        let rss = procStatus.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }.map { $0.dropFirst(6).trimmingCharacters(in: .whitespaces) } ?? "unknown"
        let threads = procStatus.split(separator: "\n").first { $0.hasPrefix("Threads:") }.map { $0.dropFirst(8).trimmingCharacters(in: .whitespaces) } ?? "?"
        p.terminate()
        p.waitUntilExit()
        print("segguardd idle after \(idleSeconds) s: VmRSS \(rss), \(threads) threads (\(daemonPath))")
    }
}

/// "p50 … p90 … p99 … max … min …" of samples in milliseconds.
func percentiles(_ values: [Double]) -> String {
    let v = values.sorted()
    func pct(_ p: Double) -> Double { v[min(v.count - 1, Int((p / 100) * Double(v.count - 1)))] }
    return String(format: "p50 %.3f ms   p90 %.3f ms   p99 %.3f ms   max %.3f ms   min %.3f ms", pct(50), pct(90), pct(99), v.last!, v.first!)
}

struct EnforceBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enforce",
        abstract: "Link change -> nftables table replaced, and -> VDI session process reaped, through SegguardAgent.")

    @Option(help: "Number of carrier losses (each ends one session).")
    var changes = 100

    func run() throws {
        guard isRoot else { throw ValidationError("segguard-bench needs root (network namespaces, nftables, cgroups)") }
        guard let cgroupRoot = SessionTracker.defaultBase() else { throw ValidationError("no cgroup v2 mount") }
        let ns = try TestNamespace(prefix: "sgbench")
        defer { ns.destroy() }
        try runCommand(["ip", "netns", "exec", ns.name, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])
        try ns.addVeth("sgb0", index: 4101, peer: "sgbpeer0", index: 4102)

        let policy = """
            schema_version: 1
            name: bench
            sites:
              - name: bench
                wired:
                  - interfaces: ["sgb*"]
                    link_kinds: [veth]
            vdi:
              gateways:
                - address: 192.0.2.10
                  ports: [443]
            enforcement:
              grace_seconds: 0
              kill_timeout_seconds: 1
            profiles:
              - name: mynumber
                segment: mynumber
                command: ["/bin/sleep", "3600"]
            """
        // libnftables binds to the namespace its context is created in.
        let binding = try withNetworkNamespace(ns.path) { try NftablesBinding(table: "sgbench") }
        let cgroup = cgroupRoot + "-bench-\(getpid())"
        let tracker = try SessionTracker(base: cgroup, launcher: nil)
        defer { removeSessionCgroups(cgroup) }
        let bench = try BenchAgent(policy: policy, sources: AgentSources(network: NetworkWatcher(options: .init(networkNamespace: ns.path)), binding: binding, sessions: tracker))
        defer { bench.stop() }
        let times = bench.observer
        guard var (cursor, _) = times.wait(.bindingApplied, from: 0) else { throw CommandError(description: "no initial binding") }

        let toggler = try LinkToggler(namespacePath: ns.path)
        let root = PeerCredentials(pid: 0, uid: 0, gid: 0, groups: [])
        var tableMs: [Double] = [], reapMs: [Double] = []
        for i in 0..<changes {
            let session = Process()
            session.executableURL = URL(fileURLWithPath: "/bin/sleep")
            session.arguments = ["3600"]
            try session.run()
            var requester = root
            requester.pid = session.processIdentifier
            let reply = bench.agent.reply(to: ControlRequest(command: .launch, profile: "mynumber"), peer: requester)
            guard reply.launch?.allowed == true else { throw CommandError(description: "change \(i): launch refused: \(reply.launch?.reason ?? reply.error?.message ?? "?")") }

            let t0 = monotonicNanos()
            try toggler.setUp(4102, false)
            guard let (afterTable, tTable) = times.wait(.bindingApplied, from: cursor, notBefore: t0, reasonContains: "via []") else { throw CommandError(description: "change \(i): table not replaced") }
            guard let (afterReap, tReap) = times.wait(.sessionsEnded, from: cursor, notBefore: t0) else { throw CommandError(description: "change \(i): session not ended") }
            session.waitUntilExit()
            tableMs.append(Double(tTable - t0) / 1e6)
            reapMs.append(Double(tReap - t0) / 1e6)
            cursor = max(afterTable, afterReap)
            let t1 = monotonicNanos()
            try toggler.setUp(4102, true)
            guard let (back, _) = times.wait(.bindingApplied, from: cursor, notBefore: t1) else { throw CommandError(description: "change \(i): not re-authorized") }
            cursor = back
        }
        print("link change (carrier lost) -> enforcement through SegguardAgent, over \(changes) changes:")
        print("  nftables table replaced:  " + percentiles(tableMs))
        print("  session process reaped:   " + percentiles(reapMs))
        print(bench.pipeline())
    }
}

struct EAPBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eap",
        abstract: "EAP failure (hostapd refuses a re-authentication) to new decision, through wpa_supplicant's control socket and SegguardAgent.")

    @Option(help: "Number of refused re-authentications.")
    var rounds = 20

    func run() throws {
        guard isRoot else { throw ValidationError("segguard-bench needs root (network namespaces)") }
        guard EAPLab.available else { throw ValidationError("needs \(EAPLab.programs.joined(separator: ", ")) (scripts/install-deps.sh)") }
        let lab = try EAPLab()
        defer { lab.cleanup() }
        let ns = try TestNamespace(prefix: "sgbench")
        defer { ns.destroy() }
        try ns.addVeth("tcb0", index: 4011, peer: "gwb0", index: 4012)

        let policy = "schema_version: 1\nname: bench\nsites:\n  - name: bench\n    wired:\n      - interfaces: [\"tcb*\"]\n        link_kinds: [veth]\n        device_auth: eap-tls\nvdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}\n"
        let local = FileManager.default.temporaryDirectory.appendingPathComponent("sgbench-eap-\(getpid())").path
        try FileManager.default.createDirectory(atPath: local, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: local) }
        let source = WPAControlSource(directory: lab.controlDirectory, localDirectory: local, logger: Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() })
        let bench = try BenchAgent(policy: policy, sources: AgentSources(network: NetworkWatcher(options: .init(networkNamespace: ns.path)), deviceAuth: source),
                                   deviceCertificate: "\(lab.path)/client.pem")
        defer { bench.stop() }
        let log = bench.observer

        var cursor = 0
        var fromRequest: [Double] = [], fromEvent: [Double] = []
        for round in 0..<rounds {
            // A fresh authenticator each round: after a refusal hostapd keeps the port quiet.
            try lab.startAuthenticator(in: ns, interface: "gwb0")
            try lab.startSupplicant(in: ns, interface: "tcb0", certificate: .client)
            guard let (next, _) = log.wait(for: .authorizedWired, from: cursor, timeout: 15) else {
                throw CommandError(description: "round \(round): no authorized-wired decision after EAP-TLS; wpa_supplicant log:\n\(lab.log("wpa_supplicant").suffix(1500))")
            }
            cursor = next
            // The device now presents a certificate of another CA for its own key (so the
            // agent still sees this device's key: the refusal comes from the authenticator);
            // the switch re-authenticates.
            let monitor = try EAPMonitor(lab: lab, interface: "tcb0", directory: local)
            defer { monitor.close() }
            _ = try lab.supplicantRequest("tcb0", "SET_NETWORK 0 client_cert \"\(lab.path)/client-otherca.pem\"")
            let t0 = monotonicNanos()
            try lab.reauthenticate()
            let failure = try monitor.waitFor("CTRL-EVENT-EAP-FAILURE")
            guard let (after, at) = log.wait(for: .unauthorized, from: cursor) else {
                throw CommandError(description: "round \(round): no unauthorized decision within 5 s of the EAP failure")
            }
            cursor = after
            fromRequest.append(Double(at - t0) / 1e6)
            fromEvent.append((Double(at) - Double(failure)) / 1e6)
            lab.stopSupplicant("tcb0")
            lab.stopAuthenticator()
        }
        print("EAP failure -> decision over \(rounds) refused re-authentications (hostapd EAPOL_REAUTH, certificate of another CA):")
        print("  from the re-authentication request (includes the TLS handshake): " + percentiles(fromRequest))
        print("  from CTRL-EVENT-EAP-FAILURE seen by a second monitor:             " + percentiles(fromEvent))
    }
}

/// A second ATTACHed monitor on the supplicant, to time its events.
final class EAPMonitor {
    let fd: Int32
    let local: String

    init(lab: EAPLab, interface: String, directory: String) throws {
        local = "\(directory)/monitor-\(UInt32.random(in: 0...UInt32.max))"
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var me = sockaddr_un(), peer = sockaddr_un()
        me.sun_family = sa_family_t(AF_UNIX)
        peer.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &me.sun_path) { $0.copyBytes(from: Array(local.utf8)) }
        withUnsafeMutableBytes(of: &peer.sun_path) { $0.copyBytes(from: Array("\(lab.controlDirectory)/\(interface)".utf8)) }
        let size = socklen_t(MemoryLayout<sockaddr_un>.size)
        guard withUnsafePointer(to: &me, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, size) } }) == 0,
              withUnsafePointer(to: &peer, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, size) } }) == 0,
              send(fd, "ATTACH", 6, 0) == 6, (try? waitFor("OK")) != nil
        else { throw CommandError(description: "cannot attach a monitor to \(interface): errno \(errno)") }
    }

    /// Monotonic time at which a datagram starting with (or containing) `text` arrived.
    func waitFor(_ text: String, timeout: Int32 = 5000) throws -> UInt64 {
        var buf = [UInt8](repeating: 0, count: 8192)
        while true {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, timeout) == 1 else { throw CommandError(description: "no \(text) within \(timeout) ms") }
            let n = recv(fd, &buf, buf.count, 0)
            let at = monotonicNanos()
            if n > 0, String(decoding: buf[0..<n], as: UTF8.self).contains(text) { return at }
        }
    }

    func close() {
        Glibc.close(fd)
        unlink(local)
    }
}


/// Spawns a program N times, one after the other, and prints the distribution of spawn-to-exit
/// times: run inside a mount namespace whose filesystem segguardd watches (scripts/bench-capture.sh).
struct ExecLoop: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec-loop", abstract: "Time N execs of a program (posix_spawn + wait), median and p99 in microseconds.")

    @Option(help: "Number of execs.")
    var count = 2000

    @Option(help: "Label printed before the figures.")
    var label = "exec"

    @Flag(help: "Run PROGRAM0, PROGRAM1, … (distinct files: every exec a cache miss).")
    var numbered = false

    @Option(help: "Alternate with this program (e.g. the same binary on an unwatched filesystem) and print both, and the difference of the medians.")
    var baseline: String?

    @Argument(help: "The program to run (no arguments).")
    var program: String

    func run() throws {
        var samples: [Double] = [], base: [Double] = []
        samples.reserveCapacity(count)
        var failures = 0
        for i in 0..<(baseline == nil ? count : 2 * count) {
            let isBase = baseline != nil && i % 2 == 1
            let n = baseline == nil ? i : i / 2
            var pid: pid_t = 0
            let path = isBase ? baseline! : (numbered ? "\(program)\(n)" : program)
            let argv: [UnsafeMutablePointer<CChar>?] = [strdup(path), nil]
            defer { argv.forEach { free($0) } }
            let t0 = monotonicNanos()
            guard posix_spawn(&pid, path, nil, nil, argv, environ) == 0 else {
                failures += 1
                continue
            }
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            let us = Double(monotonicNanos() - t0) / 1000
            if isBase { base.append(us) } else { samples.append(us) }
            if status != 0 { failures += 1 }
        }
        let v = samples.sorted()
        guard !v.isEmpty else { throw CommandError(description: "no exec succeeded") }
        func pct(_ v: [Double], _ p: Double) -> Double { v[min(v.count - 1, Int((p / 100) * Double(v.count - 1)))] }
        var line = String(format: "%@ median %.1f us  p90 %.1f us  p99 %.1f us  max %.0f us  (%d execs, %d failed)", label, pct(v, 50), pct(v, 90), pct(v, 99), v.last!, v.count, failures)
        if !base.isEmpty {
            let b = base.sorted()
            line += String(format: "; unwatched alternate: median %.1f us  p99 %.1f us; added: median %+.1f us (x%.2f)  p99 %+.1f us",
                           pct(b, 50), pct(b, 99), pct(v, 50) - pct(b, 50), pct(v, 50) / pct(b, 50), pct(v, 99) - pct(b, 99))
        }
        print(line)
    }
}

Bench.main()

/// A session cgroup of the benchmark's own (beside the default one), so that a daemon it runs
/// never touches the sessions of an installed segguardd.
func benchSessionCgroup(_ name: String) -> String {
    let mount = SessionTracker.cgroup2Mounts().first?.point ?? "/sys/fs/cgroup"
    return "\(mount)/segguard-bench-\(name)-\(getpid())"
}

/// Removes a session cgroup and its (empty) session-N children.
func removeSessionCgroups(_ base: String) {
    for name in (try? FileManager.default.contentsOfDirectory(atPath: base)) ?? [] where name.hasPrefix("session-") {
        rmdir("\(base)/\(name)")
    }
    rmdir(base)
}
