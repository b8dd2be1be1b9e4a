// Tests of RtnetlinkParser and RouteTable on rtnetlink messages built with libnl's own
// message builders (nlmsg_alloc_simple, nlmsg_append, nla_put*), handed to the parser as
// `nlmsg_hdr(msg)` exactly as the socket callback does. Owns only the test-only builder below.

import CLibNL
import SegguardPolicy
import Testing

@testable import SegguardNetlink

// MARK: - Test-only rtnetlink message builder

/// One attribute to put into a test rtnetlink message.

/// Builds rtnetlink messages with libnl and parses them.
private enum RtMsg {
    static let newLink = Int32(RTM_NEWLINK)
    static let delLink = Int32(RTM_DELLINK)
    static let newAddr = Int32(RTM_NEWADDR)
    static let delAddr = Int32(RTM_DELADDR)
    static let newRoute = Int32(RTM_NEWROUTE)
    static let delRoute = Int32(RTM_DELROUTE)

    /// IFF_UP | IFF_BROADCAST | IFF_RUNNING | IFF_MULTICAST | IFF_LOWER_UP: an Ethernet link that is up.
    static let upFlags: UInt32 =
        IFF_UP.rawValue | IFF_BROADCAST.rawValue | IFF_RUNNING.rawValue | IFF_MULTICAST.rawValue | IFF_LOWER_UP.rawValue
    /// IFF_BROADCAST | IFF_MULTICAST: administratively down.
    static let downFlags: UInt32 = IFF_BROADCAST.rawValue | IFF_MULTICAST.rawValue

    static let mac: [UInt8] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]
    static let rtaTable = Int32(RTA_TABLE.rawValue)
    static let rtaOIF = Int32(RTA_OIF.rawValue)
    static let rtaGateway = Int32(RTA_GATEWAY.rawValue)
    static let rtaPriority = Int32(RTA_PRIORITY.rawValue)
    static let rtaMultipath = Int32(RTA_MULTIPATH.rawValue)

    /// The bytes of a fixed header value (`ifinfomsg`, `ifaddrmsg`, `rtmsg`).
    static func raw<H>(_ header: H) -> [UInt8] { withUnsafeBytes(of: header) { Array($0) } }

    /// Calls `body` with a libnl-built message of `type`: `header` bytes (appended with
    /// NLMSG_ALIGNTO padding), then `attrs`; frees the message afterwards.
    static func with<R>(
        _ type: Int32, header: [UInt8], _ attrs: [TestAttr], _ body: (UnsafeMutablePointer<nlmsghdr>) throws -> R
    ) rethrows -> R {
        let msg = nlmsg_alloc_simple(type, 0)!
        defer { nlmsg_free(msg) }
        var h = header
        let rc = h.withUnsafeMutableBytes { nlmsg_append(msg, $0.baseAddress, $0.count, 4) }
        #expect(rc == 0)
        putAttributes(msg, attrs)
        return try body(nlmsg_hdr(msg))
    }

    /// Builds the message and hands `nlmsg_hdr(msg)` to `RtnetlinkParser.parse`.
    static func parse<H>(_ type: Int32, _ header: H, _ attrs: [TestAttr] = []) throws(NetlinkParseError) -> [RouteMessage] {
        try parse(type, header: raw(header), attrs)
    }

    /// As `parse(_:_:_:)` with the fixed header given as raw bytes (possibly too short).
    static func parse(_ type: Int32, header: [UInt8], _ attrs: [TestAttr]) throws(NetlinkParseError) -> [RouteMessage] {
        let result: Result<[RouteMessage], NetlinkParseError> = with(type, header: header, attrs) { hdr in
            do throws(NetlinkParseError) { return .success(try RtnetlinkParser.parse(hdr)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// The raw bytes of the message (nlmsg_len of them).
    static func bytes<H>(_ type: Int32, _ header: H, _ attrs: [TestAttr]) -> [UInt8] {
        with(type, header: raw(header), attrs) { hdr in Array(UnsafeRawBufferPointer(start: hdr, count: Int(hdr.pointee.nlmsg_len))) }
    }

    /// Parses the first `length` (default: all) of `bytes`, copied into a buffer of exactly
    /// that size, with nlmsg_len set to `length`. The buffer always holds the whole netlink
    /// header (type included), so a length below 16 is a header claiming too little.
    static func parseRaw(_ bytes: [UInt8], length: Int? = nil) -> Result<[RouteMessage], NetlinkParseError> {
        let length = length ?? bytes.count
        let size = min(max(length, MemoryLayout<nlmsghdr>.size), bytes.count)
        let buf = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
        defer { buf.deallocate() }
        bytes.withUnsafeBytes { src in buf.copyMemory(from: src.baseAddress!, byteCount: size) }
        let hdr = buf.bindMemory(to: nlmsghdr.self, capacity: 1)
        hdr.pointee.nlmsg_len = UInt32(length)
        do throws(NetlinkParseError) { return .success(try RtnetlinkParser.parse(hdr)) } catch { return .failure(error) }
    }

    /// An `ifinfomsg`.
    static func link(
        _ index: Int32, type: Int32 = Int32(ARPHRD_ETHER), flags: UInt32 = upFlags, family: Int32 = Int32(AF_UNSPEC)
    ) -> ifinfomsg {
        var h = ifinfomsg()
        h.ifi_family = UInt8(family)
        h.ifi_type = UInt16(type)
        h.ifi_index = index
        h.ifi_flags = flags
        return h
    }

    /// Link attributes in the kernel's order (IFNAME, TXQLEN, OPERSTATE, LINKMODE, MTU,
    /// CARRIER, ADDRESS, BROADCAST, LINKINFO); nil leaves one out.
    static func linkAttrs(
        name: String? = "eth0", operstate: UInt8? = 6, carrier: UInt8? = 1, mac: [UInt8]? = mac, kind: String? = nil
    ) -> [TestAttr] {
        var out: [TestAttr] = []
        if let name { out.append(.string(Int32(IFLA_IFNAME), name)) }
        out.append(.u32(Int32(IFLA_TXQLEN), 1000))
        if let operstate { out.append(.u8(Int32(IFLA_OPERSTATE), operstate)) }
        out.append(.u8(Int32(IFLA_LINKMODE), 0))
        out.append(.u32(Int32(IFLA_MTU), 1500))
        if let carrier { out.append(.u8(Int32(IFLA_CARRIER), carrier)) }
        if let mac {
            out.append(.bytes(Int32(IFLA_ADDRESS), mac))
            out.append(.bytes(Int32(IFLA_BROADCAST), [UInt8](repeating: 0xff, count: mac.count)))
        }
        if let kind {
            out.append(.nested(Int32(IFLA_LINKINFO), [.string(Int32(IFLA_INFO_KIND), kind)]))
        }
        return out
    }

    /// An `ifaddrmsg`.
    static func addr(_ index: UInt32, family: Int32 = Int32(AF_INET), prefix: UInt8, scope: UInt8 = 0) -> ifaddrmsg {
        var h = ifaddrmsg()
        h.ifa_family = UInt8(family)
        h.ifa_prefixlen = prefix
        h.ifa_scope = scope
        h.ifa_index = index
        return h
    }

    /// An `rtmsg`: by default an IPv4 unicast route in the main table, learnt by DHCP.
    static func route(
        family: Int32 = Int32(AF_INET), dstLen: UInt8 = 0, table: UInt32 = RT_TABLE_MAIN.rawValue,
        type: Int32 = Int32(RTN_UNICAST)
    ) -> rtmsg {
        var h = rtmsg()
        h.rtm_family = UInt8(family)
        h.rtm_dst_len = dstLen
        h.rtm_table = UInt8(truncatingIfNeeded: table)
        h.rtm_protocol = 16  // RTPROT_DHCP
        h.rtm_scope = UInt8(RT_SCOPE_UNIVERSE.rawValue)
        h.rtm_type = UInt8(type)
        return h
    }

    static func le16(_ v: Int) -> [UInt8] { [UInt8(v & 0xff), UInt8(v >> 8 & 0xff)] }
    static func le32(_ v: Int32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

    /// One `struct rtnexthop` {len, flags, hops, ifindex} followed by an RTA_GATEWAY attribute;
    /// `length` overrides rtnh_len.
    static func nextHop(ifindex: Int32, gateway: [UInt8]?, length: Int? = nil) -> [UInt8] {
        var attr: [UInt8] = []
        if let gateway {
            attr = le16(4 + gateway.count) + le16(Int(RTA_GATEWAY.rawValue)) + gateway
            while attr.count % 4 != 0 { attr.append(0) }
        }
        return le16(length ?? 8 + attr.count) + [0, 0] + le32(ifindex) + attr
    }

    /// A multipath IPv4 default route: table main, metric 50, hops via eth0 (2) and eth1 (3).
    static let multipathAttrs: [TestAttr] = [
        .u32(rtaTable, 254), .u32(rtaPriority, 50),
        .bytes(rtaMultipath, nextHop(ifindex: 2, gateway: [10, 0, 0, 1]) + nextHop(ifindex: 3, gateway: [10, 0, 1, 1])),
    ]
}

/// Parses an IP address literal the test knows is valid.
private func ip(_ s: String) -> IPAddress { IPAddress(s)! }

/// The error `body` throws, or nil (recording an issue) when it does not throw.
private func parseError(_ body: () throws(NetlinkParseError) -> [RouteMessage]) -> NetlinkParseError? {
    do throws(NetlinkParseError) {
        let m = try body()
        Issue.record("expected an error, parsed \(m)")
        return nil
    } catch {
        return error
    }
}

/// The LinkInfo of a parse that produced exactly one link, else nil.
private func onlyLink(_ ms: [RouteMessage]) -> LinkInfo? {
    guard ms.count == 1, case .link(let l) = ms[0] else { return nil }
    return l
}

private let eth0MAC = MACAddress(bytes: RtMsg.mac)!

// MARK: - Links

@Suite struct RtnetlinkLinkParsingTests {
    @Test func ethernetLinkThatIsUp() throws {
        let m = try RtMsg.parse(RtMsg.newLink, RtMsg.link(2), RtMsg.linkAttrs())
        #expect(
            m == [
                .link(
                    LinkInfo(
                        index: 2, name: "eth0", deviceType: 1, linkKind: nil, mac: eth0MAC, isAdminUp: true, operState: .up,
                        hasCarrier: true))
            ])
    }

    @Test(arguments: [
        (UInt8(0), OperState.unknown), (1, .notPresent), (2, .down), (3, .lowerLayerDown), (4, .testing),
        (5, .dormant), (6, .up), (7, .unknown), (255, .unknown),
    ])
    func operstateValues(kernel: UInt8, expected: OperState) throws {
        let m = try RtMsg.parse(RtMsg.newLink, RtMsg.link(2), RtMsg.linkAttrs(operstate: kernel))
        guard case .link(let link) = m.first, m.count == 1 else {
            Issue.record("expected one link, got \(m)")
            return
        }
        #expect(link.operState == expected)
    }

    @Test func dormantWirelessLinkIsNotRunning() throws {
        // A Wi-Fi station before its 802.1X handshake: up, carrier, but operstate dormant.
        let m = try RtMsg.parse(RtMsg.newLink, RtMsg.link(3), RtMsg.linkAttrs(name: "wlan0", operstate: 5))
        guard case .link(let link) = m.first else {
            Issue.record("expected a link, got \(m)")
            return
        }
        #expect(link.operState == .dormant)
        var table = RouteTable()
        table.apply(.link(link))
        let iface = table.interfaces(wireless: { _ in nil }, deviceType: { _ in "wlan" })
        #expect(iface.map(\.name) == ["wlan0"])
        #expect(iface.first?.kind == .wireless)
        #expect(iface.first?.isRunning == false)
    }

    @Test func missingOperstateIsUnknown() throws {
        let m = try RtMsg.parse(RtMsg.newLink, RtMsg.link(2), RtMsg.linkAttrs(operstate: nil))
        guard case .link(let link) = m.first else {
            Issue.record("expected a link, got \(m)")
            return
        }
        #expect(link.operState == .unknown)
    }

    @Test func carrierAttributeWinsOverLowerUpFlag() throws {
        // IFLA_CARRIER 0 while IFF_LOWER_UP is set: the attribute is believed.
        let off = try RtMsg.parse(RtMsg.newLink, RtMsg.link(2, flags: RtMsg.upFlags), RtMsg.linkAttrs(carrier: 0))
        #expect(onlyLink(off)?.hasCarrier == false)
        // IFLA_CARRIER 1 without IFF_LOWER_UP.
        let on = try RtMsg.parse(
            RtMsg.newLink, RtMsg.link(2, flags: IFF_UP.rawValue), RtMsg.linkAttrs(carrier: 1))
        #expect(onlyLink(on)?.hasCarrier == true)
    }

    @Test func missingCarrierFallsBackToLowerUpFlag() throws {
        let withLowerUp = try RtMsg.parse(
            RtMsg.newLink, RtMsg.link(2, flags: IFF_UP.rawValue | IFF_LOWER_UP.rawValue), RtMsg.linkAttrs(carrier: nil))
        #expect(
            withLowerUp == [
                .link(
                    LinkInfo(
                        index: 2, name: "eth0", deviceType: 1, linkKind: nil, mac: eth0MAC, isAdminUp: true, operState: .up,
                        hasCarrier: true))
            ])
        let withoutLowerUp = try RtMsg.parse(
            RtMsg.newLink, RtMsg.link(2, flags: IFF_UP.rawValue), RtMsg.linkAttrs(carrier: nil))
        #expect(
            withoutLowerUp == [
                .link(
                    LinkInfo(
                        index: 2, name: "eth0", deviceType: 1, linkKind: nil, mac: eth0MAC, isAdminUp: true, operState: .up,
                        hasCarrier: false))
            ])
    }

    @Test func adminDownLink() throws {
        let m = try RtMsg.parse(
            RtMsg.newLink, RtMsg.link(2, flags: RtMsg.downFlags), RtMsg.linkAttrs(operstate: 2, carrier: 0))
        #expect(
            m == [
                .link(
                    LinkInfo(
                        index: 2, name: "eth0", deviceType: 1, linkKind: nil, mac: eth0MAC, isAdminUp: false,
                        operState: .down, hasCarrier: false))
            ])
    }

    @Test func linkInfoKind() throws {
        let m = try RtMsg.parse(RtMsg.newLink, RtMsg.link(7), RtMsg.linkAttrs(name: "veth0", kind: "veth"))
        #expect(
            m == [
                .link(
                    LinkInfo(
                        index: 7, name: "veth0", deviceType: 1, linkKind: "veth", mac: eth0MAC, isAdminUp: true,
                        operState: .up, hasCarrier: true))
            ])
    }

    @Test func linkInfoWithKindDataAlongside() throws {
        // A VLAN: IFLA_LINKINFO { IFLA_INFO_KIND "vlan", IFLA_INFO_DATA { IFLA_VLAN_ID 10 } }.
        var attrs = RtMsg.linkAttrs(name: "eth0.10")
        attrs.append(
            .nested(
                Int32(IFLA_LINKINFO),
                [.string(Int32(IFLA_INFO_KIND), "vlan"), .nested(Int32(IFLA_INFO_DATA), [.bytes(1, RtMsg.le16(10))])]))
        let m = try RtMsg.parse(RtMsg.newLink, RtMsg.link(8), attrs)
        guard case .link(let link) = m.first else {
            Issue.record("expected a link, got \(m)")
            return
        }
        #expect(link.linkKind == "vlan")
        #expect(link.name == "eth0.10")
    }

    @Test func nonSixByteLinkAddressIsNoMAC() throws {
        // An ipip tunnel (ARPHRD_TUNNEL 768): IFLA_ADDRESS is the 4-byte local IPv4 address.
        let m = try RtMsg.parse(
            RtMsg.newLink, RtMsg.link(9, type: 768), RtMsg.linkAttrs(name: "tunl0", mac: [192, 0, 2, 1], kind: "ipip"))
        #expect(
            m == [
                .link(
                    LinkInfo(
                        index: 9, name: "tunl0", deviceType: 768, linkKind: "ipip", mac: nil, isAdminUp: true,
                        operState: .up, hasCarrier: true))
            ])
    }

    @Test func loopbackLink() throws {
        let m = try RtMsg.parse(
            RtMsg.newLink,
            RtMsg.link(
                1, type: Int32(ARPHRD_LOOPBACK),
                flags: IFF_UP.rawValue | IFF_LOOPBACK.rawValue | IFF_RUNNING.rawValue | IFF_LOWER_UP.rawValue),
            RtMsg.linkAttrs(name: "lo", operstate: 0, mac: [0, 0, 0, 0, 0, 0]))
        #expect(
            m == [
                .link(
                    LinkInfo(
                        index: 1, name: "lo", deviceType: 772, linkKind: nil, mac: MACAddress("00:00:00:00:00:00"),
                        isAdminUp: true, operState: .unknown, hasCarrier: true))
            ])
    }

    @Test func bridgeFamilyLinkMessagesAreIgnored() throws {
        // A bridge port's AF_BRIDGE notification, new and deleted: it says nothing about the link.
        let header = RtMsg.link(4, family: Int32(AF_BRIDGE))
        #expect(try RtMsg.parse(RtMsg.newLink, header, RtMsg.linkAttrs(name: "eth1")) == [.ignored])
        #expect(try RtMsg.parse(RtMsg.delLink, header, RtMsg.linkAttrs(name: "eth1")) == [.ignored])
    }

    @Test func delLinkIsRemoval() throws {
        #expect(try RtMsg.parse(RtMsg.delLink, RtMsg.link(5, flags: RtMsg.downFlags), RtMsg.linkAttrs()) == [.linkRemoved(index: 5)])
        // The attributes are not needed for a removal.
        #expect(try RtMsg.parse(RtMsg.delLink, RtMsg.link(5), []) == [.linkRemoved(index: 5)])
    }

    @Test func otherMessageTypesAreIgnored() throws {
        // RTM_NEWNEIGH (28) carries an ndmsg; the parser does not look inside.
        #expect(try RtMsg.parse(Int32(RTM_NEWNEIGH), header: [UInt8](repeating: 0, count: 12), []) == [.ignored])
        // NLMSG_DONE of a dump.
        #expect(try RtMsg.parse(Int32(NLMSG_DONE), header: [0, 0, 0, 0], []) == [.ignored])
    }
}

// MARK: - Addresses

@Suite struct RtnetlinkAddressParsingTests {
    @Test func ipv4Address() throws {
        let m = try RtMsg.parse(
            RtMsg.newAddr, RtMsg.addr(2, prefix: 24),
            [
                .bytes(Int32(IFA_ADDRESS), [192, 168, 10, 23]), .bytes(Int32(IFA_LOCAL), [192, 168, 10, 23]),
                .bytes(Int32(IFA_BROADCAST), [192, 168, 10, 255]), .string(Int32(IFA_LABEL), "eth0"),
            ])
        #expect(
            m == [.address(index: 2, InterfaceAddress(address: ip("192.168.10.23"), prefixLength: 24, scope: 0), removed: false)])
    }

    @Test func pointToPointPeerUsesLocal() throws {
        // On ppp0 IFA_ADDRESS is the peer, IFA_LOCAL the interface's own address.
        let m = try RtMsg.parse(
            RtMsg.newAddr, RtMsg.addr(6, prefix: 32),
            [.bytes(Int32(IFA_ADDRESS), [10, 64, 64, 64]), .bytes(Int32(IFA_LOCAL), [10, 0, 0, 7])])
        #expect(m == [.address(index: 6, InterfaceAddress(address: ip("10.0.0.7"), prefixLength: 32), removed: false)])
        // The order of the attributes does not matter.
        let reversed = try RtMsg.parse(
            RtMsg.newAddr, RtMsg.addr(6, prefix: 32),
            [.bytes(Int32(IFA_LOCAL), [10, 0, 0, 7]), .bytes(Int32(IFA_ADDRESS), [10, 64, 64, 64])])
        #expect(reversed == m)
    }

    @Test func ipv6Addresses() throws {
        let global = ip("2001:db8:1::23")
        let m = try RtMsg.parse(
            RtMsg.newAddr, RtMsg.addr(2, family: Int32(AF_INET6), prefix: 64), [.bytes(Int32(IFA_ADDRESS), global.bytes)])
        #expect(m == [.address(index: 2, InterfaceAddress(address: global, prefixLength: 64, scope: 0), removed: false)])

        let linkLocal = ip("fe80::5054:ff:fe12:3456")
        let ll = try RtMsg.parse(
            RtMsg.newAddr, RtMsg.addr(2, family: Int32(AF_INET6), prefix: 64, scope: 253),
            [.bytes(Int32(IFA_ADDRESS), linkLocal.bytes)])
        #expect(ll == [.address(index: 2, InterfaceAddress(address: linkLocal, prefixLength: 64, scope: 253), removed: false)])
        guard case .address(_, let a, _) = ll.first else { return }
        #expect(a.isGlobal == false)
        #expect(a.description == "fe80::5054:ff:fe12:3456/64")
    }

    @Test func delAddr() throws {
        let m = try RtMsg.parse(
            RtMsg.delAddr, RtMsg.addr(2, prefix: 24),
            [.bytes(Int32(IFA_ADDRESS), [192, 168, 10, 23]), .bytes(Int32(IFA_LOCAL), [192, 168, 10, 23])])
        #expect(m == [.address(index: 2, InterfaceAddress(address: ip("192.168.10.23"), prefixLength: 24), removed: true)])
    }

    @Test func prefixLengthLimits() throws {
        let v4 = try RtMsg.parse(RtMsg.newAddr, RtMsg.addr(2, prefix: 32), [.bytes(Int32(IFA_LOCAL), [10, 0, 0, 1])])
        #expect(v4 == [.address(index: 2, InterfaceAddress(address: ip("10.0.0.1"), prefixLength: 32), removed: false)])
        let v6 = try RtMsg.parse(
            RtMsg.newAddr, RtMsg.addr(2, family: Int32(AF_INET6), prefix: 128), [.bytes(Int32(IFA_ADDRESS), ip("2001:db8::1").bytes)])
        #expect(v6 == [.address(index: 2, InterfaceAddress(address: ip("2001:db8::1"), prefixLength: 128), removed: false)])
    }

    @Test func otherFamiliesAreIgnored() throws {
        // AF_UNSPEC (a request echo) and AF_PACKET (17) are not IP addresses.
        #expect(try RtMsg.parse(RtMsg.newAddr, RtMsg.addr(2, family: Int32(AF_UNSPEC), prefix: 0)) == [.ignored])
        #expect(try RtMsg.parse(RtMsg.newAddr, RtMsg.addr(2, family: 17, prefix: 0), [.bytes(Int32(IFA_ADDRESS), [1, 2, 3])]) == [.ignored])
    }
}

// MARK: - Routes

@Suite struct RtnetlinkRouteParsingTests {
    @Test func ipv4DefaultRoute() throws {
        let m = try RtMsg.parse(
            RtMsg.newRoute, RtMsg.route(),
            [
                .u32(RtMsg.rtaTable, 254), .u32(RtMsg.rtaPriority, 100), .bytes(RtMsg.rtaGateway, [192, 168, 10, 1]),
                .u32(RtMsg.rtaOIF, 2),
            ])
        #expect(
            m == [
                .defaultRoute(
                    index: 2, DefaultRoute(family: .ipv4, gateway: ip("192.168.10.1"), metric: 100, table: 254), removed: false)
            ])
    }

    @Test func delRoute() throws {
        let m = try RtMsg.parse(
            RtMsg.delRoute, RtMsg.route(),
            [.u32(RtMsg.rtaTable, 254), .bytes(RtMsg.rtaGateway, [192, 168, 10, 1]), .u32(RtMsg.rtaOIF, 2)])
        #expect(
            m == [.defaultRoute(index: 2, DefaultRoute(family: .ipv4, gateway: ip("192.168.10.1"), metric: 0, table: 254), removed: true)])
    }

    @Test func rtaTableOverridesHeaderTable() throws {
        // Tables above 255 only fit in RTA_TABLE; rtm_table then says RT_TABLE_COMPAT (252).
        let m = try RtMsg.parse(
            RtMsg.newRoute, RtMsg.route(table: 252), [.u32(RtMsg.rtaTable, 1000), .u32(RtMsg.rtaOIF, 4)])
        #expect(m == [.defaultRoute(index: 4, DefaultRoute(family: .ipv4, gateway: nil, metric: 0, table: 1000), removed: false)])
        // Without RTA_TABLE the header's table is used.
        let h = try RtMsg.parse(RtMsg.newRoute, RtMsg.route(table: 100), [.u32(RtMsg.rtaOIF, 4)])
        #expect(h == [.defaultRoute(index: 4, DefaultRoute(family: .ipv4, gateway: nil, metric: 0, table: 100), removed: false)])
    }

    @Test func gatewaylessDefaultRoute() throws {
        // `ip route add default dev ppp0`: no RTA_GATEWAY.
        let m = try RtMsg.parse(
            RtMsg.newRoute, RtMsg.route(), [.u32(RtMsg.rtaTable, 254), .u32(RtMsg.rtaPriority, 5), .u32(RtMsg.rtaOIF, 6)])
        #expect(m == [.defaultRoute(index: 6, DefaultRoute(family: .ipv4, gateway: nil, metric: 5, table: 254), removed: false)])
    }

    @Test func nonDefaultRouteIsIgnored() throws {
        let m = try RtMsg.parse(
            RtMsg.newRoute, RtMsg.route(dstLen: 24),
            [.u32(RtMsg.rtaTable, 254), .bytes(Int32(RTA_DST.rawValue), [192, 168, 10, 0]), .u32(RtMsg.rtaOIF, 2)])
        #expect(m == [.ignored])
    }

    @Test func localTableIsIgnored() throws {
        // In the header…
        #expect(try RtMsg.parse(RtMsg.newRoute, RtMsg.route(table: RT_TABLE_LOCAL.rawValue), [.u32(RtMsg.rtaOIF, 2)]) == [.ignored])
        // …or in RTA_TABLE.
        #expect(
            try RtMsg.parse(
                RtMsg.newRoute, RtMsg.route(table: 252), [.u32(RtMsg.rtaTable, RT_TABLE_LOCAL.rawValue), .u32(RtMsg.rtaOIF, 2)])
                == [.ignored])
    }

    @Test(arguments: [
        Int32(RTN_LOCAL), Int32(RTN_BROADCAST), Int32(RTN_ANYCAST), Int32(RTN_MULTICAST), Int32(RTN_BLACKHOLE),
        Int32(RTN_UNREACHABLE), Int32(RTN_PROHIBIT), Int32(RTN_THROW),
    ])
    func nonUnicastIsIgnored(type: Int32) throws {
        let m = try RtMsg.parse(RtMsg.newRoute, RtMsg.route(type: type), [.u32(RtMsg.rtaTable, 254), .u32(RtMsg.rtaOIF, 2)])
        #expect(m == [.ignored])
    }

    @Test func otherFamiliesAreIgnored() throws {
        // AF_MPLS (28) routes.
        #expect(try RtMsg.parse(RtMsg.newRoute, RtMsg.route(family: 28), [.u32(RtMsg.rtaOIF, 2)]) == [.ignored])
    }

    @Test func defaultRouteWithoutInterfaceIsIgnored() throws {
        // A route with neither RTA_OIF nor RTA_MULTIPATH (e.g. a nexthop-object route).
        #expect(try RtMsg.parse(RtMsg.newRoute, RtMsg.route(), [.u32(RtMsg.rtaTable, 254), .u32(RtMsg.rtaPriority, 5)]) == [.ignored])
    }

    @Test func ipv6DefaultRoute() throws {
        let gw = ip("fe80::1")
        let m = try RtMsg.parse(
            RtMsg.newRoute, RtMsg.route(family: Int32(AF_INET6)),
            [.u32(RtMsg.rtaTable, 254), .u32(RtMsg.rtaPriority, 1024), .bytes(RtMsg.rtaGateway, gw.bytes), .u32(RtMsg.rtaOIF, 3)])
        #expect(m == [.defaultRoute(index: 3, DefaultRoute(family: .ipv6, gateway: gw, metric: 1024, table: 254), removed: false)])
    }

    @Test func multipathDefaultRouteYieldsOneValuePerHop() throws {
        let m = try RtMsg.parse(RtMsg.newRoute, RtMsg.route(), RtMsg.multipathAttrs)
        #expect(
            m == [
                .defaultRoute(index: 2, DefaultRoute(family: .ipv4, gateway: ip("10.0.0.1"), metric: 50, table: 254), removed: false),
                .defaultRoute(index: 3, DefaultRoute(family: .ipv4, gateway: ip("10.0.1.1"), metric: 50, table: 254), removed: false),
            ])
    }

    @Test func multipathHopWithoutGateway() throws {
        let m = try RtMsg.parse(
            RtMsg.newRoute, RtMsg.route(),
            [.bytes(RtMsg.rtaMultipath, RtMsg.nextHop(ifindex: 2, gateway: nil) + RtMsg.nextHop(ifindex: 5, gateway: [10, 0, 5, 1]))])
        #expect(
            m == [
                .defaultRoute(index: 2, DefaultRoute(family: .ipv4, gateway: nil, metric: 0, table: 254), removed: false),
                .defaultRoute(index: 5, DefaultRoute(family: .ipv4, gateway: ip("10.0.5.1"), metric: 0, table: 254), removed: false),
            ])
    }
}

// MARK: - Malformed messages

@Suite struct RtnetlinkMalformedTests {
    @Test func messageShorterThanIfinfomsg() {
        let e = parseError { () throws(NetlinkParseError) in try RtMsg.parse(RtMsg.newLink, header: [UInt8](repeating: 0, count: 8), []) }
        #expect(e?.description == "RTM_NEWLINK: header: payload of 8 bytes, shorter than its 16-byte fixed header")
        let empty = parseError { () throws(NetlinkParseError) in try RtMsg.parse(RtMsg.delLink, header: [], []) }
        #expect(empty?.description == "RTM_DELLINK: header: payload of 0 bytes, shorter than its 16-byte fixed header")
    }

    @Test func messageShorterThanIfaddrmsgAndRtmsg() {
        let a = parseError { () throws(NetlinkParseError) in try RtMsg.parse(RtMsg.newAddr, header: [2, 24, 0, 0], []) }
        #expect(a?.description == "RTM_NEWADDR: header: payload of 4 bytes, shorter than its 8-byte fixed header")
        let r = parseError { () throws(NetlinkParseError) in try RtMsg.parse(RtMsg.delRoute, header: [2, 0, 0, 0, 254, 0, 0, 1], []) }
        #expect(r?.description == "RTM_DELROUTE: header: payload of 8 bytes, shorter than its 12-byte fixed header")
    }

    @Test func missingIfname() {
        let e = parseError { () throws(NetlinkParseError) in try RtMsg.parse(RtMsg.newLink, RtMsg.link(2), RtMsg.linkAttrs(name: nil)) }
        #expect(e?.description == "RTM_NEWLINK: IFLA_IFNAME: missing or empty for ifindex 2")
        let empty = parseError { () throws(NetlinkParseError) in try RtMsg.parse(RtMsg.newLink, RtMsg.link(2), RtMsg.linkAttrs(name: "")) }
        #expect(empty?.description == "RTM_NEWLINK: IFLA_IFNAME: missing or empty for ifindex 2")
    }

    @Test func emptyOperstate() {
        var attrs = RtMsg.linkAttrs(operstate: nil)
        attrs.append(.bytes(Int32(IFLA_OPERSTATE), []))
        let e = parseError { () throws(NetlinkParseError) in try RtMsg.parse(RtMsg.newLink, RtMsg.link(2), attrs) }
        #expect(e?.description == "RTM_NEWLINK: IFLA_OPERSTATE: payload of 0 bytes, need 1")
    }

    @Test func emptyCarrier() {
        var attrs = RtMsg.linkAttrs(carrier: nil)
        attrs.append(.bytes(Int32(IFLA_CARRIER), []))
        let e = parseError { () throws(NetlinkParseError) in try RtMsg.parse(RtMsg.newLink, RtMsg.link(2), attrs) }
        #expect(e?.description == "RTM_NEWLINK: IFLA_CARRIER: payload of 0 bytes, need 1")
    }

    @Test func ifnameNotUTF8() {
        var attrs = RtMsg.linkAttrs(name: nil)
        attrs.insert(.bytes(Int32(IFLA_IFNAME), [0x65, 0x74, 0xff, 0x30, 0x00]), at: 0)
        let e = parseError { () throws(NetlinkParseError) in try RtMsg.parse(RtMsg.newLink, RtMsg.link(2), attrs) }
        #expect(e?.description == "RTM_NEWLINK: IFLA_IFNAME: not valid UTF-8")
    }

    @Test func infoKindNotUTF8() {
        var attrs = RtMsg.linkAttrs()
        attrs.append(.nested(Int32(IFLA_LINKINFO), [.bytes(Int32(IFLA_INFO_KIND), [0x76, 0xc3, 0x00])]))
        let e = parseError { () throws(NetlinkParseError) in try RtMsg.parse(RtMsg.newLink, RtMsg.link(2), attrs) }
        #expect(e?.description == "RTM_NEWLINK: IFLA_LINKINFO/IFLA_INFO_KIND: not valid UTF-8")
    }

    @Test func nonPositiveIfindex() {
        let zero = parseError { () throws(NetlinkParseError) in try RtMsg.parse(RtMsg.newLink, RtMsg.link(0), RtMsg.linkAttrs()) }
        #expect(zero?.description == "RTM_NEWLINK: header: ifindex 0 is not positive")
        let negative = parseError { () throws(NetlinkParseError) in try RtMsg.parse(RtMsg.newLink, RtMsg.link(-3), RtMsg.linkAttrs()) }
        #expect(negative?.description == "RTM_NEWLINK: header: ifindex -3 is not positive")
        let removal = parseError { () throws(NetlinkParseError) in try RtMsg.parse(RtMsg.delLink, RtMsg.link(0), []) }
        #expect(removal?.description == "RTM_DELLINK: header: ifindex 0 is not positive")
    }

    @Test func threeByteAddress() {
        let e = parseError { () throws(NetlinkParseError) in
            try RtMsg.parse(RtMsg.newAddr, RtMsg.addr(2, prefix: 24), [.bytes(Int32(IFA_ADDRESS), [192, 168, 10])])
        }
        #expect(e?.description == "RTM_NEWADDR: IFA_ADDRESS: 3 bytes, an IP address has 4 or 16")
        // IFA_LOCAL is read first, so a bad one is reported even with a good IFA_ADDRESS.
        let local = parseError { () throws(NetlinkParseError) in
            try RtMsg.parse(
                RtMsg.newAddr, RtMsg.addr(2, prefix: 24),
                [.bytes(Int32(IFA_ADDRESS), [192, 168, 10, 23]), .bytes(Int32(IFA_LOCAL), [192, 168, 10])])
        }
        #expect(local?.description == "RTM_NEWADDR: IFA_LOCAL: 3 bytes, an IP address has 4 or 16")
    }

    @Test func missingAddress() {
        let e = parseError { () throws(NetlinkParseError) in
            try RtMsg.parse(RtMsg.delAddr, RtMsg.addr(4, prefix: 24), [.string(Int32(IFA_LABEL), "eth2")])
        }
        #expect(e?.description == "RTM_DELADDR: IFA_ADDRESS: missing on ifindex 4")
    }

    @Test func prefixLengthTooLong() {
        let v4 = parseError { () throws(NetlinkParseError) in
            try RtMsg.parse(RtMsg.newAddr, RtMsg.addr(2, prefix: 40), [.bytes(Int32(IFA_LOCAL), [192, 168, 10, 23])])
        }
        #expect(v4?.description == "RTM_NEWADDR: header: prefix length 40 exceeds 32")
        let v6 = parseError { () throws(NetlinkParseError) in
            try RtMsg.parse(
                RtMsg.newAddr, RtMsg.addr(2, family: Int32(AF_INET6), prefix: 129), [.bytes(Int32(IFA_ADDRESS), ip("2001:db8::1").bytes)])
        }
        #expect(v6?.description == "RTM_NEWADDR: header: prefix length 129 exceeds 128")
    }

    @Test func badRouteAttributes() {
        let priority = parseError { () throws(NetlinkParseError) in
            try RtMsg.parse(RtMsg.newRoute, RtMsg.route(), [.bytes(RtMsg.rtaPriority, [100, 0]), .u32(RtMsg.rtaOIF, 2)])
        }
        #expect(priority?.description == "RTM_NEWROUTE: RTA_PRIORITY: payload of 2 bytes, need 4")
        let gateway = parseError { () throws(NetlinkParseError) in
            try RtMsg.parse(RtMsg.newRoute, RtMsg.route(), [.bytes(RtMsg.rtaGateway, [10, 0, 0, 1, 0]), .u32(RtMsg.rtaOIF, 2)])
        }
        #expect(gateway?.description == "RTM_NEWROUTE: RTA_GATEWAY: 5 bytes, an IP address has 4 or 16")
        let table = parseError { () throws(NetlinkParseError) in
            try RtMsg.parse(RtMsg.delRoute, RtMsg.route(), [.bytes(RtMsg.rtaTable, [254]), .u32(RtMsg.rtaOIF, 2)])
        }
        #expect(table?.description == "RTM_DELROUTE: RTA_TABLE: payload of 1 bytes, need 4")
    }

    @Test func multipathHopOverrunsItsAttribute() {
        // The first hop (16 bytes) is sound; the second claims 40 bytes of the 16 left.
        let hops = RtMsg.nextHop(ifindex: 2, gateway: [10, 0, 0, 1]) + RtMsg.nextHop(ifindex: 3, gateway: [10, 0, 1, 1], length: 40)
        let e = parseError { () throws(NetlinkParseError) in
            try RtMsg.parse(RtMsg.newRoute, RtMsg.route(), [.u32(RtMsg.rtaTable, 254), .bytes(RtMsg.rtaMultipath, hops)])
        }
        #expect(e?.description == "RTM_NEWROUTE: RTA_MULTIPATH: next hop at offset 16 has length 40, 16 bytes left")
    }

    @Test func multipathHopShorterThanItsHeader() {
        let hops = RtMsg.nextHop(ifindex: 2, gateway: nil, length: 4)
        let e = parseError { () throws(NetlinkParseError) in
            try RtMsg.parse(RtMsg.newRoute, RtMsg.route(), [.bytes(RtMsg.rtaMultipath, hops)])
        }
        #expect(e?.description == "RTM_NEWROUTE: RTA_MULTIPATH: next hop at offset 0 has length 4, 8 bytes left")
    }

    @Test func multipathAttributeOverrunsItsHop() {
        // rtnh_len 12 leaves 4 bytes for an 8-byte RTA_GATEWAY.
        var hop = RtMsg.nextHop(ifindex: 2, gateway: [10, 0, 0, 1])
        hop[0] = 12
        let e = parseError { () throws(NetlinkParseError) in
            try RtMsg.parse(RtMsg.newRoute, RtMsg.route(), [.bytes(RtMsg.rtaMultipath, hop)])
        }
        #expect(e?.description == "RTM_NEWROUTE: RTA_MULTIPATH: attribute at offset 8 overruns its next hop")
    }
}

// MARK: - Robustness

@Suite struct RtnetlinkRobustnessTests {
    /// A short name for what one parse produced, for counting outcomes.
    static func outcome(_ r: Result<[RouteMessage], NetlinkParseError>) -> String {
        switch r {
        case .failure: return "error"
        case .success(let ms):
            return ms.map { m in
                switch m {
                case .link: "link"
                case .linkRemoved: "linkRemoved"
                case .address: "address"
                case .defaultRoute: "route"
                case .nexthopRoute: "nexthopRoute"
                case .nexthop: "nexthop"
                case .routeReplaced: "replaced"
                case .neighbour: "neighbour"
                case .ignored: "ignored"
                }
            }.joined(separator: "+")
        }
    }

    static let linkBytes = RtMsg.bytes(RtMsg.newLink, RtMsg.link(2), RtMsg.linkAttrs())
    static let multipathBytes = RtMsg.bytes(RtMsg.newRoute, RtMsg.route(), RtMsg.multipathAttrs)

    @Test func linkMessageTruncatedAtEveryLength() throws {
        let bytes = Self.linkBytes
        // 16 nlmsghdr + 16 ifinfomsg, then IFNAME [32, 41) padded to 44, TXQLEN [44, 52),
        // OPERSTATE [52, 57), LINKMODE [60, 65), MTU [68, 76), CARRIER [76, 81),
        // ADDRESS [84, 94), BROADCAST [96, 106) padded to 108.
        #expect(bytes.count == 108)
        var outcomes: [String: Int] = [:]
        for length in 0...bytes.count {
            let r = RtMsg.parseRaw(bytes, length: length)
            outcomes[Self.outcome(r), default: 0] += 1
            switch r {
            case .failure(let e):
                if length < 32 {
                    #expect(e.attribute == "header", "length \(length): \(e)")
                } else {
                    // libnl drops an attribute that does not fit, so a cut IFNAME is a missing one.
                    #expect(length < 41, "length \(length): \(e)")
                    #expect(e.description == "RTM_NEWLINK: IFLA_IFNAME: missing or empty for ifindex 2")
                }
            case .success(let ms):
                // Every attribute that fits is read; the rest are absent (carrier: IFF_LOWER_UP).
                let expected = LinkInfo(
                    index: 2, name: "eth0", deviceType: 1, linkKind: nil, mac: length >= 94 ? eth0MAC : nil,
                    isAdminUp: true, operState: length >= 57 ? .up : .unknown, hasCarrier: true)
                #expect(ms == [.link(expected)], "length \(length)")
            }
        }
        #expect(outcomes == ["error": 41, "link": 68])
    }

    @Test func multipathRouteTruncatedAtEveryLength() throws {
        let bytes = Self.multipathBytes
        // 16 nlmsghdr + 12 rtmsg, TABLE [28, 36), PRIORITY [36, 44), MULTIPATH [44, 80).
        #expect(bytes.count == 80)
        var outcomes: [String: Int] = [:]
        for length in 0...bytes.count {
            let r = RtMsg.parseRaw(bytes, length: length)
            outcomes[Self.outcome(r), default: 0] += 1
            if length < 28 {
                #expect(Self.outcome(r) == "error", "length \(length)")
                if case .failure(let e) = r { #expect(e.attribute == "header") }
            } else if length < 80 {
                // A cut RTA_MULTIPATH is dropped whole: a default route without an interface.
                #expect(Self.outcome(r) == "ignored", "length \(length)")
            } else {
                #expect(Self.outcome(r) == "route+route")
            }
        }
        #expect(outcomes == ["error": 28, "ignored": 52, "route+route": 1])
    }

    /// Replaces each byte after nlmsg_len with several values and parses every variant. The
    /// length field is left alone: libnl's receive loop checks it against the datagram before
    /// any callback, so a header never claims more than the buffer holds (truncation is above).
    static func flipEveryByte(_ bytes: [UInt8]) -> (outcomes: [String: Int], results: [Int: [Result<[RouteMessage], NetlinkParseError>]]) {
        var outcomes: [String: Int] = [:]
        var results: [Int: [Result<[RouteMessage], NetlinkParseError>]] = [:]
        for offset in 4..<bytes.count {
            let b = bytes[offset]
            let values = Set([0x00, 0xff, 0x80, 0x7f, b ^ 0x01, b ^ 0x04, b ^ 0x08, b ^ 0x40]).subtracting([b])
            for v in values.sorted() {
                var mutated = bytes
                mutated[offset] = v
                let r = RtMsg.parseRaw(mutated)
                outcomes[outcome(r), default: 0] += 1
                results[offset, default: []].append(r)
            }
        }
        return (outcomes, results)
    }

    @Test func linkMessageWithEveryByteFlipped() throws {
        let bytes = Self.linkBytes
        let original = RtMsg.parseRaw(bytes)
        #expect(Self.outcome(original) == "link")
        let (outcomes, results) = Self.flipEveryByte(bytes)
        // nlmsg_flags, nlmsg_seq, nlmsg_pid, the ifinfomsg pad byte and ifi_change are not read.
        for offset in Array(6..<16) + [17] + Array(28..<32) {
            for r in results[offset] ?? [] { #expect(r == original, "offset \(offset)") }
        }
        // ifi_index (offsets 20–23) 0x80 in the top byte makes it negative: refused.
        #expect(results[23]?.contains { if case .failure(let e) = $0 { e.problem.hasSuffix("is not positive") } else { false } } == true)
        let total = outcomes.values.reduce(0, +)
        #expect(total == results.values.map(\.count).reduce(0, +))
        // 104 bytes × 7 or 8 distinct values (fewer when one equals the byte). The libnl layout is
        // fixed, so the counts are too: e.g. nlmsg_type 0x10 ^ 0x01 is RTM_DELLINK (the one
        // removal); other types are ignored; a negative ifindex or cut IFNAME is an error.
        #expect(total == 758)
        #expect(outcomes == ["error": 42, "ignored": 14, "link": 701, "linkRemoved": 1])
    }

    @Test func multipathRouteWithEveryByteFlipped() throws {
        let bytes = Self.multipathBytes
        let original = RtMsg.parseRaw(bytes)
        #expect(Self.outcome(original) == "route+route")
        let (outcomes, results) = Self.flipEveryByte(bytes)
        // nlmsg_flags (but NLM_F_REPLACE, bit 0 of byte 7), seq, pid, rtm_protocol and
        // rtm_scope are not read.
        for offset in [6] + Array(8..<16) + [21, 22] {
            for r in results[offset] ?? [] { #expect(r == original, "offset \(offset)") }
        }
        for r in results[7] ?? [] {
            guard case .success(let ms) = r, ms.first.map({ if case .routeReplaced = $0 { true } else { false } }) == true else {
                #expect(r == original, "offset 7")
                continue
            }
            #expect(Array(ms.dropFirst()) == (try? original.get()), "NLM_F_REPLACE adds the replacement, nothing else")
        }
        let total = outcomes.values.reduce(0, +)
        #expect(total == results.values.map(\.count).reduce(0, +))
        // 76 bytes × 7 or 8 values: broken hop lengths are errors, a changed type, family,
        // dst_len, table or route type is ignored, the rest still yields both hops; a dst_len
        // of 1 to 7 makes a wide route that must carry RTA_DST, which this one lacks (3 errors);
        // a flags byte with NLM_F_REPLACE set makes it a replacement (3).
        #expect(total == 548)
        #expect(outcomes == ["error": 63, "ignored": 87, "route+route": 395, "replaced+route+route": 3])
    }
}

// MARK: - RouteTable

/// A LinkInfo as an RTM_NEWLINK would carry it: up, running, with carrier.
private func link(
    _ index: Int32, _ name: String, type: UInt16 = 1, kind: String? = nil, up: Bool = true, carrier: Bool = true
) -> LinkInfo {
    LinkInfo(
        index: index, name: name, deviceType: type, linkKind: kind, mac: eth0MAC, isAdminUp: up,
        operState: up && carrier ? .up : .down, hasCarrier: carrier)
}

private let v4Default = DefaultRoute(family: .ipv4, gateway: IPAddress("192.168.10.1"), metric: 100, table: 254)
private let v6Default = DefaultRoute(family: .ipv6, gateway: IPAddress("fe80::1"), metric: 1024, table: 254)
private let v4Addr = InterfaceAddress(address: IPAddress("192.168.10.23")!, prefixLength: 24)
private let v6Addr = InterfaceAddress(address: IPAddress("2001:db8::23")!, prefixLength: 64)

@Suite struct RouteTableTests {
    /// A table with eth0 (ifindex 2) up, v4 and v6 addresses and default routes.
    static func eth0Table() -> RouteTable {
        var t = RouteTable()
        t.apply(.link(link(2, "eth0")))
        t.apply(.address(index: 2, v4Addr, removed: false))
        t.apply(.address(index: 2, v6Addr, removed: false))
        t.apply(.defaultRoute(index: 2, v4Default, removed: false))
        t.apply(.defaultRoute(index: 2, v6Default, removed: false))
        return t
    }

    @Test func interfaceCarriesEverything() {
        let t = Self.eth0Table()
        #expect(
            t.interfaces(wireless: { _ in nil }) == [
                InterfaceState(
                    index: 2, name: "eth0", kind: .wired, linkKind: nil, mac: eth0MAC, isAdminUp: true, operState: .up,
                    hasCarrier: true, addresses: [v4Addr, v6Addr], defaultRoutes: [v4Default, v6Default], wireless: nil)
            ])
        #expect(t.interfaces(wireless: { _ in nil }).first?.isUplink == true)
    }

    @Test("the cached build equals the full build after every message, and rebuilds only what changed")
    func cachedInterfacesMatchFullBuild() {
        var t = RouteTable()
        var cache = InterfaceCache()
        var wifi: [Int32: WirelessLink] = [:]
        let steps: [() -> Void] = [
            { t.apply(.link(link(2, "eth0"))) },
            { t.apply(.link(link(3, "wlan0"))) },
            { wifi[3] = .disconnected },
            { t.apply(.address(index: 2, v4Addr, removed: false)) },
            { t.apply(.defaultRoute(index: 2, v4Default, removed: false)) },
            { wifi[3] = WirelessLink(ssid: SSID("mn-office"), bssid: MACAddress("02:00:5e:00:53:01"), frequencyMHz: 5180, security: .enterprise) },
            { t.apply(.link(link(2, "eth0", carrier: false))) },
            { t.apply(.address(index: 2, v6Addr, removed: false)) },
            { t.apply(.address(index: 2, v4Addr, removed: true)) },
            { t.apply(.linkRemoved(index: 3)) },
            { t.apply(.link(link(2, "eth0", up: false, carrier: false))) },
            { t.apply(.ignored) },
        ]
        for (i, step) in steps.enumerated() {
            step()
            let full = t.interfaces(wireless: { wifi[$0] })
            #expect(t.interfaces(wireless: { wifi[$0] }, reusing: &cache) == full, "after step \(i)")
            #expect(t.changedIndexes.isEmpty)
        }
    }

    @Test func applyReportsChanges() {
        var t = Self.eth0Table()
        #expect(t.apply(.link(link(2, "eth0"))) == false)
        #expect(t.apply(.defaultRoute(index: 2, v4Default, removed: false)) == false)
        #expect(t.apply(.ignored) == false)
        #expect(t.apply(.address(index: 2, v4Addr, removed: true)) == true)
        #expect(t.apply(.address(index: 2, v4Addr, removed: true)) == false)
        #expect(t.apply(.linkRemoved(index: 9)) == false)
    }

    @Test func adminDownClearsDefaultRoutes() {
        // The kernel flushes IPv4 routes on admin down without sending RTM_DELROUTE.
        var t = Self.eth0Table()
        #expect(t.apply(.link(link(2, "eth0", up: false, carrier: false))) == true)
        let down = t.interfaces(wireless: { _ in nil })
        #expect(down.count == 1)
        #expect(down.first?.defaultRoutes == [])
        #expect(down.first?.addresses == [v4Addr, v6Addr])
        #expect(down.first?.isAdminUp == false)
        #expect(down.first?.isUplink == false)
        // Coming back up does not bring the flushed routes back; only RTM_NEWROUTE does.
        t.apply(.link(link(2, "eth0")))
        #expect(t.interfaces(wireless: { _ in nil }).first?.defaultRoutes == [])
        t.apply(.defaultRoute(index: 2, v4Default, removed: false))
        #expect(t.interfaces(wireless: { _ in nil }).first?.defaultRoutes == [v4Default])
    }

    @Test func carrierLossKeepsDefaultRoutes() {
        // Without admin down the kernel keeps the routes (flagged linkdown); the interface is
        // just not running.
        var t = Self.eth0Table()
        t.apply(.link(link(2, "eth0", up: true, carrier: false)))
        let iface = t.interfaces(wireless: { _ in nil }).first
        #expect(iface?.defaultRoutes == [v4Default, v6Default])
        #expect(iface?.isRunning == false)
        #expect(iface?.isUplink == false)
    }

    @Test func removingTheLastIPv4AddressClearsIPv4DefaultRoutes() {
        // The kernel flushes a device's IPv4 routes when its last IPv4 address goes, again
        // without RTM_DELROUTE (seen with `ip monitor route` on 6.18: `ip addr del` of the
        // only address is followed by the deletion of the prefix and local routes only).
        var t = Self.eth0Table()
        t.apply(.address(index: 2, v4Addr, removed: true))
        let iface = t.interfaces(wireless: { _ in nil }).first
        #expect(iface?.addresses == [v6Addr])
        #expect(iface?.defaultRoutes == [v6Default])
    }

    @Test func removingOneOfTwoIPv4AddressesKeepsTheRoutes() {
        var t = Self.eth0Table()
        let second = InterfaceAddress(address: IPAddress("10.1.0.5")!, prefixLength: 16)
        t.apply(.address(index: 2, second, removed: false))
        t.apply(.address(index: 2, v4Addr, removed: true))
        let iface = t.interfaces(wireless: { _ in nil }).first
        #expect(iface?.addresses == [second, v6Addr])
        #expect(iface?.defaultRoutes == [v4Default, v6Default])
    }

    @Test func linkRemovalClearsAddressesAndRoutes() {
        var t = Self.eth0Table()
        t.apply(.link(link(3, "eth1")))
        t.apply(.defaultRoute(index: 3, v4Default, removed: false))
        #expect(t.apply(.linkRemoved(index: 2)) == true)
        #expect(t.interfaces(wireless: { _ in nil }).map(\.name) == ["eth1"])
        #expect(t.addresses[2] == nil)
        #expect(t.routes[2] == nil)
        #expect(t.routes[3] == [v4Default])
        // A new link with the same index starts empty.
        t.apply(.link(link(2, "usb0")))
        let usb = t.interfaces(wireless: { _ in nil }).first
        #expect(usb?.name == "usb0")
        #expect(usb?.addresses == [])
        #expect(usb?.defaultRoutes == [])
    }

    @Test func routeRemovalNeedsAnExactMatch() {
        var t = Self.eth0Table()
        var other = v4Default
        other.metric = 600
        #expect(t.apply(.defaultRoute(index: 2, other, removed: true)) == false)
        #expect(t.apply(.defaultRoute(index: 2, v4Default, removed: true)) == true)
        #expect(t.apply(.defaultRoute(index: 2, v6Default, removed: true)) == true)
        #expect(t.routes[2] == nil)
        #expect(t.interfaces(wireless: { _ in nil }).first?.defaultRoutes == [])
    }

    @Test func addressesBeforeTheirLinkAppearWithIt() {
        var t = RouteTable()
        t.apply(.address(index: 4, v4Addr, removed: false))
        #expect(t.interfaces(wireless: { _ in nil }) == [])
        t.apply(.link(link(4, "eth2")))
        #expect(t.interfaces(wireless: { _ in nil }).first?.addresses == [v4Addr])
    }

    @Test func orderingOfInterfacesAddressesAndRoutes() {
        var t = RouteTable()
        t.apply(.link(link(9, "eth9")))
        t.apply(.link(link(1, "lo", type: 772)))
        t.apply(.link(link(4, "eth4")))
        let a = InterfaceAddress(address: IPAddress("10.0.0.9")!, prefixLength: 8)
        let b = InterfaceAddress(address: IPAddress("10.0.0.10")!, prefixLength: 8)
        t.apply(.address(index: 4, a, removed: false))
        t.apply(.address(index: 4, b, removed: false))
        let high = DefaultRoute(family: .ipv4, gateway: IPAddress("10.0.0.1"), metric: 600)
        let low = DefaultRoute(family: .ipv4, gateway: IPAddress("10.0.0.2"), metric: 20)
        t.apply(.defaultRoute(index: 4, v6Default, removed: false))
        t.apply(.defaultRoute(index: 4, high, removed: false))
        t.apply(.defaultRoute(index: 4, low, removed: false))
        let ifs = t.interfaces(wireless: { _ in nil })
        #expect(ifs.map(\.index) == [1, 4, 9])
        // Addresses sort by their text; routes by family, then metric.
        #expect(ifs[1].addresses == [b, a])
        #expect(ifs[1].defaultRoutes == [low, high, v6Default])
    }

    /// One classification case: the link, the nl80211 view, the sysfs DEVTYPE, the expected kind and link kind.
    struct Case: Sendable, CustomTestStringConvertible {
        var link: LinkInfo
        var isNL80211: Bool
        var devtype: String?
        var kind: InterfaceKind
        var linkKind: String?
        var testDescription: String { "\(link.name) → \(kind)" }
    }

    @Test(arguments: [
        Case(link: link(1, "lo", type: 772), isNL80211: false, devtype: nil, kind: .loopback, linkKind: nil),
        // Loopback wins even over a (nonsensical) wlan DEVTYPE.
        Case(link: link(1, "lo", type: 772), isNL80211: false, devtype: "wlan", kind: .loopback, linkKind: nil),
        Case(link: link(2, "eth0"), isNL80211: false, devtype: nil, kind: .wired, linkKind: nil),
        Case(link: link(3, "veth0", kind: "veth"), isNL80211: false, devtype: nil, kind: .virtual, linkKind: "veth"),
        Case(link: link(4, "br0", kind: "bridge"), isNL80211: false, devtype: "bridge", kind: .virtual, linkKind: "bridge"),
        Case(link: link(5, "wlan0"), isNL80211: false, devtype: "wlan", kind: .wireless, linkKind: nil),
        Case(link: link(5, "wlan0"), isNL80211: true, devtype: nil, kind: .wireless, linkKind: nil),
        Case(link: link(6, "wwan0", type: 519), isNL80211: false, devtype: "wwan", kind: .virtual, linkKind: "wwan"),
        Case(link: link(6, "wwan0"), isNL80211: false, devtype: "wwan", kind: .virtual, linkKind: "wwan"),
        // A USB Ethernet gadget's DEVTYPE "gadget" does not change the class.
        Case(link: link(7, "usb0"), isNL80211: false, devtype: "gadget", kind: .wired, linkKind: nil),
        // Non-Ethernet without a kind: ppp (512), ipip tunnel (768), ARPHRD_NONE (0xfffe).
        Case(link: link(8, "ppp0", type: 512), isNL80211: false, devtype: nil, kind: .virtual, linkKind: nil),
        Case(link: link(9, "tun0", type: 0xfffe), isNL80211: false, devtype: nil, kind: .virtual, linkKind: nil),
    ])
    func classification(_ c: Case) {
        var t = RouteTable()
        t.apply(.link(c.link))
        let ifs = t.interfaces(
            wireless: { c.isNL80211 && $0 == c.link.index ? .disconnected : nil }, deviceType: { _ in c.devtype })
        #expect(ifs.count == 1)
        #expect(ifs.first?.kind == c.kind)
        #expect(ifs.first?.linkKind == c.linkKind)
        // Wireless interfaces always carry a WirelessLink (disconnected until nl80211 says more).
        #expect(ifs.first?.wireless == (c.kind == .wireless ? .disconnected : nil))
    }

    @Test func wirelessLinkComesFromTheClosure() {
        var t = RouteTable()
        t.apply(.link(link(5, "wlan0")))
        let assoc = WirelessLink(
            ssid: SSID("MyNumber-Office"), bssid: MACAddress("02:11:22:33:44:55"), frequencyMHz: 5180, security: .enterprise,
            akmSuites: [0x000F_AC01])
        let ifs = t.interfaces(wireless: { $0 == 5 ? assoc : nil })
        #expect(ifs.first?.kind == .wireless)
        #expect(ifs.first?.wireless == assoc)
    }
}

// MARK: - Network identity: wide routes, nexthop objects, neighbours

@Suite struct RtnetlinkIdentityTests {
    static let rtaDst = Int32(RTA_DST.rawValue)

    /// struct nhmsg (8 bytes, all zero but the family).
    static func nhmsg(family: UInt8 = UInt8(AF_INET)) -> [UInt8] { [family, 0, 0, 0, 0, 0, 0, 0] }

    /// struct ndmsg: family, pad, pad16, ifindex (LE), state (LE), flags, type.
    static func ndmsg(ifindex: Int32, state: UInt16, flags: UInt8 = 0, family: UInt8 = UInt8(AF_INET)) -> [UInt8] {
        let i = UInt32(bitPattern: ifindex)
        return [family, 0, 0, 0, UInt8(i & 0xff), UInt8(i >> 8 & 0xff), UInt8(i >> 16 & 0xff), UInt8(i >> 24), UInt8(state & 0xff), UInt8(state >> 8), flags, 1]
    }

    @Test("the split halves 0.0.0.0/1 and 128.0.0.0/1 are wide routes, with their destination")
    func splitDefault() throws {
        for (dst, bytes): (String, [UInt8]) in [("0.0.0.0/1", [0, 0, 0, 0]), ("128.0.0.0/1", [128, 0, 0, 0])] {
            let m = try RtMsg.parse(RtMsg.newRoute, RtMsg.route(dstLen: 1),
                                    [.u32(RtMsg.rtaTable, 254), .bytes(Self.rtaDst, bytes), .u32(RtMsg.rtaOIF, 7)])
            #expect(m == [.defaultRoute(index: 7, DefaultRoute(family: .ipv4, gateway: nil, destination: IPPrefix(dst)), removed: false)])
            #expect(m.first.map { "\($0)" }?.contains(dst) == true)
        }
    }

    @Test("a /8 or narrower IPv4 route and a /4 or narrower IPv6 route are not uplinks; 2000::/3 is")
    func wideThreshold() throws {
        let narrow = try RtMsg.parse(RtMsg.newRoute, RtMsg.route(dstLen: 8), [.bytes(Self.rtaDst, [10, 0, 0, 0]), .u32(RtMsg.rtaOIF, 7)])
        #expect(narrow == [.ignored])
        let seven = try RtMsg.parse(RtMsg.newRoute, RtMsg.route(dstLen: 7), [.bytes(Self.rtaDst, [10, 0, 0, 0]), .u32(RtMsg.rtaOIF, 7)])
        #expect(seven.count == 1 && seven != [.ignored])
        let v6 = try RtMsg.parse(RtMsg.newRoute, RtMsg.route(family: Int32(AF_INET6), dstLen: 3),
                                 [.bytes(Self.rtaDst, [0x20] + [UInt8](repeating: 0, count: 15)), .u32(RtMsg.rtaOIF, 9)])
        #expect(v6 == [.defaultRoute(index: 9, DefaultRoute(family: .ipv6, gateway: nil, destination: IPPrefix("2000::/3")), removed: false)])
        let v6narrow = try RtMsg.parse(RtMsg.newRoute, RtMsg.route(family: Int32(AF_INET6), dstLen: 4),
                                       [.bytes(Self.rtaDst, [0x20] + [UInt8](repeating: 0, count: 15)), .u32(RtMsg.rtaOIF, 9)])
        #expect(v6narrow == [.ignored])
    }

    @Test("a wide route without RTA_DST is refused with the attribute named")
    func wideWithoutDst() {
        #expect(throws: NetlinkParseError.self) { try RtMsg.parse(RtMsg.newRoute, RtMsg.route(dstLen: 1), [.u32(RtMsg.rtaOIF, 7)]) }
        do {
            _ = try RtMsg.parse(RtMsg.newRoute, RtMsg.route(dstLen: 1), [.u32(RtMsg.rtaOIF, 7)])
        } catch {
            #expect(error.description.hasPrefix("RTM_NEWROUTE: RTA_DST:"))
        }
    }

    @Test("nexthop_compat_mode=0: a default route names only its nexthop object; the table resolves it to the nexthop's interface and gateway")
    func nexthopObjects() throws {
        var t = RouteTable()
        t.apply(.link(LinkInfo(index: 4, name: "eth4", deviceType: 1, linkKind: nil, mac: nil, isAdminUp: true, operState: .up, hasCarrier: true)))
        t.apply(.link(LinkInfo(index: 5, name: "eth5", deviceType: 1, linkKind: nil, mac: nil, isAdminUp: true, operState: .up, hasCarrier: true)))
        let route = try RtMsg.parse(RtMsg.newRoute, RtMsg.route(), [.u32(RtMsg.rtaTable, 254), .u32(30 /* RTA_NH_ID */, 12)])
        #expect(route == [.nexthopRoute(id: 12, DefaultRoute(family: .ipv4, gateway: nil), removed: false)])
        for m in route { t.apply(m) }
        // The route before its nexthop is known: no interface yet.
        #expect(t.interfaces(wireless: { _ in nil }).allSatisfy { $0.defaultRoutes.isEmpty })
        let nh = try RtMsg.parse(RtnetlinkNumbers.newNexthop, header: Self.nhmsg(),
                                 [.u32(RtnetlinkNumbers.nhaID, 12), .u32(RtnetlinkNumbers.nhaOIF, 5), .bytes(RtnetlinkNumbers.nhaGateway, [192, 0, 2, 1])])
        #expect(nh == [.nexthop(Nexthop(id: 12, interface: 5, gateway: ip("192.0.2.1")), removed: false)])
        for m in nh { let changed = t.apply(m); #expect(changed) }
        var ifs = t.interfaces(wireless: { _ in nil })
        #expect(ifs.first { $0.index == 5 }?.defaultRoutes == [DefaultRoute(family: .ipv4, gateway: ip("192.0.2.1"))])
        #expect(ifs.first { $0.index == 4 }?.defaultRoutes == [])
        // A group of two nexthops: the route leaves through both interfaces.
        t.apply(.nexthop(Nexthop(id: 13, interface: 4, gateway: ip("198.51.100.1")), removed: false))
        let group = try RtMsg.parse(RtnetlinkNumbers.newNexthop, header: Self.nhmsg(family: 0),
                                    [.u32(RtnetlinkNumbers.nhaID, 20), .bytes(RtnetlinkNumbers.nhaGroup, [12, 0, 0, 0, 1, 0, 0, 0, 13, 0, 0, 0, 1, 0, 0, 0])])
        #expect(group == [.nexthop(Nexthop(id: 20, group: [12, 13]), removed: false)])
        for m in group { t.apply(m) }
        t.apply(.nexthopRoute(id: 20, DefaultRoute(family: .ipv4, gateway: nil, table: 100), removed: false))
        ifs = t.interfaces(wireless: { _ in nil })
        #expect(ifs.first { $0.index == 4 }?.defaultRoutes == [DefaultRoute(family: .ipv4, gateway: ip("198.51.100.1"), table: 100)])
        #expect(ifs.first { $0.index == 5 }?.defaultRoutes.count == 2)
        // Deleting the nexthop drops the routes through it (the kernel sends no RTM_DELROUTE).
        let del = try RtMsg.parse(RtnetlinkNumbers.delNexthop, header: Self.nhmsg(), [.u32(RtnetlinkNumbers.nhaID, 12)])
        for m in del { let changed = t.apply(m); #expect(changed) }
        ifs = t.interfaces(wireless: { _ in nil })
        #expect(ifs.first { $0.index == 5 }?.defaultRoutes == [])
        // Taking eth4 down flushes its nexthop and the group's route through it.
        t.apply(.link(LinkInfo(index: 4, name: "eth4", deviceType: 1, linkKind: nil, mac: nil, isAdminUp: false, operState: .down, hasCarrier: false)))
        #expect(t.nexthops[13] == nil)
    }

    @Test("bad nexthop messages are refused naming the attribute: no id, a group of 7 bytes")
    func badNexthops() {
        #expect(throws: NetlinkParseError.self) { try RtMsg.parse(RtnetlinkNumbers.newNexthop, header: Self.nhmsg(), [.u32(RtnetlinkNumbers.nhaOIF, 5)]) }
        do {
            _ = try RtMsg.parse(RtnetlinkNumbers.newNexthop, header: Self.nhmsg(), [.u32(RtnetlinkNumbers.nhaID, 3), .bytes(RtnetlinkNumbers.nhaGroup, [1, 0, 0, 0, 1, 0, 0])])
            Issue.record("a 7-byte group was accepted")
        } catch {
            #expect(error.description == "RTM_NEWNEXTHOP: NHA_GROUP: length 7 is not a positive multiple of 8")
        }
    }

    @Test("neighbours: a resolved entry carries its MAC; failed, incomplete and deleted entries remove it; proxy and bridge entries are ignored")
    func neighbours() throws {
        let mac: [UInt8] = [0x02, 0, 0x5e, 0, 0x53, 1]
        let reachable = try RtMsg.parse(RtnetlinkNumbers.newNeighbour, header: Self.ndmsg(ifindex: 3, state: 0x02),
                                        [.bytes(RtnetlinkNumbers.ndaDst, [192, 0, 2, 1]), .bytes(RtnetlinkNumbers.ndaLLAddr, mac)])
        #expect(reachable == [.neighbour(index: 3, address: ip("192.0.2.1"), mac: MACAddress(bytes: mac), removed: false)])
        let stale = try RtMsg.parse(RtnetlinkNumbers.newNeighbour, header: Self.ndmsg(ifindex: 3, state: 0x04),
                                    [.bytes(RtnetlinkNumbers.ndaDst, [192, 0, 2, 1]), .bytes(RtnetlinkNumbers.ndaLLAddr, mac)])
        #expect(stale == reachable)
        let failed = try RtMsg.parse(RtnetlinkNumbers.newNeighbour, header: Self.ndmsg(ifindex: 3, state: 0x20),
                                     [.bytes(RtnetlinkNumbers.ndaDst, [192, 0, 2, 1])])
        #expect(failed == [.neighbour(index: 3, address: ip("192.0.2.1"), mac: nil, removed: true)])
        let proxy = try RtMsg.parse(RtnetlinkNumbers.newNeighbour, header: Self.ndmsg(ifindex: 3, state: 0x80, flags: 0x08),
                                    [.bytes(RtnetlinkNumbers.ndaDst, [192, 0, 2, 9])])
        #expect(proxy == [.ignored])
        let bridge = try RtMsg.parse(RtnetlinkNumbers.newNeighbour, header: Self.ndmsg(ifindex: 3, state: 0x80, family: UInt8(AF_BRIDGE)),
                                     [.bytes(RtnetlinkNumbers.ndaLLAddr, mac)])
        #expect(bridge == [.ignored])
        #expect(throws: NetlinkParseError.self) {
            try RtMsg.parse(RtnetlinkNumbers.newNeighbour, header: Self.ndmsg(ifindex: 3, state: 0x02), [.bytes(RtnetlinkNumbers.ndaLLAddr, mac)])
        }

        var t = RouteTable()
        t.apply(.link(LinkInfo(index: 3, name: "eth3", deviceType: 1, linkKind: nil, mac: nil, isAdminUp: true, operState: .up, hasCarrier: true)))
        for m in reachable { let changed = t.apply(m); #expect(changed) }
        for m in stale { let changed = t.apply(m); #expect(!changed, "the same MAC again is no change (no snapshot for REACHABLE -> STALE)") }
        #expect(t.interfaces(wireless: { _ in nil }).first?.neighbours == [Neighbour(address: ip("192.0.2.1"), mac: MACAddress(bytes: mac)!)])
        for m in failed { let changed = t.apply(m); #expect(changed) }
        #expect(t.interfaces(wireless: { _ in nil }).first?.neighbours == [])
    }
}

@Suite struct RouteReplaceTests {
    @Test("RTM_NEWROUTE with NLM_F_REPLACE (ip route replace, DHCP renewals) drops the replaced route wherever it was; the kernel sends no RTM_DELROUTE")
    func replace() throws {
        var t = RouteTable()
        for i: Int32 in [2, 3] {
            t.apply(.link(LinkInfo(index: i, name: "eth\(i)", deviceType: 1, linkKind: nil, mac: nil, isAdminUp: true, operState: .up, hasCarrier: true)))
        }
        t.apply(.defaultRoute(index: 2, DefaultRoute(family: .ipv4, gateway: ip("10.64.0.1"), metric: 100), removed: false))
        // The same default route (metric 100, main table) now via eth3.
        var bytes = RtMsg.bytes(RtMsg.newRoute, RtMsg.route(),
                                [.u32(RtMsg.rtaTable, 254), .u32(RtMsg.rtaPriority, 100), .bytes(RtMsg.rtaGateway, [10, 64, 0, 3]), .u32(RtMsg.rtaOIF, 3)])
        let flags = UInt16(bytes[6]) | UInt16(bytes[7]) << 8 | UInt16(NLM_F_REPLACE)
        bytes[6] = UInt8(flags & 0xff)
        bytes[7] = UInt8(flags >> 8)
        let messages = try RtMsg.parseRaw(bytes).get()
        #expect(messages == [.routeReplaced(DefaultRoute(family: .ipv4, gateway: nil, metric: 100)),
                             .defaultRoute(index: 3, DefaultRoute(family: .ipv4, gateway: ip("10.64.0.3"), metric: 100), removed: false)])
        for m in messages { t.apply(m) }
        let ifs = t.interfaces(wireless: { _ in nil })
        #expect(ifs.first { $0.index == 2 }?.defaultRoutes == [], "the old route is gone")
        #expect(ifs.first { $0.index == 3 }?.defaultRoutes == [DefaultRoute(family: .ipv4, gateway: ip("10.64.0.3"), metric: 100)])
        // Another metric is another route: a replace leaves it.
        t.apply(.defaultRoute(index: 2, DefaultRoute(family: .ipv4, gateway: ip("10.64.0.1"), metric: 600), removed: false))
        t.apply(.routeReplaced(DefaultRoute(family: .ipv4, gateway: nil, metric: 100)))
        #expect(t.interfaces(wireless: { _ in nil }).first { $0.index == 2 }?.defaultRoutes.map(\.metric) == [600])
    }
}
