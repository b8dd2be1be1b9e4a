// segguard-bench: measures the agent core on the real kernel (needs root).
//  1. latency from a link change in a network namespace to the new segment decision,
//     over N changes (carrier lost / back on a veth), p50/p90/p99/max;
//  2. the idle resident memory (VmRSS) of a running segguardd.

import ArgumentParser
import Foundation
import Logging
import SegguardDecision
import SegguardDeviceAuth
import SegguardEnforce
import SegguardWire
import SegguardNetlink
import SegguardPolicy
import SegguardTestSupport
import Synchronization

#if canImport(Glibc)
import Glibc
#endif


/// Decisions as they are made on the watcher thread, with the instant each was made.
final class DecisionLog: Sendable {
    struct Entry { var segment: Segment; var at: UInt64 }
    private let state: Mutex<(SegmentMonitor, [Entry])>
    private let condition = NSCondition()

    init(policy: Policy) { state = Mutex((SegmentMonitor(policy: policy), [])) }

    func observe(_ s: NetworkSnapshot) {
        let now = monotonicNanos()
        condition.lock()
        state.withLock { st in
            if let c = st.0.update(s) { st.1.append(Entry(segment: c.current.segment, at: now)) }
        }
        condition.broadcast()
        condition.unlock()
    }

    /// Waits for the first decision change at or after index `from` to `segment`; returns its time.
    func wait(for segment: Segment, from: Int, timeout: TimeInterval = 5) -> (Int, UInt64)? {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while true {
            let hit: (Int, UInt64)? = state.withLock { st in
                for i in from..<st.1.count where st.1[i].segment == segment { return (i + 1, st.1[i].at) }
                return nil
            }
            if let hit { return hit }
            if !condition.wait(until: deadline) { return nil }
        }
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "segguard-bench",
        abstract: "Measurements on the real kernel, in private network namespaces (root).",
        subcommands: [DecisionBench.self, EnforceBench.self, EAPBench.self, ExecLoop.self, CollectorBench.self, CollectorLoad.self],
        defaultSubcommand: DecisionBench.self)
}

struct DecisionBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decision",
        abstract: "Link-change-to-decision latency and segguardd idle RSS.")

    @Option(help: "Number of link changes (half carrier-lost, half carrier-back).")
    var changes = 400

    @Option(help: "Seconds to let segguardd idle before reading its RSS.")
    var idleSeconds = 3.0

    @Option(help: "Path of segguardd (default: next to this binary).")
    var segguardd: String?

    func run() throws {
        guard isRoot else { throw ValidationError("segguard-bench needs root (network namespaces)") }
        let ns = try TestNamespace(prefix: "sgbench")
        defer { ns.destroy() }
        try runCommand(["ip", "netns", "exec", ns.name, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])
        try ns.addVeth("sgb0", index: 4001, peer: "sgbpeer0", index: 4002)

        let policy = Policy(name: "bench", sites: [Site(name: "bench", wired: [WiredRule(interfaces: ["sgb*"], linkKinds: ["veth"])])])
        let log = DecisionLog(policy: policy)
        let watcher = NetworkWatcher(options: .init(networkNamespace: ns.path))
        try watcher.start(onSnapshot: { log.observe($0) })
        defer { watcher.stop() }
        guard var (cursor, _) = log.wait(for: .authorizedWired, from: 0) else { throw CommandError(description: "no initial authorized-wired decision") }

        let toggler = try LinkToggler(namespacePath: ns.path)
        var samples: [Double] = []
        for i in 0..<changes {
            let up = i % 2 == 1
            let expect: Segment = up ? .authorizedWired : .unauthorized
            let t0 = monotonicNanos()
            try toggler.setUp(4002, up)
            guard let (next, at) = log.wait(for: expect, from: cursor) else {
                throw CommandError(description: "change \(i): no \(expect.rawValue) decision within 5 s")
            }
            cursor = next
            samples.append(Double(at - t0) / 1e6)
        }
        let stats = watcher.statistics
        print("link change -> decision latency over \(samples.count) changes (veth carrier lost/back, ifindex 4001/4002):")
        print("  " + percentiles(samples))
        print("  watcher: \(stats.messages) netlink messages, \(stats.snapshots) snapshots, \(stats.wakeups) wakeups, \(stats.resyncs) resyncs")

        // Idle RSS of the real daemon watching the same namespace.
        let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let daemonPath = segguardd ?? dir.appendingPathComponent("segguardd").path
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("sgbench-\(getpid())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        let policyFile = tmp.appendingPathComponent("policy.yaml")
        try "schema_version: 1\nname: bench\nsites:\n  - name: bench\n    wired:\n      - interfaces: [\"sgb*\"]\n        link_kinds: [veth]\n"
            .write(to: policyFile, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: daemonPath)
        p.arguments = ["--policy", policyFile.path, "--netns", ns.path, "--socket", tmp.appendingPathComponent("control.sock").path, "--log-level", "warning"]
        p.standardError = FileHandle.nullDevice
        try p.run()
        Thread.sleep(forTimeInterval: idleSeconds)
        let status = (try? String(contentsOfFile: "/proc/\(p.processIdentifier)/status", encoding: .utf8)) ?? ""
        let rss = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }.map { $0.dropFirst(6).trimmingCharacters(in: .whitespaces) } ?? "unknown"
        let threads = status.split(separator: "\n").first { $0.hasPrefix("Threads:") }.map { $0.dropFirst(8).trimmingCharacters(in: .whitespaces) } ?? "?"
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

/// Times of enforcement events as the Enforcer reports them.
final class EventTimes: Sendable {
    private let state = Mutex<[(EnforcementEvent.Kind, UInt64, String)]>([])
    private let condition = NSCondition()

    func record(_ e: EnforcementEvent) {
        condition.lock()
        state.withLock { $0.append((e.kind, monotonicNanos(), e.reason)) }
        condition.broadcast()
        condition.unlock()
    }

    var count: Int { state.withLock { $0.count } }

    /// The time of the first `kind` event at index >= from and not before `notBefore`; waits up to 5 s.
    func wait(_ kind: EnforcementEvent.Kind, from: Int, notBefore: UInt64 = 0, reasonContains: String = "") -> (Int, UInt64)? {
        let deadline = Date().addingTimeInterval(5)
        condition.lock()
        defer { condition.unlock() }
        while true {
            let hit: (Int, UInt64)? = state.withLock { s in
                for i in from..<s.count where s[i].0 == kind && s[i].1 >= notBefore && (reasonContains.isEmpty || s[i].2.contains(reasonContains)) {
                    return (i + 1, s[i].1)
                }
                return nil
            }
            if let hit { return hit }
            if !condition.wait(until: deadline) { return nil }
        }
    }
}

struct EnforceBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enforce",
        abstract: "Link change -> nftables table replaced, and -> VDI session process reaped.")

    @Option(help: "Number of carrier losses (each ends one session).")
    var changes = 100

    func run() throws {
        guard isRoot else { throw ValidationError("segguard-bench needs root (network namespaces, nftables, cgroups)") }
        guard let cgroupRoot = SessionTracker.defaultBase() else { throw ValidationError("no cgroup v2 mount") }
        let ns = try TestNamespace(prefix: "sgbench")
        defer { ns.destroy() }
        try runCommand(["ip", "netns", "exec", ns.name, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])
        try ns.addVeth("sgb0", index: 4101, peer: "sgbpeer0", index: 4102)

        let policy = Policy(
            name: "bench", sites: [Site(name: "bench", wired: [WiredRule(interfaces: ["sgb*"], linkKinds: ["veth"])])],
            vdi: VDIRule(gateways: [Gateway(prefix: IPPrefix("192.0.2.10")!, ports: [443])]),
            enforcement: EnforcementRule(graceSeconds: 0, killTimeoutSeconds: 1),
            profiles: [LaunchProfile(name: "mynumber", segment: .mynumber)])
        // libnftables binds to the namespace its context is created in.
        let binding = try withNetworkNamespace(ns.path) { try NftablesBinding(table: "sgbench") }
        let cgroup = cgroupRoot + "-bench-\(getpid())"
        let tracker = try SessionTracker(base: cgroup)
        defer { rmdir(cgroup) }
        let times = EventTimes()
        let enforcer = Enforcer(binding: binding, tracker: tracker, baselinePath: nil, logger: Logger(label: "bench"), onEvent: { times.record($0) })
        let monitor = Mutex(SegmentMonitor(policy: policy))
        let watcher = NetworkWatcher(options: .init(networkNamespace: ns.path))
        try watcher.start(onSnapshot: { snapshot in
            let now = monotonicNanos()
            let decision = monitor.withLock { m -> Decision in
                _ = m.update(snapshot)
                return m.decision
            }
            enforcer.update(decision: decision, policy: policy, eventNanos: now)
        })
        defer { watcher.stop() }
        guard var (cursor, _) = times.wait(.bindingApplied, from: 0) else { throw CommandError(description: "no initial binding") }

        let toggler = try LinkToggler(namespacePath: ns.path)
        var tableMs: [Double] = [], reapMs: [Double] = []
        for i in 0..<changes {
            let session = Process()
            session.executableURL = URL(fileURLWithPath: "/bin/sleep")
            session.arguments = ["3600"]
            try session.run()
            let reply = enforcer.launch(profileName: "mynumber", command: ["/bin/sleep"], requester: LaunchRequester(pid: session.processIdentifier, uid: 0, gid: 0, groups: []))
            guard reply.allowed else { throw CommandError(description: "change \(i): launch refused: \(reply.reason)") }

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
        print("link change (carrier lost) -> enforcement, over \(changes) changes:")
        print("  nftables table replaced:  " + percentiles(tableMs))
        print("  session process reaped:   " + percentiles(reapMs))
    }
}

Bench.main()


/// The network snapshot merged with the 802.1X map, as segguardd decides on it.
final class MergedSnapshots: Sendable {
    private let state = Mutex<(NetworkSnapshot?, [String: DeviceAuthState])>((nil, [:]))
    let log: DecisionLog
    init(log: DecisionLog) { self.log = log }

    func network(_ s: NetworkSnapshot) { emit(state.withLock { $0.0 = s; return $0 }) }
    func deviceAuth(_ m: [String: DeviceAuthState]) { emit(state.withLock { $0.1 = m; return $0 }) }

    private func emit(_ st: (NetworkSnapshot?, [String: DeviceAuthState])) {
        guard var s = st.0 else { return }
        for i in s.interfaces.indices { s.interfaces[i].deviceAuth = st.1[s.interfaces[i].name] }
        log.observe(s)
    }
}

struct EAPBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eap",
        abstract: "EAP failure (hostapd refuses a re-authentication) to new decision, through wpa_supplicant's control socket.")

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

        let policy = Policy(name: "bench", sites: [Site(name: "bench", wired: [WiredRule(interfaces: ["tcb*"], linkKinds: ["veth"], deviceAuth: .eapTLS)])])
        let log = DecisionLog(policy: policy)
        let merged = MergedSnapshots(log: log)
        let watcher = NetworkWatcher(options: .init(networkNamespace: ns.path))
        try watcher.start(onSnapshot: { merged.network($0) })
        defer { watcher.stop() }
        let local = FileManager.default.temporaryDirectory.appendingPathComponent("sgbench-eap-\(getpid())").path
        try FileManager.default.createDirectory(atPath: local, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: local) }
        let source = WPAControlSource(directory: lab.controlDirectory, localDirectory: local, logger: Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() })
        source.start { merged.deviceAuth($0) }
        defer { source.stop() }

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
            // The device now presents a certificate of another CA; the switch re-authenticates.
            let monitor = try EAPMonitor(lab: lab, interface: "tcb0", directory: local)
            defer { monitor.close() }
            _ = try lab.supplicantRequest("tcb0", "SET_NETWORK 0 client_cert \"\(lab.path)/rogue.pem\"")
            _ = try lab.supplicantRequest("tcb0", "SET_NETWORK 0 private_key \"\(lab.path)/rogue.key\"")
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
