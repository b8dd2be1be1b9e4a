// IEEE 802.1X device authentication as the supplicant reports it, and what a rule requires.
// Plain values: the wpa_supplicant sources fill them in, the decision reads them.

/// What a wireless or wired rule requires of the interface's 802.1X authentication.
public enum DeviceAuthRequirement: String, Sendable, Codable, CaseIterable {
    /// No requirement (the SSID/port rules alone decide).
    case none
    /// A completed EAP-TLS authentication with this device's certificate: the supplicant's
    /// `client_cert` holds the same public key as segguardd's device certificate.
    case eapTLS = "eap-tls"
}

/// The 802.1X state of one interface, from wpa_supplicant (control socket or D-Bus).
public struct DeviceAuthState: Sendable, Equatable, Codable {
    /// IEEE 802.1X supplicant port status.
    public enum PortStatus: String, Sendable, Codable, CaseIterable { case authorized, unauthorized, unknown }

    /// `key_mgmt`, e.g. "WPA2/IEEE 802.1X/EAP", "IEEE 802.1X (no WPA)", "WPA2-PSK".
    public var keyManagement: String?
    /// IEEE 802.1X supplicant PAE state, e.g. "AUTHENTICATED", "AUTHENTICATING" (also during a
    /// re-authentication), "HELD" (after a failure). Nil when the source does not expose it (D-Bus).
    public var paeState: String?
    /// EAP state machine state, e.g. "SUCCESS", "FAILURE", "IDLE".
    public var eapState: String?
    /// The EAP method in use, upper case without the "EAP-" prefix, e.g. "TLS", "PEAP".
    public var eapMethod: String?
    public var portStatus: PortStatus
    /// The identity the supplicant authenticated with (the device certificate's identity).
    public var identity: String?
    /// Seconds since the epoch when this state was reached (set by the source).
    public var since: Double?
    /// The authentication server's certificate chain as the supplicant saw it in the latest
    /// completed EAP exchange (the success that authorized the port, or the failure that did
    /// not), by depth (0 = the server's own certificate). Certificates reported during an
    /// exchange still running are not in it: a re-authentication does not empty it, its success
    /// replaces it. Empty when the source has not seen it (it is reported only during a full
    /// EAP-TLS handshake; a success on a resumed TLS session keeps the previous full
    /// handshake's chain, the only server that can resume that session).
    public var serverChain: [PeerCertificate]
    /// EAP successes the source has seen on this interface since it attached to the
    /// supplicant, counting from 1: a fresh authentication has a higher number than a stale
    /// one. 0 when the source cannot count them (a state read before any event).
    public var successes: UInt64
    /// Set by the agent, never by a source: this authentication happened before the wired
    /// link last lost carrier or changed ifindex, so it may belong to another port (a cable
    /// moved); only a fresh success counts again.
    public var predatesLinkLoss = false
    /// SHA-256 (hex) of the public key (DER SubjectPublicKeyInfo) of the client certificate
    /// the supplicant's network authenticates with (`client_cert`, read by the source); nil
    /// when it could not be read.
    public var clientKeySHA256: String?
    /// That certificate as the source found it ("subject '/CN=tc-0001' in /etc/…"), or why it
    /// could not be read.
    public var clientCertificate: String?
    /// Set by the agent, never by a source: SHA-256 of this device's key (its device
    /// certificate, the one enrolled with the collector); nil when it could not be read.
    public var deviceKeySHA256: String?
    /// Set by the agent: this device's certificate ("subject … in /etc/segguard/device.pem"),
    /// or why it could not be read.
    public var deviceCertificate: String?

    public init(keyManagement: String? = nil, eapState: String? = nil, eapMethod: String? = nil,
                portStatus: PortStatus = .unknown, identity: String? = nil, since: Double? = nil, paeState: String? = nil,
                serverChain: [PeerCertificate] = [], successes: UInt64 = 0) {
        self.serverChain = serverChain
        self.successes = successes
        self.keyManagement = keyManagement
        self.paeState = paeState
        self.eapState = eapState
        self.eapMethod = eapMethod
        self.portStatus = portStatus
        self.identity = identity
        self.since = since
    }

    /// Complete: the supplicant port is authorized, which it is only after an EAP success.
    ///
    /// The port stays authorized while a re-authentication runs (EAP state IDLE/… and PAE state
    /// AUTHENTICATING, measured on wpa_supplicant 2.10): a periodic re-authentication by the
    /// switch or access point must not block the VDI. A failed one turns the port unauthorized
    /// (PAE state HELD) in the same step as the EAP failure.
    public var isComplete: Bool { portStatus == .authorized }

    /// True while an authorized port re-authenticates.
    public var isReauthenticating: Bool { portStatus == .authorized && eapState != nil && eapState != "SUCCESS" }

    /// The same authentication, differing only in the transient fields of a re-authentication.
    public func sameAuthentication(as other: DeviceAuthState) -> Bool {
        portStatus == other.portStatus && eapMethod == other.eapMethod && identity == other.identity
    }

    /// Why `requirement` is not met, or nil when it is.
    public func shortfall(for requirement: DeviceAuthRequirement) -> String? {
        switch requirement {
        case .none:
            return nil
        case .eapTLS:
            if predatesLinkLoss {
                return "the 802.1X authentication is from before the link lost carrier (the cable may have moved); waiting for a fresh one"
            }
            if let km = keyManagement, km.contains("PSK") || km.contains("SAE"), !km.contains("802.1X") {
                return "the network uses \(km) (a shared key), not 802.1X: the rule requires EAP-TLS (a device certificate)"
            }
            guard isComplete else {
                let state = eapState.map { "EAP state \($0)" } ?? "no EAP state"
                return "802.1X device authentication is not complete (\(state), port \(portStatus.rawValue))"
            }
            guard eapMethod == "TLS" else {
                return "802.1X authentication used EAP-\(eapMethod ?? "?"), the rule requires EAP-TLS (a device certificate)"
            }
            // EAP-TLS proves this device only with this device's key: not a certificate
            // shared by many clients, nor one taken from another device.
            guard let device = deviceKeySHA256 else {
                return "this device's certificate is not known (\(deviceCertificate ?? "none configured")): cannot tell whether 802.1X used it"
            }
            guard let client = clientKeySHA256 else {
                return "the certificate wpa_supplicant authenticates with is not known (\(clientCertificate ?? "not read")); it must be this device's"
            }
            guard client == device else {
                return "802.1X authenticated with \(clientCertificate ?? "a certificate") (key SHA-256 \(client.prefix(16))…), not this device's certificate (key SHA-256 \(device.prefix(16))…)"
            }
            return nil
        }
    }
}

/// One certificate of the 802.1X authentication server's chain, as wpa_supplicant reported it
/// (`CTRL-EVENT-EAP-PEER-CERT depth=N subject='…' hash=…` on the control socket, the
/// `Certification` signal on D-Bus).
public struct PeerCertificate: Sendable, Equatable, Codable {
    /// 0 = the server's own certificate, 1 = its issuer, and so on.
    public var depth: Int
    /// The subject as the supplicant prints it, e.g. "/C=JP/O=Example City/CN=radius.example.lg.jp".
    public var subject: String
    /// SHA-256 of the DER certificate, lower-case hex; nil when the supplicant did not report it.
    public var sha256: String?
    /// subjectAltName entries as reported, e.g. "DNS:radius.example.lg.jp".
    public var altSubjects: [String]
    /// True when this certificate's signature was verified with the public key of the
    /// certificate one depth above it (set by the source from the DER wpa_supplicant reports).
    /// Without `ca_cert` wpa_supplicant verifies nothing above the server's own key, so a pin
    /// on a CA counts only through a chain of verified signatures.
    public var signedByNext: Bool
    /// The certificate says it is a CA (basicConstraints cA = TRUE). A certificate between
    /// the server and a pinned CA must be one: otherwise any leaf the CA issued (another
    /// thin client's device certificate) could sign a server certificate of its own.
    public var isCA: Bool
    /// The certificate may be used by a TLS server: no extendedKeyUsage, or one listing
    /// serverAuth. A device certificate (clientAuth only) is not.
    public var serverAuth: Bool
    /// Inside its notBefore … notAfter when the supplicant reported it (the wall clock then).
    public var validWhenSeen: Bool

    public init(depth: Int, subject: String, sha256: String? = nil, altSubjects: [String] = [], signedByNext: Bool = false,
                isCA: Bool = false, serverAuth: Bool = false, validWhenSeen: Bool = false) {
        self.signedByNext = signedByNext
        self.isCA = isCA
        self.serverAuth = serverAuth
        self.validWhenSeen = validWhenSeen
        self.depth = depth
        self.subject = subject
        self.sha256 = sha256
        self.altSubjects = altSubjects
    }
}

extension DeviceAuthState {
    /// `new` as read from the supplicant, carried on from `old`: during a re-authentication the
    /// supplicant forgets the method until the server proposes it again, so the method of the
    /// authentication that authorized the port is kept; `since` moves only when the
    /// authentication itself changes (port status, method, identity), not on every re-auth.
    public static func continuing(_ new: DeviceAuthState, from old: DeviceAuthState?, now: Double) -> DeviceAuthState {
        var state = new
        if let old, state.portStatus == .authorized, old.portStatus == .authorized {
            if state.eapMethod == nil { state.eapMethod = old.eapMethod }
            if state.identity == nil { state.identity = old.identity }
        }
        if let old, old.sameAuthentication(as: state) {
            state.since = old.since
        } else {
            state.since = now
        }
        return state
    }
}
