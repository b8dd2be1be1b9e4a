// End-to-end tests of NetworkState: raw rtnetlink and nl80211 messages, built with libnl,
// fed through `handleRoute` / `handleWireless` exactly as the watcher's sockets feed them,
// checked on the `[InterfaceState]` that `interfaces()` produces. Owns only its builders.

import CLibNL
import SegguardPolicy
import Testing

@testable import SegguardNetlink

// MARK: - Test-only message builders

/// Builds rtnetlink and generic-netlink messages with libnl.
private enum ChainMsg {
    /// The made-up nl80211 family id the state is configured with.
    static let family: Int32 = 0x1c

    /// Calls `body` with an rtnetlink message of `type`: fixed header `header`, then `attrs`.
    static func rtnl<H, R>(
        _ type: Int32, _ header: H, _ attrs: [TestAttr], _ body: (UnsafeMutablePointer<nlmsghdr>) throws -> R
    ) rethrows -> R {
        let msg = nlmsg_alloc_simple(type, 0)!
        defer { nlmsg_free(msg) }
        var h = header
        let rc = withUnsafeMutableBytes(of: &h) { nlmsg_append(msg, $0.baseAddress, $0.count, 4) }
        #expect(rc == 0)
        putAttributes(msg, attrs)
        return try body(nlmsg_hdr(msg))
    }

    /// Calls `body` with a generic-netlink message of family `family` and nl80211 command `command`.
    static func genl<R>(
        _ command: nl80211_commands, _ attrs: [TestAttr], family: Int32 = family,
        _ body: (UnsafeMutablePointer<nlmsghdr>) throws -> R
    ) rethrows -> R {
        let msg = nlmsg_alloc()!
        defer { nlmsg_free(msg) }
        #expect(genlmsg_put(msg, 0, 0, family, 0, 0, UInt8(command.rawValue), 0) != nil)
        putAttributes(msg, attrs)
        return try body(nlmsg_hdr(msg))
    }

    static func a(_ x: nl80211_attrs) -> Int32 { Int32(x.rawValue) }
    static func b(_ x: nl80211_bss) -> Int32 { Int32(x.rawValue) }

    /// RTM_NEWLINK attributes of an Ethernet-type link that is up with carrier.
    static func linkAttrs(name: String, mac: [UInt8], operstate: UInt8 = 6, carrier: UInt8 = 1) -> [TestAttr] {
        [
            .string(Int32(IFLA_IFNAME), name), .u32(Int32(IFLA_TXQLEN), 1000), .u8(Int32(IFLA_OPERSTATE), operstate),
            .u8(Int32(IFLA_LINKMODE), 1), .u32(Int32(IFLA_MTU), 1500), .u8(Int32(IFLA_CARRIER), carrier),
            .bytes(Int32(IFLA_ADDRESS), mac), .bytes(Int32(IFLA_BROADCAST), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        ]
    }

    /// An `ifinfomsg` for an Ethernet-type (ARPHRD_ETHER) link.
    static func ifinfo(_ index: Int32, up: Bool) -> ifinfomsg {
        var h = ifinfomsg()
        h.ifi_family = UInt8(AF_UNSPEC)
        h.ifi_type = UInt16(ARPHRD_ETHER)
        h.ifi_index = index
        h.ifi_flags =
            up
            ? IFF_UP.rawValue | IFF_BROADCAST.rawValue | IFF_RUNNING.rawValue | IFF_MULTICAST.rawValue | IFF_LOWER_UP.rawValue
            : IFF_BROADCAST.rawValue | IFF_MULTICAST.rawValue
        return h
    }

    /// An `ifaddrmsg` for a global IPv4 address.
    static func ifaddr(_ index: UInt32, prefix: UInt8) -> ifaddrmsg {
        var h = ifaddrmsg()
        h.ifa_family = UInt8(AF_INET)
        h.ifa_prefixlen = prefix
        h.ifa_index = index
        return h
    }

    /// An `rtmsg` for an IPv4 unicast default route in the main table.
    static func defaultRoute() -> rtmsg {
        var h = rtmsg()
        h.rtm_family = UInt8(AF_INET)
        h.rtm_table = UInt8(RT_TABLE_MAIN.rawValue)
        h.rtm_protocol = 16  // RTPROT_DHCP
        h.rtm_type = UInt8(RTN_UNICAST)
        return h
    }

    /// A GET_SCAN dump reply (NEW_SCAN_RESULTS) with one BSS.
    static func bssAttrs(ifindex: UInt32, bssid: [UInt8], frequency: UInt32, status: UInt32?, ies: [UInt8]) -> [TestAttr] {
        var inner: [TestAttr] = [
            .bytes(b(NL80211_BSS_BSSID), bssid), .u32(b(NL80211_BSS_FREQUENCY), frequency),
            .u16(b(NL80211_BSS_CAPABILITY), 0x0411), .bytes(b(NL80211_BSS_INFORMATION_ELEMENTS), ies),
        ]
        if let status { inner.append(.u32(b(NL80211_BSS_STATUS), status)) }
        return [.u32(a(NL80211_ATTR_IFINDEX), ifindex), .nested(a(NL80211_ATTR_BSS), inner)]
    }

    /// An SSID element followed by an RSN element (CCMP) advertising the given AKM suites.
    static func ies(ssid: String, akms: [UInt32]) -> [UInt8] {
        func suite(_ s: UInt32) -> [UInt8] { [UInt8(s >> 24), UInt8(s >> 16 & 0xff), UInt8(s >> 8 & 0xff), UInt8(s & 0xff)] }
        let rsn: [UInt8] = [1, 0] + suite(0x000F_AC04) + [1, 0] + suite(0x000F_AC04) + [UInt8(akms.count), 0]
            + akms.flatMap(suite) + [0, 0]
        return [0, UInt8(ssid.utf8.count)] + Array(ssid.utf8) + [48, UInt8(rsn.count)] + rsn
    }
}

private let dot1x: UInt32 = 0x000F_AC01
private let psk: UInt32 = 0x000F_AC02
private let wlanMAC: [UInt8] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x03]
private let apA: [UInt8] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]
private let apB: [UInt8] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x66]
private let neighbour: [UInt8] = [0x0a, 0x99, 0x99, 0x99, 0x99, 0x01]
private let officeSSID = "MyNumber-Office"
private let address = InterfaceAddress(address: IPAddress("192.168.10.23")!, prefixLength: 24)
private let route = DefaultRoute(family: .ipv4, gateway: IPAddress("192.168.10.1"), metric: 600, table: 254)

/// The wlan0 (ifindex 3) NEW_INTERFACE attributes: a station associated to `officeSSID`.
private func wlan0Interface(ssid: String? = officeSSID, frequency: UInt32? = 5180) -> [TestAttr] {
    var attrs: [TestAttr] = [
        .u32(ChainMsg.a(NL80211_ATTR_WIPHY), 0), .u32(ChainMsg.a(NL80211_ATTR_IFINDEX), 3),
        .string(ChainMsg.a(NL80211_ATTR_IFNAME), "wlan0"), .u32(ChainMsg.a(NL80211_ATTR_IFTYPE), 2),
    ]
    if let ssid { attrs.append(.bytes(ChainMsg.a(NL80211_ATTR_SSID), Array(ssid.utf8))) }
    if let frequency { attrs.append(.u32(ChainMsg.a(NL80211_ATTR_WIPHY_FREQ), frequency)) }
    return attrs
}

/// wlan0 as `interfaces()` should show it, with the given association.
private func wlan0State(_ wireless: WirelessLink?, kind: InterfaceKind = .wireless) -> InterfaceState {
    InterfaceState(
        index: 3, name: "wlan0", kind: kind, linkKind: nil, mac: MACAddress(bytes: wlanMAC), isAdminUp: true,
        operState: .up, hasCarrier: true, addresses: [address], defaultRoutes: [route], wireless: wireless)
}

private func associated(_ bssid: [UInt8], _ frequency: UInt32) -> WirelessLink {
    WirelessLink(
        ssid: SSID(officeSSID), bssid: MACAddress(bytes: bssid), frequencyMHz: frequency, security: .enterprise,
        akmSuites: [dot1x])
}

/// Feeds wlan0's RTM_NEWLINK (ifindex 3, up), its address and its default route.
private func feedWlan0Link(_ state: inout NetworkState) throws {
    try ChainMsg.rtnl(Int32(RTM_NEWLINK), ChainMsg.ifinfo(3, up: true), ChainMsg.linkAttrs(name: "wlan0", mac: wlanMAC)) {
        try state.handleRoute($0)
    }
    try ChainMsg.rtnl(
        Int32(RTM_NEWADDR), ChainMsg.ifaddr(3, prefix: 24),
        [.bytes(Int32(IFA_ADDRESS), [192, 168, 10, 23]), .bytes(Int32(IFA_LOCAL), [192, 168, 10, 23])]
    ) { try state.handleRoute($0) }
    try ChainMsg.rtnl(
        Int32(RTM_NEWROUTE), ChainMsg.defaultRoute(),
        [
            .u32(Int32(RTA_TABLE.rawValue), 254), .u32(Int32(RTA_PRIORITY.rawValue), 600),
            .bytes(Int32(RTA_GATEWAY.rawValue), [192, 168, 10, 1]), .u32(Int32(RTA_OIF.rawValue), 3),
        ]
    ) { try state.handleRoute($0) }
}

/// Feeds one nl80211 message; returns the re-reads it calls for.
private func feed(
    _ state: inout NetworkState, _ command: nl80211_commands, _ attrs: [TestAttr], family: Int32 = ChainMsg.family
) throws -> [WirelessReadRequest] {
    try ChainMsg.genl(command, attrs, family: family) { try state.handleWireless($0) }
}

/// Feeds a complete GET_SCAN dump for wlan0, bracketed as the watcher brackets it.
private func feedScanDump(_ state: inout NetworkState, _ replies: [[TestAttr]]) throws {
    state.wireless.beginScanDump(ifindex: 3)
    for r in replies { #expect(try feed(&state, NL80211_CMD_NEW_SCAN_RESULTS, r) == []) }
    state.wireless.endScanDump(ifindex: 3)
}

/// The state with wlan0 associated to AP A (802.1X) at 5180 MHz.
private func associatedState() throws -> NetworkState {
    var state = NetworkState(nl80211Family: ChainMsg.family)
    try feedWlan0Link(&state)
    _ = try feed(&state, NL80211_CMD_NEW_INTERFACE, wlan0Interface())
    try feedScanDump(
        &state,
        [ChainMsg.bssAttrs(ifindex: 3, bssid: apA, frequency: 5180, status: 1, ies: ChainMsg.ies(ssid: officeSSID, akms: [dot1x]))])
    #expect(state.interfaces() == [wlan0State(associated(apA, 5180))])
    return state
}

/// The error `body` throws, or nil (recording an issue) when it does not throw.
private func thrown<R>(_ body: () throws -> R) -> NetlinkParseError? {
    do {
        let r = try body()
        Issue.record("expected an error, got \(r)")
        return nil
    } catch let e as NetlinkParseError {
        return e
    } catch {
        Issue.record("unexpected error \(error)")
        return nil
    }
}

// MARK: - Tests

@Suite struct NetworkStateChainTests {
    @Test func associationRoamAndDisconnect() throws {
        var state = NetworkState(nl80211Family: ChainMsg.family)
        try feedWlan0Link(&state)
        // rtnetlink alone: an Ethernet-type link; only the sysfs DEVTYPE fallback says wlan.
        #expect(state.interfaces() == [wlan0State(nil, kind: .wired)])
        #expect(state.interfaces(deviceType: { $0.name == "wlan0" ? "wlan" : nil }) == [wlan0State(.disconnected)])

        // nl80211 NEW_INTERFACE with an SSID: wireless now, but not associated until the scan
        // dump names the BSS (it alone carries the security), which is requested.
        #expect(try feed(&state, NL80211_CMD_NEW_INTERFACE, wlan0Interface()) == [.scan(ifindex: 3)])
        #expect(state.interfaces() == [wlan0State(.disconnected)])

        // The scan dump: a neighbouring PSK network, then the associated 802.1X BSS.
        try feedScanDump(
            &state,
            [
                ChainMsg.bssAttrs(
                    ifindex: 3, bssid: neighbour, frequency: 2412, status: nil, ies: ChainMsg.ies(ssid: "guest", akms: [psk])),
                ChainMsg.bssAttrs(
                    ifindex: 3, bssid: apA, frequency: 5180, status: 1, ies: ChainMsg.ies(ssid: officeSSID, akms: [dot1x])),
            ])
        let first = state.interfaces()
        #expect(first == [wlan0State(associated(apA, 5180))])
        #expect(first.first?.wireless?.security == .enterprise)
        #expect(first.first?.wireless?.bssid?.description == "02:11:22:33:44:55")
        #expect(first.first?.isRunning == true)
        #expect(first.first?.isUplink == true)

        // ROAM to AP B: re-read the interface, the scan results and the new AP's signal; until then AP A stays.
        let roam = try feed(
            &state, NL80211_CMD_ROAM, [.u32(ChainMsg.a(NL80211_ATTR_IFINDEX), 3), .bytes(ChainMsg.a(NL80211_ATTR_MAC), apB)])
        #expect(roam == [.interfaces, .scan(ifindex: 3), .station(ifindex: 3)])
        #expect(state.interfaces() == [wlan0State(associated(apA, 5180))])

        // The interface dump (new channel), then the scan dump: A no longer associated, B is.
        state.wireless.beginInterfaceDump()
        #expect(try feed(&state, NL80211_CMD_NEW_INTERFACE, wlan0Interface(frequency: 5500)) == [])
        state.wireless.endInterfaceDump()
        try feedScanDump(
            &state,
            [
                ChainMsg.bssAttrs(ifindex: 3, bssid: apA, frequency: 5180, status: nil, ies: ChainMsg.ies(ssid: officeSSID, akms: [dot1x])),
                ChainMsg.bssAttrs(
                    ifindex: 3, bssid: apB, frequency: 5500, status: 1, ies: ChainMsg.ies(ssid: officeSSID, akms: [dot1x])),
            ])
        #expect(state.interfaces() == [wlan0State(associated(apB, 5500))])

        // DISCONNECT clears the association at once, before any dump.
        let disconnect = try feed(
            &state, NL80211_CMD_DISCONNECT,
            [
                .u32(ChainMsg.a(NL80211_ATTR_IFINDEX), 3), .bytes(ChainMsg.a(NL80211_ATTR_MAC), apB),
                .u16(ChainMsg.a(NL80211_ATTR_REASON_CODE), 3),
            ])
        #expect(disconnect == [.interfaces])
        #expect(state.interfaces() == [wlan0State(.disconnected)])
        #expect(state.interfaces().first?.wireless?.ssid == nil)
        #expect(state.interfaces().first?.wireless?.isAssociated == false)

        // The requested interface dump reports no SSID: nothing more to read, still disconnected.
        state.wireless.beginInterfaceDump()
        #expect(try feed(&state, NL80211_CMD_NEW_INTERFACE, wlan0Interface(ssid: nil, frequency: nil)) == [])
        state.wireless.endInterfaceDump()
        #expect(state.interfaces() == [wlan0State(.disconnected)])
    }

    @Test func nl80211InterfaceBeforeItsLink() throws {
        // nl80211 may report wlan0 before rtnetlink does; it is listed once the link arrives.
        var state = NetworkState(nl80211Family: ChainMsg.family)
        #expect(try feed(&state, NL80211_CMD_NEW_INTERFACE, wlan0Interface(ssid: nil)) == [])
        #expect(state.interfaces() == [])
        #expect(state.wireless.wirelessIfindexes == [3])
        try feedWlan0Link(&state)
        #expect(state.interfaces() == [wlan0State(.disconnected)])
    }

    @Test func adminDownThroughHandleRouteClearsTheDefaultRoute() throws {
        var state = try associatedState()
        try ChainMsg.rtnl(
            Int32(RTM_NEWLINK), ChainMsg.ifinfo(3, up: false), ChainMsg.linkAttrs(name: "wlan0", mac: wlanMAC, operstate: 2, carrier: 0)
        ) { try state.handleRoute($0) }
        let iface = state.interfaces().first
        #expect(iface?.defaultRoutes == [])
        #expect(iface?.addresses == [address])
        #expect(iface?.isAdminUp == false)
        #expect(iface?.operState == .down)
        #expect(iface?.isRunning == false)
        // nl80211 has not said anything yet: the association is still the last one known.
        #expect(iface?.wireless == associated(apA, 5180))
    }

    @Test func otherGenlFamilyIsIgnored() throws {
        var state = try associatedState()
        let before = state.interfaces()
        // nlctrl (0x10) and another family, carrying what would be an nl80211 DISCONNECT.
        for other: Int32 in [0x10, 0x1d] {
            let r = try feed(&state, NL80211_CMD_DISCONNECT, [.u32(ChainMsg.a(NL80211_ATTR_IFINDEX), 3)], family: other)
            #expect(r == [])
        }
        // Even a message nl80211 would refuse is not parsed when it is not nl80211's.
        #expect(try feed(&state, NL80211_CMD_NEW_INTERFACE, [], family: 0x1d) == [])
        #expect(state.interfaces() == before)
        #expect(state.wireless.link(for: 3) == associated(apA, 5180))
    }

    @Test func malformedNL80211MessageThrowsAndChangesNothing() throws {
        var state = try associatedState()
        let before = state.interfaces()
        let routes = state.routes

        // A DISCONNECT without its interface: not applied, so the association stays.
        let missing = thrown { try feed(&state, NL80211_CMD_DISCONNECT, [.bytes(ChainMsg.a(NL80211_ATTR_MAC), apA)]) }
        #expect(missing?.description == "NL80211_CMD_DISCONNECT: NL80211_ATTR_IFINDEX: missing")

        // A scan result whose BSSID is 4 bytes.
        let bad = thrown {
            try feed(
                &state, NL80211_CMD_NEW_SCAN_RESULTS,
                ChainMsg.bssAttrs(ifindex: 3, bssid: [1, 2, 3, 4], frequency: 5180, status: 1, ies: ChainMsg.ies(ssid: "x", akms: [psk])))
        }
        #expect(bad?.description == "NL80211_CMD_NEW_SCAN_RESULTS: NL80211_BSS_BSSID: 4 bytes, a MAC address has 6")

        // An SSID longer than 32 bytes on the interface.
        let long = thrown { try feed(&state, NL80211_CMD_NEW_INTERFACE, wlan0Interface(ssid: String(repeating: "m", count: 33))) }
        #expect(long?.description == "NL80211_CMD_NEW_INTERFACE: NL80211_ATTR_SSID: 33 bytes, an SSID has at most 32")

        #expect(state.interfaces() == before)
        #expect(state.routes == routes)
        #expect(state.wireless.interface(3)?.ssid == SSID(officeSSID))
        #expect(state.wireless.interface(3)?.frequencyMHz == 5180)
    }

    @Test func malformedRtnetlinkMessageThrowsAndChangesNothing() throws {
        var state = try associatedState()
        let routes = state.routes
        // A multipath default route whose first hop (via wlan0) is sound and second overruns:
        // no hop is applied.
        let hop1: [UInt8] = [16, 0, 0, 0, 3, 0, 0, 0, 8, 0, UInt8(RTA_GATEWAY.rawValue), 0, 192, 168, 10, 254]
        let hop2: [UInt8] = [40, 0, 0, 0, 4, 0, 0, 0]
        let e = thrown {
            try ChainMsg.rtnl(Int32(RTM_NEWROUTE), ChainMsg.defaultRoute(), [.bytes(Int32(RTA_MULTIPATH.rawValue), hop1 + hop2)]) {
                try state.handleRoute($0)
            }
        }
        #expect(e?.description == "RTM_NEWROUTE: RTA_MULTIPATH: next hop at offset 16 has length 40, 8 bytes left")
        // An RTM_NEWLINK for wlan0 with an empty name.
        let n = thrown {
            try ChainMsg.rtnl(Int32(RTM_NEWLINK), ChainMsg.ifinfo(3, up: false), ChainMsg.linkAttrs(name: "", mac: wlanMAC)) {
                try state.handleRoute($0)
            }
        }
        #expect(n?.description == "RTM_NEWLINK: IFLA_IFNAME: missing or empty for ifindex 3")
        #expect(state.routes == routes)
        #expect(state.interfaces() == [wlan0State(associated(apA, 5180))])
    }

    @Test func withoutNL80211EveryGenlMessageIsIgnored() throws {
        // NetworkState() (family -1): the kernel has no nl80211, so nothing on the generic
        // netlink socket is nl80211's, whatever its type, and nothing is even parsed.
        var state = NetworkState()
        #expect(state.nl80211Family == -1)
        try feedWlan0Link(&state)
        for family: Int32 in [0x1c, 0x10, 0xffff] {
            #expect(try feed(&state, NL80211_CMD_NEW_INTERFACE, wlan0Interface(), family: family) == [])
            #expect(
                try feed(
                    &state, NL80211_CMD_NEW_SCAN_RESULTS,
                    ChainMsg.bssAttrs(
                        ifindex: 3, bssid: apA, frequency: 5180, status: 1, ies: ChainMsg.ies(ssid: officeSSID, akms: [dot1x])),
                    family: family) == [])
            #expect(try feed(&state, NL80211_CMD_DISCONNECT, [], family: family) == [])
        }
        #expect(state.wireless.wirelessIfindexes == [])
        #expect(state.interfaces() == [wlan0State(nil, kind: .wired)])
        // rtnetlink still works: the sysfs fallback still classifies it, as disconnected.
        #expect(state.interfaces(deviceType: { _ in "wlan" }) == [wlan0State(.disconnected)])
    }
}
