// End-to-end reporting with the built binaries: segguardd reports to segguard-collector (both
// in a test namespace, talking over its loopback with mutual TLS). Link flaps make events
// while the agent is SIGKILLed and restarted and the collector is SIGKILLed and restarted
// mid-stream; in the end every event the agent ever spooled is in the collector's store exactly
// once (sequence numbers 1...N, no gap, no duplicate).

import Foundation
import SegguardCollector
import SegguardPKI
import SegguardReport
import SegguardReporter
import SegguardTestSupport
import SegguardWire
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A child process whose output goes to a log file (never the test runner's pipes).
final class Child {
    let process = Process()
    init(_ exe: String, _ args: [String], log: String) throws {
        process.executableURL = URL(fileURLWithPath: exe)
        process.arguments = args
        if !FileManager.default.fileExists(atPath: log) { _ = FileManager.default.createFile(atPath: log, contents: nil) }
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        h.seekToEndOfFile()
        process.standardError = h
        process.standardOutput = FileHandle.nullDevice
        try process.run()
    }

    /// SIGKILL: no clean shutdown of any kind.
    func kill() {
        guard process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

@Suite("Reporting end to end: segguardd -> segguard-collector", .serialized, .enabled(if: canCreateNamespaces, "needs root and iproute2 (network namespaces)"))
struct ReportingTests {
    @Test("SIGKILL of the agent and of the collector mid-stream: every event arrives exactly once")
    func exactlyOnce() async throws {
        let ns = try TestNamespace(prefix: "sgrep")
        let dir = NSTemporaryDirectory() + "sg-reporting-\(getpid())-\(ns.name)"
        var agent: Child?
        var collector: Child?
        defer {
            agent?.kill()
            collector?.kill()
            ns.destroy()
            try? FileManager.default.removeItem(atPath: dir)
        }
        try FileManager.default.createDirectory(atPath: dir + "/pki", withIntermediateDirectories: true)
        _ = try ns.ip("link", "set", "lo", "up")
        try ns.addVeth("sgrep0", index: 4601, peer: "sgrep1", index: 4602)

        let ca = try PKI.makeCA(commonName: "reporting test CA")
        try PKI.write(ca, certificatePath: dir + "/pki/ca.pem", keyPath: dir + "/pki/ca.key")
        try PKI.write(try PKI.issueServer(ca: ca, commonName: "localhost", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"]),
                      certificatePath: dir + "/pki/server.pem", keyPath: dir + "/pki/server.key")
        try PKI.write(try PKI.issueDevice(ca: ca, agentID: "tc-4601", group: "mynumber"), certificatePath: dir + "/pki/device.pem", keyPath: dir + "/pki/device.key")
        try """
            schema_version: 1
            name: reporting-test
            sites: [{name: hq, wired: [{interfaces: ["sgrep0"], link_kinds: [veth]}]}]
            vdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}
            report: {heartbeat_seconds: 1, jitter: 0, batch_size: 7, max_backoff_seconds: 1}
            """.write(toFile: dir + "/policy.yaml", atomically: true, encoding: .utf8)

        let bin = binDir.path
        func startCollector() throws -> Child {
            try Child("/usr/bin/ip", ["netns", "exec", ns.name, bin + "/segguard-collector", "--listen", "127.0.0.1:18443", "--store", "sqlite:\(dir)/collector.sqlite",
                                      "--cert", dir + "/pki/server.pem", "--key", dir + "/pki/server.key", "--client-ca", dir + "/pki/ca.pem", "--log-level", "warning"],
                      log: dir + "/collector.log")
        }
        func startAgent() throws -> Child {
            try Child(bin + "/segguardd", ["--policy", dir + "/policy.yaml", "--netns", ns.path, "--socket", dir + "/control.sock", "--nft-table", "sgreptest",
                                           "--baseline-file", dir + "/baseline.json", "--collector", "https://127.0.0.1:18443", "--collector-ca", dir + "/pki/ca.pem",
                                           "--client-cert", dir + "/pki/device.pem", "--client-key", dir + "/pki/device.key", "--spool", dir + "/spool.sqlite",
                                           "--bundle-dir", dir, "--log-level", "warning"],
                      log: dir + "/agent.log")
        }
        /// Link flaps: each one is a decision change and a binding change on the agent.
        func flap(_ n: Int) throws {
            for _ in 0..<n {
                _ = try ns.ip("link", "set", "sgrep0", "down")
                Thread.sleep(forTimeInterval: 0.03)
                _ = try ns.ip("link", "set", "sgrep0", "up")
                Thread.sleep(forTimeInterval: 0.03)
            }
        }

        collector = try startCollector()
        agent = try startAgent()
        try await Task.sleep(for: .seconds(1.5))
        try flap(10)
        agent?.kill()  // mid-stream: events in the spool, some maybe sent but not yet acknowledged
        agent = try startAgent()
        try await Task.sleep(for: .seconds(1))
        try flap(10)
        collector?.kill()  // mid-stream again, on the other side
        try flap(10)  // spooled while the collector is away
        try await Task.sleep(for: .seconds(1))
        collector = try startCollector()
        try flap(10)

        // Wait until the collector has everything the spool ever numbered.
        let deadline = Date().addingTimeInterval(60)
        var lastSeq: Int64 = 0
        var stored: [StoredEvent] = []
        while Date() < deadline {
            try await Task.sleep(for: .seconds(0.5))
            let spool = try await Spool(path: dir + "/spool.sqlite")
            lastSeq = try await spool.lastSequence()
            let pending = try await spool.summary().pending
            try await spool.close()
            let store = try await SQLiteStore(path: dir + "/collector.sqlite")
            stored = try await store.events(EventFilter(agentID: "tc-4601", limit: 100_000)).filter { $0.event.seq > 0 }
            try await store.close()
            if pending == 0 && stored.count >= Int(lastSeq) && lastSeq > 0 { break }
        }
        let agentLog = (try? String(contentsOfFile: dir + "/agent.log", encoding: .utf8)) ?? ""
        let collectorLog = (try? String(contentsOfFile: dir + "/collector.log", encoding: .utf8)) ?? ""
        #expect(lastSeq >= 80, "agent log:\n\(agentLog.suffix(3000))")
        let seqs = stored.map(\.event.seq).sorted()
        #expect(seqs == Array(1...max(1, lastSeq)), "missing: \(Set(1...max(1, lastSeq)).subtracting(seqs).sorted().prefix(20)); collector log:\n\(collectorLog.suffix(2000))")
        #expect(Set(stored.map(\.event.id)).count == stored.count)
        let kinds = stored.map(\.event.kind)
        #expect(kinds.filter { $0 == "agent-started" }.count == 2)
        #expect(kinds.contains("agent-restarted-uncleanly"))
        #expect(kinds.filter { $0 == "decision-changed" }.count >= 80)
    }

    @Test("SIGKILL at random points while decisions change: every decision and enforcement event the agent logged is in its spool")
    func killedLosesNothingLogged() async throws {
        let ns = try TestNamespace(prefix: "sgrepk")
        let dir = NSTemporaryDirectory() + "sg-reporting-kill-\(getpid())-\(ns.name)"
        var agent: Child?
        defer {
            agent?.kill()
            ns.destroy()
            try? FileManager.default.removeItem(atPath: dir)
        }
        try FileManager.default.createDirectory(atPath: dir + "/pki", withIntermediateDirectories: true)
        _ = try ns.ip("link", "set", "lo", "up")
        try ns.addVeth("sgrepk0", index: 4621, peer: "sgrepk1", index: 4622)
        let ca = try PKI.makeCA(commonName: "kill test CA")
        try PKI.write(ca, certificatePath: dir + "/pki/ca.pem", keyPath: dir + "/pki/ca.key")
        try PKI.write(try PKI.issueDevice(ca: ca, agentID: "tc-4621", group: "mynumber"), certificatePath: dir + "/pki/device.pem", keyPath: dir + "/pki/device.key")
        try """
            schema_version: 1
            name: kill-test
            sites: [{name: hq, wired: [{interfaces: ["sgrepk0"], link_kinds: [veth]}]}]
            vdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}
            report: {heartbeat_seconds: 1, jitter: 0, max_backoff_seconds: 1}
            """.write(toFile: dir + "/policy.yaml", atomically: true, encoding: .utf8)
        // No collector listens: every event stays in the spool, so the spool must hold every
        // id the log names.
        let log = dir + "/agent.log"
        var rounds = 0, logged = Set<String>()
        for round in 0..<8 {
            agent = try Child(binDir.path + "/segguardd", [
                "--policy", dir + "/policy.yaml", "--netns", ns.path, "--socket", dir + "/control.sock", "--nft-table", "sgrepkill",
                "--baseline-file", dir + "/baseline.json", "--collector", "https://127.0.0.1:18445", "--collector-ca", dir + "/pki/ca.pem",
                "--client-cert", dir + "/pki/device.pem", "--client-key", dir + "/pki/device.key", "--spool", dir + "/spool.sqlite",
                "--bundle-dir", dir, "--log-level", "notice"], log: log)
            try await Task.sleep(for: .milliseconds(400))
            // Flap, and kill at a different moment of the flapping each round.
            let killAfter = 3 + (round * 5) % 17
            for i in 0..<20 {
                _ = try ns.ip("link", "set", "sgrepk0", i % 2 == 0 ? "down" : "up")
                if i == killAfter { break }
                usleep(UInt32(2000 * (round + 1)))
            }
            agent?.kill()
            agent = nil
            _ = try? ns.ip("link", "set", "sgrepk0", "up")
            rounds += 1
        }
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        let regex = try Regex("event_id=([0-9a-f-]{36})")
        for m in text.matches(of: regex) { if let id = m.output[1].substring { logged.insert(String(id)) } }
        let spool = try await Spool(path: dir + "/spool.sqlite")
        let spooled = Set(try await spool.pending(limit: 1_000_000, now: Date.distantFuture).map(\.id))
        let lastSeq = try await spool.lastSequence()
        try await spool.close()
        #expect(rounds == 8)
        #expect(logged.count >= 16, "decisions logged over 8 rounds: \(logged.count); log:\n\(text.suffix(2000))")
        let missing = logged.subtracting(spooled)
        #expect(missing.isEmpty, "logged but not in the spool: \(missing.sorted().prefix(10))")
        #expect(!text.contains("event_id=not spooled"), "\(text.suffix(2000))")
        // Every decision line names its spooled event (none is logged ahead of the spool).
        let decisionLines = text.split(separator: "\n").filter { $0.contains("segment decision") }
        #expect(decisionLines.count >= 16 && decisionLines.allSatisfy { $0.contains(regex) }, "\(decisionLines.prefix(5))")
        #expect(spooled.count == Int(lastSeq), "every sequence number assigned is in the spool (no collector took any)")
    }

    @Test("10,000 junk launch requests from one user while the collector is down: every earlier warning is delivered when it is back",
          .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"),
                   "needs python3 and setpriv"))
    func floodKeepsWarnings() async throws {
        let ns = try TestNamespace(prefix: "sgrepf")
        let dir = NSTemporaryDirectory() + "sg-reporting-flood-\(getpid())-\(ns.name)"
        var agent: Child?
        var collector: Child?
        defer {
            agent?.kill()
            collector?.kill()
            ns.destroy()
            try? FileManager.default.removeItem(atPath: dir)
        }
        try FileManager.default.createDirectory(atPath: dir + "/pki", withIntermediateDirectories: true)
        chmod(dir, 0o755)
        _ = try ns.ip("link", "set", "lo", "up")
        try ns.addVeth("sgrepf0", index: 4611, peer: "sgrepf1", index: 4612)
        let ca = try PKI.makeCA(commonName: "flood test CA")
        try PKI.write(ca, certificatePath: dir + "/pki/ca.pem", keyPath: dir + "/pki/ca.key")
        try PKI.write(try PKI.issueServer(ca: ca, commonName: "localhost", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"]),
                      certificatePath: dir + "/pki/server.pem", keyPath: dir + "/pki/server.key")
        try PKI.write(try PKI.issueDevice(ca: ca, agentID: "tc-4611", group: "mynumber"), certificatePath: dir + "/pki/device.pem", keyPath: dir + "/pki/device.key")
        // A small spool, so that the flood would overflow it if it were spooled one by one.
        try """
            schema_version: 1
            name: flood-test
            sites: [{name: hq, wired: [{interfaces: ["sgrepf0"], link_kinds: [veth]}]}]
            vdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}
            profiles: [{name: mynumber, segment: mynumber, command: [/bin/true]}]
            report: {heartbeat_seconds: 1, jitter: 0, batch_size: 50, max_backoff_seconds: 1, spool_max_events: 60}
            """.write(toFile: dir + "/policy.yaml", atomically: true, encoding: .utf8)
        let bin = binDir.path
        agent = try Child(bin + "/segguardd", ["--policy", dir + "/policy.yaml", "--netns", ns.path, "--socket", dir + "/control.sock", "--nft-table", "sgrepflood",
                                               "--baseline-file", dir + "/baseline.nft", "--collector", "https://127.0.0.1:18444", "--collector-ca", dir + "/pki/ca.pem",
                                               "--client-cert", dir + "/pki/device.pem", "--client-key", dir + "/pki/device.key", "--spool", dir + "/spool.sqlite",
                                               "--bundle-dir", dir, "--log-level", "warning"], log: dir + "/agent.log")
        /// Waits until the agent's decision is (or is not) an authorized segment, so that every flap
        /// below is one loss and none is folded into the next.
        func awaitSegment(_ mynumber: Bool) throws {
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline {
                if let (rc, out, _) = try? runCapturing(binDir.appendingPathComponent("segguardctl"), ["status", "--json", "--socket", dir + "/control.sock"]), rc == 0,
                   let s = try? ControlCoding.decoder().decode(ControlReply.self, from: Data(out.utf8)).status,
                   (s.decision.segment != .unauthorized) == mynumber {
                    return
                }
                Thread.sleep(forTimeInterval: 0.02)
            }
            throw CommandError(description: "the agent never decided \(mynumber ? "mynumber" : "not mynumber"); log:\n\((try? String(contentsOfFile: dir + "/agent.log", encoding: .utf8)) ?? "")")
        }
        try awaitSegment(true)
        // Six real warnings: the segment lost six times.
        for _ in 0..<5 {
            _ = try ns.ip("link", "set", "sgrepf0", "down")
            try awaitSegment(false)
            _ = try ns.ip("link", "set", "sgrepf0", "up")
            try awaitSegment(true)
        }
        _ = try ns.ip("link", "set", "sgrepf0", "down")
        try awaitSegment(false)

        // uid 65534: 10,000 launch requests, each refused (off-segment).
        try """
            import socket, sys
            sent = 0
            for i in range(10000):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(sys.argv[1])
                    s.sendall(b'{"version":1,"command":"launch","profile":"mynumber"}\\n')
                    s.recv(65536)
                    sent += 1
                except OSError:
                    pass
                s.close()
            print(sent)
            """.write(toFile: dir + "/flood.py", atomically: true, encoding: .utf8)
        chmod(dir + "/flood.py", 0o644)
        let out = try runCommand(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", dir + "/flood.py", dir + "/control.sock"])
        #expect((Int(out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) >= 9_990, "requests answered: \(out)")

        collector = try Child("/usr/bin/ip", ["netns", "exec", ns.name, bin + "/segguard-collector", "--listen", "127.0.0.1:18444", "--store", "sqlite:\(dir)/collector.sqlite",
                                              "--cert", dir + "/pki/server.pem", "--key", dir + "/pki/server.key", "--client-ca", dir + "/pki/ca.pem", "--log-level", "warning"],
                              log: dir + "/collector.log")
        let deadline = Date().addingTimeInterval(60)
        var stored: [StoredEvent] = []
        while Date() < deadline {
            try await Task.sleep(for: .seconds(0.5))
            let spool = try await Spool(path: dir + "/spool.sqlite")
            let pending = try await spool.summary().pending
            try await spool.close()
            let store = try await SQLiteStore(path: dir + "/collector.sqlite")
            stored = try await store.events(EventFilter(agentID: "tc-4611", limit: 100_000))
            try await store.close()
            if pending == 0 && !stored.isEmpty { break }
        }
        // A loss is a change from an authorized segment. The agent may start before the veth has
        // carrier: its initial decision is then a warning too, from the placeholder (CI saw 7).
        let lost = stored.filter { $0.event.kind == "decision-changed" && $0.event.severity == "warning" && $0.event.details["previous"] != "unauthorized" }
        #expect(lost.count == 6, "every segment loss before the flood: \(stored.map(\.event.kind))")
        let refused = stored.filter { $0.event.kind == "launch-refused" }
        #expect(refused.count <= 2 && refused.first?.event.details["uid"] == "65534", "the flood, held back: \(refused.count) events")
    }
}
