// The text protocol of wpa_supplicant's control interface: STATUS replies and the unsolicited
// event lines an ATTACHed client receives. Pure parsing; WPAControlSource feeds it.

import FoundationEssentials
import Glibc
import SegguardPolicy

/// A control-interface reply or event that could not be understood.
public struct WPAParseError: Error, Equatable, Sendable, CustomStringConvertible {
    /// 1-based line of the reply, 0 for the reply as a whole.
    public var line: Int
    public var problem: String
    public var description: String { line > 0 ? "wpa_supplicant STATUS line \(line): \(problem)" : "wpa_supplicant reply: \(problem)" }
}

/// An unsolicited wpa_supplicant event (after ATTACH) that bears on the 802.1X state.
public enum WPAEvent: Sendable, Equatable {
    case eapSuccess
    case eapFailure
    /// CTRL-EVENT-EAP-METHOD: the method selected, e.g. "TLS".
    case eapMethod(String)
    case connected
    case disconnected
    /// CTRL-EVENT-TERMINATING: wpa_supplicant is exiting. With a monitor attached it leaves
    /// its socket file behind (2.10), so this event, not the file, says the state is gone.
    case terminating
    /// CTRL-EVENT-EAP-STARTED: an EAP authentication (first or re-authentication) begins; the
    /// server certificates reported from here on belong to it.
    case eapStarted
    /// CTRL-EVENT-EAP-PEER-CERT: one certificate of the server's chain. wpa_supplicant sends
    /// `depth=N subject='…' hash=<sha256 hex>` (the hash only with `cert_in_cb=1`, its default)
    /// and, to control-interface monitors only, the same with `cert=<DER hex>`.
    case peerCertificate(PeerCertificateReport)
    /// CTRL-EVENT-EAP-PEER-ALT `depth=N DNS:…`: a subjectAltName of the certificate at depth N.
    case peerAltSubject(depth: Int, String)
    /// Any other event: its name (e.g. "CTRL-EVENT-SCAN-RESULTS").
    case other(String)

    /// True when the STATUS must be read again to know the new state.
    public var changesState: Bool {
        switch self {
        case .other, .peerCertificate, .peerAltSubject: return false
        default: return true
        }
    }
}

/// One CTRL-EVENT-EAP-PEER-CERT line.
public struct PeerCertificateReport: Sendable, Equatable {
    public var depth: Int
    public var subject: String
    /// `hash=`: SHA-256 of the DER certificate, lower-case hex.
    public var sha256: String?
    /// `cert=`: the DER certificate.
    public var der: [UInt8]?

    public init(depth: Int, subject: String, sha256: String? = nil, der: [UInt8]? = nil) {
        self.depth = depth
        self.subject = subject
        self.sha256 = sha256
        self.der = der
    }
}

/// Parses wpa_supplicant control-interface text.
public enum WPAControlProtocol {
    /// Parses a `STATUS` reply (`key=value` lines) into the 802.1X state.
    ///
    /// `FAIL`, an empty reply, a line without `=`, a duplicate key or a reply of more than
    /// 200 lines is an error naming the line: wpa_supplicant never sends those for STATUS.
    public static func parseStatus(_ reply: String) throws(WPAParseError) -> DeviceAuthState {
        let trimmed = reply.trimmingTrailingNewlines()
        if trimmed.isEmpty { throw WPAParseError(line: 0, problem: "empty reply to STATUS") }
        if trimmed == "FAIL" || trimmed.hasPrefix("UNKNOWN COMMAND") {
            throw WPAParseError(line: 0, problem: "STATUS refused: \(trimmed)")
        }
        var fields: [String: String] = [:]
        // LF or CRLF ("\r\n" is one Character in Swift).
        let lines = trimmed.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline)
        if lines.count > 200 { throw WPAParseError(line: 0, problem: "\(lines.count) lines, more than a STATUS reply has") }
        for (i, raw) in lines.enumerated() {
            let line = raw
            guard let eq = line.firstIndex(of: "="), eq != line.startIndex else {
                throw WPAParseError(line: i + 1, problem: "\"\(String(line.prefix(60)))\" is not key=value")
            }
            let key = String(line[..<eq])
            guard fields[key] == nil else { throw WPAParseError(line: i + 1, problem: "key \"\(key)\" given twice") }
            fields[key] = String(line[line.index(after: eq)...])
        }
        var state = DeviceAuthState()
        state.keyManagement = fields["key_mgmt"]
        state.eapState = fields["EAP state"]
        state.identity = fields["identity"]
        state.paeState = fields["Supplicant PAE state"]
        if let method = fields["selectedMethod"] {
            state.eapMethod = methodName(method)
        }
        switch fields["suppPortStatus"] {
        case "Authorized": state.portStatus = .authorized
        case "Unauthorized": state.portStatus = .unauthorized
        default: state.portStatus = .unknown
        }
        return state
    }

    /// The `id=` of the network in use from a STATUS reply.
    public static func networkID(_ reply: String) -> Int? {
        for line in reply.split(whereSeparator: \.isNewline) where line.hasPrefix("id=") {
            return Int(line.dropFirst(3))
        }
        return nil
    }

    /// A `GET_NETWORK n field` reply holding a string ("\"tc-0042\""), or nil for FAIL or a
    /// value that is not a quoted string.
    public static func parseNetworkString(_ reply: String) -> String? {
        let v = reply.trimmingTrailingNewlines()
        guard v.count >= 2, v.hasPrefix("\""), v.hasSuffix("\"") else { return nil }
        return String(v.dropFirst().dropLast())
    }

    /// "13 (EAP-TLS)" → "TLS"; "25 (EAP-PEAP)" → "PEAP"; a bare name is upper-cased.
    static func methodName(_ field: String) -> String {
        if let open = field.firstIndex(of: "("), let close = field.lastIndex(of: ")"), open < close {
            var name = String(field[field.index(after: open)..<close])
            if name.hasPrefix("EAP-") { name.removeFirst(4) }
            return name.uppercased()
        }
        return field.uppercased()
    }

    /// Parses one event line, e.g. `<3>CTRL-EVENT-EAP-SUCCESS EAP authentication completed successfully`.
    public static func parseEvent(_ line: String) throws(WPAParseError) -> WPAEvent {
        var text = Substring(line.trimmingTrailingNewlines())
        if text.hasPrefix("<") {
            guard let close = text.firstIndex(of: ">"), text[text.index(after: text.startIndex)..<close].allSatisfy(\.isNumber) else {
                throw WPAParseError(line: 0, problem: "event \"\(String(text.prefix(60)))\" has a malformed <level> prefix")
            }
            text = text[text.index(after: close)...]
        }
        let name = text.split(separator: " ", maxSplits: 1).first.map(String.init) ?? ""
        guard !name.isEmpty else { throw WPAParseError(line: 0, problem: "empty event") }
        switch name {
        case "CTRL-EVENT-EAP-SUCCESS": return .eapSuccess
        case "CTRL-EVENT-EAP-FAILURE", "CTRL-EVENT-EAP-TIMEOUT-FAILURE", "CTRL-EVENT-EAP-TIMEOUT-FAILURE2": return .eapFailure
        case "CTRL-EVENT-CONNECTED": return .connected
        case "CTRL-EVENT-DISCONNECTED": return .disconnected
        case "CTRL-EVENT-TERMINATING": return .terminating
        case "CTRL-EVENT-EAP-STARTED": return .eapStarted
        case "CTRL-EVENT-EAP-PEER-CERT": return .peerCertificate(try parsePeerCertificate(text.dropFirst(name.count)))
        case "CTRL-EVENT-EAP-PEER-ALT":
            // "CTRL-EVENT-EAP-PEER-ALT depth=0 DNS:radius.example.lg.jp"
            let rest = text.dropFirst(name.count).drop(while: { $0 == " " })
            let parts = rest.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].hasPrefix("depth="), let depth = Int(parts[0].dropFirst(6)), depth >= 0, !parts[1].isEmpty else {
                throw WPAParseError(line: 0, problem: "CTRL-EVENT-EAP-PEER-ALT \"\(String(rest.prefix(60)))\" is not depth=N NAME")
            }
            return .peerAltSubject(depth: depth, String(parts[1]))
        case "CTRL-EVENT-EAP-METHOD":
            // "CTRL-EVENT-EAP-METHOD EAP vendor 0 method 13 (TLS) selected"
            if let open = text.firstIndex(of: "("), let close = text[open...].firstIndex(of: ")") {
                return .eapMethod(String(text[text.index(after: open)..<close]).uppercased())
            }
            throw WPAParseError(line: 0, problem: "CTRL-EVENT-EAP-METHOD without a method name")
        default:
            return .other(name)
        }
    }
}

extension WPAControlProtocol {
    /// ` depth=N subject='…'[ hash=HEX| cert=HEX]`. The subject is printed without escaping and
    /// may itself hold quotes and spaces, so it ends at the last `'` before the optional field.
    static func parsePeerCertificate(_ rest: Substring) throws(WPAParseError) -> PeerCertificateReport {
        func bad(_ why: String) -> WPAParseError {
            WPAParseError(line: 0, problem: "CTRL-EVENT-EAP-PEER-CERT \(why): \"\(String(rest.prefix(80)))\"")
        }
        var text = rest.drop(while: { $0 == " " })
        guard text.hasPrefix("depth="), let space = text.firstIndex(of: " "), let depth = Int(text[text.index(text.startIndex, offsetBy: 6)..<space]), depth >= 0 else {
            throw bad("without depth=N")
        }
        text = text[text.index(after: space)...]
        guard text.hasPrefix("subject='") else { throw bad("without subject='…'") }
        text = text.dropFirst(9)
        var field: (key: String, value: Substring)?
        // The field is the last "' hash=" or "' cert=" of the line.
        let found = ["hash", "cert"].compactMap { key in text.ranges(of: "' \(key)=").last.map { (key, $0) } }
        if let last = found.max(by: { $0.1.lowerBound < $1.1.lowerBound }) {
            field = (last.0, text[last.1.upperBound...])
            text = text[..<last.1.lowerBound]
        }
        if field == nil {
            guard text.hasSuffix("'") else { throw bad("with an unterminated subject") }
            text = text.dropLast()
        }
        var report = PeerCertificateReport(depth: depth, subject: String(text))
        if let field {
            let (key, value) = field
            guard let bytes = hexBytes(value), !bytes.isEmpty else { throw bad("with a \(key)= that is not hex") }
            if key == "hash" {
                guard bytes.count == 32 else { throw bad("with a hash= of \(bytes.count) bytes, not a SHA-256") }
                report.sha256 = value.lowercased()
            } else {
                report.der = bytes
            }
        }
        return report
    }

    static func hexBytes(_ s: Substring) -> [UInt8]? {
        let digits = Array(s.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(digits.count / 2)
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        var i = 0
        while i < digits.count {
            guard let hi = nibble(digits[i]), let lo = nibble(digits[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }
}

extension String {
    func trimmingTrailingNewlines() -> String {
        var s = Substring(self)
        while let last = s.last, last.isNewline { s = s.dropLast() }
        return String(s)
    }
}
