// segguard-bench tamper: the shipped segguardd, measured from outside. A foreign change to its
// table (the chain flushed, an accept inserted, the table deleted, in turn) is made through
// libnftables from this process; a socket subscribed to nf_tables' notifications in the same
// namespace sees both that transaction and segguardd's restore. The figure is the time between
// receiving the two (so neither process's own clock or logging is trusted).

import ArgumentParser
import Foundation
import SegguardEnforce
import SegguardSystem
import SegguardTestSupport

#if canImport(Glibc)
import Glibc
#endif

struct TamperBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tamper",
        abstract: "A foreign change to segguardd's nftables table -> segguardd's restore committed, as nf_tables announces both.")

    @Option(help: "Number of foreign changes.")
    var changes = 300

    @Option(help: "Path of segguardd (default: next to this binary).")
    var segguardd: String?

    func run() throws {
        let ns = try TestNamespace(prefix: "sgbtamp")
        defer { ns.destroy() }
        try ns.addVeth("sgb0", index: 4201, peer: "sgbpeer0", index: 4202)
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("sgbench-tamper-\(getpid())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        try DecisionBench.policy.write(to: tmp.appendingPathComponent("policy.yaml"), atomically: true, encoding: .utf8)
        let table = "sgbench_tamper"
        let daemonPath = segguardd ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("segguardd").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: daemonPath)
        let sessions = benchSessionCgroup("tamper")
        p.arguments = ["--policy", tmp.appendingPathComponent("policy.yaml").path, "--netns", ns.path, "--socket", tmp.appendingPathComponent("control.sock").path,
                       "--log-level", "error", "--baseline-file", tmp.appendingPathComponent("baseline.nft").path, "--nft-table", table,
                       "--session-cgroup", sessions]
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer {
            p.terminate()
            p.waitUntilExit()
            _ = try? runCommand(["ip", "netns", "exec", ns.name, "nft", "delete", "table", "inet", table], allowFailure: true)
            removeSessionCgroups(sessions)
        }

        // In the namespace: this process's libnftables context and the notification socket.
        let (mine, monitor) = try withNetworkNamespace(ns.path) {
            (try NftablesBinding(table: table), try NftablesMonitor(table: table) { _, _ in false })
        }
        func receive(timeout: Double) -> [(TableChange, UInt64)] {
            var p = pollfd(fd: monitor.fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, Int32(timeout * 1000)) > 0 else { return [] }
            let at = monotonicNanos()
            return monitor.drain().foreign.map { ($0, at) }
        }
        // Until segguardd has made its table (the first decision).
        let deadline = Date().addingTimeInterval(10)
        while (try? mine.fingerprint()) == nil || (try? mine.fingerprint()) == .some(nil) {
            guard Date() < deadline else { throw ValidationError("segguardd made no table in 10 s") }
            Thread.sleep(forTimeInterval: 0.05)
        }
        Thread.sleep(forTimeInterval: 0.3)
        _ = receive(timeout: 0)
        let tid = currentThreadID()
        let kinds: [(String, Data)] = [
            ("flush chain", Data("flush chain inet \(table) output\n".utf8)),
            ("insert accept", Data("insert rule inet \(table) output accept\n".utf8)),
            ("delete table", Data("delete table inet \(table)\n".utf8)),
        ]
        var samples: [String: [Double]] = [:]
        var missed = 0
        for i in 0..<changes {
            let (name, batch) = kinds[i % kinds.count]
            try mine.apply(batch)
            var foreignAt: UInt64?
            var restoredAt: UInt64?
            let until = Date().addingTimeInterval(2)
            while restoredAt == nil && Date() < until {
                for (change, at) in receive(timeout: 0.5) {
                    if change.pid == tid { foreignAt = foreignAt ?? at } else if foreignAt != nil { restoredAt = restoredAt ?? at }
                }
            }
            guard let f = foreignAt, let r = restoredAt else {
                missed += 1
                continue
            }
            samples[name, default: []].append(Double(r &- f) / 1e6)
            Thread.sleep(forTimeInterval: 0.005)
        }
        let all = samples.values.flatMap { $0 }
        guard !all.isEmpty else { throw ValidationError("no restore seen") }
        print("foreign change -> segguardd's restore committed (\(all.count) changes, \(missed) without a restore in 2 s; \(daemonPath)):")
        print("  all            " + percentiles(all))
        for (name, _) in kinds { if let v = samples[name] { print("  " + name.padding(toLength: 14, withPad: " ", startingAt: 0) + " " + percentiles(v)) } }
    }
}
