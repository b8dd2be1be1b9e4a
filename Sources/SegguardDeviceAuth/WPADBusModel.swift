// wpa_supplicant's D-Bus API (fi.w1.wpa_supplicant1) as plain values: the D-Bus values the
// sd-bus reader produces, and the per-interface tracker that turns properties and EAP signals
// into the 802.1X state. Pure: unit tests drive it without a bus.

import SegguardPolicy

/// A D-Bus value read from a message, with its type kept.
public indirect enum DBusValue: Sendable, Equatable {
    case string(String)
    case objectPath(String)
    case signature(String)
    case bool(Bool)
    case int(Int64, type: Character)
    case uint(UInt64, type: Character)
    case double(Double)
    case array([DBusValue], element: String)
    /// `a{sv}` / `a{s…}`: a dictionary with string keys.
    case dict([String: DBusValue])
    case variant(DBusValue)
    case structure([DBusValue])

    /// The D-Bus signature of this value, e.g. "s", "ao", "a{sv}", "v".
    public var signature: String {
        switch self {
        case .string: "s"
        case .objectPath: "o"
        case .signature: "g"
        case .bool: "b"
        case .int(_, let t), .uint(_, let t): String(t)
        case .double: "d"
        case .array(_, let element): "a" + element
        case .dict: "a{sv}"
        case .variant: "v"
        case .structure(let fields): "(" + fields.map(\.signature).joined() + ")"
        }
    }

    /// The value inside any number of variants.
    public var unwrapped: DBusValue {
        if case .variant(let inner) = self { return inner.unwrapped }
        return self
    }
}

/// A wpa_supplicant D-Bus message or property that does not have the shape the API documents.
public struct WPADBusError: Error, Equatable, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// What wpa_supplicant's D-Bus API says about one interface (`/fi/w1/wpa_supplicant1/Interfaces/N`).
///
/// The API has no property for the 802.1X port status. The tracker derives it from the
/// interface `State` and the `EAP` signal: `completion`/`success` authorizes, `completion`/`failure`
/// unauthorizes, and a re-authentication (`started`, a method accepted) keeps the port
/// authorized until it completes, as the supplicant's own port does. On a wired port
/// wpa_supplicant 2.10 keeps `State` "completed" after an EAP failure, so the failure signal is
/// what turns the port unauthorized. An interface first seen in state "completed" with an EAP
/// auth mode is taken as authorized (the signal that authorized it came before we listened);
/// docs/admin-guide.md says what that means for a daemon started inside a failure's held period.
public struct WPADBusInterface: Sendable, Equatable {
    /// Result of the last EAP exchange seen in an `EAP` signal.
    public enum EAPResult: String, Sendable { case success, failure }

    public let path: String
    public var ifname: String?
    /// `State`: "disconnected", "associating", "associated", "4way_handshake", "completed", …
    public var state: String?
    /// `CurrentAuthMode`: "EAP-TLS", "EAP-PEAP", "WPA2-PSK", "INACTIVE", …
    public var authMode: String?
    /// `CurrentNetwork` object path ("/" when none).
    public var currentNetwork: String?
    /// The current network's `key_mgmt` (e.g. "IEEE8021X", "WPA-EAP").
    public var networkKeyManagement: String?
    /// The current network's `identity`, without wpa_supplicant's quotes.
    public var identity: String?
    /// The current network's `client_cert`, `private_key` (without quotes) and `engine`.
    public var clientCert: String?
    public var privateKey: String?
    public var engine: String?
    /// Its key, read by the source when the network is loaded (see `CertificateKey`).
    public var clientKey: CertificateKeyFinding?
    public var lastEAP: EAPResult?
    /// Method named by the last `EAP` "accept proposed method" signal.
    public var acceptedMethod: String?
    /// EAP successes seen (`EAP` completion/success signals), see `DeviceAuthState.successes`.
    public var successes: UInt64 = 0
    /// The server chain of the exchange that last succeeded (from `Certification` signals).
    public var serverChain: [PeerCertificate] = []
    /// `Certification` signals of the exchange in progress (since its `EAP` "started").
    public var pendingChain: [PeerCertificate] = []
    /// The DER of each certificate of the exchange under way (`cert` of Certification), by depth.
    public var pendingDER: [Int: [UInt8]] = [:]
    /// We asked the supplicant to log off (`EAPLogoff`, before an `EAPLogon`): its port is
    /// unauthorized until the next EAP completion.
    public var loggedOff = false

    public init(path: String) { self.path = path }

    /// Applies `fi.w1.wpa_supplicant1.Interface` properties (from Get/GetAll or
    /// PropertiesChanged). Unknown properties are ignored; a known one with a type other
    /// than the API's is an error naming it, and nothing of the update is applied.
    public mutating func apply(properties: [String: DBusValue]) throws(WPADBusError) {
        var next = self
        for (name, raw) in properties {
            let value = raw.unwrapped
            switch name {
            case "Ifname": next.ifname = try Self.string(value, name, path)
            case "State":
                let state = try Self.string(value, name, path)
                if state != "completed" && next.state == "completed" {
                    // Left the authenticated state: the next EAP exchange decides afresh.
                    next.lastEAP = nil
                    next.acceptedMethod = nil
                    next.serverChain = []
                    next.pendingChain = []
                }
                next.state = state
            case "CurrentAuthMode": next.authMode = try Self.string(value, name, path)
            case "CurrentNetwork":
                guard case .objectPath(let p) = value else { throw Self.typeError(name, value, "o (object path)", path) }
                if p != next.currentNetwork {
                    next.networkKeyManagement = nil
                    next.identity = nil
                    next.clientCert = nil
                    next.privateKey = nil
                    next.engine = nil
                    next.clientKey = nil
                }
                next.currentNetwork = p
            default: continue
            }
        }
        self = next
    }

    /// Applies the current network's `fi.w1.wpa_supplicant1.Network.Properties` (an a{sv} of strings).
    public mutating func apply(networkProperties value: DBusValue) throws(WPADBusError) {
        guard case .dict(let d) = value.unwrapped else {
            throw Self.typeError("Properties of network \(currentNetwork ?? "?")", value.unwrapped, "a{sv}", path)
        }
        func field(_ key: String) throws(WPADBusError) -> String? {
            guard let v = d[key] else { return nil }
            return try Self.string(v.unwrapped, "network \(key)", path)
        }
        let keyMgmt = try field("key_mgmt")
        let identity = try field("identity")
        let clientCert = try field("client_cert")
        let privateKey = try field("private_key")
        let engine = try field("engine")
        networkKeyManagement = keyMgmt
        self.identity = identity.map(Self.unquoted)
        self.clientCert = clientCert.map(Self.unquoted)
        self.privateKey = privateKey.map(Self.unquoted)
        self.engine = engine
    }

    /// Applies the `EAP` signal's two strings (status, parameter).
    public mutating func applyEAP(_ args: [DBusValue]) throws(WPADBusError) {
        guard args.count == 2, case .string(let status) = args[0], case .string(let parameter) = args[1] else {
            throw WPADBusError("EAP signal of \(path) has arguments (\(args.map(\.signature).joined(separator: ","))), expected (s,s) status and parameter")
        }
        switch status {
        case "started":
            // A new exchange: certificates from here on belong to it.
            pendingChain = []
            pendingDER = [:]
        case "completion":
            switch parameter {
            case "success":
                lastEAP = .success
                successes &+= 1
                serverChain = ServerChainCheck.marked(pendingChain, der: pendingDER)
            case "failure":
                lastEAP = .failure
                serverChain = []
            default: throw WPADBusError("EAP signal of \(path): completion with parameter \"\(parameter.prefix(40))\", expected success or failure")
            }
            pendingChain = []
            pendingDER = [:]
            loggedOff = false
        case "accept proposed method":
            acceptedMethod = parameter.uppercased()
        default:
            break
        }
    }

    /// Applies the `Certification` signal's dictionary (depth u, subject s, altsubject as,
    /// cert_hash s, cert ay): one certificate of the server's chain in the exchange under way.
    public mutating func applyCertification(_ args: [DBusValue]) throws(WPADBusError) {
        guard args.count == 1, case .dict(let d) = args[0] else {
            throw WPADBusError("Certification signal of \(path) has arguments (\(args.map(\.signature).joined(separator: ","))), expected (a{sv})")
        }
        guard case .uint(let depth, _)? = d["depth"]?.unwrapped, depth < 64 else {
            throw WPADBusError("Certification signal of \(path) has no depth (u) below 64")
        }
        guard case .string(let subject)? = d["subject"]?.unwrapped else {
            throw WPADBusError("Certification signal of \(path) has no subject (s)")
        }
        var hash: String?
        if let raw = d["cert_hash"] {
            guard case .string(let h) = raw.unwrapped, h.count == 64, h.allSatisfy(\.isHexDigit) else {
                throw WPADBusError("Certification signal of \(path): cert_hash is not a SHA-256 in hex")
            }
            hash = h.lowercased()
        }
        var alt: [String] = []
        if let raw = d["altsubject"] {
            guard case .array(let items, element: "s") = raw.unwrapped else {
                throw WPADBusError("Certification signal of \(path): altsubject has type '\(raw.unwrapped.signature)', expected as")
            }
            for case .string(let a) in items { alt.append(a) }
        }
        if case .array(let items, element: "y")? = d["cert"]?.unwrapped {
            pendingDER[Int(depth)] = items.compactMap { if case .uint(let b, _) = $0 { UInt8(truncatingIfNeeded: b) } else { nil } }
        }
        let cert = PeerCertificate(depth: Int(depth), subject: subject, sha256: hash, altSubjects: alt)
        pendingChain.removeAll { $0.depth == cert.depth }
        pendingChain.append(cert)
        pendingChain.sort { $0.depth < $1.depth }
    }

    /// We sent `EAPLogoff`: the supplicant's port is unauthorized until an EAP completion.
    public mutating func applyLogoff() {
        loggedOff = true
        lastEAP = nil
        serverChain = []
        pendingChain = []
    }

    /// The 802.1X state for the decision.
    public var deviceAuth: DeviceAuthState {
        var s = DeviceAuthState()
        s.successes = successes
        s.serverChain = serverChain
        if let mode = authMode {
            if mode.hasPrefix("EAP-") {
                s.eapMethod = String(mode.dropFirst(4)).uppercased()
                s.keyManagement = "IEEE 802.1X (\(networkKeyManagement ?? "EAP"))"
            } else if mode != "INACTIVE" && mode != "UNKNOWN" {
                s.keyManagement = mode
            }
        }
        if s.eapMethod == nil { s.eapMethod = acceptedMethod }
        s.identity = identity
        if let clientKey { (s.clientKeySHA256, s.clientCertificate) = (clientKey.keySHA256, clientKey.description) }
        let eapMode = authMode?.hasPrefix("EAP-") ?? false
        if loggedOff {
            s.portStatus = .unauthorized
            return s
        }
        switch (state, lastEAP) {
        case ("completed", .failure):
            s.portStatus = .unauthorized
            s.eapState = "FAILURE"
        case ("completed", .success):
            s.portStatus = .authorized
            s.eapState = "SUCCESS"
        case ("completed", nil):
            s.portStatus = eapMode ? .authorized : .unknown
        case (_, .failure):
            s.portStatus = .unauthorized
            s.eapState = "FAILURE"
        case (nil, _):
            s.portStatus = .unknown
        default:
            s.portStatus = .unauthorized
        }
        return s
    }

    static func string(_ value: DBusValue, _ name: String, _ path: String) throws(WPADBusError) -> String {
        guard case .string(let s) = value else { throw typeError(name, value, "s (string)", path) }
        return s
    }

    static func typeError(_ name: String, _ value: DBusValue, _ expected: String, _ path: String) -> WPADBusError {
        WPADBusError("wpa_supplicant property \(name) of \(path) has type '\(value.signature)', expected \(expected)")
    }

    static func unquoted(_ s: String) -> String {
        s.count >= 2 && s.hasPrefix("\"") && s.hasSuffix("\"") ? String(s.dropFirst().dropLast()) : s
    }
}
