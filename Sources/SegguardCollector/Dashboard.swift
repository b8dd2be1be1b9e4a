// The dashboard: one server-rendered HTML page (no script needed), listing agents with their
// state, reason, last heartbeat, stale flag and policy, and the latest events; filters by
// group and state are plain links and a GET form. Everything from agents is escaped.

import Foundation
import SegguardReport

/// Renders the dashboard page.
public enum Dashboard {
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
                              staleIntervals: Int, page: Page? = nil) -> String {
        var h = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta http-equiv="refresh" content="15">
            <title>segment-guard collector</title>
            <style>
            body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
            table{border-collapse:collapse;width:100%;margin-bottom:2em}
            th,td{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left;font-size:.9em;vertical-align:top}
            th{background:#f3f3f3}
            .authorized{color:#176117}.unauthorized{color:#a40000;font-weight:bold}.stale{color:#8a5a00;font-weight:bold}.backlog{color:#a40000;font-weight:bold}
            .warning{color:#a40000}.critical{color:#fff;background:#a40000}
            code{font-size:.85em}
            </style></head><body>
            <h1>segment-guard collector</h1>

            """
        let counts = Dictionary(grouping: agents, by: \.state).mapValues(\.count)
        h += "<p id=\"summary\">\(agents.count) agent(s) shown: \(counts["authorized"] ?? 0) authorized, \(counts["unauthorized"] ?? 0) unauthorized, \(counts["stale"] ?? 0) stale. Stale after \(staleIntervals) missed heartbeats. Generated \(esc(time(now))).</p>\n"
        h += "<form method=\"get\" action=\"/\" id=\"filters\"><label>Group <select name=\"group\"><option value=\"\">all</option>"
        for g in groups { h += "<option value=\"\(esc(g))\"\(g == group ? " selected" : "")>\(esc(g))</option>" }
        h += "</select></label> <label>State <select name=\"state\"><option value=\"\">all</option>"
        for s in ["authorized", "unauthorized", "stale"] { h += "<option value=\"\(s)\"\(s == state ? " selected" : "")>\(s)</option>" }
        h += "</select></label> <label>Search <input type=\"search\" name=\"q\" value=\"\(esc(page?.search ?? ""))\" placeholder=\"agent id or host name\"></label>"
        h += " <button type=\"submit\">Filter</button></form>\n"
        if let page {
            // Links keep the filters; only the page changes.
            func link(_ n: Int, _ label: String) -> String {
                var items: [(String, String)] = []
                if let group { items.append(("group", group)) }
                if let state { items.append(("state", state)) }
                if let q = page.search, !q.isEmpty { items.append(("q", q)) }
                items.append(("page", "\(n)"))
                let query = items.map { "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")" }.joined(separator: "&")
                return "<a href=\"/?\(esc(query))\" rel=\"\(label == "next" ? "next" : "prev")\">\(label)</a>"
            }
            let first = page.total == 0 ? 0 : page.offset + 1, last = page.offset + agents.count
            h += "<p id=\"pages\">Agents \(first)–\(last) of \(page.total) (page \(page.number) of \(page.pages))"
            if page.number > 1 { h += " " + link(page.number - 1, "previous") }
            if page.number < page.pages { h += " " + link(page.number + 1, "next") }
            h += "</p>\n"
        }

        h += "<h2>Agents</h2>\n<table id=\"agents\"><thead><tr><th>Agent</th><th>Group</th><th>Host</th><th>State</th><th>Segment</th><th>Reason</th><th>Interfaces</th><th>Last heartbeat</th><th>Policy</th><th>Spool</th></tr></thead><tbody>\n"
        if agents.isEmpty { h += "<tr><td colspan=\"10\">No agent matches.</td></tr>\n" }
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
            h += "<td class=\"\(a.state)\">\(a.state)\(a.stale ? " (silent \(ago) s)" : "")</td><td>\(esc(a.segment))</td><td>\(esc(a.reason))</td>"
            h += "<td>\(esc(ifaces))</td><td>\(esc(time(a.lastSeen))) (\(ago) s ago)</td>"
            h += "<td>\(esc(a.policyName)) <code title=\"\(esc(a.policySHA256))\">\(esc(String(a.policySHA256.prefix(12))))</code>\(a.bundleVersion.map { " v\($0)" } ?? "")</td>"
            // Events not getting through are flagged: refused by the collector (held by the agent), or old.
            var spool = "\(a.spoolPending) pending"
            if a.spoolHeld > 0 { spool += ", \(a.spoolHeld) refused" }
            if let o = a.spoolOldestSeconds, o > AgentRecord.backlogSeconds { spool += ", oldest \(o / 3600) h" }
            if a.spoolDropped > 0 { spool += ", \(a.spoolDropped) dropped" }
            h += "<td\(a.deliveryBacklog ? " class=\"backlog\"" : "")>\(esc(spool))</td></tr>\n"
        }
        h += "</tbody></table>\n<h2>Latest events</h2>\n<table id=\"events\"><thead><tr><th>Time</th><th>Agent</th><th>Group</th><th>Kind</th><th>Severity</th><th>Reason</th><th>Details</th></tr></thead><tbody>\n"
        if events.isEmpty { h += "<tr><td colspan=\"7\">No events.</td></tr>\n" }
        for e in events {
            h += "<tr class=\"event\" data-kind=\"\(esc(e.event.kind))\"><td>\(esc(time(e.event.time)))</td><td>\(esc(e.agentID))</td><td>\(esc(e.group))</td>"
            let details = e.event.details.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            h += "<td>\(esc(e.event.kind))</td><td class=\"\(esc(e.event.severity))\">\(esc(e.event.severity))</td><td>\(esc(e.event.reason))</td>"
            h += "<td><code>\(esc(details))</code></td></tr>\n"
        }
        h += "</tbody></table>\n</body></html>\n"
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
