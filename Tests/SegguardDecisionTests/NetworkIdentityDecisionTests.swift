// The network-identity requirements of a rule (gateway pins, prefixes, the trusted-server
// probe, the 802.1X server's certificate, a stale 802.1X state) and the wide routes that count
// as second uplinks, decided on hand-built snapshots. Each case names the reason an admin reads.

import Testing

import SegguardDecision
import SegguardPolicy

enum Identity {
    static let officeRouter = MACAddress("02:00:5e:00:aa:01")!
    static let homeRouter = MACAddress("02:00:5e:00:bb:01")!
    static let gatewayPin = GatewayPin(address: ip("10.20.0.1"), mac: officeRouter)

    static func policy(_ identity: NetworkIdentity, deviceAuth: DeviceAuthRequirement = .none) -> Policy {
        Policy(name: "identity", sites: [Site(name: "hq", wired: [WiredRule(interfaces: ["enp*"], deviceAuth: deviceAuth, identity: identity, location: "id.yaml:5")])])
    }

    /// enp1s0 with an address, a default route via `gateway` and the neighbour entries given.
    static func port(address: String = "10.20.3.4", prefix: UInt8 = 16, gateway: String = "10.20.0.1", neighbours: [(String, MACAddress)],
                     routes: [DefaultRoute]? = nil) -> InterfaceState {
        InterfaceState(index: 2, name: "enp1s0", kind: .wired, mac: MAC.otherNIC,
                       addresses: [InterfaceAddress(address: ip(address), prefixLength: prefix)],
                       defaultRoutes: routes ?? [v4Default(via: gateway)],
                       neighbours: neighbours.map { Neighbour(address: ip($0.0), mac: $0.1) })
    }

    static func decide(_ ifc: InterfaceState, _ p: Policy) -> Decision {
        SegmentDecider.decide(NetworkSnapshot(interfaces: [loopback(), ifc]), p)
    }
}

@Suite("Network identity in the decision")
struct NetworkIdentityDecisionTests {
    @Test("a home router (its own address and MAC) is not the office: the reason names the gateway seen and the one required")
    func homeRouter() {
        let home = Identity.port(address: "192.168.1.23", prefix: 24, gateway: "192.168.1.1", neighbours: [("192.168.1.1", Identity.homeRouter)])
        let d = Identity.decide(home, Identity.policy(NetworkIdentity(gateways: [Identity.gatewayPin])))
        #expect(d.segment == .unauthorized)
        #expect(d.reason.contains("its default gateway 192.168.1.1 at 02:00:5e:00:bb:01 is not an office gateway (10.20.0.1 at 02:00:5e:00:aa:01)"), "\(d.reason)")
    }

    @Test("the office router with its pinned MAC authorizes, and the finding says what was proven")
    func officeRouter() {
        let office = Identity.port(neighbours: [("10.20.0.1", Identity.officeRouter)])
        let d = Identity.decide(office, Identity.policy(NetworkIdentity(gateways: [Identity.gatewayPin])))
        #expect(d.segment == .authorizedWired)
        #expect(d.reason.contains("(gateway 10.20.0.1 at 02:00:5e:00:aa:01)"), "\(d.reason)")
    }

    @Test("the office address answered by another MAC (a home router set to 10.20.0.1) is refused, naming both MACs")
    func impostorRouter() {
        let fake = Identity.port(neighbours: [("10.20.0.1", Identity.homeRouter)])
        let d = Identity.decide(fake, Identity.policy(NetworkIdentity(gateways: [Identity.gatewayPin])))
        #expect(d.segment == .unauthorized)
        #expect(d.reason.contains("its gateway 10.20.0.1 answers from MAC 02:00:5e:00:bb:01, not the office router's 02:00:5e:00:aa:01"), "\(d.reason)")
    }

    @Test("not yet resolved: no office gateway in the neighbour table is unauthorized until it is")
    func unresolved() {
        let d = Identity.decide(Identity.port(neighbours: [], routes: []), Identity.policy(NetworkIdentity(gateways: [Identity.gatewayPin])))
        #expect(d.reason.contains("no office gateway (10.20.0.1 at 02:00:5e:00:aa:01) in enp1s0's neighbour table"), "\(d.reason)")
    }

    @Test("the office router seen, but a wide route through another router on the same port is refused")
    func strayRoute() {
        let port = Identity.port(neighbours: [("10.20.0.1", Identity.officeRouter), ("10.20.0.99", Identity.homeRouter)],
                                 routes: [v4Default(via: "10.20.0.1"), DefaultRoute(family: .ipv4, gateway: ip("10.20.0.99"), destination: IPPrefix("0.0.0.0/1"))])
        let d = Identity.decide(port, Identity.policy(NetworkIdentity(gateways: [Identity.gatewayPin])))
        #expect(d.segment == .unauthorized)
        #expect(d.reason.contains("its route 0.0.0.0/1 via 10.20.0.99 does not go through an office gateway"), "\(d.reason)")
    }

    @Test("prefixes: an address outside the office ranges is refused, inside is authorized")
    func prefixes() {
        let p = Identity.policy(NetworkIdentity(prefixes: [IPPrefix("10.20.0.0/16")!]))
        let outside = Identity.decide(Identity.port(address: "192.168.1.23", prefix: 24, neighbours: []), p)
        #expect(outside.reason.contains("its addresses (192.168.1.23/24) are outside the office prefixes 10.20.0.0/16"), "\(outside.reason)")
        let inside = Identity.decide(Identity.port(neighbours: []), p)
        #expect(inside.segment == .authorizedWired)
    }

    @Test("trusted server: unauthorized until proven through the interface; a failed probe gives its reason; a proven one authorizes")
    func trustedServer() {
        let server = TrustedServerRule(address: ip("10.20.0.5"), port: 443, spkiSHA256: [String(repeating: "ab", count: 32)])
        let p = Identity.policy(NetworkIdentity(trustedServer: server))
        var port = Identity.port(neighbours: [])
        #expect(Identity.decide(port, p).reason.contains("the trusted server 10.20.0.5:443 has not been proven through enp1s0 yet"))
        port.trustedServers = [TrustedServerResult(server: "10.20.0.5:443", proven: false, detail: "the server's key SHA-256 cd… is not pinned")]
        #expect(Identity.decide(port, p).reason.contains("the trusted server 10.20.0.5:443 was not proven: the server's key SHA-256 cd… is not pinned"))
        port.trustedServers = [TrustedServerResult(server: "10.20.0.9:443", proven: true, detail: "ok")]
        #expect(Identity.decide(port, p).segment == .unauthorized, "a proof of another server does not count")
        port.trustedServers = [TrustedServerResult(server: "10.20.0.5:443", proven: true, detail: "key ab…")]
        let d = Identity.decide(port, p)
        #expect(d.segment == .authorizedWired)
        #expect(d.reason.contains("trusted server 10.20.0.5:443 proven"))
    }

    static let serverCert = PeerCertificate(depth: 0, subject: "/C=JP/O=Example City/CN=radius.example.lg.jp", sha256: String(repeating: "11", count: 32),
                                            altSubjects: ["DNS:radius.example.lg.jp"], signedByNext: true, serverAuth: true, validWhenSeen: true)
    static let serverCA = PeerCertificate(depth: 1, subject: "/C=JP/O=Example City/CN=Example City RADIUS CA", sha256: String(repeating: "22", count: 32),
                                          isCA: true, serverAuth: true, validWhenSeen: true)
    static let rogueCert = PeerCertificate(depth: 0, subject: "/CN=rogue-server", sha256: String(repeating: "99", count: 32))

    static let deviceKey = String(repeating: "d0", count: 32)

    static func authed(_ chain: [PeerCertificate], successes: UInt64 = 1) -> DeviceAuthState {
        var s = DeviceAuthState(keyManagement: "IEEE 802.1X (no WPA)", eapState: "SUCCESS", eapMethod: "TLS", portStatus: .authorized,
                                identity: "tc-0001", serverChain: chain, successes: successes)
        s.clientKeySHA256 = deviceKey
        s.clientCertificate = "subject 'CN=tc-0001' in /etc/wpa_supplicant/device.pem"
        s.deviceKeySHA256 = deviceKey
        s.deviceCertificate = "subject 'CN=tc-0001,OU=mynumber' in /etc/segguard/device.pem"
        return s
    }

    @Test("802.1X server pins: the pinned certificate, CA and domain authorize; a rogue server is refused naming its certificate")
    func serverPins() {
        let pins = ServerPins(caSHA256: [String(repeating: "22", count: 32)], certSHA256: [String(repeating: "11", count: 32)], domain: "example.lg.jp")
        let p = Identity.policy(NetworkIdentity(server: pins), deviceAuth: .eapTLS)
        var port = Identity.port(neighbours: [])
        port.deviceAuth = Self.authed([Self.serverCert, Self.serverCA])
        #expect(Identity.decide(port, p).segment == .authorizedWired)
        // A rogue server sending the office CA's certificate along with its own (the signature
        // of its certificate does not verify with the office CA's key).
        var forged = Self.serverCert
        forged.signedByNext = false
        let caOnly = Identity.policy(NetworkIdentity(server: ServerPins(caSHA256: [String(repeating: "22", count: 32)])), deviceAuth: .eapTLS)
        port.deviceAuth = Self.authed([forged, Self.serverCA])
        let forgedDecision = Identity.decide(port, caOnly)
        #expect(forgedDecision.segment == .unauthorized)
        #expect(forgedDecision.reason.contains("was sent with the pinned CA '/C=JP/O=Example City/CN=Example City RADIUS CA', but the chain's signatures do not lead to it"), "\(forgedDecision.reason)")
        port.deviceAuth = Self.authed([Self.serverCert, Self.serverCA])
        #expect(Identity.decide(port, caOnly).segment == .authorizedWired)
        // Signed by the pinned CA but not a server certificate (another client's device
        // certificate): refused, as a verifying TLS client would.
        var deviceLeaf = Self.serverCert
        deviceLeaf.serverAuth = false
        port.deviceAuth = Self.authed([deviceLeaf, Self.serverCA])
        #expect(Identity.decide(port, caOnly).reason.contains("is not meant for a TLS server (its extendedKeyUsage lacks serverAuth"), "\(Identity.decide(port, caOnly).reason)")
        // Signed through a certificate that is not a CA (a device certificate of the pinned CA).
        var notCA = Self.serverCA
        notCA.subject = "/CN=tc-0999"
        notCA.isCA = false
        notCA.signedByNext = true
        var pinnedAbove = Self.serverCA
        pinnedAbove.depth = 2
        port.deviceAuth = Self.authed([Self.serverCert, notCA, pinnedAbove])
        #expect(Identity.decide(port, caOnly).reason.contains("was signed by '/CN=tc-0999', which is not a CA certificate"), "\(Identity.decide(port, caOnly).reason)")
        notCA.isCA = true
        port.deviceAuth = Self.authed([Self.serverCert, notCA, pinnedAbove])
        #expect(Identity.decide(port, caOnly).segment == .authorizedWired, "an intermediate CA under the pin")
        // Outside its validity when presented, the server's certificate or the CA's.
        var expired = Self.serverCert
        expired.validWhenSeen = false
        port.deviceAuth = Self.authed([expired, Self.serverCA])
        #expect(Identity.decide(port, caOnly).reason.contains("was not valid when presented: it was outside its notBefore/notAfter"))
        var expiredCA = Self.serverCA
        expiredCA.validWhenSeen = false
        port.deviceAuth = Self.authed([Self.serverCert, expiredCA])
        #expect(Identity.decide(port, caOnly).reason.contains("'/C=JP/O=Example City/CN=Example City RADIUS CA' in its chain was outside its notBefore/notAfter"))
        port.deviceAuth = Self.authed([Self.rogueCert])
        let rogue = Identity.decide(port, p)
        #expect(rogue.segment == .unauthorized)
        #expect(rogue.reason.contains("the 802.1X server's certificate (subject '/CN=rogue-server', SHA-256 9999999999999999…) is not the pinned one"), "\(rogue.reason)")
        port.deviceAuth = Self.authed([])
        #expect(Identity.decide(port, p).reason.contains("the 802.1X server's certificate is not known"))
        // The domain alone, matched by subjectAltName; a look-alike suffix is not a match.
        let domainOnly = Identity.policy(NetworkIdentity(server: ServerPins(domain: "example.lg.jp")), deviceAuth: .eapTLS)
        port.deviceAuth = Self.authed([Self.serverCert])
        #expect(Identity.decide(port, domainOnly).segment == .authorizedWired)
        port.deviceAuth = Self.authed([PeerCertificate(depth: 0, subject: "/CN=radius.notexample.lg.jp", altSubjects: ["DNS:radius.badexample.lg.jp"])])
        #expect(Identity.decide(port, domainOnly).reason.contains("does not name example.lg.jp (server_domain); it names radius.badexample.lg.jp, radius.notexample.lg.jp"))
    }

    @Test("an 802.1X success from before the link lost carrier does not count")
    func stale() {
        let p = Identity.policy(NetworkIdentity(), deviceAuth: .eapTLS)
        var port = Identity.port(neighbours: [])
        port.deviceAuth = Self.authed([])
        #expect(Identity.decide(port, p).segment == .authorizedWired)
        port.deviceAuth?.predatesLinkLoss = true
        let d = Identity.decide(port, p)
        #expect(d.segment == .unauthorized)
        #expect(d.reason.contains("the 802.1X authentication is from before the link lost carrier"), "\(d.reason)")
    }

    @Test("split default routes (VPN style) and a nexthop-object default route on another interface are second uplinks")
    func splitRoutesAreUplinks() {
        let office = Identity.port(neighbours: [("10.20.0.1", Identity.officeRouter)])
        var vpn = InterfaceState(index: 9, name: "tun0", kind: .virtual, linkKind: "tun",
                                 defaultRoutes: [DefaultRoute(family: .ipv4, gateway: nil, destination: IPPrefix("0.0.0.0/1")),
                                                 DefaultRoute(family: .ipv4, gateway: nil, destination: IPPrefix("128.0.0.0/1"))])
        let p = Identity.policy(NetworkIdentity(gateways: [Identity.gatewayPin]))
        let d = SegmentDecider.decide(NetworkSnapshot(interfaces: [loopback(), office, vpn]), p)
        #expect(d.segment == .unauthorized)
        #expect(d.reason.contains("tun0 (virtual tun) is a second uplink (default route 0.0.0.0/1, 128.0.0.0/1)"), "\(d.reason)")
        vpn.defaultRoutes = [DefaultRoute(family: .ipv4, gateway: ip("172.16.0.1"), table: 100)]
        let nh = SegmentDecider.decide(NetworkSnapshot(interfaces: [loopback(), office, vpn]), p)
        #expect(nh.reason.contains("tun0 (virtual tun) is a second uplink (default route 0.0.0.0/0 via 172.16.0.1 table 100)"), "\(nh.reason)")
    }
}
