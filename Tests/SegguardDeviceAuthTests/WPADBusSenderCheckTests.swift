// Who may speak for wpa_supplicant: the owner of fi.w1.wpa_supplicant1 for its signals, the bus
// driver for NameOwnerChanged; everyone else is ignored and counted. And the model's success
// count and server chain from EAP and Certification signals.

import SegguardDeviceAuth
import SegguardPolicy
import Testing

@Suite("wpa_supplicant D-Bus sender check")
struct WPADBusSenderCheckTests {
    static let service = "fi.w1.wpa_supplicant1"
    static let iface = "/fi/w1/wpa_supplicant1/Interfaces/0"
    static let completed: [DBusValue] = [.string("fi.w1.wpa_supplicant1.Interface"),
                                         .dict(["State": .variant(.string("completed")), "CurrentAuthMode": .variant(.string("EAP-TLS"))]),
                                         .array([], element: "s")]

    static func noc(_ name: String, _ old: String, _ new: String) -> [DBusValue] { [.string(name), .string(old), .string(new)] }

    static func propertiesChanged(_ c: inout WPADBusSenderCheck, from sender: String?) -> WPADBusSenderCheck.Verdict {
        c.check(sender: sender, path: iface, interface: "org.freedesktop.DBus.Properties", member: "PropertiesChanged", args: completed)
    }

    @Test("signals from the owner are accepted; from any other unique name, or none, refused and counted")
    func ownerOnly() {
        var c = WPADBusSenderCheck(service: Self.service)
        // Owner not known yet (GetNameOwner not answered or no owner): nothing is accepted.
        #expect(Self.propertiesChanged(&c, from: ":1.7") == .reject(firstFromSender: true, sendersFull: false))
        c.learnOwner(":1.7")
        #expect(Self.propertiesChanged(&c, from: ":1.7") == .accept)
        #expect(c.check(sender: ":1.7", path: Self.iface, interface: "fi.w1.wpa_supplicant1.Interface", member: "EAP",
                        args: [.string("completion"), .string("success")]) == .accept)
        #expect(Self.propertiesChanged(&c, from: ":1.42") == .reject(firstFromSender: true, sendersFull: false))
        #expect(Self.propertiesChanged(&c, from: ":1.42") == .reject(firstFromSender: false, sendersFull: false))
        // The well-known name as sender is not the owner's unique name (the bus never sends that).
        #expect(Self.propertiesChanged(&c, from: Self.service) == .reject(firstFromSender: true, sendersFull: false))
        #expect(Self.propertiesChanged(&c, from: nil) == .reject(firstFromSender: true, sendersFull: false))
        #expect(c.rejected == 5)
        #expect(c.owner == ":1.7")
        c.learnOwner("")
        #expect(c.owner == nil)
        // :1.7 was refused once already, before it owned the name: counted, not logged again.
        #expect(Self.propertiesChanged(&c, from: ":1.7") == .reject(firstFromSender: false, sendersFull: false))
        #expect(c.rejected == 6)
    }

    @Test("NameOwnerChanged counts only from the bus driver, at its path, about the watched name")
    func nameOwnerChanged() {
        var c = WPADBusSenderCheck(service: Self.service, owner: ":1.7")
        let driver = WPADBusSenderCheck.busDriver, driverPath = WPADBusSenderCheck.busDriverPath
        // A local user's forgeries: claims the name for itself, or says the supplicant left.
        #expect(c.check(sender: ":1.42", path: driverPath, interface: driver, member: "NameOwnerChanged",
                        args: Self.noc(Self.service, ":1.7", ":1.42")) == .reject(firstFromSender: true, sendersFull: false))
        #expect(c.check(sender: ":1.42", path: driverPath, interface: driver, member: "NameOwnerChanged",
                        args: Self.noc(Self.service, ":1.7", "")) == .reject(firstFromSender: false, sendersFull: false))
        // The owner itself cannot speak for the driver either.
        #expect(c.check(sender: ":1.7", path: driverPath, interface: driver, member: "NameOwnerChanged",
                        args: Self.noc(Self.service, ":1.7", "")) == .reject(firstFromSender: true, sendersFull: false))
        // The driver's sender at another path, or with other arguments: not the driver's word.
        #expect(c.check(sender: driver, path: "/x", interface: driver, member: "NameOwnerChanged",
                        args: Self.noc(Self.service, ":1.7", "")) == .reject(firstFromSender: true, sendersFull: false))
        #expect(c.check(sender: driver, path: driverPath, interface: driver, member: "NameOwnerChanged",
                        args: [.string(Self.service), .string("")]) == .reject(firstFromSender: false, sendersFull: false))
        #expect(c.owner == ":1.7" && c.rejected == 5)
        // The driver about another name: nothing to do.
        #expect(c.check(sender: driver, path: driverPath, interface: driver, member: "NameOwnerChanged",
                        args: Self.noc("org.example", "", ":1.9")) == .otherName)
        // The driver: the supplicant exits, then another one starts.
        #expect(c.check(sender: driver, path: driverPath, interface: driver, member: "NameOwnerChanged",
                        args: Self.noc(Self.service, ":1.7", "")) == .ownerChanged(owner: nil))
        #expect(Self.propertiesChanged(&c, from: ":1.7") == .reject(firstFromSender: false, sendersFull: false))
        #expect(c.check(sender: driver, path: driverPath, interface: driver, member: "NameOwnerChanged",
                        args: Self.noc(Self.service, "", ":1.8")) == .ownerChanged(owner: ":1.8"))
        #expect(Self.propertiesChanged(&c, from: ":1.8") == .accept)
        #expect(c.rejected == 6)
    }

    @Test("refused senders are remembered up to a bound, then counted only; the overflow is reported once")
    func boundedSenders() {
        var c = WPADBusSenderCheck(service: Self.service, owner: ":1.1")
        for n in 0..<WPADBusSenderCheck.rememberedSenders {
            #expect(Self.propertiesChanged(&c, from: ":2.\(n)") == .reject(firstFromSender: true, sendersFull: false))
        }
        #expect(Self.propertiesChanged(&c, from: ":3.0") == .reject(firstFromSender: false, sendersFull: true))
        #expect(Self.propertiesChanged(&c, from: ":3.1") == .reject(firstFromSender: false, sendersFull: false))
        #expect(Self.propertiesChanged(&c, from: ":2.0") == .reject(firstFromSender: false, sendersFull: false))
        #expect(c.rejectedSenders.count == WPADBusSenderCheck.rememberedSenders)
        #expect(c.rejected == UInt64(WPADBusSenderCheck.rememberedSenders) + 3)
    }
}

@Suite("wpa_supplicant D-Bus model: successes and the server chain")
struct WPADBusChainTests {
    static func cert(_ depth: UInt64, _ subject: String, hash: String? = nil, alt: [String]? = nil) -> [DBusValue] {
        var d: [String: DBusValue] = ["depth": .variant(.uint(depth, type: "u")), "subject": .variant(.string(subject)),
                                      "cert": .variant(.array([.uint(0x30, type: "y")], element: "y"))]
        if let hash { d["cert_hash"] = .variant(.string(hash)) }
        if let alt { d["altsubject"] = .variant(.array(alt.map { .string($0) }, element: "s")) }
        return [.dict(d)]
    }

    static let serverHash = String(repeating: "ab", count: 32)
    static let caHash = String(repeating: "CD", count: 32)

    @Test("each EAP success counts; the chain is the one of the exchange that succeeded, by depth")
    func successesAndChain() throws {
        var i = try WPADBusModelTests.completed()
        #expect(i.deviceAuth.successes == 0 && i.deviceAuth.serverChain.isEmpty)
        try i.applyEAP([.string("started"), .string("")])
        try i.applyEAP([.string("accept proposed method"), .string("TLS")])
        try i.applyCertification(Self.cert(1, "/CN=segguard-test-ca", hash: Self.caHash))
        try i.applyCertification(Self.cert(0, "/CN=server", hash: Self.serverHash, alt: ["DNS:radius.example"]))
        // Not yet part of the state: the exchange has not succeeded.
        #expect(i.deviceAuth.serverChain.isEmpty)
        try i.applyEAP([.string("completion"), .string("success")])
        let a = i.deviceAuth
        #expect(a.successes == 1 && a.isComplete)
        #expect(a.serverChain == [PeerCertificate(depth: 0, subject: "/CN=server", sha256: Self.serverHash, altSubjects: ["DNS:radius.example"]),
                                  PeerCertificate(depth: 1, subject: "/CN=segguard-test-ca", sha256: Self.caHash.lowercased())])

        // A re-authentication: the port and the old chain stand until it completes.
        try i.applyEAP([.string("started"), .string("")])
        try i.applyCertification(Self.cert(0, "/CN=server2"))
        #expect(i.deviceAuth.serverChain == a.serverChain && i.deviceAuth.isComplete)
        try i.applyEAP([.string("completion"), .string("success")])
        #expect(i.deviceAuth.successes == 2)
        #expect(i.deviceAuth.serverChain == [PeerCertificate(depth: 0, subject: "/CN=server2")])

        // A failure: no chain, the count stays.
        try i.applyEAP([.string("started"), .string("")])
        try i.applyCertification(Self.cert(0, "/CN=rogue"))
        try i.applyEAP([.string("completion"), .string("failure")])
        #expect(i.deviceAuth.successes == 2 && i.deviceAuth.serverChain.isEmpty && !i.deviceAuth.isComplete)
    }

    @Test("our EAPLogoff makes the port unauthorized until the next completion, even in state completed")
    func logoff() throws {
        var i = try WPADBusModelTests.completed()
        try i.applyEAP([.string("completion"), .string("success")])
        i.applyLogoff()
        #expect(i.state == "completed")
        #expect(i.deviceAuth.portStatus == .unauthorized && i.deviceAuth.successes == 1 && i.deviceAuth.serverChain.isEmpty)
        try i.applyEAP([.string("started"), .string("")])
        #expect(i.deviceAuth.portStatus == .unauthorized)
        try i.applyEAP([.string("completion"), .string("success")])
        #expect(i.deviceAuth.portStatus == .authorized && i.deviceAuth.successes == 2)
    }

    @Test("malformed Certification signals are errors and change nothing", arguments: [
        [DBusValue.string("x")],
        [.dict(["subject": .variant(.string("/CN=a"))])],
        [.dict(["depth": .variant(.int(0, type: "i")), "subject": .variant(.string("/CN=a"))])],
        [.dict(["depth": .variant(.uint(0, type: "u"))])],
        [.dict(["depth": .variant(.uint(0, type: "u")), "subject": .variant(.string("/CN=a")), "cert_hash": .variant(.string("zz"))])],
        [.dict(["depth": .variant(.uint(0, type: "u")), "subject": .variant(.string("/CN=a")), "altsubject": .variant(.string("DNS:a"))])],
        [.dict(["depth": .variant(.uint(1000, type: "u")), "subject": .variant(.string("/CN=a"))])],
    ])
    func badCertification(args: [DBusValue]) throws {
        var i = try WPADBusModelTests.completed()
        try i.applyEAP([.string("started"), .string("")])
        let before = i
        #expect(throws: WPADBusError.self) { try i.applyCertification(args) }
        #expect(i == before)
    }
}
