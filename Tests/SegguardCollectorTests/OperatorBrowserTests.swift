// The operator's side of the dashboard in headless Chromium: the sign-in (HTTP Basic, as the
// browser answers the collector's 401 challenge), the operator actions page after pushes
// stored and refused, and the evidence export: the dashboard's own form (its fields read from
// the DOM) submitted as the browser would, the CSV Chromium downloads opened and checked.

import AsyncHTTPClient
import Crypto
import Foundation
import SegguardCollector
import SegguardPolicy
import SegguardReport
import Testing

extension DashboardBrowserTests {
    @Test("sign-in in Chromium: no or a wrong password shows no agent, the operator's shows the list; the actions page lists pushes stored and refused with who; the dashboard's export form downloads a CSV of its Japan days, opened and checked; the export is recorded",
          .timeLimit(.minutes(3)))
    func signInActionsAndExport() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let password = "correct horse battery"
        let ops = try OperatorAccounts.load(path: try OperatorTests.accountsFile(dir, ["sato:" + (try OperatorAccount.hash(password: password, logN: 10))]))
        let c = try await TestCollector.start { $0.operators = ops }
        defer { c.pki.remove() }
        do {
            try await run(c, dir: dir, password: password)
        } catch {
            await c.stop()
            throw error
        }
        await c.stop()
    }

    private func run(_ c: TestCollector, dir: String, password: String) async throws {
        let store = c.collector.store
        let agent = AgentIdentity(agentID: "tc-2001", group: "mynumber")
        _ = try await store.recordHeartbeat(heartbeat("tc-2001"), from: agent, at: Date())
        // Around the edges of 2026-12-01 in Japan (00:00 JST = 15:00 UTC the day before).
        func ev(_ seq: Int64, _ time: String, _ reason: String) -> ReportedEvent {
            ReportedEvent(id: "ev-\(seq)", seq: seq, time: RFC3339.parse(time)!, kind: "exec-denied", severity: "warning", reason: reason)
        }
        let events = [ev(1, "2026-11-30T14:59:59.999Z", "before the day"), ev(2, "2026-11-30T15:00:00.000Z", "first instant, \"scrot\""),
                      ev(3, "2026-12-01T14:59:59.999Z", "last instant"), ev(4, "2026-12-01T15:00:00.000Z", "the next day")]
        #expect(try await store.insertEvents(events, from: agent, at: Date()).inserted == 4)

        // Pushes by the operator: one stored, one not newer (409), one whose policy does not load (422).
        let good = [OperatorTests.basic("sato", password)]
        let admin = Curve25519.Signing.PrivateKey()
        try await withClient(try c.client()) { (client: HTTPClient) async throws -> Void in
            let v3 = try PolicySigning.sign(PolicyBundlePayload(group: "mynumber", version: 3, policyYAML: validPolicyYAML), with: admin)
            #expect(try await call(client, .PUT, c.url + "/api/v1/admin/policy/mynumber", body: json(v3), headers: good).status == 201)
            #expect(try await call(client, .PUT, c.url + "/api/v1/admin/policy/mynumber", body: json(v3), headers: good).status == 409)
            let broken = try PolicySigning.sign(PolicyBundlePayload(group: "mynumber", version: 4, policyYAML: "schema_version: 1\nname: broken\n"), with: admin)
            #expect(try await call(client, .PUT, c.url + "/api/v1/admin/policy/mynumber", body: json(broken), headers: good).status == 422)
        }

        let host = c.url.replacingOccurrences(of: "https://", with: "")
        let signedIn = "https://sato:\(password.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)@\(host)"
        // No credentials, then a wrong password: the browser gets the 401 challenge and shows no agent.
        for url in [c.url + "/", "https://sato:wrong@\(host)/"] {
            let dom = try await HeadlessChromium.run(["--virtual-time-budget=3000", "--dump-dom", url], in: dir)
            #expect(!dom.contains("<table id=\"agents\"") && !dom.contains("tc-2001"), "\(url): \(dom.prefix(400))")
            // (Headless Chromium cancels its sign-in prompt: nothing of the dashboard is shown.)
            #expect(!dom.contains("segment-guard"), "\(url): \(dom.prefix(600))")
        }
        let list = try await HeadlessChromium.dumpDOM(signedIn + "/", in: dir, timeZone: "Asia/Tokyo")
        #expect(try HTMLTable(list, id: "agents").rows.contains { $0.attributes["data-agent"] == "tc-2001" })

        // The actions page: newest first, with the operator's name and the reasons of refusals.
        let actionsDOM = try await HeadlessChromium.dumpDOM(signedIn + "/actions", in: dir, marker: "<table id=\"actions\"", timeZone: "Asia/Tokyo")
        let actions = try HTMLTable(actionsDOM, id: "actions").rows.filter { $0.attributes["class"] == "action" }
        #expect(actions.map { $0.attributes["data-action"] ?? "" } == ["policy-push-refused", "policy-push-refused", "policy-push"], "\(actions.map(\.cells))")
        #expect(actions.allSatisfy { $0.cells[1] == "sato" && $0.cells[3] == "mynumber" })
        #expect(actions.last?.cells[4].hasPrefix("version 3, policy pushed sha256 ") == true, "\(actions.last?.cells ?? [])")
        #expect(actions.first?.cells[4].hasPrefix("422: the bundle's policy does not load") == true, "\(actions.first?.cells ?? [])")
        #expect(actions[1].cells[4].hasPrefix("409: group 'mynumber' already has version 3") == true, "\(actions[1].cells)")
        #expect(actions.allSatisfy { $0.cells[0].hasSuffix(" JST") }, "times in the browser's zone: \(actions.map { $0.cells[0] })")

        // The export form as the dashboard serves it: its action and field names.
        let form = try #require(list.firstMatch(of: #/<form[^>]*id="export"[^>]*>(.*?)</form>/#.dotMatchesNewlines()), "no export form")
        let formTag = HTMLText.attributes(String(list[form.range].prefix { $0 != ">" }))
        #expect(formTag["method"] == "get")
        let action = try #require(formTag["action"])
        let fields = HTMLText.startTags(String(form.1)).filter { ["input", "select"].contains($0.name) }.compactMap { $0.attributes["name"] }
        #expect(fields == ["from", "to", "group", "format"], "\(fields)")
        #expect(HTMLText.options(String(form.1), select: "format") == ["csv", "json"])
        // The operator picks 2026-12-01 to 2026-12-01, group mynumber, CSV.
        let query = [("from", "2026-12-01"), ("to", "2026-12-01"), ("group", "mynumber"), ("format", "csv")].map { "\($0.0)=\($0.1)" }.joined(separator: "&")
        let home = dir + "/home"
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        // Headless Chromium saves a download in $HOME/Downloads (under the file name the
        // collector gives); it is complete once Chromium has renamed it from .crdownload.
        let downloaded = home + "/Downloads/segguard-events_mynumber_2026-12-01_2026-12-01.csv"
        _ = try await HeadlessChromium.run(["--dump-dom", signedIn + action + "?" + query], in: dir, environment: ["HOME": home]) {
            FileManager.default.fileExists(atPath: downloaded)
        }
        let csv = try String(contentsOfFile: downloaded, encoding: .utf8)
        let lines = csv.split(separator: "\r\n", omittingEmptySubsequences: true)
        #expect(lines.first?.hasPrefix("time_utc,time_jst,agent_id,group,seq,kind,severity,reason") == true, "\(csv.prefix(300))")
        #expect(lines.count == 3, "the day's two events and the header: \(csv)")
        #expect(lines.dropFirst().first?.hasPrefix("2026-11-30T15:00:00.000Z,2026-12-01T00:00:00.000+09:00,tc-2001,mynumber,2,exec-denied,warning,\"first instant, \"\"scrot\"\"\"") == true,
                "\(lines.dropFirst().first ?? "")")
        #expect(lines.last?.contains(",3,exec-denied,warning,last instant,") == true, "\(lines.last ?? "")")

        // The export is on the actions page too.
        let after = try await HeadlessChromium.dumpDOM(signedIn + "/actions?lang=ja", in: dir, marker: "<table id=\"actions\"", timeZone: "Asia/Tokyo")
        let newest = try #require(try HTMLTable(after, id: "actions").rows.first { $0.attributes["class"] == "action" })
        #expect(newest.attributes["data-action"] == "export" && newest.cells[1] == "sato" && newest.cells[2] == "証跡の書き出し", "\(newest.cells)")
        #expect(newest.cells[3] == "group mynumber" && newest.cells[4] == "2026-11-30T15:00:00.000Z – 2026-12-01T15:00:00.000Z, csv", "\(newest.cells)")
    }
}
