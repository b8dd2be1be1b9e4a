// Tests of the policy loader against the fixture files in Tests/Fixtures and the shipped
// Config/*.yaml, and of the value types the policy is made of (IP addresses and prefixes,
// MAC addresses, SSIDs, interface name patterns).
//
// Bad fixtures carry their expectations in a comment header:
//   # expect: <exact first line of the first issue's description>   (required, first line)
//   # hint: <the first issue's hint>                                 (optional)
//   # at: <text found in the file at the first issue's line:column>  (optional)
//   # then: <exact first line of each further issue, in order>       (optional, repeatable)
// The loader must report exactly 1 + (number of `then` lines) issues.

import Foundation
import Testing

import SegguardPolicy

// MARK: - Fixture helpers

/// Locations of the files these tests read, derived from this source file's path.
enum FixturePaths {
    /// `Tests/Fixtures`.
    static let fixtures = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")
    /// `Config` at the package root.
    static let config = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Config")

    /// Names of the `*.yaml` files in `folder`, sorted; empty when the folder cannot be read.
    static func yamlFiles(in folder: URL) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return names.filter { $0.hasSuffix(".yaml") }.sorted()
    }

    static var goodFixtures: [String] { yamlFiles(in: fixtures.appendingPathComponent("good")) }
    static var badFixtures: [String] { yamlFiles(in: fixtures.appendingPathComponent("bad")) }
}

/// Reads `folder/name` as UTF-8 text.
func readText(_ folder: URL, _ name: String) throws -> String {
    try String(contentsOf: folder.appendingPathComponent(name), encoding: .utf8)
}

/// Loads `folder/name`, naming the file by its last path component in messages; records a
/// test issue with every loader message when the policy is refused.
func loadPolicy(_ folder: URL, _ name: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> Policy {
    let text = try readText(folder, name)
    do {
        return try PolicyLoader.load(text: text, file: name)
    } catch {
        Issue.record("\(name) refused:\n\(error)", sourceLocation: sourceLocation)
        throw error
    }
}

/// The issues `PolicyLoader` reports for `text`, or nil when it accepts the text.
func loaderIssues(_ text: String, file: String) -> [PolicyIssue]? {
    do {
        _ = try PolicyLoader.load(text: text, file: file)
        return nil
    } catch {
        return error.issues
    }
}

/// The expectations written in a bad fixture's comment header.
struct FixtureExpectation {
    var first: String
    var hint: String?
    var at: String?
    var then: [String] = []

    /// Parses the leading `# key: value` comment lines of `text`; nil without `# expect:`
    /// on the first line.
    init?(_ text: String) {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard let head = lines.first, head.hasPrefix("# expect: ") else { return nil }
        first = String(head.dropFirst("# expect: ".count))
        for line in lines.dropFirst() {
            guard line.hasPrefix("# ") else { break }
            if line.hasPrefix("# hint: ") { hint = String(line.dropFirst("# hint: ".count)) }
            else if line.hasPrefix("# at: ") { at = String(line.dropFirst("# at: ".count)) }
            else if line.hasPrefix("# then: ") { then.append(String(line.dropFirst("# then: ".count))) }
        }
    }
}

/// The text of `text` from 1-based `line` and `column` (columns count characters) to the end
/// of that line; nil when the position is outside the text.
func textAt(_ text: String, line: Int, column: Int) -> String? {
    let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
    guard line >= 1, line <= lines.count else { return nil }
    let l = lines[line - 1]
    guard column >= 1, column <= l.count + 1 else { return nil }
    return String(l.dropFirst(column - 1))
}

/// The first line of an issue's description (the hint, if any, follows on its own line).
func firstLine(_ issue: PolicyIssue) -> String {
    String(issue.description.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)[0])
}

// MARK: - Fixtures

@Suite("Policy fixtures")
struct PolicyFixtureTests {
    @Test("the fixture folders are found and populated")
    func fixturesExist() {
        #expect(FixturePaths.goodFixtures.count >= 5, "good fixtures in \(FixturePaths.fixtures.path)/good")
        #expect(FixturePaths.badFixtures.count >= 19, "bad fixtures in \(FixturePaths.fixtures.path)/bad")
        #expect(FixturePaths.yamlFiles(in: FixturePaths.config) == ["capture.example.yaml", "demo-veth.yaml", "device-auth.example.yaml", "policy.example.yaml", "profiles.example.yaml"])
    }

    @Test("every good fixture loads", arguments: FixturePaths.goodFixtures)
    func goodFixtureLoads(name: String) throws {
        let policy = try loadPolicy(FixturePaths.fixtures.appendingPathComponent("good"), name)
        #expect(Policy.supportedSchemaVersions.contains(policy.schemaVersion))
        #expect(!policy.sites.isEmpty)
        for site in policy.sites {
            #expect(!(site.wireless.isEmpty && site.wired.isEmpty), "site \(site.name) has rules")
            for rule in site.wireless { #expect(rule.location.hasPrefix("\(name):")) }
            for rule in site.wired { #expect(rule.location.hasPrefix("\(name):")) }
        }
    }

    @Test("every bad fixture is refused with exactly the issues its header names", arguments: FixturePaths.badFixtures)
    func badFixtureRefused(name: String) throws {
        let text = try readText(FixturePaths.fixtures.appendingPathComponent("bad"), name)
        let expected = try #require(FixtureExpectation(text), "\(name) must start with '# expect: …'")
        guard let issues = loaderIssues(text, file: name) else {
            Issue.record("\(name) was accepted; expected: \(expected.first)")
            return
        }
        let first = try #require(issues.first)
        #expect(firstLine(first) == expected.first)
        if let hint = expected.hint { #expect(first.hint == hint) }
        if let at = expected.at {
            let found = textAt(text, line: first.line, column: first.column)
            #expect(found?.hasPrefix(at) == true, "\(name):\(first.line):\(first.column) should point at '\(at)', points at '\(found ?? "<outside the file>")'")
        }
        #expect(issues.dropFirst().map(firstLine) == expected.then)
        // Issues come in file order.
        let positions = issues.map { [$0.line, $0.column] }
        #expect(positions == positions.sorted { $0.lexicographicallyPrecedes($1) })
    }

    @Test("a policy file that cannot be read says why, as the system says it: missing, a directory, not UTF-8")
    func unreadable() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("segguard-unreadable-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        func message(_ path: String) -> String {
            do {
                _ = try PolicyLoader.load(file: path)
                return "loaded"
            } catch {
                return error.issues.map(\.message).joined(separator: "; ")
            }
        }
        #expect(message(dir.appendingPathComponent("missing.yaml").path) == "cannot read the policy file: No such file or directory (errno 2)")
        #expect(message(dir.path) == "cannot read the policy file: Is a directory (errno 21)")
        let latin1 = dir.appendingPathComponent("latin1.yaml")
        try Data("name: Gem\u{00E9}inde\n".utf8.map { $0 == 0xC3 ? 0x20 : $0 }).write(to: latin1)
        #expect(message(latin1.path) == "cannot read the policy file: it is not UTF-8 text")
    }

    @Test("the YAML reader (libyaml): anchors and aliases are read; a second document, an undefined alias, a key twice in any mapping, a control character, alias bombs and deep nesting are refused, each located")
    func yamlReader() throws {
        let base = "schema_version: 1\nname: y\nsites: [{name: hq, wired: [{interfaces: [eth0]}]}]\n"
        // An anchored list used twice.
        let aliased = try PolicyLoader.load(text: base + "vdi: {gateways: [{address: 192.0.2.10, ports: &p [443, 8443]}, {address: 192.0.2.11, ports: *p}]}\n", file: "a.yaml")
        #expect(aliased.vdi.gateways.map(\.ports) == [[443, 8443], [443, 8443]])

        func first(_ text: String) -> String? { loaderIssues(text, file: "y.yaml")?.first?.description }
        // The style is kept: a quoted number is text (segguard-policy(5)).
        #expect(first(base + "vdi: {gateways: [{address: 192.0.2.10, ports: [\"443\"]}]}\n") == "y.yaml:4:48: vdi.gateways[0].ports[0]: expected a whole number, found \"443\"")
        let gw = "vdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}\n"
        #expect(first(base + gw + "---\nname: other\n") == "y.yaml:5:1: a second document ('---') in the file (a policy is one document)")
        #expect(first(base + "vdi: {gateways: [{address: 192.0.2.10, ports: *none}]}\n") == "y.yaml:4:47: alias *none names no anchor before it")
        // A key twice is refused where the loader reads no keys itself (a profile's file settings).
        let twice = base + gw + "profiles:\n  - name: p\n    segment: mynumber\n    command: [/usr/bin/true]\n    config_files:\n      - path: ~/.config/x.ini\n        set: {a: 1, a: 2}\n"
        #expect(first(twice) == "y.yaml:11:21: key \"a\" given twice")
        // A value with a line break of any kind (CRLF is one Character) is refused.
        let crlf = base + gw + "profiles:\n  - name: p\n    segment: mynumber\n    command: [/usr/bin/true]\n    config_files:\n      - path: ~/.config/x.ini\n        set: {a: \"1\\r\\nb=2\"}\n"
        let crlfIssues = loaderIssues(crlf, file: "y.yaml")?.map(\.description) ?? ["accepted"]
        #expect(crlfIssues.contains { $0.contains("keys may not contain '=' and values no line breaks") }, "\(crlfIssues)")
        #expect(first(base + gw + "name: \u{01}x\n") == "y.yaml:5:7: YAML reader: control characters are not allowed (#1)")
        // "Billion laughs": each level doubles; refused before it is expanded.
        var bomb = "a0: &a0 [x, x]\n"
        for i in 1...20 { bomb += "a\(i): &a\(i) [*a\(i - 1), *a\(i - 1)]\n" }
        let bombIssue = try #require(first(bomb))
        #expect(bombIssue.contains("aliases expand to more than 200000 values"), "\(bombIssue)")
        // Nesting: 100,000 brackets deep is an error, not a crash.
        let deep = "name: " + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000) + "\n"
        #expect(first(deep) == "y.yaml:1:70: lists and mappings nested deeper than 64 levels")
    }

    @Test("a file with several mistakes reports all of them, in line order, and a count")
    func severalErrorsSummary() throws {
        let text = try readText(FixturePaths.fixtures.appendingPathComponent("bad"), "several-errors.yaml")
        let issues = try #require(loaderIssues(text, file: "several-errors.yaml"))
        #expect(issues.map(\.line) == [8, 14, 17, 18, 20, 24])
        #expect(issues[4].hint == "did you mean \"other_uplinks\"?")
        do {
            _ = try PolicyLoader.load(text: text, file: "several-errors.yaml")
        } catch {
            #expect(error.description.hasSuffix("\n6 errors; policy refused"))
            #expect(error.description.hasPrefix("several-errors.yaml:8:17: schema_version: expected a whole number"))
        }
    }

    @Test("one mistake is summarised in the singular, with the hint on its own line")
    func singleErrorSummary() throws {
        let text = "schema_version: 1\nsites:\n  - name: a\n    wired:\n      - interfaces: [\"enp*\"]\nvdi: {gatways: []}\n"
        do {
            _ = try PolicyLoader.load(text: text, file: "p.yaml")
            Issue.record("accepted a misspelt key")
        } catch {
            #expect(error.description == """
                p.yaml:6:7: vdi.gatways: unknown key "gatways"
                  hint: did you mean "gateways"?
                1 error; policy refused
                """)
        }
    }

    @Test("multi-site.yaml: sites, pinned BSSIDs, wired rules, uplinks and gateways")
    func multiSite() throws {
        let p = try loadPolicy(FixturePaths.fixtures.appendingPathComponent("good"), "multi-site.yaml")
        #expect(p.name == "Example City My Number segment")
        #expect(p.sites.map(\.name) == ["main-building", "branch-north", "branch-south"])

        let main = p.sites[0]
        #expect(main.wireless.count == 1)
        #expect(main.wireless[0].ssid == SSID("mn-office"))
        #expect(main.wireless[0].security == [.enterprise])
        #expect(main.wireless[0].bssids == [MACAddress("02:00:5e:00:53:01")!, MACAddress("02:00:5e:00:53:02")!])
        #expect(main.wireless[0].location == "multi-site.yaml:8")
        #expect(main.wired.map(\.interfaces) == [["enp*", "eth*"], ["enp1s0.120"]])
        #expect(main.wired.map(\.linkKinds) == [[], ["vlan"]])
        #expect(main.wired.allSatisfy { $0.macs.isEmpty })
        #expect(main.wired.map(\.location) == ["multi-site.yaml:14", "multi-site.yaml:15"])

        let north = p.sites[1]
        #expect(north.wireless.map(\.ssid) == [SSID("mn-branch-north"), SSID("mn-office")])
        #expect(north.wireless[0].security == [.enterprise], "security defaults to [enterprise]")
        #expect(north.wireless[1].security == [.enterprise, .sae])
        #expect(north.wireless[1].bssids.count == 2)
        #expect(north.wired.isEmpty)

        let south = p.sites[2]
        #expect(south.wireless.isEmpty)
        #expect(south.wired[0].interfaces == ["enp*", "enx*"])
        #expect(south.wired[0].macs == [MACAddress("02:00:5e:10:00:01")!, MACAddress("02:00:5e:10:00:02")!])

        #expect(p.uplinks == UplinkRule(otherUplinks: .deny, ignore: ["virbr*", "docker0"]))
        #expect(p.vdi.gateways.map(\.prefix.description) == ["198.51.100.10/32", "198.51.100.16/28"])
        #expect(p.vdi.gateways.map(\.ports) == [[443], [443, 8443, 4172]])
        #expect(p.vdi.gateways.map(\.transport) == [.tcp, .both])
    }

    @Test("demo-veth.yaml: one site admitting veth, defaults elsewhere")
    func demoVeth() throws {
        let p = try loadPolicy(FixturePaths.fixtures.appendingPathComponent("good"), "demo-veth.yaml")
        #expect(p.name == "demo")
        #expect(p.sites.count == 1)
        #expect(p.sites[0].wired == [WiredRule(interfaces: ["sgdemo*"], linkKinds: ["veth"], location: "demo-veth.yaml:7")])
        #expect(p.uplinks == UplinkRule(otherUplinks: .deny, ignore: []))
        #expect(p.vdi.gateways == [Gateway(prefix: IPPrefix("192.0.2.10")!, ports: [443], transport: .tcp)])
    }

    @Test("japanese-ssid.yaml: a UTF-8 Japanese SSID and a 32-byte SSID")
    func japaneseSSID() throws {
        let p = try loadPolicy(FixturePaths.fixtures.appendingPathComponent("good"), "japanese-ssid.yaml")
        #expect(p.name == "北支所 無線LAN")
        #expect(p.sites.map(\.name) == ["北支所"])
        let rules = p.sites[0].wireless
        #expect(rules.count == 2)
        #expect(rules[0].ssid == SSID("庁内マイナンバー"))
        #expect(rules[0].ssid.bytes.count == 24)
        #expect(rules[0].ssid.description == "庁内マイナンバー")
        #expect(rules[0].security == [.enterprise, .sae])
        #expect(rules[0].bssids.isEmpty)
        #expect(rules[1].ssid.bytes.count == 32)
        #expect(rules[1].security == [.sae])
        #expect(p.uplinks.otherUplinks == .allow)
    }

    @Test("ssid-hex.yaml: SSIDs given as hex bytes, with and without colons")
    func ssidHex() throws {
        let p = try loadPolicy(FixturePaths.fixtures.appendingPathComponent("good"), "ssid-hex.yaml")
        let rules = p.sites[0].wireless
        #expect(rules[0].ssid.bytes == [0x92, 0xA1, 0x93, 0xE0])
        #expect(rules[0].ssid.utf8Text == nil)
        #expect(rules[0].ssid.description == #"\x92\xa1\x93\xe0"#)
        #expect(rules[0].security == [.psk])
        #expect(rules[0].bssids == [MACAddress("02:00:5e:00:55:01")!])
        #expect(rules[1].ssid == SSID("mn-office"))
        #expect(rules[1].security == [.enterprise])
    }

    @Test("ipv6-gateways.yaml: flow style, IPv6 prefixes, every protocol")
    func ipv6Gateways() throws {
        let p = try loadPolicy(FixturePaths.fixtures.appendingPathComponent("good"), "ipv6-gateways.yaml")
        #expect(p.name == "v6")
        #expect(p.sites[0].wired[0].macs == [MACAddress("02:00:5e:20:00:01")!])
        #expect(p.sites[0].wired[0].interfaces.isEmpty)
        let g = p.vdi.gateways
        #expect(g.count == 5)
        #expect(g[0].prefix.description == "2001:db8:4d4e::10/128")
        #expect(g[1].prefix.description == "2001:db8:4d4e:100::/56")
        #expect(g[2].prefix.description == "2001:db8::1:0:0:1/128")
        #expect(g[3].prefix.address.bytes == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 192, 0, 2, 10])
        #expect(g[3].prefix.length == 128)
        #expect(g[4].prefix.description == "192.0.2.128/25")
        #expect(g.map(\.ports) == [[443], [4172, 8443], [], [], [1, 65535]])
        #expect(g.map(\.transport) == [.tcp, .both, .udp, .tcp, .tcp])
        #expect(p.uplinks == UplinkRule())
    }

    @Test("Config/policy.example.yaml parses into the documented sites")
    func configExample() throws {
        let p = try loadPolicy(FixturePaths.config, "policy.example.yaml")
        #expect(p.sites.map(\.name) == ["main-building", "branch-north", "branch-south"])
        #expect(p.name.hasPrefix("Example City"))
        let main = p.sites[0]
        #expect(main.wireless.map(\.ssid) == [SSID("mn-office")])
        #expect(main.wireless[0].bssids.count == 4)
        #expect(main.wireless[0].security == [.enterprise])
        #expect(main.wired.map(\.interfaces) == [["enp*", "eth*"], ["enp1s0.120"]])
        #expect(main.wired[1].linkKinds == ["vlan"])
        let north = p.sites[1]
        #expect(north.wireless.map(\.ssid) == [SSID("mn-branch-north"), SSID("mn-office")])
        #expect(Set(north.wireless[1].bssids).isDisjoint(with: main.wireless[0].bssids))
        let south = p.sites[2]
        #expect(south.wireless.isEmpty)
        #expect(south.wired[0].macs.count == 2)
        #expect(p.uplinks == UplinkRule(otherUplinks: .deny, ignore: ["virbr*", "docker0"]))
        #expect(p.vdi.gateways.count == 3)
        #expect(p.vdi.gateways.map(\.prefix.address.family) == [.ipv4, .ipv4, .ipv6])
        #expect(p.vdi.gateways[1].transport == .both)
        #expect(p.vdi.gateways[2].prefix.description == "2001:db8:4d4e::/48")
    }

    @Test("Config/device-auth.example.yaml: EAP-TLS required on the office Wi-Fi and the 802.1X desk ports")
    func configDeviceAuth() throws {
        let p = try loadPolicy(FixturePaths.config, "device-auth.example.yaml")
        #expect(p.sites.map(\.name) == ["main-building", "branch-north"])
        #expect(p.sites.flatMap(\.wireless).allSatisfy { $0.deviceAuth == .eapTLS && $0.security == [.enterprise] })
        #expect(p.sites[0].wired.map(\.deviceAuth) == [.eapTLS])
        #expect(p.sites[0].wired[0].interfaces == ["eth0", "enp*"])
    }

    @Test("Config/capture.example.yaml: the default capture tool list, trusted-only for the My Number profile")
    func configCapture() throws {
        let p = try loadPolicy(FixturePaths.config, "capture.example.yaml")
        #expect(p.capture.mode == .enforce && p.capture.scope == .always && p.capture.watch == ["/"])
        for tool in ["gnome-screenshot", "spectacle", "xfce4-screenshooter", "scrot", "maim", "flameshot", "grim", "wf-recorder", "xwd", "import",
                     "ksnip", "shutter", "obs", "simplescreenrecorder", "kazam", "peek", "vokoscreen", "import-im6.q16"] {
            #expect(p.capture.blockNames.contains(tool), "\(tool)")
        }
        #expect(Set(p.capture.blockNames).count == p.capture.blockNames.count, "no duplicates")
        #expect(p.profiles.map(\.capture) == [.trustedOnly, .none])
    }

    @Test("Config/demo-veth.yaml parses: one veth-admitting rule on sgdemo*")
    func configDemo() throws {
        let p = try loadPolicy(FixturePaths.config, "demo-veth.yaml")
        #expect(p.sites.map(\.name) == ["demo"])
        #expect(p.sites[0].wireless.isEmpty)
        #expect(p.sites[0].wired.count == 1)
        #expect(p.sites[0].wired[0].interfaces == ["sgdemo*"])
        #expect(p.sites[0].wired[0].linkKinds == ["veth"])
        #expect(p.sites[0].wired[0].macs.isEmpty)
        #expect(p.uplinks.otherUplinks == .deny)
    }
}

// MARK: - IP addresses and prefixes

@Suite("IPAddress and IPPrefix")
struct IPAddressTests {
    /// (input, canonical RFC 5952 text, family).
    static let valid: [(String, String, IPAddress.Family)] = [
        ("192.0.2.1", "192.0.2.1", .ipv4),
        ("0.0.0.0", "0.0.0.0", .ipv4),
        ("255.255.255.255", "255.255.255.255", .ipv4),
        ("::", "::", .ipv6),
        ("0:0:0:0:0:0:0:0", "::", .ipv6),
        ("::1", "::1", .ipv6),
        ("1::", "1::", .ipv6),
        ("2001:db8::", "2001:db8::", .ipv6),
        // Leading zeros dropped, lower case (RFC 5952 4.1, 4.3).
        ("2001:0DB8:0000:0000:0000:FF00:0042:8329", "2001:db8::ff00:42:8329", .ipv6),
        // The longest run of zeros is compressed (4.2.3) …
        ("2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1", .ipv6),
        // … the first one on a tie …
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1", .ipv6),
        // … and never a single zero word (4.2.2).
        ("2001:db8:1:1:1:1:0:1", "2001:db8:1:1:1:1:0:1", .ipv6),
        ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0", .ipv6),
        ("fe80::1:2", "fe80::1:2", .ipv6),
        // An embedded IPv4 tail.
        ("::192.0.2.1", "::c000:201", .ipv6),
        ("64:ff9b::198.51.100.7", "64:ff9b::c633:6407", .ipv6),
        ("1:2:3:4:5:6:192.0.2.1", "1:2:3:4:5:6:c000:201", .ipv6),
    ]

    @Test("valid addresses parse and print canonically", arguments: valid)
    func parsesAndPrints(text: String, canonical: String, family: IPAddress.Family) throws {
        let a = try #require(IPAddress(text))
        #expect(a.description == canonical)
        #expect(a.family == family)
        #expect(IPAddress(canonical) == a, "the printed form parses back to the same address")
    }

    @Test("an IPv4-mapped address keeps its IPv4 bytes")
    func mapped() throws {
        let a = try #require(IPAddress("::ffff:192.0.2.128"))
        #expect(a.bytes == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 192, 0, 2, 128])
        #expect(IPAddress("::FFFF:C000:0280") == a)
    }

    @Test("invalid addresses are refused", arguments: [
        "", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1.2.3.04", "256.1.1.1", "1.2.3.-4", "1..2.3",
        " 1.2.3.4", "1.2.3.4 ", "1.2.3.4/32", "١.2.3.4", "0x1.2.3.4",
        ":", ":::", "1::2::3", "::1::", ":1::", "1::2:", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9",
        "1:2:3:4:5:6:7:8::", "::1:2:3:4:5:6:7:8", "12345::", "::g", "::1.2.3", "::1.2.3.4:5",
        "1:2:3:4:5:6:7:1.2.3.4", "fe80::1%eth0",
        // An IPv4 part is only allowed at the very end.
        "1.2.3.4::", "1:1.2.3.4::1",
        // Groups are hex digits only: no sign.
        "+1::", "-0::1",
    ])
    func refusesInvalid(text: String) {
        #expect(IPAddress(text) == nil, "\"\(text)\" should not parse")
    }

    @Test("bytes of the wrong length are refused")
    func byteLengths() {
        #expect(IPAddress(bytes: [192, 0, 2]) == nil)
        #expect(IPAddress(bytes: [UInt8](repeating: 0, count: 15)) == nil)
        #expect(IPAddress(bytes: [192, 0, 2, 1])?.description == "192.0.2.1")
        #expect(IPAddress(bytes: [UInt8](repeating: 0, count: 15) + [1])?.description == "::1")
    }

    @Test("valid prefixes parse and print", arguments: [
        ("192.0.2.0/24", "192.0.2.0/24"), ("192.0.2.1", "192.0.2.1/32"), ("192.0.2.1/32", "192.0.2.1/32"),
        ("0.0.0.0/0", "0.0.0.0/0"), ("192.0.2.128/25", "192.0.2.128/25"), ("198.51.100.16/28", "198.51.100.16/28"),
        ("2001:db8::/32", "2001:db8::/32"), ("2001:DB8:0:0::/64", "2001:db8::/64"), ("2001:db8::1", "2001:db8::1/128"),
        ("::/0", "::/0"), ("2001:db8:4d4e:100::/56", "2001:db8:4d4e:100::/56"),
    ])
    func prefixes(text: String, canonical: String) throws {
        let p = try #require(IPPrefix(text))
        #expect(p.description == canonical)
    }

    @Test("invalid prefixes are refused", arguments: [
        "192.0.2.0/33", "2001:db8::/129", "192.0.2.1/24", "198.51.100.20/28", "2001:db8::1/64",
        "192.0.2.0/", "/24", "192.0.2.0/24/1", "192.0.2.0/+8", "192.0.2.0/-1", "192.0.2.0/ 8",
        "192.0.2.0/08x", "1.2.3/24",
    ])
    func refusesInvalidPrefix(text: String) {
        #expect(IPPrefix(text) == nil, "\"\(text)\" should not parse")
    }

    @Test("prefix membership")
    func contains() throws {
        let p = try #require(IPPrefix("192.0.2.0/24"))
        #expect(p.contains(IPAddress("192.0.2.0")!))
        #expect(p.contains(IPAddress("192.0.2.255")!))
        #expect(!p.contains(IPAddress("192.0.3.0")!))
        #expect(!p.contains(IPAddress("::ffff:192.0.2.1")!), "families never mix")
        let p25 = try #require(IPPrefix("192.0.2.128/25"))
        #expect(p25.contains(IPAddress("192.0.2.200")!))
        #expect(!p25.contains(IPAddress("192.0.2.127")!))
        let v6 = try #require(IPPrefix("2001:db8:4d4e::/48"))
        #expect(v6.contains(IPAddress("2001:db8:4d4e:ffff::1")!))
        #expect(!v6.contains(IPAddress("2001:db8:4d4f::1")!))
        #expect(IPPrefix("0.0.0.0/0")!.contains(IPAddress("203.0.113.9")!))
        #expect(IPPrefix(address: IPAddress("192.0.2.0")!, length: 33) == nil)
        #expect(IPPrefix(address: IPAddress("2001:db8::")!, length: 128) != nil)
    }
}

// MARK: - MAC addresses

@Suite("MACAddress")
struct MACAddressTests {
    @Test("colon and dash forms, any case, print lower-case with colons", arguments: [
        ("02:00:5e:00:53:01", "02:00:5e:00:53:01"),
        ("02:00:5E:00:53:AB", "02:00:5e:00:53:ab"),
        ("02-00-5e-00-53-01", "02:00:5e:00:53:01"),
        ("FF-FF-FF-FF-FF-FF", "ff:ff:ff:ff:ff:ff"),
    ])
    func parses(text: String, canonical: String) throws {
        let mac = try #require(MACAddress(text))
        #expect(mac.description == canonical)
        #expect(mac.bytes.count == 6)
    }

    @Test("malformed MAC addresses are refused", arguments: [
        "", "02:00:5e:00:53", "02:00:5e:00:53:01:02", "2:0:5e:0:53:1", "02:00:5e:00:53:0g",
        "020:0:5e:00:53:01", "02:00-5e:00:53:01", "02005e005301", "02:00:5e:00:53:", " 02:00:5e:00:53:01",
        // Hex digits only: no sign.
        "+2:00:5e:00:53:01", "02:00:5e:00:53:-0",
    ])
    func refuses(text: String) {
        #expect(MACAddress(text) == nil, "\"\(text)\" should not parse")
    }

    @Test("bytes, ordering and Codable")
    func bytesAndOrder() throws {
        #expect(MACAddress(bytes: [2, 0, 0x5E, 0, 0x53]) == nil)
        let a = try #require(MACAddress(bytes: [2, 0, 0x5E, 0, 0x53, 1]))
        let b = try #require(MACAddress("02:00:5e:00:53:02"))
        #expect(a.description == "02:00:5e:00:53:01")
        #expect(a < b)
        let json = try JSONEncoder().encode([a])
        #expect(String(decoding: json, as: UTF8.self) == #"["02:00:5e:00:53:01"]"#)
        #expect(try JSONDecoder().decode([MACAddress].self, from: json) == [a])
        #expect(throws: DecodingError.self) { try JSONDecoder().decode([MACAddress].self, from: Data(#"["02:00"]"#.utf8)) }
    }
}

// MARK: - SSIDs

@Suite("SSID")
struct SSIDTests {
    @Test("printable UTF-8 prints as itself")
    func utf8() {
        #expect(SSID("mn-office").description == "mn-office")
        #expect(SSID("庁内マイナンバー").description == "庁内マイナンバー")
        #expect(SSID("庁内マイナンバー").utf8Text == "庁内マイナンバー")
        #expect(SSID("Guest WiFi").description == "Guest WiFi")
        #expect(SSID(bytes: []).isEmpty)
        #expect(SSID(bytes: []).description == "")
    }

    @Test("non-UTF-8 bytes and control characters are escaped as \\xNN", arguments: [
        ([0x92, 0xA1, 0x93, 0xE0], #"\x92\xa1\x93\xe0"#),      // Shift_JIS 庁内
        ([0x6D, 0x6E, 0xFF], #"mn\xff"#),
        ([0x61, 0x09, 0x62], #"a\x09b"#),                       // a TAB b
        ([0x61, 0x0A, 0x62], #"a\x0ab"#),                       // a newline must never reach a log line
        ([0x00], #"\x00"#),
        ([0x61, 0x7F], #"a\x7f"#),
        ([0x5C, 0xFF], #"\x5c\xff"#),                           // a backslash is escaped too
        ([0x1B, 0x5B, 0x32, 0x4A], #"\x1b[2J"#),               // a terminal escape sequence
        // C1 control characters (here U+0085 NEXT LINE, UTF-8 C2 85) are control characters too.
        ([0x61, 0xC2, 0x85, 0x62], #"a\xc2\x85b"#),
    ] as [([UInt8], String)])
    func escapes(bytes: [UInt8], printed: String) {
        #expect(SSID(bytes: bytes).description == printed)
    }

    @Test("printing is unambiguous: a literal backslash sequence never looks like an escaped byte")
    func unambiguous() {
        let literal = SSID(#"\xff"#)          // four printable characters
        let byte = SSID(bytes: [0xFF])         // one non-UTF-8 byte
        #expect(literal != byte)
        #expect(byte.description == #"\xff"#)
        #expect(literal.description != byte.description)
    }

    @Test("JSON form is the byte array")
    func codable() throws {
        let s = SSID(bytes: [0x92, 0xA1])
        let json = try JSONEncoder().encode(s)
        #expect(String(decoding: json, as: UTF8.self) == "[146,161]")
        #expect(try JSONDecoder().decode(SSID.self, from: json) == s)
    }
}

// MARK: - Interface name patterns

@Suite("NamePattern")
struct NamePatternTests {
    @Test("shell-style matching on whole names", arguments: [
        ("eth0", "eth0", true), ("eth0", "eth01", false), ("eth0", "eth", false), ("ETH0", "eth0", false),
        ("enp*", "enp1s0", true), ("enp*", "enp", true), ("enp*", "eth0", false), ("*", "", true), ("*", "wlan0", true),
        ("*0", "eth0", true), ("e*0", "eth10", true), ("e*1", "eth10", false), ("*s*", "enp1s0", true), ("e**0", "eth0", true),
        ("eth?", "eth0", true), ("eth?", "eth", false), ("eth?", "eth10", false), ("??", "lo", true),
        ("eth[0-3]", "eth2", true), ("eth[0-3]", "eth4", false), ("eth[02]", "eth2", true), ("eth[02]", "eth1", false),
        ("eth[!0]", "eth1", true), ("eth[!0]", "eth0", false), ("eth[!0]", "eth", false),
        ("eth[^0-3]", "eth5", true), ("eth[^0-3]", "eth3", false),
        ("wl[a-z]*", "wlp2s0", true), ("wl[a-z]*", "wl0", false), ("[a-]x", "-x", true), ("[a-]x", "bx", false),
        ("enp[0-9]s[0-9]", "enp1s0", true), ("enp[0-9]s[0-9]", "enp10s0", false),
        ("enp1s0.120", "enp1s0.120", true), ("enp1s0.120", "enp1s0x120", false),
        ("sgdemo*", "sgdemo0", true), ("sgdemo*", "xsgdemo0", false), ("enx*", "enx02005e100001", true),
    ] as [(String, String, Bool)])
    func matches(pattern: String, name: String, expected: Bool) {
        #expect(NamePattern.matches(pattern, name) == expected)
    }

    @Test("malformed patterns are described")
    func problems() {
        #expect(NamePattern.problem(in: "") == "empty pattern")
        #expect(NamePattern.problem(in: "enp[0-9") == "unclosed '[' in pattern \"enp[0-9\"")
        #expect(NamePattern.problem(in: "enp*") == nil)
        #expect(NamePattern.problem(in: "eth[!0-9]") == nil)
        #expect(NamePattern.problem(in: "eth]") == nil)
    }
}
