// Pure tests of the nftables JSON batches: parsed back with JSONSerialization and compared
// with the exact structure libnftables is given.

import Foundation
import SegguardEnforce
import SegguardPolicy
import Testing

/// The batch as plain JSON values: the array under "nftables".
private func commands(_ data: Data) throws -> [Any] {
    let root = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    #expect(root.count == 1)
    return try #require(root["nftables"] as? [Any])
}

/// Compares JSON values structurally: both rendered canonically (sorted keys).
private func same(_ a: Any, _ b: Any) -> Bool {
    json([a]) == json([b])
}

private func json(_ value: Any) -> String {
    let d = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .withoutEscapingSlashes])
    return d.map { String(decoding: $0, as: UTF8.self) } ?? "<not JSON>"
}

private var table: [String: Any] { ["family": "inet", "name": "segguard"] }
private var replaceHead: [Any] { [
    ["add": ["table": table]],
    ["delete": ["table": table]],
    ["add": ["table": table]],
    ["add": ["chain": ["family": "inet", "table": "segguard", "name": "output", "type": "filter", "hook": "output", "prio": 0, "policy": "accept"]]],
] }

private func rule(_ comment: String, _ expr: [Any]) -> [String: Any] {
    ["add": ["rule": ["family": "inet", "table": "segguard", "chain": "output", "comment": comment, "expr": expr]]]
}

private func match(_ left: Any, _ right: Any, op: String = "==") -> [String: Any] {
    ["match": ["op": op, "left": left, "right": right]]
}

private var daddr4: [String: Any] { ["payload": ["protocol": "ip", "field": "daddr"]] }
private var daddr6: [String: Any] { ["payload": ["protocol": "ip6", "field": "daddr"]] }
private var l4proto: [String: Any] { ["meta": ["key": "l4proto"]] }
private var dport: [String: Any] { ["payload": ["protocol": "th", "field": "dport"]] }
private var oifname: [String: Any] { ["meta": ["key": "oifname"]] }
private var counter: [String: Any] { ["counter": NSNull()] }
private var accept: [String: Any] { ["accept": NSNull()] }
private var drop: [String: Any] { ["drop": NSNull()] }

private let hostTCP = Gateway(prefix: IPPrefix("10.20.30.40")!, ports: [443], transport: .tcp)
private let v6UDP = Gateway(prefix: IPPrefix("2001:db8:5::/48")!, ports: [], transport: .udp)
private let both = Gateway(prefix: IPPrefix("10.61.0.0/16")!, ports: [8443, 443, 8443], transport: .both)

@Suite("Nftables ruleset JSON")
struct NftablesRulesetTests {
    @Test("enforce, IPv4 host tcp/443, allowed eth0+wlan0: accept via the set, then drop")
    func enforceIPv4Host() throws {
        let data = NftablesRuleset.transaction(table: "segguard", gateways: [hostTCP], allowedInterfaces: ["wlan0", "eth0"], mode: .enforce)
        let got = try commands(data)
        let matches: [Any] = [match(daddr4, "10.20.30.40"), match(l4proto, "tcp"), match(dport, 443)]
        let want: [Any] = replaceHead + [
            rule("segguard: 10.20.30.40/32 tcp 443: allow via authorized interface",
                 matches + [match(oifname, ["set": ["eth0", "wlan0"]]), counter, accept]),
            rule("segguard: 10.20.30.40/32 tcp 443: drop elsewhere", matches + [counter, drop]),
        ]
        #expect(same(got, want), "\(json(got))")
        #expect(NftablesRuleset.comment(.drop, gateway: hostTCP) == "segguard: 10.20.30.40/32 tcp 443: drop elsewhere")
    }

    @Test("IPv6 prefix, udp, no ports: ip6 daddr prefix, l4proto udp, no dport match")
    func ipv6PrefixUDP() throws {
        let got = try commands(NftablesRuleset.transaction(table: "segguard", gateways: [v6UDP], allowedInterfaces: ["eth0"], mode: .enforce))
        let matches: [Any] = [match(daddr6, ["prefix": ["addr": "2001:db8:5::", "len": 48]]), match(l4proto, "udp")]
        let want: [Any] = replaceHead + [
            rule("segguard: 2001:db8:5::/48 udp all ports: allow via authorized interface", matches + [match(oifname, "eth0"), counter, accept]),
            rule("segguard: 2001:db8:5::/48 udp all ports: drop elsewhere", matches + [counter, drop]),
        ]
        #expect(same(got, want), "\(json(got))")
    }

    @Test("both transports: l4proto {tcp, udp} and th dport set, ports sorted and deduplicated")
    func bothTransports() throws {
        let got = try commands(NftablesRuleset.transaction(table: "segguard", gateways: [both], allowedInterfaces: ["eth0"], mode: .enforce))
        let matches: [Any] = [
            match(daddr4, ["prefix": ["addr": "10.61.0.0", "len": 16]]),
            match(l4proto, ["set": ["tcp", "udp"]]),
            match(dport, ["set": [443, 8443]]),
        ]
        let want: [Any] = replaceHead + [
            rule("segguard: 10.61.0.0/16 both 443,8443: allow via authorized interface", matches + [match(oifname, "eth0"), counter, accept]),
            rule("segguard: 10.61.0.0/16 both 443,8443: drop elsewhere", matches + [counter, drop]),
        ]
        #expect(same(got, want), "\(json(got))")
    }

    @Test("no allowed interfaces: only the drop rules; the baseline is exactly that")
    func noAllowedInterfaces() throws {
        let data = NftablesRuleset.transaction(table: "segguard", gateways: [hostTCP, v6UDP], allowedInterfaces: [], mode: .enforce)
        let got = try commands(data)
        let want: [Any] = replaceHead + [
            rule("segguard: 10.20.30.40/32 tcp 443: drop elsewhere", [match(daddr4, "10.20.30.40"), match(l4proto, "tcp"), match(dport, 443), counter, drop]),
            rule("segguard: 2001:db8:5::/48 udp all ports: drop elsewhere",
                 [match(daddr6, ["prefix": ["addr": "2001:db8:5::", "len": 48]]), match(l4proto, "udp"), counter, drop]),
        ]
        #expect(same(got, want), "\(json(got))")
        #expect(NftablesRuleset.baseline(table: "segguard", gateways: [hostTCP, v6UDP]) == data)
    }

    @Test("audit: one counting rule per gateway for traffic outside the allowed set, no verdicts")
    func auditCountsOnly() throws {
        let got = try commands(NftablesRuleset.transaction(table: "segguard", gateways: [hostTCP], allowedInterfaces: ["eth0"], mode: .audit))
        let want: [Any] = replaceHead + [
            rule("segguard: 10.20.30.40/32 tcp 443: would drop (audit)",
                 [match(daddr4, "10.20.30.40"), match(l4proto, "tcp"), match(dport, 443), match(oifname, "eth0", op: "!="), counter]),
        ]
        #expect(same(got, want), "\(json(got))")
        let text = json(got)
        #expect(!text.contains(#""drop":null"#) && !text.contains(#""accept":null"#) && text.contains(#""counter":null"#))

        // Nothing allowed: every gateway packet would be dropped.
        let none = try commands(NftablesRuleset.transaction(table: "segguard", gateways: [hostTCP], allowedInterfaces: [], mode: .audit))
        #expect(same(none, replaceHead + [
            rule("segguard: 10.20.30.40/32 tcp 443: would drop (audit)", [match(daddr4, "10.20.30.40"), match(l4proto, "tcp"), match(dport, 443), counter]),
        ]), "\(json(none))")
    }

    @Test("off: add then delete the table, nothing else")
    func offDeletesTable() throws {
        let got = try commands(NftablesRuleset.transaction(table: "sg-test", gateways: [hostTCP], allowedInterfaces: ["eth0"], mode: .off))
        let t: [String: Any] = ["family": "inet", "name": "sg-test"]
        #expect(same(got, [["add": ["table": t]], ["delete": ["table": t]]]), "\(json(got))")
        #expect(NftablesRuleset.deleteCommand(table: "sg-test") == NftablesRuleset.transaction(table: "sg-test", gateways: [], allowedInterfaces: [], mode: .off))
    }

    @Test("names that would break spliced nft text are exact JSON strings")
    func hostileNames() throws {
        let data = NftablesRuleset.transaction(table: "t\"; flush ruleset", gateways: [hostTCP], allowedInterfaces: ["a\"b", "x;y", "{z}", "a\\b"], mode: .enforce)
        let got = try commands(data)
        let t: [String: Any] = ["family": "inet", "name": "t\"; flush ruleset"]
        #expect(same(got[0], ["add": ["table": t]]))
        let accept = try #require((got[4] as? [String: Any])?["add"] as? [String: Any])
        let r = try #require(accept["rule"] as? [String: Any])
        #expect(r["table"] as? String == "t\"; flush ruleset")
        let expr = try #require(r["expr"] as? [Any])
        #expect(same(expr[3], match(oifname, ["set": ["a\"b", "a\\b", "x;y", "{z}"]])), "\(json(expr[3]))")
        // And on the wire they are JSON-escaped, not raw.
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains(#""a\"b""#))
        #expect(text.contains(#""a\\b""#))
    }

    @Test("interface names: trailing * escaped (nft wildcard), unmatchable names left out (fail closed)")
    func interfaceNameEscaping() throws {
        #expect(NftablesRuleset.interfaceNameValue("eth0") == "eth0")
        #expect(NftablesRuleset.interfaceNameValue("eth*") == "eth\\*")
        #expect(NftablesRuleset.interfaceNameValue("*") == "\\*")
        #expect(NftablesRuleset.interfaceNameValue("a*b") == "a*b")
        #expect(NftablesRuleset.interfaceNameValue("a\\*") == nil)
        #expect(NftablesRuleset.interfaceNameValue("") == nil)
        #expect(NftablesRuleset.interfaceNameValue("abcdefghijklmno") == "abcdefghijklmno")
        #expect(NftablesRuleset.interfaceNameValue("abcdefghijklmnop") == nil)
        #expect(NftablesRuleset.interfaceNameValue("a\u{0}b") == nil)

        let got = try commands(NftablesRuleset.transaction(
            table: "segguard", gateways: [hostTCP], allowedInterfaces: ["eth*", "", "abcdefghijklmnop", "eth0", "eth0"], mode: .enforce))
        let r = try #require(((got[4] as? [String: Any])?["add"] as? [String: Any])?["rule"] as? [String: Any])
        let expr = try #require(r["expr"] as? [Any])
        #expect(same(expr[3], match(oifname, ["set": ["eth0", "eth\\*"]])), "\(json(expr[3]))")

        // Only unmatchable names: nothing is allowed, so only the drop rule remains.
        let closed = try commands(NftablesRuleset.transaction(table: "segguard", gateways: [hostTCP], allowedInterfaces: ["", "x\\*"], mode: .enforce))
        #expect(closed.count == replaceHead.count + 1)
        #expect(json(closed).contains("drop elsewhere") && !json(closed).contains(#""accept":null"#))
    }

    @Test("a rules update flushes the output chain and adds the same rules a whole transaction would; off deletes the table")
    func rulesUpdate() throws {
        let whole = try commands(NftablesRuleset.transaction(table: "segguard", gateways: [hostTCP], allowedInterfaces: ["eth0", "wlan0"], mode: .enforce))
        let update = try commands(NftablesRuleset.update(table: "segguard", gateways: [hostTCP], allowedInterfaces: ["eth0", "wlan0"], mode: .enforce))
        #expect(same(update[0], ["flush": ["chain": ["family": "inet", "table": "segguard", "name": "output"]]]))
        #expect(same(Array(update.dropFirst()), Array(whole.dropFirst(replaceHead.count))), "\(json(update))")
        #expect(NftablesRuleset.update(table: "segguard", gateways: [hostTCP], allowedInterfaces: [], mode: .off) == NftablesRuleset.deleteCommand(table: "segguard"))
    }

    @Test("no gateways: the table and an empty output chain")
    func noGateways() throws {
        let got = try commands(NftablesRuleset.transaction(table: "segguard", gateways: [], allowedInterfaces: ["eth0"], mode: .enforce))
        #expect(same(got, replaceHead), "\(json(got))")
    }

    @Test("comments are capped at 127 bytes without splitting a character")
    func longComment() {
        let many = Gateway(prefix: IPPrefix("2001:db8:1234:5678:9abc:def0:1234:5678")!, ports: Array(1000...1030), transport: .both)
        let c = NftablesRuleset.comment(.wouldDrop, gateway: many)
        #expect(c.utf8.count == 127)
        #expect(c.hasPrefix("segguard: 2001:db8:1234:5678:9abc:def0:1234:5678/128 both 1000,1001,"))
    }

    @Test("list/delete commands and counters read back from a listing")
    func listingAndCounters() throws {
        #expect(same(try commands(NftablesRuleset.listCommand(table: "segguard")), [["list": ["table": table]]]))
        #expect(same(try commands(NftablesRuleset.listTablesCommand()), [["list": ["tables": NSNull()]]]))
        let listing = """
            {"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
            {"table": {"family": "inet", "name": "segguard", "handle": 7}},
            {"chain": {"family": "inet", "table": "segguard", "name": "output", "handle": 1, "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}},
            {"rule": {"family": "inet", "table": "segguard", "chain": "output", "handle": 2, "comment": "segguard: a: allow via authorized interface",
              "expr": [{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "eth0"}}, {"counter": {"packets": 3, "bytes": 180}}, {"accept": null}]}},
            {"rule": {"family": "inet", "table": "segguard", "chain": "output", "handle": 3, "comment": "segguard: a: drop elsewhere",
              "expr": [{"counter": {"packets": 12345678901, "bytes": 0}}, {"drop": null}]}},
            {"rule": {"family": "inet", "table": "segguard", "chain": "output", "handle": 4, "expr": [{"accept": null}]}}]}
            """
        #expect(NftablesRuleset.counters(inListing: listing) == [
            .init(comment: "segguard: a: allow via authorized interface", packets: 3, bytes: 180),
            .init(comment: "segguard: a: drop elsewhere", packets: 12_345_678_901, bytes: 0),
        ])
        #expect(NftablesRuleset.counters(inListing: "not json").isEmpty)
    }

    @Test("the error says what was being done and libnftables' text")
    func errorDescription() {
        let e = NftablesError(operation: "apply the transaction to table inet segguard", detail: "internal:0:0-0: Error: Unknown statement object 'bogus'.")
        #expect(e.description == "nftables: cannot apply the transaction to table inet segguard: internal:0:0-0: Error: Unknown statement object 'bogus'.")
    }
}
