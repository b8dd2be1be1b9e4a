// The evidence export (CSV and JSON of a time range, streamed in pages) and the retention.

import AsyncHTTPClient
import Foundation
@testable import SegguardCollector
import SegguardReport
import Testing

@Suite("Evidence export and retention")
struct ExportTests {
    @Test("a CSV field: quoted when it must be, quotes doubled, a leading = + - @ made inert for spreadsheets")
    func csvFields() {
        #expect(ExportFormat.csvField("plain") == "plain")
        #expect(ExportFormat.csvField("a,b") == "\"a,b\"")
        #expect(ExportFormat.csvField("say \"hi\"") == "\"say \"\"hi\"\"\"")
        #expect(ExportFormat.csvField("=HYPERLINK(\"x\")") == "\"'=HYPERLINK(\"\"x\"\")\"")
        // CR LF is one Character in Swift: still quoted, and inert when it leads.
        #expect(ExportFormat.csvField("x\r\n2026-01-01,tc-0001") == "\"x\r\n2026-01-01,tc-0001\"")
        #expect(ExportFormat.csvField("a\r\nb") == "\"a\r\nb\"")
        #expect(ExportFormat.csvField("\r\n=HYPERLINK(1)") == "\"'\r\n=HYPERLINK(1)\"")
        #expect(ExportFormat.csvField("+1") == "'+1" && ExportFormat.csvField("@SUM(A1)") == "'@SUM(A1)" && ExportFormat.csvField("-2") == "'-2")
        #expect(ExportFormat.jstTime(RFC3339.parse("2026-11-30T15:00:00.000Z")!) == "2026-12-01T00:00:00.000+09:00")
    }

    @Test("export pages through a range in (time, agent, id) order on both stores; the range's ends and filters hold", arguments: Backend.allCases)
    func storePaging(backend: Backend) async throws {
        let store = try await backend.makeStore()
        let t0 = Date(timeIntervalSince1970: 1_790_000_000)
        let a = AgentIdentity(agentID: "tc-0001", group: "mynumber"), b = AgentIdentity(agentID: "tc-0002", group: "lgwan")
        func ev(_ seq: Int64, _ offset: Double) -> ReportedEvent {
            ReportedEvent(id: UUID().uuidString.lowercased(), seq: seq, time: t0.addingTimeInterval(offset), kind: "exec-denied", severity: "warning", reason: "r\(seq)")
        }
        // 1,234 events for a, some sharing a millisecond; 10 for b; 5 outside the range.
        _ = try await store.insertEvents((1...1234).map { ev($0, Double($0 / 3)) }, from: a, at: t0)
        _ = try await store.insertEvents((1...10).map { ev($0, Double($0)) }, from: b, at: t0)
        _ = try await store.insertEvents((2000...2004).map { ev($0, -10 - Double($0 - 2000)) }, from: a, at: t0)
        var all: [StoredEvent] = []
        var cursor: ExportCursor?
        repeat {
            let page = try await store.exportEvents(ExportRange(from: t0, to: t0.addingTimeInterval(1000)), after: cursor, limit: 100)
            all += page
            cursor = page.last.map(ExportCursor.init(after:))
            if page.count < 100 { break }
        } while true
        #expect(all.count == 1244)
        #expect(Set(all.map(\.event.id)).count == 1244)
        let keys = all.map { ($0.event.time.millis, $0.agentID, $0.event.id) }
        #expect(zip(keys, keys.dropFirst()).allSatisfy { $0 < $1 }, "ordered by (time, agent, id)")
        let onlyB = try await store.exportEvents(ExportRange(from: t0, to: t0.addingTimeInterval(1000), group: "lgwan"), after: nil, limit: 100)
        #expect(onlyB.count == 10 && onlyB.allSatisfy { $0.agentID == "tc-0002" })
        // `to` is excluded.
        #expect(try await store.exportEvents(ExportRange(from: t0, to: t0.addingTimeInterval(1)), after: nil, limit: 100).count == 2)

        // Retention: by when the collector received them.
        _ = try await store.insertEvents([ev(3000, 0)], from: b, at: t0.addingTimeInterval(86_400 * 10))
        #expect(try await store.pruneEvents(receivedBefore: t0.addingTimeInterval(86_400)) == 1249)
        #expect(try await store.events(EventFilter(limit: 10_000)).map(\.event.seq) == [3000])
        try await store.close()
    }

    @Test("CSV export over HTTPS: header, UTC and JST times, escaping (commas, quotes, line breaks, formulas), filters; JSON parses; bad ranges are 400; admin only")
    func httpExport() async throws {
        let c = try await TestCollector.start()
        defer { c.pki.remove() }
        let t0 = RFC3339.parse("2026-11-30T15:00:00.000Z")!  // 2026-12-01 00:00 JST
        let a = AgentIdentity(agentID: "tc-0101", group: "mynumber")
        let tricky = ReportedEvent(id: "aaaaaaaa-0000-4000-8000-000000000001", seq: 1, time: t0, kind: "exec-denied", severity: "warning",
                                   reason: "scrot, \"again\"\nsecond line", details: ["path": "=cmd|' /C calc'!A0"])
        let later = (2...701).map { ReportedEvent(id: UUID().uuidString.lowercased(), seq: Int64($0), time: t0.addingTimeInterval(Double($0)), kind: "decision-changed",
                                                  severity: "info", reason: "mynumber via eth0") }
        _ = try await c.collector.store.insertEvents([tricky] + later, from: a, at: t0)
        _ = try await c.collector.store.insertEvents([ReportedEvent(id: UUID().uuidString.lowercased(), seq: 1, time: t0, kind: "launch-refused", severity: "warning", reason: "x")],
                                                     from: AgentIdentity(agentID: "tc-0201", group: "lgwan"), at: t0)
        let auth = [("Authorization", "Bearer \(TestCollector.adminToken)")]
        let base = c.url + "/api/v1/admin/export/events?from=2026-12-01T00:00:00%2B09:00&to=2026-12-02T00:00:00%2B09:00"
        try await withClient(try c.client()) { (client: HTTPClient) async throws -> Void in
            let csv = try await call(client, .GET, base + "&group=mynumber", headers: auth)
            #expect(csv.status == 200)
            #expect(csv.headers.contains { $0.0.lowercased() == "content-disposition" && $0.1.contains("segguard-events_mynumber_") })
            let lines = csv.body.components(separatedBy: "\r\n")
            #expect(lines[0] == "time_utc,time_jst,agent_id,group,seq,kind,severity,reason,details,received_utc,event_id")
            #expect(lines[1].hasPrefix("2026-11-30T15:00:00.000Z,2026-12-01T00:00:00.000+09:00,tc-0101,mynumber,1,exec-denied,warning,\"scrot, \"\"again\"\"\nsecond line\","))
            #expect(lines[1].contains("\"{\"\"path\"\":\"\"=cmd|' /C calc'!A0\"\"}\""), "\(lines[1])")
            #expect(lines.filter { !$0.isEmpty }.count == 1 + 701, "all pages streamed: \(lines.count)")
            #expect(!csv.body.contains("tc-0201"))

            let js = try await call(client, .GET, base + "&format=json", headers: auth)
            #expect(js.status == 200)
            let decoded = try ReportCoding.decoder().decode([StoredEvent].self, from: Data(js.body.utf8))
            #expect(decoded.count == 702 && decoded[0].event.reason == tricky.reason)

            let empty = try await call(client, .GET, c.url + "/api/v1/admin/export/events?from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z&format=json", headers: auth)
            let emptyList = try JSONSerialization.jsonObject(with: Data(empty.body.utf8)) as? [Any]
            #expect(empty.status == 200 && emptyList?.isEmpty == true)
            #expect(try await call(client, .GET, base, headers: []).status == 401)
            let backwards = try await call(client, .GET, c.url + "/api/v1/admin/export/events?from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", headers: auth)
            #expect(backwards.status == 400 && backwards.body.contains("must be before"))
            let bad = try await call(client, .GET, c.url + "/api/v1/admin/export/events?from=yesterday&to=2026-12-01T00:00:00Z", headers: auth)
            #expect(bad.status == 400 && bad.body.contains("from: \\\"yesterday\\\" is not an RFC 3339 time"), "\(bad.body)")
            #expect(try await call(client, .GET, base + "&format=xml", headers: auth).status == 400)
        }
        await c.stop()
    }

    @Test("--retention-days: a collector started with events received 40 days ago deletes them at once (and counts them), keeping the recent ones")
    func retentionService() async throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let store = try await SQLiteStore(path: pki.directory + "/collector.sqlite")
        try await store.migrate()
        let a = AgentIdentity(agentID: "tc-0301", group: "mynumber")
        let old = Date().addingTimeInterval(-40 * 86_400)
        _ = try await store.insertEvents((1...5).map { event($0) }, from: a, at: old)
        _ = try await store.insertEvents([event(6)], from: a, at: Date())
        let c = try await TestCollector.start(store: store, pki: pki) { $0.retentionDays = 30 }
        #expect(try await eventually(20) { try await c.collector.store.events(EventFilter(limit: 100)).count == 1 })
        #expect(try await c.collector.store.events(EventFilter(limit: 100)).map(\.event.seq) == [6])
        try await withClient(try c.client()) { (client: HTTPClient) async throws -> Void in
            #expect(try await call(client, .GET, c.url + "/metrics").body.contains("segguard_collector_events_pruned_total 5"))
        }
        await c.stop()
    }
}
