// The monitoring the collector package ships: Prometheus alert rules (checked and unit-tested
// with promtool) and a Grafana dashboard (its structure checked, its queries parsed by
// promtool), both naming only metrics a running collector exports.

import AsyncHTTPClient
import Foundation
import SegguardCollector
import SegguardReport
import SegguardTestSupport
import Testing

@Suite("Monitoring: alert rules and the Grafana dashboard")
struct MonitoringTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Packaging/monitoring")
    static let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"].first { FileManager.default.isExecutableFile(atPath: $0) }
    static var rules: String { (try? String(contentsOf: directory.appendingPathComponent("segguard-alerts.yml"), encoding: .utf8)) ?? "" }

    /// The metric names a PromQL text uses (identifiers followed by `{`, `[` or `)` that start
    /// with segguard_).
    static func metricNames(in text: String) -> Set<String> {
        Set(text.matches(of: /segguard_[a-z_]+/).map { String($0.output) })
    }

    @Test("promtool checks the rules and passes their unit tests", .enabled(if: promtool != nil, "needs promtool (Debian package prometheus)"))
    func promtoolRules() throws {
        let check = try runCommand([Self.promtool!, "check", "rules", Self.directory.appendingPathComponent("segguard-alerts.yml").path])
        #expect(check.contains("SUCCESS"), "\(check)")
        let test = try runCommand([Self.promtool!, "test", "rules", Self.directory.appendingPathComponent("segguard-alerts.test.yml").path])
        #expect(test.contains("SUCCESS"), "\(test)")
    }

    @Test("the Grafana dashboard is a dashboard: title, uid, schema version, panels with a type, a position and Prometheus queries that promtool parses",
          .enabled(if: promtool != nil, "needs promtool (Debian package prometheus)"))
    func grafanaDashboard() throws {
        let data = try Data(contentsOf: Self.directory.appendingPathComponent("segguard-grafana-dashboard.json"))
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect((json["title"] as? String)?.isEmpty == false)
        #expect((json["uid"] as? String)?.isEmpty == false)
        #expect((json["schemaVersion"] as? Int ?? 0) >= 36)
        let panels = try #require(json["panels"] as? [[String: Any]])
        #expect(panels.count >= 6)
        var exprs: [String] = []
        var ids = Set<Int>()
        for p in panels {
            let id = try #require(p["id"] as? Int)
            #expect(ids.insert(id).inserted, "panel id \(id) twice")
            #expect(["stat", "timeseries", "table", "gauge", "bargauge"].contains(p["type"] as? String ?? ""), "\(p["type"] ?? "none")")
            let grid = try #require(p["gridPos"] as? [String: Int])
            #expect(Set(grid.keys) == ["h", "w", "x", "y"] && (grid["x"]! + grid["w"]!) <= 24)
            #expect(((p["datasource"] as? [String: Any])?["type"] as? String) == "prometheus")
            for t in try #require(p["targets"] as? [[String: Any]]) { exprs.append(try #require(t["expr"] as? String)) }
        }
        // promtool parses PromQL in rule files: each query as a recording rule.
        let rules = "groups:\n  - name: dashboard\n    rules:\n" + exprs.enumerated().map { i, e in
            "      - record: dashboard:query_\(i)\n        expr: '\(e.replacingOccurrences(of: "$group", with: "x").replacingOccurrences(of: "'", with: "''"))'\n"
        }.joined()
        let file = NSTemporaryDirectory() + "sg-dashboard-rules-\(UUID().uuidString).yml"
        try rules.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let out = try runCommand([Self.promtool!, "check", "rules", file])
        #expect(out.contains("SUCCESS: \(exprs.count) rules found"), "\(out)")
    }

    @Test("every metric the rules and the dashboard use is one a running collector exports")
    func metricsExist() async throws {
        let c = try await TestCollector.start()
        defer { c.pki.remove() }
        let device = try c.pki.device("tc-0900", group: "mynumber")
        let exported = try await withClient(try c.client(device: device)) { (client: HTTPClient) async throws -> String in
            // Per-agent series appear once an agent has reported.
            _ = try await call(client, .POST, c.url + "/api/v1/heartbeat", body: json(heartbeat("tc-0900")))
            _ = try await call(client, .POST, c.url + "/api/v1/events", body: json(EventBatch(events: [event(1)])))
            return try await call(client, .GET, c.url + "/metrics").body
        }
        await c.stop()
        let names = Set(exported.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }.map { String($0.split(separator: " ")[2]) })
        let dashboard = (try? String(contentsOf: Self.directory.appendingPathComponent("segguard-grafana-dashboard.json"), encoding: .utf8)) ?? ""
        let used = Self.metricNames(in: Self.rules).union(Self.metricNames(in: dashboard))
        #expect(used.count >= 10)
        #expect(used.subtracting(names).isEmpty, "used but not exported: \(used.subtracting(names).sorted()); exported: \(names.sorted())")
        // Event kinds the rules select are kinds segment-guard produces.
        let kinds = Set(Self.rules.matches(of: /kind=~"([a-z|-]+)"/).flatMap { $0.output.1.split(separator: "|").map(String.init) })
        #expect(!kinds.isEmpty && kinds.isSubset(of: EventKinds.known), "\(kinds.subtracting(EventKinds.known))")
    }
}
