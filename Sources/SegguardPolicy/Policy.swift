// The admin-written segment policy, as a validated value. Built only by `PolicyLoader`
// (or by tests); every field here has already passed validation.

/// The whole segment policy of one thin client: which networks make up the My Number segment.
public struct Policy: Sendable, Equatable, Codable {
    /// The newest schema version this build understands. Version 2 refuses a wired rule that
    /// names nothing about the network (see `NetworkIdentity`) unless it says
    /// `identity: interface-only`; version 1 loads such a rule with a warning.
    public static let supportedSchemaVersion = 2
    /// Every schema version this build reads.
    public static let supportedSchemaVersions = 1...2

    public var schemaVersion: Int
    /// Free text shown in status output and logs.
    public var name: String
    /// The office area: one or more sites, each with its own networks.
    public var sites: [Site]
    public var uplinks: UplinkRule
    public var vdi: VDIRule
    public var enforcement: EnforcementRule
    public var profiles: [LaunchProfile]
    /// Screen-capture blocking (`capture:`); off when the section is absent.
    public var capture: CaptureRule
    /// Reporting to the collector (`report:`); defaults when absent.
    public var report: ReportRule
    /// Whom a thin-client user calls (`helpdesk:`), shown under every message they see.
    public var helpdesk: HelpDesk?
    /// What the loader accepted but an admin should fix ("file:line:column: path: message").
    public var warnings: [String] = []

    public init(schemaVersion: Int = 1, name: String, sites: [Site], uplinks: UplinkRule = .init(), vdi: VDIRule = .init(),
                enforcement: EnforcementRule = .init(), profiles: [LaunchProfile] = [], capture: CaptureRule = .init(), report: ReportRule = .init()) {
        self.capture = capture
        self.report = report
        self.schemaVersion = schemaVersion
        self.name = name
        self.sites = sites
        self.uplinks = uplinks
        self.vdi = vdi
        self.enforcement = enforcement
        self.profiles = profiles
    }

    /// The profile called `name`, if any.
    public func profile(named name: String) -> LaunchProfile? { profiles.first { $0.name == name } }
}

/// One part of the office area (main building, a branch office) with its networks.
extension Policy {
    /// Some wired or wireless rule requires EAP-TLS (then this device's certificate matters).
    public var requiresEAPTLS: Bool {
        sites.contains { $0.wireless.contains { $0.deviceAuth == .eapTLS } || $0.wired.contains { $0.deviceAuth == .eapTLS } }
    }
}

public struct Site: Sendable, Equatable, Codable {
    public var name: String
    public var wireless: [WirelessRule]
    public var wired: [WiredRule]

    public init(name: String, wireless: [WirelessRule] = [], wired: [WiredRule] = []) {
        self.name = name
        self.wireless = wireless
        self.wired = wired
    }
}

/// An authorized Wi-Fi network: its SSID, the security it must use, and optionally the
/// access points (BSSIDs) of the office area it must be reached through.
public struct WirelessRule: Sendable, Equatable, Codable {
    public var ssid: SSID
    /// Accepted security; never empty.
    public var security: Set<WirelessSecurity>
    /// Empty means any access point carrying the SSID.
    public var bssids: Set<MACAddress>
    /// 802.1X authentication the association must have completed.
    public var deviceAuth: DeviceAuthRequirement
    /// What the network behind the access point must be.
    public var identity: NetworkIdentity
    /// The office-area signal fence (`min_signal_dbm`, …); nil: any signal.
    public var fence: SignalFence?
    /// "file:line" of the rule, for reasons and errors.
    public var location: String

    public init(ssid: SSID, security: Set<WirelessSecurity> = [.enterprise], bssids: Set<MACAddress> = [],
                deviceAuth: DeviceAuthRequirement = .none, identity: NetworkIdentity = .init(), fence: SignalFence? = nil, location: String = "") {
        self.fence = fence
        self.identity = identity
        self.ssid = ssid
        self.security = security
        self.bssids = bssids
        self.deviceAuth = deviceAuth
        self.location = location
    }
}

/// An office router the interface must see: its address in the neighbour table with this MAC
/// (the same pair a `Neighbour` entry is).
public typealias GatewayPin = Neighbour

/// An office server reached through the interface by TLS whose key (SubjectPublicKeyInfo
/// SHA-256, lower-case hex) is pinned: proof of the office network a copied SSID or MAC
/// cannot give.
public struct TrustedServerRule: Sendable, Equatable, Codable {
    public var address: IPAddress
    public var port: UInt16
    /// SNI sent in the handshake; nil sends none.
    public var serverName: String?
    public var spkiSHA256: [String]
    public init(address: IPAddress, port: UInt16 = 443, serverName: String? = nil, spkiSHA256: [String]) {
        self.address = address
        self.port = port
        self.serverName = serverName
        self.spkiSHA256 = spkiSHA256
    }
    /// "address:port" ("[v6]:port").
    public var endpoint: String { address.family == .ipv6 ? "[\(address)]:\(port)" : "\(address):\(port)" }
}

/// The 802.1X authentication server a rule accepts, by what wpa_supplicant reported of its
/// certificate chain. Empty: any server (the supplicant's own `ca_cert` is then the only check).
public struct ServerPins: Sendable, Equatable, Codable {
    /// SHA-256 (hex) of a CA certificate that must appear in the chain above the server's.
    public var caSHA256: Set<String>
    /// SHA-256 (hex) of the server's own certificate.
    public var certSHA256: Set<String>
    /// DNS name the server's certificate must carry (subjectAltName DNS or CN), exact or as a
    /// suffix after a dot.
    public var domain: String?
    public init(caSHA256: Set<String> = [], certSHA256: Set<String> = [], domain: String? = nil) {
        self.caSHA256 = caSHA256
        self.certSHA256 = certSHA256
        self.domain = domain
    }
    public var isEmpty: Bool { caSHA256.isEmpty && certSHA256.isEmpty && domain == nil }
}

/// What a rule requires of the network behind the link (beyond its name, MAC, SSID, BSSID):
/// each part proves something different; see the admin guide.
public struct NetworkIdentity: Sendable, Equatable, Codable {
    /// Office routers: one must be a neighbour with its MAC, and every internet-covering route
    /// of the interface must go through one of them.
    public var gateways: [GatewayPin]
    /// The interface must hold an address inside one of these.
    public var prefixes: [IPPrefix]
    /// A TLS probe through the interface must prove this server.
    public var trustedServer: TrustedServerRule?
    /// The 802.1X server (with `device_auth`).
    public var server: ServerPins
    /// `identity: interface-only`: the admin acknowledges a wired rule that names nothing
    /// about the network (any LAN plugged into the port is the office).
    public var interfaceOnly: Bool

    public init(gateways: [GatewayPin] = [], prefixes: [IPPrefix] = [], trustedServer: TrustedServerRule? = nil,
                server: ServerPins = .init(), interfaceOnly: Bool = false) {
        self.gateways = gateways
        self.prefixes = prefixes
        self.trustedServer = trustedServer
        self.server = server
        self.interfaceOnly = interfaceOnly
    }

    /// True when nothing about the network is required.
    public var namesNothing: Bool { gateways.isEmpty && prefixes.isEmpty && trustedServer == nil }
}

/// An authorized wired port: interfaces by name pattern and/or MAC address.
public struct WiredRule: Sendable, Equatable, Codable {
    /// Shell-style patterns (`*`, `?`, `[...]`) on the interface name; empty = any name.
    public var interfaces: [String]
    /// Empty = any MAC. When both lists are given an interface must match both.
    public var macs: Set<MACAddress>
    /// Kernel-made link kinds (IFLA_INFO_KIND, e.g. "vlan") admitted besides plain wired NICs.
    public var linkKinds: Set<String>
    /// 802.1X authentication the port must have completed (wired 802.1X).
    public var deviceAuth: DeviceAuthRequirement
    /// What the network behind the port must be.
    public var identity: NetworkIdentity
    public var location: String

    public init(interfaces: [String] = [], macs: Set<MACAddress> = [], linkKinds: Set<String> = [],
                deviceAuth: DeviceAuthRequirement = .none, identity: NetworkIdentity = .init(), location: String = "") {
        self.identity = identity
        self.interfaces = interfaces
        self.macs = macs
        self.linkKinds = linkKinds
        self.deviceAuth = deviceAuth
        self.location = location
    }
}

/// What to do about other paths off the machine while it is on the My Number segment.
public struct UplinkRule: Sendable, Equatable, Codable {
    /// `deny`: another interface carrying a default route (tethering, USB modem, a second
    /// NIC) makes the segment unauthorized. `allow`: other uplinks are tolerated.
    public enum OtherUplinks: String, Sendable, Codable, CaseIterable { case deny, allow }

    public var otherUplinks: OtherUplinks
    /// Interface name patterns never counted as uplinks (e.g. a local container bridge).
    public var ignore: [String]

    public init(otherUplinks: OtherUplinks = .deny, ignore: [String] = []) {
        self.otherUplinks = otherUplinks
        self.ignore = ignore
    }
}

/// The My Number VDI/DaaS gateways whose traffic the segment binding guards.
public struct VDIRule: Sendable, Equatable, Codable {
    public var gateways: [Gateway]
    public init(gateways: [Gateway] = []) { self.gateways = gateways }
}

/// One gateway destination: an address or prefix, ports and transport.
public struct Gateway: Sendable, Equatable, Codable {
    public enum Transport: String, Sendable, Codable, CaseIterable { case tcp, udp, both }
    public var prefix: IPPrefix
    /// Empty means every port.
    public var ports: [UInt16]
    public var transport: Transport

    public init(prefix: IPPrefix, ports: [UInt16] = [], transport: Transport = .tcp) {
        self.prefix = prefix
        self.ports = ports
        self.transport = transport
    }

    /// True when the gateway's entry lists `transport` ("tcp", "udp") and `port` (nil: unknown,
    /// listed only when every port is).
    public func allows(transport name: String, port: UInt16?) -> Bool {
        let transportListed = switch transport {
        case .tcp: name == "tcp"
        case .udp: name == "udp"
        case .both: name == "tcp" || name == "udp"
        }
        guard transportListed else { return false }
        if ports.isEmpty { return true }
        return port.map { ports.contains($0) } ?? false
    }
}

/// Shell-style name matching (`*`, `?`, `[abc]`, `[a-z]`, `[!x]`) for interface names.
public enum NamePattern {
    /// True when `name` matches `pattern` as a whole.
    public static func matches(_ pattern: String, _ name: String) -> Bool {
        match(Array(pattern.unicodeScalars), 0, Array(name.unicodeScalars), 0)
    }

    /// Nil when the pattern is well formed, else what is wrong with it.
    public static func problem(in pattern: String) -> String? {
        if pattern.isEmpty { return "empty pattern" }
        var inClass = false
        for c in pattern.unicodeScalars {
            if c == "[" && !inClass { inClass = true } else if c == "]" && inClass { inClass = false }
        }
        return inClass ? "unclosed '[' in pattern \"\(pattern)\"" : nil
    }

    private static func match(_ p: [Unicode.Scalar], _ pi: Int, _ s: [Unicode.Scalar], _ si: Int) -> Bool {
        var pi = pi, si = si
        while pi < p.count {
            switch p[pi] {
            case "*":
                if pi + 1 == p.count { return true }
                for k in si...s.count where match(p, pi + 1, s, k) { return true }
                return false
            case "?":
                guard si < s.count else { return false }
                pi += 1; si += 1
            case "[":
                guard si < s.count, let close = p[(pi + 1)...].firstIndex(of: "]") else { return false }
                var set = Array(p[(pi + 1)..<close])
                var negate = false
                if set.first == "!" || set.first == "^" { negate = true; set.removeFirst() }
                var hit = false, k = 0
                while k < set.count {
                    if k + 2 < set.count, set[k + 1] == "-" {
                        if set[k].value <= s[si].value && s[si].value <= set[k + 2].value { hit = true }
                        k += 3
                    } else {
                        if set[k] == s[si] { hit = true }
                        k += 1
                    }
                }
                guard hit != negate else { return false }
                pi = close + 1; si += 1
            default:
                guard si < s.count, s[si] == p[pi] else { return false }
                pi += 1; si += 1
            }
        }
        return si == s.count
    }
}
