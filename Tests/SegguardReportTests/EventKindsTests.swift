// The closed set of event kinds stays in step with the code: every kind literal recorded in
// Sources/ (record(kind: "…"), the collector's own kinds, the enforcement record kinds) is in
// EventKinds.known, and every listed kind is still produced somewhere.

import Foundation
import SegguardReport
import Testing

@Suite("Event kinds: a closed set")
struct EventKindsTests {
    static let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Sources")

    /// Every `kind: "…"` argument, `static let kind = "…"` and `case x = "…"` of
    /// EnforcementEvent.Kind in the sources.
    static func literals() throws -> Set<String> {
        var found: Set<String> = []
        let files = FileManager.default.enumerator(atPath: sources.path)?.compactMap { $0 as? String }.filter { $0.hasSuffix(".swift") } ?? []
        for file in files {
            let text = try String(contentsOf: sources.appendingPathComponent(file), encoding: .utf8)
            for m in text.matches(of: #/(?:record\(kind|, kind|static let kind =)[: ]+"([a-z-]+)"/#) { found.insert(String(m.1)) }
            if file.hasSuffix("SegguardEnforce/Records.swift"), let start = text.range(of: "public enum Kind: String"),
               let end = text.range(of: "public var isUserCaused", range: start.upperBound..<text.endIndex) {
                for m in text[start.upperBound..<end.lowerBound].matches(of: #/case [a-zA-Z]+ = "([a-z-]+)"/#) { found.insert(String(m.1)) }
            }
        }
        return found
    }

    @Test("every kind the code produces is listed, and every listed kind is produced")
    func inStep() throws {
        let found = try Self.literals()
        #expect(found.count >= 20, "the scan found \(found.sorted())")
        #expect(found.subtracting(EventKinds.known).isEmpty, "produced but not listed: \(found.subtracting(EventKinds.known).sorted())")
        #expect(EventKinds.known.subtracting(found).isEmpty, "listed but never produced: \(EventKinds.known.subtracting(found).sorted())")
    }

    @Test("an unknown kind labels a metric as other")
    func label() {
        #expect(EventKinds.metricLabel("exec-denied") == "exec-denied")
        #expect(EventKinds.metricLabel("k-1234") == "other")
        #expect(EventKinds.metricLabel("") == "other")
    }
}
