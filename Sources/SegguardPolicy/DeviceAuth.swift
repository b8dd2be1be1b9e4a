// IEEE 802.1X device authentication as the supplicant reports it, and what a rule requires.
// Plain values: the wpa_supplicant sources fill them in, the decision reads them.

/// What a wireless or wired rule requires of the interface's 802.1X authentication.
public enum DeviceAuthRequirement: String, Sendable, Codable, CaseIterable {
    /// No requirement (the SSID/port rules alone decide).
    case none
    /// A completed EAP-TLS authentication with this device's certificate.
    case eapTLS = "eap-tls"
}

/// The 802.1X state of one interface, from wpa_supplicant (control socket or D-Bus).
public struct DeviceAuthState: Sendable, Equatable, Codable {
    /// IEEE 802.1X supplicant port status.
    public enum PortStatus: String, Sendable, Codable { case authorized, unauthorized, unknown }

    /// `key_mgmt`, e.g. "WPA2/IEEE 802.1X/EAP", "IEEE 802.1X (no WPA)", "WPA2-PSK".
    public var keyManagement: String?
    /// EAP state machine state, e.g. "SUCCESS", "FAILURE", "IDLE".
    public var eapState: String?
    /// The EAP method in use, upper case without the "EAP-" prefix, e.g. "TLS", "PEAP".
    public var eapMethod: String?
    public var portStatus: PortStatus
    /// The identity the supplicant authenticated with (the device certificate's identity).
    public var identity: String?
    /// Seconds since the epoch when this state was reached (set by the source).
    public var since: Double?

    public init(keyManagement: String? = nil, eapState: String? = nil, eapMethod: String? = nil,
                portStatus: PortStatus = .unknown, identity: String? = nil, since: Double? = nil) {
        self.keyManagement = keyManagement
        self.eapState = eapState
        self.eapMethod = eapMethod
        self.portStatus = portStatus
        self.identity = identity
        self.since = since
    }

    /// Complete: EAP succeeded and the port is authorized.
    public var isComplete: Bool { eapState == "SUCCESS" && portStatus == .authorized }

    /// Why `requirement` is not met, or nil when it is.
    public func shortfall(for requirement: DeviceAuthRequirement) -> String? {
        switch requirement {
        case .none:
            return nil
        case .eapTLS:
            guard isComplete else {
                let state = eapState.map { "EAP state \($0)" } ?? "no EAP state"
                return "802.1X device authentication is not complete (\(state), port \(portStatus.rawValue))"
            }
            guard eapMethod == "TLS" else {
                return "802.1X authentication used EAP-\(eapMethod ?? "?"), the rule requires EAP-TLS (a device certificate)"
            }
            return nil
        }
    }
}
