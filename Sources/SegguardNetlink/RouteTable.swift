// The rtnetlink half of the network state: links, addresses and default routes by ifindex,
// changed only by `apply`. Pure value; the watcher thread owns the one live instance.

import SegguardPolicy

/// Links, addresses and default routes as rtnetlink has reported them so far.
public struct RouteTable: Sendable, Equatable {
    public private(set) var links: [Int32: LinkInfo] = [:]
    public private(set) var addresses: [Int32: Set<InterfaceAddress>] = [:]
    public private(set) var routes: [Int32: Set<DefaultRoute>] = [:]
    /// Nexthop objects by id, and the wide routes that leave through them (by nexthop id).
    public private(set) var nexthops: [UInt32: Nexthop] = [:]
    public private(set) var nexthopRoutes: [UInt32: Set<DefaultRoute>] = [:]
    /// Resolved neighbour entries by ifindex, then address.
    public private(set) var neighbours: [Int32: [IPAddress: MACAddress]] = [:]
    /// Links whose state changed since the last `interfaces(…reusing:)`.
    public private(set) var changedIndexes: Set<Int32> = []

    public init() {}

    public static func == (a: RouteTable, b: RouteTable) -> Bool {
        a.links == b.links && a.addresses == b.addresses && a.routes == b.routes && a.nexthops == b.nexthops
            && a.nexthopRoutes == b.nexthopRoutes && a.neighbours == b.neighbours
    }

    /// Applies one message; returns whether anything changed. Only the entries the message
    /// touches are compared (no copy of the whole table: this runs for every netlink message).
    @discardableResult
    public mutating func apply(_ message: RouteMessage) -> Bool {
        switch message {
        case let .nexthop(nh, removed):
            // The interfaces of the nexthop before and after, and of every group holding it.
            let before = interfaces(ofNexthop: nh.id)
            let changed: Bool
            if removed {
                // The kernel deletes the routes through a deleted nexthop without RTM_DELROUTE.
                changed = nexthops.removeValue(forKey: nh.id) != nil
                nexthopRoutes[nh.id] = nil
            } else {
                changed = nexthops.updateValue(nh, forKey: nh.id) != nh
            }
            if changed { changedIndexes.formUnion(before.union(interfaces(ofNexthop: nh.id))) }
            return changed
        case let .routeReplaced(key):
            func same(_ r: DefaultRoute) -> Bool {
                r.family == key.family && r.destination == key.destination && r.metric == key.metric && r.table == key.table
            }
            var changed = false
            for (index, set) in routes {
                let kept = set.filter { !same($0) }
                guard kept.count != set.count else { continue }
                routes[index] = kept.isEmpty ? nil : kept
                changedIndexes.insert(index)
                changed = true
            }
            for (id, set) in nexthopRoutes {
                let kept = set.filter { !same($0) }
                guard kept.count != set.count else { continue }
                changedIndexes.formUnion(interfaces(ofNexthop: id))
                nexthopRoutes[id] = kept.isEmpty ? nil : kept
                changed = true
            }
            return changed
        case let .nexthopRoute(id, route, removed):
            let changed: Bool
            if removed {
                changed = nexthopRoutes[id]?.remove(route) != nil
                if nexthopRoutes[id]?.isEmpty == true { nexthopRoutes[id] = nil }
            } else {
                changed = nexthopRoutes[id, default: []].insert(route).inserted
            }
            if changed { changedIndexes.formUnion(interfaces(ofNexthop: id)) }
            return changed
        default:
            let changed = change(message)
            if changed, let index = message.index { changedIndexes.insert(index) }
            return changed
        }
    }

    /// The interfaces a nexthop (or a group, one level deep as the kernel allows) leaves through.
    func interfaces(ofNexthop id: UInt32) -> Set<Int32> {
        // A group's change shows on its members' interfaces; a member's change on its own
        // interface, which is also where the routes through its groups leave.
        Set(resolve(id).map(\.0))
    }

    /// (interface, gateway) of each hop of a nexthop object; a group's members, one level deep.
    func resolve(_ id: UInt32) -> [(Int32, IPAddress?)] {
        guard let nh = nexthops[id] else { return [] }
        if let i = nh.interface { return [(i, nh.gateway)] }
        return nh.group.compactMap { m in nexthops[m].flatMap { n in n.interface.map { ($0, n.gateway) } } }
    }

    /// Wide routes through nexthop objects that leave through `index`, with the hop's gateway.
    func nexthopRoutes(through index: Int32) -> [DefaultRoute] {
        guard !nexthopRoutes.isEmpty else { return [] }
        var out: [DefaultRoute] = []
        for (id, set) in nexthopRoutes {
            for (hop, gateway) in resolve(id) where hop == index {
                for var r in set {
                    r.gateway = gateway
                    out.append(r)
                }
            }
        }
        return out
    }

    private mutating func change(_ message: RouteMessage) -> Bool {
        switch message {
        case let .link(info):
            let old = links.updateValue(info, forKey: info.index)
            // The kernel flushes IPv4 routes of a link taken down without sending RTM_DELROUTE;
            // forget them here so a stale default route never counts as an uplink.
            var flushed = false
            if (old?.isAdminUp ?? true) && !info.isAdminUp {
                flushed = routes.removeValue(forKey: info.index) != nil
                // Its nexthop objects go too (nexthop_flush_dev sends no RTM_DELNEXTHOP), and
                // the routes through them.
                for (id, nh) in nexthops where nh.interface == info.index {
                    nexthops[id] = nil
                    nexthopRoutes[id] = nil
                    flushed = true
                }
            }
            return old != info || flushed
        case let .linkRemoved(index):
            let a = links.removeValue(forKey: index) != nil
            let b = addresses.removeValue(forKey: index) != nil
            let c = routes.removeValue(forKey: index) != nil
            let d = neighbours.removeValue(forKey: index) != nil
            for (id, nh) in nexthops where nh.interface == index {
                nexthops[id] = nil
                nexthopRoutes[id] = nil
            }
            return a || b || c || d
        case let .neighbour(index, address, mac, removed):
            if removed || mac == nil {
                guard neighbours[index]?.removeValue(forKey: address) != nil else { return false }
                if neighbours[index]?.isEmpty == true { neighbours[index] = nil }
                return true
            }
            return neighbours[index, default: [:]].updateValue(mac!, forKey: address) != mac
        case let .address(index, addr, removed):
            if removed {
                guard addresses[index]?.remove(addr) != nil else { return false }
                if addresses[index]?.isEmpty == true { addresses[index] = nil }
                // The kernel also drops a link's IPv4 routes, without RTM_DELROUTE, when its
                // last IPv4 address goes.
                if addr.address.family == .ipv4, !(addresses[index] ?? []).contains(where: { $0.address.family == .ipv4 }) {
                    routes[index] = routes[index]?.filter { $0.family != .ipv4 }
                    if routes[index]?.isEmpty == true { routes[index] = nil }
                }
                return true
            }
            return addresses[index, default: []].insert(addr).inserted
        case let .defaultRoute(index, route, removed):
            if removed {
                guard routes[index]?.remove(route) != nil else { return false }
                if routes[index]?.isEmpty == true { routes[index] = nil }
                return true
            }
            return routes[index, default: []].insert(route).inserted
        case .ignored, .nexthop, .nexthopRoute, .routeReplaced:
            return false
        }
    }

    /// Builds interface states. `wireless` gives nl80211's view of an ifindex (nil: not a
    /// Wi-Fi interface); `deviceType` gives a fallback classification (sysfs DEVTYPE) or nil.
    public func interfaces(
        wireless: (Int32) -> WirelessLink?, deviceType: (LinkInfo) -> String? = { _ in nil }
    ) -> [InterfaceState] {
        links.values.sorted { $0.index < $1.index }.map { interface($0, wifi: wireless($0.index), devtype: deviceType($0)) }
    }

    /// The same as `interfaces(wireless:deviceType:)`, reusing from `cache` the state of every
    /// link whose messages, Wi-Fi association and device type did not change since the last
    /// call: a carrier change builds one interface, not all of them.
    public mutating func interfaces(
        wireless: (Int32) -> WirelessLink?, deviceType: (LinkInfo) -> String? = { _ in nil }, reusing cache: inout InterfaceCache
    ) -> [InterfaceState] {
        let ordered = links.values.sorted { $0.index < $1.index }
        var out: [InterfaceState] = []
        out.reserveCapacity(ordered.count)
        var next: [Int32: InterfaceCache.Entry] = [:]
        for link in ordered {
            let wifi = wireless(link.index), devtype = deviceType(link)
            let state: InterfaceState
            if !changedIndexes.contains(link.index), let e = cache.entries[link.index], e.wifi == wifi, e.devtype == devtype {
                state = e.state
            } else {
                state = interface(link, wifi: wifi, devtype: devtype)
            }
            next[link.index] = InterfaceCache.Entry(state: state, wifi: wifi, devtype: devtype)
            out.append(state)
        }
        cache.entries = next
        changedIndexes = []
        return out
    }

    /// One interface's state from its link, addresses, routes and Wi-Fi link.
    func interface(_ link: LinkInfo, wifi: WirelessLink?, devtype: String?) -> InterfaceState {
        var linkKind = link.linkKind
        let kind: InterfaceKind
        if link.deviceType == 772 {  // ARPHRD_LOOPBACK
            kind = .loopback
        } else if wifi != nil || devtype == "wlan" {
            kind = .wireless
        } else if link.linkKind != nil {
            kind = .virtual
        } else if devtype == "wwan" {
            kind = .virtual
            linkKind = "wwan"
        } else if link.deviceType == 1 {  // ARPHRD_ETHER
            kind = .wired
        } else {
            kind = .virtual
        }
        var state = InterfaceState(
            index: link.index, name: link.name, kind: kind, linkKind: linkKind, mac: link.mac,
            isAdminUp: link.isAdminUp, operState: link.operState, hasCarrier: link.hasCarrier,
            // By their text, each text made once (not twice per comparison).
            addresses: (addresses[link.index] ?? []).map { ($0.description, $0) }.sorted { $0.0 < $1.0 }.map(\.1),
            defaultRoutes: (Array(routes[link.index] ?? []) + nexthopRoutes(through: link.index)).map { ($0.description, $0) }
                .sorted { ($0.1.family.rawValue, $0.1.metric, $0.0) < ($1.1.family.rawValue, $1.1.metric, $1.0) }.map(\.1),
            wireless: kind == .wireless ? (wifi ?? .disconnected) : nil,
            neighbours: (neighbours[link.index] ?? [:]).map { Neighbour(address: $0.key, mac: $0.value) }.map { ($0.address.description, $0) }
                .sorted { $0.0 < $1.0 }.map(\.1))
        state.carrierChanges = link.carrierChanges
        return state
    }
}

/// Interface states built by `RouteTable.interfaces(…reusing:)`, with the inputs they were
/// built from. Owned by the one caller that publishes snapshots (the watcher).
public struct InterfaceCache: Sendable {
    struct Entry: Sendable {
        var state: InterfaceState
        var wifi: WirelessLink?
        var devtype: String?
    }
    var entries: [Int32: Entry] = [:]
    public init() {}
}

extension RouteMessage {
    /// The ifindex the message is about (nil for an ignored one).
    var index: Int32? {
        switch self {
        case .link(let info): info.index
        case .linkRemoved(let index), .address(let index, _, _), .defaultRoute(let index, _, _), .neighbour(let index, _, _, _): index
        case .ignored, .nexthop, .nexthopRoute, .routeReplaced: nil
        }
    }
}
