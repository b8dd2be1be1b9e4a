// The wireless half of the network state: which interfaces are nl80211 interfaces, and the
// BSS each one is associated with. Owns that state as a pure value driven by decoded
// nl80211 messages; it does no I/O, it only says which dumps the caller must (re)read.

import SegguardPolicy

/// A dump the caller must request because the tracker's state may be stale.
public enum WirelessReadRequest: Equatable, Sendable, Hashable {
    /// Send `NL80211Requests.getInterfaceDump`, bracketed by `beginInterfaceDump()` /
    /// `endInterfaceDump()`.
    case interfaces
    /// Send `NL80211Requests.getScanDump` for this interface, bracketed by
    /// `beginScanDump(ifindex:)` / `endScanDump(ifindex:)`.
    case scan(ifindex: Int32)
    /// Send `NL80211Requests.getStationDump` for this interface (its access point's signal).
    case station(ifindex: Int32)
}

/// The state machine the nl80211 socket loop drives.
///
/// Feed every decoded message to `apply(_:)` and perform the returned read requests (the
/// requests of one call are de-duplicated; across calls the caller may coalesce them). A
/// dump reply is applied like any message, but bracketing a complete dump with
/// `begin…Dump` / `end…Dump` lets the tracker drop what the dump no longer reports.
///
/// The association of an interface comes only from scan dumps (the BSS whose status is
/// associated or IBSS-joined), because only they carry the BSSID's security. Events only
/// trigger re-reads, except a disconnect or a failed connect, which clear the association at
/// once so that the decision turns without waiting for a dump. A roam keeps the previous
/// BSS until the requested scan dump reports the new one (same network, so no flapping).
public struct WirelessTracker: Sendable {
    /// Progress of one scan dump.
    private struct ScanDump: Sendable {
        /// An associated/joined BSS was applied from this dump.
        var sawConnected = false
        /// A disconnect arrived mid-dump: the dump's "associated" may predate it, so ignore it.
        var invalidated = false
    }

    /// Known nl80211 interfaces by ifindex.
    private var interfaces: [Int32: NL80211Interface] = [:]
    /// The connected BSS by ifindex (only for interfaces in `interfaces`, or awaiting one).
    private var associations: [Int32: NL80211BSS] = [:]
    /// The access point's signal per interface (dBm), from CQM events and station reads.
    private var signals: [Int32: Int32] = [:]
    /// Scan dumps in progress.
    private var scanDumps: [Int32: ScanDump] = [:]
    /// Ifindexes reported by the interface dump in progress; nil when none is.
    private var interfaceDumpSeen: Set<Int32>?
    /// Interfaces removed while an interface dump is in progress: its (possibly older)
    /// reply for them must not resurrect them. Ifindexes are not reused quickly.
    private var removedDuringInterfaceDump: Set<Int32> = []

    public init() {}

    /// Interfaces known to be nl80211 (wireless) interfaces.
    public var wirelessIfindexes: Set<Int32> { Set(interfaces.keys) }

    /// The decoded interface message last seen for `ifindex`, if it is wireless.
    public func interface(_ ifindex: Int32) -> NL80211Interface? { interfaces[ifindex] }

    /// The link of a wireless interface: associated (SSID, BSSID, frequency, security), or
    /// `WirelessLink.disconnected` when not associated. Nil when `ifindex` is not wireless.
    ///
    /// The SSID of the interface message wins over the BSS's SSID element (the interface's
    /// is the network actually connected; a hidden network's beacon SSID is empty); the
    /// element's SSID is used only when the interface message has none.
    public func link(for ifindex: Int32) -> WirelessLink? {
        guard let iface = interfaces[ifindex] else { return nil }
        guard let bss = associations[ifindex] else { return .disconnected }
        return WirelessLink(
            ssid: iface.ssid ?? bss.ssid, bssid: bss.bssid, frequencyMHz: bss.frequencyMHz ?? iface.frequencyMHz,
            security: bss.security, akmSuites: bss.akmSuites, signalDBM: signals[ifindex])
    }

    /// Applies one decoded message; returns the dumps to (re)read, without duplicates.
    public mutating func apply(_ message: NL80211Message) -> [WirelessReadRequest] {
        switch message {
        case .interface(let iface):
            return applyInterface(iface)

        case .interfaceRemoved(let ifindex):
            forget(ifindex)
            if interfaceDumpSeen != nil { removedDuringInterfaceDump.insert(ifindex) }
            return []

        case .bss(let bss):
            applyBSS(bss)
            return []

        case .scanDone:
            // A finished scan does not change the association; nothing to re-read.
            return []

        case .association(let ifindex, let event, _, let statusCode):
            switch event {
            case .connect where (statusCode ?? 0) != 0:
                // The attempt failed: not associated (whatever was before was already left).
                disassociate(ifindex)
                return [.interfaces]
            case .connect, .roam:
                // A new access point: its signal is not the old one's.
                signals[ifindex] = nil
                return [.interfaces, .scan(ifindex: ifindex), .station(ifindex: ifindex)]
            case .portAuthorized:
                return [.interfaces, .scan(ifindex: ifindex)]
            case .disconnect:
                disassociate(ifindex)
                return [.interfaces]
            }

        case let .signal(ifindex, dBm):
            guard let dBm else { return [.station(ifindex: ifindex)] }
            signals[ifindex] = dBm
            return []

        case let .station(ifindex, signal):
            if associations[ifindex] != nil || interfaces[ifindex]?.ssid != nil { signals[ifindex] = signal }
            return []

        case .other:
            return []
        }
    }

    /// A GET_SCAN dump for `ifindex` starts: its replies replace the interface's BSS info.
    public mutating func beginScanDump(ifindex: Int32) {
        scanDumps[ifindex] = ScanDump()
    }

    /// The GET_SCAN dump for `ifindex` completed: without an associated BSS in it (or when a
    /// disconnect arrived meanwhile) the interface is not associated.
    public mutating func endScanDump(ifindex: Int32) {
        guard let dump = scanDumps.removeValue(forKey: ifindex) else { return }
        if !dump.sawConnected || dump.invalidated { associations[ifindex] = nil }
    }

    /// A GET_INTERFACE dump starts: interfaces it does not report will be forgotten.
    public mutating func beginInterfaceDump() {
        interfaceDumpSeen = []
        removedDuringInterfaceDump = []
    }

    /// The GET_INTERFACE dump completed: forgets every interface it did not report.
    public mutating func endInterfaceDump() {
        guard let seen = interfaceDumpSeen else { return }
        interfaceDumpSeen = nil
        removedDuringInterfaceDump = []
        for ifindex in Set(interfaces.keys).union(associations.keys) where !seen.contains(ifindex) {
            forget(ifindex)
        }
    }

    // MARK: - Pieces

    /// Station-like interface types (`nl80211_iftype`: 1 ad-hoc, 2 station, 8 P2P client),
    /// whose SSID attribute means "associated". An AP's SSID is its own network.
    private static let stationTypes: Set<UInt32> = [1, 2, 8]

    private mutating func applyInterface(_ iface: NL80211Interface) -> [WirelessReadRequest] {
        let ifindex = iface.ifindex
        if interfaceDumpSeen != nil {
            if removedDuringInterfaceDump.contains(ifindex) { return [] }
            interfaceDumpSeen?.insert(ifindex)
        }
        interfaces[ifindex] = iface
        // The interface says associated but no BSS is known (e.g. at start-up), or the other
        // way round: read the scan results, unless a scan dump is already under way.
        let isStation = iface.iftype.map { Self.stationTypes.contains($0) } ?? true
        if isStation, (iface.ssid != nil) != (associations[ifindex] != nil), scanDumps[ifindex] == nil {
            return [.scan(ifindex: ifindex)]
        }
        return []
    }

    private mutating func applyBSS(_ bss: NL80211BSS) {
        let ifindex = bss.ifindex
        if var dump = scanDumps[ifindex] {
            if dump.invalidated { return }
            if bss.status.isConnected {
                dump.sawConnected = true
                scanDumps[ifindex] = dump
            }
        }
        if bss.status.isConnected {
            associations[ifindex] = bss
        } else if associations[ifindex]?.bssid == bss.bssid {
            // The BSS we thought associated says it no longer is.
            associations[ifindex] = nil
        }
    }

    /// Clears the association now; the interface's SSID and frequency describe the old
    /// association, so they go too until the interface is re-read.
    private mutating func disassociate(_ ifindex: Int32) {
        associations[ifindex] = nil
        signals[ifindex] = nil
        interfaces[ifindex]?.ssid = nil
        interfaces[ifindex]?.frequencyMHz = nil
        scanDumps[ifindex]?.invalidated = true
    }

    private mutating func forget(_ ifindex: Int32) {
        signals[ifindex] = nil
        interfaces[ifindex] = nil
        associations[ifindex] = nil
        scanDumps[ifindex] = nil
    }
}
