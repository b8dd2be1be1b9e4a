// Decoding of nl80211 generic-netlink messages (interface, scan-result and connection
// events and dump replies) into plain `NL80211Message` values. Owns no state: the socket
// callback hands each message here and feeds the result to `WirelessTracker`.

import CLibNL
import SegguardPolicy

/// A wireless interface as an nl80211 interface message describes it.
public struct NL80211Interface: Sendable, Equatable {
    public var ifindex: Int32
    /// NL80211_ATTR_IFNAME.
    public var name: String?
    /// NL80211_ATTR_IFTYPE (an `nl80211_iftype`, e.g. 2 = station).
    public var iftype: UInt32?
    /// NL80211_ATTR_SSID: present while a station is associated (AP mode: its own SSID).
    public var ssid: SSID?
    /// NL80211_ATTR_WIPHY_FREQ: the operating frequency.
    public var frequencyMHz: UInt32?
    /// NL80211_ATTR_WIPHY: the radio this interface belongs to.
    public var wiphy: UInt32?

    public init(
        ifindex: Int32, name: String? = nil, iftype: UInt32? = nil, ssid: SSID? = nil, frequencyMHz: UInt32? = nil,
        wiphy: UInt32? = nil
    ) {
        self.ifindex = ifindex
        self.name = name
        self.iftype = iftype
        self.ssid = ssid
        self.frequencyMHz = frequencyMHz
        self.wiphy = wiphy
    }
}

/// An interface's relation to a BSS, from NL80211_BSS_STATUS (absent = `.none`).
public enum BSSStatus: Sendable, Equatable {
    case none
    case authenticated
    case associated
    case ibssJoined

    /// Kernel values of `enum nl80211_bss_status`; values this code does not know are `.none`.
    public init(kernelValue: UInt32?) {
        switch kernelValue {
        case UInt32(NL80211_BSS_STATUS_AUTHENTICATED.rawValue): self = .authenticated
        case UInt32(NL80211_BSS_STATUS_ASSOCIATED.rawValue): self = .associated
        case UInt32(NL80211_BSS_STATUS_IBSS_JOINED.rawValue): self = .ibssJoined
        default: self = .none
        }
    }

    /// Associated (station) or joined (IBSS): the interface carries traffic on this BSS.
    public var isConnected: Bool { self == .associated || self == .ibssJoined }
}

/// One BSS of a GET_SCAN dump reply (NL80211_CMD_NEW_SCAN_RESULTS with NL80211_ATTR_BSS).
public struct NL80211BSS: Sendable, Equatable {
    /// The interface whose scan results these are.
    public var ifindex: Int32
    public var bssid: MACAddress
    public var frequencyMHz: UInt32?
    public var status: BSSStatus
    /// From the SSID element; empty for a hidden network, nil without an SSID element.
    public var ssid: SSID?
    /// The weakest advertised AKM's class (see `InformationElements.security(privacy:)`).
    public var security: WirelessSecurity
    /// AKM suite selectors (OUI << 8 | type) of the RSN element, then of the WPA1 element.
    public var akmSuites: [UInt32]
    /// The privacy bit (0x0010) of NL80211_BSS_CAPABILITY.
    public var privacy: Bool

    public init(
        ifindex: Int32, bssid: MACAddress, frequencyMHz: UInt32? = nil, status: BSSStatus = .none, ssid: SSID? = nil,
        security: WirelessSecurity, akmSuites: [UInt32] = [], privacy: Bool = false
    ) {
        self.ifindex = ifindex
        self.bssid = bssid
        self.frequencyMHz = frequencyMHz
        self.status = status
        self.ssid = ssid
        self.security = security
        self.akmSuites = akmSuites
        self.privacy = privacy
    }
}

/// A connection-state notification of a station interface.
public enum AssociationEvent: Sendable, Equatable {
    /// NL80211_CMD_CONNECT: a connect attempt finished (see the status code).
    case connect
    /// NL80211_CMD_DISCONNECT.
    case disconnect
    /// NL80211_CMD_ROAM: the station moved to another BSS of the same network.
    case roam
    /// NL80211_CMD_PORT_AUTHORIZED: the 802.1X/4-way handshake completed.
    case portAuthorized
}

/// One decoded nl80211 message.
public enum NL80211Message: Sendable, Equatable {
    /// NEW_INTERFACE / SET_INTERFACE notification or a GET_INTERFACE dump reply.
    case interface(NL80211Interface)
    /// DEL_INTERFACE.
    case interfaceRemoved(ifindex: Int32)
    /// One BSS of a GET_SCAN dump reply.
    case bss(NL80211BSS)
    /// NEW_SCAN_RESULTS without a BSS: a scan finished (a notification, not a result).
    case scanDone(ifindex: Int32)
    /// CONNECT / DISCONNECT / ROAM / PORT_AUTHORIZED. `bssid` is NL80211_ATTR_MAC when sent.
    /// `statusCode` (NL80211_ATTR_STATUS_CODE) is only read for `.connect`: 0 = success,
    /// anything else = the connect attempt failed and the station is not associated.
    case association(ifindex: Int32, event: AssociationEvent, bssid: MACAddress?, statusCode: UInt16?)
    /// NOTIFY_CQM: the signal crossed a connection-quality threshold. `dBm` is
    /// NL80211_ATTR_CQM_RSSI_LEVEL when the kernel sends it (nil: read the station).
    case signal(ifindex: Int32, dBm: Int32?)
    /// NEW_STATION (a GET_STATION dump reply): the access point's signal (NL80211_STA_INFO_SIGNAL).
    case station(ifindex: Int32, signalDBM: Int32?)
    /// Any other command, or an interface-less (wdev-only) message; carries the command.
    case other(command: UInt8)
}

/// Decodes nl80211 messages. Stateless.
public enum NL80211Parser {
    /// Length of `struct genlmsghdr` (GENL_HDRLEN).
    static let genlHeaderLength = MemoryLayout<genlmsghdr>.size

    /// Decodes one nl80211 message (a pointer libnl's receive callback provides, or
    /// `nlmsg_hdr(msg)`). Only the attributes segment-guard uses are read, each length-checked.
    ///
    /// A message without NL80211_ATTR_IFINDEX but with NL80211_ATTR_WDEV concerns a wireless
    /// device without a network interface (a P2P-device or NAN wdev, which every GET_INTERFACE
    /// dump lists); it decodes as `.other(command:)` rather than an error. Any other message
    /// lacking NL80211_ATTR_IFINDEX where one is required throws.
    public static func parse(_ hdr: UnsafeMutablePointer<nlmsghdr>) throws(NetlinkParseError) -> NL80211Message {
        let genl = try fixedHeader(hdr, as: genlmsghdr.self, context: "nl80211 message")
        let cmd = genl.cmd
        let context = commandName(cmd)
        switch UInt32(cmd) {
        case NL80211_CMD_NEW_INTERFACE.rawValue, NL80211_CMD_SET_INTERFACE.rawValue,
            NL80211_CMD_GET_INTERFACE.rawValue:
            let attrs = try table(hdr, context)
            guard let ifindex = try requireIfindex(attrs) else { return .other(command: cmd) }
            return .interface(
                NL80211Interface(
                    ifindex: ifindex,
                    name: try attrs.string(attr(NL80211_ATTR_IFNAME)),
                    iftype: try attrs.u32(attr(NL80211_ATTR_IFTYPE)),
                    ssid: try ssid(attrs, attr(NL80211_ATTR_SSID)),
                    frequencyMHz: try attrs.u32(attr(NL80211_ATTR_WIPHY_FREQ)),
                    wiphy: try attrs.u32(attr(NL80211_ATTR_WIPHY))))

        case NL80211_CMD_DEL_INTERFACE.rawValue:
            let attrs = try table(hdr, context)
            guard let ifindex = try requireIfindex(attrs) else { return .other(command: cmd) }
            return .interfaceRemoved(ifindex: ifindex)

        case NL80211_CMD_NEW_SCAN_RESULTS.rawValue:
            let attrs = try table(hdr, context)
            guard let ifindex = try requireIfindex(attrs) else { return .other(command: cmd) }
            guard let bssAttr = attrs[attr(NL80211_ATTR_BSS)] else { return .scanDone(ifindex: ifindex) }
            return .bss(try parseBSS(bssAttr, ifindex: ifindex, context: context))

        case NL80211_CMD_CONNECT.rawValue, NL80211_CMD_DISCONNECT.rawValue, NL80211_CMD_ROAM.rawValue,
            NL80211_CMD_PORT_AUTHORIZED.rawValue:
            let attrs = try table(hdr, context)
            guard let ifindex = try requireIfindex(attrs) else { return .other(command: cmd) }
            let event: AssociationEvent =
                switch UInt32(cmd) {
                case NL80211_CMD_CONNECT.rawValue: .connect
                case NL80211_CMD_DISCONNECT.rawValue: .disconnect
                case NL80211_CMD_ROAM.rawValue: .roam
                default: .portAuthorized
                }
            let status = event == .connect ? try attrs.u16(attr(NL80211_ATTR_STATUS_CODE)) : nil
            return .association(
                ifindex: ifindex, event: event, bssid: try attrs.mac(attr(NL80211_ATTR_MAC)), statusCode: status)

        case NL80211_CMD_NOTIFY_CQM.rawValue:
            let attrs = try table(hdr, context)
            guard let ifindex = try requireIfindex(attrs) else { return .other(command: cmd) }
            guard let cqm = attrs[attr(NL80211_ATTR_CQM)] else {
                throw NetlinkParseError(message: context, attribute: "NL80211_ATTR_CQM", problem: "missing")
            }
            let inner = try AttributeTable(nested: cqm, maxType: Int32(NL80211_ATTR_CQM_MAX.rawValue), context: context,
                                           names: { $0 == Int32(NL80211_ATTR_CQM_RSSI_LEVEL.rawValue) ? "NL80211_ATTR_CQM_RSSI_LEVEL" : "NL80211_ATTR_CQM/\($0)" })
            let level = try inner.u32(Int32(NL80211_ATTR_CQM_RSSI_LEVEL.rawValue)).map { Int32(bitPattern: $0) }
            if let level, !(-150...0).contains(level) {
                throw NetlinkParseError(message: context, attribute: "NL80211_ATTR_CQM_RSSI_LEVEL", problem: "\(level) dBm is not a signal level")
            }
            return .signal(ifindex: ifindex, dBm: level)

        case NL80211_CMD_NEW_STATION.rawValue:
            let attrs = try table(hdr, context)
            guard let ifindex = try requireIfindex(attrs) else { return .other(command: cmd) }
            guard let info = attrs[attr(NL80211_ATTR_STA_INFO)] else { return .station(ifindex: ifindex, signalDBM: nil) }
            let sta = try AttributeTable(nested: info, maxType: Int32(NL80211_STA_INFO_MAX.rawValue), context: context,
                                         names: { $0 == Int32(NL80211_STA_INFO_SIGNAL.rawValue) ? "NL80211_STA_INFO_SIGNAL" : "NL80211_ATTR_STA_INFO/\($0)" })
            // u8 holding a signed dBm value.
            let signal = try sta.u8(Int32(NL80211_STA_INFO_SIGNAL.rawValue)).map { Int32(Int8(bitPattern: $0)) }
            return .station(ifindex: ifindex, signalDBM: signal)

        default:
            return .other(command: cmd)
        }
    }

    // MARK: - Pieces

    private static func table(_ hdr: UnsafeMutablePointer<nlmsghdr>, _ context: String) throws(NetlinkParseError)
        -> AttributeTable
    {
        try AttributeTable(
            message: hdr, headerLength: genlHeaderLength, maxType: attr(NL80211_ATTR_MAX), context: context,
            names: attributeName)
    }

    /// The interface index, nil for a wdev-only message (see `parse`), else an error.
    private static func requireIfindex(_ attrs: AttributeTable) throws(NetlinkParseError) -> Int32? {
        if let v = try attrs.u32(attr(NL80211_ATTR_IFINDEX)) { return Int32(bitPattern: v) }
        if attrs.has(attr(NL80211_ATTR_WDEV)) { return nil }
        throw NetlinkParseError(message: attrs.context, attribute: "NL80211_ATTR_IFINDEX", problem: "missing")
    }

    /// An SSID attribute: at most 32 bytes.
    private static func ssid(_ attrs: AttributeTable, _ type: Int32) throws(NetlinkParseError) -> SSID? {
        guard let b = attrs.bytes(type) else { return nil }
        guard b.count <= 32 else {
            throw NetlinkParseError(
                message: attrs.context, attribute: attrs.names(type), problem: "\(b.count) bytes, an SSID has at most 32")
        }
        return SSID(bytes: b)
    }

    private static func parseBSS(_ bssAttr: UnsafeMutablePointer<nlattr>, ifindex: Int32, context: String)
        throws(NetlinkParseError) -> NL80211BSS
    {
        let bss = try AttributeTable(
            nested: bssAttr, maxType: bssAttrID(NL80211_BSS_MAX), context: context, names: bssAttributeName)
        guard let bssid = try bss.mac(bssAttrID(NL80211_BSS_BSSID)) else {
            throw NetlinkParseError(message: context, attribute: "NL80211_BSS_BSSID", problem: "missing")
        }
        let capability = try bss.u16(bssAttrID(NL80211_BSS_CAPABILITY)) ?? 0
        let privacy = capability & 0x0010 != 0
        // Probe-response IEs are the freshest; beacon IEs are the fallback when only a beacon was seen.
        var ies = InformationElements()
        for type in [bssAttrID(NL80211_BSS_INFORMATION_ELEMENTS), bssAttrID(NL80211_BSS_BEACON_IES)] {
            guard let raw = bss.bytes(type) else { continue }
            do throws(InformationElementError) {
                ies = try InformationElements.parse(raw)
            } catch {
                throw NetlinkParseError(message: context, attribute: bss.names(type), problem: error.description)
            }
            break
        }
        return NL80211BSS(
            ifindex: ifindex, bssid: bssid, frequencyMHz: try bss.u32(bssAttrID(NL80211_BSS_FREQUENCY)),
            status: BSSStatus(kernelValue: try bss.u32(bssAttrID(NL80211_BSS_STATUS))), ssid: ies.ssid,
            security: ies.security(privacy: privacy), akmSuites: ies.akmSuites, privacy: privacy)
    }

    // MARK: - Names

    static func attr(_ a: nl80211_attrs) -> Int32 { Int32(a.rawValue) }
    static func bssAttrID(_ a: nl80211_bss) -> Int32 { Int32(a.rawValue) }

    /// "NL80211_CMD_…" for the commands decoded here, for error messages.
    static func commandName(_ cmd: UInt8) -> String {
        switch UInt32(cmd) {
        case NL80211_CMD_GET_INTERFACE.rawValue: "NL80211_CMD_GET_INTERFACE"
        case NL80211_CMD_SET_INTERFACE.rawValue: "NL80211_CMD_SET_INTERFACE"
        case NL80211_CMD_NEW_INTERFACE.rawValue: "NL80211_CMD_NEW_INTERFACE"
        case NL80211_CMD_DEL_INTERFACE.rawValue: "NL80211_CMD_DEL_INTERFACE"
        case NL80211_CMD_GET_SCAN.rawValue: "NL80211_CMD_GET_SCAN"
        case NL80211_CMD_NEW_SCAN_RESULTS.rawValue: "NL80211_CMD_NEW_SCAN_RESULTS"
        case NL80211_CMD_CONNECT.rawValue: "NL80211_CMD_CONNECT"
        case NL80211_CMD_ROAM.rawValue: "NL80211_CMD_ROAM"
        case NL80211_CMD_DISCONNECT.rawValue: "NL80211_CMD_DISCONNECT"
        case NL80211_CMD_PORT_AUTHORIZED.rawValue: "NL80211_CMD_PORT_AUTHORIZED"
        default: "NL80211 command \(cmd)"
        }
    }

    /// "NL80211_ATTR_…" for the top-level attributes read here.
    static func attributeName(_ type: Int32) -> String {
        switch UInt32(bitPattern: type) {
        case NL80211_ATTR_WIPHY.rawValue: "NL80211_ATTR_WIPHY"
        case NL80211_ATTR_IFINDEX.rawValue: "NL80211_ATTR_IFINDEX"
        case NL80211_ATTR_IFNAME.rawValue: "NL80211_ATTR_IFNAME"
        case NL80211_ATTR_IFTYPE.rawValue: "NL80211_ATTR_IFTYPE"
        case NL80211_ATTR_MAC.rawValue: "NL80211_ATTR_MAC"
        case NL80211_ATTR_WIPHY_FREQ.rawValue: "NL80211_ATTR_WIPHY_FREQ"
        case NL80211_ATTR_BSS.rawValue: "NL80211_ATTR_BSS"
        case NL80211_ATTR_SSID.rawValue: "NL80211_ATTR_SSID"
        case NL80211_ATTR_STATUS_CODE.rawValue: "NL80211_ATTR_STATUS_CODE"
        case NL80211_ATTR_WDEV.rawValue: "NL80211_ATTR_WDEV"
        default: "NL80211 attribute \(type)"
        }
    }

    /// "NL80211_BSS_…" for the nested BSS attributes read here.
    static func bssAttributeName(_ type: Int32) -> String {
        switch UInt32(bitPattern: type) {
        case NL80211_BSS_BSSID.rawValue: "NL80211_BSS_BSSID"
        case NL80211_BSS_FREQUENCY.rawValue: "NL80211_BSS_FREQUENCY"
        case NL80211_BSS_CAPABILITY.rawValue: "NL80211_BSS_CAPABILITY"
        case NL80211_BSS_INFORMATION_ELEMENTS.rawValue: "NL80211_BSS_INFORMATION_ELEMENTS"
        case NL80211_BSS_STATUS.rawValue: "NL80211_BSS_STATUS"
        case NL80211_BSS_BEACON_IES.rawValue: "NL80211_BSS_BEACON_IES"
        default: "NL80211_BSS attribute \(type)"
        }
    }
}
