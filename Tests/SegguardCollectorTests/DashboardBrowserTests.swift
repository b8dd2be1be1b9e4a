// The dashboard as a real browser shows it: an in-process collector (TLS, test PKI) with
// agents in two groups and three states, loaded by headless Chromium. The checks read the DOM
// Chromium dumps after parsing the page (not the HTML string we served): the agents and events
// tables, the filter form, and that text coming from agents stays text (no injected element).

import AsyncHTTPClient
import Foundation
import SegguardCollector
import SegguardReport
import Testing

@Suite("Dashboard in headless Chromium", .serialized,
       .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium"), "Chromium is not installed (apt-get install chromium)"))
struct DashboardBrowserTests {
    /// What the seeded collector holds, to compare the page with.
    struct Seeded {
        let collector: TestCollector
        let t0: Date
        let officeSHA: String
        let branchSHA: String
        /// agent id -> last heartbeat time as the store has it.
        let lastSeen: [String: Date]
    }

    static let hostileHost = "<b>evil</b>"
    static let hostileReason = "<script>alert(1)</script> cable out"
    static let hostileEventReason = "<img src=x onerror=alert(2)> blocked"
    static let hostileKind = "x\" onmouseover=\"alert(3)"

    /// mynumber: tc-0001 authorized, tc-0003 stale. lgwan: tc-0002 unauthorized (hostile
    /// hostname and reason), tc-0004 stale. Events from tc-0001 and tc-0002, plus the
    /// agent-stale events markStale records.
    static func seeded() async throws -> Seeded {
        let c = try await TestCollector.start()
        do {
            let store = c.collector.store
            let t0 = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
            let officeSHA = sha256Hex("office policy v3"), branchSHA = sha256Hex("branch policy v7")
            let mynumber = { AgentIdentity(agentID: $0, group: "mynumber") }, lgwan = { AgentIdentity(agentID: $0, group: "lgwan") }

            var a1 = heartbeat("tc-0001", reason: "authorized-wired via eth0 (802.1X ok)")
            a1.policy = PolicySummary(name: "office", sha256: officeSHA, bundleVersion: 3)
            _ = try await store.recordHeartbeat(a1, from: mynumber("tc-0001"), at: t0)

            var a2 = heartbeat("tc-0002", authorized: false, reason: hostileReason)
            a2.hostname = hostileHost
            a2.policy = PolicySummary(name: "branch", sha256: branchSHA)
            _ = try await store.recordHeartbeat(a2, from: lgwan("tc-0002"), at: t0)

            var a3 = heartbeat("tc-0003", interval: 1, reason: "authorized-wired via eth1")
            a3.policy = PolicySummary(name: "office", sha256: officeSHA, bundleVersion: 3)
            _ = try await store.recordHeartbeat(a3, from: mynumber("tc-0003"), at: t0.addingTimeInterval(-60))

            var a4 = heartbeat("tc-0004", interval: 5, reason: "authorized-wireless via wlan0")
            a4.policy = PolicySummary(name: "branch", sha256: branchSHA)
            _ = try await store.recordHeartbeat(a4, from: lgwan("tc-0004"), at: t0.addingTimeInterval(-120))

            // The collector's own sweeper (its first round runs at start) may mark one of them
            // first: what counts is that both are stale, once.
            _ = try await store.markStale(now: t0, intervals: 3)
            #expect(Set(try await store.agents(AgentFilter(state: "stale")).map(\.agentID)) == ["tc-0003", "tc-0004"])

            #expect(try await store.insertEvents([event(1, kind: "exec-denied"), event(2, kind: "launch-refused")],
                                                 from: mynumber("tc-0001"), at: t0).inserted == 2)
            var hostile = event(1, kind: hostileKind)
            hostile.reason = hostileEventReason
            #expect(try await store.insertEvents([event(2, kind: "decision-changed"), hostile], from: lgwan("tc-0002"), at: t0).inserted == 2)

            let agents = try await store.agents(AgentFilter())
            return Seeded(collector: c, t0: t0, officeSHA: officeSHA, branchSHA: branchSHA,
                          lastSeen: Dictionary(uniqueKeysWithValues: agents.map { ($0.agentID, $0.lastSeen) }))
        } catch {
            await c.stop()
            c.pki.remove()
            throw error
        }
    }

    /// Runs `body` on a seeded collector and a private temporary directory; stops and removes
    /// both whatever happens.
    static func withSeeded(_ body: (Seeded, String) async throws -> Void) async throws {
        let s = try await seeded()
        let dir = NSTemporaryDirectory() + "sg-chromium-\(UUID().uuidString)"
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try await body(s, dir)
        } catch {
            await s.collector.stop()
            s.collector.pki.remove()
            try? FileManager.default.removeItem(atPath: dir)
            throw error
        }
        await s.collector.stop()
        s.collector.pki.remove()
        try? FileManager.default.removeItem(atPath: dir)
    }

    @Test("the page lists each agent with state, stale flag, reason, last heartbeat and policy hash, and the latest events",
          .timeLimit(.minutes(2)))
    func agentsAndEvents() async throws {
        try await Self.withSeeded { s, dir in
            let dom = try await HeadlessChromium.dumpDOM(s.collector.url + "/", in: dir, timeZone: "Asia/Tokyo")

            let agents = try HTMLTable(dom, id: "agents")
            #expect(agents.headers == ["Agent", "Group", "Host", "State", "Segment", "Reason", "Interfaces", "Last heartbeat", "Policy", "Spool"])
            let rows = agents.rows.filter { $0.attributes["class"] == "agent" }
            #expect(rows.count == agents.rows.count)
            // Ordered by group, then id.
            #expect(rows.map { $0.attributes["data-agent"] ?? "?" } == ["tc-0002", "tc-0004", "tc-0001", "tc-0003"])
            let byID = Dictionary(uniqueKeysWithValues: rows.map { ($0.attributes["data-agent"] ?? "?", $0) })
            let expected: [(id: String, group: String, state: String, reason: String, sha: String, policy: String)] = [
                ("tc-0001", "mynumber", "authorized", "authorized-wired via eth0 (802.1X ok)", s.officeSHA, "office"),
                ("tc-0002", "lgwan", "unauthorized", Self.hostileReason, s.branchSHA, "branch"),
                ("tc-0003", "mynumber", "stale", "authorized-wired via eth1", s.officeSHA, "office"),
                ("tc-0004", "lgwan", "stale", "authorized-wireless via wlan0", s.branchSHA, "branch"),
            ]
            for e in expected {
                let row = try #require(byID[e.id], "no row for \(e.id)")
                try #require(row.cells.count == 10, "\(e.id): \(row.cells)")
                #expect(row.attributes["data-state"] == e.state, "\(e.id)")
                #expect(row.cells[0] == e.id)
                #expect(row.cells[1] == e.group)
                #expect(row.cells[3].hasPrefix(e.state), "\(e.id): state cell \(row.cells[3])")
                #expect(row.cellAttributes[3]["class"] == e.state, "\(e.id)")
                #expect(row.cells[5] == e.reason, "\(e.id)")
                // Policy name and the first 12 hex digits of its SHA-256.
                #expect(row.cells[8].hasPrefix("\(e.policy) \(e.sha.prefix(12))"), "\(e.id): policy cell \(row.cells[8])")
                #expect(!row.cells[8].contains(String(e.sha.prefix(13))), "only 12 hex digits are shown")
                // Last heartbeat: the store's time (to the second) in the browser's zone, and how long ago.
                let seen = try #require(s.lastSeen[e.id])
                #expect(row.cells[7].hasPrefix(Self.seconds(seen, zone: "Asia/Tokyo") + " JST"), "\(e.id): last heartbeat \(row.cells[7]) vs \(Self.seconds(seen, zone: "Asia/Tokyo"))")
                #expect(row.cells[7].wholeMatch(of: #/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d JST \(\d+ s ago\)/#) != nil, "\(e.id): \(row.cells[7])")
                let ago = try #require(row.cells[7].firstMatch(of: #/\((\d+) s ago\)/#).flatMap { Int($0.1) })
                let minimum = Int(s.t0.timeIntervalSince(seen))
                #expect(ago >= minimum && ago < minimum + 60, "\(e.id): \(ago) s ago")
            }
            // The stale flag: the state says for how long the agent has been silent.
            for id in ["tc-0003", "tc-0004"] {
                let cell = try #require(byID[id]).cells[3]
                #expect(cell.wholeMatch(of: #/stale \(silent \d+ s\)/#) != nil, "\(id): \(cell)")
            }
            #expect(byID["tc-0001"]?.cells[3] == "authorized")
            #expect(byID["tc-0002"]?.cells[3] == "unauthorized")
            #expect(byID["tc-0001"]?.cells[8] == "office \(s.officeSHA.prefix(12)) v3")
            #expect(byID["tc-0002"]?.cells[8] == "branch \(s.branchSHA.prefix(12))")
            #expect(byID["tc-0001"]?.cells[6] == "eth0 up; wlan0 up SSID office 02:00:00:00:00:01")

            let summary = try #require(HTMLText.element(dom, id: "summary"))
            #expect(summary.contains("4 agent(s) shown: 1 authorized, 1 unauthorized, 2 stale."), "\(summary)")

            let events = try HTMLTable(dom, id: "events")
            #expect(events.headers == ["Time", "Agent", "Group", "Kind", "Severity", "Reason", "Details"])
            let eventRows = events.rows.filter { $0.attributes["class"] == "event" }
            #expect(eventRows.count == events.rows.count)
            let kinds = eventRows.map { $0.attributes["data-kind"] ?? "?" }
            #expect(Set(kinds) == ["exec-denied", "launch-refused", "decision-changed", Self.hostileKind, "agent-stale"], "\(kinds)")
            #expect(kinds.count == 6)
            for row in eventRows {
                try #require(row.cells.count == 7, "\(row.cells)")
                #expect(row.cells[3] == row.attributes["data-kind"], "the Kind cell shows the row's kind")
            }
            let stale = eventRows.filter { $0.attributes["data-kind"] == "agent-stale" }
            #expect(Set(stale.map { $0.cells[1] }) == ["tc-0003", "tc-0004"])
            #expect(stale.allSatisfy { $0.cells[4] == "warning" && $0.cells[5].hasPrefix("no heartbeat for ") })
            let denied = try #require(eventRows.first { $0.attributes["data-kind"] == "exec-denied" })
            #expect(denied.cells[1] == "tc-0001" && denied.cells[2] == "mynumber" && denied.cells[5] == "scrot is listed")
            #expect(denied.cells[6].contains("path=/usr/bin/scrot") && denied.cells[6].contains("uid=1000"), "the Details cell: \(denied.cells[6])")
            // Newest first (all arrived at t0, so by event time).
            let times = eventRows.map { $0.cells[0] }
            #expect(times == times.sorted(by: >), "\(times)")
        }
    }

    @Test("text from agents is shown as text: no element is injected by a hostname, reason or event kind",
          .timeLimit(.minutes(2)))
    func escaping() async throws {
        try await Self.withSeeded { s, dir in
            let dom = try await HeadlessChromium.dumpDOM(s.collector.url + "/", in: dir)
            // Every element and attribute the parser built (text never holds a raw "<" in
            // Chromium's serialization, so each start tag in the dump is an element).
            let tags = HTMLText.startTags(dom)
            let names = Set(tags.map(\.name))
            #expect(names.isSuperset(of: ["html", "head", "body", "table", "tr", "td", "form", "select", "option", "code"]), "\(names.sorted())")
            // One script only: the page's own, which shows times in the browser's zone.
            let scripts = dom.matches(of: #/<script>(.*?)</script>/#.dotMatchesNewlines()).map { String($0.1) }
            #expect(scripts.count == 1 && scripts.first?.contains("time[datetime]") == true, "scripts in the DOM: \(scripts)")
            #expect(!names.contains("b"), "a <b> element exists in the DOM")
            #expect(!names.contains("img"), "an <img> element exists in the DOM")
            let handlers = tags.flatMap { t in t.attributes.keys.filter { $0.lowercased().hasPrefix("on") }.map { "\(t.name) \($0)" } }
            #expect(handlers.isEmpty, "event handler attributes in the DOM: \(handlers)")
            let bodyTags = Set(tags.drop { $0.name != "body" }.map(\.name))
            #expect(bodyTags.isSubset(of: ["body", "nav", "h1", "h2", "p", "span", "small", "form", "label", "select", "option", "input", "button", "table", "thead", "tbody",
                                           "tr", "th", "td", "code", "a", "time", "script"]), "unexpected elements in the body: \(bodyTags.sorted())")
            // Links are the page's own: to an agent's page, another page of the list, the actions.
            let hrefs = tags.filter { $0.name == "a" }.compactMap { $0.attributes["href"] }
            #expect(hrefs.allSatisfy { $0.hasPrefix("/agents/tc-") || $0.hasPrefix("/?") || $0 == "/" || $0 == "/actions" }, "\(hrefs)")

            let agents = try HTMLTable(dom, id: "agents")
            let row = try #require(agents.rows.first { $0.attributes["data-agent"] == "tc-0002" })
            #expect(row.cells[2] == Self.hostileHost, "the hostname is shown as typed: \(row.cells[2])")
            #expect(row.cells[5] == Self.hostileReason, "the reason is shown as typed: \(row.cells[5])")
            #expect(row.cellHTML[2] == "&lt;b&gt;evil&lt;/b&gt;")
            #expect(row.cellHTML[5] == "&lt;script&gt;alert(1)&lt;/script&gt; cable out")

            let events = try HTMLTable(dom, id: "events")
            let hostile = try #require(events.rows.first { $0.attributes["data-kind"] == Self.hostileKind },
                                       "the quoted kind stays one attribute value")
            #expect(hostile.attributes.keys.sorted() == ["class", "data-kind"], "\(hostile.attributes)")
            #expect(hostile.cells[3] == Self.hostileKind)
            #expect(hostile.cells[5] == Self.hostileEventReason)
        }
    }

    @Test("?group=mynumber&state=stale shows only the stale agent of that group, and the form shows the filter",
          .timeLimit(.minutes(2)))
    func filtered() async throws {
        try await Self.withSeeded { s, dir in
            let dom = try await HeadlessChromium.dumpDOM(s.collector.url + "/?group=mynumber&state=stale", in: dir)
            let agents = try HTMLTable(dom, id: "agents")
            #expect(agents.rows.map { $0.attributes["data-agent"] ?? "?" } == ["tc-0003"])
            #expect(agents.rows.first?.attributes["data-state"] == "stale")
            let summary = try #require(HTMLText.element(dom, id: "summary"))
            #expect(summary.hasPrefix("1 agent(s) shown: 0 authorized, 0 unauthorized, 1 stale."), "\(summary)")

            // The filter form keeps the filter (the browser's selected options).
            #expect(HTMLText.selectedOptions(dom, select: "group") == ["mynumber"])
            #expect(HTMLText.selectedOptions(dom, select: "state") == ["stale"])
            #expect(HTMLText.options(dom, select: "group") == ["", "lgwan", "mynumber"], "every group is offered, not only the shown ones")
            #expect(HTMLText.options(dom, select: "state") == ["", "authorized", "unauthorized", "stale"])

            // Events follow both filters: only the shown (stale) agent's events of that group.
            let events = try HTMLTable(dom, id: "events")
            let rows = events.rows.filter { $0.attributes["class"] == "event" }
            #expect(!rows.isEmpty)
            #expect(rows.allSatisfy { $0.cells[2] == "mynumber" && $0.cells[1] == "tc-0003" }, "\(rows.map(\.cells))")
            #expect(Set(rows.compactMap { $0.attributes["data-kind"] }) == ["agent-stale"])

            // A filter that matches nothing says so.
            let none = try await HeadlessChromium.dumpDOM(s.collector.url + "/?group=lgwan&state=authorized", in: dir)
            let empty = try HTMLTable(none, id: "agents")
            #expect(empty.rows.count == 1 && empty.rows.first?.cells == ["No agent matches."], "\(empty.rows.map(\.cells))")
        }
    }

    @Test("250 agents: page 2 shows 101–200 with links that keep the filters; a search finds agents by host name, case-insensitively, % matching only itself; the page in Japanese (?lang=ja, Accept-Language); an agent's page shows its decision history in the browser's zone (TZ=Asia/Tokyo: JST), in Japanese too; the decision filter",
          .timeLimit(.minutes(3)))
    func pagesSearchAndAgentPage() async throws {
        let c = try await TestCollector.start()
        let dir = NSTemporaryDirectory() + "sg-chromium-\(UUID().uuidString)"
        defer {
            c.pki.remove()
            try? FileManager.default.removeItem(atPath: dir)
        }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let store = c.collector.store
        var batch: [(Heartbeat, AgentIdentity)] = []
        for i in 0..<250 {
            var hb = heartbeat(String(format: "tc-%04d", 1000 + i))
            hb.hostname = "counter-\(i)"
            batch.append((hb, AgentIdentity(agentID: String(format: "tc-%04d", 1000 + i), group: "mynumber")))
        }
        _ = try await store.recordHeartbeats(batch, at: Date())
        let t = RFC3339.parse("2026-12-01T00:30:00.000Z")!
        let agent = AgentIdentity(agentID: "tc-1007", group: "mynumber")
        _ = try await store.insertEvents([
            ReportedEvent(id: UUID().uuidString.lowercased(), seq: 1, time: t, kind: "decision-changed", severity: "warning", reason: "usb0 is a second uplink",
                          details: ["segment": "unauthorized", "previous": "mynumber"]),
            ReportedEvent(id: UUID().uuidString.lowercased(), seq: 2, time: t.addingTimeInterval(60), kind: "exec-denied", severity: "warning", reason: "scrot"),
        ], from: agent, at: t)

        let page2 = try await HeadlessChromium.dumpDOM(c.url + "/?page=2", in: dir)
        let rows = try HTMLTable(page2, id: "agents").rows.filter { $0.attributes["class"] == "agent" }
        #expect(rows.count == 100)
        #expect(rows.first?.attributes["data-agent"] == "tc-1100" && rows.last?.attributes["data-agent"] == "tc-1199")
        let pages = try #require(HTMLText.element(page2, id: "pages"))
        #expect(pages.contains("Agents 101–200 of 250 (page 2 of 3)"), "\(pages)")
        let links = HTMLText.startTags(page2).filter { $0.name == "a" }.map { $0.attributes }
        #expect(links.contains { $0["rel"] == "next" && $0["href"] == "/?page=3" }, "\(links.filter { $0["rel"] != nil })")
        #expect(links.contains { $0["rel"] == "prev" && $0["href"] == "/?page=1" })
        #expect(links.contains { $0["href"] == "/agents/tc-1150" })

        let found = try await HeadlessChromium.dumpDOM(c.url + "/?q=COUNTER-7&state=authorized", in: dir)
        let hits = try HTMLTable(found, id: "agents").rows.filter { $0.attributes["class"] == "agent" }
        #expect(hits.count == 11 && hits.allSatisfy { $0.cells[2].hasPrefix("counter-7") }, "\(hits.map { $0.cells[2] })")
        #expect(HTMLText.element(found, id: "pages")?.contains("of 11") == true)
        let none = try await HeadlessChromium.dumpDOM(c.url + "/?q=%25", in: dir)
        #expect(try HTMLTable(none, id: "agents").rows.filter { $0.attributes["class"] == "agent" }.isEmpty)

        let page = try await HeadlessChromium.dumpDOM(c.url + "/agents/tc-1007", in: dir, marker: "<table id=\"agent\"", timeZone: "Asia/Tokyo")
        #expect(HTMLText.element(page, id: "host") == "counter-7")
        let decisions = try HTMLTable(page, id: "decisions").rows.filter { $0.attributes["class"] == "event" }
        #expect(decisions.count == 1)
        #expect(decisions.first?.cells[0] == "2026-12-01 09:30:00 JST", "\(decisions.first?.cells ?? [])")
        #expect(decisions.first?.cells[3] == "usb0 is a second uplink")
        let events = try HTMLTable(page, id: "events").rows.filter { $0.attributes["class"] == "event" }
        #expect(events.map(\.cells[1]) == ["exec-denied", "decision-changed"])
        // Another zone, the same instant.
        let utc = try await HeadlessChromium.dumpDOM(c.url + "/agents/tc-1007", in: dir, marker: "<table id=\"agent\"", timeZone: "UTC")
        #expect(try HTMLTable(utc, id: "decisions").rows.first { $0.attributes["class"] == "event" }?.cells[0] == "2026-12-01 00:30:00 UTC")
        // Japanese: chosen by ?lang=ja (the links keep it) or by the browser's Accept-Language.
        let ja = try await HeadlessChromium.dumpDOM(c.url + "/?lang=ja&page=2", in: dir)
        #expect(try HTMLTable(ja, id: "agents").headers == ["端末", "グループ", "ホスト名", "状態", "セグメント", "理由", "インターフェース", "最終ハートビート", "ポリシー", "未送信イベント"])
        let jaRows = try HTMLTable(ja, id: "agents").rows.filter { $0.attributes["class"] == "agent" }
        #expect(jaRows.first?.cells[3] == "許可", "\(jaRows.first?.cells ?? [])")
        #expect(HTMLText.element(ja, id: "pages")?.contains("端末 101–200 / 全 250 台（2 / 3 ページ）") == true, "\(HTMLText.element(ja, id: "pages") ?? "")")
        #expect(HTMLText.startTags(ja).contains { $0.name == "a" && $0.attributes["rel"] == "next" && $0.attributes["href"] == "/?lang=ja&page=3" })
        #expect(HTMLText.element(ja, id: "language") == "English")
        try await withClient(try c.client()) { (client: HTTPClient) async throws -> Void in
            #expect(try await call(client, .GET, c.url + "/", headers: [("Accept-Language", "ja-JP,ja;q=0.9,en;q=0.5")]).body.contains("<html lang=\"ja\">"))
            #expect(try await call(client, .GET, c.url + "/", headers: [("Accept-Language", "en-US,en;q=0.9")]).body.contains("<html lang=\"en\">"))
            #expect(try await call(client, .GET, c.url + "/agents/tc-9999").status == 404)
            #expect(try await call(client, .GET, c.url + "/?page=0").status == 400)
        }
        // The agent's page in Japanese (the list's links carry ?lang=ja to it).
        let firstJa = jaRows.first?.attributes["data-agent"] ?? "?"
        #expect(HTMLText.startTags(ja).contains { $0.name == "a" && $0.attributes["href"] == "/agents/\(firstJa)?lang=ja" })
        let jaAgent = try await HeadlessChromium.dumpDOM(c.url + "/agents/tc-1007?lang=ja", in: dir, marker: "<table id=\"agent\"", timeZone: "Asia/Tokyo")
        #expect(jaAgent.contains("<html lang=\"ja\">"))
        #expect(try HTMLTable(jaAgent, id: "decisions").headers == ["時刻", "種類", "重要度", "理由", "詳細"])
        #expect(jaAgent.contains("<th>判定の履歴</th>") || jaAgent.contains(">判定の履歴</h2>"), "decision history heading")
        #expect(HTMLText.element(jaAgent, id: "state") == "許可")
        #expect(try HTMLTable(jaAgent, id: "decisions").rows.first { $0.attributes["class"] == "event" }?.cells[0] == "2026-12-01 09:30:00 JST")

        // The decision filter: agents whose segment is "unauthorized", its options from what agents reported.
        _ = try await store.recordHeartbeat(heartbeat("tc-1003", authorized: false), from: AgentIdentity(agentID: "tc-1003", group: "mynumber"), at: Date())
        let denied = try await HeadlessChromium.dumpDOM(c.url + "/?segment=unauthorized", in: dir)
        let deniedRows = try HTMLTable(denied, id: "agents").rows.filter { $0.attributes["class"] == "agent" }
        #expect(deniedRows.contains { $0.attributes["data-agent"] == "tc-1003" })
        let deniedCount = try await store.agentCount(AgentFilter(segment: "unauthorized"))
        #expect(deniedRows.allSatisfy { $0.cells[4] == "unauthorized" } && deniedRows.count == deniedCount)
        #expect(HTMLText.optionElements(denied, select: "segment").map(\.value) == ["", "authorized-wired", "unauthorized"])
        #expect(HTMLText.selectedOptions(denied, select: "segment") == ["unauthorized"])
        await c.stop()
    }

    @Test("the page renders: Chromium takes a 1400x900 screenshot of it", .timeLimit(.minutes(2)))
    func screenshot() async throws {
        try await Self.withSeeded { s, dir in
            let png = dir + "/dashboard.png"
            _ = try await HeadlessChromium.run(["--screenshot=\(png)", "--window-size=1400,900", s.collector.url + "/"], in: dir)
            let data = try #require(FileManager.default.contents(atPath: png), "no screenshot written")
            #expect(data.count > 1000, "\(data.count) bytes")
            #expect(data.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]), "not a PNG")
            // IHDR: width and height, big-endian, at bytes 16..<24.
            if data.count >= 24 {
                let be = { (o: Int) in data[o..<o + 4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) } }
                #expect(be(16) == 1400 && be(20) == 900, "\(be(16))x\(be(20))")
            }
            try FileManager.default.removeItem(atPath: png)
        }
    }

    static func sha256Hex(_ s: String) -> String { PolicySigning.sha256Hex(Data(s.utf8)) }

    /// yyyy-MM-dd HH:mm:ss in a zone (as the page's script writes it).
    static func seconds(_ d: Date, zone: String) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: zone)
        f.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return f.string(from: d)
    }
}

// MARK: - Headless Chromium

// Nested in the suite so that the names cannot collide with other files of the test target.
extension DashboardBrowserTests {
    enum HeadlessChromium {
        static let path = "/usr/bin/chromium"

        struct Failure: Error, CustomStringConvertible {
            var description: String
        }

        /// Loads `url` and returns the DOM Chromium serializes after parsing it (--dump-dom).
        static func dumpDOM(_ url: String, in dir: String, marker: String = "<table id=\"agents\"", timeZone: String? = nil) async throws -> String {
            let dom = try await run(["--virtual-time-budget=3000", "--dump-dom", url], in: dir, environment: timeZone.map { ["TZ": $0] } ?? [:])
            guard dom.contains(marker) else {
                throw Failure(description: "Chromium did not show the dashboard for \(url); it dumped: \(dom.prefix(600))")
            }
            return dom
        }

        /// Runs headless Chromium with `arguments` in a fresh profile under `dir`; returns its
        /// standard output. With `done`, the browser is stopped as soon as `done()` holds (a
        /// download has landed: headless Chromium does not exit after a download). Standard output goes to a file, not a pipe: Chromium's helper
        /// processes may keep a pipe open after the browser exits. Chromium runs in its own
        /// process group, which is killed after `timeout` (and once the browser has exited, so
        /// that no helper outlives the test). XDG_CONFIG_HOME and XDG_CACHE_HOME point into the
        /// run's directory too: Chromium keeps its crash database ("Crash Reports") and dconf
        /// cache there, not in the profile, and would otherwise write them into $HOME.
        static func run(_ arguments: [String], in dir: String, timeout: Duration = .seconds(30), environment extra: [String: String] = [:],
                        until done: (() -> Bool)? = nil) async throws -> String {
            let runDir = "\(dir)/run-\(UUID().uuidString)"
            let profile = runDir + "/profile", out = runDir + "/stdout", err = runDir + "/stderr"
            defer { try? FileManager.default.removeItem(atPath: runDir) }
            for sub in ["/profile", "/config", "/cache"] {
                try FileManager.default.createDirectory(atPath: runDir + sub, withIntermediateDirectories: true)
            }
            let process = Process()
            var environment = ProcessInfo.processInfo.environment
            environment["XDG_CONFIG_HOME"] = runDir + "/config"
            environment["XDG_CACHE_HOME"] = runDir + "/cache"
            environment.merge(extra) { _, new in new }
            process.environment = environment
            process.executableURL = URL(fileURLWithPath: "/bin/bash")
            process.arguments = ["-c", "out=$1; err=$2; shift 2; exec \"$@\" >\"$out\" 2>\"$err\" </dev/null", "chromium-run", out, err,
                                 path, "--headless=new", "--no-sandbox", "--disable-gpu", "--ignore-certificate-errors",
                                 "--no-first-run", "--disable-extensions", "--user-data-dir=\(profile)"] + arguments
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            let pid = process.processIdentifier
            // Foundation starts the child as the leader of a new process group; only then is
            // killing the group safe (never our own group).
            let ownGroup = getpgid(pid) == pid && pid != getpgrp()

            let clock = ContinuousClock()
            let deadline = clock.now + timeout
            var finished = false
            while process.isRunning && clock.now < deadline && !finished {
                try? await Task.sleep(for: .milliseconds(50))
                finished = done?() ?? false
            }
            let timedOut = process.isRunning && !finished
            if ownGroup {
                kill(-pid, SIGKILL)
            } else if timedOut {
                process.terminate()
            }
            while process.isRunning { try? await Task.sleep(for: .milliseconds(20)) }

            let stderr = (try? String(contentsOfFile: err, encoding: .utf8)) ?? ""
            if timedOut {
                throw Failure(description: "Chromium did not finish in \(timeout) (\(arguments)); stderr: \(stderr.suffix(1500))")
            }
            guard finished || process.terminationStatus == 0 else {
                throw Failure(description: "Chromium exited with \(process.terminationStatus) (\(arguments)); stderr: \(stderr.suffix(1500))")
            }
            return (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        }
    }

    // MARK: - Reading Chromium's DOM dump

    /// Text helpers for Chromium's serialization of the DOM: attribute values in double quotes with
    /// & and " escaped; text with & < > escaped; elements in the order of the tree.
    enum HTMLText {
        /// Tags removed, entities decoded, whitespace trimmed.
        static func text(_ html: some StringProtocol) -> String {
            decode(String(html).replacing(#/<[^>]*>/#, with: "")).trimmingCharacters(in: .whitespacesAndNewlines)
        }

        static func decode(_ s: String) -> String {
            var out = s
            for (entity, c) in [("&lt;", "<"), ("&gt;", ">"), ("&quot;", "\""), ("&#39;", "'"), ("&nbsp;", "\u{a0}"), ("&amp;", "&")] {
                out = out.replacingOccurrences(of: entity, with: c)
            }
            return out
        }

        /// The attributes of a start tag's inside (`tr class="agent" data-agent="x"`).
        static func attributes(_ tag: some StringProtocol) -> [String: String] {
            var a: [String: String] = [:]
            for m in String(tag).matches(of: #/([A-Za-z_:][-A-Za-z0-9_:.]*)(?:="([^"]*)")?/#).dropFirst() {
                a[String(m.1)] = decode(String(m.2 ?? ""))
            }
            return a
        }

        /// Every start tag of the dump, in document order: element name (lower case) and attributes.
        static func startTags(_ dom: String) -> [(name: String, attributes: [String: String])] {
            dom.matches(of: #/<([A-Za-z][A-Za-z0-9-]*)((?:[^>"]|"[^"]*")*)>/#).map { m in
                (String(m.1).lowercased(), attributes(m.1 + m.2))
            }
        }

        /// The text of the element with this id.
        static func element(_ dom: String, id: String) -> String? {
            let open = try! Regex("<([a-z0-9]+)[^>]*\\bid=\"\(NSRegularExpression.escapedPattern(for: id))\"[^>]*>")
            guard let m = dom.firstMatch(of: open), let name = m.output[1].substring else { return nil }
            let rest = dom[m.range.upperBound...]
            guard let close = rest.range(of: "</\(name)>") else { return nil }
            return text(rest[..<close.lowerBound])
        }

        /// (value, selected) of the options of `select[name=name]`.
        static func optionElements(_ dom: String, select name: String) -> [(value: String, selected: Bool)] {
            guard let start = dom.range(of: "<select name=\"\(name)\""),
                  let end = dom[start.upperBound...].range(of: "</select>") else { return [] }
            return dom[start.upperBound..<end.lowerBound].matches(of: #/<option([^>]*)>/#).map { m in
                let a = attributes("option" + m.1)
                return (a["value"] ?? "", a["selected"] != nil)
            }
        }

        static func options(_ dom: String, select name: String) -> [String] { optionElements(dom, select: name).map(\.value) }

        static func selectedOptions(_ dom: String, select name: String) -> [String] {
            optionElements(dom, select: name).filter(\.selected).map(\.value)
        }
    }

    /// A table of the dumped DOM: header texts, and each body row's attributes and cells.
    struct HTMLTable {
        struct Row {
            var attributes: [String: String]
            var cells: [String]
            var cellHTML: [String]
            var cellAttributes: [[String: String]]
        }

        var headers: [String]
        var rows: [Row]

        init(_ dom: String, id: String) throws {
            guard let start = dom.range(of: "<table id=\"\(id)\""), let end = dom[start.upperBound...].range(of: "</table>") else {
                throw HeadlessChromium.Failure(description: "no table#\(id) in the DOM")
            }
            let table = dom[start.lowerBound..<end.upperBound]
            let head = table.range(of: "<thead>").flatMap { h in table[h.upperBound...].range(of: "</thead>").map { table[h.upperBound..<$0.lowerBound] } } ?? ""
            headers = head.matches(of: #/<th[^>]*>(.*?)</th>/#.dotMatchesNewlines()).map { HTMLText.text($0.1) }
            // The parser puts every row in a tbody; the served page has one after the thead.
            guard let b = table.range(of: "<tbody>"), let e = table[b.upperBound...].range(of: "</tbody>") else {
                throw HeadlessChromium.Failure(description: "table#\(id) has no tbody")
            }
            rows = table[b.upperBound..<e.lowerBound].matches(of: #/<tr([^>]*)>(.*?)</tr>/#.dotMatchesNewlines()).map { m in
                let cells = m.2.matches(of: #/<td([^>]*)>(.*?)</td>/#.dotMatchesNewlines())
                return Row(attributes: HTMLText.attributes("tr" + m.1), cells: cells.map { HTMLText.text($0.2) },
                           cellHTML: cells.map { String($0.2) }, cellAttributes: cells.map { HTMLText.attributes("td" + $0.1) })
            }
        }
    }
}
