import Foundation
import SegguardReport
import SegguardTestSupport
import Testing

@Suite struct ReportCodingTests {
    static let heartbeat = Heartbeat(
        agentID: "tc-0001", hostname: "tc-0001.city.local", agentVersion: "0.9.0",
        policy: PolicySummary(name: "main", sha256: String(repeating: "a", count: 64), bundleVersion: 3),
        decision: DecisionSummary(segment: "my-number", authorized: true, reason: "wlan0: SSID office", interfaces: ["wlan0"],
                                  since: Date(timeIntervalSince1970: 1_795_000_000.125)),
        interfaces: [InterfaceSummary(name: "wlan0", wireless: true, up: true, ssid: "office", bssid: "02:00:00:00:00:01", deviceAuth: "authorized (EAP-TLS)"),
                     InterfaceSummary(name: "eth0", wireless: false, up: false)],
        intervalSeconds: 30, spool: SpoolSummary(pending: 2, dropped: 0), sentAt: Date(timeIntervalSince1970: 1_795_000_030.5))

    static func json(_ v: some Encodable) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: ReportCoding.encoder().encode(v)) as! [String: Any]
    }

    static func decodeError<T: StrictDecodable>(_ t: T.Type, _ object: Any) -> String? {
        let data = try! JSONSerialization.data(withJSONObject: object)
        do {
            _ = try ReportCoding.decodeStrict(T.self, from: data)
            return nil
        } catch {
            return error.description
        }
    }

    @Test func roundTripsEveryMessage() throws {
        let hb = Self.heartbeat
        #expect(try ReportCoding.decodeStrict(Heartbeat.self, from: ReportCoding.encoder().encode(hb)) == hb)
        let batch = EventBatch(agentID: "tc-0001", events: [
            ReportedEvent(id: "e1", seq: 1, time: Date(timeIntervalSince1970: 1_795_000_001), kind: "exec-denied", severity: "warning",
                          reason: "scrot is listed", details: ["path": "/usr/bin/scrot"]),
        ])
        #expect(try ReportCoding.decodeStrict(EventBatch.self, from: ReportCoding.encoder().encode(batch)) == batch)
        let payload = PolicyBundlePayload(group: "mynumber", version: 2, policyYAML: "name: x\n", createdAt: Date(timeIntervalSince1970: 1_795_000_000))
        #expect(try ReportCoding.decodeStrict(PolicyBundlePayload.self, from: ReportCoding.encoder().encode(payload)) == payload)
    }

    /// An unknown key is refused at every level of every message, named by its path.
    @Test func unknownFieldsAreRefusedAtEveryLevel() throws {
        var top = try Self.json(Self.heartbeat)
        top["colour"] = "blue"
        #expect(Self.decodeError(Heartbeat.self, top) == "colour: unknown field")
        // An unknown key with a null value is still unknown.
        top = try Self.json(Self.heartbeat)
        top["colour"] = NSNull()
        #expect(Self.decodeError(Heartbeat.self, top) == "colour: unknown field")
        for nested in ["policy", "decision", "spool"] {
            var o = try Self.json(Self.heartbeat)
            var inner = o[nested] as! [String: Any]
            inner["extra"] = 1
            o[nested] = inner
            #expect(Self.decodeError(Heartbeat.self, o) == "\(nested).extra: unknown field")
        }
        var o = try Self.json(Self.heartbeat)
        var list = o["interfaces"] as! [[String: Any]]
        list[1]["mtu"] = 1500
        o["interfaces"] = list
        #expect(Self.decodeError(Heartbeat.self, o) == "interfaces[1].mtu: unknown field")

        var batch = try Self.json(EventBatch(events: [ReportedEvent(id: "e1", seq: 1, time: Date(), kind: "k", severity: "info", reason: "")]))
        var events = batch["events"] as! [[String: Any]]
        events[0]["sevrity"] = "info"
        batch["events"] = events
        #expect(Self.decodeError(EventBatch.self, batch) == "events[0].sevrity: unknown field")

        var bundle = try Self.json(SignedPolicyBundle(payload: "eA==", signature: "eA==", keyID: "k"))
        bundle["comment"] = "x"
        #expect(Self.decodeError(SignedPolicyBundle.self, bundle) == "comment: unknown field")
        // Known optional fields may be null or absent; details is a map and takes any key.
        o = try Self.json(Self.heartbeat)
        o["agent_id"] = NSNull()
        o.removeValue(forKey: "agent_id")
        #expect(Self.decodeError(Heartbeat.self, o) == nil)
    }

    @Test func wrongTypesAndMissingFieldsAreNamed() throws {
        var o = try Self.json(Self.heartbeat)
        o["interval_s"] = "30"
        #expect(Self.decodeError(Heartbeat.self, o) == "interval_s: expected an integer")
        o = try Self.json(Self.heartbeat)
        o.removeValue(forKey: "hostname")
        #expect(Self.decodeError(Heartbeat.self, o) == "hostname: missing")
        o = try Self.json(Self.heartbeat)
        var d = o["decision"] as! [String: Any]
        d["since"] = "yesterday"
        o["decision"] = d
        #expect(Self.decodeError(Heartbeat.self, o)?.hasPrefix("decision.since: \"yesterday\" is not an RFC 3339 date") == true)
        o = try Self.json(Self.heartbeat)
        o["policy"] = "main"
        #expect(Self.decodeError(Heartbeat.self, o) == "policy: expected an object")
    }

    static func decodeError<T: StrictDecodable>(_ t: T.Type, text: String) -> String? {
        do {
            _ = try ReportCoding.decodeStrict(T.self, from: Data(text.utf8))
            return nil
        } catch {
            return error.description
        }
    }

    @Test func duplicatesNumbersStringsAndSyntax() throws {
        let body = String(decoding: try ReportCoding.encoder().encode(Self.heartbeat), as: UTF8.self)
        func with(_ replacement: String, for field: String) -> String {
            // Replace the value of a top-level integer field (interval_s) textually.
            body.replacingOccurrences(of: "\"\(field)\":30", with: "\"\(field)\":\(replacement)")
        }
        #expect(Self.decodeError(Heartbeat.self, text: body) == nil)
        #expect(Self.decodeError(Heartbeat.self, text: with("30,\"interval_s\":31", for: "interval_s")) == "interval_s: given twice")
        #expect(Self.decodeError(Heartbeat.self, text: with("1.5", for: "interval_s")) == "interval_s: expected an integer")
        #expect(Self.decodeError(Heartbeat.self, text: with("3e1", for: "interval_s")) == "interval_s: expected an integer")
        #expect(Self.decodeError(Heartbeat.self, text: with("99999999999999999999", for: "interval_s")) == "interval_s: 99999999999999999999 is out of range")
        #expect(Self.decodeError(Heartbeat.self, text: with("030", for: "interval_s"))?.hasPrefix("body: not valid JSON") == true)
        #expect(Self.decodeError(Heartbeat.self, text: with("null", for: "interval_s")) == "interval_s: expected an integer, found null")
        #expect(Self.decodeError(Heartbeat.self, text: with("30 x", for: "interval_s"))?.hasPrefix("body: not valid JSON") == true)
        #expect(Self.decodeError(Heartbeat.self, text: body + " {}")?.hasPrefix("body: not valid JSON") == true)
        #expect(Self.decodeError(Heartbeat.self, text: body + " \n") == nil)
        #expect(Self.decodeError(Heartbeat.self, text: "")?.hasPrefix("body: not valid JSON") == true)
        #expect(Self.decodeError(Heartbeat.self, text: "[]") == "body: expected an object")
        // Escapes and non-ASCII text come through as JSONDecoder reads them.
        let tricky = "tc-\u{3042}\u{1F600} \"quoted\" back\\slash\ttab\u{7}"
        var hb = Self.heartbeat
        hb.hostname = tricky
        let encoded = try ReportCoding.encoder().encode(hb)
        #expect(try ReportCoding.decodeStrict(Heartbeat.self, from: encoded).hostname == tricky)
        let escaped = body.replacingOccurrences(of: "\"hostname\":\"tc-0001.city.local\"", with: #""hostname":"\u3042\ud83d\ude00\/\n""#)
        #expect(try ReportCoding.decodeStrict(Heartbeat.self, from: Data(escaped.utf8)).hostname == "\u{3042}\u{1F600}/\n")
        let lone = body.replacingOccurrences(of: "\"hostname\":\"tc-0001.city.local\"", with: #""hostname":"\ud83d""#)
        // 100,000 brackets from the network: an error, not a crash (the syntax check stops at 64 levels).
        let deep = Self.decodeError(Heartbeat.self, text: String(repeating: "[", count: 100_000))
        #expect(deep != nil && deep != "", "\(deep ?? "accepted")")
        let loneError = Self.decodeError(Heartbeat.self, text: lone)
        #expect(loneError == "hostname: a lone surrogate in a \\u escape", "\(loneError ?? "")")
        var invalidUTF8 = Data(body.utf8)
        let at = invalidUTF8.firstRange(of: Data("tc-0001.city".utf8))!.lowerBound
        invalidUTF8[at] = 0xFF
        do {
            _ = try ReportCoding.decodeStrict(Heartbeat.self, from: invalidUTF8)
            Issue.record("invalid UTF-8 accepted")
        } catch {}
    }

    /// A map of many keys (details) is read whole (duplicates found through the map itself, not
    /// a list: no quadratic work on a hostile body), and a key given twice in it is refused.
    @Test func manyKeysInAMapAndRepeatedOnes() throws {
        var text = #"{"events":[{"id":"e","seq":1,"time":"2026-11-26T05:00:00.000Z","kind":"k","severity":"info","reason":"","details":{"#
        text += (0..<50_000).map { #""k\#($0)":"v""# }.joined(separator: ",")
        text += "}}]}"
        let batch = try ReportCoding.decodeStrict(EventBatch.self, from: Data(text.utf8))
        #expect(batch.events[0].details.count == 50_000)
        let twice = #"{"events":[{"id":"e","seq":1,"time":"2026-11-26T05:00:00.000Z","kind":"k","severity":"info","reason":"","details":{"a":"1","a":"2"}}]}"#
        #expect(Self.decodeError(EventBatch.self, text: twice) == "events[0].details.a: given twice")
    }

    /// Property: on random mutations of valid bodies, the strict reader never accepts what
    /// JSONSerialization calls invalid JSON, and whatever it accepts JSONDecoder decodes to
    /// the same value (the reader is only stricter, never different).
    @Test func agreesWithFoundationOnRandomMutations() throws {
        var rng = SeededGenerator(seed: 0x5E6)
        let bodies: [Data] = [
            try ReportCoding.encoder().encode(Self.heartbeat),
            try ReportCoding.encoder().encode(EventBatch(agentID: "tc-0001", events: [
                ReportedEvent(id: "e1", seq: 7, time: Date(timeIntervalSince1970: 1_795_000_001.25), kind: "exec-denied", severity: "warning",
                              reason: "scrot", details: ["path": "/usr/bin/scrot", "uid": "1000"]),
            ])),
        ]
        let alphabet = Array("{}[]\",:0123456789-.eE tfnul\\\"ab\u{1}\\u00e9\\ud83d\\ude00".utf8) + [0xC3, 0xA9, 0xE3, 0x81, 0x82, 0xFF, 0xED, 0xA0, 0x80]
        var accepted = 0, refused = 0
        for round in 0..<4000 {
            var b = Array(bodies[round % 2])
            for _ in 0...(Int(rng.next() % 3)) where !b.isEmpty {
                let pos = Int(rng.next() % UInt64(b.count))
                switch rng.next() % 4 {
                case 0: b.remove(at: pos)
                case 1: b.insert(alphabet[Int(rng.next() % UInt64(alphabet.count))], at: pos)
                case 2: b[pos] = alphabet[Int(rng.next() % UInt64(alphabet.count))]
                default: b = Array(b.prefix(pos))
                }
            }
            let data = Data(b)
            let foundationOK = (try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])) != nil
            if round % 2 == 0 {
                if let mine = try? ReportCoding.decodeStrict(Heartbeat.self, from: data) {
                    accepted += 1
                    #expect(foundationOK, "accepted invalid JSON: \(String(decoding: data, as: UTF8.self))")
                    #expect((try? ReportCoding.decoder().decode(Heartbeat.self, from: data)) == mine, "\(String(decoding: data, as: UTF8.self))")
                } else {
                    refused += 1
                }
            } else {
                if let mine = try? ReportCoding.decodeStrict(EventBatch.self, from: data) {
                    accepted += 1
                    #expect(foundationOK, "accepted invalid JSON: \(String(decoding: data, as: UTF8.self))")
                    #expect((try? ReportCoding.decoder().decode(EventBatch.self, from: data)) == mine, "\(String(decoding: data, as: UTF8.self))")
                } else {
                    refused += 1
                }
            }
        }
        // Both outcomes happen (the mutations are neither all harmless nor all fatal).
        #expect(accepted > 50 && refused > 50, "accepted \(accepted), refused \(refused)")
    }

    /// The hand-written formatter writes what Date.ISO8601FormatStyle writes (to the
    /// millisecond it truncates to; the style drops a millisecond that a Double holds a hair
    /// below its value, the formatter keeps it), and the parser reads it back exactly.
    @Test func rfc3339MatchesTheFormatStyle() {
        let style = Date.ISO8601FormatStyle().year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted)
        var rng = SystemRandomNumberGenerator()
        var millis: [Int64] = [0, 951_782_400_500, 1_795_000_000_999, 4_102_444_799_999, 1_709_164_800_001, 86_399_999]
        for _ in 0..<3000 { millis.append(Int64(rng.next(upperBound: UInt64(4_102_444_800_000)))) }
        for ms in millis {
            let date = Date(timeIntervalSince1970: Double(ms) / 1000)
            let mine = RFC3339.format(date)
            // Same text, or the style's is one millisecond earlier.
            let theirs = date.formatted(style)
            #expect(mine == theirs || theirs == RFC3339.format(Date(timeIntervalSince1970: Double(ms - 1) / 1000)), "\(ms): \(mine) \(theirs)")
            #expect(RFC3339.parse(mine) == date, "\(ms)")
            // Sub-millisecond times are truncated, as the style does.
            let later = Date(timeIntervalSince1970: Double(ms) / 1000 + 0.0004)
            #expect(RFC3339.format(later) == mine, "\(ms)")
        }
    }

    @Test func collectorIDsAndNegativeVersionsAreRefused() {
        for id in ["recovered-1795000000000", "stale-1"] {
            let e = ReportedEvent(id: id, seq: 1, time: Date(), kind: "k", severity: "info", reason: "")
            #expect(throws: ReportValidationError.self) { try e.validate(at: "events[0]") }
            do { try e.validate(at: "events[0]") } catch { #expect(error.description.contains("reserves for its own events")) }
        }
        var hb = Self.heartbeat
        hb.policy.bundleVersion = -1
        do {
            try hb.validate()
            Issue.record("a negative bundle version passed")
        } catch {
            #expect(error.description == "policy.bundle_version: -1 is negative")
        }
    }

    @Test func rfc3339ParsesOffsetsAndRefusesNonsense() {
        // Only years 0000-9999 in UTC: what format() can write back.
        #expect(RFC3339.parse("0000-01-01T00:00:00Z") != nil)
        #expect(RFC3339.parse("9999-12-31T23:59:59.999Z") != nil)
        #expect(RFC3339.parse("0000-01-01T00:00:00+00:01") == nil)
        #expect(RFC3339.parse("9999-12-31T23:59:59-01:00") == nil)
        #expect(RFC3339.parse("2026-11-26T05:00:00Z") == Date(timeIntervalSince1970: 1_795_669_200))
        #expect(RFC3339.parse("2026-11-26T14:00:00+09:00") == Date(timeIntervalSince1970: 1_795_669_200))
        #expect(RFC3339.parse("2026-11-26T14:00:00.000+0900") == Date(timeIntervalSince1970: 1_795_669_200))
        #expect(RFC3339.parse("2026-11-25T23:30:00-05:30") == Date(timeIntervalSince1970: 1_795_669_200))
        #expect(RFC3339.parse("2024-02-29T00:00:00Z") != nil)
        for bad in ["", "2026-11-26", "2026-11-26T05:00:00", "2023-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-11-26T24:00:00Z",
                    "2026-11-26T05:60:00Z", "2026-11-26T05:00:00.Z", "2026-11-26T05:00:00Zjunk", "2026-11-26 05:00:00Z", "２026-11-26T05:00:00Z"] {
            #expect(RFC3339.parse(bad) == nil, "\(bad)")
        }
    }
}
