// The rtnetlink half of the network state: links, addresses and default routes by ifindex,
// changed only by `apply`. Pure value; the watcher thread owns the one live instance.

import SegguardPolicy

/// Links, addresses and default routes as rtnetlink has reported them so far.
public struct RouteTable: Sendable, Equatable {
    public private(set) var links: [Int32: LinkInfo] = [:]
    public private(set) var addresses: [Int32: Set<InterfaceAddress>] = [:]
    public private(set) var routes: [Int32: Set<DefaultRoute>] = [:]
    /// Links whose state changed since the last `interfaces(…reusing:)`.
    public private(set) var changedIndexes: Set<Int32> = []

    public init() {}

    public static func == (a: RouteTable, b: RouteTable) -> Bool {
        a.links == b.links && a.addresses == b.addresses && a.routes == b.routes
    }

    /// Applies one message; returns whether anything changed. Only the entries the message
    /// touches are compared (no copy of the whole table: this runs for every netlink message).
    @discardableResult
    public mutating func apply(_ message: RouteMessage) -> Bool {
        let changed = change(message)
        if changed, let index = message.index { changedIndexes.insert(index) }
        return changed
    }

    private mutating func change(_ message: RouteMessage) -> Bool {
        switch message {
        case let .link(info):
            let old = links.updateValue(info, forKey: info.index)
            // The kernel flushes IPv4 routes of a link taken down without sending RTM_DELROUTE;
            // forget them here so a stale default route never counts as an uplink.
            var flushed = false
            if (old?.isAdminUp ?? true) && !info.isAdminUp { flushed = routes.removeValue(forKey: info.index) != nil }
            return old != info || flushed
        case let .linkRemoved(index):
            let a = links.removeValue(forKey: index) != nil
            let b = addresses.removeValue(forKey: index) != nil
            let c = routes.removeValue(forKey: index) != nil
            return a || b || c
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
        case .ignored:
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
        return InterfaceState(
            index: link.index, name: link.name, kind: kind, linkKind: linkKind, mac: link.mac,
            isAdminUp: link.isAdminUp, operState: link.operState, hasCarrier: link.hasCarrier,
            // By their text, each text made once (not twice per comparison).
            addresses: (addresses[link.index] ?? []).map { ($0.description, $0) }.sorted { $0.0 < $1.0 }.map(\.1),
            defaultRoutes: (routes[link.index] ?? []).sorted { ($0.family.rawValue, $0.metric) < ($1.family.rawValue, $1.metric) },
            wireless: kind == .wireless ? (wifi ?? .disconnected) : nil)
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
        case .linkRemoved(let index), .address(let index, _, _), .defaultRoute(let index, _, _): index
        case .ignored: nil
        }
    }
}
