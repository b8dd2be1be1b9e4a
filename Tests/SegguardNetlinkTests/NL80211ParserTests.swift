// Tests of NL80211Parser and InformationElements on nl80211 messages built with libnl's own
// message builders (this kernel has no cfg80211, so nothing can be read live). Owns only
// the test-only message builder below.

import CLibNL
import SegguardPolicy
import Testing

@testable import SegguardNetlink

// MARK: - Test-only nl80211 message builder

/// Builds nl80211 messages with libnl (family id 0x1c, made up) and parses them.
enum NL80211TestMessage {
    static let familyID: Int32 = 0x1c

    static func a(_ x: nl80211_attrs) -> Int32 { Int32(x.rawValue) }
    static func b(_ x: nl80211_bss) -> Int32 { Int32(x.rawValue) }
    static func cmd(_ x: nl80211_commands) -> UInt8 { UInt8(x.rawValue) }

    /// Calls `body` with a libnl-built message, then frees it.
    static func with<R>(
        _ command: nl80211_commands, _ attrs: [TestAttr], _ body: (UnsafeMutablePointer<nlmsghdr>) throws -> R
    ) rethrows -> R {
        let msg = nlmsg_alloc()!
        defer { nlmsg_free(msg) }
        #expect(genlmsg_put(msg, 0, 0, familyID, 0, 0, cmd(command), 0) != nil)
        putAttributes(msg, attrs)
        return try body(nlmsg_hdr(msg))
    }

    /// Builds the message and hands `nlmsg_hdr(msg)` to the parser.
    static func parse(_ command: nl80211_commands, _ attrs: [TestAttr]) throws(NetlinkParseError) -> NL80211Message {
        let result: Result<NL80211Message, NetlinkParseError> = with(command, attrs) { hdr in
            do throws(NetlinkParseError) { return .success(try NL80211Parser.parse(hdr)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// The raw bytes of the message (nlmsg_len of them).
    static func bytes(_ command: nl80211_commands, _ attrs: [TestAttr]) -> [UInt8] {
        with(command, attrs) { hdr in Array(UnsafeRawBufferPointer(start: hdr, count: Int(hdr.pointee.nlmsg_len))) }
    }

    /// Parses a message rebuilt from raw bytes, with nlmsg_len set to `bytes.count` (the
    /// buffer is at least a netlink header long so the header itself can be read).
    static func parseRaw(_ bytes: [UInt8]) throws(NetlinkParseError) -> NL80211Message {
        let size = max(bytes.count, MemoryLayout<nlmsghdr>.size)
        let buf = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
        defer { buf.deallocate() }
        buf.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        bytes.withUnsafeBytes { src in
            if let base = src.baseAddress { buf.copyMemory(from: base, byteCount: src.count) }
        }
        let hdr = buf.bindMemory(to: nlmsghdr.self, capacity: 1)
        hdr.pointee.nlmsg_len = UInt32(bytes.count)
        return try NL80211Parser.parse(hdr)
    }

    /// A GET_SCAN dump reply with one BSS.
    static func bssAttrs(
        ifindex: UInt32 = 3, bssid: [UInt8]? = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55], frequency: UInt32? = 5180,
        status: UInt32? = nil, capability: UInt16? = 0x0411, ies: [UInt8]? = nil, beaconIEs: [UInt8]? = nil
    ) -> [TestAttr] {
        var inner: [TestAttr] = []
        if let bssid { inner.append(.bytes(b(NL80211_BSS_BSSID), bssid)) }
        if let frequency { inner.append(.u32(b(NL80211_BSS_FREQUENCY), frequency)) }
        if let capability { inner.append(.u16(b(NL80211_BSS_CAPABILITY), capability)) }
        if let ies { inner.append(.bytes(b(NL80211_BSS_INFORMATION_ELEMENTS), ies)) }
        if let beaconIEs { inner.append(.bytes(b(NL80211_BSS_BEACON_IES), beaconIEs)) }
        if let status { inner.append(.u32(b(NL80211_BSS_STATUS), status)) }
        return [.u32(a(NL80211_ATTR_IFINDEX), ifindex), .nested(a(NL80211_ATTR_BSS), inner)]
    }

    static func parseBSS(
        status: UInt32? = nil, capability: UInt16? = 0x0411, ies: [UInt8]? = nil, beaconIEs: [UInt8]? = nil
    ) throws -> NL80211BSS {
        let m = try parse(
            NL80211_CMD_NEW_SCAN_RESULTS,
            bssAttrs(status: status, capability: capability, ies: ies, beaconIEs: beaconIEs))
        guard case .bss(let bss) = m else {
            Issue.record("expected a BSS, got \(m)")
            throw NetlinkParseError(message: "test", attribute: "-", problem: "not a BSS")
        }
        return bss
    }
}

// MARK: - Information element builders

enum IE {
    static func element(_ id: UInt8, _ data: [UInt8]) -> [UInt8] { [id, UInt8(data.count)] + data }
    static func ssid(_ s: String) -> [UInt8] { element(0, Array(s.utf8)) }
    static func suite(_ s: UInt32) -> [UInt8] { [UInt8(s >> 24), UInt8(s >> 16 & 0xff), UInt8(s >> 8 & 0xff), UInt8(s & 0xff)] }
    static func le16(_ v: Int) -> [UInt8] { [UInt8(v & 0xff), UInt8(v >> 8)] }
    /// RSN/WPA body: version 1, group CCMP, pairwise, AKMs, then RSN capabilities.
    static func body(oui: UInt32, akms: [UInt32], pairwise: [UInt32]? = nil) -> [UInt8] {
        let pw = pairwise ?? [oui << 8 | 4]
        return le16(1) + suite(oui << 8 | 4) + le16(pw.count) + pw.flatMap(suite) + le16(akms.count)
            + akms.flatMap(suite) + [0x00, 0x00]
    }
    static func rsn(_ akms: [UInt32]) -> [UInt8] { element(48, body(oui: 0x000FAC, akms: akms)) }
    static func wpa(_ akms: [UInt32]) -> [UInt8] { element(221, [0x00, 0x50, 0xF2, 0x01] + body(oui: 0x0050F2, akms: akms)) }
    /// A WMM vendor element (00-50-F2 type 2), irrelevant for security.
    static let wmm: [UInt8] = element(221, [0x00, 0x50, 0xF2, 0x02, 0x01, 0x01, 0x80, 0x00])
    static let rates: [UInt8] = element(1, [0x82, 0x84, 0x8b, 0x96])

    static let psk: UInt32 = 0x000F_AC02
    static let dot1x: UInt32 = 0x000F_AC01
    static let sae: UInt32 = 0x000F_AC08
    static let owe: UInt32 = 0x000F_AC12
}

private func a(_ x: nl80211_attrs) -> Int32 { NL80211TestMessage.a(x) }
private let bssidA = MACAddress("02:11:22:33:44:55")!

// MARK: - Interface messages

@Suite struct NL80211InterfaceParsingTests {
    @Test func interfaceWithJapaneseSSID() throws {
        let ssid = "マイナンバー事務"
        let m = try NL80211TestMessage.parse(
            NL80211_CMD_NEW_INTERFACE,
            [
                .u32(a(NL80211_ATTR_WIPHY), 0), .u32(a(NL80211_ATTR_IFINDEX), 3), .string(a(NL80211_ATTR_IFNAME), "wlan0"),
                .u32(a(NL80211_ATTR_IFTYPE), 2), .bytes(a(NL80211_ATTR_SSID), Array(ssid.utf8)),
                .u32(a(NL80211_ATTR_WIPHY_FREQ), 5180),
            ])
        #expect(
            m
                == .interface(
                    NL80211Interface(
                        ifindex: 3, name: "wlan0", iftype: 2, ssid: SSID(ssid), frequencyMHz: 5180, wiphy: 0)))
        guard case .interface(let iface) = m else { return }
        #expect(iface.ssid?.bytes.count == 24)
        #expect(iface.ssid?.description == "マイナンバー事務")
        #expect(iface.ssid?.utf8Text == "マイナンバー事務")
    }

    @Test func getAndSetInterfaceDecodeAlike() throws {
        let attrs: [TestAttr] = [.u32(a(NL80211_ATTR_IFINDEX), 7), .u32(a(NL80211_ATTR_IFTYPE), 3)]
        let expected = NL80211Message.interface(NL80211Interface(ifindex: 7, iftype: 3))
        #expect(try NL80211TestMessage.parse(NL80211_CMD_SET_INTERFACE, attrs) == expected)
        #expect(try NL80211TestMessage.parse(NL80211_CMD_GET_INTERFACE, attrs) == expected)
    }

    @Test func nonUTF8SSIDKeepsBytesAndEscapes() throws {
        let raw: [UInt8] = [0xff, 0xfe, 0x41, 0x00, 0x5c]
        let m = try NL80211TestMessage.parse(
            NL80211_CMD_NEW_INTERFACE, [.u32(a(NL80211_ATTR_IFINDEX), 3), .bytes(a(NL80211_ATTR_SSID), raw)])
        guard case .interface(let iface) = m else {
            Issue.record("expected interface, got \(m)")
            return
        }
        #expect(iface.ssid?.bytes == raw)
        #expect(iface.ssid?.utf8Text == nil)
        #expect(iface.ssid?.description == "\\xff\\xfeA\\x00\\x5c")
        #expect(iface.name == nil && iface.iftype == nil && iface.frequencyMHz == nil && iface.wiphy == nil)
    }

    @Test func hiddenEmptySSID() throws {
        let m = try NL80211TestMessage.parse(
            NL80211_CMD_NEW_INTERFACE, [.u32(a(NL80211_ATTR_IFINDEX), 3), .bytes(a(NL80211_ATTR_SSID), [])])
        #expect(m == .interface(NL80211Interface(ifindex: 3, ssid: SSID(bytes: []))))
        guard case .interface(let iface) = m else { return }
        #expect(iface.ssid?.isEmpty == true)
    }

    @Test func thirtyTwoByteSSIDIsAcceptedAndThirtyThreeIsNot() throws {
        let max = [UInt8](repeating: 0x61, count: 32)
        let m = try NL80211TestMessage.parse(
            NL80211_CMD_NEW_INTERFACE, [.u32(a(NL80211_ATTR_IFINDEX), 3), .bytes(a(NL80211_ATTR_SSID), max)])
        #expect(m == .interface(NL80211Interface(ifindex: 3, ssid: SSID(String(repeating: "a", count: 32)))))

        let error = #expect(throws: NetlinkParseError.self) {
            try NL80211TestMessage.parse(
                NL80211_CMD_NEW_INTERFACE, [.u32(a(NL80211_ATTR_IFINDEX), 3), .bytes(a(NL80211_ATTR_SSID), max + [0x61])])
        }
        #expect(
            error
                == NetlinkParseError(
                    message: "NL80211_CMD_NEW_INTERFACE", attribute: "NL80211_ATTR_SSID",
                    problem: "33 bytes, an SSID has at most 32"))
    }

    @Test func missingIfindexIsAnError() {
        let error = #expect(throws: NetlinkParseError.self) {
            try NL80211TestMessage.parse(
                NL80211_CMD_NEW_INTERFACE, [.string(a(NL80211_ATTR_IFNAME), "wlan0"), .u32(a(NL80211_ATTR_IFTYPE), 2)])
        }
        #expect(
            error
                == NetlinkParseError(
                    message: "NL80211_CMD_NEW_INTERFACE", attribute: "NL80211_ATTR_IFINDEX", problem: "missing"))
        #expect(error?.description == "NL80211_CMD_NEW_INTERFACE: NL80211_ATTR_IFINDEX: missing")
    }

    @Test func twoByteIfindexIsAnError() {
        let error = #expect(throws: NetlinkParseError.self) {
            try NL80211TestMessage.parse(NL80211_CMD_NEW_INTERFACE, [.bytes(a(NL80211_ATTR_IFINDEX), [3, 0])])
        }
        #expect(
            error
                == NetlinkParseError(
                    message: "NL80211_CMD_NEW_INTERFACE", attribute: "NL80211_ATTR_IFINDEX",
                    problem: "payload of 2 bytes, need 4"))
    }

    @Test func wdevOnlyInterfaceIsNotAnInterface() throws {
        // A P2P-device wdev (iftype 10) has NL80211_ATTR_WDEV but no netdev, so no IFINDEX.
        let m = try NL80211TestMessage.parse(
            NL80211_CMD_NEW_INTERFACE,
            [.bytes(a(NL80211_ATTR_WDEV), [1, 0, 0, 0, 1, 0, 0, 0]), .u32(a(NL80211_ATTR_IFTYPE), 10)])
        #expect(m == .other(command: UInt8(NL80211_CMD_NEW_INTERFACE.rawValue)))
    }

    @Test func messageShorterThanGenlHeaderIsAnError() throws {
        // A netlink header followed by 2 of the 4 genl header bytes.
        var bytes = NL80211TestMessage.bytes(NL80211_CMD_NEW_INTERFACE, [])
        #expect(bytes.count == 20)
        bytes.removeLast(2)
        let error = #expect(throws: NetlinkParseError.self) { try NL80211TestMessage.parseRaw(bytes) }
        #expect(
            error
                == NetlinkParseError(
                    message: "nl80211 message", attribute: "header",
                    problem: "payload of 2 bytes, shorter than its 4-byte fixed header"))
    }

    @Test func delInterface() throws {
        let m = try NL80211TestMessage.parse(NL80211_CMD_DEL_INTERFACE, [.u32(a(NL80211_ATTR_IFINDEX), 9)])
        #expect(m == .interfaceRemoved(ifindex: 9))
        let error = #expect(throws: NetlinkParseError.self) {
            try NL80211TestMessage.parse(NL80211_CMD_DEL_INTERFACE, [])
        }
        #expect(error?.message == "NL80211_CMD_DEL_INTERFACE")
        #expect(error?.attribute == "NL80211_ATTR_IFINDEX")
    }

    @Test func otherCommands() throws {
        let m = try NL80211TestMessage.parse(NL80211_CMD_TRIGGER_SCAN, [.u32(a(NL80211_ATTR_IFINDEX), 3)])
        #expect(m == .other(command: UInt8(NL80211_CMD_TRIGGER_SCAN.rawValue)))
    }
}

// MARK: - Scan results

@Suite struct NL80211BSSParsingTests {
    @Test func rsnPSKAssociated() throws {
        let bss = try NL80211TestMessage.parseBSS(
            status: UInt32(NL80211_BSS_STATUS_ASSOCIATED.rawValue), ies: IE.ssid("office") + IE.rates + IE.rsn([IE.psk]) + IE.wmm)
        #expect(
            bss
                == NL80211BSS(
                    ifindex: 3, bssid: bssidA, frequencyMHz: 5180, status: .associated, ssid: SSID("office"),
                    security: .psk, akmSuites: [0x000F_AC02], privacy: true))
    }

    @Test func rsnEnterprise() throws {
        let bss = try NL80211TestMessage.parseBSS(ies: IE.ssid("corp") + IE.rsn([IE.dot1x]))
        #expect(bss.security == .enterprise)
        #expect(bss.akmSuites == [0x000F_AC01])
        #expect(bss.status == BSSStatus.none)
        #expect(bss.ssid == SSID("corp"))
    }

    @Test func rsnSAE() throws {
        let bss = try NL80211TestMessage.parseBSS(ies: IE.ssid("home") + IE.rsn([IE.sae]))
        #expect(bss.security == .sae)
        #expect(bss.akmSuites == [0x000F_AC08])
    }

    @Test func pskSAETransitionAssumesWeakest() throws {
        let bss = try NL80211TestMessage.parseBSS(ies: IE.ssid("home") + IE.rsn([IE.sae, IE.psk]))
        #expect(bss.security == .psk)
        #expect(bss.akmSuites == [0x000F_AC08, 0x000F_AC02])
    }

    @Test func pskEnterpriseTransitionAssumesWeakest() throws {
        let bss = try NL80211TestMessage.parseBSS(ies: IE.rsn([IE.dot1x, IE.psk]))
        #expect(bss.security == .psk)
        #expect(bss.ssid == nil)
    }

    @Test func unknownAKMIsWeakest() throws {
        let bss = try NL80211TestMessage.parseBSS(ies: IE.rsn([IE.dot1x, 0x0012_3401]))
        #expect(bss.security == .unknown)
        #expect(bss.akmSuites == [0x000F_AC01, 0x0012_3401])
    }

    @Test func wpa1VendorElement() throws {
        let bss = try NL80211TestMessage.parseBSS(ies: IE.ssid("legacy") + IE.wmm + IE.wpa([0x0050_F202]))
        #expect(bss.security == .psk)
        #expect(bss.akmSuites == [0x0050_F202])
        #expect(bss.ssid == SSID("legacy"))
    }

    @Test func wpa1PlusWPA2MixedMode() throws {
        let bss = try NL80211TestMessage.parseBSS(ies: IE.rsn([IE.dot1x]) + IE.wpa([0x0050_F201]))
        #expect(bss.security == .enterprise)
        #expect(bss.akmSuites == [0x000F_AC01, 0x0050_F201])
    }

    @Test func openNetwork() throws {
        let bss = try NL80211TestMessage.parseBSS(capability: 0x0401, ies: IE.ssid("guest") + IE.rates + IE.wmm)
        #expect(
            bss
                == NL80211BSS(
                    ifindex: 3, bssid: bssidA, frequencyMHz: 5180, status: .none, ssid: SSID("guest"), security: .open,
                    akmSuites: [], privacy: false))
    }

    @Test func wepIsPrivacyWithoutRSN() throws {
        let bss = try NL80211TestMessage.parseBSS(capability: 0x0011, ies: IE.ssid("old"))
        #expect(bss.security == .wep)
        #expect(bss.privacy)
        #expect(bss.akmSuites == [])
    }

    @Test func noCapabilityNoIEsIsOpen() throws {
        let bss = try NL80211TestMessage.parseBSS(capability: nil)
        #expect(bss.security == .open)
        #expect(!bss.privacy)
        #expect(bss.ssid == nil)
    }

    @Test func owe() throws {
        let bss = try NL80211TestMessage.parseBSS(ies: IE.ssid("cafe") + IE.rsn([IE.owe]))
        #expect(bss.security == .owe)
        #expect(bss.akmSuites == [0x000F_AC12])
    }

    @Test func rsnEndingBeforeAKMListDefaultsTo8021X() throws {
        // Version, group cipher and pairwise list, nothing more: AKM defaults to 00-0F-AC:1.
        let rsn = IE.element(48, IE.le16(1) + IE.suite(0x000F_AC04) + IE.le16(1) + IE.suite(0x000F_AC04))
        let bss = try NL80211TestMessage.parseBSS(ies: IE.ssid("x") + rsn)
        #expect(bss.security == .enterprise)
        #expect(bss.akmSuites == [0x000F_AC01])
        // Version only: same default.
        let short = try NL80211TestMessage.parseBSS(ies: IE.element(48, IE.le16(1)))
        #expect(short.akmSuites == [0x000F_AC01])
        #expect(short.security == .enterprise)
    }

    @Test func hiddenSSIDElement() throws {
        let bss = try NL80211TestMessage.parseBSS(ies: IE.element(0, []) + IE.rsn([IE.psk]))
        #expect(bss.ssid == SSID(bytes: []))
        #expect(bss.ssid?.isEmpty == true)
    }

    @Test func statusValues() throws {
        #expect(try NL80211TestMessage.parseBSS(status: 0).status == .authenticated)
        #expect(try NL80211TestMessage.parseBSS(status: 1).status == .associated)
        #expect(try NL80211TestMessage.parseBSS(status: 2).status == .ibssJoined)
        #expect(try NL80211TestMessage.parseBSS(status: nil).status == BSSStatus.none)
        #expect(try NL80211TestMessage.parseBSS(status: 77).status == BSSStatus.none)
    }

    @Test func beaconIEsAreTheFallback() throws {
        let onlyBeacon = try NL80211TestMessage.parseBSS(ies: nil, beaconIEs: IE.ssid("b") + IE.rsn([IE.sae]))
        #expect(onlyBeacon.ssid == SSID("b"))
        #expect(onlyBeacon.security == .sae)
        let both = try NL80211TestMessage.parseBSS(
            ies: IE.ssid("probe") + IE.rsn([IE.psk]), beaconIEs: IE.ssid("beacon") + IE.rsn([IE.sae]))
        #expect(both.ssid == SSID("probe"))
        #expect(both.security == .psk)
    }

    @Test func truncatedIEListIsAnError() {
        // SSID element (6 bytes), then an RSN header claiming 20 bytes with 5 present.
        let ies = IE.ssid("abcd") + [48, 20, 1, 0, 0, 0x0f, 0xac]
        let error = #expect(throws: NetlinkParseError.self) { try NL80211TestMessage.parseBSS(ies: ies) }
        #expect(
            error
                == NetlinkParseError(
                    message: "NL80211_CMD_NEW_SCAN_RESULTS", attribute: "NL80211_BSS_INFORMATION_ELEMENTS",
                    problem: "element 48 at offset 6: claims 20 bytes of data, only 5 remain"))
    }

    @Test func truncatedBeaconIEsNameTheirAttribute() {
        let error = #expect(throws: NetlinkParseError.self) {
            try NL80211TestMessage.parseBSS(ies: nil, beaconIEs: IE.ssid("ab") + [0xdd])
        }
        #expect(error?.attribute == "NL80211_BSS_BEACON_IES")
        #expect(error?.problem == "element 221 at offset 4: truncated header: 1 byte left, an element header has 2")
    }

    @Test func oversizedSSIDElementIsAnError() {
        let ies = IE.element(0, [UInt8](repeating: 0x41, count: 33))
        let error = #expect(throws: NetlinkParseError.self) { try NL80211TestMessage.parseBSS(ies: ies) }
        #expect(error?.attribute == "NL80211_BSS_INFORMATION_ELEMENTS")
        #expect(error?.problem == "element 0 at offset 0: SSID of 33 bytes, at most 32 allowed")
    }

    @Test func missingBSSIDIsAnError() {
        let error = #expect(throws: NetlinkParseError.self) {
            try NL80211TestMessage.parse(NL80211_CMD_NEW_SCAN_RESULTS, NL80211TestMessage.bssAttrs(bssid: nil))
        }
        #expect(
            error
                == NetlinkParseError(
                    message: "NL80211_CMD_NEW_SCAN_RESULTS", attribute: "NL80211_BSS_BSSID", problem: "missing"))
    }

    @Test func shortBSSIDIsAnError() {
        let error = #expect(throws: NetlinkParseError.self) {
            try NL80211TestMessage.parse(NL80211_CMD_NEW_SCAN_RESULTS, NL80211TestMessage.bssAttrs(bssid: [1, 2, 3]))
        }
        #expect(error?.attribute == "NL80211_BSS_BSSID")
        #expect(error?.problem == "3 bytes, a MAC address has 6")
    }

    @Test func scanResultsWithoutBSSIsScanDone() throws {
        let m = try NL80211TestMessage.parse(NL80211_CMD_NEW_SCAN_RESULTS, [.u32(a(NL80211_ATTR_IFINDEX), 4)])
        #expect(m == .scanDone(ifindex: 4))
    }
}

// MARK: - Connection events

@Suite struct NL80211AssociationParsingTests {
    let mac: [UInt8] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]

    @Test func connectSucceeded() throws {
        let m = try NL80211TestMessage.parse(
            NL80211_CMD_CONNECT,
            [
                .u32(a(NL80211_ATTR_IFINDEX), 3), .bytes(a(NL80211_ATTR_MAC), mac), .u16(a(NL80211_ATTR_STATUS_CODE), 0),
                .u32(a(NL80211_ATTR_WIPHY_FREQ), 2412),
            ])
        #expect(m == .association(ifindex: 3, event: .connect, bssid: bssidA, statusCode: 0))
    }

    @Test func connectFailed() throws {
        let m = try NL80211TestMessage.parse(
            NL80211_CMD_CONNECT, [.u32(a(NL80211_ATTR_IFINDEX), 3), .u16(a(NL80211_ATTR_STATUS_CODE), 17)])
        #expect(m == .association(ifindex: 3, event: .connect, bssid: nil, statusCode: 17))
    }

    @Test func disconnect() throws {
        let m = try NL80211TestMessage.parse(
            NL80211_CMD_DISCONNECT, [.u32(a(NL80211_ATTR_IFINDEX), 3), .u16(a(NL80211_ATTR_REASON_CODE), 3)])
        #expect(m == .association(ifindex: 3, event: .disconnect, bssid: nil, statusCode: nil))
    }

    @Test func roamAndPortAuthorized() throws {
        let other: [UInt8] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x66]
        let roam = try NL80211TestMessage.parse(
            NL80211_CMD_ROAM, [.u32(a(NL80211_ATTR_IFINDEX), 3), .bytes(a(NL80211_ATTR_MAC), other)])
        #expect(roam == .association(ifindex: 3, event: .roam, bssid: MACAddress(bytes: other), statusCode: nil))
        let auth = try NL80211TestMessage.parse(
            NL80211_CMD_PORT_AUTHORIZED, [.u32(a(NL80211_ATTR_IFINDEX), 3), .bytes(a(NL80211_ATTR_MAC), mac)])
        #expect(auth == .association(ifindex: 3, event: .portAuthorized, bssid: bssidA, statusCode: nil))
    }

    @Test func shortStatusCodeAndMACAreErrors() {
        let status = #expect(throws: NetlinkParseError.self) {
            try NL80211TestMessage.parse(
                NL80211_CMD_CONNECT, [.u32(a(NL80211_ATTR_IFINDEX), 3), .bytes(a(NL80211_ATTR_STATUS_CODE), [1])])
        }
        #expect(
            status
                == NetlinkParseError(
                    message: "NL80211_CMD_CONNECT", attribute: "NL80211_ATTR_STATUS_CODE", problem: "payload of 1 bytes, need 2"))
        let mac = #expect(throws: NetlinkParseError.self) {
            try NL80211TestMessage.parse(
                NL80211_CMD_ROAM, [.u32(a(NL80211_ATTR_IFINDEX), 3), .bytes(a(NL80211_ATTR_MAC), [1, 2, 3, 4, 5])])
        }
        #expect(mac?.message == "NL80211_CMD_ROAM")
        #expect(mac?.attribute == "NL80211_ATTR_MAC")
    }
}

// MARK: - Information elements, directly

@Suite struct InformationElementTests {
    @Test func firstElementsWinAndOthersAreSkipped() throws {
        let ies = IE.rates + IE.ssid("first") + IE.ssid("second") + IE.rsn([IE.sae]) + IE.rsn([IE.psk]) + IE.wmm
        let parsed = try InformationElements.parse(ies)
        #expect(parsed == InformationElements(ssid: SSID("first"), rsnAKMSuites: [IE.sae], wpaAKMSuites: nil))
        #expect(parsed.security(privacy: true) == .sae)
    }

    @Test func emptyListIsNothing() throws {
        let parsed = try InformationElements.parse([])
        #expect(parsed == InformationElements())
        #expect(parsed.security(privacy: false) == .open)
        #expect(parsed.security(privacy: true) == .wep)
    }

    @Test func rsnWithEmptyAKMListIsUnknown() throws {
        let rsn = IE.element(48, IE.le16(1) + IE.suite(0x000F_AC04) + IE.le16(0) + IE.le16(0))
        let parsed = try InformationElements.parse(rsn)
        #expect(parsed.rsnAKMSuites == [])
        #expect(parsed.security(privacy: true) == .unknown)
    }

    @Test func wpaEndingBeforeAKMListDefaultsToWPA8021X() throws {
        let wpa = IE.element(221, [0x00, 0x50, 0xF2, 0x01] + IE.le16(1) + IE.suite(0x0050_F202))
        let parsed = try InformationElements.parse(wpa)
        #expect(parsed.wpaAKMSuites == [0x0050_F201])
        #expect(parsed.security(privacy: true) == .enterprise)
    }

    @Test func malformedRSNBodies() {
        let cases: [([UInt8], String)] = [
            ([], "RSN element: truncated in version: 0 of 2 bytes"),
            (IE.le16(2), "RSN element: unsupported version 2"),
            (IE.le16(1) + [0x00, 0x0f], "RSN element: truncated in group cipher suite: 2 of 4 bytes"),
            (IE.le16(1) + IE.suite(0x000F_AC04) + [0x01], "RSN element: truncated in pairwise suite count: 1 of 2 bytes"),
            (
                IE.le16(1) + IE.suite(0x000F_AC04) + IE.le16(2) + IE.suite(0x000F_AC04),
                "RSN element: truncated in pairwise suite list (count 2): 4 of 8 bytes"
            ),
            (
                IE.le16(1) + IE.suite(0x000F_AC04) + IE.le16(1) + IE.suite(0x000F_AC04) + [0x01],
                "RSN element: truncated in AKM suite count: 1 of 2 bytes"
            ),
            (
                IE.le16(1) + IE.suite(0x000F_AC04) + IE.le16(1) + IE.suite(0x000F_AC04) + IE.le16(3) + IE.suite(IE.psk),
                "RSN element: truncated in AKM suite list (count 3): 4 of 12 bytes"
            ),
        ]
        for (body, problem) in cases {
            let error = #expect(throws: InformationElementError.self) {
                try InformationElements.parse(IE.rates + IE.element(48, body))
            }
            #expect(error == InformationElementError(offset: 6, elementID: 48, problem: problem))
        }
    }

    @Test func everyPrefixEitherParsesOrThrows() {
        let ies = IE.ssid("マイナンバー事務") + IE.rates + IE.rsn([IE.sae, IE.psk]) + IE.wmm + IE.wpa([0x0050_F202])
        var boundaries: Set<Int> = [0]
        var off = 0
        while off < ies.count {
            off += 2 + Int(ies[off + 1])
            boundaries.insert(off)
        }
        var parsedCount = 0
        for length in 0...ies.count {
            do throws(InformationElementError) {
                _ = try InformationElements.parse(Array(ies[..<length]))
                parsedCount += 1
                // Only cuts at element boundaries yield a well-formed list…
                #expect(boundaries.contains(length), "prefix of \(length) bytes parsed")
            } catch {
                // …every other cut is reported, at an offset inside the prefix.
                #expect(!boundaries.contains(length), "prefix of \(length) bytes: \(error)")
                #expect(error.offset < length)
            }
        }
        #expect(parsedCount == boundaries.count)
        #expect(parsedCount == 6)
    }
}

// MARK: - Fuzz-ish robustness

@Suite struct NL80211RobustnessTests {
    static let richAttrs: [TestAttr] = NL80211TestMessage.bssAttrs(
        status: 1, capability: 0x0411, ies: IE.ssid("office") + IE.rsn([IE.sae, IE.psk]) + IE.wpa([0x0050_F202]),
        beaconIEs: IE.ssid("office") + IE.rsn([IE.sae]))

    /// Offsets of every attribute header (top level and inside NL80211_ATTR_BSS).
    static func attributeHeaderOffsets(_ bytes: [UInt8]) -> [Int] {
        var out: [Int] = []
        func walk(_ start: Int, _ end: Int, nestedType: Int?) {
            var off = start
            while off + 4 <= end {
                let len = Int(bytes[off]) | Int(bytes[off + 1]) << 8
                let type = (Int(bytes[off + 2]) | Int(bytes[off + 3]) << 8) & 0x3fff
                guard len >= 4, off + len <= end else { return }
                out.append(off)
                if type == nestedType { walk(off + 4, off + len, nestedType: nil) }
                off += (len + 3) & ~3
            }
        }
        walk(20, bytes.count, nestedType: Int(NL80211_ATTR_BSS.rawValue))
        return out
    }

    @Test func truncationAtEveryOffsetNeverCrashes() throws {
        let bytes = NL80211TestMessage.bytes(NL80211_CMD_NEW_SCAN_RESULTS, Self.richAttrs)
        let full = try NL80211TestMessage.parseRaw(bytes)
        guard case .bss(let bss) = full else {
            Issue.record("expected a BSS, got \(full)")
            return
        }
        #expect(bss.security == .psk)
        #expect(bss.akmSuites == [IE.sae, IE.psk, 0x0050_F202])

        var outcomes: [String: Int] = [:]
        for length in 0..<bytes.count {
            do throws(NetlinkParseError) {
                let m = try NL80211TestMessage.parseRaw(Array(bytes[..<length]))
                switch m {
                case .bss: outcomes["bss", default: 0] += 1
                case .scanDone: outcomes["scanDone", default: 0] += 1
                default: Issue.record("unexpected \(m) at length \(length)")
                }
            } catch {
                outcomes["error", default: 0] += 1
                if length < 20 { #expect(error.attribute == "header") }
            }
        }
        // Cuts inside the headers are errors; cuts inside the BSS nest drop it (libnl stops at
        // the first attribute that does not fit), leaving a scan-done notification.
        #expect(outcomes["error", default: 0] >= 20)
        #expect(outcomes["scanDone", default: 0] > 0)
        #expect(outcomes.values.reduce(0, +) == bytes.count)
    }

    @Test func corruptingEveryByteNeverCrashes() throws {
        for (command, attrs) in [
            (NL80211_CMD_NEW_SCAN_RESULTS, Self.richAttrs),
            (
                NL80211_CMD_NEW_INTERFACE,
                [
                    .u32(a(NL80211_ATTR_IFINDEX), 3), .string(a(NL80211_ATTR_IFNAME), "wlan0"),
                    .bytes(a(NL80211_ATTR_SSID), Array("マイナンバー事務".utf8)),
                ]
            ),
        ] as [(nl80211_commands, [TestAttr])] {
            let bytes = NL80211TestMessage.bytes(command, attrs)
            var parsed = 0
            var failed = 0
            // Bytes 0..<4 are nlmsg_len, which parseRaw sets itself.
            for offset in 4..<bytes.count {
                for value: UInt8 in [0x00, 0xff, bytes[offset] ^ 0x80, bytes[offset] &+ 1] {
                    var corrupt = bytes
                    corrupt[offset] = value
                    do throws(NetlinkParseError) {
                        _ = try NL80211TestMessage.parseRaw(corrupt)
                        parsed += 1
                    } catch {
                        failed += 1
                        #expect(!error.message.isEmpty && !error.attribute.isEmpty)
                    }
                }
            }
            #expect(parsed + failed == (bytes.count - 4) * 4)
            #expect(parsed > 0)
            #expect(failed > 0)
        }
    }

    @Test func mutatingAttributeLengthsNeverCrashes() throws {
        let bytes = NL80211TestMessage.bytes(NL80211_CMD_NEW_SCAN_RESULTS, Self.richAttrs)
        let offsets = Self.attributeHeaderOffsets(bytes)
        // IFINDEX + BSS at the top, BSSID, FREQUENCY, CAPABILITY, IEs, BEACON_IES, STATUS inside.
        #expect(offsets.count == 8)
        var failed = 0
        var total = 0
        for off in offsets {
            let original = Int(bytes[off]) | Int(bytes[off + 1]) << 8
            for len in [0, 1, 2, 3, 4, 5, 6, 7, 8, original - 1, original + 1, original + 4, 0x7fff, 0xfff0, 0xffff] {
                var corrupt = bytes
                corrupt[off] = UInt8(len & 0xff)
                corrupt[off + 1] = UInt8(len >> 8 & 0xff)
                total += 1
                do {
                    _ = try NL80211TestMessage.parseRaw(corrupt)
                } catch {
                    failed += 1
                }
            }
        }
        #expect(total == offsets.count * 15)
        #expect(failed > 0)
    }
}

// MARK: - Requests

@Suite struct NL80211RequestTests {
    /// The genl command and, for a scan dump, NL80211_ATTR_IFINDEX of a built request.
    private func inspect(_ msg: OpaquePointer) throws -> (hdr: nlmsghdr, cmd: UInt8, version: UInt8, ifindex: UInt32?) {
        let hdr = nlmsg_hdr(msg)!
        let genl = try fixedHeader(hdr, as: genlmsghdr.self, context: "request")
        let attrs = try AttributeTable(
            message: hdr, headerLength: 4, maxType: a(NL80211_ATTR_MAX), context: "request")
        return (hdr.pointee, genl.cmd, genl.version, try attrs.u32(a(NL80211_ATTR_IFINDEX)))
    }

    @Test func interfaceDump() throws {
        let msg = try #require(NL80211Requests.getInterfaceDump(familyID: 0x1c))
        defer { nlmsg_free(msg) }
        let r = try inspect(msg)
        #expect(r.hdr.nlmsg_type == 0x1c)
        #expect(Int32(r.hdr.nlmsg_flags) == NLM_F_DUMP)
        #expect(r.hdr.nlmsg_seq == 0 && r.hdr.nlmsg_pid == 0)
        #expect(r.cmd == UInt8(NL80211_CMD_GET_INTERFACE.rawValue))
        #expect(r.version == 0)
        #expect(r.ifindex == nil)
        #expect(r.hdr.nlmsg_len == 20)
    }

    @Test func scanDump() throws {
        let msg = try #require(NL80211Requests.getScanDump(familyID: 0x1c, ifindex: 7))
        defer { nlmsg_free(msg) }
        let r = try inspect(msg)
        #expect(r.hdr.nlmsg_type == 0x1c)
        #expect(Int32(r.hdr.nlmsg_flags) == NLM_F_DUMP)
        #expect(r.cmd == UInt8(NL80211_CMD_GET_SCAN.rawValue))
        #expect(r.ifindex == 7)
        #expect(r.hdr.nlmsg_len == 28)
        // The parser does not decode requests.
        #expect(try NL80211Parser.parse(nlmsg_hdr(msg)) == .other(command: UInt8(NL80211_CMD_GET_SCAN.rawValue)))
    }
}

// MARK: - Connection quality (the office-area fence)

@Suite struct NL80211SignalTests {
    typealias M = NL80211TestMessage

    @Test("NOTIFY_CQM with the RSSI level, without it, and with a level that is no signal; NEW_STATION's signal is a signed byte")
    func cqmAndStation() throws {
        let cqm = M.a(NL80211_ATTR_CQM)
        let level = try M.parse(NL80211_CMD_NOTIFY_CQM, [.u32(M.a(NL80211_ATTR_IFINDEX), 3),
                                                          .nested(cqm, [.u32(Int32(NL80211_ATTR_CQM_RSSI_THRESHOLD_EVENT.rawValue), 0),
                                                                        .u32(Int32(NL80211_ATTR_CQM_RSSI_LEVEL.rawValue), UInt32(bitPattern: -77))])])
        #expect(level == .signal(ifindex: 3, dBm: -77))
        let crossed = try M.parse(NL80211_CMD_NOTIFY_CQM, [.u32(M.a(NL80211_ATTR_IFINDEX), 3),
                                                            .nested(cqm, [.u32(Int32(NL80211_ATTR_CQM_RSSI_THRESHOLD_EVENT.rawValue), 1)])])
        #expect(crossed == .signal(ifindex: 3, dBm: nil))
        #expect(throws: NetlinkParseError.self) {
            try M.parse(NL80211_CMD_NOTIFY_CQM, [.u32(M.a(NL80211_ATTR_IFINDEX), 3),
                                                 .nested(cqm, [.u32(Int32(NL80211_ATTR_CQM_RSSI_LEVEL.rawValue), 40)])])
        }
        #expect(throws: NetlinkParseError.self) { try M.parse(NL80211_CMD_NOTIFY_CQM, [.u32(M.a(NL80211_ATTR_IFINDEX), 3)]) }
        let station = try M.parse(NL80211_CMD_NEW_STATION, [.u32(M.a(NL80211_ATTR_IFINDEX), 3), .bytes(M.a(NL80211_ATTR_MAC), [2, 0, 0x5e, 0, 0x53, 1]),
                                                             .nested(M.a(NL80211_ATTR_STA_INFO), [.u8(Int32(NL80211_STA_INFO_SIGNAL.rawValue), 0xB5)])])
        #expect(station == .station(ifindex: 3, signalDBM: -75))
        // Through the same state the socket feeds: the tracker keeps the level for the snapshot.
        var state = NetworkState(nl80211Family: NL80211TestMessage.familyID)
        M.with(NL80211_CMD_NEW_INTERFACE, [.u32(M.a(NL80211_ATTR_IFINDEX), 3), .u32(M.a(NL80211_ATTR_IFTYPE), 2), .bytes(M.a(NL80211_ATTR_SSID), Array("mn-office".utf8))]) { hdr in
            _ = try? state.handleWireless(hdr)
        }
        let reads = M.with(NL80211_CMD_NOTIFY_CQM, [.u32(M.a(NL80211_ATTR_IFINDEX), 3), .nested(cqm, [.u32(Int32(NL80211_ATTR_CQM_RSSI_THRESHOLD_EVENT.rawValue), 0)])]) { hdr in
            (try? state.handleWireless(hdr)) ?? []
        }
        #expect(reads == [.station(ifindex: 3)])
    }

    @Test("SET_CQM carries the thresholds ascending as an s32 array and the hysteresis, inside NL80211_ATTR_CQM")
    func setCQM() throws {
        let msg = try #require(NL80211Requests.setCQM(familyID: 0x1c, ifindex: 7, thresholds: [-70, -75], hysteresis: 0))
        defer { nlmsg_free(msg) }
        let hdr = nlmsg_hdr(msg)!
        #expect(hdr.pointee.nlmsg_flags & UInt16(NLM_F_ACK) != 0)
        var attrs = [UnsafeMutablePointer<nlattr>?](repeating: nil, count: Int(NL80211_ATTR_MAX.rawValue) + 1)
        #expect(genlmsg_parse(hdr, 0, &attrs, Int32(NL80211_ATTR_MAX.rawValue), nil) == 0)
        #expect(nla_get_u32(attrs[Int(NL80211_ATTR_IFINDEX.rawValue)]) == 7)
        var inner = [UnsafeMutablePointer<nlattr>?](repeating: nil, count: Int(NL80211_ATTR_CQM_MAX.rawValue) + 1)
        #expect(nla_parse_nested(&inner, Int32(NL80211_ATTR_CQM_MAX.rawValue), attrs[Int(NL80211_ATTR_CQM.rawValue)], nil) == 0)
        let thold = try #require(inner[Int(NL80211_ATTR_CQM_RSSI_THOLD.rawValue)])
        #expect(nla_len(thold) == 8)
        let values = (0..<2).map { k in Int32(bitPattern: nla_data(thold).load(fromByteOffset: k * 4, as: UInt32.self)) }
        #expect(values == [-75, -70])
        #expect(nla_get_u32(inner[Int(NL80211_ATTR_CQM_RSSI_HYST.rawValue)]) == 0)
    }
}
