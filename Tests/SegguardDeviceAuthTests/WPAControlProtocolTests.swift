// wpa_supplicant control-interface text: STATUS replies and events, good and malformed.

import SegguardDecision
import SegguardDeviceAuth
import SegguardPolicy
import Testing

@Suite("wpa_supplicant control protocol")
struct WPAControlProtocolTests {
    /// A STATUS reply of wpa_supplicant -Dwired after a successful EAP-TLS authentication.
    static let wiredSuccess = """
        bssid=01:80:c2:00:00:03
        freq=0
        ssid=
        id=0
        mode=station
        pairwise_cipher=NONE
        group_cipher=NONE
        key_mgmt=IEEE 802.1X (no WPA)
        wpa_state=COMPLETED
        ip_address=10.0.0.2
        Supplicant PAE state=AUTHENTICATED
        suppPortStatus=Authorized
        EAP state=SUCCESS
        selectedMethod=13 (EAP-TLS)
        EAP TLS cipher=ECDHE-RSA-AES256-GCM-SHA384
        tls_session_reused=0
        eap_session_id=0d8c
        uuid=6c4b3a8e-0000-0000-0000-000000000000
        identity=thin-client-0042.example.lg.jp

        """

    @Test("a completed EAP-TLS STATUS gives method, port, identity, and meets eap-tls")
    func success() throws {
        let s = try WPAControlProtocol.parseStatus(Self.wiredSuccess)
        #expect(s == DeviceAuthState(keyManagement: "IEEE 802.1X (no WPA)", eapState: "SUCCESS", eapMethod: "TLS",
                                     portStatus: .authorized, identity: "thin-client-0042.example.lg.jp", paeState: "AUTHENTICATED"))
        #expect(s.isComplete)
        #expect(s.shortfall(for: .eapTLS)?.hasPrefix("this device's certificate is not known") == true, "the source alone does not know the device")
        #expect(s.onThisDevice.shortfall(for: .eapTLS) == nil)
    }

    /// STATUS replies of wpa_supplicant 2.10 -Dwired sampled while hostapd re-authenticated the
    /// port (EAPOL_REAUTH): the port stays authorized, the method is briefly unknown.
    @Test("a re-authentication keeps the port authorized and the method; a failed one does not")
    func reauthentication() throws {
        let before = DeviceAuthState.continuing(try WPAControlProtocol.parseStatus(Self.wiredSuccess), from: nil, now: 100)
        let during = try WPAControlProtocol.parseStatus("key_mgmt=IEEE 802.1X (no WPA)\nwpa_state=COMPLETED\nSupplicant PAE state=AUTHENTICATING\nsuppPortStatus=Authorized\nEAP state=IDLE\n")
        #expect(during.isReauthenticating && during.isComplete)
        let carried = DeviceAuthState.continuing(during, from: before, now: 200)
        #expect(carried.eapMethod == "TLS" && carried.identity == "thin-client-0042.example.lg.jp" && carried.since == 100)
        #expect(carried.onThisDevice.shortfall(for: .eapTLS) == nil)
        let after = DeviceAuthState.continuing(try WPAControlProtocol.parseStatus(Self.wiredSuccess), from: carried, now: 300)
        #expect(after.since == 100)
        let failed = DeviceAuthState.continuing(try WPAControlProtocol.parseStatus("key_mgmt=IEEE 802.1X (no WPA)\nwpa_state=COMPLETED\nSupplicant PAE state=HELD\nsuppPortStatus=Unauthorized\nEAP state=FAILURE\nselectedMethod=13 (EAP-TLS)\n"), from: after, now: 400)
        #expect(failed.since == 400 && !failed.isComplete)
        #expect(failed.shortfall(for: .eapTLS) == "802.1X device authentication is not complete (EAP state FAILURE, port unauthorized)")
    }

    @Test("a failed or different authentication says what falls short")
    func shortfalls() throws {
        let failed = try WPAControlProtocol.parseStatus("key_mgmt=IEEE 802.1X (no WPA)\nwpa_state=ASSOCIATED\nsuppPortStatus=Unauthorized\nEAP state=FAILURE\n")
        #expect(failed.shortfall(for: .eapTLS) == "802.1X device authentication is not complete (EAP state FAILURE, port unauthorized)")
        let peap = try WPAControlProtocol.parseStatus("suppPortStatus=Authorized\nEAP state=SUCCESS\nselectedMethod=25 (EAP-PEAP)\n")
        #expect(peap.shortfall(for: .eapTLS) == "802.1X authentication used EAP-PEAP, the rule requires EAP-TLS (a device certificate)")
        let psk = try WPAControlProtocol.parseStatus("key_mgmt=WPA2-PSK\nwpa_state=COMPLETED\n")
        #expect(psk.shortfall(for: .eapTLS) == "the network uses WPA2-PSK (a shared key), not 802.1X: the rule requires EAP-TLS (a device certificate)")
        #expect(psk.shortfall(for: .none) == nil)
    }

    @Test("malformed replies are clear errors, never a crash", arguments: [
        ("", "wpa_supplicant reply: empty reply to STATUS"),
        ("FAIL\n", "wpa_supplicant reply: STATUS refused: FAIL"),
        ("UNKNOWN COMMAND\n", "wpa_supplicant reply: STATUS refused: UNKNOWN COMMAND"),
        ("wpa_state=COMPLETED\nnonsense\n", "wpa_supplicant STATUS line 2: \"nonsense\" is not key=value"),
        ("=x\n", "wpa_supplicant STATUS line 1: \"=x\" is not key=value"),
        ("EAP state=SUCCESS\nEAP state=FAILURE\n", "wpa_supplicant STATUS line 2: key \"EAP state\" given twice"),
    ])
    func malformed(reply: String, message: String) {
        #expect(throws: WPAParseError.self) { try WPAControlProtocol.parseStatus(reply) }
        do {
            _ = try WPAControlProtocol.parseStatus(reply)
        } catch {
            #expect(error.description == message)
        }
    }

    @Test("CRLF lines and a huge reply")
    func edges() throws {
        #expect(try WPAControlProtocol.parseStatus("EAP state=SUCCESS\r\nsuppPortStatus=Authorized\r\n").isComplete)
        let huge = (0..<300).map { "k\($0)=v" }.joined(separator: "\n")
        #expect(throws: WPAParseError.self) { try WPAControlProtocol.parseStatus(huge) }
    }

    @Test("event lines", arguments: [
        ("<3>CTRL-EVENT-EAP-SUCCESS EAP authentication completed successfully", WPAEvent.eapSuccess),
        ("<3>CTRL-EVENT-EAP-FAILURE EAP authentication failed", .eapFailure),
        ("<3>CTRL-EVENT-EAP-METHOD EAP vendor 0 method 13 (TLS) selected", .eapMethod("TLS")),
        ("<3>CTRL-EVENT-CONNECTED - Connection to 01:80:c2:00:00:03 completed [id=0 id_str=]", .connected),
        ("<3>CTRL-EVENT-DISCONNECTED bssid=01:80:c2:00:00:03 reason=3", .disconnected),
        ("<2>CTRL-EVENT-SCAN-RESULTS ", .other("CTRL-EVENT-SCAN-RESULTS")),
        ("CTRL-EVENT-EAP-SUCCESS", .eapSuccess),
    ])
    func events(line: String, event: WPAEvent) throws {
        let e = try WPAControlProtocol.parseEvent(line)
        #expect(e == event)
        #expect(e.changesState == (event != .other("CTRL-EVENT-SCAN-RESULTS")))
    }

    @Test("malformed events are errors", arguments: [
        "<x>CTRL-EVENT-EAP-SUCCESS", "<3>", "<3>CTRL-EVENT-EAP-METHOD EAP vendor 0 method 13 selected",
        "<3>CTRL-EVENT-EAP-PEER-CERT subject='/CN=x' hash=00",
        "<3>CTRL-EVENT-EAP-PEER-CERT depth=-1 subject='/CN=x'",
        "<3>CTRL-EVENT-EAP-PEER-CERT depth=0 subject=/CN=x",
        "<3>CTRL-EVENT-EAP-PEER-CERT depth=0 subject='/CN=x",
        "<3>CTRL-EVENT-EAP-PEER-CERT depth=0 subject='/CN=x' hash=abcd",
        "<3>CTRL-EVENT-EAP-PEER-CERT depth=0 subject='/CN=x' hash=zz03fbc671c9e599d5ebd44bd48eea63de703b039b973fd8da13337f64af10",
        "<3>CTRL-EVENT-EAP-PEER-CERT depth=0 subject='/CN=x' cert=308",
        "<3>CTRL-EVENT-EAP-PEER-ALT depth=0",
        "<3>CTRL-EVENT-EAP-PEER-ALT DNS:radius.example",
        "<3>CTRL-EVENT-EAP-PEER-ALT depth=x DNS:radius.example",
    ])
    func badEvents(line: String) {
        #expect(throws: WPAParseError.self) { try WPAControlProtocol.parseEvent(line) }
    }

    /// Lines as wpa_supplicant 2.10 -Dwired sent them to a monitor in the lab (EAPLab).
    @Test("server certificate events: hash=, cert=, no hash, subjectAltName")
    func peerCertificates() throws {
        let hash = "203872fbc671c9e599d5ebd44bd48eea63de703b039b973fd8da13337f64af10"
        #expect(try WPAControlProtocol.parseEvent("<3>CTRL-EVENT-EAP-PEER-CERT depth=0 subject='/CN=server' hash=\(hash)")
                == .peerCertificate(PeerCertificateReport(depth: 0, subject: "/CN=server", sha256: hash)))
        #expect(try WPAControlProtocol.parseEvent("<3>CTRL-EVENT-EAP-PEER-CERT depth=1 subject='/CN=segguard-test-ca' hash=\(hash.uppercased())")
                == .peerCertificate(PeerCertificateReport(depth: 1, subject: "/CN=segguard-test-ca", sha256: hash)))
        // cert_in_cb=0: no hash.
        #expect(try WPAControlProtocol.parseEvent("<3>CTRL-EVENT-EAP-PEER-CERT depth=0 subject='/CN=server'")
                == .peerCertificate(PeerCertificateReport(depth: 0, subject: "/CN=server")))
        #expect(try WPAControlProtocol.parseEvent("<3>CTRL-EVENT-EAP-PEER-CERT depth=0 subject='/CN=server' cert=308202b3")
                == .peerCertificate(PeerCertificateReport(depth: 0, subject: "/CN=server", der: [0x30, 0x82, 0x02, 0xb3])))
        // The subject is printed unescaped: quotes and " hash=" inside it stay in it.
        #expect(try WPAControlProtocol.parseEvent("<3>CTRL-EVENT-EAP-PEER-CERT depth=0 subject='/O=O'Brien hash=x/CN=a b' hash=\(hash)")
                == .peerCertificate(PeerCertificateReport(depth: 0, subject: "/O=O'Brien hash=x/CN=a b", sha256: hash)))
        #expect(try WPAControlProtocol.parseEvent("<3>CTRL-EVENT-EAP-PEER-CERT depth=0 subject='/CN=a' hash=x' cert=3082")
                == .peerCertificate(PeerCertificateReport(depth: 0, subject: "/CN=a' hash=x", der: [0x30, 0x82])))
        #expect(try WPAControlProtocol.parseEvent("<3>CTRL-EVENT-EAP-PEER-CERT depth=0 subject=''") == .peerCertificate(PeerCertificateReport(depth: 0, subject: "")))
        #expect(try WPAControlProtocol.parseEvent("<3>CTRL-EVENT-EAP-PEER-ALT depth=0 DNS:radius.example.lg.jp") == .peerAltSubject(depth: 0, "DNS:radius.example.lg.jp"))
        #expect(try WPAControlProtocol.parseEvent("<3>CTRL-EVENT-EAP-PEER-ALT depth=2 EMAIL:a b@example") == .peerAltSubject(depth: 2, "EMAIL:a b@example"))
        #expect(try WPAControlProtocol.parseEvent("<3>CTRL-EVENT-EAP-STARTED EAP authentication started") == .eapStarted)
        #expect(WPAEvent.eapStarted.changesState)
        #expect(!WPAEvent.peerAltSubject(depth: 0, "DNS:x").changesState)
        #expect(!WPAEvent.peerCertificate(PeerCertificateReport(depth: 0, subject: "")).changesState)
    }
}

@Suite("Device authentication in the decision")
struct DeviceAuthDecisionTests {
    static let tls = DeviceAuthState(keyManagement: "WPA2/IEEE 802.1X/EAP", eapState: "SUCCESS", eapMethod: "TLS", portStatus: .authorized, identity: "tc-1").onThisDevice

    @Test("policy: device_auth on wireless and wired rules; eap-tls with a PSK security is refused")
    func policy() throws {
        let p = try PolicyLoader.load(text: """
            schema_version: 1
            sites:
              - name: hq
                wireless: [{ssid: mn-office, device_auth: eap-tls}]
                wired: [{interfaces: [eth0], device_auth: eap-tls}]
            vdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}
            """, file: "p.yaml")
        #expect(p.sites[0].wireless[0].deviceAuth == .eapTLS && p.sites[0].wired[0].deviceAuth == .eapTLS)
        #expect(throws: PolicyLoadError.self) {
            try PolicyLoader.load(text: "schema_version: 1\nsites:\n  - name: hq\n    wireless: [{ssid: x, security: [psk], device_auth: eap-tls}]\n", file: "q.yaml")
        }
        do {
            _ = try PolicyLoader.load(text: "schema_version: 1\nsites:\n  - name: hq\n    wireless: [{ssid: x, security: [psk, enterprise], device_auth: eap-tls}]\nvdi: {gateways: [{address: 192.0.2.10}]}\n", file: "q.yaml")
        } catch {
            #expect(error.issues.first?.description == "q.yaml:4:68: sites[0].wireless[0].device_auth: eap-tls needs security [enterprise] (802.1X); this rule also accepts psk")
        }
    }
}

extension DeviceAuthDecisionTests {
    static let policy = try! PolicyLoader.load(text: """
        schema_version: 1
        sites:
          - name: hq
            wireless: [{ssid: mn-office, device_auth: eap-tls}]
            wired: [{interfaces: [eth0], device_auth: eap-tls}]
        vdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}
        """, file: "p.yaml")
    static let wifi = WirelessLink(ssid: SSID("mn-office"), bssid: MACAddress("02:00:5e:00:53:01"), frequencyMHz: 5180, security: .enterprise)
}


@Suite("Device authentication decides")
struct DeviceAuthDecides {
    typealias T = DeviceAuthDecisionTests

    @Test("wired 802.1X port: authorized only with completed EAP-TLS", arguments: [
        (DeviceAuthState?.none, "no authorized path: eth0 matches site 'hq' wired rule (p.yaml:5) but no 802.1X state from wpa_supplicant"),
        (DeviceAuthState(eapState: "FAILURE", portStatus: .unauthorized), "no authorized path: eth0 matches site 'hq' wired rule (p.yaml:5) but 802.1X device authentication is not complete (EAP state FAILURE, port unauthorized)"),
        (DeviceAuthState?(T.tls), "eth0 has carrier and matches site 'hq' wired rule (p.yaml:5)"),
    ])
    func wired(auth: DeviceAuthState?, reason: String) {
        let s = NetworkSnapshot(interfaces: [InterfaceState(index: 2, name: "eth0", kind: .wired, deviceAuth: auth)])
        let d = SegmentDecider.decide(s, T.policy)
        #expect(d.reason == reason)
        #expect(d.isAuthorized == (auth == T.tls))
    }

    @Test("Wi-Fi: an authorized SSID is not enough without EAP-TLS")
    func wireless() {
        let peap = DeviceAuthState(eapState: "SUCCESS", eapMethod: "PEAP", portStatus: .authorized)
        let s = NetworkSnapshot(interfaces: [InterfaceState(index: 3, name: "wlan0", kind: .wireless, wireless: T.wifi, deviceAuth: peap)])
        let d = SegmentDecider.decide(s, T.policy)
        #expect(d.segment == .unauthorized)
        #expect(d.reason == "no authorized path: wlan0 associated to SSID 'mn-office' via BSSID 02:00:5e:00:53:01 but 802.1X authentication used EAP-PEAP, the rule requires EAP-TLS (a device certificate): site 'hq' (p.yaml:4) requires eap-tls")
        var ok = s
        ok.interfaces[0].deviceAuth = T.tls
        #expect(SegmentDecider.decide(ok, T.policy).segment == .authorizedWireless)
    }
}

@Suite("wpa_supplicant network fields")
struct WPANetworkFieldTests {
    @Test("STATUS id= and GET_NETWORK identity replies")
    func fields() {
        #expect(WPAControlProtocol.networkID("bssid=01:80:c2:00:00:03\nid=3\nmode=station\n") == 3)
        #expect(WPAControlProtocol.networkID("wpa_state=DISCONNECTED\n") == nil)
        #expect(WPAControlProtocol.parseNetworkString("\"tc-0042\"") == "tc-0042")
        #expect(WPAControlProtocol.parseNetworkString("FAIL\n") == nil)
        #expect(WPAControlProtocol.parseNetworkString("\"") == nil)
    }
}

extension DeviceAuthState {
    /// This state with the client certificate's key equal to this device's (as the agent
    /// annotates it when the supplicant uses the device certificate).
    var onThisDevice: DeviceAuthState {
        var s = self
        s.clientKeySHA256 = String(repeating: "d0", count: 32)
        s.clientCertificate = "subject 'CN=tc-1' in /etc/wpa_supplicant/device.pem"
        s.deviceKeySHA256 = s.clientKeySHA256
        s.deviceCertificate = "subject 'CN=tc-1,OU=mynumber' in /etc/segguard/device.pem"
        return s
    }
}
