// Parsing of IEEE 802.11 information elements (the TLV list of a beacon or probe response)
// into the few facts segment-guard needs: the SSID and the advertised AKM suites (RSN and
// WPA1). Pure Swift on a byte array; owns no state. Every read is bounds-checked, so a
// malformed element list becomes an `InformationElementError` naming the element's offset,
// never a crash.

import SegguardPolicy

/// An information element list that could not be understood.
struct InformationElementError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Byte offset of the offending element's header within the element list.
    var offset: Int
    /// Element ID, when the header could be read.
    var elementID: UInt8?
    var problem: String

    var description: String {
        if let id = elementID { return "element \(id) at offset \(offset): \(problem)" }
        return "element at offset \(offset): \(problem)"
    }
}

/// What the information elements of one BSS advertise, as far as segment-guard cares.
struct InformationElements: Equatable, Sendable {
    /// Element IDs used here (IEEE 802.11-2020 table 9-92).
    static let ssidID: UInt8 = 0
    static let rsnID: UInt8 = 48
    static let vendorSpecificID: UInt8 = 221

    /// AKM suite 00-0F-AC:1 (IEEE 802.1X), the RSN element's default AKM.
    static let rsnDefaultAKM: UInt32 = 0x000F_AC01
    /// AKM suite 00-50-F2:1 (WPA1 802.1X), the WPA element's default AKM.
    static let wpaDefaultAKM: UInt32 = 0x0050_F201

    /// The SSID element: nil when absent, empty for a hidden network.
    var ssid: SSID?
    /// AKM suites of the RSN element; nil when there is no RSN element.
    var rsnAKMSuites: [UInt32]?
    /// AKM suites of the WPA1 vendor element (00-50-F2 type 1); nil when there is none.
    var wpaAKMSuites: [UInt32]?

    init(ssid: SSID? = nil, rsnAKMSuites: [UInt32]? = nil, wpaAKMSuites: [UInt32]? = nil) {
        self.ssid = ssid
        self.rsnAKMSuites = rsnAKMSuites
        self.wpaAKMSuites = wpaAKMSuites
    }

    /// Every advertised AKM suite selector: RSN's first, then WPA1's.
    var akmSuites: [UInt32] { (rsnAKMSuites ?? []) + (wpaAKMSuites ?? []) }

    /// The security assumed for this BSS.
    ///
    /// nl80211 does not say which of the advertised AKMs the supplicant actually chose, so
    /// for a transition-mode network (PSK+SAE, PSK+802.1X, WPA1+WPA2) the WEAKEST advertised
    /// one is assumed (`min` by `WirelessSecurity`'s strength order, `.unknown` weakest); the
    /// device-auth source (wpa_supplicant) refines this later. An RSN/WPA element with an
    /// empty AKM list gives `.unknown`. Without any RSN/WPA element the privacy capability
    /// bit distinguishes WEP from open.
    func security(privacy: Bool) -> WirelessSecurity {
        guard rsnAKMSuites != nil || wpaAKMSuites != nil else { return privacy ? .wep : .open }
        return akmSuites.map(WirelessSecurity.init(akmSuite:)).min() ?? .unknown
    }

    /// Walks the element list. The first SSID, RSN and WPA1 elements are used (later
    /// duplicates are ignored, as wpa_supplicant does); unknown elements are skipped.
    static func parse(_ bytes: [UInt8]) throws(InformationElementError) -> InformationElements {
        var result = InformationElements()
        var offset = 0
        while offset < bytes.count {
            let remaining = bytes.count - offset
            guard remaining >= 2 else {
                throw InformationElementError(
                    offset: offset, elementID: bytes[offset],
                    problem: "truncated header: \(remaining) byte left, an element header has 2")
            }
            let id = bytes[offset]
            let length = Int(bytes[offset + 1])
            guard length <= remaining - 2 else {
                throw InformationElementError(
                    offset: offset, elementID: id,
                    problem: "claims \(length) bytes of data, only \(remaining - 2) remain")
            }
            let data = Array(bytes[(offset + 2)..<(offset + 2 + length)])
            switch id {
            case ssidID:
                guard length <= 32 else {
                    throw InformationElementError(
                        offset: offset, elementID: id, problem: "SSID of \(length) bytes, at most 32 allowed")
                }
                if result.ssid == nil { result.ssid = SSID(bytes: data) }
            case rsnID:
                if result.rsnAKMSuites == nil {
                    result.rsnAKMSuites = try parseSuiteBody(
                        data, defaultAKM: rsnDefaultAKM, what: "RSN", offset: offset, elementID: id)
                }
            case vendorSpecificID:
                // WPA1: OUI 00-50-F2, vendor type 1, then the RSN-like body. Other vendor
                // elements (WMM, WPS, OWE transition, …) are not security-relevant here.
                if data.count >= 4, data[0] == 0x00, data[1] == 0x50, data[2] == 0xF2, data[3] == 0x01,
                    result.wpaAKMSuites == nil
                {
                    result.wpaAKMSuites = try parseSuiteBody(
                        Array(data[4...]), defaultAKM: wpaDefaultAKM, what: "WPA", offset: offset, elementID: id)
                }
            default:
                break
            }
            offset += 2 + length
        }
        return result
    }

    /// Parses the body shared by the RSN element and the WPA1 vendor element: version (u16
    /// LE, must be 1), group cipher suite, pairwise suite count (u16 LE) and suites, AKM suite
    /// count (u16 LE) and suites; the rest (capabilities, PMKIDs, …) is ignored. Returns the
    /// AKM suite selectors as `OUI << 8 | type`.
    ///
    /// Per IEEE 802.11 (9.4.2.24.1), every field after the version is optional, but only as
    /// a whole: an element that ENDS before the AKM suite list means the default AKM
    /// (00-0F-AC:1, IEEE 802.1X; 00-50-F2:1 for WPA1), whereas an element that ends in the
    /// middle of a field, or whose count claims more suites than it holds, is malformed.
    private static func parseSuiteBody(
        _ body: [UInt8], defaultAKM: UInt32, what: String, offset: Int, elementID: UInt8
    ) throws(InformationElementError) -> [UInt32] {
        var cursor = 0
        func fail(_ problem: String) -> InformationElementError {
            InformationElementError(offset: offset, elementID: elementID, problem: "\(what) element: \(problem)")
        }
        func need(_ n: Int, _ field: String) throws(InformationElementError) {
            guard body.count - cursor >= n else {
                throw fail("truncated in \(field): \(body.count - cursor) of \(n) bytes")
            }
        }
        func u16() -> Int {
            defer { cursor += 2 }
            return Int(body[cursor]) | Int(body[cursor + 1]) << 8
        }
        func suites(_ count: Int, _ field: String) throws(InformationElementError) -> [UInt32] {
            try need(4 * count, "\(field) (count \(count))")
            var out: [UInt32] = []
            out.reserveCapacity(count)
            for _ in 0..<count {
                out.append(
                    UInt32(body[cursor]) << 24 | UInt32(body[cursor + 1]) << 16 | UInt32(body[cursor + 2]) << 8
                        | UInt32(body[cursor + 3]))
                cursor += 4
            }
            // Stored as OUI << 8 | type: the 4 bytes read big-endian are exactly that.
            return out
        }

        try need(2, "version")
        let version = u16()
        guard version == 1 else { throw fail("unsupported version \(version)") }
        // Ends after the version: every later field takes its default.
        if cursor == body.count { return [defaultAKM] }
        try need(4, "group cipher suite")
        cursor += 4
        if cursor == body.count { return [defaultAKM] }
        try need(2, "pairwise suite count")
        _ = try suites(u16(), "pairwise suite list")
        // Ends before the AKM suite list: the default AKM applies (see above).
        if cursor == body.count { return [defaultAKM] }
        try need(2, "AKM suite count")
        return try suites(u16(), "AKM suite list")
    }
}
