// The watcher's model of the network: rtnetlink's RouteTable and nl80211's WirelessTracker,
// fed one raw netlink message at a time. This is the exact path the live sockets feed, so
// tests that hand it constructed or recorded messages exercise the same code.

import CLibNL
import SegguardPolicy

/// Links, addresses, routes and Wi-Fi associations, updated from raw netlink messages.
public struct NetworkState: Sendable {
    public var routes = RouteTable()
    public var wireless = WirelessTracker()
    /// Generic-netlink family id of nl80211 in this kernel (-1: absent).
    public var nl80211Family: Int32

    public init(nl80211Family: Int32 = -1) {
        self.nl80211Family = nl80211Family
    }

    /// Applies one rtnetlink message. A message that cannot be parsed changes nothing and is thrown.
    public mutating func handleRoute(_ hdr: UnsafeMutablePointer<nlmsghdr>) throws(NetlinkParseError) {
        for m in try RtnetlinkParser.parse(hdr) { routes.apply(m) }
    }

    /// Applies one generic-netlink message; returns the nl80211 re-reads it calls for.
    /// Messages of other families are ignored.
    public mutating func handleWireless(_ hdr: UnsafeMutablePointer<nlmsghdr>) throws(NetlinkParseError) -> [WirelessReadRequest] {
        guard nl80211Family >= 0, Int32(hdr.pointee.nlmsg_type) == nl80211Family else { return [] }
        return wireless.apply(try NL80211Parser.parse(hdr))
    }

    /// The interfaces as they stand; `deviceType` is the sysfs DEVTYPE fallback.
    public func interfaces(deviceType: (LinkInfo) -> String? = { _ in nil }) -> [InterfaceState] {
        routes.interfaces(wireless: { wireless.link(for: $0) }, deviceType: deviceType)
    }

    /// The same, rebuilding only the interfaces that changed since the last call with `cache`.
    public mutating func interfaces(deviceType: (LinkInfo) -> String? = { _ in nil }, reusing cache: inout InterfaceCache) -> [InterfaceState] {
        let wireless = self.wireless
        return routes.interfaces(wireless: { wireless.link(for: $0) }, deviceType: deviceType, reusing: &cache)
    }
}
