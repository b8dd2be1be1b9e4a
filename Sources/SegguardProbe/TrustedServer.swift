// The "trusted server" of a network rule (like Cisco Secure Client's trusted network
// detection): an internal host:port whose TLS server key is pinned by the SHA-256 of its
// SubjectPublicKeyInfo. SSID, BSSID and MAC addresses can be copied; the office server's
// private key cannot, so a TLS handshake completed with that key through one interface proves
// that the interface reaches the office's own server.

import Crypto
import FoundationEssentials
import SegguardEssentials
import NIOSSL

#if canImport(Glibc)
import Glibc
#endif

/// A TLS server inside the office network whose key proves that an interface is on that network.
///
/// Pins are SHA-256 digests of the server certificate's DER SubjectPublicKeyInfo (the key, not
/// the certificate: a renewed certificate for the same key keeps matching). They are written as
/// 64 hex digits (the form used for every other hash in the policy; upper case and `:`
/// separators are accepted) or as 44 characters of base64, optionally after `sha256//` (the
/// form of HPKP and `curl --pinnedpubkey`). ``validated()`` turns every pin into lower-case hex.
///
/// The pin of a certificate file:
/// `openssl x509 -in server.pem -pubkey -noout | openssl pkey -pubin -outform der | sha256sum`
/// (or ``TrustedServer/spkiSHA256(certificatePEM:)``).
public struct TrustedServer: Sendable, Equatable, Hashable, Codable {
    /// The server's address, an IPv4 or IPv6 literal (no name resolution: DNS may be the
    /// network's, and would answer before the network is trusted).
    public var host: String
    /// The TCP port (not 0).
    public var port: UInt16
    /// The name sent as TLS SNI, if the server needs one; a DNS name, never an IP literal.
    /// It is not checked against the certificate: the pin is the check.
    public var serverName: String?
    /// Pinned SubjectPublicKeyInfo SHA-256 digests; the server's key must match one of them.
    public var spkiSHA256: [String]

    public init(host: String, port: UInt16, serverName: String? = nil, spkiSHA256: [String]) {
        self.host = host
        self.port = port
        self.serverName = serverName
        self.spkiSHA256 = spkiSHA256
    }

    /// "10.0.0.5:443" or "[fd00::5]:443".
    public var endpoint: String { host.firstRange(of: ":") != nil ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// This server with every pin in lower-case hex, after checking each field.
    ///
    /// - Throws: ``TrustedServerError`` naming the field and the value that is wrong: a host that
    ///   is not an IP literal, port 0, a server name that is not a DNS name, no pin, or a pin that
    ///   is neither 64 hex digits nor base64 of 32 bytes.
    public func validated() throws(TrustedServerError) -> TrustedServer {
        guard Self.isIPLiteral(host) else {
            throw TrustedServerError("trusted_server host \"\(host.prefix(80))\" is not an IP address (write the server's IPv4 or IPv6 address; names are not resolved)")
        }
        guard port != 0 else { throw TrustedServerError("trusted_server \(endpoint): port 0 is not a port") }
        if let serverName {
            guard Self.isDNSName(serverName) else {
                throw TrustedServerError("trusted_server \(endpoint): server_name \"\(serverName.prefix(80))\" is not a DNS name (it is sent as TLS SNI; leave it out for none)")
            }
        }
        guard !spkiSHA256.isEmpty else {
            throw TrustedServerError("trusted_server \(endpoint): no pinned key (spki_sha256 needs at least one SHA-256 of the server's public key)")
        }
        var pins: [String] = []
        for raw in spkiSHA256 {
            let pin: String
            do { pin = try SPKIPin.normalize(raw) } catch { throw TrustedServerError("trusted_server \(endpoint): \(error.message)") }
            if !pins.contains(pin) { pins.append(pin) }
        }
        return TrustedServer(host: host, port: port, serverName: serverName, spkiSHA256: pins)
    }

    /// The pin of a certificate: the SHA-256 of its DER SubjectPublicKeyInfo, lower-case hex.
    /// - Throws: ``TrustedServerError`` when `der` is not a DER certificate.
    public static func spkiSHA256(certificateDER der: [UInt8]) throws(TrustedServerError) -> String {
        do {
            return try spkiSHA256(of: NIOSSLCertificate(bytes: der, format: .der))
        } catch {
            throw TrustedServerError("not a DER certificate: \(error)")
        }
    }

    /// The pin of the first certificate in PEM text: the SHA-256 of its DER
    /// SubjectPublicKeyInfo, lower-case hex.
    /// - Throws: ``TrustedServerError`` when the text holds no PEM certificate.
    public static func spkiSHA256(certificatePEM pem: String) throws(TrustedServerError) -> String {
        do {
            return try spkiSHA256(of: NIOSSLCertificate(bytes: Array(pem.utf8), format: .pem))
        } catch {
            throw TrustedServerError("not a PEM certificate: \(error)")
        }
    }

    /// The pin of a parsed certificate (what the prober computes for the server's leaf).
    static func spkiSHA256(of certificate: NIOSSLCertificate) throws -> String {
        SPKIPin.hex(SHA256.hash(data: try certificate.extractPublicKey().toSPKIBytes()))
    }

    static func isIPLiteral(_ s: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, s, &v4) == 1 || inet_pton(AF_INET6, s, &v6) == 1
    }

    /// Letters, digits, `-` and `.`; labels of 1...63 characters not starting or ending with `-`;
    /// at most 253 characters; not an IP literal.
    static func isDNSName(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 253, !isIPLiteral(s) else { return false }
        let name = s.hasSuffix(".") ? String(s.dropLast()) : s
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        return labels.allSatisfy { label in
            !label.isEmpty && label.utf8.count <= 63 && label.first != "-" && label.last != "-"
                && label.utf8.allSatisfy { c in (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2D }
        }
    }
}

/// A trusted-server entry or pin that cannot be used; `message` names the field and the value.
public struct TrustedServerError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Reading and writing SubjectPublicKeyInfo SHA-256 pins.
public enum SPKIPin {
    /// How to get the pin of a server, for error messages.
    public static let howTo = "openssl x509 -in CERT.pem -pubkey -noout | openssl pkey -pubin -outform der | sha256sum"

    /// A pin in lower-case hex from any accepted form: 64 hex digits (any case, `:` between
    /// bytes allowed), or base64 (standard or URL-safe alphabet, padding optional) of 32 bytes,
    /// optionally prefixed with `sha256//`.
    /// - Throws: ``TrustedServerError`` quoting the value and saying what is expected.
    public static func normalize(_ text: String) throws(TrustedServerError) -> String {
        let s = text.trimmed()
        let hexDigits = s.replacing(":", with: "")
        if hexDigits.utf8.count == 64, hexDigits.utf8.allSatisfy(isHexDigit), !(s.firstRange(of: ":") != nil && !hasColonsBetweenBytes(s)) {
            return hexDigits.lowercased()
        }
        var b64 = s.hasPrefix("sha256//") ? String(s.dropFirst("sha256//".count)) : s
        b64 = b64.replacing("-", with: "+").replacing("_", with: "/")
        if b64.utf8.count == 43 { b64 += "=" }
        if b64.utf8.count == 44, let data = Data(base64Encoded: b64), data.count == 32 {
            return hex(data)
        }
        let shown = s.count > 80 ? "\(s.prefix(80))…" : s
        throw TrustedServerError(
            "\"\(shown)\" is not a SHA-256 pin of a public key (expected 64 hex digits or 44 characters of base64; \(howTo) prints it)")
    }

    /// Lower-case hex of bytes.
    public static func hex<D: Sequence>(_ bytes: D) -> String where D.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Base64 of a lower-case hex pin (the `sha256//` form without the prefix), nil if `hexPin` is not hex.
    public static func base64(hexPin: String) -> String? {
        guard hexPin.utf8.count % 2 == 0, hexPin.utf8.allSatisfy(isHexDigit) else { return nil }
        var bytes: [UInt8] = []
        var it = hexPin.utf8.makeIterator()
        while let hi = it.next(), let lo = it.next() {
            bytes.append(UInt8(nibble(hi) << 4 | nibble(lo)))
        }
        return Data(bytes).base64EncodedString()
    }

    private static func isHexDigit(_ c: UInt8) -> Bool { (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66) }
    private static func nibble(_ c: UInt8) -> Int { c <= 0x39 ? Int(c - 0x30) : Int((c | 0x20) - 0x61 + 10) }
    /// "AB:CD:…": a colon after every byte but the last.
    private static func hasColonsBetweenBytes(_ s: String) -> Bool {
        let parts = s.split(separator: ":", omittingEmptySubsequences: false)
        return parts.count == 32 && parts.allSatisfy { $0.utf8.count == 2 }
    }
}

/// What one probe found.
public enum ProbeOutcome: Sendable, Equatable, Hashable, Codable {
    /// The handshake completed with a pinned key: `spki` is the server key's SHA-256 (lower-case
    /// hex), `millis` the time from the call to the completed handshake.
    case proven(spki: String, millis: Double)
    /// Not proven; `reason` says what failed in an administrator's words (the endpoint, the
    /// interface, the timeout, the server's key and the pinned ones).
    case refused(reason: String)

    public var isProven: Bool {
        if case .proven = self { return true }
        return false
    }
}
