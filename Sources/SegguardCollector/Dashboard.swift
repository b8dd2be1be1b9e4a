// The dashboard: one server-rendered HTML page (no script needed), listing agents with their
// state, reason, last heartbeat, stale flag and policy, and the latest events; filters by
// group and state are plain links and a GET form. Everything from agents is escaped.

import Foundation
import SegguardReport

/// Renders the dashboard page.
public enum Dashboard {
    /// The page's language: Japanese for a browser that prefers it (Accept-Language) or
    /// `?lang=ja`, English otherwise or with `?lang=en`.
    public enum Language: String, Sendable {
        case en, ja

        /// From `?lang=` first, then the Accept-Language header's first language.
        public static func choose(query: String?, acceptLanguage: String?) -> Language {
            if let q = query, let l = Language(rawValue: q.lowercased()) { return l }
            let first = acceptLanguage?.split(separator: ",").first?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
            return first.hasPrefix("ja") ? .ja : .en
        }
    }

    /// Every text of the pages in one language (what agents send is shown as sent).
    struct Labels {
        let lang: Language
        var ja: Bool { lang == .ja }
        var title: String { ja ? "segment-guard コレクター" : "segment-guard collector" }
        func state(_ s: String) -> String {
            guard ja else { return s }
            switch s {
            case "authorized": return "許可"
            case "unauthorized": return "不許可"
            case "stale": return "応答なし"
            default: return s
            }
        }
        func summary(shown: Int, authorized: Int, unauthorized: Int, stale: Int, intervals: Int, generated: String) -> String {
            ja ? "\(shown) 台を表示: 許可 \(authorized)、不許可 \(unauthorized)、応答なし \(stale)。ハートビートが \(intervals) 回続けて届かない端末は応答なしです。\(generated) 作成。"
               : "\(shown) agent(s) shown: \(authorized) authorized, \(unauthorized) unauthorized, \(stale) stale. Stale after \(intervals) missed heartbeats. Generated \(generated)."
        }
        var group: String { ja ? "グループ" : "Group" }
        var stateLabel: String { ja ? "状態" : "State" }
        var all: String { ja ? "すべて" : "all" }
        var search: String { ja ? "検索" : "Search" }
        var searchHint: String { ja ? "端末 ID またはホスト名" : "agent id or host name" }
        var filter: String { ja ? "絞り込み" : "Filter" }
        func pages(first: Int, last: Int, total: Int, page: Int, pages: Int) -> String {
            ja ? "端末 \(first)–\(last) / 全 \(total) 台（\(page) / \(pages) ページ）" : "Agents \(first)–\(last) of \(total) (page \(page) of \(pages))"
        }
        var previous: String { ja ? "前へ" : "previous" }
        var next: String { ja ? "次へ" : "next" }
        var agents: String { ja ? "端末" : "Agents" }
        var agentHeaders: [String] {
            ja ? ["端末", "グループ", "ホスト名", "状態", "セグメント", "理由", "インターフェース", "最終ハートビート", "ポリシー", "未送信イベント"]
               : ["Agent", "Group", "Host", "State", "Segment", "Reason", "Interfaces", "Last heartbeat", "Policy", "Spool"]
        }
        var noAgent: String { ja ? "該当する端末はありません。" : "No agent matches." }
        func silent(_ s: Int) -> String { ja ? "（\(s) 秒応答なし）" : " (silent \(s) s)" }
        func ago(_ s: Int) -> String { ja ? "（\(s) 秒前）" : " (\(s) s ago)" }
        func spool(pending: Int, held: Int, oldestHours: Int?, dropped: Int) -> String {
            var out = ja ? "未送信 \(pending)" : "\(pending) pending"
            if held > 0 { out += ja ? "、拒否 \(held)" : ", \(held) refused" }
            if let h = oldestHours { out += ja ? "、最古 \(h) 時間" : ", oldest \(h) h" }
            if dropped > 0 { out += ja ? "、破棄 \(dropped)" : ", \(dropped) dropped" }
            return out
        }
        var latestEvents: String { ja ? "最新のイベント" : "Latest events" }
        var eventHeaders: [String] { ja ? ["時刻", "端末", "グループ", "種類", "重要度", "理由", "詳細"] : ["Time", "Agent", "Group", "Kind", "Severity", "Reason", "Details"] }
        var noEvents: String { ja ? "イベントはありません。" : "No events." }
        var otherLanguage: String { ja ? "English" : "日本語" }
    }
    /// Where the agents shown sit in the whole filtered list.
    public struct Page: Sendable {
        public var offset: Int
        public var size: Int
        public var total: Int
        public var search: String?
        public init(offset: Int, size: Int, total: Int, search: String?) {
            self.offset = offset
            self.size = size
            self.total = total
            self.search = search
        }
        var number: Int { offset / max(1, size) + 1 }
        var pages: Int { max(1, (total + size - 1) / max(1, size)) }
    }

    public static func render(agents: [AgentRecord], events: [StoredEvent], groups: [String], group: String?, state: String?, now: Date,
                              staleIntervals: Int, page: Page? = nil, language: Language = .en) -> String {
        let L = Labels(lang: language)
        var h = """
            <!DOCTYPE html>
            <html lang="\(language.rawValue)"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta http-equiv="refresh" content="15">
            <title>\(L.title)</title>
            <style>
            body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
            table{border-collapse:collapse;width:100%;margin-bottom:2em}
            th,td{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left;font-size:.9em;vertical-align:top}
            th{background:#f3f3f3}
            .authorized{color:#176117}.unauthorized{color:#a40000;font-weight:bold}.stale{color:#8a5a00;font-weight:bold}.backlog{color:#a40000;font-weight:bold}
            .warning{color:#a40000}.critical{color:#fff;background:#a40000}
            code{font-size:.85em}
            </style></head><body>
            <h1>\(L.title)</h1>

            """
        let counts = Dictionary(grouping: agents, by: \.state).mapValues(\.count)
        h += "<p id=\"summary\">\(esc(L.summary(shown: agents.count, authorized: counts["authorized"] ?? 0, unauthorized: counts["unauthorized"] ?? 0, stale: counts["stale"] ?? 0, intervals: staleIntervals, generated: time(now))))</p>\n"
        h += "<form method=\"get\" action=\"/\" id=\"filters\"><input type=\"hidden\" name=\"lang\" value=\"\(language.rawValue)\"><label>\(L.group) <select name=\"group\"><option value=\"\">\(L.all)</option>"
        for g in groups { h += "<option value=\"\(esc(g))\"\(g == group ? " selected" : "")>\(esc(g))</option>" }
        h += "</select></label> <label>\(L.stateLabel) <select name=\"state\"><option value=\"\">\(L.all)</option>"
        for s in ["authorized", "unauthorized", "stale"] { h += "<option value=\"\(s)\"\(s == state ? " selected" : "")>\(L.state(s))</option>" }
        h += "</select></label> <label>\(L.search) <input type=\"search\" name=\"q\" value=\"\(esc(page?.search ?? ""))\" placeholder=\"\(L.searchHint)\"></label>"
        h += " <button type=\"submit\">\(L.filter)</button></form>\n"
        if let page {
            // Links keep the filters; only the page changes.
            func link(_ n: Int, _ label: String) -> String {
                var items: [(String, String)] = []
                if let group { items.append(("group", group)) }
                if let state { items.append(("state", state)) }
                if let q = page.search, !q.isEmpty { items.append(("q", q)) }
                if language == .ja { items.append(("lang", "ja")) }
                items.append(("page", "\(n)"))
                let query = items.map { "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")" }.joined(separator: "&")
                return "<a href=\"/?\(esc(query))\" rel=\"\(label == L.next ? "next" : "prev")\">\(label)</a>"
            }
            let first = page.total == 0 ? 0 : page.offset + 1, last = page.offset + agents.count
            h += "<p id=\"pages\">\(L.pages(first: first, last: last, total: page.total, page: page.number, pages: page.pages))"
            if page.number > 1 { h += " " + link(page.number - 1, L.previous) }
            if page.number < page.pages { h += " " + link(page.number + 1, L.next) }
            h += "</p>\n"
        }

        h += "<h2>\(L.agents)</h2>\n<table id=\"agents\"><thead><tr>" + L.agentHeaders.map { "<th>\($0)</th>" }.joined() + "</tr></thead><tbody>\n"
        if agents.isEmpty { h += "<tr><td colspan=\"10\">\(L.noAgent)</td></tr>\n" }
        for a in agents {
            let ifaces = a.interfaces.map { i -> String in
                var s = "\(i.name) \(i.up ? "up" : "down")"
                if let ssid = i.ssid { s += " SSID \(ssid)" }
                if let bssid = i.bssid { s += " \(bssid)" }
                if let auth = i.deviceAuth { s += " 802.1X \(auth)" }
                return s
            }.joined(separator: "; ")
            let ago = max(0, Int(now.timeIntervalSince(a.lastSeen)))  // replicas' clocks may differ slightly
            h += "<tr class=\"agent\" data-agent=\"\(esc(a.agentID))\" data-state=\"\(a.state)\">"
            h += "<td><a href=\"/agents/\(esc(a.agentID.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? a.agentID))\">\(esc(a.agentID))</a></td><td>\(esc(a.group))</td><td>\(esc(a.hostname))</td>"
            h += "<td class=\"\(a.state)\">\(L.state(a.state))\(a.stale ? L.silent(ago) : "")</td><td>\(esc(a.segment))</td><td>\(esc(a.reason))</td>"
            h += "<td>\(esc(ifaces))</td><td>\(esc(time(a.lastSeen)))\(L.ago(ago))</td>"
            h += "<td>\(esc(a.policyName)) <code title=\"\(esc(a.policySHA256))\">\(esc(String(a.policySHA256.prefix(12))))</code>\(a.bundleVersion.map { " v\($0)" } ?? "")</td>"
            // Events not getting through are flagged: refused by the collector (held by the agent), or old.
            let oldest = a.spoolOldestSeconds.flatMap { $0 > AgentRecord.backlogSeconds ? $0 / 3600 : nil }
            let spool = L.spool(pending: a.spoolPending, held: a.spoolHeld, oldestHours: oldest, dropped: a.spoolDropped)
            h += "<td\(a.deliveryBacklog ? " class=\"backlog\"" : "")>\(esc(spool))</td></tr>\n"
        }
        h += "</tbody></table>\n<h2>\(L.latestEvents)</h2>\n<table id=\"events\"><thead><tr>" + L.eventHeaders.map { "<th>\($0)</th>" }.joined() + "</tr></thead><tbody>\n"
        if events.isEmpty { h += "<tr><td colspan=\"7\">\(L.noEvents)</td></tr>\n" }
        for e in events {
            h += "<tr class=\"event\" data-kind=\"\(esc(e.event.kind))\"><td>\(esc(time(e.event.time)))</td><td>\(esc(e.agentID))</td><td>\(esc(e.group))</td>"
            let details = e.event.details.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            h += "<td>\(esc(e.event.kind))</td><td class=\"\(esc(e.event.severity))\">\(esc(e.event.severity))</td><td>\(esc(e.event.reason))</td>"
            h += "<td><code>\(esc(details))</code></td></tr>\n"
        }
        h += "</tbody></table>\n"
        var other = [("lang", language == .ja ? "en" : "ja")]
        if let group { other.append(("group", group)) }
        if let state { other.append(("state", state)) }
        if let q = page?.search, !q.isEmpty { other.append(("q", q)) }
        let otherQuery = other.map { "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")" }.joined(separator: "&")
        h += "<p id=\"language\"><a href=\"/?\(esc(otherQuery))\" hreflang=\"\(language == .ja ? "en" : "ja")\">\(L.otherLanguage)</a></p>\n</body></html>\n"
        return h
    }

    /// One agent: its state, interfaces, policy and spool, its decision history and its latest
    /// events. Times are written in UTC and shown in the browser's time zone (JST in Japan) by
    /// a few lines of script; without script the UTC text stays.
    public static func renderAgent(_ a: AgentRecord, decisions: [StoredEvent], events: [StoredEvent], now: Date) -> String {
        var h = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(esc(a.agentID)) · segment-guard collector</title>
            <style>
            body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
            table{border-collapse:collapse;width:100%;margin-bottom:2em}
            th,td{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left;font-size:.9em;vertical-align:top}
            th{background:#f3f3f3;width:14em}
            .authorized{color:#176117}.unauthorized{color:#a40000;font-weight:bold}.stale{color:#8a5a00;font-weight:bold}.backlog{color:#a40000;font-weight:bold}
            .warning{color:#a40000}.critical{color:#fff;background:#a40000}
            </style></head><body>
            <p><a href="/">← all agents</a></p>
            <h1>\(esc(a.agentID))</h1>

            """
        func row(_ name: String, _ value: String, id: String, cls: String? = nil) -> String {
            "<tr><th>\(esc(name))</th><td id=\"\(id)\"\(cls.map { " class=\"\($0)\"" } ?? "")>\(value)</td></tr>\n"
        }
        var spool = "\(a.spoolPending) pending, \(a.spoolHeld) refused by the collector, \(a.spoolDropped) dropped"
        if let o = a.spoolOldestSeconds { spool += ", oldest undelivered \(o) s old" }
        h += "<table id=\"agent\"><tbody>\n"
        h += row("Group", esc(a.group), id: "group")
        h += row("Host", esc(a.hostname), id: "host")
        h += row("State", esc(a.state), id: "state", cls: a.state)
        h += row("Segment", esc(a.segment), id: "segment")
        h += row("Reason", esc(a.reason), id: "reason")
        h += row("Interfaces", esc(a.interfaces.map { i in
            [i.name, i.up ? "up" : "down", i.ssid.map { "SSID \($0)" }, i.bssid, i.deviceAuth.map { "802.1X \($0)" }].compactMap { $0 }.joined(separator: " ")
        }.joined(separator: "; ")), id: "interfaces")
        h += row("Policy", esc("\(a.policyName) \(a.policySHA256.prefix(12))") + (a.bundleVersion.map { " (bundle v\($0))" } ?? ""), id: "policy")
        h += row("Agent version", esc(a.agentVersion), id: "version")
        h += row("Heartbeat interval", "\(a.intervalSeconds) s", id: "interval")
        h += row("Last heartbeat", timeTag(a.lastSeen), id: "last-seen")
        h += row("First seen", timeTag(a.firstSeen), id: "first-seen")
        h += row("Spool", esc(spool), id: "spool", cls: a.deliveryBacklog ? "backlog" : nil)
        h += row("Device certificate expiry", "not reported by agents yet", id: "cert-expiry")
        h += "</tbody></table>\n"
        func table(_ id: String, _ title: String, _ list: [StoredEvent]) {
            h += "<h2>\(esc(title))</h2>\n<table id=\"\(id)\"><thead><tr><th>Time</th><th>Kind</th><th>Severity</th><th>Reason</th><th>Details</th></tr></thead><tbody>\n"
            if list.isEmpty { h += "<tr><td colspan=\"5\">None.</td></tr>\n" }
            for e in list {
                let details = e.event.details.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
                h += "<tr class=\"event\" data-kind=\"\(esc(e.event.kind))\"><td>\(timeTag(e.event.time))</td><td>\(esc(e.event.kind))</td>"
                h += "<td class=\"\(esc(e.event.severity))\">\(esc(e.event.severity))</td><td>\(esc(e.event.reason))</td><td><code>\(esc(details))</code></td></tr>\n"
            }
            h += "</tbody></table>\n"
        }
        table("decisions", "Decision history", decisions)
        table("events", "Latest events", events)
        h += localTimeScript + "</body></html>\n"
        return h
    }

    /// A time in UTC text, with the instant for the script that shows it in local time.
    static func timeTag(_ d: Date) -> String {
        "<time datetime=\"\(RFC3339.format(d))\">\(esc(time(d)))</time>"
    }

    /// Rewrites every <time datetime> into the browser's zone: "2026-12-01 09:30:00 JST".
    static let localTimeScript = """
        <script>
        for (const t of document.querySelectorAll('time[datetime]')) {
          const d = new Date(t.getAttribute('datetime'));
          if (isNaN(d)) continue;
          const parts = new Intl.DateTimeFormat('sv-SE', {year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit',
                                                          second: '2-digit', hour12: false, timeZoneName: 'short'}).format(d);
          t.title = t.textContent;
          t.textContent = parts.replace('GMT+9', 'JST');
        }
        </script>

        """

    /// UTC with its Z, so that readers in JST are not misled.
    static func time(_ d: Date) -> String { d.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: false).timeZone(separator: .omitted)) }

    /// HTML escaping for text and attribute values.
    public static func esc(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }
}
