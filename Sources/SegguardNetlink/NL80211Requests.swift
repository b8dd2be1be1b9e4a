// Builders of the nl80211 request messages the socket loop sends (interface and scan-result
// dumps). Owns no state: each call returns a fresh libnl message the caller sends and frees.

import CLibNL

/// The nl80211 dump requests `WirelessTracker` asks for (see `WirelessReadRequest`).
public enum NL80211Requests {
    /// NL80211_CMD_GET_INTERFACE with NLM_F_DUMP: every wireless interface, answered with
    /// one NL80211_CMD_NEW_INTERFACE per interface. Returns a `struct nl_msg *` the caller
    /// frees with `nlmsg_free`, or nil when libnl could not allocate it.
    public static func getInterfaceDump(familyID: Int32) -> OpaquePointer? {
        message(familyID: familyID, command: UInt8(NL80211_CMD_GET_INTERFACE.rawValue))
    }

    /// NL80211_CMD_GET_SCAN with NLM_F_DUMP for one interface: its scan results (cached
    /// BSSes, including the associated one), one NL80211_CMD_NEW_SCAN_RESULTS each. Returns a
    /// `struct nl_msg *` the caller frees with `nlmsg_free`, or nil when libnl failed.
    public static func getScanDump(familyID: Int32, ifindex: Int32) -> OpaquePointer? {
        guard let msg = message(familyID: familyID, command: UInt8(NL80211_CMD_GET_SCAN.rawValue)) else { return nil }
        guard nla_put_u32(msg, Int32(NL80211_ATTR_IFINDEX.rawValue), UInt32(bitPattern: ifindex)) == 0 else {
            nlmsg_free(msg)
            return nil
        }
        return msg
    }

    /// NL80211_CMD_GET_STATION with NLM_F_DUMP for one interface: a station interface's one
    /// peer, the access point, with its signal (NL80211_STA_INFO_SIGNAL).
    public static func getStationDump(familyID: Int32, ifindex: Int32) -> OpaquePointer? {
        guard let msg = message(familyID: familyID, command: UInt8(NL80211_CMD_GET_STATION.rawValue)) else { return nil }
        guard nla_put_u32(msg, Int32(NL80211_ATTR_IFINDEX.rawValue), UInt32(bitPattern: ifindex)) == 0 else {
            nlmsg_free(msg)
            return nil
        }
        return msg
    }

    /// NL80211_CMD_SET_CQM (a request, not a dump): notify NL80211_CMD_NOTIFY_CQM whenever the
    /// signal crosses one of `thresholds` (dBm, ascending; NL80211_ATTR_CQM_RSSI_THOLD as an
    /// s32 array) with `hysteresis` dB. Drivers without threshold lists accept one threshold.
    public static func setCQM(familyID: Int32, ifindex: Int32, thresholds: [Int32], hysteresis: UInt32) -> OpaquePointer? {
        guard let msg = nlmsg_alloc() else { return nil }
        guard genlmsg_put(msg, 0, 0, familyID, 0, NLM_F_REQUEST | NLM_F_ACK, UInt8(NL80211_CMD_SET_CQM.rawValue), 0) != nil,
              nla_put_u32(msg, Int32(NL80211_ATTR_IFINDEX.rawValue), UInt32(bitPattern: ifindex)) == 0,
              let nest = nla_nest_start(msg, Int32(NL80211_ATTR_CQM.rawValue)) else {
            nlmsg_free(msg)
            return nil
        }
        var values = thresholds.sorted().map { UInt32(bitPattern: $0) }
        let rc1 = values.withUnsafeMutableBytes { nla_put(msg, Int32(NL80211_ATTR_CQM_RSSI_THOLD.rawValue), Int32($0.count), $0.baseAddress) }
        let rc2 = nla_put_u32(msg, Int32(NL80211_ATTR_CQM_RSSI_HYST.rawValue), hysteresis)
        guard rc1 == 0, rc2 == 0, nla_nest_end(msg, nest) == 0 else {
            nlmsg_free(msg)
            return nil
        }
        return msg
    }

    /// An empty dump request: genl header with `command`, version 0, auto port and sequence
    /// (NL_AUTO_PORT / NL_AUTO_SEQ are 0; nl_send_auto fills them in).
    private static func message(familyID: Int32, command: UInt8) -> OpaquePointer? {
        guard let msg = nlmsg_alloc() else { return nil }
        guard genlmsg_put(msg, 0, 0, familyID, 0, NLM_F_DUMP, command, 0) != nil else {
            nlmsg_free(msg)
            return nil
        }
        return msg
    }
}
