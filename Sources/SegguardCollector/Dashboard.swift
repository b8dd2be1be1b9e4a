// The dashboard: one server-rendered HTML page (no script needed), listing agents with their
// state, reason, last heartbeat, stale flag and policy, and the latest events; filters by
// group and state are plain links and a GET form. Everything from agents is escaped.

import Foundation
import SegguardReport

/// Renders the dashboard page.
public enum Dashboard {
    public static func render(agents: [AgentRecord], events: [StoredEvent], groups: [String], group: String?, state: String?, now: Date,
                              staleIntervals: Int) -> String {
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
        h += "</select></label> <button type=\"submit\">Filter</button></form>\n"

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
            h += "<td>\(esc(a.agentID))</td><td>\(esc(a.group))</td><td>\(esc(a.hostname))</td>"
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
