// The text protocol of wpa_supplicant's control interface: STATUS replies and the unsolicited
// event lines an ATTACHed client receives. Pure parsing; WPAControlSource feeds it.

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
    /// Any other event: its name (e.g. "CTRL-EVENT-SCAN-RESULTS").
    case other(String)

    /// True when the STATUS must be read again to know the new state.
    public var changesState: Bool {
        if case .other = self { return false }
        return true
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

extension String {
    func trimmingTrailingNewlines() -> String {
        var s = Substring(self)
        while let last = s.last, last.isNewline { s = s.dropLast() }
        return String(s)
    }
}
