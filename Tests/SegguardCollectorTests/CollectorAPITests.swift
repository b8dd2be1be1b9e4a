// The collector's HTTP API over real mutual TLS: identity from the certificate, malformed
// bodies (a property test over mutated heartbeats), policy push and fetch, dashboard, metrics.

import AsyncHTTPClient
import Crypto
import Foundation
@testable import SegguardCollector
import SegguardPKI
import SegguardReport
import SegguardTestSupport
import Testing

@Suite("Collector HTTP API (mutual TLS, in-process)", .serialized)
struct CollectorAPITests {
    @Test("identity comes from the client certificate: no certificate 401, another agent's id in the body 403")
    func identity() async throws {
        let c = try await TestCollector.start()
        defer { c.pki.remove() }
        let a = try c.pki.device("tc-0001", group: "mynumber")
        try c.pki.device("tc-0002", group: "mynumber")
        try await withClient(try c.client(device: a)) { client in
            let ok = try await call(client, .POST, c.url + "/api/v1/heartbeat", body: try json(heartbeat("tc-0001")))
            #expect(ok.status == 204)
            var hb = heartbeat("tc-0001")
            hb.agentID = nil  // optional: identity is the certificate's anyway
            #expect(try await call(client, .POST, c.url + "/api/v1/heartbeat", body: try json(hb)).status == 204)
            let forged = try await call(client, .POST, c.url + "/api/v1/heartbeat", body: try json(heartbeat("tc-0002")))
            #expect(forged.status == 403)
            #expect(forged.body.contains("\\\"tc-0002\\\" in the body is not the agent of the client certificate") || forged.body.contains("is not the agent of the client certificate"))
            let forgedEvents = try await call(client, .POST, c.url + "/api/v1/events", body: try json(EventBatch(agentID: "tc-0002", events: [event(1)])))
            #expect(forgedEvents.status == 403)
            // The identity was read once for the connection, on its event loop, and every
            // request after the first found it there.
            #expect(c.collector.connections.count >= 1)
            #expect(c.collector.connections.hits.withLock { $0 } >= 4)
        }
        // Closed connections leave no identity behind.
        var left = c.collector.connections.count
        for _ in 0..<100 where left > 0 {
            try await Task.sleep(for: .milliseconds(20))
            left = c.collector.connections.count
        }
        #expect(left == 0)
        try await withClient(try c.client()) { anonymous in
            let r = try await call(anonymous, .POST, c.url + "/api/v1/heartbeat", body: try json(heartbeat("tc-0001")))
            #expect(r.status == 401)
            #expect(r.body.contains("client certificate"))
        }
        let agents = try await c.collector.store.agents(AgentFilter())
        #expect(agents.map(\.agentID) == ["tc-0001"])
        #expect(agents.first?.group == "mynumber")
        #expect(agents.first?.heartbeats == 2)
        #expect(try await c.collector.store.events(EventFilter()).isEmpty)
        await c.stop()
    }

    @Test("the collector keeps each agent's certificate end from the TLS handshake: shown on its page (flagged within 30 days), counted in /metrics; an identity without one keeps the stored date")
    func certificateExpiry() async throws {
        let c = try await TestCollector.start()
        defer { c.pki.remove() }
        let soon = try c.pki.device("tc-0801", group: "mynumber", validDays: 10), later = try c.pki.device("tc-0802", group: "mynumber", validDays: 400)
        for (id, device) in [("tc-0801", soon), ("tc-0802", later)] {
            try await withClient(try c.client(device: device)) { (client: HTTPClient) async throws -> Void in
                #expect(try await call(client, .POST, c.url + "/api/v1/heartbeat", body: json(heartbeat(id))).status == 204)
            }
        }
        let store = c.collector.store
        for (id, device) in [("tc-0801", soon), ("tc-0802", later)] {
            let pem = try String(contentsOfFile: device.cert, encoding: .utf8).split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
            let notAfter = try DeviceIdentity.withExpiry(certificateDER: Array(try #require(Data(base64Encoded: pem)))).notValidAfter
            #expect(try await store.agent(id: id)?.certificateNotAfter == notAfter, "\(id)")
        }
        #expect(try await store.counts().certificatesExpiring == 1)
        // A heartbeat recorded without a certificate date (a store's own writer) keeps the one stored.
        _ = try await store.recordHeartbeat(heartbeat("tc-0801"), from: AgentIdentity(agentID: "tc-0801", group: "mynumber"), at: Date())
        #expect(try await store.agent(id: "tc-0801")?.certificateNotAfter != nil)
        try await withClient(try c.client()) { (client: HTTPClient) async throws -> Void in
            #expect(try await call(client, .GET, c.url + "/metrics").body.contains("segguard_agents_certificate_expiring 1"))
            let near = try await call(client, .GET, c.url + "/agents/tc-0801").body
            #expect(near.contains("<td id=\"cert-expiry\" class=\"backlog\"><time datetime=") && near.contains("(9 days left)"), "\(near)")
            let far = try await call(client, .GET, c.url + "/agents/tc-0802?lang=ja").body
            #expect(far.contains("<td id=\"cert-expiry\"><time datetime=") && far.contains("（残り 399 日）"), "\(far)")
        }
        await c.stop()
    }

    @Test("revocation: a revoked device certificate gets 403 with the reason at its next call (an open connection too), at another collector on the same store after one sweep, and after a restart; other devices and a new certificate for the device go on; recorded with who; bad requests named")
    func revocation() async throws {
        let c = try await TestCollector.start(staleSweepSeconds: 0.2)
        defer { c.pki.remove() }
        let replica = try await TestCollector.start(store: c.collector.store, staleSweepSeconds: 0.2, pki: c.pki)
        let stolen = try c.pki.device("tc-0901", group: "mynumber"), other = try c.pki.device("tc-0902", group: "mynumber")
        let stolenClient = try c.client(device: stolen), otherClient = try c.client(device: other), admin = try c.client()
        do {
            try await revocationSteps(c, replica, stolen: stolen, stolenClient: stolenClient, otherClient: otherClient, admin: admin)
        } catch {
            for client in [stolenClient, otherClient, admin] { try? await client.shutdown() }
            throw error
        }
        for client in [stolenClient, otherClient, admin] { try? await client.shutdown() }
    }

    func revocationSteps(_ c: TestCollector, _ replica: TestCollector, stolen: (cert: String, key: String), stolenClient: HTTPClient, otherClient: HTTPClient,
                         admin: HTTPClient) async throws {
        let token = [("Authorization", "Bearer \(TestCollector.adminToken)")]
        #expect(try await call(stolenClient, .POST, c.url + "/api/v1/heartbeat", body: json(heartbeat("tc-0901"))).status == 204)
        #expect(try await call(stolenClient, .POST, replica.url + "/api/v1/heartbeat", body: json(heartbeat("tc-0901"))).status == 204)
        #expect(try await call(otherClient, .POST, c.url + "/api/v1/heartbeat", body: json(heartbeat("tc-0902"))).status == 204)
        let serial = try #require(try await c.collector.store.agent(id: "tc-0901")?.certificateSerial)

        // Bad requests are named; nothing is revoked by them.
        #expect(try await call(admin, .POST, c.url + "/api/v1/admin/revoke", body: Data(#"{"agent_id":"tc-0901","reason":"stolen"}"#.utf8)).status == 401)
        let noReason = try await call(admin, .POST, c.url + "/api/v1/admin/revoke", body: Data(#"{"agent_id":"tc-0901","reason":" "}"#.utf8), headers: token)
        #expect(noReason.status == 400 && noReason.body.contains("reason"))
        let badSerial = try await call(admin, .POST, c.url + "/api/v1/admin/revoke", body: Data(#"{"agent_id":"tc-0901","serial":"zz","reason":"x"}"#.utf8), headers: token)
        #expect(badSerial.status == 400 && badSerial.body.contains("serial"))
        #expect(try await call(admin, .POST, c.url + "/api/v1/admin/revoke", body: Data(#"{"agent_id":"tc-9999","reason":"x"}"#.utf8), headers: token).status == 404)
        #expect(try await call(admin, .POST, c.url + "/api/v1/admin/revoke", body: Data(#"{"agent_id":"tc-0901","reason":"x","extra":1}"#.utf8), headers: token).status == 400)
        #expect(try await c.collector.store.revocations().isEmpty)

        // Revoked by the device (the serial its heartbeats came with).
        let revoked = try await call(admin, .POST, c.url + "/api/v1/admin/revoke", body: Data(#"{"agent_id":"tc-0901","reason":"stolen from the counter"}"#.utf8), headers: token)
        #expect(revoked.status == 201 && revoked.body.contains(serial), "\(revoked.body)")
        #expect(try await call(admin, .POST, c.url + "/api/v1/admin/revoke", body: Data(#"{"agent_id":"tc-0901","reason":"again"}"#.utf8), headers: token).status == 200)
        // Its next call on the same (kept-alive) connection is refused, with the reason.
        let refused = try await call(stolenClient, .POST, c.url + "/api/v1/heartbeat", body: json(heartbeat("tc-0901")))
        #expect(refused.status == 403 && refused.body.contains("revoked") && refused.body.contains("stolen from the counter"), "\(refused.body)")
        #expect(try await call(stolenClient, .GET, c.url + "/api/v1/policy").status == 403)
        // The other replica refuses it after its next sweep.
        #expect(try await eventually(10) { try await call(stolenClient, .POST, replica.url + "/api/v1/events", body: json(EventBatch(events: [event(1)]))).status == 403 })
        #expect(try await call(otherClient, .POST, c.url + "/api/v1/heartbeat", body: json(heartbeat("tc-0902"))).status == 204)
        // Recorded with who; shown on the agent's page and the actions page.
        let actions = try await c.collector.store.actions(limit: 10)
        #expect(actions.map(\.action) == ["revoke"] && actions[0].by == "admin-token" && actions[0].detail.contains(serial), "\(actions)")
        #expect(try await call(admin, .GET, c.url + "/agents/tc-0901").body.contains("revoked"))
        #expect(try await call(admin, .GET, c.url + "/metrics").body.contains("segguard_collector_revoked_refused_total"))
        // A new certificate for the device (enrolled again) works.
        try FileManager.default.removeItem(atPath: stolen.cert)
        try FileManager.default.removeItem(atPath: stolen.key)
        let renewed = try c.pki.device("tc-0901", group: "mynumber")
        try await withClient(try c.client(device: renewed)) { (client: HTTPClient) async throws -> Void in
            #expect(try await call(client, .POST, c.url + "/api/v1/heartbeat", body: json(heartbeat("tc-0901"))).status == 204)
        }
        #expect(try await c.collector.store.agent(id: "tc-0901")?.certificateSerial != serial)
        replica.task.cancel()
        _ = try? await replica.task.value
        await c.stop()
        // After a restart on the same store the revocation still holds from the first call.
        let store = try await SQLiteStore(path: c.pki.directory + "/collector.sqlite")
        try await store.migrate()
        let restarted = try await TestCollector.start(store: store, pki: c.pki)
        #expect(try await call(stolenClient, .POST, restarted.url + "/api/v1/heartbeat", body: json(heartbeat("tc-0901"))).status == 403)
        await restarted.stop()
    }

    @Test("a certificate from another CA does not get through the TLS handshake")
    func foreignCA() async throws {
        let c = try await TestCollector.start()
        let other = try TestPKI()
        defer {
            c.pki.remove()
            other.remove()
        }
        let foreign = try other.device("tc-0001", group: "mynumber")
        try await withClient(try c.client(device: foreign)) { client in
            await #expect(throws: (any Error).self) {
                _ = try await call(client, .POST, c.url + "/api/v1/heartbeat", body: try json(heartbeat("tc-0001")))
            }
        }
        #expect(try await c.collector.store.agents(AgentFilter()).isEmpty)
        await c.stop()
    }

    @Test("events: acknowledged by id, a resend is all duplicates")
    func events() async throws {
        let c = try await TestCollector.start()
        defer { c.pki.remove() }
        let a = try c.pki.device("tc-0001", group: "mynumber")
        try await withClient(try c.client(device: a)) { client in
            let batch = EventBatch(events: (1...3).map { event(Int64($0)) })
            let first = try await call(client, .POST, c.url + "/api/v1/events", body: try json(batch))
            #expect(first.status == 200)
            let ack = try ReportCoding.decoder().decode(BatchAck.self, from: Data(first.body.utf8))
            #expect(ack == BatchAck(stored: batch.events.map(\.id), inserted: 3, duplicates: 0))
            let again = try ReportCoding.decoder().decode(BatchAck.self, from: Data(try await call(client, .POST, c.url + "/api/v1/events", body: try json(batch)).body.utf8))
            #expect(again.inserted == 0 && again.duplicates == 3)
        }
        #expect(try await c.collector.store.events(EventFilter()).count == 3)
        await c.stop()
    }

    @Test("malformed bodies get 4xx with a message naming the problem; the collector keeps serving")
    func malformedBodies() async throws {
        let c = try await TestCollector.start()
        defer { c.pki.remove() }
        let a = try c.pki.device("tc-0001", group: "mynumber")
        let client = try c.client(device: a)
        do {
            try await Self.malformed(client: client, url: c.url + "/api/v1/heartbeat")
        } catch {
            Issue.record("malformed-body run failed: \(error)")
        }
        try? await client.shutdown()
        await c.stop()
    }

    static func malformed(client: HTTPClient, url: String) async throws {
        let valid = try json(heartbeat("tc-0001"))
        // Named cases, each with the words its message must contain.
        let cases: [(String, Data, Int, String)] = [
            ("truncated", valid.prefix(valid.count / 2), 400, "not valid JSON"),
            ("wrong type", try replacing(valid, key: "interval_s", with: "\"thirty\""), 400, "interval_s: expected an integer"),
            ("nested wrong type", try replacing(valid, key: "authorized", with: "\"yes\""), 400, "decision.authorized: expected true or false"),
            ("unknown field", try adding(valid, key: "colour", value: "\"blue\""), 400, "colour: unknown field"),
            ("missing field", try removing(valid, key: "hostname"), 400, "hostname: missing"),
            ("out of range", try replacing(valid, key: "interval_s", with: "0"), 422, "interval_s: 0 is outside"),
            ("empty", Data(), 400, "not valid JSON"),
            ("array", Data("[]".utf8), 400, "body"),
            ("huge", Data(repeating: UInt8(ascii: "a"), count: 2 << 20), 413, "larger than"),
        ]
        for (name, body, status, words) in cases {
            let r = try await call(client, .POST, url, body: body)
            #expect(r.status == status, "\(name): \(r.body)")
            #expect(r.body.contains(words), "\(name): \(r.body)")
        }
        let wrongType = try await call(client, .POST, url, body: valid, contentType: "text/plain")
        #expect(wrongType.status == 415)

        // Property: random mutations of a valid body never crash the collector and never
        // get a 5xx; every answer is 204 (the mutation kept it valid) or 4xx with a message.
        var rng = SeededGenerator(seed: 0x5E66)
        var statuses: [Int: Int] = [:]
        for _ in 0..<300 {
            let mutated = mutate(valid, using: &rng)
            let r = try await call(client, .POST, url, body: mutated)
            statuses[r.status, default: 0] += 1
            #expect(r.status == 204 || (400..<500).contains(r.status), "mutation answered \(r.status): \(r.body)")
            if r.status != 204 { #expect(r.body.contains("\"error\"")) }
        }
        #expect(statuses.keys.contains { (400..<500).contains($0) })
        #expect(try await call(client, .POST, url, body: valid).status == 204)
    }

    static let validPolicy = "schema_version: 1\nname: pushed\nsites: [{name: hq, wired: [{interfaces: [eth0]}]}]\nvdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}\n"

    @Test("an agent claiming a longer heartbeat interval than its group's is held to the group's: a forged 86,400 s does not delay staleness; one event per mismatch")
    func forgedInterval() async throws {
        let admin = Curve25519.Signing.PrivateKey()
        let c = try await TestCollector.start(policyKey: PolicySigningKey(admin.publicKey))
        defer { c.pki.remove() }
        let a = try c.pki.device("tc-0001", group: "mynumber")
        let store = c.collector.store
        let t0 = Date()
        try await withClient(try c.client(device: a)) { (client: HTTPClient) async throws -> Void in
            // The agent cannot take the id of the collector's event first (and so hide it).
            let squat = try await call(client, .POST, c.url + "/api/v1/events", body: try json(EventBatch(events: [event(1, id: "interval-86400-30")])))
            #expect(squat.status == 422, "\(squat.body)")
            for _ in 0..<3 {
                #expect(try await call(client, .POST, c.url + "/api/v1/heartbeat", body: try json(heartbeat("tc-0001", interval: 86_400))).status == 204)
            }
        }
        let agent = try #require(try await store.agents(AgentFilter()).first)
        #expect(agent.intervalSeconds == 30, "held to the collector's default for a group without a bundle")
        let mismatches = try await store.events(EventFilter(agentID: "tc-0001")).filter { $0.event.kind == "heartbeat-interval-mismatch" }
        #expect(mismatches.count == 1, "one event per (claimed, expected): \(mismatches.map(\.event.reason))")
        #expect(mismatches.first?.event.reason == "the agent claims a heartbeat interval of 86400 s; its group's policy sets 30 s: it is held to 30 s for stale detection")
        // Silent for 100 s: stale after 3 × 30 s (with the agent's claim it would take 3 days).
        #expect(try await store.markStale(now: t0.addingTimeInterval(100), intervals: 3).map(\.agentID) == ["tc-0001"])

        // The group's bundle sets 10 s: a claim of 30 s is now too long.
        let tenSeconds = Self.validPolicy + "report: {heartbeat_seconds: 10}\n"
        try await withClient(try c.client()) { adminClient in
            let bundle = try PolicySigning.sign(PolicyBundlePayload(group: "mynumber", version: 1, policyYAML: tenSeconds), with: admin)
            #expect(try await call(adminClient, .PUT, c.url + "/api/v1/admin/policy/mynumber", body: try json(bundle),
                                   headers: [("Authorization", "Bearer \(TestCollector.adminToken)")]).status == 201)
        }
        try await withClient(try c.client(device: a)) { (client: HTTPClient) async throws -> Void in
            #expect(try await call(client, .POST, c.url + "/api/v1/heartbeat", body: try json(heartbeat("tc-0001", interval: 30))).status == 204)
            #expect(try await call(client, .POST, c.url + "/api/v1/heartbeat", body: try json(heartbeat("tc-0001", interval: 5))).status == 204)
        }
        #expect(try await store.agents(AgentFilter()).first?.intervalSeconds == 5, "a shorter claim is kept (stale sooner is safe)")
        let reasons = try await store.events(EventFilter(agentID: "tc-0001")).filter { $0.event.kind == "heartbeat-interval-mismatch" }.map(\.event.reason)
        #expect(reasons.count == 2 && reasons.contains { $0.contains("claims a heartbeat interval of 30 s; its group's policy sets 10 s") }, "\(reasons)")
        await c.stop()
    }

    @Test("policy bundles: admin token required, version only rises, ETag and 304, bad signature refused")
    func policyPush() async throws {
        let admin = Curve25519.Signing.PrivateKey()
        let c = try await TestCollector.start(policyKey: PolicySigningKey(admin.publicKey))
        defer { c.pki.remove() }
        let a = try c.pki.device("tc-0001", group: "mynumber")
        let bundle = try PolicySigning.sign(PolicyBundlePayload(group: "mynumber", version: 1, policyYAML: Self.validPolicy), with: admin)
        let push = c.url + "/api/v1/admin/policy/mynumber"
        try await withClient(try c.client()) { adminClient in
            #expect(try await call(adminClient, .PUT, push, body: try json(bundle)).status == 401)
            #expect(try await call(adminClient, .PUT, push, body: try json(bundle), headers: [("Authorization", "Bearer wrong-token-wrong-token")]).status == 401)
            let auth = [("Authorization", "Bearer \(TestCollector.adminToken)")]
            // A correctly signed bundle whose policy agents would refuse: not stored, and its
            // version number is not taken.
            let broken = try PolicySigning.sign(PolicyBundlePayload(group: "mynumber", version: 1, policyYAML: "schema_version: 1\nname: broken\n"), with: admin)
            let refusedPolicy = try await call(adminClient, .PUT, push, body: try json(broken), headers: auth)
            #expect(refusedPolicy.status == 422)
            #expect(refusedPolicy.body.contains("the bundle's policy does not load: ") && refusedPolicy.body.contains("bundle v1 for group 'mynumber'"), "\(refusedPolicy.body)")
            #expect(try await c.collector.store.bundle(group: "mynumber") == nil)
            #expect(try await call(adminClient, .PUT, push, body: try json(bundle), headers: auth).status == 201)
            let again = try await call(adminClient, .PUT, push, body: try json(bundle), headers: auth)
            #expect(again.status == 409)
            #expect(again.body.contains("already has version 1"))
            let wrongGroup = try await call(adminClient, .PUT, c.url + "/api/v1/admin/policy/lgwan", body: try json(bundle), headers: auth)
            #expect(wrongGroup.status == 422)
            let forged = try PolicySigning.sign(PolicyBundlePayload(group: "mynumber", version: 2, policyYAML: "x"), with: Curve25519.Signing.PrivateKey())
            let refused = try await call(adminClient, .PUT, push, body: try json(forged), headers: auth)
            #expect(refused.status == 422)
            #expect(refused.body.contains("pinned admin key"))
            let agents = try await call(adminClient, .GET, c.url + "/api/v1/admin/agents", headers: auth)
            #expect(agents.status == 200)
        }
        try await withClient(try c.client(device: a)) { client in
            let got = try await call(client, .GET, c.url + "/api/v1/policy")
            #expect(got.status == 200)
            let etag = try #require(got.headers.first { $0.0.lowercased() == "etag" }?.1)
            #expect(try ReportCoding.decodeStrict(SignedPolicyBundle.self, from: Data(got.body.utf8)) == bundle)
            #expect(try await call(client, .GET, c.url + "/api/v1/policy", headers: [("If-None-Match", etag)]).status == 304)
        }
        let other = try c.pki.device("tc-0009", group: "lgwan")
        try await withClient(try c.client(device: other)) { client in
            let none = try await call(client, .GET, c.url + "/api/v1/policy")
            #expect(none.status == 404)
            #expect(none.body.contains("group 'lgwan'"))
        }
        await c.stop()
    }

    @Test("dashboard lists agents with state, reason and stale flag, filters by group and state, escapes what agents send; /metrics counts per agent")
    func dashboardAndMetrics() async throws {
        let c = try await TestCollector.start()
        defer { c.pki.remove() }
        let store = c.collector.store
        let t0 = Date()
        _ = try await store.recordHeartbeat(heartbeat("tc-0001"), from: AgentIdentity(agentID: "tc-0001", group: "mynumber"), at: t0)
        var hostile = heartbeat("tc-0002", authorized: false, reason: "<script>alert(1)</script> cable out")
        hostile.hostname = "<b>evil</b>"
        _ = try await store.recordHeartbeat(hostile, from: AgentIdentity(agentID: "tc-0002", group: "lgwan"), at: t0)
        _ = try await store.recordHeartbeat(heartbeat("tc-0003", interval: 1), from: AgentIdentity(agentID: "tc-0003", group: "mynumber"), at: t0.addingTimeInterval(-60))
        _ = try await store.markStale(now: t0, intervals: 3)
        try await withClient(try c.client()) { client in
            let page = try await call(client, .GET, c.url + "/")
            #expect(page.status == 200)
            #expect(page.body.contains("data-agent=\"tc-0001\" data-state=\"authorized\""))
            #expect(page.body.contains("data-agent=\"tc-0002\" data-state=\"unauthorized\""))
            #expect(page.body.contains("data-agent=\"tc-0003\" data-state=\"stale\""))
            #expect(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt; cable out"))
            #expect(page.body.components(separatedBy: "<script>").count == 2, "only the page's own time script")
            #expect(!page.body.contains("<script>alert"))
            #expect(!page.body.contains("<b>evil</b>"))
            #expect(page.body.contains("agent-stale"))
            let filtered = try await call(client, .GET, c.url + "/?group=mynumber&state=stale")
            #expect(filtered.body.contains("data-agent=\"tc-0003\""))
            #expect(!filtered.body.contains("data-agent=\"tc-0001\""))
            #expect(!filtered.body.contains("data-agent=\"tc-0002\""))
            #expect(try await call(client, .GET, c.url + "/?state=bogus").status == 400)
        }
        let a = try c.pki.device("tc-0001", group: "mynumber")
        try await withClient(try c.client(device: a)) { client in
            #expect(try await call(client, .POST, c.url + "/api/v1/heartbeat", body: try json(heartbeat("tc-0001"))).status == 204)
            #expect(try await call(client, .POST, c.url + "/api/v1/events", body: try json(EventBatch(events: [event(1), event(2, kind: "launch-refused")]))).status == 200)
            let metrics = try await call(client, .GET, c.url + "/metrics")
            #expect(metrics.status == 200)
            #expect(metrics.body.contains("segguard_agent_heartbeats_total{agent=\"tc-0001\",group=\"mynumber\"} 1"))
            #expect(metrics.body.contains("segguard_agent_events_total{agent=\"tc-0001\",group=\"mynumber\",kind=\"launch-refused\"} 1"))
            #expect(metrics.body.contains("segguard_agents{state=\"stale\"} 1"))
        }
        await c.stop()
    }

    @Test("10,000 invented event kinds leave /metrics bounded: unknown kinds count as \"other\"; the events themselves are stored as sent")
    func inventedKinds() async throws {
        let c = try await TestCollector.start()
        defer { c.pki.remove() }
        let a = try c.pki.device("tc-0001", group: "mynumber")
        try await withClient(try c.client(device: a)) { (client: HTTPClient) async throws -> Void in
            var seq: Int64 = 0
            for _ in 0..<10 {
                let batch = (0..<1000).map { _ -> ReportedEvent in
                    seq += 1
                    return event(seq, kind: "k-\(UUID().uuidString.prefix(12))")
                }
                #expect(try await call(client, .POST, c.url + "/api/v1/events", body: try json(EventBatch(events: batch))).status == 200)
            }
            #expect(try await call(client, .POST, c.url + "/api/v1/events", body: try json(EventBatch(events: [event(seq + 1, kind: "exec-denied")]))).status == 200)
            let metrics = try await call(client, .GET, c.url + "/metrics")
            let series = metrics.body.split(separator: "\n").filter { $0.hasPrefix("segguard_agent_events_total{") }
            #expect(series.count == 2, "\(series)")
            #expect(metrics.body.contains("segguard_agent_events_total{agent=\"tc-0001\",group=\"mynumber\",kind=\"other\"} 10000"))
            #expect(metrics.body.contains("segguard_agent_events_total{agent=\"tc-0001\",group=\"mynumber\",kind=\"exec-denied\"} 1"))
            #expect(metrics.body.utf8.count < 20_000, "\(metrics.body.utf8.count) bytes")
        }
        #expect(try await c.collector.store.counts().events == 10_001, "the events are kept as sent; only the metric label is closed")
        await c.stop()
    }
}

// MARK: - Body mutations

func object(_ data: Data) throws -> [String: Any] { try JSONSerialization.jsonObject(with: data) as! [String: Any] }

/// Replaces the value of `key` (searched at any depth) by raw JSON text.
func replacing(_ data: Data, key: String, with raw: String) throws -> Data {
    var text = String(decoding: data, as: UTF8.self)
    let value = try JSONSerialization.jsonObject(with: Data(raw.utf8), options: .fragmentsAllowed)
    let obj = try object(data)
    func walk(_ o: Any) -> Any {
        if var d = o as? [String: Any] {
            for (k, v) in d { d[k] = k == key ? value : walk(v) }
            return d
        }
        if let a = o as? [Any] { return a.map(walk) }
        return o
    }
    let out = try JSONSerialization.data(withJSONObject: walk(obj))
    text = String(decoding: out, as: UTF8.self)
    return Data(text.utf8)
}

func adding(_ data: Data, key: String, value raw: String) throws -> Data {
    var obj = try object(data)
    obj[key] = try JSONSerialization.jsonObject(with: Data(raw.utf8), options: .fragmentsAllowed)
    return try JSONSerialization.data(withJSONObject: obj)
}

func removing(_ data: Data, key: String) throws -> Data {
    var obj = try object(data)
    obj.removeValue(forKey: key)
    return try JSONSerialization.data(withJSONObject: obj)
}

/// One random damage: truncate, flip bytes, insert junk, duplicate a slice, or swap a value.
func mutate(_ data: Data, using rng: inout SeededGenerator) -> Data {
    var bytes = [UInt8](data)
    switch Int.random(in: 0..<6, using: &rng) {
    case 0:
        bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &rng)))
    case 1:
        for _ in 0..<Int.random(in: 1...4, using: &rng) { bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
    case 2:
        let junk = [UInt8](["{", "}", "[", "]", ",", ":", "\"", "\\", "0", "-", "e", "n"].randomElement(using: &rng)!.utf8)
        bytes.insert(contentsOf: junk, at: Int.random(in: 0...bytes.count, using: &rng))
    case 3:
        let i = Int.random(in: 0..<bytes.count, using: &rng), j = min(bytes.count, i + Int.random(in: 1...40, using: &rng))
        bytes.insert(contentsOf: bytes[i..<j], at: Int.random(in: 0...bytes.count, using: &rng))
    case 4:
        let values = ["null", "1e309", "-1", "true", "\"\"", "[]", "{}", "\"\\u0000\"", String(repeating: "[", count: 2000)]
        let text = String(decoding: bytes, as: UTF8.self)
        let keys = ["hostname", "interval_s", "segment", "authorized", "interfaces", "sent_at", "spool", "pending", "name", "since"]
        let key = keys.randomElement(using: &rng)!
        if let r = text.range(of: "\"\(key)\":") {
            let end = text[r.upperBound...].firstIndex { $0 == "," || $0 == "}" } ?? text.endIndex
            bytes = [UInt8]((text[..<r.upperBound] + values.randomElement(using: &rng)! + text[end...]).utf8)
        }
    default:
        bytes = [UInt8](String(repeating: "{\"a\":", count: Int.random(in: 1...3000, using: &rng)).utf8)
    }
    return Data(bytes)
}
