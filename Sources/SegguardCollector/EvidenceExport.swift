// The security officer's evidence: every stored event of a time range (decision changes,
// refusals, terminations, capture-tool denials, tamper signs, the collector's own stale /
// recovered / conflict records), as CSV or JSON, streamed page by page so an export of any
// size uses bounded memory. The range is the agents' event times; times are written in UTC
// (RFC 3339) and in Japan Standard Time for the reader.
//
//   GET /api/v1/admin/export/events?from=2026-11-01T00:00:00+09:00&to=2026-12-01T00:00:00+09:00
//        [&group=mynumber] [&agent=tc-0001] [&format=csv|json]      (admin bearer token)

import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SegguardReport
import ServiceLifecycle

/// Formats of the export.
enum ExportFormat: String {
    case csv, json

    /// "2026-11-01" as a day in Japan (+09:00): its start, or with `endOfDay` the start of the
    /// next day (the range's end is excluded, so the day is included whole).
    static func japanDay(_ text: String, endOfDay: Bool) -> Date? {
        guard text.utf8.count == 10, let m = text.wholeMatch(of: #/(\d{4})-(\d{2})-(\d{2})/#),
              let y = Int(m.1), let mo = Int(m.2), let d = Int(m.3), (1...12).contains(mo), (1...31).contains(d) else { return nil }
        let calendar = Dashboard.japanCalendar
        guard let start = calendar.date(from: DateComponents(year: y, month: mo, day: d)),
              calendar.component(.day, from: start) == d else { return nil }  // 2026-02-30 is not a day
        return endOfDay ? calendar.date(byAdding: .day, value: 1, to: start) : start
    }

    static let csvHeader = "time_utc,time_jst,agent_id,group,seq,kind,severity,reason,details,received_utc,event_id\r\n"

    /// A CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break; a leading
    /// =, +, - or @ is prefixed with ' so a spreadsheet does not run it as a formula.
    static func csvField(_ s: String) -> String {
        var v = s
        // Scalars, not Characters: "\r\n" is one Character, equal to neither "\r" nor "\n".
        if let f = v.unicodeScalars.first, "=+-@\t\r\n".unicodeScalars.contains(f) { v = "'" + v }
        if v.unicodeScalars.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) {
            return "\"" + v.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        }
        return v
    }

    static let jst = TimeZone(identifier: "Asia/Tokyo") ?? TimeZone(secondsFromGMT: 9 * 3600)!

    /// 2026-12-01T09:30:00.000+09:00
    static func jstTime(_ d: Date) -> String {
        let shifted = d.addingTimeInterval(Double(jst.secondsFromGMT(for: d)))
        return String(RFC3339.format(shifted).dropLast()) + "+09:00"
    }

    /// The encoder of `details`: compact JSON, keys sorted, paths written as they are (no `\/`).
    static func detailsEncoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }

    /// One CSV line; `encoder` from `detailsEncoder()`, made once per export.
    static func csvRow(_ e: StoredEvent, encoder: JSONEncoder) -> String {
        let details = (try? encoder.encode(e.event.details)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        return [RFC3339.format(e.event.time), jstTime(e.event.time), e.agentID, e.group, "\(e.event.seq)", e.event.kind, e.event.severity,
                e.event.reason, details, RFC3339.format(e.receivedAt), e.event.id].map(csvField).joined(separator: ",") + "\r\n"
    }
}

extension Collector {
    /// Events per store read while exporting.
    static let exportPage = 500

    func exportEvents(_ request: Request) async throws -> Response {
        // A link on another site must not start an export in a signed-in operator's browser
        // (the browser would send the remembered sign-in): browsers say where a request comes
        // from; scripts and typed addresses send no header or "none".
        if let site = request.headers[HTTPField.Name("Sec-Fetch-Site")!], !["same-origin", "none"].contains(site) {
            throw APIError(.forbidden, "an export is started from the collector's own pages (Sec-Fetch-Site: \(site))")
        }
        let who = try requireAdmin(request)
        let q = request.uri.queryParameters
        func date(_ name: String, endOfDay: Bool) throws -> Date {
            guard let text = q.get(name) else { throw APIError(.badRequest, "\(name): missing (an RFC 3339 time, e.g. 2026-11-01T00:00:00+09:00, or a day, 2026-11-01)") }
            if let d = RFC3339.parse(text) { return d }
            if let d = ExportFormat.japanDay(text, endOfDay: endOfDay) { return d }
            throw APIError(.badRequest, "\(name): \"\(text)\" is not an RFC 3339 time (2026-11-01T00:00:00+09:00) or a day (2026-11-01)")
        }
        // A day alone (the dashboard's form) is a day in Japan: `from` its start, `to` its end.
        let from = try date("from", endOfDay: false), to = try date("to", endOfDay: true)
        guard from < to else { throw APIError(.badRequest, "from (\(RFC3339.format(from))) must be before to (\(RFC3339.format(to)))") }
        let formatName = q.get("format") ?? "csv"
        guard let format = ExportFormat(rawValue: formatName) else { throw APIError(.badRequest, "format: \"\(formatName)\" is not csv or json") }
        let range = ExportRange(from: from, to: to, group: q.get("group").flatMap { $0.isEmpty ? nil : $0 },
                                agentID: q.get("agent").flatMap { $0.isEmpty ? nil : $0 })
        // The first page is read before answering: a store failure is a 503, not a cut-off file.
        let first = try await store.exportEvents(range, after: nil, limit: Self.exportPage)
        let store = self.store
        let logger = self.logger
        // The file is named by the Japan days it covers (the last one: the day of `to`'s last instant).
        let stamp = Dashboard.day(from) + "_" + Dashboard.day(to.addingTimeInterval(-0.001))
        // Only name-safe characters of the group reach the header (the query's text is anyone's).
        let groupName = String((range.group ?? "all").unicodeScalars.filter { CharacterSet.alphanumerics.contains($0) && $0.isASCII || "._-".unicodeScalars.contains($0) }.prefix(64).map(Character.init))
        let name = "segguard-events_\(groupName.isEmpty ? "group" : groupName)_\(stamp).\(format.rawValue)"
        logger.notice("evidence export", metadata: ["by": "\(who)", "from": "\(RFC3339.format(from))", "to": "\(RFC3339.format(to))",
                                                    "group": "\(range.group ?? "all")", "format": "\(format.rawValue)"])
        // Recorded before anything is sent: no export without its record (a store failure is a 503).
        let target = ["group \(range.group ?? "all")", range.agentID.map { "agent \($0)" }].compactMap { $0 }.joined(separator: ", ")
        try await store.recordAction(AdminAction(time: Date(), by: who, action: "export", target: target,
                                                 detail: "\(RFC3339.format(from)) – \(RFC3339.format(to)), \(format.rawValue)"))
        let body = ResponseBody { writer in
            var page = first
            var count = 0
            let encoder = ReportCoding.encoder(), details = ExportFormat.detailsEncoder()
            try await writer.write(ByteBuffer(string: format == .csv ? ExportFormat.csvHeader : "["))
            while !page.isEmpty {
                var chunk = ""
                for e in page {
                    switch format {
                    case .csv: chunk += ExportFormat.csvRow(e, encoder: details)
                    case .json: chunk += (count == 0 ? "\n" : ",\n") + String(decoding: try encoder.encode(e), as: UTF8.self)
                    }
                    count += 1
                }
                try await writer.write(ByteBuffer(string: chunk))
                guard page.count == Self.exportPage, let last = page.last else { break }
                page = try await store.exportEvents(range, after: ExportCursor(after: last), limit: Self.exportPage)
            }
            if format == .json { try await writer.write(ByteBuffer(string: "\n]\n")) }
            try await writer.finish(nil)
            logger.info("evidence export written", metadata: ["events": "\(count)"])
        }
        var headers: HTTPFields = [.contentType: format == .csv ? "text/csv; charset=utf-8" : "application/json"]
        headers[.contentDisposition] = "attachment; filename=\"\(name)\""
        return Response(status: .ok, headers: headers, body: body)
    }
}

/// Deletes events older than the retention (`--retention-days`) once an hour, from the store
/// every replica shares (a delete is idempotent: replicas may run it concurrently).
struct RetentionPruner: Service {
    let collector: Collector
    let days: Int
    var period = 3600.0

    func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                let cutoff = Date().addingTimeInterval(-Double(days) * 86_400)
                let n = try await collector.store.pruneEvents(receivedBefore: cutoff)
                if n > 0 {
                    collector.metrics.pruned(n)
                    collector.logger.notice("events past the retention deleted", metadata: ["events": "\(n)", "retention_days": "\(days)",
                                                                                            "received_before": "\(RFC3339.format(cutoff))"])
                }
            } catch {
                collector.logger.error("retention pruning failed", metadata: ["error": "\(error)"])
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(period)) }
        }
    }
}
