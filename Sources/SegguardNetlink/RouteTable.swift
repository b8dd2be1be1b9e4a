// The rtnetlink half of the network state: links, addresses and default routes by ifindex,
// changed only by `apply`. Pure value; the watcher thread owns the one live instance.

import SegguardPolicy

/// Links, addresses and default routes as rtnetlink has reported them so far.
public struct RouteTable: Sendable, Equatable {
    public private(set) var links: [Int32: LinkInfo] = [:]
    public private(set) var addresses: [Int32: Set<InterfaceAddress>] = [:]
    public private(set) var routes: [Int32: Set<DefaultRoute>] = [:]

    public init() {}

    /// Applies one message; returns whether anything changed.
    @discardableResult
    public mutating func apply(_ message: RouteMessage) -> Bool {
        let before = self
        switch message {
        case let .link(info):
            let wasUp = links[info.index]?.isAdminUp ?? true
            links[info.index] = info
            // The kernel flushes IPv4 routes of a link taken down without sending RTM_DELROUTE;
            // forget them here so a stale default route never counts as an uplink.
            if wasUp && !info.isAdminUp { routes[info.index] = nil }
        case let .linkRemoved(index):
            links[index] = nil
            addresses[index] = nil
            routes[index] = nil
        case let .address(index, addr, removed):
            if removed {
                addresses[index]?.remove(addr)
                if addresses[index]?.isEmpty == true { addresses[index] = nil }
                // The kernel also drops a link's IPv4 routes, without RTM_DELROUTE, when its
                // last IPv4 address goes.
                if addr.address.family == .ipv4, !(addresses[index] ?? []).contains(where: { $0.address.family == .ipv4 }) {
                    routes[index] = routes[index]?.filter { $0.family != .ipv4 }
                    if routes[index]?.isEmpty == true { routes[index] = nil }
                }
            } else {
                addresses[index, default: []].insert(addr)
            }
        case let .defaultRoute(index, route, removed):
            if removed {
                routes[index]?.remove(route)
                if routes[index]?.isEmpty == true { routes[index] = nil }
            } else {
                routes[index, default: []].insert(route)
            }
        case .ignored:
            break
        }
        return self != before
    }

    /// Builds interface states. `wireless` gives nl80211's view of an ifindex (nil: not a
    /// Wi-Fi interface); `deviceType` gives a fallback classification (sysfs DEVTYPE) or nil.
    public func interfaces(
        wireless: (Int32) -> WirelessLink?, deviceType: (LinkInfo) -> String? = { _ in nil }
    ) -> [InterfaceState] {
        links.values.sorted { $0.index < $1.index }.map { link in
            let wifi = wireless(link.index)
            let devtype = deviceType(link)
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
                addresses: (addresses[link.index] ?? []).sorted { $0.description < $1.description },
                defaultRoutes: (routes[link.index] ?? []).sorted { ($0.family.rawValue, $0.metric) < ($1.family.rawValue, $1.metric) },
                wireless: kind == .wireless ? (wifi ?? .disconnected) : nil)
        }
    }
}
