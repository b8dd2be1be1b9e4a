// Tests of WirelessTracker, the pure state machine behind the nl80211 socket loop: which
// re-reads it requests and what link it reports. Owns no state beyond each test's tracker.

import SegguardPolicy
import Testing

@testable import SegguardNetlink

private let apA = MACAddress("02:00:00:00:00:0a")!
private let apB = MACAddress("02:00:00:00:00:0b")!
private let corp = SSID("corp")

private func station(_ ifindex: Int32, ssid: SSID?, freq: UInt32? = nil, iftype: UInt32 = 2) -> NL80211Message {
    .interface(NL80211Interface(ifindex: ifindex, name: "wlan\(ifindex)", iftype: iftype, ssid: ssid, frequencyMHz: freq, wiphy: 0))
}

private func bss(
    _ ifindex: Int32, _ bssid: MACAddress, _ status: BSSStatus, freq: UInt32 = 5180, ssid: SSID? = corp,
    security: WirelessSecurity = .enterprise, akms: [UInt32] = [0x000F_AC01]
) -> NL80211Message {
    .bss(
        NL80211BSS(
            ifindex: ifindex, bssid: bssid, frequencyMHz: freq, status: status, ssid: ssid, security: security,
            akmSuites: akms, privacy: true))
}

/// Plays a complete scan dump for `ifindex`.
private func scanDump(_ t: inout WirelessTracker, _ ifindex: Int32, _ messages: [NL80211Message]) {
    t.beginScanDump(ifindex: ifindex)
    for m in messages { #expect(t.apply(m) == []) }
    t.endScanDump(ifindex: ifindex)
}

/// A tracker with wlan3 associated to AP A of "corp".
private func associated() -> WirelessTracker {
    var t = WirelessTracker()
    #expect(t.apply(station(3, ssid: corp, freq: 5180)) == [.scan(ifindex: 3)])
    scanDump(&t, 3, [bss(3, apA, .associated), bss(3, apB, .none, freq: 2412)])
    return t
}

@Suite struct WirelessTrackerTests {
    @Test func startupInterfaceThenScanGivesTheLink() {
        let t = associated()
        #expect(t.wirelessIfindexes == [3])
        #expect(
            t.link(for: 3)
                == WirelessLink(ssid: corp, bssid: apA, frequencyMHz: 5180, security: .enterprise, akmSuites: [0x000F_AC01]))
        #expect(t.link(for: 3)?.isAssociated == true)
        #expect(t.link(for: 4) == nil)
    }

    @Test func roamBetweenTwoBSSIDsOfTheSameSSID() {
        var t = associated()
        let requests = t.apply(.association(ifindex: 3, event: .roam, bssid: apB, statusCode: nil))
        #expect(requests == [.interfaces, .scan(ifindex: 3), .station(ifindex: 3)])
        // Until the scan dump says otherwise the old BSS stays (same network: no flapping).
        #expect(t.link(for: 3)?.bssid == apA)

        // The interface dump: still associated to "corp", a BSS is known: nothing more to read.
        t.beginInterfaceDump()
        #expect(t.apply(station(3, ssid: corp, freq: 2412)) == [])
        t.endInterfaceDump()

        scanDump(&t, 3, [bss(3, apA, .none), bss(3, apB, .associated, freq: 2412)])
        #expect(
            t.link(for: 3)
                == WirelessLink(ssid: corp, bssid: apB, frequencyMHz: 2412, security: .enterprise, akmSuites: [0x000F_AC01]))
    }

    @Test func connectAndPortAuthorizedRequestBothReads() {
        var t = WirelessTracker()
        #expect(t.apply(station(3, ssid: nil)) == [])
        #expect(t.link(for: 3) == .disconnected)
        #expect(
            t.apply(.association(ifindex: 3, event: .connect, bssid: apA, statusCode: 0))
                == [.interfaces, .scan(ifindex: 3), .station(ifindex: 3)])
        #expect(
            t.apply(.association(ifindex: 3, event: .portAuthorized, bssid: apA, statusCode: nil))
                == [.interfaces, .scan(ifindex: 3)])
        scanDump(&t, 3, [bss(3, apA, .associated, security: .psk, akms: [0x000F_AC02])])
        #expect(t.link(for: 3)?.bssid == apA)
        #expect(t.link(for: 3)?.security == .psk)
        // The interface message had no SSID yet: the BSS's SSID element is used.
        #expect(t.link(for: 3)?.ssid == corp)
    }

    @Test func disconnectClearsAtOnce() {
        var t = associated()
        #expect(t.apply(.association(ifindex: 3, event: .disconnect, bssid: nil, statusCode: nil)) == [.interfaces])
        #expect(t.link(for: 3) == .disconnected)
        #expect(t.link(for: 3)?.isAssociated == false)
        #expect(t.wirelessIfindexes == [3])
        #expect(t.interface(3)?.ssid == nil)
    }

    @Test func failedConnectIsNotAssociated() {
        var t = associated()
        #expect(t.apply(.association(ifindex: 3, event: .connect, bssid: apB, statusCode: 16)) == [.interfaces])
        #expect(t.link(for: 3) == .disconnected)
    }

    @Test func disconnectDuringScanDumpIgnoresItsStaleAssociation() {
        var t = associated()
        t.beginScanDump(ifindex: 3)
        #expect(t.apply(.association(ifindex: 3, event: .disconnect, bssid: nil, statusCode: nil)) == [.interfaces])
        #expect(t.apply(bss(3, apA, .associated)) == [])
        t.endScanDump(ifindex: 3)
        #expect(t.link(for: 3) == .disconnected)
    }

    @Test func interfaceRemovalForgets() {
        var t = associated()
        #expect(t.apply(.interfaceRemoved(ifindex: 3)) == [])
        #expect(t.wirelessIfindexes.isEmpty)
        #expect(t.link(for: 3) == nil)
        // Coming back (same index, new interface): no stale association.
        #expect(t.apply(station(3, ssid: nil)) == [])
        #expect(t.link(for: 3) == .disconnected)
    }

    @Test func interfaceDumpReplacesTheSet() {
        var t = associated()
        #expect(t.apply(station(4, ssid: nil)) == [])
        #expect(t.wirelessIfindexes == [3, 4])

        t.beginInterfaceDump()
        #expect(t.apply(station(4, ssid: nil)) == [])
        // Not yet complete: nothing is forgotten before the end.
        #expect(t.wirelessIfindexes == [3, 4])
        t.endInterfaceDump()
        #expect(t.wirelessIfindexes == [4])
        #expect(t.link(for: 3) == nil)

        // Re-appearing later starts from scratch and asks for its association.
        #expect(t.apply(station(3, ssid: corp)) == [.scan(ifindex: 3)])
        #expect(t.link(for: 3) == .disconnected)
    }

    @Test func removalDuringInterfaceDumpIsNotResurrected() {
        var t = associated()
        t.beginInterfaceDump()
        #expect(t.apply(.interfaceRemoved(ifindex: 3)) == [])
        // The dump's reply was generated before the removal.
        #expect(t.apply(station(3, ssid: corp)) == [])
        t.endInterfaceDump()
        #expect(t.wirelessIfindexes.isEmpty)
    }

    @Test func scanDumpWithoutAssociatedBSSClears() {
        var t = associated()
        scanDump(&t, 3, [bss(3, apA, .authenticated), bss(3, apB, .none)])
        #expect(t.link(for: 3) == .disconnected)
        // An empty dump clears too.
        var u = associated()
        scanDump(&u, 3, [])
        #expect(u.link(for: 3) == .disconnected)
        // A dump of another interface does not touch this one.
        var v = associated()
        scanDump(&v, 5, [])
        #expect(v.link(for: 3)?.bssid == apA)
    }

    @Test func ibssJoinedCountsAsConnected() {
        var t = WirelessTracker()
        #expect(t.apply(station(3, ssid: SSID("adhoc"), iftype: 1)) == [.scan(ifindex: 3)])
        scanDump(&t, 3, [bss(3, apB, .ibssJoined, ssid: SSID("adhoc"), security: .open, akms: [])])
        #expect(
            t.link(for: 3)
                == WirelessLink(ssid: SSID("adhoc"), bssid: apB, frequencyMHz: 5180, security: .open, akmSuites: []))
    }

    @Test func interfaceSSIDWinsOverHiddenBeaconSSID() {
        var t = WirelessTracker()
        #expect(t.apply(station(3, ssid: SSID("hidden-net"), freq: 2437)) == [.scan(ifindex: 3)])
        scanDump(&t, 3, [bss(3, apA, .associated, freq: 2437, ssid: SSID(bytes: []), security: .sae, akms: [0x000F_AC08])])
        #expect(
            t.link(for: 3)
                == WirelessLink(
                    ssid: SSID("hidden-net"), bssid: apA, frequencyMHz: 2437, security: .sae, akmSuites: [0x000F_AC08]))
    }

    @Test func inconsistentInterfaceRequestsScanButNotMidDumpOrForAPs() {
        var t = associated()
        // The interface no longer reports an SSID while a BSS is still believed associated.
        #expect(t.apply(station(3, ssid: nil)) == [.scan(ifindex: 3)])
        // Not while that scan dump is under way.
        t.beginScanDump(ifindex: 3)
        #expect(t.apply(station(3, ssid: nil)) == [])
        t.endScanDump(ifindex: 3)
        #expect(t.link(for: 3) == .disconnected)
        // An AP interface's SSID is its own network, not an association.
        #expect(t.apply(station(6, ssid: SSID("hotspot"), iftype: 3)) == [])
        #expect(t.link(for: 6) == .disconnected)
    }

    @Test func otherMessagesChangeNothing() {
        var t = associated()
        #expect(t.apply(.scanDone(ifindex: 3)) == [])
        #expect(t.apply(.other(command: 33)) == [])
        #expect(t.link(for: 3)?.bssid == apA)
        // A non-associated BSS report for another BSSID does not clear the association.
        #expect(t.apply(bss(3, apB, .none)) == [])
        #expect(t.link(for: 3)?.bssid == apA)
        // But the associated BSS reporting "not associated" does.
        #expect(t.apply(bss(3, apA, .none)) == [])
        #expect(t.link(for: 3) == .disconnected)
    }
}

@Suite struct WirelessSignalTests {
    static let apA = MACAddress("02:00:5e:00:53:01")!

    @Test("the signal from a CQM event with its level, a station read, and none after a disconnect or a roam")
    func signal() {
        var t = WirelessTracker()
        _ = t.apply(.interface(NL80211Interface(ifindex: 3, name: "wlan0", iftype: 2, ssid: SSID("mn-office"), frequencyMHz: 5180)))
        t.beginScanDump(ifindex: 3)
        _ = t.apply(.bss(NL80211BSS(ifindex: 3, bssid: Self.apA, frequencyMHz: 5180, status: .associated, ssid: SSID("mn-office"),
                                    security: .enterprise, akmSuites: [], privacy: true)))
        t.endScanDump(ifindex: 3)
        #expect(t.link(for: 3)?.signalDBM == nil)
        #expect(t.apply(.signal(ifindex: 3, dBm: -67)) == [])
        #expect(t.link(for: 3)?.signalDBM == -67)
        // A threshold event without the level: read the station.
        #expect(t.apply(.signal(ifindex: 3, dBm: nil)) == [.station(ifindex: 3)])
        _ = t.apply(.station(ifindex: 3, signalDBM: -81))
        #expect(t.link(for: 3)?.signalDBM == -81)
        _ = t.apply(.association(ifindex: 3, event: .roam, bssid: Self.apA, statusCode: nil))
        #expect(t.link(for: 3)?.signalDBM == nil, "another access point: its signal is not known yet")
        _ = t.apply(.station(ifindex: 3, signalDBM: -60))
        _ = t.apply(.association(ifindex: 3, event: .disconnect, bssid: nil, statusCode: nil))
        #expect(t.link(for: 3)?.signalDBM == nil)
    }
}
