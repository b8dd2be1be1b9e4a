// The agent's reporter against an in-process collector over mutual TLS: the spool keeps
// events while the collector is down and delivers each exactly once when it returns; signed
// policy bundles are applied, or refused (bad signature, rollback, invalid policy) with an
// event and the old policy kept.

import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import SegguardCollector
import SegguardPolicy
import SegguardReport
import SegguardReporter
import Synchronization
import Testing

/// A reporter for device `id` in `group`, spooling in `dir`.
func makeReporter(_ c: TestCollector, id: String, group: String, dir: String, key: Curve25519.Signing.PublicKey? = nil,
                  applied: AppliedBundle? = nil, url: String? = nil, requestTimeout: Double = 20, heldRetry: Double = 300,
                  apply: @escaping Reporter.BundleApplier = { _ in }) async throws -> Reporter {
    let device = try c.pki.device(id, group: group)
    var keyPath: String?
    if let key {
        keyPath = dir + "/admin.pub"
        try key.rawRepresentation.base64EncodedString().write(toFile: keyPath!, atomically: true, encoding: .utf8)
    }
    let spool = try await Spool(path: dir + "/spool.sqlite")
    var logger = Logger(label: "test-reporter")
    logger.logLevel = .critical
    var config = ReporterConfiguration(collectorURL: url ?? c.url, caPath: c.pki.directory + "/ca.pem", certificatePath: device.cert, keyPath: device.key,
                                       policyPublicKeyPath: keyPath, bundleStatePath: dir + "/bundle.json")
    config.requestTimeoutSeconds = requestTimeout
    config.heldRetrySeconds = heldRetry
    return try Reporter(configuration: config, spool: spool, rule: ReportRule(heartbeatSeconds: 1, jitter: 0, batchSize: 25, maxBackoffSeconds: 1),
                        logger: logger, applied: applied, heartbeat: { heartbeat(id) }, applyBundle: apply)
}

func temporaryDirectory() throws -> String {
    let dir = NSTemporaryDirectory() + "sg-reporter-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

@Suite("Agent reporter (spool, delivery, bundles) against a collector", .serialized)
struct ReporterTests {
    @Test("events wait in the spool while the collector is down and arrive exactly once when it is back")
    func spoolAcrossOutage() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var c = try await TestCollector.start()
        let pki = c.pki
        defer { pki.remove() }
        let port = c.port
        let reporter = try await makeReporter(c, id: "tc-0001", group: "mynumber", dir: dir)
        reporter.start()
        for i in 1...50 { reporter.record(kind: "exec-denied", severity: "warning", reason: "scrot #\(i)") }
        let collector1 = c.collector
        #expect(try await eventually { try await collector1.store.events(EventFilter(agentID: "tc-0001", limit: 1000)).count == 50 })
        #expect(try await eventually { try await reporter.spool.summary().pending == 0 })

        await c.stop()
        for i in 51...70 { reporter.record(kind: "launch-refused", severity: "warning", reason: "off segment #\(i)") }
        #expect(try await eventually(5) { try await reporter.spool.lastSequence() == 70 })
        #expect(try await reporter.spool.summary().pending == 20)
        try await Task.sleep(for: .seconds(1.5))
        #expect(try await reporter.spool.summary().pending == 20)  // nothing lost while it is away

        // Back on the same port and store file.
        let store = try await SQLiteStore(path: pki.directory + "/collector.sqlite")
        c = try await TestCollector.start(store: store, pki: pki, port: port)
        #expect(try await eventually { try await reporter.spool.summary().pending == 0 })
        // seq 0: events the collector records itself (agent-stale/-recovered after the outage).
        let stored = try await c.collector.store.events(EventFilter(agentID: "tc-0001", limit: 1000)).filter { $0.event.seq > 0 }
        #expect(stored.map(\.event.seq).sorted() == Array(1...70).map(Int64.init))
        #expect(Set(stored.map(\.event.id)).count == 70)
        #expect(try await c.collector.store.agents(AgentFilter()).first?.heartbeats ?? 0 >= 1)
        await reporter.stop()
        await c.stop()
    }

    @Test("a verified bundle is applied and reported; a bad signature, a rollback and an invalid policy are refused with events, the policy in force kept")
    func bundles() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let admin = Curve25519.Signing.PrivateKey()
        let c = try await TestCollector.start()  // no key on the collector: it stores what it gets
        defer { c.pki.remove() }
        let store = c.collector.store
        func push(_ b: SignedPolicyBundle) async throws {
            let p = try b.unverifiedPayload()
            #expect(try await store.putBundle(StoredBundle(group: p.group, version: p.version, policySHA256: p.policySHA256, bundle: b, pushedAt: Date(), pushedBy: "test")) == .stored)
        }
        let valid = "schema_version: 1\nname: pushed\nsites: [{name: hq, wired: [{interfaces: [eth0]}]}]\nvdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}\n"
        let appliedVersions = Mutex<[Int64]>([])
        let reporter = try await makeReporter(c, id: "tc-0001", group: "mynumber", dir: dir, key: admin.publicKey) { payload in
            _ = try PolicyLoader.load(text: payload.policyYAML, file: "bundle")
            appliedVersions.withLock { $0.append(payload.version) }
        }
        reporter.start()
        func kinds() async throws -> [String] { try await store.events(EventFilter(agentID: "tc-0001", limit: 100)).reversed().map(\.event.kind) }

        try await push(PolicySigning.sign(PolicyBundlePayload(group: "mynumber", version: 2, policyYAML: valid), with: admin))
        #expect(try await eventually { try await kinds().contains("bundle-applied") })
        #expect(appliedVersions.withLock { $0 } == [2])
        #expect(reporter.appliedBundle?.version == 2)
        #expect(FileManager.default.fileExists(atPath: dir + "/bundle.json"))

        // Signed by someone else.
        try await push(PolicySigning.sign(PolicyBundlePayload(group: "mynumber", version: 3, policyYAML: valid), with: Curve25519.Signing.PrivateKey()))
        #expect(try await eventually { try await kinds().filter { $0 == "bundle-refused" }.count == 1 })
        // An invalid policy, correctly signed.
        try await push(PolicySigning.sign(PolicyBundlePayload(group: "mynumber", version: 4, policyYAML: "schema_version: 1\nname: broken\n"), with: admin))
        #expect(try await eventually { try await kinds().filter { $0 == "bundle-refused" }.count == 2 })
        #expect(appliedVersions.withLock { $0 } == [2])
        #expect(reporter.appliedBundle?.version == 2)
        let refusals = try await store.events(EventFilter(agentID: "tc-0001", limit: 100)).filter { $0.event.kind == "bundle-refused" }.map(\.event)
        #expect(refusals.contains { $0.severity == "critical" && $0.reason.contains("pinned admin key") })
        #expect(refusals.contains { $0.reason.contains("invalid policy") && $0.reason.contains("sites") })
        // Refused bundles are reported once, not at every heartbeat.
        try await Task.sleep(for: .seconds(2.5))
        #expect(try await kinds().filter { $0 == "bundle-refused" }.count == 2)
        await reporter.stop()

        // Rollback: an agent that runs version 9 is served a validly signed version 5.
        let dir2 = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir2) }
        let v9 = try PolicySigning.sign(PolicyBundlePayload(group: "lgwan", version: 9, policyYAML: valid), with: admin)
        let running = AppliedBundle(group: "lgwan", version: 9, policySHA256: try v9.unverifiedPayload().policySHA256, etag: nil, bundle: v9)
        try await push(PolicySigning.sign(PolicyBundlePayload(group: "lgwan", version: 5, policyYAML: valid), with: admin))
        let lgwan = try await makeReporter(c, id: "tc-0100", group: "lgwan", dir: dir2, key: admin.publicKey, applied: running) { _ in
            Issue.record("a rollback bundle must not be applied")
        }
        lgwan.start()
        #expect(try await eventually {
            try await store.events(EventFilter(agentID: "tc-0100")).contains { $0.event.kind == "bundle-refused" && $0.event.reason.contains("rollback") }
        })
        #expect(lgwan.appliedBundle?.version == 9)
        await lgwan.stop()
        await c.stop()
    }

    @Test("bundle validity (not_after): an expired bundle served by the collector is refused (critical) and the policy in force kept; the bundle in force passing its end is reported once and stays in force; the collector refuses to store an expired bundle; old payloads without the field still verify")
    func bundleValidity() async throws {
        let admin = Curve25519.Signing.PrivateKey()
        let valid = "schema_version: 1\nname: pushed\nsites: [{name: hq, wired: [{interfaces: [eth0]}]}]\nvdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}\n"
        // Signing and verifying.
        let later = try PolicySigning.sign(PolicyBundlePayload(group: "mynumber", version: 2, policyYAML: valid, notAfter: Date().addingTimeInterval(3600)), with: admin)
        #expect(try PolicySigning.verify(later, key: admin.publicKey, now: Date()).notAfter != nil)
        let ended = try PolicySigning.sign(PolicyBundlePayload(group: "mynumber", version: 3, policyYAML: valid, notAfter: Date().addingTimeInterval(-60)), with: admin)
        #expect(throws: PolicyBundleError.self) { try PolicySigning.verify(ended, key: admin.publicKey, now: Date()) }
        #expect(try PolicySigning.verify(ended, key: admin.publicKey).version == 3, "without a time (the bundle in force at start) it still verifies")
        let plain = try PolicySigning.sign(PolicyBundlePayload(group: "mynumber", version: 1, policyYAML: valid), with: admin)
        #expect(!Data(base64Encoded: plain.payload)!.elementsEqual(Data()) && !String(decoding: Data(base64Encoded: plain.payload)!, as: UTF8.self).contains("not_after"),
                "a bundle without an end writes no not_after (older agents read it)")
        #expect(try PolicySigning.verify(plain, key: admin.publicKey, now: Date()).notAfter == nil)

        let c = try await TestCollector.start()
        defer { c.pki.remove() }
        let store = c.collector.store
        // The admin API refuses to store an ended bundle (it would take the version number).
        try await withClient(try c.client()) { (client: HTTPClient) async throws -> Void in
            let r = try await call(client, .PUT, c.url + "/api/v1/admin/policy/mynumber", body: json(ended),
                                   headers: [("Authorization", "Bearer \(TestCollector.adminToken)")])
            #expect(r.status == 422 && r.body.contains("expired"), "\(r.status) \(r.body)")
        }
        #expect(try await store.bundle(group: "mynumber") == nil)

        // An agent running version 2 (valid one more second) is served the ended version 3 (a
        // collector replaying an old signed bundle, or stuck on it).
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let shortLived = try PolicySigning.sign(PolicyBundlePayload(group: "mynumber", version: 2, policyYAML: valid, notAfter: Date().addingTimeInterval(1.5)), with: admin)
        let running = AppliedBundle(group: "mynumber", version: 2, policySHA256: try shortLived.unverifiedPayload().policySHA256, etag: nil, bundle: shortLived)
        let p = try ended.unverifiedPayload()
        #expect(try await store.putBundle(StoredBundle(group: "mynumber", version: 3, policySHA256: p.policySHA256, bundle: ended, pushedAt: Date(), pushedBy: "test")) == .stored)
        let reporter = try await makeReporter(c, id: "tc-0200", group: "mynumber", dir: dir, key: admin.publicKey, applied: running) { _ in
            Issue.record("an expired bundle must not be applied")
        }
        reporter.start()
        func events() async throws -> [ReportedEvent] { try await store.events(EventFilter(agentID: "tc-0200", limit: 100)).map(\.event) }
        #expect(try await eventually { try await events().contains { $0.kind == "bundle-refused" && $0.severity == "critical" && $0.reason.contains("expired") } })
        // Then the bundle in force ends: reported once, kept in force.
        #expect(try await eventually(15) { try await events().contains { $0.kind == "bundle-expired" } })
        try await Task.sleep(for: .seconds(2.5))
        let expired = try await events().filter { $0.kind == "bundle-expired" }
        #expect(expired.count == 1 && expired.first?.severity == "critical" && expired.first?.details["version"] == "2", "\(expired)")
        #expect(reporter.appliedBundle?.version == 2)
        await reporter.stop()
        await c.stop()
    }

    @Test("a full spool never drops a warning for an info event: lower ranks go first, an info event finding only warnings is dropped itself")
    func overflowBySeverity() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spool = try await Spool(path: dir + "/spool.sqlite", maxEvents: 10, overflow: .dropOldest)
        for i in 1...3 { try await spool.append(kind: "decision-changed", severity: "warning", reason: "w\(i)") }
        for i in 1...7 { try await spool.append(kind: "binding-applied", severity: "info", reason: "i\(i)") }
        // 10,000 info events: the infos rotate, the three warnings stay.
        for i in 1...10_000 { try await spool.append(kind: "junk", severity: "info", reason: "j\(i)") }
        var kept = try await spool.pending(limit: 100)
        #expect(kept.filter { $0.severity == "warning" }.map(\.reason) == ["w1", "w2", "w3"])
        #expect(kept.count == 10 && kept.last?.reason == "j10000")
        // Warnings displace the infos first, then (drop-oldest) the oldest warning.
        for i in 4...10 { try await spool.append(kind: "decision-changed", severity: "warning", reason: "w\(i)") }
        kept = try await spool.pending(limit: 100)
        #expect(kept.map(\.reason) == (1...10).map { "w\($0)" })
        #expect(try await spool.append(kind: "junk", severity: "info", reason: "no room") == nil, "an info event never displaces a warning")
        try await spool.append(kind: "binding-tampered", severity: "critical", reason: "c1")
        kept = try await spool.pending(limit: 100)
        #expect(kept.first?.reason == "w2" && kept.last?.reason == "c1")
        // drop-newest keeps what is there, but a higher event still displaces a lower one.
        await spool.configure(maxEvents: 10, overflow: .dropNewest)
        #expect(try await spool.append(kind: "decision-changed", severity: "warning", reason: "w11") == nil)
        #expect(try await spool.append(kind: "binding-failed", severity: "critical", reason: "c2")?.reason == "c2")
        kept = try await spool.pending(limit: 100)
        #expect(kept.count == 10 && kept.first?.reason == "w3" && kept.filter { $0.severity == "critical" }.count == 2)
        #expect(try await spool.summary().dropped == 10_000 + 7 + 1 + 1 + 1 + 1)
        try await spool.close()
    }

    @Test("the spool's overflow policy drops and reports: drop-oldest keeps the newest events, the drop count reaches the collector")
    func overflow() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spool = try await Spool(path: dir + "/spool.sqlite", maxEvents: 10, overflow: .dropOldest)
        for i in 1...15 { try await spool.append(kind: "k", severity: "info", reason: "#\(i)") }
        let kept = try await spool.pending(limit: 100)
        #expect(kept.map(\.seq) == Array(6...15).map(Int64.init))
        #expect(try await spool.summary().dropped == 5)
        #expect(await spool.takeUnreportedDrops() == 5)
        await spool.configure(maxEvents: 10, overflow: .dropNewest)
        #expect(try await spool.append(kind: "k", severity: "info", reason: "refused") == nil)
        #expect(try await spool.pending(limit: 100).map(\.seq) == Array(6...15).map(Int64.init))
        // Sequence numbers survive a reopen (a restarted agent continues, never reuses one).
        try await spool.close()
        let reopened = try await Spool(path: dir + "/spool.sqlite", maxEvents: 100)
        #expect(try await reopened.append(kind: "k", severity: "info", reason: "after restart")?.seq == 16)
        #expect(try await reopened.markRunning() == false)
        #expect(try await reopened.markRunning() == true)  // not stopped cleanly in between
        try await reopened.close()
    }
}
