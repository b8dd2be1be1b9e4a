// The dashboard's pages: the agent list (filters, search, pages, latest events, the evidence
// export form), one agent's page, and the operators' actions. Each page is a Mustache template
// (DashboardTemplates.swift) rendered from a view of plain values: every value an agent or an
// operator sent goes through `{{…}}`, which HTML-escapes it; no page is built by concatenating
// markup. Pages are in Japanese or English; times are written in UTC and shown in the
// browser's zone (JST in Japan) by a few lines of script.

import Foundation
import Mustache
import SegguardReport

/// Renders the dashboard pages.
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

        var other: Language { self == .ja ? .en : .ja }
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

    /// What the agent list is filtered by (each kept by the page, language and export links).
    public struct Filters: Sendable, Equatable {
        public var group: String?
        public var state: String?
        public var segment: String?
        public var search: String?
        public init(group: String? = nil, state: String? = nil, segment: String? = nil, search: String? = nil) {
            self.group = group
            self.state = state
            self.segment = segment
            self.search = search
        }
        /// The query items of these filters, in a fixed order.
        var items: [(String, String)] {
            [("group", group), ("state", state), ("segment", segment), ("q", search)].compactMap { k, v in v.flatMap { $0.isEmpty ? nil : (k, $0) } }
        }
    }

    // MARK: Pages

    /// The agent list: a page of agents, the latest events, filters and the export form.
    public static func render(agents: [AgentRecord], events: [StoredEvent], groups: [String], segments: [String] = [], filters: Filters,
                              now: Date, staleIntervals: Int, page: Page? = nil, language: Language = .en) -> String {
        let t = Texts(language)
        let counts = Dictionary(grouping: agents, by: \.state).mapValues(\.count)
        func link(_ items: [(String, String)]) -> String { "/?" + query(items) }
        let langItem: [(String, String)] = language == .ja ? [("lang", "ja")] : []
        var pager: Pager?
        if let page {
            let first = page.total == 0 ? 0 : page.offset + 1, last = page.offset + agents.count
            pager = Pager(text: t.pages(first: first, last: last, total: page.total, page: page.number, pages: page.pages),
                          previous: page.number > 1 ? link(filters.items + langItem + [("page", "\(page.number - 1)")]) : nil,
                          next: page.number < page.pages ? link(filters.items + langItem + [("page", "\(page.number + 1)")]) : nil)
        }
        // The export form starts at the last 7 Japan days, today included (what the operator reads).
        let jst = japanCalendar
        let today = jst.startOfDay(for: now)
        let view = ListView(
            lang: language.rawValue, t: t, title: t.title, nav: nav(t, language, current: "agents", otherHref: link([("lang", language.other.rawValue)] + filters.items)),
            summary: t.summary(shown: agents.count, authorized: counts["authorized"] ?? 0, unauthorized: counts["unauthorized"] ?? 0,
                               stale: counts["stale"] ?? 0, intervals: staleIntervals),
            generated: TimeView(now),
            groups: groups.map { Option(value: $0, label: $0, selected: $0 == filters.group) },
            states: ["authorized", "unauthorized", "stale"].map { Option(value: $0, label: t.state($0), selected: $0 == filters.state) },
            segments: segments.map { Option(value: $0, label: $0, selected: $0 == filters.segment) },
            search: filters.search ?? "",
            pager: pager,
            agents: agents.map { AgentRow($0, t: t, now: now) },
            eventsList: EventsTable(tableID: "events", withAgent: true, rows: events.map { EventRow($0, language: language) }),
            exportFrom: day(jst.date(byAdding: .day, value: -6, to: today) ?? today),
            exportTo: day(today),
            exportGroup: filters.group ?? "")
        return render(view, template: "list")
    }

    /// One agent: its state, interfaces, policy and spool, its decision history and its latest
    /// events.
    public static func renderAgent(_ a: AgentRecord, decisions: [StoredEvent], events: [StoredEvent], now: Date, language: Language = .en,
                                   revocation: Revocation? = nil) -> String {
        let t = Texts(language)
        let path = agentPath(a.agentID)
        var spool = t.spoolLong(pending: a.spoolPending, held: a.spoolHeld, dropped: a.spoolDropped)
        if let o = a.spoolOldestSeconds { spool += t.oldestSeconds(o) }
        let ago = max(0, Int(now.timeIntervalSince(a.lastSeen)))
        let view = AgentView(
            lang: language.rawValue, t: t, title: "\(a.agentID) · \(t.title)",
            nav: nav(t, language, current: "agent", otherHref: path + "?lang=\(language.other.rawValue)"),
            id: a.agentID, group: a.group, host: a.hostname, state: a.state, stateLabel: t.state(a.state) + (a.stale ? t.silent(ago) : ""),
            segment: a.segment, reason: a.reason, interfaces: interfaceText(a.interfaces),
            policy: "\(a.policyName) \(a.policySHA256.prefix(12))" + (a.bundleVersion.map { t.bundle($0) } ?? ""),
            version: a.agentVersion, interval: t.seconds(a.intervalSeconds), lastSeen: TimeView(a.lastSeen), firstSeen: TimeView(a.firstSeen),
            spool: spool, backlog: a.deliveryBacklog,
            certificateNotAfter: a.certificateNotAfter.map(TimeView.init),
            certificateDays: a.certificateNotAfter.map { t.daysLeft(Int(($0.timeIntervalSince(now) / 86_400).rounded(.down))) },
            certificateWarning: a.certificateNotAfter.map { $0.timeIntervalSince(now) < Double(AgentRecord.certificateWarningDays) * 86_400 } ?? false,
            serial: a.certificateSerial ?? t.notReported, revoked: revocation.map(t.revoked),
            decisionsList: EventsTable(tableID: "decisions", withAgent: false, rows: decisions.map { EventRow($0) }),
            eventsList: EventsTable(tableID: "events", withAgent: false, rows: events.map { EventRow($0) }))
        return render(view, template: "agent")
    }

    /// The operators' actions, newest first: policy pushes (stored or refused) and exports.
    public static func renderActions(_ actions: [AdminAction], now: Date, language: Language = .en) -> String {
        let t = Texts(language)
        let view = ActionsView(
            lang: language.rawValue, t: t, title: "\(t.actions) · \(t.title)",
            nav: nav(t, language, current: "actions", otherHref: "/actions?lang=\(language.other.rawValue)"),
            actions: actions.map { ActionRow(time: TimeView($0.time), by: $0.by, action: $0.action, actionLabel: t.action($0.action), target: $0.target, detail: $0.detail) },
            generated: TimeView(now))
        return render(view, template: "actions")
    }

    // MARK: Views (plain stored values: what the templates read)

    struct TimeView {
        let iso: String
        let text: String
        init(_ d: Date) {
            iso = RFC3339.format(d)
            text = time(d)
        }
    }
    struct Option {
        let value: String
        let label: String
        let selected: Bool
    }
    struct Pager {
        let text: String
        let previous: String?
        let next: String?
    }
    struct NavLink {
        let href: String
        let label: String
        let current: Bool
    }
    struct Nav {
        let links: [NavLink]
        let otherHref: String
        let otherLang: String
        let otherLabel: String
    }
    struct AgentRow {
        let id: String
        let href: String
        let group: String
        let host: String
        let state: String
        let stateLabel: String
        let segment: String
        let reason: String
        let interfaces: String
        let lastSeen: TimeView
        let ago: String
        let policyName: String
        let policyShort: String
        let policySHA: String
        let bundle: String?
        let spool: String
        let backlog: Bool
        init(_ a: AgentRecord, t: Texts, now: Date) {
            let ago = max(0, Int(now.timeIntervalSince(a.lastSeen)))  // replicas' clocks may differ slightly
            id = a.agentID
            href = agentPath(a.agentID) + (t.lang == .ja ? "?lang=ja" : "")
            group = a.group
            host = a.hostname
            state = a.state
            stateLabel = t.state(a.state) + (a.stale ? t.silent(ago) : "")
            segment = a.segment
            reason = a.reason
            interfaces = interfaceText(a.interfaces)
            lastSeen = TimeView(a.lastSeen)
            self.ago = t.ago(ago)
            policyName = a.policyName
            policyShort = String(a.policySHA256.prefix(12))
            policySHA = a.policySHA256
            bundle = a.bundleVersion.map { "v\($0)" }
            // Events not getting through are flagged: refused by the collector (held by the agent), or old.
            let oldest = a.spoolOldestSeconds.flatMap { $0 > AgentRecord.backlogSeconds ? $0 / 3600 : nil }
            spool = t.spool(pending: a.spoolPending, held: a.spoolHeld, oldestHours: oldest, dropped: a.spoolDropped)
            backlog = a.deliveryBacklog
        }
    }
    struct EventRow {
        let time: TimeView
        let agent: String
        let agentHref: String
        let group: String
        let kind: String
        let severity: String
        let reason: String
        let details: String
        init(_ e: StoredEvent, language: Language = .en) {
            time = TimeView(e.event.time)
            agent = e.agentID
            agentHref = agentPath(e.agentID) + (language == .ja ? "?lang=ja" : "")
            group = e.group
            kind = e.event.kind
            severity = e.event.severity
            reason = e.event.reason
            details = e.event.details.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        }
    }
    struct EventsTable {
        let tableID: String
        let withAgent: Bool
        let rows: [EventRow]
        let columns: Int
        init(tableID: String, withAgent: Bool, rows: [EventRow]) {
            self.tableID = tableID
            self.withAgent = withAgent
            self.rows = rows
            columns = withAgent ? 7 : 5
        }
    }
    struct ActionRow {
        let time: TimeView
        let by: String
        let action: String
        let actionLabel: String
        let target: String
        let detail: String
    }
    struct ListView {
        let lang: String
        let t: Texts
        let title: String
        let nav: Nav
        let summary: String
        let generated: TimeView
        let groups: [Option]
        let states: [Option]
        let segments: [Option]
        let search: String
        let pager: Pager?
        let agents: [AgentRow]
        let eventsList: EventsTable
        let exportFrom: String
        let exportTo: String
        let exportGroup: String
    }
    struct AgentView {
        let lang: String
        let t: Texts
        let title: String
        let nav: Nav
        let id: String
        let group: String
        let host: String
        let state: String
        let stateLabel: String
        let segment: String
        let reason: String
        let interfaces: String
        let policy: String
        let version: String
        let interval: String
        let lastSeen: TimeView
        let firstSeen: TimeView
        let spool: String
        let backlog: Bool
        let certificateNotAfter: TimeView?
        let certificateDays: String?
        let certificateWarning: Bool
        let serial: String
        let revoked: String?
        let decisionsList: EventsTable
        let eventsList: EventsTable
    }
    struct ActionsView {
        let lang: String
        let t: Texts
        let title: String
        let nav: Nav
        let actions: [ActionRow]
        let generated: TimeView
    }

    // MARK: Helpers

    static func nav(_ t: Texts, _ language: Language, current: String, otherHref: String) -> Nav {
        let suffix = language == .ja ? "?lang=ja" : ""
        return Nav(links: [NavLink(href: "/" + suffix, label: t.agents, current: current == "agents"),
                           NavLink(href: "/actions" + suffix, label: t.actions, current: current == "actions")],
                   otherHref: otherHref, otherLang: language.other.rawValue, otherLabel: t.otherLanguage)
    }

    /// An agent's page: its id percent-encoded as one path segment.
    static func agentPath(_ id: String) -> String {
        "/agents/" + (id.addingPercentEncoding(withAllowedCharacters: unreserved) ?? id)
    }
    static let unreserved = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")

    static func interfaceText(_ list: [InterfaceSummary]) -> String {
        list.map { i in
            [i.name, i.up ? "up" : "down", i.ssid.map { "SSID \($0)" }, i.bssid, i.deviceAuth.map { "802.1X \($0)" }].compactMap { $0 }.joined(separator: " ")
        }.joined(separator: "; ")
    }

    /// A query string, each value percent-encoded (the template HTML-escapes the whole link).
    static func query(_ items: [(String, String)]) -> String {
        items.map { "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")" }.joined(separator: "&")
    }

    /// Days in the export form are Japan's days (the collector's operators are there).
    static let japanCalendar: Calendar = {
        var c = Calendar(identifier: .gregorian)
        c.timeZone = TimeZone(identifier: "Asia/Tokyo") ?? TimeZone(secondsFromGMT: 9 * 3600)!
        return c
    }()

    static func day(_ d: Date) -> String {
        let c = japanCalendar.dateComponents([.year, .month, .day], from: d)
        return String(format: "%04d-%02d-%02d", c.year ?? 0, c.month ?? 0, c.day ?? 0)
    }

    static func render(_ view: Any, template: String) -> String {
        guard let html = templates.render(view, withTemplate: template) else { preconditionFailure("no dashboard template \(template)") }
        return html
    }

    /// UTC with its Z, so that readers in JST are not misled where script does not run.
    static func time(_ d: Date) -> String { d.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: false).timeZone(separator: .omitted)) }
}
