// Parses rtnetlink messages (links, addresses, routes) into plain values. Owns no state; the
// same function serves the live socket and tests that feed constructed or recorded bytes.

import CLibNL
import SegguardPolicy

/// A link as one RTM_NEWLINK message describes it.
public struct LinkInfo: Sendable, Equatable {
    public var index: Int32
    public var name: String
    /// ARPHRD_* device type.
    public var deviceType: UInt16
    /// IFLA_INFO_KIND for kernel-made links.
    public var linkKind: String?
    public var mac: MACAddress?
    public var isAdminUp: Bool
    public var operState: OperState
    public var hasCarrier: Bool
    /// IFLA_CARRIER_CHANGES: the kernel's count of carrier transitions (nil when absent). A
    /// down-and-up the snapshots never showed (both in one batch, or lost to an overrun) still
    /// moves it.
    public var carrierChanges: UInt32? = nil
}

/// One rtnetlink message, reduced to what the snapshot needs.
public enum RouteMessage: Sendable, Equatable {
    case link(LinkInfo)
    case linkRemoved(index: Int32)
    case address(index: Int32, InterfaceAddress, removed: Bool)
    case defaultRoute(index: Int32, DefaultRoute, removed: Bool)
    /// A route through a nexthop object (RTA_NH_ID and no RTA_OIF: `nexthop_compat_mode=0`);
    /// the interface is the nexthop's.
    case nexthopRoute(id: UInt32, DefaultRoute, removed: Bool)
    /// RTM_NEWROUTE with NLM_F_REPLACE (`ip route replace`, DHCP clients): the route of this
    /// family, destination, metric and table is replaced wherever it was; the kernel sends no
    /// RTM_DELROUTE for the old one. Followed by the new route's own messages.
    case routeReplaced(DefaultRoute)
    /// A nexthop object (RTM_NEWNEXTHOP); removal carries only the id.
    case nexthop(Nexthop, removed: Bool)
    /// A resolved neighbour entry appeared or changed (`removed` false), or the entry of that
    /// address is gone or no longer resolved (`removed` true: deleted, failed, incomplete).
    case neighbour(index: Int32, address: IPAddress, mac: MACAddress?, removed: Bool)
    /// Understood but irrelevant (a narrow route, a bridge-family link message, …).
    case ignored
}

/// A nexthop object: one interface and gateway, or a group of other nexthops.
public struct Nexthop: Sendable, Equatable {
    public var id: UInt32
    /// NHA_OIF (absent for a group or a blackhole).
    public var interface: Int32?
    public var gateway: IPAddress?
    /// NHA_GROUP member ids.
    public var group: [UInt32]

    public init(id: UInt32, interface: Int32? = nil, gateway: IPAddress? = nil, group: [UInt32] = []) {
        self.id = id
        self.interface = interface
        self.gateway = gateway
        self.group = group
    }
}

/// rtnetlink numbers not in libnl's headers (linux/nexthop.h, linux/neighbour.h).
enum RtnetlinkNumbers {
    static let newNexthop: Int32 = 104, delNexthop: Int32 = 105, getNexthop: Int32 = 106
    static let newNeighbour: Int32 = 28, delNeighbour: Int32 = 29, getNeighbour: Int32 = 30
    /// RTA_NH_ID: a route's nexthop object.
    static let routeNexthopID: Int32 = 30
    static let nhaID: Int32 = 1, nhaGroup: Int32 = 2, nhaBlackhole: Int32 = 4, nhaOIF: Int32 = 5, nhaGateway: Int32 = 6, nhaMax: Int32 = 16
    static let ndaDst: Int32 = 1, ndaLLAddr: Int32 = 2, ndaMax: Int32 = 16
    /// RTNLGRP_NEIGH, RTNLGRP_NEXTHOP.
    static let groupNeighbour: Int32 = 3, groupNexthop: Int32 = 32
    /// NUD_INCOMPLETE | NUD_FAILED | NUD_NONE(0): no usable link-layer address.
    static let unresolvedStates: UInt16 = 0x01 | 0x20
}

/// struct nhmsg (linux/nexthop.h).
struct NexthopMessageHeader {
    var family: UInt8 = 0
    var scope: UInt8 = 0
    var proto: UInt8 = 0
    var reserved: UInt8 = 0
    var flags: UInt32 = 0
}

/// struct ndmsg (linux/neighbour.h).
struct NeighbourMessageHeader {
    var family: UInt8 = 0
    var pad1: UInt8 = 0
    var pad2: UInt16 = 0
    var ifindex: Int32 = 0
    var state: UInt16 = 0
    var flags: UInt8 = 0
    var type: UInt8 = 0
}

/// Turns rtnetlink messages into `RouteMessage`s.
public enum RtnetlinkParser {
    static let linkAttrNames: @Sendable (Int32) -> String = { t in
        switch t {
        case Int32(IFLA_ADDRESS): "IFLA_ADDRESS"
        case Int32(IFLA_IFNAME): "IFLA_IFNAME"
        case Int32(IFLA_OPERSTATE): "IFLA_OPERSTATE"
        case Int32(IFLA_CARRIER): "IFLA_CARRIER"
        case Int32(IFLA_LINKINFO): "IFLA_LINKINFO"
        default: "IFLA attribute \(t)"
        }
    }

    static let addrAttrNames: @Sendable (Int32) -> String = { t in
        switch t {
        case Int32(IFA_ADDRESS): "IFA_ADDRESS"
        case Int32(IFA_LOCAL): "IFA_LOCAL"
        default: "IFA attribute \(t)"
        }
    }

    static let routeAttrNames: @Sendable (Int32) -> String = { t in
        switch t {
        case Int32(RTA_OIF.rawValue): "RTA_OIF"
        case Int32(RTA_GATEWAY.rawValue): "RTA_GATEWAY"
        case Int32(RTA_PRIORITY.rawValue): "RTA_PRIORITY"
        case Int32(RTA_TABLE.rawValue): "RTA_TABLE"
        case Int32(RTA_MULTIPATH.rawValue): "RTA_MULTIPATH"
        case Int32(RTA_DST.rawValue): "RTA_DST"
        case RtnetlinkNumbers.routeNexthopID: "RTA_NH_ID"
        default: "RTA attribute \(t)"
        }
    }

    /// Parses one message; a default route with several next hops yields one value per hop.
    public static func parse(_ hdr: UnsafeMutablePointer<nlmsghdr>) throws(NetlinkParseError) -> [RouteMessage] {
        let type = Int32(hdr.pointee.nlmsg_type)
        switch type {
        case Int32(RTM_NEWLINK), Int32(RTM_DELLINK):
            return [try parseLink(hdr, removed: type == Int32(RTM_DELLINK))]
        case Int32(RTM_NEWADDR), Int32(RTM_DELADDR):
            return [try parseAddress(hdr, removed: type == Int32(RTM_DELADDR))]
        case Int32(RTM_NEWROUTE), Int32(RTM_DELROUTE):
            return try parseRoute(hdr, removed: type == Int32(RTM_DELROUTE))
        case RtnetlinkNumbers.newNexthop, RtnetlinkNumbers.delNexthop:
            return [try parseNexthop(hdr, removed: type == RtnetlinkNumbers.delNexthop)]
        case RtnetlinkNumbers.newNeighbour, RtnetlinkNumbers.delNeighbour:
            return [try parseNeighbour(hdr, removed: type == RtnetlinkNumbers.delNeighbour)]
        default:
            return [.ignored]
        }
    }

    static func parseLink(_ hdr: UnsafeMutablePointer<nlmsghdr>, removed: Bool) throws(NetlinkParseError) -> RouteMessage {
        let context = removed ? "RTM_DELLINK" : "RTM_NEWLINK"
        let ifi = try fixedHeader(hdr, as: ifinfomsg.self, context: context)
        // Bridge-port (AF_BRIDGE) notifications describe the port's bridge state, not the link.
        if ifi.ifi_family == UInt8(AF_BRIDGE) { return .ignored }
        guard ifi.ifi_index > 0 else {
            throw NetlinkParseError(message: context, attribute: "header", problem: "ifindex \(ifi.ifi_index) is not positive")
        }
        if removed { return .linkRemoved(index: ifi.ifi_index) }
        let attrs = try AttributeTable(
            message: hdr, headerLength: MemoryLayout<ifinfomsg>.size, maxType: Int32(__IFLA_MAX) - 1,
            context: context, names: linkAttrNames)
        guard let name = try attrs.string(Int32(IFLA_IFNAME)), !name.isEmpty else {
            throw NetlinkParseError(message: context, attribute: "IFLA_IFNAME", problem: "missing or empty for ifindex \(ifi.ifi_index)")
        }
        var kind: String?
        if let li = attrs[Int32(IFLA_LINKINFO)] {
            let info = try AttributeTable(
                nested: li, maxType: Int32(__IFLA_INFO_MAX) - 1, context: context,
                names: { $0 == Int32(IFLA_INFO_KIND) ? "IFLA_LINKINFO/IFLA_INFO_KIND" : "IFLA_LINKINFO/\($0)" })
            kind = try info.string(Int32(IFLA_INFO_KIND))
        }
        // IFLA_ADDRESS is 6 bytes on Ethernet-type devices; other lengths (tunnels, none) are not MACs.
        let addrBytes = attrs.bytes(Int32(IFLA_ADDRESS))
        let mac = addrBytes.flatMap { MACAddress(bytes: $0) }
        let flags = ifi.ifi_flags
        let oper = try attrs.u8(Int32(IFLA_OPERSTATE)).map(OperState.init(kernelValue:)) ?? .unknown
        let carrier: Bool
        if let c = try attrs.u8(Int32(IFLA_CARRIER)) {
            carrier = c != 0
        } else {
            carrier = flags & UInt32(IFF_LOWER_UP.rawValue) != 0
        }
        return .link(LinkInfo(
            index: ifi.ifi_index, name: name, deviceType: ifi.ifi_type, linkKind: kind, mac: mac,
            isAdminUp: flags & UInt32(IFF_UP.rawValue) != 0, operState: oper, hasCarrier: carrier,
            carrierChanges: try attrs.u32(35 /* IFLA_CARRIER_CHANGES */)))
    }

    static func parseAddress(_ hdr: UnsafeMutablePointer<nlmsghdr>, removed: Bool) throws(NetlinkParseError) -> RouteMessage {
        let context = removed ? "RTM_DELADDR" : "RTM_NEWADDR"
        let ifa = try fixedHeader(hdr, as: ifaddrmsg.self, context: context)
        guard ifa.ifa_family == UInt8(AF_INET) || ifa.ifa_family == UInt8(AF_INET6) else { return .ignored }
        let attrs = try AttributeTable(
            message: hdr, headerLength: MemoryLayout<ifaddrmsg>.size, maxType: Int32(__IFA_MAX) - 1,
            context: context, names: addrAttrNames)
        // IPv4: IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on point-to-point links).
        var address = try attrs.ip(Int32(IFA_LOCAL))
        if address == nil { address = try attrs.ip(Int32(IFA_ADDRESS)) }
        guard let address else {
            throw NetlinkParseError(message: context, attribute: "IFA_ADDRESS", problem: "missing on ifindex \(ifa.ifa_index)")
        }
        let limit: UInt8 = address.family == .ipv4 ? 32 : 128
        guard ifa.ifa_prefixlen <= limit else {
            throw NetlinkParseError(message: context, attribute: "header", problem: "prefix length \(ifa.ifa_prefixlen) exceeds \(limit)")
        }
        return .address(
            index: Int32(bitPattern: ifa.ifa_index),
            InterfaceAddress(address: address, prefixLength: ifa.ifa_prefixlen, scope: ifa.ifa_scope), removed: removed)
    }

    static func parseRoute(_ hdr: UnsafeMutablePointer<nlmsghdr>, removed: Bool) throws(NetlinkParseError) -> [RouteMessage] {
        let context = removed ? "RTM_DELROUTE" : "RTM_NEWROUTE"
        let rtm = try fixedHeader(hdr, as: rtmsg.self, context: context)
        guard rtm.rtm_family == UInt8(AF_INET) || rtm.rtm_family == UInt8(AF_INET6) else { return [.ignored] }
        let family: IPAddress.Family = rtm.rtm_family == UInt8(AF_INET) ? .ipv4 : .ipv6
        // Only unicast routes that cover the internet (default, split halves, other wide ones)
        // make an uplink; the local table never holds one.
        guard DefaultRoute.coversInternet(family: family, prefixLength: rtm.rtm_dst_len), rtm.rtm_type == UInt8(RTN_UNICAST) else { return [.ignored] }
        let attrs = try AttributeTable(
            message: hdr, headerLength: MemoryLayout<rtmsg>.size, maxType: Int32(__RTA_MAX.rawValue) - 1,
            context: context, names: routeAttrNames)
        let table = try attrs.u32(Int32(RTA_TABLE.rawValue)) ?? UInt32(rtm.rtm_table)
        guard table != UInt32(RT_TABLE_LOCAL.rawValue) else { return [.ignored] }
        var destination: IPPrefix?
        if rtm.rtm_dst_len > 0 {
            guard let dst = try attrs.ip(Int32(RTA_DST.rawValue)), dst.family == family,
                  let prefix = IPPrefix(address: dst, length: rtm.rtm_dst_len) else {
                throw NetlinkParseError(message: context, attribute: "RTA_DST", problem: "missing or not a \(family.rawValue) network for prefix length \(rtm.rtm_dst_len)")
            }
            destination = prefix
        }
        let metric = try attrs.u32(Int32(RTA_PRIORITY.rawValue)) ?? 0
        let replaced: [RouteMessage] = !removed && Int32(hdr.pointee.nlmsg_flags) & NLM_F_REPLACE != 0
            ? [.routeReplaced(DefaultRoute(family: family, gateway: nil, metric: metric, table: table, destination: destination))] : []
        return replaced + (try routeHops(attrs, family: family, metric: metric, table: table, destination: destination, removed: removed, context: context))
    }

    static func routeHops(_ attrs: AttributeTable, family: IPAddress.Family, metric: UInt32, table: UInt32, destination: IPPrefix?, removed: Bool,
                          context: String) throws(NetlinkParseError) -> [RouteMessage] {
        if let oif = try attrs.u32(Int32(RTA_OIF.rawValue)) {
            let gw = try attrs.ip(Int32(RTA_GATEWAY.rawValue))
            return [.defaultRoute(
                index: Int32(bitPattern: oif), DefaultRoute(family: family, gateway: gw, metric: metric, table: table, destination: destination), removed: removed)]
        }
        if let hops = attrs.bytes(Int32(RTA_MULTIPATH.rawValue)) {
            return try parseNextHops(hops, context: context).map { hop in
                .defaultRoute(index: hop.0, DefaultRoute(family: family, gateway: hop.1, metric: metric, table: table, destination: destination), removed: removed)
            }
        }
        // nexthop_compat_mode=0: the route names only its nexthop object.
        if let id = try attrs.u32(RtnetlinkNumbers.routeNexthopID) {
            return [.nexthopRoute(id: id, DefaultRoute(family: family, gateway: nil, metric: metric, table: table, destination: destination), removed: removed)]
        }
        return [.ignored]
    }

    static func parseNexthop(_ hdr: UnsafeMutablePointer<nlmsghdr>, removed: Bool) throws(NetlinkParseError) -> RouteMessage {
        let context = removed ? "RTM_DELNEXTHOP" : "RTM_NEWNEXTHOP"
        _ = try fixedHeader(hdr, as: NexthopMessageHeader.self, context: context)
        let attrs = try AttributeTable(
            message: hdr, headerLength: MemoryLayout<NexthopMessageHeader>.size, maxType: RtnetlinkNumbers.nhaMax,
            context: context, names: { t in
                switch t {
                case RtnetlinkNumbers.nhaID: "NHA_ID"
                case RtnetlinkNumbers.nhaGroup: "NHA_GROUP"
                case RtnetlinkNumbers.nhaOIF: "NHA_OIF"
                case RtnetlinkNumbers.nhaGateway: "NHA_GATEWAY"
                default: "NHA attribute \(t)"
                }
            })
        guard let id = try attrs.u32(RtnetlinkNumbers.nhaID), id != 0 else {
            throw NetlinkParseError(message: context, attribute: "NHA_ID", problem: "missing or zero")
        }
        if removed { return .nexthop(Nexthop(id: id), removed: true) }
        var group: [UInt32] = []
        if let g = attrs.bytes(RtnetlinkNumbers.nhaGroup) {
            // struct nexthop_grp { u32 id; u8 weight; u8 weight_high; u16 resvd2; }
            guard g.count % 8 == 0, !g.isEmpty else {
                throw NetlinkParseError(message: context, attribute: "NHA_GROUP", problem: "length \(g.count) is not a positive multiple of 8")
            }
            for k in stride(from: 0, to: g.count, by: 8) {
                group.append(UInt32(g[k]) | UInt32(g[k + 1]) << 8 | UInt32(g[k + 2]) << 16 | UInt32(g[k + 3]) << 24)
            }
        }
        let oif = try attrs.u32(RtnetlinkNumbers.nhaOIF).map { Int32(bitPattern: $0) }
        let gateway = try attrs.ip(RtnetlinkNumbers.nhaGateway)
        return .nexthop(Nexthop(id: id, interface: oif, gateway: gateway, group: group), removed: false)
    }

    static func parseNeighbour(_ hdr: UnsafeMutablePointer<nlmsghdr>, removed: Bool) throws(NetlinkParseError) -> RouteMessage {
        let context = removed ? "RTM_DELNEIGH" : "RTM_NEWNEIGH"
        let ndm = try fixedHeader(hdr, as: NeighbourMessageHeader.self, context: context)
        // Bridge FDB entries (AF_BRIDGE) and proxy entries are not neighbours of this host.
        guard ndm.family == UInt8(AF_INET) || ndm.family == UInt8(AF_INET6), ndm.flags & 0x08 == 0 /* NTF_PROXY */ else { return .ignored }
        guard ndm.ifindex > 0 else {
            throw NetlinkParseError(message: context, attribute: "header", problem: "ifindex \(ndm.ifindex) is not positive")
        }
        let attrs = try AttributeTable(
            message: hdr, headerLength: MemoryLayout<NeighbourMessageHeader>.size, maxType: RtnetlinkNumbers.ndaMax,
            context: context, names: { $0 == RtnetlinkNumbers.ndaDst ? "NDA_DST" : $0 == RtnetlinkNumbers.ndaLLAddr ? "NDA_LLADDR" : "NDA attribute \($0)" })
        guard let address = try attrs.ip(RtnetlinkNumbers.ndaDst) else {
            throw NetlinkParseError(message: context, attribute: "NDA_DST", problem: "missing on ifindex \(ndm.ifindex)")
        }
        let mac = attrs.bytes(RtnetlinkNumbers.ndaLLAddr).flatMap { MACAddress(bytes: $0) }
        let unresolved = ndm.state == 0 || ndm.state & RtnetlinkNumbers.unresolvedStates != 0 || mac == nil
        return .neighbour(index: ndm.ifindex, address: address, mac: mac, removed: removed || unresolved)
    }

    /// Walks the `struct rtnexthop` list of RTA_MULTIPATH: {u16 len, u8 flags, u8 hops, i32 ifindex} + attributes.
    static func parseNextHops(_ bytes: [UInt8], context: String) throws(NetlinkParseError) -> [(Int32, IPAddress?)] {
        var out: [(Int32, IPAddress?)] = []
        var off = 0
        while off + 8 <= bytes.count {
            let len = Int(UInt16(bytes[off]) | UInt16(bytes[off + 1]) << 8)
            guard len >= 8, off + len <= bytes.count else {
                throw NetlinkParseError(message: context, attribute: "RTA_MULTIPATH", problem: "next hop at offset \(off) has length \(len), \(bytes.count - off) bytes left")
            }
            let ifindex = Int32(bitPattern: UInt32(bytes[off + 4]) | UInt32(bytes[off + 5]) << 8 | UInt32(bytes[off + 6]) << 16 | UInt32(bytes[off + 7]) << 24)
            var gateway: IPAddress?
            var a = off + 8
            while a + 4 <= off + len {
                let alen = Int(UInt16(bytes[a]) | UInt16(bytes[a + 1]) << 8)
                let atype = Int(UInt16(bytes[a + 2]) | UInt16(bytes[a + 3]) << 8)
                guard alen >= 4, a + alen <= off + len else {
                    throw NetlinkParseError(message: context, attribute: "RTA_MULTIPATH", problem: "attribute at offset \(a) overruns its next hop")
                }
                if atype == Int(RTA_GATEWAY.rawValue) { gateway = IPAddress(bytes: Array(bytes[(a + 4)..<(a + alen)])) }
                a += (alen + 3) & ~3
            }
            out.append((ifindex, gateway))
            off += (len + 3) & ~3
        }
        return out
    }
}
