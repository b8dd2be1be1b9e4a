// IPv4/IPv6 addresses and prefixes in pure Swift (no libc), so that policy parsing and the
// decision stay testable anywhere.

/// An IPv4 (4 bytes) or IPv6 (16 bytes) address.
public struct IPAddress: Hashable, Sendable, Codable, CustomStringConvertible {
    /// Address family.
    public enum Family: String, Sendable, Codable { case ipv4, ipv6 }

    public let bytes: [UInt8]
    public var family: Family { bytes.count == 4 ? .ipv4 : .ipv6 }

    /// Wraps 4 or 16 bytes; nil for any other length.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// Parses dotted-quad IPv4 or RFC 4291 IPv6 text (with `::`, and an embedded IPv4 tail).
    public init?(_ text: String) {
        if let v4 = IPAddress.parseV4(Substring(text)) {
            bytes = v4
        } else if let v6 = IPAddress.parseV6(text) {
            bytes = v6
        } else {
            return nil
        }
    }

    private static func parseV4(_ text: Substring) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var out: [UInt8] = []
        for p in parts {
            guard !p.isEmpty, p.count <= 3, p.allSatisfy({ $0.isASCII && $0.isNumber }),
                !(p.count > 1 && p.first == "0"), let v = UInt8(p)
            else { return nil }
            out.append(v)
        }
        return out
    }

    private static func parseV6(_ text: String) -> [UInt8]? {
        guard text.contains(":"), text.count <= 45 else { return nil }
        var halves: [String] = []
        var rest = Substring(text)
        while let r = rest.firstRange(of: "::") {
            halves.append(String(rest[..<r.lowerBound]))
            rest = rest[r.upperBound...]
        }
        halves.append(String(rest))
        guard halves.count <= 2 else { return nil }
        func groups(_ s: String, allowV4Tail: Bool) -> [UInt8]?? {
            if s.isEmpty { return .some([]) }
            var out: [UInt8] = []
            let items = s.split(separator: ":", omittingEmptySubsequences: false)
            for (i, g) in items.enumerated() {
                if allowV4Tail, i == items.count - 1, g.contains(".") {
                    guard let v4 = parseV4(g) else { return .none }
                    out += v4
                    continue
                }
                guard !g.isEmpty, g.count <= 4, g.allSatisfy(\.isHexDigit), let v = UInt16(g, radix: 16) else { return .none }
                out += [UInt8(v >> 8), UInt8(v & 0xff)]
            }
            return .some(out)
        }
        // An embedded IPv4 address may only end the address.
        guard let head = groups(halves[0], allowV4Tail: halves.count == 1), let head else { return nil }
        if halves.count == 1 {
            return head.count == 16 ? head : nil
        }
        guard let tail = groups(halves[1], allowV4Tail: true), let tail else { return nil }
        guard head.count + tail.count <= 14 else { return nil }
        return head + [UInt8](repeating: 0, count: 16 - head.count - tail.count) + tail
    }

    public var description: String {
        if family == .ipv4 { return bytes.map(String.init).joined(separator: ".") }
        var words: [UInt16] = []
        for i in stride(from: 0, to: 16, by: 2) { words.append(UInt16(bytes[i]) << 8 | UInt16(bytes[i + 1])) }
        // RFC 5952: compress the longest run (≥ 2) of zero words.
        var bestStart = -1, bestLen = 0, i = 0
        while i < 8 {
            if words[i] == 0 {
                var j = i
                while j < 8 && words[j] == 0 { j += 1 }
                if j - i > bestLen && j - i >= 2 { bestStart = i; bestLen = j - i }
                i = j
            } else { i += 1 }
        }
        func hex(_ r: ArraySlice<UInt16>) -> String { r.map { String($0, radix: 16) }.joined(separator: ":") }
        if bestStart < 0 { return hex(words[...]) }
        return hex(words[0..<bestStart]) + "::" + hex(words[(bestStart + bestLen)...])
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let a = IPAddress(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "bad IP address \(text)"))
        }
        self = a
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// An address with a prefix length (CIDR), e.g. `10.20.0.0/24`; a bare address is a host prefix.
public struct IPPrefix: Hashable, Sendable, Codable, CustomStringConvertible {
    public let address: IPAddress
    public let length: UInt8

    public init?(address: IPAddress, length: UInt8) {
        guard Int(length) <= address.bytes.count * 8 else { return nil }
        self.address = address
        self.length = length
    }

    /// Parses `ADDR` or `ADDR/LEN`; host bits set beyond the prefix are refused.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2, let a = IPAddress(String(parts[0])) else { return nil }
        let maxLen = a.bytes.count * 8
        var len = maxLen
        if parts.count == 2 {
            guard let l = Int(parts[1]), (0...maxLen).contains(l), parts[1].allSatisfy(\.isNumber) else { return nil }
            len = l
        }
        self.address = a
        self.length = UInt8(len)
        guard contains(a), IPPrefix.masked(a, len) == a else { return nil }
    }

    private static func masked(_ a: IPAddress, _ len: Int) -> IPAddress {
        var b = a.bytes
        for i in 0..<b.count {
            let bits = max(0, min(8, len - i * 8))
            b[i] &= bits == 0 ? 0 : UInt8(truncatingIfNeeded: 0xff << (8 - bits))
        }
        return IPAddress(bytes: b)!
    }

    /// For `ADDR/LEN` text whose address has host bits set, the prefix it probably meant
    /// (host bits cleared); nil for anything else.
    public static func network(of text: String) -> IPPrefix? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let a = IPAddress(String(parts[0])), parts[1].allSatisfy(\.isNumber),
            let len = Int(parts[1]), len <= a.bytes.count * 8
        else { return nil }
        let m = masked(a, len)
        guard m != a else { return nil }
        return IPPrefix(address: m, length: UInt8(len))
    }

    /// True when `other` lies inside this prefix (same family).
    public func contains(_ other: IPAddress) -> Bool {
        guard other.family == address.family else { return false }
        return IPPrefix.masked(other, Int(length)) == IPPrefix.masked(address, Int(length))
    }

    public var description: String { "\(address)/\(length)" }
}
