// wpa_supplicant's D-Bus API as values: properties and EAP signals to 802.1X state, and
// properties or signals of unexpected types to clear errors that change nothing.

import SegguardDeviceAuth
import SegguardPolicy
import Testing

@Suite("wpa_supplicant D-Bus model")
struct WPADBusModelTests {
    static let path = "/fi/w1/wpa_supplicant1/Interfaces/0"

    /// An interface as `Get` reads it on wpa_supplicant 2.10 -Dwired after EAP-TLS.
    static func completed() throws -> WPADBusInterface {
        var i = WPADBusInterface(path: path)
        try i.apply(properties: ["Ifname": .variant(.string("tcx0")), "State": .variant(.string("completed")),
                                 "CurrentAuthMode": .variant(.string("EAP-TLS")),
                                 "CurrentNetwork": .variant(.objectPath("\(path)/Networks/0"))])
        try i.apply(networkProperties: .variant(.dict(["key_mgmt": .string("IEEE8021X"), "identity": .string("\"tc-0042\""), "eap": .string("TLS")])))
        return i
    }

    @Test("the network's client_cert is kept (unquoted) and forgotten with the network; its key reaches the 802.1X state")
    func clientCertificate() throws {
        var i = try Self.completed()
        try i.apply(networkProperties: .variant(.dict(["key_mgmt": .string("IEEE8021X"), "client_cert": .string("\"/etc/wpa/device.pem\"")])))
        #expect(i.clientCert == "/etc/wpa/device.pem")
        i.clientKey = CertificateKeyFinding(keySHA256: String(repeating: "ab", count: 32), description: "subject 'CN=tc-0042' in /etc/wpa/device.pem")
        #expect(i.deviceAuth.clientKeySHA256 == String(repeating: "ab", count: 32))
        #expect(i.deviceAuth.clientCertificate == "subject 'CN=tc-0042' in /etc/wpa/device.pem")
        try i.apply(properties: ["CurrentNetwork": .objectPath("/fi/w1/wpa_supplicant1/Interfaces/1/Networks/1")])
        #expect(i.clientCert == nil && i.clientKey == nil)
        #expect(i.deviceAuth.clientKeySHA256 == nil)
    }

    @Test("completed EAP-TLS interface: authorized, method, identity, key management")
    func completedInterface() throws {
        let a = try Self.completed().deviceAuth
        #expect(a.portStatus == .authorized && a.eapMethod == "TLS" && a.identity == "tc-0042")
        #expect(a.keyManagement == "IEEE 802.1X (IEEE8021X)")
        #expect(a.onThisDevice.shortfall(for: .eapTLS) == nil)
    }

    @Test("EAP signals: a re-authentication keeps the port, a failure unauthorizes it even in state completed")
    func eapSignals() throws {
        var i = try Self.completed()
        try i.applyEAP([.string("started"), .string("")])
        try i.applyEAP([.string("accept proposed method"), .string("TLS")])
        #expect(i.deviceAuth.portStatus == .authorized)
        try i.applyEAP([.string("completion"), .string("success")])
        #expect(i.deviceAuth.isComplete && i.deviceAuth.eapState == "SUCCESS")
        try i.applyEAP([.string("completion"), .string("failure")])
        #expect(i.state == "completed")
        #expect(i.deviceAuth.portStatus == .unauthorized)
        #expect(i.deviceAuth.shortfall(for: .eapTLS) == "802.1X device authentication is not complete (EAP state FAILURE, port unauthorized)")
        // Leaving "completed" forgets the failure: the next exchange decides afresh.
        try i.apply(properties: ["State": .string("disconnected")])
        #expect(i.lastEAP == nil && i.deviceAuth.portStatus == .unauthorized)
        try i.applyEAP([.string("completion"), .string("success")])
        try i.apply(properties: ["State": .string("completed")])
        #expect(i.deviceAuth.portStatus == .authorized)
    }

    @Test("a PSK network is not device authentication")
    func psk() throws {
        var i = WPADBusInterface(path: Self.path)
        try i.apply(properties: ["Ifname": .string("wlan0"), "State": .string("completed"), "CurrentAuthMode": .string("WPA2-PSK")])
        #expect(i.deviceAuth.portStatus == .unknown)
        #expect(i.deviceAuth.shortfall(for: .eapTLS) == "the network uses WPA2-PSK (a shared key), not 802.1X: the rule requires EAP-TLS (a device certificate)")
    }

    @Test("unexpected property and signal types are errors naming them; the interface is unchanged", arguments: [
        (["State": DBusValue.variant(.int(3, type: "i"))], "wpa_supplicant property State of /fi/w1/wpa_supplicant1/Interfaces/0 has type 'i', expected s (string)"),
        (["CurrentNetwork": .string("/x")], "wpa_supplicant property CurrentNetwork of /fi/w1/wpa_supplicant1/Interfaces/0 has type 's', expected o (object path)"),
        (["Ifname": .array([.string("a")], element: "s")], "wpa_supplicant property Ifname of /fi/w1/wpa_supplicant1/Interfaces/0 has type 'as', expected s (string)"),
        (["State": .string("disconnected"), "CurrentAuthMode": .bool(true)], "wpa_supplicant property CurrentAuthMode of /fi/w1/wpa_supplicant1/Interfaces/0 has type 'b', expected s (string)"),
    ])
    func badProperties(properties: [String: DBusValue], message: String) throws {
        var i = try Self.completed()
        let before = i
        #expect { try i.apply(properties: properties) } throws: { ($0 as? WPADBusError)?.description == message }
        #expect(i == before)
    }

    @Test("malformed EAP signals and network properties", arguments: [
        [DBusValue.string("completion")],
        [.int(1, type: "i"), .int(2, type: "i")],
        [.string("completion"), .string("maybe")],
        [.string("completion"), .variant(.string("success"))],
    ])
    func badEAP(args: [DBusValue]) throws {
        var i = try Self.completed()
        let before = i
        #expect(throws: WPADBusError.self) { try i.applyEAP(args) }
        #expect(i == before)
    }

    @Test("network properties of the wrong shape")
    func badNetwork() throws {
        var i = try Self.completed()
        #expect { try i.apply(networkProperties: .array([], element: "s")) } throws: {
            ($0 as? WPADBusError)?.description == "wpa_supplicant property Properties of network /fi/w1/wpa_supplicant1/Interfaces/0/Networks/0 of /fi/w1/wpa_supplicant1/Interfaces/0 has type 'as', expected a{sv}"
        }
        #expect(throws: WPADBusError.self) { try i.apply(networkProperties: .dict(["identity": .uint(7, type: "u")])) }
        #expect(i.identity == "tc-0042")
    }
}
