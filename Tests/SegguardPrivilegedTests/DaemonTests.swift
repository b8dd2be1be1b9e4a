// End-to-end: the built segguardd runs in a namespace, segguardctl queries it over the control
// socket, SIGHUP reloads (a broken policy is refused and the old one kept). The binaries come
// from SEGGUARD_BIN_DIR or the package's .build/debug (scripts/test.sh builds them first).

import Foundation
import SegguardTestSupport
import SegguardWire
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

    init(policy: String, setup: (TestNamespace) throws -> Void) throws {
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
            process.arguments = ["--policy", policyFile.path, "--netns", ns.path, "--socket", socket]
            process.standardError = try FileHandle(forWritingTo: log)
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
        #expect(refused.lastPolicyError?.contains("policy.yaml:8:1: uplinkz: unknown key \"uplinkz\"") == true, "\(refused.lastPolicyError ?? "")")
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

    @Test("check-policy: exit 0 with a summary for a good file, exit 1 with every located error for a bad one")
    func checkPolicy() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("segguard-check-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let good = dir.appendingPathComponent("good.yaml"), bad = dir.appendingPathComponent("bad.yaml")
        try daemonPolicy.write(to: good, atomically: true, encoding: .utf8)
        try "schema_version: 1\nsites:\n  - name: hq\n    wireless:\n      - ssid: mn-office\n        bssids: [\"aa:bb\"]\n        securty: [psk]\n"
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
    }
}
