// End-to-end: the built segguardd runs in a namespace, segguardctl queries it over the control
// socket, SIGHUP reloads (a broken policy is refused and the old one kept). The binaries come
// from SEGGUARD_BIN_DIR or the package's .build/debug (scripts/test.sh builds them first).

import Foundation
import SegguardTestSupport
import SegguardWire
import SegguardDecision
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Where the built executables are.
let binDir: URL = {
    if let d = ProcessInfo.processInfo.environment["SEGGUARD_BIN_DIR"] { return URL(fileURLWithPath: d) }
    return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent(".build/debug")
}()

/// Runs `exe` with `args`; returns (exit status, stdout, stderr).
func runCapturing(_ exe: URL, _ args: [String]) throws -> (Int32, String, String) {
    let p = Process()
    p.executableURL = exe
    p.arguments = args
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

/// A running segguardd in its own namespace and temp dir; `stop()` ends it and cleans up.
final class RunningDaemon {
    let ns: TestNamespace
    let dir: URL
    let process = Process()
    let log: URL
    var socket: String { dir.appendingPathComponent("control.sock").path }
    var policyFile: URL { dir.appendingPathComponent("policy.yaml") }

    init(policy: String, environment: [String: String] = [:], arguments: [String] = [], setup: (TestNamespace) throws -> Void) throws {
        let exe = binDir.appendingPathComponent("segguardd")
        guard FileManager.default.isExecutableFile(atPath: exe.path) else {
            throw CommandError(description: "\(exe.path) is not built: run scripts/test.sh (it builds before testing) or set SEGGUARD_BIN_DIR")
        }
        ns = try TestNamespace()
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("segguard-test-\(getpid())-\(ns.name)")
        log = dir.appendingPathComponent("daemon.log")
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try setup(ns)
            try policy.write(to: policyFile, atomically: true, encoding: .utf8)
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            process.executableURL = exe
            process.arguments = ["--policy", policyFile.path, "--netns", ns.path, "--socket", socket,
                                 "--nft-table", "sgdaemontest", "--baseline-file", dir.appendingPathComponent("baseline.json").path] + arguments
            if !environment.isEmpty {
                process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
            }
            process.standardError = try FileHandle(forWritingTo: log)
            // Not the test runner's stdout: a daemon orphaned by a crashed test process would
            // hold swift-test's pipe open and hang the run.
            process.standardOutput = FileHandle.nullDevice
            try process.run()
        } catch {
            cleanup()
            throw error
        }
    }

    func cleanup() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        ns.destroy()
        try? FileManager.default.removeItem(at: dir)
    }

    /// Runs segguardctl with `args`; returns (exit status, stdout, stderr).
    func ctl(_ args: [String]) throws -> (Int32, String, String) {
        try runCapturing(binDir.appendingPathComponent("segguardctl"), args)
    }

    /// Status over the socket, retried while the daemon starts (the socket appears first).
    func status(until predicate: (StatusReply) -> Bool) throws -> StatusReply? {
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if let (rc, out, _) = try? ctl(["status", "--json", "--socket", socket]), rc == 0,
                let reply = try? ControlCoding.decoder().decode(ControlReply.self, from: Data(out.utf8)),
                let s = reply.status, predicate(s) {
                return s
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return nil
    }

    var logText: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }
}

let daemonPolicy = """
    schema_version: 1
    name: daemon-test
    sites:
      - name: hq
        wired:
          - interfaces: ["sgw*"]
            link_kinds: [veth]
    vdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}
    """

@Suite("segguardd and segguardctl end to end", .serialized, .enabled(if: canCreateNamespaces, "needs root and iproute2 to create network namespaces"))
struct DaemonTests {
    @Test("status and why over the control socket follow the namespace; decision changes are logged")
    func statusAndWhy() throws {
        let d = try RunningDaemon(policy: daemonPolicy) { ns in try ns.addVeth("sgw0", index: 3701, peer: "peer0", index: 3702) }
        defer { d.cleanup() }
        let s1 = try #require(try d.status { $0.decision.segment == .authorizedWired })
        #expect(s1.decision.authorizedInterfaces == ["sgw0"])
        #expect(s1.policyName == "daemon-test")
        #expect(s1.snapshot.interfaces.map(\.name) == ["lo", "sgw0", "peer0"])

        try d.ns.ip("link", "set", "peer0", "down")
        let s2 = try #require(try d.status { $0.decision.segment == .unauthorized })
        #expect(s2.decision.reason == "no authorized path: sgw0 matches site 'hq' wired rule (\(d.policyFile.path):6) but has no carrier")

        let (rc, why, _) = try d.ctl(["why", "--socket", d.socket])
        #expect(rc == 0)
        #expect(why.hasPrefix("unauthorized: no authorized path: sgw0 matches site 'hq' wired rule"))
        #expect(why.contains("rejected           sgw0 matches site 'hq' wired rule"))
        #expect(d.logText.contains("segment decision changed"))
        #expect(d.logText.contains("decision=unauthorized"))
    }

    @Test("SIGHUP applies a changed policy; a broken one is refused with its errors and the old one kept")
    func reload() throws {
        let d = try RunningDaemon(policy: daemonPolicy) { ns in try ns.addVeth("sgw0", index: 3801, peer: "peer0", index: 3802) }
        defer { d.cleanup() }
        _ = try #require(try d.status { $0.decision.segment == .authorizedWired })

        // Broken: a typo'd key. Refused, old policy (and decision) kept, error visible in status.
        try (daemonPolicy + "\nuplinkz: {}\n").write(to: d.policyFile, atomically: true, encoding: .utf8)
        kill(d.process.processIdentifier, SIGHUP)
        let refused = try #require(try d.status { $0.lastPolicyError != nil })
        #expect(refused.lastPolicyError?.contains("policy.yaml:9:1: uplinkz: unknown key \"uplinkz\"") == true, "\(refused.lastPolicyError ?? "")")
        #expect(refused.decision.segment == .authorizedWired)
        #expect(refused.policyName == "daemon-test")

        // Valid: a policy that no longer admits veth links turns the decision unauthorized.
        try daemonPolicy.replacingOccurrences(of: "name: daemon-test", with: "name: daemon-test-2")
            .split(separator: "\n").filter { !$0.contains("link_kinds") }.joined(separator: "\n")
            .write(to: d.policyFile, atomically: true, encoding: .utf8)
        kill(d.process.processIdentifier, SIGHUP)
        let applied = try #require(try d.status { $0.policyName == "daemon-test-2" })
        #expect(applied.lastPolicyError == nil)
        #expect(applied.decision.segment == .unauthorized)
        #expect(applied.decision.reason.contains("is a virtual link (veth), which the rule does not admit"))
    }

    @Test("sd_notify: READY=1 only with the first decision, STATUS= per change, watchdog pings, RELOADING/READY around SIGHUP, STOPPING")
    func serviceNotifications() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("segguard-notify-\(getpid())-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let notifyPath = dir.appendingPathComponent("notify").path
        let listener = try NotifyListener(path: notifyPath)
        defer { listener.close() }

        // The namespace is set up with the carrier down, so the first decision is unauthorized.
        let d = try RunningDaemon(policy: daemonPolicy, environment: ["NOTIFY_SOCKET": notifyPath, "WATCHDOG_USEC": "200000"]) { ns in
            try ns.addVeth("sgw0", index: 3991, peer: "peer0", index: 3992, up: false)
            try ns.ip("link", "set", "sgw0", "up")
        }
        defer { d.cleanup() }
        let first = try #require(listener.next { $0.contains("READY=1") })
        #expect(first.contains("STATUS=unauthorized: no authorized path: sgw0 matches site 'hq' wired rule"))
        #expect(listener.received.prefix { !$0.contains("READY=1") }.allSatisfy { !$0.contains("STATUS=") }, "nothing announced before READY")

        try d.ns.ip("link", "set", "peer0", "up")
        #expect(listener.next { $0 == "STATUS=authorized-wired via sgw0" } != nil)

        // Watchdog: WATCHDOG_USEC=200000 means a ping at least every 100 ms from the loop.
        let pingsBefore = listener.received.filter { $0 == "WATCHDOG=1" }.count
        Thread.sleep(forTimeInterval: 0.6)
        _ = listener.next(timeout: 0.2) { _ in false }
        #expect(listener.received.filter { $0 == "WATCHDOG=1" }.count - pingsBefore >= 4)

        kill(d.process.processIdentifier, SIGHUP)
        #expect(listener.next { $0.hasPrefix("RELOADING=1\nMONOTONIC_USEC=") } != nil)
        #expect(listener.next { $0 == "READY=1\nSTATUS=authorized-wired via sgw0" } != nil)

        kill(d.process.processIdentifier, SIGTERM)
        #expect(listener.next { $0.hasPrefix("STOPPING=1") } != nil)
        d.process.waitUntilExit()
    }

    @Test("check-policy: exit 0 with a summary for a good file, exit 1 with every located error for a bad one; --json says the same as JSON")
    func checkPolicy() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("segguard-check-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let good = dir.appendingPathComponent("good.yaml"), bad = dir.appendingPathComponent("bad.yaml")
        try daemonPolicy.write(to: good, atomically: true, encoding: .utf8)
        try "schema_version: 1\nsites:\n  - name: hq\n    wireless:\n      - ssid: mn-office\n        bssids: [\"aa:bb\"]\n        securty: [psk]\nvdi: {gateways: [{address: 192.0.2.10}]}\n"
            .write(to: bad, atomically: true, encoding: .utf8)
        func run(_ file: URL) throws -> (Int32, String, String) {
            try runCapturing(binDir.appendingPathComponent("segguardctl"), ["check-policy", file.path])
        }
        let (rc1, out1, _) = try run(good)
        #expect(rc1 == 0)
        #expect(out1.contains("OK: policy \"daemon-test\""))
        let (rc2, _, err2) = try run(bad)
        #expect(rc2 == 1)
        let lines = err2.split(separator: "\n").map(String.init)
        #expect(lines.contains("\(bad.path):6:18: sites[0].wireless[0].bssids[0]: \"aa:bb\" is not a BSSID"))
        #expect(lines.contains("\(bad.path):7:9: sites[0].wireless[0].securty: unknown key \"securty\""))
        #expect(lines.last == "2 errors; policy refused")
        // --json for CI pipelines: the same findings, machine-readable, on standard output.
        let (rc3, out3, err3) = try runCapturing(binDir.appendingPathComponent("segguardctl"), ["check-policy", "--json", bad.path])
        #expect(rc3 == 1 && err3.isEmpty)
        let report = try #require(try JSONSerialization.jsonObject(with: Data(out3.utf8)) as? [String: Any])
        let errors = try #require(report["errors"] as? [[String: Any]])
        #expect(report["valid"] as? Bool == false && errors.count == 2)
        #expect(errors.first { $0["path"] as? String == "sites[0].wireless[0].securty" }.map { ($0["line"] as? Int, $0["column"] as? Int) } ?? (nil, nil) == (7, 9))
        let (rc4, out4, _) = try runCapturing(binDir.appendingPathComponent("segguardctl"), ["check-policy", "--json", good.path])
        let ok = try #require(try JSONSerialization.jsonObject(with: Data(out4.utf8)) as? [String: Any])
        #expect(rc4 == 0 && ok["valid"] as? Bool == true && ok["name"] as? String == "daemon-test" && (ok["sha256"] as? String)?.count == 64)
    }

    @Test("the multi-call segguardd: linked as segguardctl it is segguardctl (check-policy, exit statuses), as segguard-launch the launcher; any other name exits 2 naming the three")
    func multiCall() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("segguard-multicall-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let daemon = binDir.appendingPathComponent("segguardd")
        for name in ["segguardctl", "segguard-launch", "segguardd", "segguard-tool"] {
            try FileManager.default.createSymbolicLink(at: dir.appendingPathComponent(name), withDestinationURL: daemon)
        }
        let policy = dir.appendingPathComponent("policy.yaml"), bad = dir.appendingPathComponent("bad.yaml")
        try daemonPolicy.write(to: policy, atomically: true, encoding: .utf8)
        try "schema_version: 1\nsites: 7\n".write(to: bad, atomically: true, encoding: .utf8)
        let (rc1, out1, _) = try runCapturing(dir.appendingPathComponent("segguardctl"), ["check-policy", policy.path])
        #expect(rc1 == 0 && out1.contains("OK: policy \"daemon-test\""), "\(out1)")
        let (rc2, _, err2) = try runCapturing(dir.appendingPathComponent("segguardctl"), ["check-policy", bad.path])
        #expect(rc2 == 1 && err2.contains("policy refused"), "\(err2)")
        // The launcher: its own help and its exit status 3 when segguardd cannot be asked.
        let (rc3, out3, _) = try runCapturing(dir.appendingPathComponent("segguard-launch"), ["--help"])
        #expect(rc3 == 0 && out3.contains("USAGE: segguard-launch") && out3.contains("--watch"), "\(out3)")
        let (rc4, _, err4) = try runCapturing(dir.appendingPathComponent("segguard-launch"), ["--no-notify", "--socket", dir.appendingPathComponent("none.sock").path, "--", "true"])
        #expect(rc4 == 3 && err4.contains("segguard-launch: cannot ask segguardd"), "\(err4)")
        let (rc5, out5, _) = try runCapturing(dir.appendingPathComponent("segguardd"), ["--help"])
        #expect(rc5 == 0 && out5.contains("USAGE: segguardd") && out5.contains("--launcher-path"), "\(out5)")
        let (rc6, out6, err6) = try runCapturing(dir.appendingPathComponent("segguard-tool"), ["--help"])
        #expect(rc6 == 2 && out6.isEmpty && err6.contains("runs as segguardd, segguardctl or segguard-launch"), "\(err6)")
    }

    @Test("simulate: the shipped example states against the example policies give the documented decisions; --json decodes; a bad state file exits 2 naming the line")
    func simulate() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        func run(_ args: [String]) throws -> (Int32, String, String) {
            try runCapturing(binDir.appendingPathComponent("segguardctl"), ["simulate"] + args)
        }
        let policy = root.appendingPathComponent("Config/policy.example.yaml").path
        let states = root.appendingPathComponent("Config/states")
        let (rc1, office, _) = try run([states.appendingPathComponent("office-desk.yaml").path, "--policy", policy])
        #expect(rc1 == 0)
        #expect(office.hasPrefix("authorized-wired: enp1s0 has carrier and matches site 'main-building'"), "\(office)")
        #expect(office.contains("gateway 192.0.2.1 at 02:00:5e:00:aa:01, inside 192.0.2.0/25, trusted server 192.0.2.5:443 proven"))
        let (_, home, _) = try run([states.appendingPathComponent("home-router.yaml").path, "--policy", policy])
        #expect(home.hasPrefix("unauthorized: no authorized path: enp1s0 matches site 'main-building'"), "\(home)")
        #expect(home.contains("outside the office prefixes 192.0.2.0/25"))
        let (_, vpn, _) = try run([states.appendingPathComponent("vpn-split-routes.yaml").path, "--policy", policy, "--json"])
        let d = try ControlCoding.decoder().decode(Decision.self, from: Data(vpn.utf8))
        #expect(d.segment == .unauthorized)
        #expect(d.findings.map(\.status) == [.authorized, .conflictingUplink])
        let (_, moved, _) = try run([states.appendingPathComponent("cable-moved-8021x.yaml").path, "--policy",
                                     root.appendingPathComponent("Config/device-auth.example.yaml").path])
        #expect(moved.contains("the 802.1X authentication is from before the link lost carrier"), "\(moved)")
        let (_, other, _) = try run([states.appendingPathComponent("other-device-8021x.yaml").path, "--policy",
                                     root.appendingPathComponent("Config/device-auth.example.yaml").path])
        #expect(other.hasPrefix("unauthorized: "), "\(other)")
        #expect(other.contains("802.1X authenticated with subject 'CN=tc-0099,OU=mynumber' in /etc/segguard/pki/device.pem (key SHA-256 5b0e3c1f9a7d24e8…), not this device's certificate (key SHA-256 c3a9d1e07f5b2468…)"), "\(other)")
        let bad = FileManager.default.temporaryDirectory.appendingPathComponent("segguard-state-\(getpid()).yaml")
        defer { try? FileManager.default.removeItem(at: bad) }
        try "interfaces:\n  - name: eth0\n    carrier: maybe\n".write(to: bad, atomically: true, encoding: .utf8)
        let (rc4, _, err4) = try run([bad.path, "--policy", policy])
        #expect(rc4 == 2)
        #expect(err4.contains("\(bad.path):3:14: interfaces[0].carrier: expected true or false"), "\(err4)")
    }
}

/// A datagram socket standing in for systemd's NOTIFY_SOCKET; records every message.
final class NotifyListener {
    let fd: Int32
    let path: String
    private(set) var received: [String] = []

    init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard rc == 0 else { throw CommandError(description: "bind \(path): errno \(errno)") }
    }

    /// Receives until a message satisfies `match` (returned) or `timeout` passes (nil).
    func next(timeout: Double = 10, _ match: (String) -> Bool) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return nil }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, Int32(left * 1000) + 1) > 0 else { return nil }
            let n = recv(fd, &buf, buf.count, 0)
            guard n > 0 else { continue }
            let msg = String(decoding: buf[0..<n], as: UTF8.self)
            received.append(msg)
            if match(msg) { return msg }
        }
    }

    func close() {
        Glibc.close(fd)
        unlink(path)
    }
}
