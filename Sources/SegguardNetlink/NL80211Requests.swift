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
