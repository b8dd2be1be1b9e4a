// The dashboard's Mustache templates and texts. Templates are compiled once at start; `{{x}}`
// escapes HTML (& < > " '), and no template uses the unescaped `{{{x}}}` or `{{& x}}`: a test
// checks that. Texts are in Japanese and English; what agents send is shown as sent.

import Crypto
import Foundation
import Mustache

extension Dashboard {
    /// The compiled templates (partials `head` and `nav` are shared by the pages).
    static let templates: MustacheLibrary = {
        MustacheContentTypes.register(ScalarHTML(), named: ScalarHTML.name)
        var library = MustacheLibrary()
        do {
            for (name, text) in templateTexts { try library.register(text, named: name) }
        } catch {
            preconditionFailure("dashboard template: \(error)")
        }
        return library
    }()

    /// The template sources, by name (tests check them). Each starts with the pragma that
    /// selects `ScalarHTML` (a partial starts over with Mustache's own HTML escaping otherwise).
    static let templateTexts: [(String, String)] = [("head", head), ("nav", navTemplate), ("times", timesScript),
                                                    ("events", eventsTable), ("list", list), ("agent", agent), ("actions", actionsPage)]
        .map { ($0.0, "{{% CONTENT_TYPE: \(ScalarHTML.name)}}" + $0.1) }

    /// HTML escaping by Unicode scalar. Mustache's own escapes by Character, and a quote
    /// followed by a combining mark (`"` U+0301) is one Character that is not `"`: it would
    /// pass unescaped and end an attribute in the browser. Here every &, <, >, " and ' scalar
    /// is escaped, whatever follows it.
    struct ScalarHTML: MustacheContentType {
        static let name = "SEGGUARD_HTML"
        func escapeText(_ text: String) -> String { Dashboard.escapeHTML(text) }
    }

    /// Escapes &, <, >, " and ' scalar by scalar.
    static func escapeHTML(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        out.reserveCapacity(text.utf8.count)
        for u in text.unicodeScalars {
            switch u {
            case "&": out.append(contentsOf: "&amp;".unicodeScalars)
            case "<": out.append(contentsOf: "&lt;".unicodeScalars)
            case ">": out.append(contentsOf: "&gt;".unicodeScalars)
            case "\"": out.append(contentsOf: "&quot;".unicodeScalars)
            case "'": out.append(contentsOf: "&#39;".unicodeScalars)
            default: out.append(u)
            }
        }
        return String(out)
    }

    /// The pages' Content-Security-Policy: no script but the pages' own time script (by its
    /// SHA-256), no other origin for anything, forms only to the collector, no framing.
    static let contentSecurityPolicy: String = {
        let start = timesScript.range(of: "<script>")!.upperBound, end = timesScript.range(of: "</script>")!.lowerBound
        let digest = Data(SHA256.hash(data: Data(timesScript[start..<end].utf8))).base64EncodedString()
        return "default-src 'none'; script-src 'sha256-\(digest)'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
            + "frame-ancestors 'none'; base-uri 'none'"
    }()

    static let head = """
        <!DOCTYPE html>
        <html lang="{{lang}}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
        <title>{{title}}</title>
        <style>
        body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
        nav{margin-bottom:1em}nav a{margin-right:1em}nav a[aria-current]{font-weight:bold;text-decoration:none;color:#222}
        table{border-collapse:collapse;width:100%;margin-bottom:2em}
        th,td{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left;font-size:.9em;vertical-align:top}
        th{background:#f3f3f3}
        table.facts th{width:14em}
        .authorized{color:#176117}.unauthorized{color:#a40000;font-weight:bold}.stale{color:#8a5a00;font-weight:bold}.backlog{color:#a40000;font-weight:bold}
        .warning{color:#a40000}.critical{color:#fff;background:#a40000}
        code{font-size:.85em}
        form{margin:.5em 0}
        </style></head><body>

        """

    static let navTemplate = """
        <nav id="nav">{{#nav.links}}<a href="{{href}}"{{#current}} aria-current="page"{{/current}}>{{label}}</a>{{/nav.links}}<a id="language" href="{{nav.otherHref}}" hreflang="{{nav.otherLang}}">{{nav.otherLabel}}</a></nav>

        """

    /// Rewrites every <time datetime> into the browser's zone: "2026-12-01 09:30:00 JST".
    static let timesScript = """
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

    /// An event table; the list page adds the agent and group columns (`withAgent`).
    static let eventsTable = """
        <table id="{{tableID}}"><thead><tr><th>{{t.time}}</th>{{#withAgent}}<th>{{t.agent}}</th><th>{{t.group}}</th>{{/withAgent}}<th>{{t.kind}}</th><th>{{t.severity}}</th><th>{{t.reason}}</th><th>{{t.details}}</th></tr></thead><tbody>
        {{#rows}}
        <tr class="event" data-kind="{{kind}}"><td><time datetime="{{time.iso}}">{{time.text}}</time></td>{{#withAgent}}<td><a href="{{agentHref}}">{{agent}}</a></td><td>{{group}}</td>{{/withAgent}}<td>{{kind}}</td><td class="{{severity}}">{{severity}}</td><td>{{reason}}</td><td><code>{{details}}</code></td></tr>
        {{/rows}}
        {{^rows}}
        <tr><td colspan="{{columns}}">{{t.noEvents}}</td></tr>
        {{/rows}}
        </tbody></table>

        """

    static let list = """
        {{>head}}{{>nav}}<h1>{{t.title}}</h1>
        <p id="summary">{{summary}} <span>{{t.generated}} <time datetime="{{generated.iso}}">{{generated.text}}</time></span></p>
        <form method="get" action="/" id="filters">{{#t.ja}}<input type="hidden" name="lang" value="ja">{{/t.ja}}<label>{{t.group}} <select name="group"><option value="">{{t.all}}</option>{{#groups}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{label}}</option>{{/groups}}</select></label>
        <label>{{t.stateLabel}} <select name="state"><option value="">{{t.all}}</option>{{#states}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{label}}</option>{{/states}}</select></label>
        <label>{{t.segment}} <select name="segment"><option value="">{{t.all}}</option>{{#segments}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{label}}</option>{{/segments}}</select></label>
        <label>{{t.search}} <input type="search" name="q" value="{{search}}" placeholder="{{t.searchHint}}"></label>
        <button type="submit">{{t.filter}}</button></form>
        {{#pager}}<p id="pages">{{text}}{{#previous}} <a href="{{previous}}" rel="prev">{{t.previous}}</a>{{/previous}}{{#next}} <a href="{{next}}" rel="next">{{t.next}}</a>{{/next}}</p>{{/pager}}
        <h2>{{t.agents}}</h2>
        <table id="agents"><thead><tr><th>{{t.agent}}</th><th>{{t.group}}</th><th>{{t.host}}</th><th>{{t.stateLabel}}</th><th>{{t.segment}}</th><th>{{t.reason}}</th><th>{{t.interfaces}}</th><th>{{t.lastHeartbeat}}</th><th>{{t.policy}}</th><th>{{t.spool}}</th></tr></thead><tbody>
        {{#agents}}
        <tr class="agent" data-agent="{{id}}" data-state="{{state}}"><td><a href="{{href}}">{{id}}</a></td><td>{{group}}</td><td>{{host}}</td><td class="{{state}}">{{stateLabel}}</td><td>{{segment}}</td><td>{{reason}}</td><td>{{interfaces}}</td><td><time datetime="{{lastSeen.iso}}">{{lastSeen.text}}</time>{{ago}}</td><td>{{policyName}} <code title="{{policySHA}}">{{policyShort}}</code>{{#bundle}} {{bundle}}{{/bundle}}</td><td{{#backlog}} class="backlog"{{/backlog}}>{{spool}}</td></tr>
        {{/agents}}
        {{^agents}}
        <tr><td colspan="10">{{t.noAgent}}</td></tr>
        {{/agents}}
        </tbody></table>
        <h2>{{t.latestEvents}}</h2>
        {{#eventsList}}{{>events}}{{/eventsList}}
        <h2>{{t.exportTitle}}</h2>
        <form method="get" action="/api/v1/admin/export/events" id="export"><label>{{t.from}} <input type="date" name="from" value="{{exportFrom}}" required></label>
        <label>{{t.to}} <input type="date" name="to" value="{{exportTo}}" required></label>
        <label>{{t.group}} <select name="group"><option value="">{{t.all}}</option>{{#groups}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{label}}</option>{{/groups}}</select></label>
        <label>{{t.format}} <select name="format"><option value="csv" selected>CSV</option><option value="json">JSON</option></select></label>
        <button type="submit">{{t.export}}</button> <small>{{t.exportHint}}</small></form>
        {{>times}}</body></html>

        """

    static let agent = """
        {{>head}}{{>nav}}<h1>{{id}}</h1>
        <table id="agent" class="facts"><tbody>
        <tr><th>{{t.group}}</th><td id="group">{{group}}</td></tr>
        <tr><th>{{t.host}}</th><td id="host">{{host}}</td></tr>
        <tr><th>{{t.stateLabel}}</th><td id="state" class="{{state}}">{{stateLabel}}</td></tr>
        <tr><th>{{t.segment}}</th><td id="segment">{{segment}}</td></tr>
        <tr><th>{{t.reason}}</th><td id="reason">{{reason}}</td></tr>
        <tr><th>{{t.interfaces}}</th><td id="interfaces">{{interfaces}}</td></tr>
        <tr><th>{{t.policy}}</th><td id="policy">{{policy}}</td></tr>
        <tr><th>{{t.agentVersion}}</th><td id="version">{{version}}</td></tr>
        <tr><th>{{t.interval}}</th><td id="interval">{{interval}}</td></tr>
        <tr><th>{{t.lastHeartbeat}}</th><td id="last-seen"><time datetime="{{lastSeen.iso}}">{{lastSeen.text}}</time></td></tr>
        <tr><th>{{t.firstSeen}}</th><td id="first-seen"><time datetime="{{firstSeen.iso}}">{{firstSeen.text}}</time></td></tr>
        <tr><th>{{t.spool}}</th><td id="spool"{{#backlog}} class="backlog"{{/backlog}}>{{spool}}</td></tr>
        <tr><th>{{t.certSerial}}</th><td id="cert-serial"{{#revoked}} class="unauthorized"{{/revoked}}>{{serial}}{{#revoked}} {{.}}{{/revoked}}</td></tr>
        <tr><th>{{t.certExpiry}}</th><td id="cert-expiry"{{#certificateWarning}} class="backlog"{{/certificateWarning}}>{{#certificateNotAfter}}<time datetime="{{iso}}">{{text}}</time>{{/certificateNotAfter}}{{certificateDays}}{{^certificateNotAfter}}{{t.notReported}}{{/certificateNotAfter}}</td></tr>
        </tbody></table>
        <h2>{{t.decisionHistory}}</h2>
        {{#decisionsList}}{{>events}}{{/decisionsList}}
        <h2>{{t.latestEvents}}</h2>
        {{#eventsList}}{{>events}}{{/eventsList}}
        {{>times}}</body></html>

        """

    static let actionsPage = """
        {{>head}}{{>nav}}<h1>{{t.actions}}</h1>
        <p id="summary">{{t.actionsHint}} <span>{{t.generated}} <time datetime="{{generated.iso}}">{{generated.text}}</time></span></p>
        <table id="actions"><thead><tr><th>{{t.time}}</th><th>{{t.operatorLabel}}</th><th>{{t.action}}</th><th>{{t.target}}</th><th>{{t.details}}</th></tr></thead><tbody>
        {{#actions}}
        <tr class="action" data-action="{{action}}"><td><time datetime="{{time.iso}}">{{time.text}}</time></td><td>{{by}}</td><td>{{actionLabel}}</td><td>{{target}}</td><td><code>{{detail}}</code></td></tr>
        {{/actions}}
        {{^actions}}
        <tr><td colspan="5">{{t.noActions}}</td></tr>
        {{/actions}}
        </tbody></table>
        {{>times}}</body></html>

        """

    /// Every text of the pages in one language (stored values: templates read them by name).
    struct Texts {
        let lang: Language
        let ja: Bool
        let title, agents, actions, group, stateLabel, segment, all, search, searchHint, filter, previous, next: String
        let agent, host, reason, interfaces, lastHeartbeat, policy, spool, noAgent, latestEvents, noEvents, otherLanguage: String
        let time, kind, severity, details, generated: String
        let agentVersion, interval, firstSeen, certExpiry, notReported, decisionHistory, certSerial: String
        let exportTitle, from, to, format, export, exportHint: String
        let operatorLabel, action, target, noActions, actionsHint: String

        init(_ lang: Language) {
            self.lang = lang
            let j = lang == .ja
            ja = j
            func s(_ ja: String, _ en: String) -> String { j ? ja : en }
            title = s("segment-guard コレクター", "segment-guard collector")
            agents = s("端末", "Agents")
            actions = s("操作履歴", "Operator actions")
            group = s("グループ", "Group")
            stateLabel = s("状態", "State")
            segment = s("セグメント", "Segment")
            all = s("すべて", "all")
            search = s("検索", "Search")
            searchHint = s("端末 ID またはホスト名", "agent id or host name")
            filter = s("絞り込み", "Filter")
            previous = s("前へ", "previous")
            next = s("次へ", "next")
            agent = s("端末", "Agent")
            host = s("ホスト名", "Host")
            reason = s("理由", "Reason")
            interfaces = s("インターフェース", "Interfaces")
            lastHeartbeat = s("最終ハートビート", "Last heartbeat")
            policy = s("ポリシー", "Policy")
            spool = s("未送信イベント", "Spool")
            noAgent = s("該当する端末はありません。", "No agent matches.")
            latestEvents = s("最新のイベント", "Latest events")
            noEvents = s("イベントはありません。", "No events.")
            otherLanguage = s("English", "日本語")
            time = s("時刻", "Time")
            kind = s("種類", "Kind")
            severity = s("重要度", "Severity")
            details = s("詳細", "Details")
            generated = s("作成:", "Generated")
            agentVersion = s("エージェントのバージョン", "Agent version")
            interval = s("ハートビート間隔", "Heartbeat interval")
            firstSeen = s("初回受信", "First seen")
            certExpiry = s("端末証明書の有効期限", "Device certificate expiry")
            notReported = s("不明（この版のコレクターが受けたハートビートがまだありません）", "not known yet (no heartbeat received by this collector version)")
            decisionHistory = s("判定の履歴", "Decision history")
            certSerial = s("端末証明書のシリアル番号", "Device certificate serial")
            exportTitle = s("証跡の書き出し", "Evidence export")
            from = s("開始日", "From")
            to = s("終了日", "To")
            format = s("形式", "Format")
            export = s("書き出す", "Export")
            exportHint = s("日付は日本時間、終了日を含みます。", "Days are Japan time (JST); the end day is included.")
            operatorLabel = s("操作者", "Operator")
            action = s("操作", "Action")
            target = s("対象", "Target")
            noActions = s("操作の記録はありません。", "No action recorded.")
            actionsHint = s("ポリシーの配布（拒否を含む）と証跡の書き出しを、操作者と時刻とともに記録しています。新しい順に最大 500 件。",
                            "Policy pushes (refused ones too) and evidence exports, with who and when; newest first, at most 500.")
        }

        func state(_ s: String) -> String {
            guard ja else { return s }
            switch s {
            case "authorized": return "許可"
            case "unauthorized": return "不許可"
            case "stale": return "応答なし"
            default: return s
            }
        }
        func action(_ a: String) -> String {
            switch a {
            case "policy-push": return ja ? "ポリシー配布" : "policy push"
            case "policy-push-refused": return ja ? "ポリシー配布（拒否）" : "policy push refused"
            case "export": return ja ? "証跡の書き出し" : "evidence export"
            case "revoke": return ja ? "証明書の失効" : "certificate revoked"
            default: return a
            }
        }
        func summary(shown: Int, authorized: Int, unauthorized: Int, stale: Int, intervals: Int) -> String {
            ja ? "\(shown) 台を表示: 許可 \(authorized)、不許可 \(unauthorized)、応答なし \(stale)。ハートビートが \(intervals) 回続けて届かない端末は応答なしです。"
               : "\(shown) agent(s) shown: \(authorized) authorized, \(unauthorized) unauthorized, \(stale) stale. Stale after \(intervals) missed heartbeats."
        }
        func pages(first: Int, last: Int, total: Int, page: Int, pages: Int) -> String {
            ja ? "端末 \(first)–\(last) / 全 \(total) 台（\(page) / \(pages) ページ）" : "Agents \(first)–\(last) of \(total) (page \(page) of \(pages))"
        }
        func silent(_ s: Int) -> String { ja ? "（\(s) 秒応答なし）" : " (silent \(s) s)" }
        func ago(_ s: Int) -> String { ja ? "（\(s) 秒前）" : " (\(s) s ago)" }
        func daysLeft(_ d: Int) -> String {
            if d < 0 { return ja ? "（期限切れ）" : " (expired)" }
            return ja ? "（残り \(d) 日）" : " (\(d) days left)"
        }
        func seconds(_ s: Int) -> String { ja ? "\(s) 秒" : "\(s) s" }
        func bundle(_ v: Int64) -> String { ja ? "（バンドル v\(v)）" : " (bundle v\(v))" }
        func spool(pending: Int, held: Int, oldestHours: Int?, dropped: Int) -> String {
            var out = ja ? "未送信 \(pending)" : "\(pending) pending"
            if held > 0 { out += ja ? "、拒否 \(held)" : ", \(held) refused" }
            if let h = oldestHours { out += ja ? "、最古 \(h) 時間" : ", oldest \(h) h" }
            if dropped > 0 { out += ja ? "、破棄 \(dropped)" : ", \(dropped) dropped" }
            return out
        }
        func spoolLong(pending: Int, held: Int, dropped: Int) -> String {
            ja ? "未送信 \(pending)、コレクターが拒否 \(held)、破棄 \(dropped)" : "\(pending) pending, \(held) refused by the collector, \(dropped) dropped"
        }
        func revoked(_ r: Revocation) -> String {
            ja ? "（\(Dashboard.time(r.time)) に \(r.by) が失効: \(r.reason)）" : "(revoked \(Dashboard.time(r.time)) by \(r.by): \(r.reason))"
        }
        func oldestSeconds(_ s: Int) -> String { ja ? "、最古の未送信は \(s) 秒前" : ", oldest undelivered \(s) s old" }
    }
}
