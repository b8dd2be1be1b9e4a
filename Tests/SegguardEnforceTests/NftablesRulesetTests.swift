// Pure tests of the nftables batches: the exact nft text libnftables is given, line by line.
// (That libnftables and the kernel take it, and what it lets through, is tested as root in
// NftablesBindingTests.)

import Foundation
import SegguardEnforce
import SegguardPolicy
import Testing

private func lines(_ data: Data) -> [String] {
    String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
}

/// The table replaced, with both base chains.
private let replaceHead = [
    "add table inet segguard",
    "delete table inet segguard",
    "add table inet segguard",
    "add chain inet segguard output { type filter hook output priority 0; policy accept; }",
    "add chain inet segguard forward { type filter hook forward priority 0; policy accept; }",
]

/// The same rules in the output chain, then in the forward chain; the batch ends in a newline.
private func bothChains(_ rules: [String]) -> [String] {
    rules.map { "add rule inet segguard output " + $0 } + rules.map { "add rule inet segguard forward " + $0 } + [""]
}

private let hostTCP = Gateway(prefix: IPPrefix("10.20.30.40")!, ports: [443], transport: .tcp)
private let v6UDP = Gateway(prefix: IPPrefix("2001:db8:5::/48")!, ports: [], transport: .udp)
private let both = Gateway(prefix: IPPrefix("10.61.0.0/16")!, ports: [8443, 443, 8443], transport: .both)

@Suite("Nftables ruleset text")
struct NftablesRulesetTests {
    @Test("enforce, IPv4 host tcp/443, allowed eth0+wlan0: accept tcp/443 via the set, then drop every protocol and port")
    func enforceIPv4Host() {
        let got = lines(NftablesRuleset.transaction(table: "segguard", gateways: [hostTCP], allowedInterfaces: ["wlan0", "eth0"], mode: .enforce))
        #expect(got == replaceHead + bothChains([
            #"ip daddr 10.20.30.40 meta l4proto tcp th dport 443 oifname { "eth0", "wlan0" } counter accept comment "segguard: 10.20.30.40/32 tcp 443: allow via authorized interface""#,
            #"ip daddr 10.20.30.40 counter drop comment "segguard: 10.20.30.40/32 tcp 443: drop elsewhere""#,
        ]))
        #expect(NftablesRuleset.comment(.drop, gateway: hostTCP) == "segguard: 10.20.30.40/32 tcp 443: drop elsewhere")
    }

    @Test("IPv6 prefix, udp, no ports: ip6 daddr prefix, l4proto udp, no dport match; one interface without a set")
    func ipv6PrefixUDP() {
        let got = lines(NftablesRuleset.transaction(table: "segguard", gateways: [v6UDP], allowedInterfaces: ["eth0"], mode: .enforce))
        #expect(got == replaceHead + bothChains([
            #"ip6 daddr 2001:db8:5::/48 meta l4proto udp oifname "eth0" counter accept comment "segguard: 2001:db8:5::/48 udp all ports: allow via authorized interface""#,
            #"ip6 daddr 2001:db8:5::/48 counter drop comment "segguard: 2001:db8:5::/48 udp all ports: drop elsewhere""#,
        ]))
    }

    @Test("both transports: l4proto {tcp, udp} and a th dport set, ports sorted and deduplicated")
    func bothTransports() {
        let got = lines(NftablesRuleset.transaction(table: "segguard", gateways: [both], allowedInterfaces: ["eth0"], mode: .enforce))
        #expect(got == replaceHead + bothChains([
            #"ip daddr 10.61.0.0/16 meta l4proto { tcp, udp } th dport { 443, 8443 } oifname "eth0" counter accept comment "segguard: 10.61.0.0/16 both 443,8443: allow via authorized interface""#,
            #"ip daddr 10.61.0.0/16 counter drop comment "segguard: 10.61.0.0/16 both 443,8443: drop elsewhere""#,
        ]))
    }

    @Test("several gateways: every accept comes before every drop, so an overlapping prefix's drop cannot shadow another gateway's accept")
    func acceptsBeforeDrops() {
        let wide = Gateway(prefix: IPPrefix("10.20.30.0/24")!, ports: [], transport: .udp)
        let got = lines(NftablesRuleset.transaction(table: "segguard", gateways: [hostTCP, wide], allowedInterfaces: ["eth0"], mode: .enforce))
        let output = got.filter { $0.hasPrefix("add rule inet segguard output ") }
        #expect(output.map { $0.hasSuffix("allow via authorized interface\"") } == [true, true, false, false])
        #expect(output[0].contains("10.20.30.40") && output[1].contains("10.20.30.0/24"))
    }

    @Test("no allowed interfaces: only the drop rules; the enforce baseline is exactly that, audit/off baselines delete the table")
    func noAllowedInterfaces() {
        let data = NftablesRuleset.transaction(table: "segguard", gateways: [hostTCP, v6UDP], allowedInterfaces: [], mode: .enforce)
        #expect(lines(data) == replaceHead + bothChains([
            #"ip daddr 10.20.30.40 counter drop comment "segguard: 10.20.30.40/32 tcp 443: drop elsewhere""#,
            #"ip6 daddr 2001:db8:5::/48 counter drop comment "segguard: 2001:db8:5::/48 udp all ports: drop elsewhere""#,
        ]))
        #expect(NftablesRuleset.baseline(table: "segguard", gateways: [hostTCP, v6UDP]) == data)
        #expect(NftablesRuleset.baseline(table: "segguard", gateways: [hostTCP, v6UDP], mode: .enforce) == data)
        #expect(NftablesRuleset.baseline(table: "segguard", gateways: [hostTCP], mode: .audit) == NftablesRuleset.deleteCommand(table: "segguard"))
        #expect(NftablesRuleset.baseline(table: "segguard", gateways: [hostTCP], mode: .off) == NftablesRuleset.deleteCommand(table: "segguard"))
    }

    @Test("audit: what enforce accepts returns, everything else to the prefix is counted; no accept or drop verdict")
    func auditCountsOnly() {
        let got = lines(NftablesRuleset.transaction(table: "segguard", gateways: [hostTCP], allowedInterfaces: ["eth0"], mode: .audit))
        #expect(got == replaceHead + bothChains([
            #"ip daddr 10.20.30.40 meta l4proto tcp th dport 443 oifname "eth0" return comment "segguard: 10.20.30.40/32 tcp 443: allowed (audit)""#,
            #"ip daddr 10.20.30.40 counter comment "segguard: 10.20.30.40/32 tcp 443: would drop (audit)""#,
        ]))
        #expect(!got.contains { $0.contains(" drop comment") || $0.contains(" accept comment") })

        // Nothing allowed: every gateway packet would be dropped.
        let none = lines(NftablesRuleset.transaction(table: "segguard", gateways: [hostTCP], allowedInterfaces: [], mode: .audit))
        #expect(none == replaceHead + bothChains([#"ip daddr 10.20.30.40 counter comment "segguard: 10.20.30.40/32 tcp 443: would drop (audit)""#]))
    }

    @Test("sessions bound: the accept also needs the packet's socket in a session cgroup; drops unchanged")
    func sessionBound() throws {
        let sessions = try #require(NftablesRuleset.SessionMatch(path: "unified/system.slice/segguardd.service/sessions", level: 3))
        let got = lines(NftablesRuleset.transaction(table: "segguard", gateways: [hostTCP], allowedInterfaces: ["eth0"], mode: .enforce, sessions: sessions))
        let accept = #"ip daddr 10.20.30.40 meta l4proto tcp th dport 443 oifname "eth0" socket cgroupv2 level 3 "unified/system.slice/segguardd.service/sessions" counter accept comment "segguard: 10.20.30.40/32 tcp 443: allow via authorized interface""#
        let drop = #"ip daddr 10.20.30.40 counter drop comment "segguard: 10.20.30.40/32 tcp 443: drop elsewhere""#
        // In the output chain, what no accept took on an authorized interface is logged (for
        // the gateway-refused event), then dropped. Forwarded packets come from no session
        // (and nftables has no socket match on the forward hook): dropped.
        let refused = #"ip daddr 10.20.30.40 oifname "eth0" limit rate 20/second burst 40 packets log group 4747 snaplen 96 counter drop comment "segguard: 10.20.30.40/32 tcp 443: refused, logged""#
        #expect(got == replaceHead + ["add rule inet segguard output " + accept, "add rule inet segguard output " + refused, "add rule inet segguard output " + drop,
                                      "add rule inet segguard forward " + drop, ""])
        // Nothing authorized: no accept, nothing logged (every packet there is dropped as it
        // would be without sessions); audit: nothing logged.
        let closed = lines(NftablesRuleset.transaction(table: "segguard", gateways: [hostTCP], allowedInterfaces: [], mode: .enforce, sessions: sessions))
        #expect(closed == replaceHead + bothChains([drop]))
        let audit = lines(NftablesRuleset.transaction(table: "segguard", gateways: [hostTCP], allowedInterfaces: ["eth0"], mode: .audit, sessions: sessions))
        #expect(!audit.contains { $0.contains("log group") })
        // Paths nft could not be given exactly are refused.
        for bad in ["", "/abs", "a/../b", "a\"b", "a\\b", "a b", "a\nb"] { #expect(NftablesRuleset.SessionMatch(path: bad, level: 1) == nil, "\(bad)") }
        #expect(NftablesRuleset.SessionMatch(path: "segguard", level: 0) == nil)
        #expect(NftablesRuleset.SessionMatch(path: "system.slice/segguard-agent@x:1.service/sessions", level: 3) != nil)
    }

    @Test("off: add then delete the table, nothing else")
    func offDeletesTable() {
        let got = lines(NftablesRuleset.transaction(table: "sg-test", gateways: [hostTCP], allowedInterfaces: ["eth0"], mode: .off))
        #expect(got == ["add table inet sg-test", "delete table inet sg-test", ""])
        #expect(NftablesRuleset.deleteCommand(table: "sg-test") == NftablesRuleset.transaction(table: "sg-test", gateways: [], allowedInterfaces: [], mode: .off))
    }

    @Test("table names: only plain identifiers are accepted (they go into the text unquoted)")
    func tableNames() {
        for good in ["segguard", "sg-test", "sg_bench_1", String(repeating: "a", count: 64)] { #expect(NftablesRuleset.isValidTableName(good), "\(good)") }
        for bad in ["", "1abc", "t\"; flush ruleset", "a b", "a;b", "{x}", "é", String(repeating: "a", count: 65), "-x"] {
            #expect(!NftablesRuleset.isValidTableName(bad), "\(bad)")
        }
    }

    @Test("interface names: quoted; trailing * escaped (nft wildcard); names a quoted string cannot hold are left out (fail closed)")
    func interfaceNameEscaping() {
        #expect(NftablesRuleset.interfaceNameValue("eth0") == #""eth0""#)
        #expect(NftablesRuleset.interfaceNameValue("eth*") == #""eth\*""#)
        #expect(NftablesRuleset.interfaceNameValue("*") == #""\*""#)
        #expect(NftablesRuleset.interfaceNameValue("a*b") == #""a*b""#)
        #expect(NftablesRuleset.interfaceNameValue("x;y") == #""x;y""#)
        #expect(NftablesRuleset.interfaceNameValue("{z}") == #""{z}""#)
        #expect(NftablesRuleset.interfaceNameValue("abcdefghijklmno") == #""abcdefghijklmno""#)
        for bad in ["", "a\\*", "a\\b", "a\"b", "abcdefghijklmnop", "a\u{0}b", "a\u{7}b", "a\u{7F}b"] {
            #expect(NftablesRuleset.interfaceNameValue(bad) == nil, "\(bad)")
        }

        let got = lines(NftablesRuleset.transaction(
            table: "segguard", gateways: [hostTCP], allowedInterfaces: ["eth*", "", "abcdefghijklmnop", "eth0", "eth0", "a\"b; flush ruleset"], mode: .enforce))
        #expect(got[5].contains(#"oifname { "eth0", "eth\*" } counter accept"#), "\(got[5])")
        #expect(!got.joined().contains("flush ruleset"))

        // Only unmatchable names: nothing is allowed, so only the drop rules remain.
        let closed = lines(NftablesRuleset.transaction(table: "segguard", gateways: [hostTCP], allowedInterfaces: ["", "x\\*", "q\"q"], mode: .enforce))
        #expect(closed == replaceHead + bothChains([#"ip daddr 10.20.30.40 counter drop comment "segguard: 10.20.30.40/32 tcp 443: drop elsewhere""#]))
    }

    @Test("a rules update flushes both chains and adds the same rules a whole transaction would; off deletes the table")
    func rulesUpdate() {
        let whole = lines(NftablesRuleset.transaction(table: "segguard", gateways: [hostTCP], allowedInterfaces: ["eth0", "wlan0"], mode: .enforce))
        let update = lines(NftablesRuleset.update(table: "segguard", gateways: [hostTCP], allowedInterfaces: ["eth0", "wlan0"], mode: .enforce))
        #expect(Array(update.prefix(2)) == ["flush chain inet segguard output", "flush chain inet segguard forward"])
        #expect(Array(update.dropFirst(2)) == Array(whole.dropFirst(replaceHead.count)))
        #expect(NftablesRuleset.update(table: "segguard", gateways: [hostTCP], allowedInterfaces: [], mode: .off) == NftablesRuleset.deleteCommand(table: "segguard"))
    }

    @Test("no gateways: the table and empty chains (the policy loader refuses enforce without gateways)")
    func noGateways() {
        let got = lines(NftablesRuleset.transaction(table: "segguard", gateways: [], allowedInterfaces: ["eth0"], mode: .enforce))
        #expect(got == replaceHead + [""])
    }

    @Test("comments are capped at 127 bytes without splitting a character")
    func longComment() {
        let many = Gateway(prefix: IPPrefix("2001:db8:1234:5678:9abc:def0:1234:5678")!, ports: Array(1000...1030), transport: .both)
        let c = NftablesRuleset.comment(.wouldDrop, gateway: many)
        #expect(c.utf8.count == 127)
        #expect(c.hasPrefix("segguard: 2001:db8:1234:5678:9abc:def0:1234:5678/128 both 1000,1001,"))
    }

    @Test("list/delete commands and counters (with their chain) read back from a listing")
    func listingAndCounters() {
        #expect(lines(NftablesRuleset.listCommand(table: "segguard")) == ["list table inet segguard", ""])
        #expect(lines(NftablesRuleset.listTablesCommand()) == ["list tables", ""])
        let listing = """
            {"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
            {"table": {"family": "inet", "name": "segguard", "handle": 7}},
            {"chain": {"family": "inet", "table": "segguard", "name": "output", "handle": 1, "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}},
            {"rule": {"family": "inet", "table": "segguard", "chain": "output", "handle": 2, "comment": "segguard: a: allow via authorized interface",
              "expr": [{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "eth0"}}, {"counter": {"packets": 3, "bytes": 180}}, {"accept": null}]}},
            {"rule": {"family": "inet", "table": "segguard", "chain": "forward", "handle": 3, "comment": "segguard: a: drop elsewhere",
              "expr": [{"counter": {"packets": 12345678901, "bytes": 0}}, {"drop": null}]}},
            {"rule": {"family": "inet", "table": "segguard", "chain": "output", "handle": 4, "expr": [{"accept": null}]}}]}
            """
        #expect(NftablesRuleset.counters(inListing: listing) == [
            .init(chain: "output", comment: "segguard: a: allow via authorized interface", packets: 3, bytes: 180),
            .init(chain: "forward", comment: "segguard: a: drop elsewhere", packets: 12_345_678_901, bytes: 0),
        ])
        #expect(NftablesRuleset.counters(inListing: "not json").isEmpty)
    }

    @Test("the error says what was being done and libnftables' text")
    func errorDescription() {
        let e = NftablesError(operation: "apply the transaction to table inet segguard", detail: "internal:0:0-0: Error: Unknown statement object 'bogus'.")
        #expect(e.description == "nftables: cannot apply the transaction to table inet segguard: internal:0:0-0: Error: Unknown statement object 'bogus'.")
    }
}
