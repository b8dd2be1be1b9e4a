// Operators: named accounts with scrypt-hashed passwords guard the dashboard, /metrics, the
// admin API and the export; a management listener of their own keeps them off the agents' port;
// admin actions are recorded with the operator's name.

import AsyncHTTPClient
import Crypto
import Foundation
import Logging
@testable import SegguardCollector
import SegguardPolicy
import SegguardReport
import Synchronization
import Testing

@Suite("Operators: accounts, sign-in, the management listener")
struct OperatorTests {
    static func basic(_ name: String, _ password: String) -> (String, String) {
        ("Authorization", "Basic " + Data("\(name):\(password)".utf8).base64EncodedString())
    }

    static func accountsFile(_ dir: String, _ lines: [String]) throws -> String {
        let path = dir + "/operators"
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test("a hashed password verifies, another does not; the file's problems name their line")
    func accounts() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let hash = try OperatorAccount.hash(password: "correct horse battery", logN: 10)
        #expect(hash.hasPrefix("scrypt$1024$8$1$"))
        let ops = try OperatorAccounts.load(path: try Self.accountsFile(dir, ["# operators", "", "sato:\(hash)"]))
        #expect(ops.authenticate(basic: Self.basic("sato", "correct horse battery").1) == "sato")
        #expect(ops.authenticate(basic: Self.basic("sato", "correct horse batterY").1) == nil)
        #expect(ops.authenticate(basic: Self.basic("suzuki", "correct horse battery").1) == nil)
        #expect(ops.authenticate(basic: "Basic !!!") == nil)
        // Remembered: the same pair again needs no scrypt (and still fails for a wrong one).
        #expect(ops.authenticate(basic: Self.basic("sato", "correct horse battery").1) == "sato")
        // A flood of wrong passwords: one scrypt at a time, the rest answered "busy" at once
        // (no memory or threads piling up); a remembered operator still gets in meanwhile.
        let slow = try OperatorAccounts.load(path: try Self.accountsFile(dir, ["sato:" + (try OperatorAccount.hash(password: "correct horse battery", logN: 15))]))
        _ = slow.authenticate(basic: Self.basic("sato", "correct horse battery").1)
        let outcomes = Mutex<[OperatorAccounts.Outcome]>([])
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            let o = slow.check(basic: Self.basic("sato", "guess \(i)").1)
            outcomes.withLock { $0.append(o) }
        }
        let all = outcomes.withLock { $0 }
        #expect(all.contains(.refused) && all.contains(.busy) && !all.contains { if case .signedIn = $0 { true } else { false } }, "\(all)")
        #expect(slow.check(basic: Self.basic("sato", "correct horse battery").1) == .signedIn("sato"))
        for (lines, expected) in [(["sato"], "line 1: expected NAME:scrypt"), (["ok:\(hash)", "bad name:\(hash)"], "line 2: operator name"),
                                  (["sato:bcrypt$x"], "line 1: the hash is not scrypt"), (["sato:\(hash)", "sato:\(hash)"], "line 2: operator \"sato\" given twice"),
                                  (["# nobody"], "no operator account")] {
            #expect(throws: (any Error).self) { try OperatorAccounts.load(path: try Self.accountsFile(dir, lines)) }
            do { _ = try OperatorAccounts.load(path: try Self.accountsFile(dir, lines)) } catch {
                #expect("\(error)".contains(expected), "\(error)")
            }
        }
    }

    @Test("with operators, the dashboard, /metrics, the admin API and the export need a sign-in (401 + WWW-Authenticate); the admin token still works; a push records the operator")
    func signIn() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ops = try OperatorAccounts.load(path: try Self.accountsFile(dir, ["sato:" + (try OperatorAccount.hash(password: "correct horse battery", logN: 10))]))
        let c = try await TestCollector.start { $0.operators = ops }
        defer { c.pki.remove() }
        let good = [Self.basic("sato", "correct horse battery")], bad = [Self.basic("sato", "wrong password!")]
        let token = [("Authorization", "Bearer \(TestCollector.adminToken)")]
        try await withClient(try c.client()) { (client: HTTPClient) async throws -> Void in
            for path in ["/", "/metrics", "/api/v1/admin/agents", "/api/v1/admin/export/events?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z"] {
                let anon = try await call(client, .GET, c.url + path)
                #expect(anon.status == 401, "\(path)")
                #expect(anon.headers.contains { $0.0.lowercased() == "www-authenticate" && $0.1.hasPrefix("Basic realm=") }, "\(path)")
                #expect(try await call(client, .GET, c.url + path, headers: bad).status == 401, "\(path)")
                #expect(try await call(client, .GET, c.url + path, headers: good).status == 200, "\(path)")
                #expect(try await call(client, .GET, c.url + path, headers: token).status == 200, "\(path)")
            }
            let metrics = try await call(client, .GET, c.url + "/metrics", headers: good).body
            #expect(metrics.contains("segguard_collector_auth_failures_total 4"), "\(metrics.prefix(2000))")
            // A push by an operator is recorded with the name.
            let admin = Curve25519.Signing.PrivateKey()
            let bundle = try PolicySigning.sign(PolicyBundlePayload(group: "mynumber", version: 3, policyYAML: validPolicyYAML), with: admin)
            let pushed = try await call(client, .PUT, c.url + "/api/v1/admin/policy/mynumber", body: json(bundle), headers: good)
            #expect(pushed.status == 201, "\(pushed.body)")
            // A refused group name is recorded too.
            #expect(try await call(client, .PUT, c.url + "/api/v1/admin/policy/no%20spaces", body: json(bundle), headers: good).status == 400)
            // An export started from another site (a link in a mail, a hostile page) is refused before anything is recorded.
            let export = c.url + "/api/v1/admin/export/events?from=2026-01-01&to=2026-01-31"
            #expect(try await call(client, .GET, export, headers: good + [("Sec-Fetch-Site", "cross-site")]).status == 403)
            #expect(try await call(client, .GET, export, headers: good + [("Sec-Fetch-Site", "same-site")]).status == 403)
            #expect(try await call(client, .GET, export, headers: good + [("Sec-Fetch-Site", "same-origin")]).status == 200)
            // Pages carry a Content-Security-Policy that allows only their own script.
            let page = try await call(client, .GET, c.url + "/", headers: good)
            let csp = page.headers.first { $0.0.lowercased() == "content-security-policy" }?.1 ?? ""
            #expect(csp.hasPrefix("default-src 'none'; script-src 'sha256-") && csp.contains("frame-ancestors 'none'"), "\(csp)")
            #expect(page.headers.contains { $0.0.lowercased() == "x-frame-options" && $0.1 == "DENY" })
        }
        let actions = try await c.collector.store.actions(limit: 10)
        // Newest first: the same-origin export, the refused push, the push; before them the two exports of the sign-in checks.
        #expect(actions.map(\.action) == ["export", "policy-push-refused", "policy-push", "export", "export"], "\(actions)")
        #expect(actions[1].detail.hasPrefix("400: group") && actions[1].by == "sato", "\(actions[1])")
        #expect(actions[0].target == "group all" && actions[0].detail.hasSuffix(", csv"))
        #expect(try await c.collector.store.bundle(group: "mynumber")?.pushedBy == "sato")
        // Agents are not asked for a password.
        let device = try c.pki.device("tc-0701", group: "mynumber")
        try await withClient(try c.client(device: device)) { (client: HTTPClient) async throws -> Void in
            #expect(try await call(client, .POST, c.url + "/api/v1/heartbeat", body: json(heartbeat("tc-0701"))).status == 204)
        }
        await c.stop()
    }

    @Test("--admin-listen: the operators' routes are served on the management listener only; the agents' listener answers them 404 and keeps the agent routes")
    func managementListener() async throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let store = try await SQLiteStore(path: pki.directory + "/collector.sqlite")
        try await store.migrate()
        var config = CollectorConfiguration(certificatePath: pki.directory + "/server.pem", keyPath: pki.directory + "/server.key", clientCAPath: pki.directory + "/ca.pem")
        config.port = 0
        config.adminPort = 0
        config.adminTokenSHA256 = PolicySigning.sha256Hex(Data(TestCollector.adminToken.utf8))
        var logger = Logger(label: "test-collector")
        logger.logLevel = .critical
        let collector = Collector(store: store, configuration: config, logger: logger)
        let (ports, continuation) = AsyncStream.makeStream(of: (String, Int).self)
        let agentApp = try collector.application { continuation.yield(("agents", $0)) }
        let adminApp = try collector.adminApplication { continuation.yield(("admin", $0)) }
        let t1 = Task { try await agentApp.run() }
        let t2 = Task { try await adminApp.run() }
        defer {
            t1.cancel()
            t2.cancel()
        }
        var bound: [String: Int] = [:]
        for await (name, port) in ports {
            bound[name] = port
            if bound.count == 2 { break }
        }
        let agentsURL = "https://127.0.0.1:\(bound["agents"]!)", adminURL = "https://127.0.0.1:\(bound["admin"]!)"
        let c = TestCollector(pki: pki, collector: collector, port: bound["agents"]!, task: t1)
        let token = [("Authorization", "Bearer \(TestCollector.adminToken)")]
        try await withClient(try c.client()) { (client: HTTPClient) async throws -> Void in
            for path in ["/", "/metrics", "/api/v1/admin/agents"] {
                let r = try await call(client, .GET, agentsURL + path, headers: token)
                #expect(r.status == 404 && r.body.contains("management listener"), "\(path): \(r.status)")
                #expect(!r.body.contains("segguard_agents"), "\(path)")
                #expect(try await call(client, .GET, adminURL + path, headers: token).status == 200, "\(path)")
            }
            #expect(try await call(client, .GET, agentsURL + "/healthz").status == 200)
            #expect(try await call(client, .POST, adminURL + "/api/v1/heartbeat", body: json(heartbeat("x"))).status == 404)
        }
        let device = try pki.device("tc-0702", group: "mynumber")
        try await withClient(try c.client(device: device)) { (client: HTTPClient) async throws -> Void in
            #expect(try await call(client, .POST, agentsURL + "/api/v1/heartbeat", body: json(heartbeat("tc-0702"))).status == 204)
        }
        t1.cancel()
        t2.cancel()
        _ = try? await t1.value
        _ = try? await t2.value
        try? await store.close()
    }
}

/// A policy that loads (for pushes in tests).
let validPolicyYAML = "schema_version: 1\nname: pushed\nsites: [{name: hq, wired: [{interfaces: [eth0]}]}]\nvdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}\n"
