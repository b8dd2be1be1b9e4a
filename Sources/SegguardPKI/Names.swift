#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension PKI {
    /// The longest agent id or group name accepted.
    public static let maxNameLength = 64

    /// Checks an agent id or group name: 1 to 64 characters of `A-Z a-z 0-9 . _ -`, not starting with '.' or '-'.
    ///
    /// - Parameters:
    ///   - s: The name to check.
    ///   - what: What the name is, for the message ("agent id", "group").
    /// - Throws: ``PKIError`` whose message starts with `what` and the quoted name, e.g.
    ///   `agent id "a b": only letters, digits, '.', '_' and '-' are allowed`.
    public static func validateName(_ s: String, what: String) throws {
        let quoted = quote(s)
        guard !s.isEmpty else {
            throw PKIError("\(what) \(quoted): must not be empty")
        }
        for u in s.unicodeScalars where !isNameScalar(u) {
            throw PKIError("\(what) \(quoted): only letters, digits, '.', '_' and '-' are allowed")
        }
        // Only ASCII is left, so the UTF-8 count is the character count.
        guard s.utf8.count <= maxNameLength else {
            throw PKIError("\(what) \(quoted): at most \(maxNameLength) characters are allowed (it has \(s.utf8.count))")
        }
        if let first = s.unicodeScalars.first, first == "." || first == "-" {
            throw PKIError("\(what) \(quoted): must not start with '.' or '-'")
        }
    }

    private static func isNameScalar(_ u: Unicode.Scalar) -> Bool {
        switch u {
        case "a"..."z", "A"..."Z", "0"..."9", ".", "_", "-": return true
        default: return false
        }
    }

    /// The name in double quotes, control characters escaped and cut at 80 characters, so a message stays on one line.
    static func quote(_ s: String) -> String {
        var out = ""
        var count = 0
        for u in s.unicodeScalars {
            if count == 80 {
                out += "..."
                break
            }
            count += 1
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 || u.value == 0x7f {
                    out += "\\u{\(String(u.value, radix: 16))}"
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return "\"\(out)\""
    }

    /// A DNS name for a server certificate's SAN: letters, digits and '-' in dot-separated labels of at most
    /// 63 characters, 253 in all; a leading `*.` wildcard is allowed. Returned in lower case.
    static func checkedDNSName(_ s: String) throws -> String {
        let quoted = quote(s)
        var name = s.lowercased()
        if name.hasSuffix(".") { name.removeLast() }  // a fully qualified name's root dot
        guard !name.isEmpty else { throw PKIError("DNS name \(quoted): must not be empty") }
        guard name.utf8.count <= 253 else { throw PKIError("DNS name \(quoted): longer than 253 characters") }
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        for (i, label) in labels.enumerated() {
            if i == 0 && label == "*" && labels.count > 1 { continue }
            guard !label.isEmpty else { throw PKIError("DNS name \(quoted): has an empty label") }
            guard label.utf8.count <= 63 else { throw PKIError("DNS name \(quoted): label \"\(label)\" is longer than 63 characters") }
            for u in label.unicodeScalars {
                switch u {
                case "a"..."z", "0"..."9", "-": continue
                default: throw PKIError("DNS name \(quoted): only letters, digits, '-' and '.' are allowed")
                }
            }
            if label.hasPrefix("-") || label.hasSuffix("-") {
                throw PKIError("DNS name \(quoted): label \"\(label)\" starts or ends with '-'")
            }
        }
        return name
    }

    /// The 4 (IPv4) or 16 (IPv6) network-order bytes of an IP address in text form; IPv6 may be in brackets.
    public static func ipAddressBytes(_ s: String) throws -> [UInt8] {
        var text = s
        if text.hasPrefix("[") && text.hasSuffix("]") && text.count > 2 {
            text = String(text.dropFirst().dropLast())
        }
        if text.firstRange(of: ":") == nil {
            var v4 = in_addr()
            if inet_pton(AF_INET, text, &v4) == 1 {
                return withUnsafeBytes(of: &v4) { Array($0) }
            }
        } else if text.firstRange(of: "%") == nil {  // a zone id has no place in a certificate
            var v6 = in6_addr()
            if inet_pton(AF_INET6, text, &v6) == 1 {
                return withUnsafeBytes(of: &v6) { Array($0) }
            }
        }
        throw PKIError("IP address \(quote(s)): not an IPv4 or IPv6 address")
    }
}
