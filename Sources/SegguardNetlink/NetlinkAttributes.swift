import SegguardPolicy
// Bounds-checked reading of netlink messages and attributes on top of libnl's parsers.
// Every getter checks the payload length first, so a truncated or malformed attribute
// becomes a `NetlinkParseError` naming the message and attribute, never a crash.

import CLibNL

/// A netlink message that could not be understood; names where the problem was.
public struct NetlinkParseError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What was being parsed, e.g. "RTM_NEWLINK" or "NL80211_CMD_NEW_SCAN_RESULTS".
    public var message: String
    /// The attribute, e.g. "IFLA_IFNAME", or "header".
    public var attribute: String
    public var problem: String

    public init(message: String, attribute: String, problem: String) {
        self.message = message
        self.attribute = attribute
        self.problem = problem
    }

    public var description: String { "\(message): \(attribute): \(problem)" }
}

/// The attributes of one message (or one nested attribute), indexed by type.
struct AttributeTable {
    /// What is being parsed, for errors.
    let context: String
    private var table: [UnsafeMutablePointer<nlattr>?]
    let names: (Int32) -> String

    /// Parses the attributes that follow a fixed header of `headerLength` bytes in `hdr`.
    init(
        message hdr: UnsafeMutablePointer<nlmsghdr>, headerLength: Int, maxType: Int32, context: String,
        names: @escaping (Int32) -> String = { "attribute \($0)" }
    ) throws(NetlinkParseError) {
        self.context = context
        self.names = names
        table = Array(repeating: nil, count: Int(maxType) + 1)
        // nlmsg_parse checks the fixed header fits (nlmsg_valid_hdr) and every attribute
        // header and length lies inside the message; no policy: lengths are checked per getter.
        let rc = table.withUnsafeMutableBufferPointer { buf in
            nlmsg_parse(hdr, Int32(headerLength), buf.baseAddress, maxType, nil)
        }
        if rc < 0 {
            throw NetlinkParseError(message: context, attribute: "header", problem: AttributeTable.errorText(rc))
        }
    }

    /// Parses the attributes nested inside `attr`.
    init(
        nested attr: UnsafeMutablePointer<nlattr>, maxType: Int32, context: String,
        names: @escaping (Int32) -> String = { "attribute \($0)" }
    ) throws(NetlinkParseError) {
        self.context = context
        self.names = names
        table = Array(repeating: nil, count: Int(maxType) + 1)
        let rc = table.withUnsafeMutableBufferPointer { buf in
            nla_parse_nested(buf.baseAddress, maxType, attr, nil)
        }
        if rc < 0 {
            throw NetlinkParseError(message: context, attribute: "nested", problem: AttributeTable.errorText(rc))
        }
    }

    static func errorText(_ rc: Int32) -> String {
        String(cString: nl_geterror(rc)) + " (libnl error \(-rc))"
    }

    subscript(_ type: Int32) -> UnsafeMutablePointer<nlattr>? {
        guard type >= 0, Int(type) < table.count else { return nil }
        return table[Int(type)]
    }

    func has(_ type: Int32) -> Bool { self[type] != nil }

    private func fail(_ type: Int32, _ problem: String) -> NetlinkParseError {
        NetlinkParseError(message: context, attribute: names(type), problem: problem)
    }

    /// The raw payload bytes.
    func bytes(_ type: Int32) -> [UInt8]? {
        guard let a = self[type] else { return nil }
        let n = Int(nla_len(a))
        guard n > 0, let p = nla_data(a) else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: n))
    }

    func u8(_ type: Int32) throws(NetlinkParseError) -> UInt8? {
        guard let a = self[type] else { return nil }
        guard nla_len(a) >= 1 else { throw fail(type, "payload of \(nla_len(a)) bytes, need 1") }
        return nla_get_u8(a)
    }

    func u16(_ type: Int32) throws(NetlinkParseError) -> UInt16? {
        guard let a = self[type] else { return nil }
        guard nla_len(a) >= 2 else { throw fail(type, "payload of \(nla_len(a)) bytes, need 2") }
        return nla_get_u16(a)
    }

    func u32(_ type: Int32) throws(NetlinkParseError) -> UInt32? {
        guard let a = self[type] else { return nil }
        guard nla_len(a) >= 4 else { throw fail(type, "payload of \(nla_len(a)) bytes, need 4") }
        return nla_get_u32(a)
    }

    /// A NUL-terminated (or unterminated, within its length) string; invalid UTF-8 is refused.
    func string(_ type: Int32) throws(NetlinkParseError) -> String? {
        guard var b = bytes(type) else { return nil }
        if let nul = b.firstIndex(of: 0) { b = Array(b[..<nul]) }
        guard let s = String(validating: b, as: UTF8.self) else { throw fail(type, "not valid UTF-8") }
        return s
    }

    /// Exactly six bytes.
    func mac(_ type: Int32) throws(NetlinkParseError) -> MACAddress? {
        guard let b = bytes(type) else { return nil }
        guard let m = MACAddress(bytes: b) else { throw fail(type, "\(b.count) bytes, a MAC address has 6") }
        return m
    }

    /// 4 or 16 bytes.
    func ip(_ type: Int32) throws(NetlinkParseError) -> IPAddress? {
        guard let b = bytes(type) else { return nil }
        guard let a = IPAddress(bytes: b) else { throw fail(type, "\(b.count) bytes, an IP address has 4 or 16") }
        return a
    }
}

/// The fixed header (e.g. `ifinfomsg`) that follows the netlink header, copied out after a
/// length check.
func fixedHeader<T>(_ hdr: UnsafeMutablePointer<nlmsghdr>, as: T.Type, context: String) throws(NetlinkParseError) -> T {
    let need = MemoryLayout<T>.size
    guard nlmsg_datalen(hdr) >= Int32(need), let p = nlmsg_data(hdr) else {
        throw NetlinkParseError(
            message: context, attribute: "header",
            problem: "payload of \(nlmsg_datalen(hdr)) bytes, shorter than its \(need)-byte fixed header")
    }
    return p.loadUnaligned(as: T.self)
}
