// Table-driven tests of SegmentDecider.decide: every case is a hand-built snapshot, a policy,
// and the exact segment, reason and authorized interfaces expected.

import Testing

import SegguardDecision
import SegguardPolicy

// MARK: - Addresses used in the table

/// Locally administered example MAC addresses and BSSIDs.
enum MAC {
    static let mainAP1 = MACAddress("02:00:5e:00:53:01")!
    static let mainAP2 = MACAddress("02:00:5e:00:53:02")!
    static let rogueAP = MACAddress("02:00:5e:00:53:99")!
    static let northAP = MACAddress("02:00:5e:00:54:01")!
    static let northOfficeAP = MACAddress("02:00:5e:00:54:11")!
    static let annexAP = MACAddress("02:00:5e:00:55:01")!
    static let southNIC = MACAddress("02:00:5e:10:00:01")!
    static let southSpareNIC = MACAddress("02:00:5e:10:00:02")!
    static let otherNIC = MACAddress("02:00:5e:99:99:99")!
}

/// Parses an address literal of the table (crashes on a typo in the test itself).
func ip(_ text: String) -> IPAddress { IPAddress(text)! }

/// An IPv4 default route via `gateway` (none for a point-to-point link).
func v4Default(via gateway: String? = nil, metric: UInt32 = 0) -> DefaultRoute {
    DefaultRoute(family: .ipv4, gateway: gateway.map(ip), metric: metric)
}

// MARK: - Interface builders

/// The loopback device, up, with 127.0.0.1/8.
func loopback() -> InterfaceState {
    InterfaceState(index: 1, name: "lo", kind: .loopback, operState: .unknown,
                   addresses: [InterfaceAddress(address: ip("127.0.0.1"), prefixLength: 8, scope: 254)])
}

/// A wired NIC; running with a default route unless told otherwise.
func nic(
    _ name: String, index: Int32, mac: MACAddress = MAC.otherNIC, adminUp: Bool = true, carrier: Bool = true,
    oper: OperState = .up, routes: [DefaultRoute] = [v4Default(via: "192.0.2.1")]
) -> InterfaceState {
    InterfaceState(index: index, name: name, kind: .wired, mac: mac, isAdminUp: adminUp, operState: oper,
                   hasCarrier: carrier, defaultRoutes: routes)
}

/// A kernel-made link (`linkKind` nil for a non-Ethernet device such as a raw-IP modem).
func virtualLink(_ name: String, index: Int32, linkKind: String?, routes: [DefaultRoute] = [v4Default(via: "192.0.2.1")]) -> InterfaceState {
    InterfaceState(index: index, name: name, kind: .virtual, linkKind: linkKind, mac: MAC.otherNIC, defaultRoutes: routes)
}

/// A Wi-Fi station interface associated to `ssid` through `bssid` (nil `bssid`: not associated).
func wifi(
    _ name: String = "wlan0", index: Int32, ssid: SSID?, bssid: MACAddress?, security: WirelessSecurity = .enterprise,
    oper: OperState = .up, routes: [DefaultRoute] = [v4Default(via: "192.0.2.65", metric: 600)]
) -> InterfaceState {
    InterfaceState(index: index, name: name, kind: .wireless, mac: MACAddress("02:00:5e:77:00:01")!, operState: oper,
                   defaultRoutes: routes,
                   wireless: WirelessLink(ssid: ssid, bssid: bssid, frequencyMHz: 5180, security: security))
}

/// A Wi-Fi station interface that is not associated (no link, no routes).
func wifiDisconnected(_ name: String = "wlan0", index: Int32) -> InterfaceState {
    InterfaceState(index: index, name: name, kind: .wireless, mac: MACAddress("02:00:5e:77:00:01")!, operState: .down,
                   hasCarrier: false, wireless: .disconnected)
}

// MARK: - Policies used in the table

/// Hand-built policies (as PolicyLoader would build them, with made-up rule locations).
enum Policies {
    /// The municipality of Config/policy.example.yaml: main building (pinned "mn-office", wired
    /// enp*/eth*) and branch-north (its own SSID, and "mn-office" from its own access points).
    static let office = Policy(
        name: "office",
        sites: [
            Site(name: "main-building",
                 wireless: [WirelessRule(ssid: SSID("mn-office"), bssids: [MAC.mainAP1, MAC.mainAP2], location: "policy.yaml:12")],
                 wired: [WiredRule(interfaces: ["enp*", "eth*"], location: "policy.yaml:20")]),
            Site(name: "branch-north",
                 wireless: [
                    WirelessRule(ssid: SSID("mn-branch-north"), bssids: [MAC.northAP], location: "policy.yaml:27"),
                    WirelessRule(ssid: SSID("mn-office"), bssids: [MAC.northOfficeAP], location: "policy.yaml:30"),
                 ]),
        ],
        uplinks: UplinkRule(otherUplinks: .deny, ignore: ["virbr*"]))

    /// `office` with other uplinks tolerated.
    static let officeAllowingUplinks: Policy = {
        var p = office
        p.uplinks.otherUplinks = .allow
        return p
    }()

    /// One site whose "mn-office" is pinned to the main building's access points only.
    static let mainOnly = Policy(
        name: "main only",
        sites: [Site(name: "main-building",
                     wireless: [WirelessRule(ssid: SSID("mn-office"), bssids: [MAC.mainAP1, MAC.mainAP2], location: "main.yaml:8")])])

    /// "mn-office" without BSSID pinning, enterprise or SAE.
    static let unpinned = Policy(
        name: "unpinned",
        sites: [Site(name: "main-building",
                     wireless: [WirelessRule(ssid: SSID("mn-office"), security: [.enterprise, .sae], location: "unpinned.yaml:7")])])

    /// branch-south: enp* NICs pinned by MAC.
    static let southNamedAndPinned = Policy(
        name: "south",
        sites: [Site(name: "branch-south",
                     wired: [WiredRule(interfaces: ["enp*"], macs: [MAC.southNIC, MAC.southSpareNIC], location: "south.yaml:6")])])

    /// branch-south: pinned by MAC only, whatever the name.
    static let southMACOnly = Policy(
        name: "south",
        sites: [Site(name: "branch-south", wired: [WiredRule(macs: [MAC.southNIC], location: "south.yaml:6")])])

    /// The README demo: sgdemo* veth links admitted.
    static let demo = Policy(
        name: "demo",
        sites: [Site(name: "demo", wired: [WiredRule(interfaces: ["sgdemo*"], linkKinds: ["veth"], location: "demo-veth.yaml:11")])])

    /// The demo rule without `link_kinds`.
    static let demoWithoutLinkKinds = Policy(
        name: "demo",
        sites: [Site(name: "demo", wired: [WiredRule(interfaces: ["sgdemo*"], location: "demo.yaml:6")])])

    /// A Japanese SSID, enterprise or SAE.
    static let japanese = Policy(
        name: "北支所",
        sites: [Site(name: "北支所", wireless: [WirelessRule(ssid: SSID("庁内マイナンバー"), security: [.enterprise, .sae], location: "jp.yaml:8")])])

    /// A legacy Shift_JIS SSID (庁内 = 92 A1 93 E0, not UTF-8) given as ssid_hex, PSK.
    static let legacyAnnex = Policy(
        name: "annex",
        sites: [Site(name: "legacy-annex",
                     wireless: [WirelessRule(ssid: SSID(bytes: [0x92, 0xA1, 0x93, 0xE0]), security: [.psk], bssids: [MAC.annexAP],
                                             location: "annex.yaml:7")])])
}

// MARK: - The table

/// One row of the decision table.
struct DecisionCase: Sendable, CustomTestStringConvertible {
    let name: String
    let interfaces: [InterfaceState]
    var wirelessMonitoring = true
    let policy: Policy
    let segment: Segment
    let reason: String
    let authorized: [String]
    /// Expected status of each non-loopback interface's finding, by interface name.
    let statuses: [String: InterfaceFinding.Status]

    var testDescription: String { name }

    /// The snapshot the case describes.
    var snapshot: NetworkSnapshot { NetworkSnapshot(interfaces: interfaces, generation: 7, wirelessMonitoring: wirelessMonitoring) }
}

// BSSIDs as printed in reasons.
private let ap1 = "02:00:5e:00:53:01"
private let rogue = "02:00:5e:00:53:99"
private let northOffice = "02:00:5e:00:54:11"

let decisionCases: [DecisionCase] = [
    // MARK: Wired
    DecisionCase(
        name: "wired NIC matched by name pattern",
        interfaces: [loopback(), nic("enp1s0", index: 2)], policy: Policies.office,
        segment: .authorizedWired,
        reason: "enp1s0 has carrier and matches site 'main-building' wired rule (policy.yaml:20)",
        authorized: ["enp1s0"], statuses: ["enp1s0": .authorized]),
    DecisionCase(
        name: "wired NIC matched by MAC only",
        interfaces: [loopback(), nic("enx02005e100001", index: 2, mac: MAC.southNIC)], policy: Policies.southMACOnly,
        segment: .authorizedWired,
        reason: "enx02005e100001 has carrier and matches site 'branch-south' wired rule (south.yaml:6)",
        authorized: ["enx02005e100001"], statuses: ["enx02005e100001": .authorized]),
    DecisionCase(
        name: "wired NIC matched by name and MAC",
        interfaces: [loopback(), nic("enp1s0", index: 2, mac: MAC.southSpareNIC)], policy: Policies.southNamedAndPinned,
        segment: .authorizedWired,
        reason: "enp1s0 has carrier and matches site 'branch-south' wired rule (south.yaml:6)",
        authorized: ["enp1s0"], statuses: ["enp1s0": .authorized]),
    DecisionCase(
        name: "wired NIC whose name matches but whose MAC is not listed",
        interfaces: [loopback(), nic("enp1s0", index: 2, mac: MAC.otherNIC)], policy: Policies.southNamedAndPinned,
        segment: .unauthorized,
        reason: "no authorized path: enp1s0 matches the name of site 'branch-south' wired rule (south.yaml:6) but its MAC 02:00:5e:99:99:99 is not listed",
        authorized: [], statuses: ["enp1s0": .rejected]),
    DecisionCase(
        // The rule has no name patterns: saying the name "matches" would send the admin looking
        // for a pattern that does not exist.
        name: "NIC not listed by a MAC-only rule",
        interfaces: [loopback(), nic("enp1s0", index: 2, mac: MAC.otherNIC)], policy: Policies.southMACOnly,
        segment: .unauthorized,
        reason: "no authorized path: enp1s0 MAC 02:00:5e:99:99:99 is not listed in site 'branch-south' wired rule (south.yaml:6)",
        authorized: [], statuses: ["enp1s0": .rejected]),
    DecisionCase(
        name: "veth refused when the rule does not admit the link kind",
        interfaces: [loopback(), virtualLink("sgdemo0", index: 5, linkKind: "veth")], policy: Policies.demoWithoutLinkKinds,
        segment: .unauthorized,
        reason: "no authorized path: sgdemo0 matches site 'demo' wired rule (demo.yaml:6) but is a virtual link (veth), which the rule does not admit",
        authorized: [], statuses: ["sgdemo0": .rejected]),
    DecisionCase(
        name: "veth authorized when link_kinds admits it (the demo)",
        interfaces: [loopback(), virtualLink("sgdemo0", index: 5, linkKind: "veth")], policy: Policies.demo,
        segment: .authorizedWired,
        reason: "sgdemo0 has carrier and matches site 'demo' wired rule (demo-veth.yaml:11)",
        authorized: ["sgdemo0"], statuses: ["sgdemo0": .authorized]),
    DecisionCase(
        name: "a bridge is not admitted by a veth-only rule",
        interfaces: [loopback(), virtualLink("sgdemo-br", index: 5, linkKind: "bridge")], policy: Policies.demo,
        segment: .unauthorized,
        reason: "no authorized path: sgdemo-br matches site 'demo' wired rule (demo-veth.yaml:11) but is a virtual link (bridge), which the rule does not admit",
        authorized: [], statuses: ["sgdemo-br": .rejected]),
    DecisionCase(
        name: "non-Ethernet device named like a NIC",
        interfaces: [loopback(), virtualLink("eth9", index: 3, linkKind: nil)], policy: Policies.office,
        segment: .unauthorized,
        reason: "no authorized path: eth9 matches site 'main-building' wired rule (policy.yaml:20) but is not an Ethernet device, which the rule does not admit",
        authorized: [], statuses: ["eth9": .rejected]),
    DecisionCase(
        name: "wired NIC without carrier (cable unplugged)",
        interfaces: [loopback(), nic("enp1s0", index: 2, carrier: false, oper: .down)], policy: Policies.office,
        segment: .unauthorized,
        reason: "no authorized path: enp1s0 matches site 'main-building' wired rule (policy.yaml:20) but has no carrier",
        authorized: [], statuses: ["enp1s0": .rejected]),
    DecisionCase(
        name: "wired NIC administratively down",
        interfaces: [loopback(), nic("enp1s0", index: 2, adminUp: false, carrier: false, oper: .down)], policy: Policies.office,
        segment: .unauthorized,
        reason: "no authorized path: enp1s0 matches site 'main-building' wired rule (policy.yaml:20) but is down",
        authorized: [], statuses: ["enp1s0": .rejected]),
    DecisionCase(
        name: "wired NIC with carrier but operationally lower-layer-down",
        interfaces: [loopback(), nic("enp1s0", index: 2, oper: .lowerLayerDown)], policy: Policies.office,
        segment: .unauthorized,
        reason: "no authorized path: enp1s0 matches site 'main-building' wired rule (policy.yaml:20) but is lower-layer-down",
        authorized: [], statuses: ["enp1s0": .rejected]),
    DecisionCase(
        name: "wired NIC whose driver reports operstate unknown counts as running",
        interfaces: [loopback(), nic("eth0", index: 2, oper: .unknown)], policy: Policies.office,
        segment: .authorizedWired,
        reason: "eth0 has carrier and matches site 'main-building' wired rule (policy.yaml:20)",
        authorized: ["eth0"], statuses: ["eth0": .authorized]),

    // MARK: Wireless
    DecisionCase(
        name: "Wi-Fi on the authorized SSID, enterprise, pinned access point",
        interfaces: [loopback(), wifi(index: 3, ssid: SSID("mn-office"), bssid: MAC.mainAP1)], policy: Policies.office,
        segment: .authorizedWireless,
        reason: "wlan0 associated to SSID 'mn-office' via BSSID \(ap1) (pinned access point) with enterprise security: site 'main-building' (policy.yaml:12)",
        authorized: ["wlan0"], statuses: ["wlan0": .authorized]),
    DecisionCase(
        name: "Wi-Fi on an SSID without BSSID pinning",
        interfaces: [loopback(), wifi(index: 3, ssid: SSID("mn-office"), bssid: MAC.rogueAP, security: .sae)], policy: Policies.unpinned,
        segment: .authorizedWireless,
        reason: "wlan0 associated to SSID 'mn-office' via BSSID \(rogue) with sae security: site 'main-building' (unpinned.yaml:7)",
        authorized: ["wlan0"], statuses: ["wlan0": .authorized]),
    DecisionCase(
        name: "Wi-Fi on an SSID no site authorizes",
        interfaces: [loopback(), wifi(index: 3, ssid: SSID("guest-wifi"), bssid: MAC.rogueAP, security: .psk)], policy: Policies.office,
        segment: .unauthorized,
        reason: "no authorized path: wlan0 associated to SSID 'guest-wifi', which no site authorizes",
        authorized: [], statuses: ["wlan0": .rejected]),
    DecisionCase(
        name: "Wi-Fi on the authorized SSID with PSK where enterprise is required",
        interfaces: [loopback(), wifi(index: 3, ssid: SSID("mn-office"), bssid: MAC.mainAP1, security: .psk)], policy: Policies.office,
        segment: .unauthorized,
        reason: "no authorized path: wlan0 associated to SSID 'mn-office' with security psk; site 'main-building' (policy.yaml:12) requires enterprise",
        authorized: [], statuses: ["wlan0": .rejected]),
    DecisionCase(
        name: "Wi-Fi with an unrecognised AKM suite",
        interfaces: [loopback(), wifi(index: 3, ssid: SSID("mn-office"), bssid: MAC.rogueAP, security: .unknown)], policy: Policies.unpinned,
        segment: .unauthorized,
        reason: "no authorized path: wlan0 associated to SSID 'mn-office' with security unknown; site 'main-building' (unpinned.yaml:7) requires enterprise or sae",
        authorized: [], statuses: ["wlan0": .rejected]),
    DecisionCase(
        name: "Wi-Fi through an access point outside the allowlist (one site)",
        interfaces: [loopback(), wifi(index: 3, ssid: SSID("mn-office"), bssid: MAC.rogueAP)], policy: Policies.mainOnly,
        segment: .unauthorized,
        reason: "no authorized path: wlan0 associated to SSID 'mn-office' via BSSID \(rogue), not in the office allowlist (site 'main-building')",
        authorized: [], statuses: ["wlan0": .rejected]),
    DecisionCase(
        // Two sites list the SSID: the reason names both, with a plural.
        name: "Wi-Fi through an access point outside the allowlist (two sites)",
        interfaces: [loopback(), wifi(index: 3, ssid: SSID("mn-office"), bssid: MAC.rogueAP)], policy: Policies.office,
        segment: .unauthorized,
        reason: "no authorized path: wlan0 associated to SSID 'mn-office' via BSSID \(rogue), not in the office allowlist (sites 'branch-north', 'main-building')",
        authorized: [], statuses: ["wlan0": .rejected]),
    DecisionCase(
        name: "roaming to a branch access point of the same SSID is authorized by the branch site",
        interfaces: [loopback(), wifi(index: 3, ssid: SSID("mn-office"), bssid: MAC.northOfficeAP)], policy: Policies.office,
        segment: .authorizedWireless,
        reason: "wlan0 associated to SSID 'mn-office' via BSSID \(northOffice) (pinned access point) with enterprise security: site 'branch-north' (policy.yaml:30)",
        authorized: ["wlan0"], statuses: ["wlan0": .authorized]),
    DecisionCase(
        name: "the branch's own SSID through its access point",
        interfaces: [loopback(), wifi(index: 3, ssid: SSID("mn-branch-north"), bssid: MAC.northAP)], policy: Policies.office,
        segment: .authorizedWireless,
        reason: "wlan0 associated to SSID 'mn-branch-north' via BSSID 02:00:5e:00:54:01 (pinned access point) with enterprise security: site 'branch-north' (policy.yaml:27)",
        authorized: ["wlan0"], statuses: ["wlan0": .authorized]),
    DecisionCase(
        name: "the branch's own SSID through a main-building access point",
        interfaces: [loopback(), wifi(index: 3, ssid: SSID("mn-branch-north"), bssid: MAC.mainAP1)], policy: Policies.office,
        segment: .unauthorized,
        reason: "no authorized path: wlan0 associated to SSID 'mn-branch-north' via BSSID \(ap1), not in the office allowlist (site 'branch-north')",
        authorized: [], statuses: ["wlan0": .rejected]),
    DecisionCase(
        name: "hidden network reporting an empty SSID",
        interfaces: [loopback(), wifi(index: 3, ssid: SSID(bytes: []), bssid: MAC.mainAP1)], policy: Policies.office,
        segment: .unauthorized,
        reason: "no authorized path: wlan0 associated to SSID '' (hidden network with empty SSID), which no site authorizes",
        authorized: [], statuses: ["wlan0": .rejected]),
    DecisionCase(
        name: "associated, SSID not read yet",
        interfaces: [loopback(), wifi(index: 3, ssid: nil, bssid: MAC.mainAP1)], policy: Policies.office,
        segment: .unauthorized,
        reason: "no authorized path: wlan0 is associated via BSSID \(ap1) but its SSID is not known yet",
        authorized: [], statuses: ["wlan0": .rejected]),
    DecisionCase(
        name: "non-UTF-8 SSID authorized through ssid_hex",
        interfaces: [loopback(), wifi(index: 3, ssid: SSID(bytes: [0x92, 0xA1, 0x93, 0xE0]), bssid: MAC.annexAP, security: .psk)],
        policy: Policies.legacyAnnex,
        segment: .authorizedWireless,
        reason: #"wlan0 associated to SSID '\x92\xa1\x93\xe0' via BSSID 02:00:5e:00:55:01 (pinned access point) with psk security: site 'legacy-annex' (annex.yaml:7)"#,
        authorized: ["wlan0"], statuses: ["wlan0": .authorized]),
    DecisionCase(
        name: "non-UTF-8 SSID no site authorizes is printed escaped",
        interfaces: [loopback(), wifi(index: 3, ssid: SSID(bytes: Array("mn-office".utf8) + [0xFF, 0x0A]), bssid: MAC.mainAP1)],
        policy: Policies.office,
        segment: .unauthorized,
        reason: #"no authorized path: wlan0 associated to SSID 'mn-office\xff\x0a', which no site authorizes"#,
        authorized: [], statuses: ["wlan0": .rejected]),
    DecisionCase(
        name: "Japanese SSID with SAE",
        interfaces: [loopback(), wifi("wlp2s0", index: 3, ssid: SSID("庁内マイナンバー"), bssid: MAC.northAP, security: .sae)],
        policy: Policies.japanese,
        segment: .authorizedWireless,
        reason: "wlp2s0 associated to SSID '庁内マイナンバー' via BSSID 02:00:5e:00:54:01 with sae security: site '北支所' (jp.yaml:8)",
        authorized: ["wlp2s0"], statuses: ["wlp2s0": .authorized]),
    DecisionCase(
        // 802.1X still running: the kernel keeps the link dormant until the supplicant is done.
        name: "Wi-Fi associated but dormant",
        interfaces: [loopback(), wifi(index: 3, ssid: SSID("mn-office"), bssid: MAC.mainAP1, oper: .dormant, routes: [])],
        policy: Policies.office,
        segment: .unauthorized,
        reason: "no authorized path: wlan0 associated to SSID 'mn-office' via BSSID \(ap1) but is dormant (authentication not complete)",
        authorized: [], statuses: ["wlan0": .rejected]),
    DecisionCase(
        name: "Wi-Fi not associated",
        interfaces: [loopback(), wifiDisconnected(index: 3)], policy: Policies.office,
        segment: .unauthorized,
        reason: "no authorized path: no interface matches a wired rule and no Wi-Fi is associated to an authorized SSID",
        authorized: [], statuses: ["wlan0": .irrelevant]),

    // MARK: Other uplinks
    DecisionCase(
        name: "USB tethering with a default route while on the wired segment",
        interfaces: [loopback(), nic("enp1s0", index: 2), nic("usb0", index: 9, routes: [v4Default(via: "192.0.2.129", metric: 100)])],
        policy: Policies.office,
        segment: .unauthorized,
        reason: "usb0 (wired) is a second uplink (default route 0.0.0.0/0 via 192.0.2.129 metric 100) while on the My Number segment via enp1s0 (uplinks.other_uplinks: deny)",
        authorized: [], statuses: ["enp1s0": .authorized, "usb0": .conflictingUplink]),
    DecisionCase(
        name: "mobile modem (raw IP, IPv6 route) while on the wireless segment",
        interfaces: [
            loopback(), wifi(index: 3, ssid: SSID("mn-office"), bssid: MAC.mainAP1),
            virtualLink("wwan0", index: 4, linkKind: nil, routes: [DefaultRoute(family: .ipv6, gateway: ip("fe80::1"), metric: 1024)]),
        ],
        policy: Policies.office,
        segment: .unauthorized,
        reason: "wwan0 (virtual) is a second uplink (default route ::/0 via fe80::1 metric 1024) while on the My Number segment via wlan0 (uplinks.other_uplinks: deny)",
        authorized: [], statuses: ["wlan0": .authorized, "wwan0": .conflictingUplink]),
    DecisionCase(
        name: "guest Wi-Fi with a default route while on the wired segment",
        interfaces: [loopback(), nic("enp1s0", index: 2), wifi(index: 3, ssid: SSID("guest-wifi"), bssid: MAC.rogueAP, security: .psk)],
        policy: Policies.office,
        segment: .unauthorized,
        reason: "wlan0 (wireless) is a second uplink (default route 0.0.0.0/0 via 192.0.2.65 metric 600) while on the My Number segment via enp1s0 (uplinks.other_uplinks: deny)",
        authorized: [], statuses: ["enp1s0": .authorized, "wlan0": .conflictingUplink]),
    DecisionCase(
        name: "an ignored interface with a default route is not a second uplink",
        interfaces: [loopback(), nic("enp1s0", index: 2), virtualLink("virbr0", index: 6, linkKind: "bridge")],
        policy: Policies.office,
        segment: .authorizedWired,
        reason: "enp1s0 has carrier and matches site 'main-building' wired rule (policy.yaml:20)",
        authorized: ["enp1s0"], statuses: ["enp1s0": .authorized, "virbr0": .irrelevant]),
    DecisionCase(
        name: "an interface without a default route is not a second uplink",
        interfaces: [loopback(), nic("enp1s0", index: 2), nic("usb0", index: 9, routes: [])],
        policy: Policies.office,
        segment: .authorizedWired,
        reason: "enp1s0 has carrier and matches site 'main-building' wired rule (policy.yaml:20)",
        authorized: ["enp1s0"], statuses: ["enp1s0": .authorized, "usb0": .irrelevant]),
    DecisionCase(
        name: "other_uplinks: allow tolerates the tether",
        interfaces: [loopback(), nic("enp1s0", index: 2), nic("usb0", index: 9, routes: [v4Default(via: "192.0.2.129")])],
        policy: Policies.officeAllowingUplinks,
        segment: .authorizedWired,
        reason: "enp1s0 has carrier and matches site 'main-building' wired rule (policy.yaml:20)",
        authorized: ["enp1s0"], statuses: ["enp1s0": .authorized, "usb0": .irrelevant]),

    // MARK: Wired and wireless together
    DecisionCase(
        // wlan0 has the lower ifindex; the wired path still comes first.
        name: "wired and wireless both authorized: wired segment, wired listed first",
        interfaces: [loopback(), wifi(index: 2, ssid: SSID("mn-office"), bssid: MAC.mainAP1), nic("enp1s0", index: 3)],
        policy: Policies.office,
        segment: .authorizedWired,
        reason: "enp1s0 has carrier and matches site 'main-building' wired rule (policy.yaml:20); wlan0 associated to SSID 'mn-office' via BSSID \(ap1) (pinned access point) with enterprise security: site 'main-building' (policy.yaml:12)",
        authorized: ["enp1s0", "wlan0"], statuses: ["wlan0": .authorized, "enp1s0": .authorized]),
    DecisionCase(
        // The cable is pulled (its stale default route stays) and the client stays on Wi-Fi.
        name: "cable unplugged, Wi-Fi authorized: wireless segment",
        interfaces: [loopback(), nic("enp1s0", index: 2, carrier: false, oper: .down), wifi(index: 3, ssid: SSID("mn-office"), bssid: MAC.mainAP1)],
        policy: Policies.office,
        segment: .authorizedWireless,
        reason: "wlan0 associated to SSID 'mn-office' via BSSID \(ap1) (pinned access point) with enterprise security: site 'main-building' (policy.yaml:12)",
        authorized: ["wlan0"], statuses: ["enp1s0": .rejected, "wlan0": .authorized]),
    DecisionCase(
        name: "two office NICs both authorized: both listed, neither is a second uplink",
        interfaces: [loopback(), nic("enp1s0", index: 2), nic("eth1", index: 4, routes: [v4Default(via: "192.0.2.1", metric: 200)])],
        policy: Policies.office,
        segment: .authorizedWired,
        reason: "enp1s0 has carrier and matches site 'main-building' wired rule (policy.yaml:20); eth1 has carrier and matches site 'main-building' wired rule (policy.yaml:20)",
        authorized: ["enp1s0", "eth1"], statuses: ["enp1s0": .authorized, "eth1": .authorized]),
    DecisionCase(
        name: "cable plugged, Wi-Fi disconnected: wired segment",
        interfaces: [loopback(), nic("enp1s0", index: 2), wifiDisconnected(index: 3)],
        policy: Policies.office,
        segment: .authorizedWired,
        reason: "enp1s0 has carrier and matches site 'main-building' wired rule (policy.yaml:20)",
        authorized: ["enp1s0"], statuses: ["enp1s0": .authorized, "wlan0": .irrelevant]),
    DecisionCase(
        name: "cable unplugged and Wi-Fi on the wrong access point: both reasons given",
        interfaces: [loopback(), nic("enp1s0", index: 2, carrier: false, oper: .down), wifi(index: 3, ssid: SSID("mn-office"), bssid: MAC.rogueAP)],
        policy: Policies.office,
        segment: .unauthorized,
        reason: "no authorized path: enp1s0 matches site 'main-building' wired rule (policy.yaml:20) but has no carrier; wlan0 associated to SSID 'mn-office' via BSSID \(rogue), not in the office allowlist (sites 'branch-north', 'main-building')",
        authorized: [], statuses: ["enp1s0": .rejected, "wlan0": .rejected]),

    // MARK: Nothing to go on
    DecisionCase(
        name: "no interfaces at all",
        interfaces: [], policy: Policies.office,
        segment: .unauthorized,
        reason: "no authorized path: no network interface besides loopback",
        authorized: [], statuses: [:]),
    DecisionCase(
        name: "loopback only",
        interfaces: [loopback()], policy: Policies.office,
        segment: .unauthorized,
        reason: "no authorized path: no network interface besides loopback",
        authorized: [], statuses: [:]),
    DecisionCase(
        name: "only interfaces no rule mentions",
        interfaces: [loopback(), virtualLink("docker0", index: 4, linkKind: "bridge", routes: []), nic("usb0", index: 9)],
        policy: Policies.office,
        segment: .unauthorized,
        reason: "no authorized path: no interface matches a wired rule and no Wi-Fi is associated to an authorized SSID",
        authorized: [], statuses: ["docker0": .irrelevant, "usb0": .irrelevant]),
    DecisionCase(
        name: "wireless monitoring unavailable and no wired path",
        interfaces: [loopback(), InterfaceState(index: 3, name: "wlan0", kind: .wireless, operState: .up)],
        wirelessMonitoring: false, policy: Policies.office,
        segment: .unauthorized,
        reason: "no authorized path: no interface matches a wired rule and Wi-Fi is not monitored (no nl80211)",
        authorized: [], statuses: ["wlan0": .irrelevant]),
    DecisionCase(
        name: "wireless monitoring unavailable does not stop the wired path",
        interfaces: [loopback(), nic("enp1s0", index: 2)],
        wirelessMonitoring: false, policy: Policies.office,
        segment: .authorizedWired,
        reason: "enp1s0 has carrier and matches site 'main-building' wired rule (policy.yaml:20)",
        authorized: ["enp1s0"], statuses: ["enp1s0": .authorized]),
]

// MARK: - Tests

@Suite("SegmentDecider")
struct SegmentDecisionTests {
    @Test("decision table", arguments: decisionCases)
    func decide(_ c: DecisionCase) {
        let d = SegmentDecider.decide(c.snapshot, c.policy)
        #expect(d.segment == c.segment)
        #expect(d.reason == c.reason)
        #expect(d.authorizedInterfaces == c.authorized)
        #expect(d.isAuthorized == (c.segment != .unauthorized))
        // One finding per non-loopback interface, in ifindex order, with the expected status.
        let expectedNames = c.snapshot.interfaces.filter { $0.kind != .loopback }.map(\.name)
        #expect(d.findings.map(\.interface) == expectedNames)
        #expect(Dictionary(uniqueKeysWithValues: d.findings.map { ($0.interface, $0.status) }) == c.statuses)
    }

    @Test("case names are unique")
    func uniqueNames() {
        #expect(Set(decisionCases.map(\.name)).count == decisionCases.count)
    }

    @Test("the same inputs always give the same decision")
    func deterministic() {
        for c in decisionCases {
            #expect(SegmentDecider.decide(c.snapshot, c.policy) == SegmentDecider.decide(c.snapshot, c.policy), "\(c.name)")
        }
    }

    @Test("findings name the deciding site")
    func findingSites() {
        let roam = SegmentDecider.decide(
            NetworkSnapshot(interfaces: [wifi(index: 3, ssid: SSID("mn-office"), bssid: MAC.northOfficeAP)]), Policies.office)
        #expect(roam.findings.map(\.site) == ["branch-north"])
        let wrongSecurity = SegmentDecider.decide(
            NetworkSnapshot(interfaces: [wifi(index: 3, ssid: SSID("mn-office"), bssid: MAC.mainAP1, security: .psk)]), Policies.office)
        #expect(wrongSecurity.findings.map(\.site) == ["main-building"])
        let guest = SegmentDecider.decide(
            NetworkSnapshot(interfaces: [wifi(index: 3, ssid: SSID("guest-wifi"), bssid: MAC.rogueAP)]), Policies.office)
        #expect(guest.findings.map(\.site) == [nil])
    }

    @Test("a conflicting uplink's finding carries the uplink detail")
    func conflictFinding() {
        let d = SegmentDecider.decide(
            NetworkSnapshot(interfaces: [nic("enp1s0", index: 2), nic("usb0", index: 9, routes: [v4Default(via: "192.0.2.129")])]),
            Policies.office)
        let usb = d.findings.first { $0.interface == "usb0" }
        #expect(usb == InterfaceFinding(interface: "usb0", status: .conflictingUplink,
                                        detail: "usb0 (wired) is a second uplink (default route 0.0.0.0/0 via 192.0.2.129)"))
    }

    @Test("fail-closed decision")
    func failClosed() {
        let d = Decision.failClosed("no policy loaded")
        #expect(d.segment == .unauthorized)
        #expect(!d.isAuthorized)
        #expect(d.reason == "no policy loaded")
        #expect(d.authorizedInterfaces.isEmpty)
        #expect(d.findings.isEmpty)
    }

    @Test("segment names as shown to admins")
    func segmentNames() {
        #expect(Segment.allCases.map(\.rawValue) == ["authorized-wired", "authorized-wireless", "unauthorized"])
    }
}

// MARK: - State files (segguardctl simulate)

@Suite("State files reproduce the decision table")
struct StateFileTests {
    @Test("every decision-table case, written as a state file and read back, decides the same", arguments: decisionCases)
    func roundTrip(_ c: DecisionCase) throws {
        let text = StateFile.render(c.snapshot)
        let back = try StateFile.load(text: text, file: "\(c.name).yaml")
        let d = SegmentDecider.decide(back, c.policy)
        #expect(d.segment == c.segment, "state file:\n\(text)")
        #expect(d.reason == c.reason)
        #expect(d.authorizedInterfaces == c.authorized)
        #expect(Dictionary(uniqueKeysWithValues: d.findings.map { ($0.interface, $0.status) }) == c.statuses)
        // The interfaces themselves come back as they were (the generation is not part of a state).
        #expect(back.interfaces == c.snapshot.interfaces)
    }

    @Test("the identity cases round-trip too: neighbours, wide routes, server chain, probe results, a stale 802.1X state")
    func identityRoundTrip() throws {
        var port = Identity.port(neighbours: [("10.20.0.1", Identity.officeRouter)],
                                 routes: [v4Default(via: "10.20.0.1"), DefaultRoute(family: .ipv4, gateway: ip("10.20.0.99"), table: 100, destination: IPPrefix("128.0.0.0/1"))])
        port.deviceAuth = NetworkIdentityDecisionTests.authed([NetworkIdentityDecisionTests.serverCert, NetworkIdentityDecisionTests.serverCA])
        port.deviceAuth?.successes = 0
        port.deviceAuth?.predatesLinkLoss = true
        port.trustedServers = [TrustedServerResult(server: "10.20.0.5:443", proven: false, detail: "timed out \"after\" 2 s")]
        let snapshot = NetworkSnapshot(interfaces: [loopback(), port], generation: 1)
        let back = try StateFile.load(text: StateFile.render(snapshot), file: "identity.yaml")
        #expect(back.interfaces == snapshot.interfaces)
    }

    @Test("a bad state file is refused with every mistake located")
    func badState() {
        let text = """
            interfaces:
              - name: enp1s0
                kind: wird
                addresses: [10.20.3.4]
                routes: [{to: 10.0.0.0/8, via: 10.20.0.1}]
                neighbours: [{address: 10.20.0.1, mac: "02:00"}]
                colour: blue
            """
        do {
            _ = try StateFile.load(text: text, file: "bad.yaml")
            Issue.record("accepted")
        } catch {
            let lines = error.issues.map { "\($0.line):\($0.path)" }
            #expect(lines == ["3:interfaces[0].kind", "4:interfaces[0].addresses[0]", "5:interfaces[0].routes[0].to", "6:interfaces[0].neighbours[0].mac", "7:interfaces[0].colour"], "\(error)")
        }
    }
}
