// The observed network state: immutable values the netlink watcher produces and the
// decision consumes. Nothing here does I/O; every type is a plain value so that tests can
// build any situation by hand.

import SegguardEssentials

/// A link-layer (MAC / BSSID) address of six bytes.
public struct MACAddress: Hashable, Sendable, Codable, CustomStringConvertible, Comparable {
    public let bytes: [UInt8]

    /// Wraps six bytes; returns nil for any other length.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 6 else { return nil }
        self.bytes = bytes
    }

    /// Parses `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff` (any case).
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).count == 6
            ? text.split(separator: ":", omittingEmptySubsequences: false)
            : text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var out: [UInt8] = []
        for p in parts {
            guard p.count == 2, p.allSatisfy(\.isHexDigit), let b = UInt8(p, radix: 16) else { return nil }
            out.append(b)
        }
        self.bytes = out
    }

    public var description: String {
        bytes.map { b in
            let s = String(b, radix: 16)
            return s.count == 1 ? "0" + s : s
        }.joined(separator: ":")
    }

    public static func < (a: MACAddress, b: MACAddress) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let mac = MACAddress(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "bad MAC \(text)"))
        }
        self = mac
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// A Wi-Fi network name: up to 32 arbitrary bytes (not necessarily UTF-8).
public struct SSID: Hashable, Sendable, Codable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) { self.bytes = bytes }
    public init(_ text: String) { self.bytes = Array(text.utf8) }

    /// True for the zero-length SSID a hidden network advertises in beacons.
    public var isEmpty: Bool { bytes.isEmpty }

    /// UTF-8 text when the bytes are valid UTF-8 with nothing that could disguise it in a log
    /// (control characters, bidirectional overrides, backslash), else nil.
    public var utf8Text: String? {
        guard let s = String(validating: bytes, as: UTF8.self) else { return nil }
        let disguising: (Unicode.Scalar) -> Bool = { c in
            c.properties.generalCategory == .control || c == "\\"
                || (0x202A...0x202E).contains(c.value) || (0x2066...0x2069).contains(c.value) || c.value == 0x200E || c.value == 0x200F
        }
        if s.unicodeScalars.contains(where: disguising) { return nil }
        return s
    }

    /// Printable form: the UTF-8 text, or else every byte outside printable ASCII (and the
    /// backslash) escaped as `\xNN` (the form `iw` prints), so logs never carry raw control
    /// bytes and the text `\xff` cannot pass for the byte 0xff.
    public var description: String {
        if let t = utf8Text { return t }
        var s = ""
        for b in bytes {
            if b >= 0x20 && b < 0x7f && b != UInt8(ascii: "\\") {
                s.unicodeScalars.append(Unicode.Scalar(b))
            } else {
                let h = String(b, radix: 16)
                s += "\\x" + (h.count == 1 ? "0" + h : h)
            }
        }
        return s
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        self.bytes = try c.decode([UInt8].self)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(bytes)
    }
}

/// What sort of link an interface is, as far as the segment rules care.
public enum InterfaceKind: String, Sendable, Codable, CaseIterable {
    /// An Ethernet-type device with no virtual link kind (a NIC, a USB Ethernet adapter).
    case wired
    /// A device nl80211 knows (a Wi-Fi station interface).
    case wireless
    /// A kernel-made link (veth, bridge, vlan, tun, wireguard, dummy, bond, …) or a non-Ethernet device.
    case virtual
    /// The loopback device.
    case loopback
}

/// RFC 2863 operational state as the kernel reports it in IFLA_OPERSTATE.
public enum OperState: String, Sendable, Codable, CaseIterable {
    case unknown, notPresent = "not-present", down, lowerLayerDown = "lower-layer-down", testing, dormant, up

    public init(kernelValue: UInt8) {
        switch kernelValue {
        case 1: self = .notPresent
        case 2: self = .down
        case 3: self = .lowerLayerDown
        case 4: self = .testing
        case 5: self = .dormant
        case 6: self = .up
        default: self = .unknown
        }
    }
}

/// The security a Wi-Fi association uses, derived from the AKM suite.
public enum WirelessSecurity: String, Sendable, Codable, CaseIterable, Comparable {
    /// No encryption.
    case open
    /// Legacy WEP (privacy bit set, no RSN/WPA element).
    case wep
    /// Opportunistic Wireless Encryption (encrypted, unauthenticated).
    case owe
    /// WPA/WPA2 personal: a pre-shared key.
    case psk
    /// WPA3 personal (SAE).
    case sae
    /// WPA2/WPA3 Enterprise: IEEE 802.1X authentication.
    case enterprise
    /// An AKM suite segment-guard does not know.
    case unknown

    /// Strength order used when a network advertises several AKM suites and the one in use
    /// is not known: the weakest advertised one is assumed.
    var rank: Int {
        switch self {
        case .unknown: 0
        case .open: 1
        case .wep: 2
        case .owe: 3
        case .psk: 4
        case .sae: 5
        case .enterprise: 6
        }
    }

    public static func < (a: WirelessSecurity, b: WirelessSecurity) -> Bool { a.rank < b.rank }

    /// Classifies one AKM suite selector (OUI << 8 | type), e.g. 0x000FAC01 → enterprise.
    public init(akmSuite: UInt32) {
        switch akmSuite {
        // IEEE 802.11 (00-0F-AC): 1 802.1X, 3 FT-802.1X, 5 802.1X-SHA256, 11/12 Suite B,
        // 13 FT-802.1X-SHA384, 14/15/16/17 FILS, 22/23 FT/802.1X-SHA384 variants.
        case 0x000F_AC01, 0x000F_AC03, 0x000F_AC05, 0x000F_AC0B, 0x000F_AC0C, 0x000F_AC0D,
            0x000F_AC0E, 0x000F_AC0F, 0x000F_AC10, 0x000F_AC11, 0x000F_AC16, 0x000F_AC17:
            self = .enterprise
        // 2 PSK, 4 FT-PSK, 6 PSK-SHA256, 19 FT-PSK-SHA384, 20 PSK-SHA384.
        case 0x000F_AC02, 0x000F_AC04, 0x000F_AC06, 0x000F_AC13, 0x000F_AC14:
            self = .psk
        // 8 SAE, 9 FT-SAE, 24 SAE-EXT-KEY, 25 FT-SAE-EXT-KEY.
        case 0x000F_AC08, 0x000F_AC09, 0x000F_AC18, 0x000F_AC19:
            self = .sae
        // 18 OWE.
        case 0x000F_AC12:
            self = .owe
        // WPA1 (00-50-F2): 1 802.1X, 2 PSK.
        case 0x0050_F201: self = .enterprise
        case 0x0050_F202: self = .psk
        default: self = .unknown
        }
    }
}

/// Association state of a Wi-Fi station interface, read from nl80211.
public struct WirelessLink: Sendable, Equatable, Codable {
    /// Nil while not associated.
    public var ssid: SSID?
    public var bssid: MACAddress?
    public var frequencyMHz: UInt32?
    public var security: WirelessSecurity
    /// AKM suite selectors the associated BSS advertises (RSN/WPA element), as read.
    public var akmSuites: [UInt32]
    /// Signal of the associated access point in dBm (nl80211 connection-quality events, or
    /// the station's NL80211_STA_INFO_SIGNAL); nil while unknown.
    public var signalDBM: Int32?

    public init(ssid: SSID?, bssid: MACAddress?, frequencyMHz: UInt32?, security: WirelessSecurity, akmSuites: [UInt32] = [], signalDBM: Int32? = nil) {
        self.signalDBM = signalDBM
        self.ssid = ssid
        self.bssid = bssid
        self.frequencyMHz = frequencyMHz
        self.security = security
        self.akmSuites = akmSuites
    }

    /// True when associated to a BSS.
    public var isAssociated: Bool { bssid != nil }

    public static let disconnected = WirelessLink(ssid: nil, bssid: nil, frequencyMHz: nil, security: .unknown)
}

/// An address configured on an interface.
public struct InterfaceAddress: Hashable, Sendable, Codable, CustomStringConvertible {
    public var address: IPAddress
    public var prefixLength: UInt8
    /// RT_SCOPE_* value: 0 universe (global), 253 link, 254 host.
    public var scope: UInt8

    public init(address: IPAddress, prefixLength: UInt8, scope: UInt8 = 0) {
        self.address = address
        self.prefixLength = prefixLength
        self.scope = scope
    }

    public var isGlobal: Bool { scope == 0 }
    public var description: String { "\(address)/\(prefixLength)" }
}

/// A route that covers the internet, leaving through an interface: a default route (0.0.0.0/0,
/// ::/0) or a wide one that does the same job (the split halves 0.0.0.0/1 + 128.0.0.0/1 VPN
/// clients install; any IPv4 route of prefix length 7 or less, any IPv6 one of 3 or less,
/// which covers 2000::/3, all global unicast). Wherever it is found: any routing table but
/// `local`, through an interface directly, a multipath route or a nexthop object.
public struct DefaultRoute: Hashable, Sendable, Codable, CustomStringConvertible {
    public var family: IPAddress.Family
    public var gateway: IPAddress?
    public var metric: UInt32
    public var table: UInt32
    /// Nil for a default route; else the wide destination (e.g. 128.0.0.0/1).
    public var destination: IPPrefix?

    public init(family: IPAddress.Family, gateway: IPAddress?, metric: UInt32 = 0, table: UInt32 = 254, destination: IPPrefix? = nil) {
        self.family = family
        self.gateway = gateway
        self.metric = metric
        self.table = table
        self.destination = destination.flatMap { $0.length == 0 ? nil : $0 }
    }

    /// Longest prefix length that still counts as covering the internet, per family.
    public static func coversInternet(family: IPAddress.Family, prefixLength: UInt8) -> Bool {
        family == .ipv4 ? prefixLength <= 7 : prefixLength <= 3
    }

    public var description: String {
        let dst = destination?.description ?? (family == .ipv4 ? "0.0.0.0/0" : "::/0")
        var s = dst
        if let g = gateway { s += " via \(g)" }
        if metric != 0 { s += " metric \(metric)" }
        if table != 254 { s += " table \(table)" }
        return s
    }
}

/// An entry of the kernel's neighbour table (ARP, IPv6 neighbour discovery): which link-layer
/// address answers for an IP address on the link. Only resolved entries are kept (reachable,
/// stale, delay, probe, permanent): an incomplete or failed entry names no MAC.
public struct Neighbour: Hashable, Sendable, Codable, CustomStringConvertible {
    public var address: IPAddress
    public var mac: MACAddress

    public init(address: IPAddress, mac: MACAddress) {
        self.address = address
        self.mac = mac
    }

    public var description: String { "\(address) at \(mac)" }
}

/// Everything segment-guard knows about one network interface at one instant.
public struct InterfaceState: Sendable, Equatable, Codable {
    public var index: Int32
    public var name: String
    public var kind: InterfaceKind
    /// IFLA_INFO_KIND ("veth", "bridge", "vlan", …) for kernel-made links, else nil.
    public var linkKind: String?
    public var mac: MACAddress?
    /// IFF_UP: the administrator brought it up.
    public var isAdminUp: Bool
    public var operState: OperState
    public var hasCarrier: Bool
    /// The kernel's count of carrier transitions (IFLA_CARRIER_CHANGES), when it reports one.
    public var carrierChanges: UInt32?
    public var addresses: [InterfaceAddress]
    public var defaultRoutes: [DefaultRoute]
    /// Resolved neighbour entries on the link, by address.
    public var neighbours: [Neighbour]
    /// Present for wireless interfaces once nl80211 has been read.
    public var wireless: WirelessLink?
    /// 802.1X state from wpa_supplicant, when a supplicant runs on the interface.
    public var deviceAuth: DeviceAuthState?
    /// The office-area signal fences of the Wi-Fi rules this interface could match, as the
    /// agent keeps them (with hysteresis over time); empty when no rule has one.
    public var signalFences: [SignalFenceState]
    /// The last trusted-server probe of each server made through this interface for its
    /// current network (link, addresses, gateway MACs), when a rule asks for one; a server
    /// is absent until its probe has finished.
    public var trustedServers: [TrustedServerResult]

    public init(
        index: Int32, name: String, kind: InterfaceKind, linkKind: String? = nil, mac: MACAddress? = nil,
        isAdminUp: Bool = true, operState: OperState = .up, hasCarrier: Bool = true,
        addresses: [InterfaceAddress] = [], defaultRoutes: [DefaultRoute] = [], wireless: WirelessLink? = nil,
        deviceAuth: DeviceAuthState? = nil, neighbours: [Neighbour] = [], trustedServers: [TrustedServerResult] = [],
        signalFences: [SignalFenceState] = []
    ) {
        self.signalFences = signalFences
        self.neighbours = neighbours
        self.trustedServers = trustedServers
        self.deviceAuth = deviceAuth
        self.index = index
        self.name = name
        self.kind = kind
        self.linkKind = linkKind
        self.mac = mac
        self.isAdminUp = isAdminUp
        self.operState = operState
        self.hasCarrier = hasCarrier
        self.addresses = addresses
        self.defaultRoutes = defaultRoutes
        self.wireless = wireless
    }

    /// Up, with carrier, and operationally up (or unknown, as some drivers report).
    public var isRunning: Bool {
        isAdminUp && hasCarrier && (operState == .up || operState == .unknown)
    }

    /// The neighbour entry of `address`, if resolved.
    public func neighbour(_ address: IPAddress) -> Neighbour? { neighbours.first { $0.address == address } }

    /// Running and carrying a default route: a path off this machine.
    public var isUplink: Bool { isRunning && !defaultRoutes.isEmpty && kind != .loopback }
}

/// An immutable picture of every interface, produced after each batch of netlink events.
public struct NetworkSnapshot: Sendable, Equatable, Codable {
    /// Interfaces ordered by ifindex.
    public var interfaces: [InterfaceState]
    /// Counts the snapshots the watcher has published; grows by one per change.
    public var generation: UInt64
    /// Whether nl80211 could be watched (false on kernels without cfg80211).
    public var wirelessMonitoring: Bool

    public init(interfaces: [InterfaceState], generation: UInt64 = 0, wirelessMonitoring: Bool = true) {
        self.interfaces = interfaces.sorted { $0.index < $1.index }
        self.generation = generation
        self.wirelessMonitoring = wirelessMonitoring
    }

    public subscript(name: String) -> InterfaceState? { interfaces.first { $0.name == name } }

    public static let empty = NetworkSnapshot(interfaces: [])
}

/// The outcome of a trusted-server probe (a TLS handshake through the interface to an office
/// server whose key is pinned), as the agent merges it into the snapshot.
public struct TrustedServerResult: Sendable, Equatable, Codable {
    /// "host:port" of the server probed.
    public var server: String
    /// True when the handshake completed with a pinned key.
    public var proven: Bool
    /// What was seen: the key's SHA-256 when proven, else what failed.
    public var detail: String

    public init(server: String, proven: Bool, detail: String) {
        self.server = server
        self.proven = proven
        self.detail = detail
    }
}

/// The office-area fence of a Wi-Fi rule: the access point's signal must reach `enterDBM` to
/// count as inside, and is left only after staying below `leaveBelowDBM` for `leaveAfterSeconds`
/// (hysteresis: no flapping at the threshold, no block for a moment's fade).
public struct SignalFence: Sendable, Equatable, Hashable, Codable, CustomStringConvertible {
    public var enterDBM: Int32
    public var leaveBelowDBM: Int32
    public var leaveAfterSeconds: Double
    public init(enterDBM: Int32, leaveBelowDBM: Int32, leaveAfterSeconds: Double) {
        self.enterDBM = enterDBM
        self.leaveBelowDBM = leaveBelowDBM
        self.leaveAfterSeconds = leaveAfterSeconds
    }
    public var description: String { "enter at \(enterDBM) dBm, leave below \(leaveBelowDBM) dBm after \(decimal(leaveAfterSeconds)) s" }
}

/// Where an interface stands against one fence.
public struct SignalFenceState: Sendable, Equatable, Codable {
    public var fence: SignalFence
    public var inside: Bool
    /// The signal it was judged on.
    public var signalDBM: Int32?
    /// Seconds (the agent's clock) since the signal has been below `leaveBelowDBM`, while inside.
    public var belowSince: Double?

    public init(fence: SignalFence, inside: Bool, signalDBM: Int32?, belowSince: Double? = nil) {
        self.fence = fence
        self.inside = inside
        self.signalDBM = signalDBM
        self.belowSince = belowSince
    }

    /// The next state for `signal` at `now` (seconds); a new association starts from nil
    /// (outside: it must reach the entry threshold). Returns when to look again (the moment a
    /// fade below `leaveBelowDBM` would have lasted `leaveAfterSeconds`), or nil.
    public static func step(_ old: SignalFenceState?, fence: SignalFence, signal: Int32?, now: Double) -> (SignalFenceState, recheckAt: Double?) {
        guard let old, old.inside else {
            // Outside (or a new association): in only at the entry level; unknown is outside.
            return (SignalFenceState(fence: fence, inside: signal.map { $0 >= fence.enterDBM } ?? false, signalDBM: signal), nil)
        }
        // Inside, a signal that is momentarily unknown counts as a fade, not as leaving.
        if let signal, signal >= fence.leaveBelowDBM {
            return (SignalFenceState(fence: fence, inside: true, signalDBM: signal), nil)
        }
        let since = old.belowSince ?? now
        if now - since >= fence.leaveAfterSeconds {
            return (SignalFenceState(fence: fence, inside: false, signalDBM: signal), nil)
        }
        return (SignalFenceState(fence: fence, inside: true, signalDBM: signal, belowSince: since), since + fence.leaveAfterSeconds)
    }
}
