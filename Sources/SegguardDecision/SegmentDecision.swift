// The segment decision: a pure function of (snapshot, policy). No I/O, no clock, no logging:
// the same inputs always give the same decision, so every rule is unit-tested by table.

import FoundationEssentials
import SegguardEssentials
import Glibc
import SegguardPolicy

/// Which segment this thin client is on, for the My Number VDI.
public enum Segment: String, Sendable, Codable, CaseIterable {
    case authorizedWired = "authorized-wired"
    case authorizedWireless = "authorized-wireless"
    case unauthorized
}

/// What the decision concluded about one interface, and why.
public struct InterfaceFinding: Sendable, Equatable, Codable {
    /// How an interface bears on the decision.
    public enum Status: String, Sendable, Codable {
        /// An authorized path to the My Number segment.
        case authorized
        /// Matched (or tried to match) a rule but fails it: the reason says which part.
        case rejected
        /// A path off the machine that the policy does not allow alongside the segment.
        case conflictingUplink = "conflicting-uplink"
        /// Not relevant (loopback, ignored, no rule applies and no default route).
        case irrelevant
    }

    public var interface: String
    public var status: Status
    public var detail: String
    /// Site that authorized (or whose rule was closest to authorizing) the interface.
    public var site: String?

    public init(interface: String, status: Status, detail: String, site: String? = nil) {
        self.interface = interface
        self.status = status
        self.detail = detail
        self.site = site
    }
}

/// The result of evaluating a snapshot against a policy.
public struct Decision: Sendable, Equatable, Codable {
    public var segment: Segment
    /// One line for logs and users, naming the rule and the interface that decided it.
    public var reason: String
    /// Interfaces through which the My Number segment may be reached right now.
    public var authorizedInterfaces: [String]
    /// One finding per non-loopback interface, in ifindex order.
    public var findings: [InterfaceFinding]

    public init(segment: Segment, reason: String, authorizedInterfaces: [String], findings: [InterfaceFinding]) {
        self.segment = segment
        self.reason = reason
        self.authorizedInterfaces = authorizedInterfaces
        self.findings = findings
    }

    public var isAuthorized: Bool { segment != .unauthorized }

    /// The fail-closed decision used before the first snapshot or without a policy.
    public static func failClosed(_ why: String) -> Decision {
        Decision(segment: .unauthorized, reason: why, authorizedInterfaces: [], findings: [])
    }
}

/// Decides the segment from a snapshot and a policy.
public enum SegmentDecider {
    /// Evaluates every interface against the policy, then the uplink rule.
    public static func decide(_ snapshot: NetworkSnapshot, _ policy: Policy) -> Decision {
        var findings: [InterfaceFinding] = []
        var authorized: [(InterfaceState, InterfaceFinding)] = []

        for ifc in snapshot.interfaces where ifc.kind != .loopback {
            let finding: InterfaceFinding
            switch ifc.kind {
            case .wireless: finding = evaluateWireless(ifc, policy)
            default: finding = evaluateWired(ifc, policy, monitoring: snapshot.wirelessMonitoring)
            }
            if finding.status == .authorized { authorized.append((ifc, finding)) }
            findings.append(finding)
        }

        // Uplink rule: another path off the machine beside the authorized one(s).
        var conflicts: [String] = []
        if !authorized.isEmpty && policy.uplinks.otherUplinks == .deny {
            let authorizedNames = Set(authorized.map { $0.0.name })
            for ifc in snapshot.interfaces where ifc.kind != .loopback {
                guard !authorizedNames.contains(ifc.name), ifc.isUplink else { continue }
                guard !policy.uplinks.ignore.contains(where: { NamePattern.matches($0, ifc.name) }) else { continue }
                let routes = ifc.defaultRoutes.map(\.description).joined(separator: ", ")
                let kind = ifc.linkKind.map { "\(ifc.kind.rawValue) \($0)" } ?? ifc.kind.rawValue
                let detail = "\(ifc.name) (\(kind)) is a second uplink (default route \(routes))"
                if let k = findings.firstIndex(where: { $0.interface == ifc.name }) {
                    findings[k] = InterfaceFinding(interface: ifc.name, status: .conflictingUplink, detail: detail)
                }
                conflicts.append(detail)
            }
        }

        let names = authorized.map { $0.0.name }
        if !conflicts.isEmpty {
            let via = names.joined(separator: ", ")
            return Decision(
                segment: .unauthorized,
                reason: "\(conflicts.joined(separator: "; ")) while on the My Number segment via \(via) (uplinks.other_uplinks: deny)",
                authorizedInterfaces: [], findings: findings)
        }
        if authorized.isEmpty {
            return Decision(segment: .unauthorized, reason: unauthorizedReason(findings, snapshot), authorizedInterfaces: [], findings: findings)
        }
        let wired = authorized.filter { $0.0.kind != .wireless }
        let segment: Segment = wired.isEmpty ? .authorizedWireless : .authorizedWired
        // Wired first: it is the path the segment prefers when both are up.
        let ordered = wired + authorized.filter { $0.0.kind == .wireless }
        return Decision(
            segment: segment,
            reason: ordered.map(\.1.detail).joined(separator: "; "),
            authorizedInterfaces: ordered.map { $0.0.name },
            findings: findings)
    }

    // MARK: - Wireless

    static func evaluateWireless(_ ifc: InterfaceState, _ policy: Policy) -> InterfaceFinding {
        let name = ifc.name
        guard let link = ifc.wireless, link.isAssociated, let bssid = link.bssid else {
            return InterfaceFinding(interface: name, status: .irrelevant, detail: "\(name) is not associated to any Wi-Fi network")
        }
        guard let ssid = link.ssid else {
            return InterfaceFinding(interface: name, status: .rejected, detail: "\(name) is associated via BSSID \(bssid) but its SSID is not known yet")
        }
        let quoted = "SSID '\(ssid)'"
        let rules = policy.sites.flatMap { site in site.wireless.filter { $0.ssid == ssid }.map { (site, $0) } }
        if rules.isEmpty {
            let hidden = ssid.isEmpty ? " (hidden network with empty SSID)" : ""
            return InterfaceFinding(interface: name, status: .rejected, detail: "\(name) associated to \(quoted)\(hidden), which no site authorizes")
        }
        let secure = rules.filter { $0.1.security.contains(link.security) }
        if secure.isEmpty {
            let need = Set(rules.flatMap { $0.1.security }).map(\.rawValue).sorted().joined(separator: " or ")
            let (site, rule) = rules[0]
            return InterfaceFinding(
                interface: name, status: .rejected,
                detail: "\(name) associated to \(quoted) with security \(link.security.rawValue); site '\(site.name)' (\(rule.location)) requires \(need)",
                site: site.name)
        }
        let pinned = secure.filter { $0.1.bssids.isEmpty || $0.1.bssids.contains(bssid) }
        guard let (site, rule) = pinned.first else {
            let names = Set(secure.map { "'\($0.0.name)'" }).sorted()
            let sites = (names.count == 1 ? "site " : "sites ") + names.joined(separator: ", ")
            return InterfaceFinding(
                interface: name, status: .rejected,
                detail: "\(name) associated to \(quoted) via BSSID \(bssid), not in the office allowlist (\(sites))",
                site: secure[0].0.name)
        }
        if rule.deviceAuth != .none {
            let why = ifc.deviceAuth.map { $0.shortfall(for: rule.deviceAuth) ?? serverShortfall($0, rule.identity.server) } ?? "no 802.1X state from wpa_supplicant"
            if let why {
                return InterfaceFinding(
                    interface: name, status: .rejected,
                    detail: "\(name) associated to \(quoted) via BSSID \(bssid) but \(why): site '\(site.name)' (\(rule.location)) requires \(rule.deviceAuth.rawValue)",
                    site: site.name)
            }
        }
        if let fence = rule.fence {
            let state = ifc.signalFences.first { $0.fence == fence }
            if state?.inside != true {
                let signal = (state?.signalDBM ?? link.signalDBM).map { "\($0) dBm" } ?? "not known yet"
                return InterfaceFinding(
                    interface: name, status: .rejected,
                    detail: "\(name) associated to \(quoted) via BSSID \(bssid) but the signal (\(signal)) places it outside the office area (\(fence)): site '\(site.name)' (\(rule.location))",
                    site: site.name)
            }
        }
        if ifc.isRunning, let why = identityShortfall(ifc, rule.identity) {
            return InterfaceFinding(
                interface: name, status: .rejected,
                detail: "\(name) associated to \(quoted) via BSSID \(bssid) but \(why): site '\(site.name)' (\(rule.location))",
                site: site.name)
        }
        guard ifc.isRunning else {
            return InterfaceFinding(
                interface: name, status: .rejected,
                detail: "\(name) associated to \(quoted) via BSSID \(bssid) but \(linkState(ifc))\(ifc.operState == .dormant ? " (authentication not complete)" : "")",
                site: site.name)
        }
        let pin = rule.bssids.isEmpty ? "" : " (pinned access point)"
        return InterfaceFinding(
            interface: name, status: .authorized,
            detail: "\(name) associated to \(quoted) via BSSID \(bssid)\(pin) with \(link.security.rawValue) security: site '\(site.name)' (\(rule.location))",
            site: site.name)
    }

    // MARK: - Wired

    static func evaluateWired(_ ifc: InterfaceState, _ policy: Policy, monitoring: Bool) -> InterfaceFinding {
        let name = ifc.name
        var closest: (Site, WiredRule, String)?
        for site in policy.sites {
            for rule in site.wired {
                let nameOK = rule.interfaces.isEmpty || rule.interfaces.contains { NamePattern.matches($0, name) }
                let macOK = rule.macs.isEmpty || (ifc.mac.map { rule.macs.contains($0) } ?? false)
                guard nameOK && macOK else {
                    // Only a plain wired NIC is worth a MAC remark; virtual links are never the pinned port.
                    if nameOK && !rule.macs.isEmpty && closest == nil && ifc.kind == .wired {
                        let mac = ifc.mac?.description ?? "(none)"
                        let text = rule.interfaces.isEmpty
                            ? "\(name) MAC \(mac) is not listed in site '\(site.name)' wired rule (\(rule.location))"
                            : "\(name) matches the name of site '\(site.name)' wired rule (\(rule.location)) but its MAC \(mac) is not listed"
                        closest = (site, rule, text)
                    }
                    continue
                }
                if ifc.kind == .virtual {
                    guard let kind = ifc.linkKind, rule.linkKinds.contains(kind) else {
                        let what = ifc.linkKind.map { "a virtual link (\($0))" } ?? "not an Ethernet device"
                        if closest == nil {
                            closest = (site, rule, "\(name) matches site '\(site.name)' wired rule (\(rule.location)) but is \(what), which the rule does not admit")
                        }
                        continue
                    }
                }
                guard ifc.isRunning else {
                    return InterfaceFinding(
                        interface: name, status: .rejected,
                        detail: "\(name) matches site '\(site.name)' wired rule (\(rule.location)) but \(linkState(ifc))",
                        site: site.name)
                }
                if rule.deviceAuth != .none {
                    let why = ifc.deviceAuth.map { $0.shortfall(for: rule.deviceAuth) ?? serverShortfall($0, rule.identity.server) } ?? "no 802.1X state from wpa_supplicant"
                    if let why {
                        return InterfaceFinding(
                            interface: name, status: .rejected,
                            detail: "\(name) matches site '\(site.name)' wired rule (\(rule.location)) but \(why)",
                            site: site.name)
                    }
                }
                if let why = identityShortfall(ifc, rule.identity) {
                    return InterfaceFinding(
                        interface: name, status: .rejected,
                        detail: "\(name) matches site '\(site.name)' wired rule (\(rule.location)) but \(why)",
                        site: site.name)
                }
                let proven = identityProof(ifc, rule)
                return InterfaceFinding(
                    interface: name, status: .authorized,
                    detail: "\(name) has carrier and matches site '\(site.name)' wired rule (\(rule.location))\(proven)",
                    site: site.name)
            }
        }
        if let (site, _, detail) = closest {
            return InterfaceFinding(interface: name, status: .rejected, detail: detail, site: site.name)
        }
        return InterfaceFinding(interface: name, status: .irrelevant, detail: "\(name) matches no wired rule")
    }

    // MARK: - Network identity

    /// Why the 802.1X server's certificate chain does not satisfy `pins`, or nil.
    static func serverShortfall(_ auth: DeviceAuthState, _ pins: ServerPins) -> String? {
        guard !pins.isEmpty else { return nil }
        guard let leaf = auth.serverChain.first(where: { $0.depth == 0 }) else {
            return "the 802.1X server's certificate is not known (wpa_supplicant reported none for this authentication)"
        }
        let seen = "the 802.1X server's certificate (subject '\(leaf.subject)', SHA-256 \(leaf.sha256.map { String($0.prefix(16)) + "…" } ?? "not reported"))"
        if !pins.certSHA256.isEmpty {
            guard let h = leaf.sha256, pins.certSHA256.contains(h) else { return "\(seen) is not the pinned one (server_cert_sha256)" }
        }
        if !pins.caSHA256.isEmpty {
            let chain = auth.serverChain.sorted { $0.depth < $1.depth }
            guard let pinned = chain.first(where: { $0.depth > 0 && $0.sha256.map(pins.caSHA256.contains) == true }) else {
                let issuers = chain.filter { $0.depth > 0 }.map { "'\($0.subject)'" }
                return "\(seen) was not issued under a pinned CA (server_ca_sha256); its chain: \(issuers.isEmpty ? "no issuer reported" : issuers.joined(separator: ", "))"
            }
            // The pinned CA must have signed the chain down to the server: a rogue server can
            // send the office CA's certificate along with a chain of its own.
            let below = chain.filter { $0.depth < pinned.depth }
            guard below.count == pinned.depth, below.allSatisfy(\.signedByNext) else {
                return "\(seen) was sent with the pinned CA '\(pinned.subject)', but the chain's signatures do not lead to it (a forged chain, or no certificate data from wpa_supplicant)"
            }
            // What a verifying TLS client checks besides signatures: the server's certificate
            // may serve TLS (a device certificate issued by the same CA may not), every
            // certificate above it up to the pin is a CA, and all were inside their validity.
            guard leaf.serverAuth else {
                return "\(seen) is not meant for a TLS server (its extendedKeyUsage lacks serverAuth: a client or device certificate of the pinned CA)"
            }
            if let notCA = chain.first(where: { $0.depth > 0 && $0.depth <= pinned.depth && !$0.isCA }) {
                return "\(seen) was signed by '\(notCA.subject)', which is not a CA certificate (basicConstraints)"
            }
            if let expired = chain.first(where: { $0.depth <= pinned.depth && !$0.validWhenSeen }) {
                let which = expired.depth == 0 ? "it" : "'\(expired.subject)' in its chain"
                return "\(seen) was not valid when presented: \(which) was outside its notBefore/notAfter"
            }
        }
        if let domain = pins.domain {
            var names = leaf.altSubjects.compactMap { $0.hasPrefix("DNS:") ? String($0.dropFirst(4)).lowercased() : nil }
            if let cn = leaf.subject.split(separator: "/").last(where: { $0.hasPrefix("CN=") }) ?? leaf.subject.split(separator: ",").map({ $0.trimmed()[...] }).last(where: { $0.hasPrefix("CN=") }) {
                names.append(String(cn.dropFirst(3)).lowercased())
            }
            guard names.contains(where: { $0 == domain || $0.hasSuffix("." + domain) }) else {
                return "\(seen) does not name \(domain) (server_domain); it names \(names.isEmpty ? "nothing" : names.joined(separator: ", "))"
            }
        }
        return nil
    }

    /// Why the network behind a running interface is not the one `identity` describes, or nil.
    static func identityShortfall(_ ifc: InterfaceState, _ identity: NetworkIdentity) -> String? {
        let name = ifc.name
        if !identity.prefixes.isEmpty {
            let inside = ifc.addresses.contains { a in a.isGlobal && identity.prefixes.contains { $0.contains(a.address) } }
            if !inside {
                let have = ifc.addresses.filter(\.isGlobal).map(\.description)
                return "its addresses (\(have.isEmpty ? "none" : have.joined(separator: ", "))) are outside the office prefixes \(identity.prefixes.map(\.description).joined(separator: ", "))"
            }
        }
        if !identity.gateways.isEmpty {
            let pins = identity.gateways
            let seen = pins.filter { ifc.neighbour($0.address)?.mac == $0.mac }
            let actual = ifc.defaultRoutes.compactMap(\.gateway)
            func describe(_ g: IPAddress) -> String { ifc.neighbour(g).map { "\(g) at \($0.mac)" } ?? "\(g) (not resolved)" }
            if seen.isEmpty {
                if let wrong = pins.first(where: { ifc.neighbour($0.address) != nil }), let n = ifc.neighbour(wrong.address) {
                    return "its gateway \(wrong.address) answers from MAC \(n.mac), not the office router's \(wrong.mac)"
                }
                let required = pins.map(\.description).joined(separator: " or ")
                if let pending = pins.first(where: { actual.contains($0.address) }) {
                    return "the office gateway \(pending.address) has no neighbour entry yet (not resolved on \(name))"
                }
                if !actual.isEmpty {
                    return "its default gateway \(actual.map(describe).joined(separator: ", ")) is not an office gateway (\(required))"
                }
                return "no office gateway (\(required)) in \(name)'s neighbour table"
            }
            let addresses = Set(pins.map(\.address))
            if let stray = ifc.defaultRoutes.first(where: { r in r.gateway.map { !addresses.contains($0) } ?? true }) {
                return "its route \(stray) does not go through an office gateway (\(pins.map(\.description).joined(separator: " or ")))"
            }
        }
        if let server = identity.trustedServer {
            guard let result = ifc.trustedServers.first(where: { $0.server == server.endpoint }) else {
                return "the trusted server \(server.endpoint) has not been proven through \(name) yet"
            }
            guard result.proven else { return "the trusted server \(server.endpoint) was not proven: \(result.detail)" }
        }
        return nil
    }

    /// The network identities of the rules an interface could match by its link alone (wired:
    /// name, MAC, kind; Wi-Fi: the SSID it is associated to): what the agent probes and
    /// resolves through it.
    public static func identities(for ifc: InterfaceState, _ policy: Policy) -> [NetworkIdentity] {
        var out: [NetworkIdentity] = []
        for site in policy.sites {
            if ifc.kind == .wireless {
                guard let ssid = ifc.wireless?.ssid else { continue }
                for rule in site.wireless where rule.ssid == ssid { out.append(rule.identity) }
            } else if ifc.kind != .loopback {
                for rule in site.wired {
                    let nameOK = rule.interfaces.isEmpty || rule.interfaces.contains { NamePattern.matches($0, ifc.name) }
                    let macOK = rule.macs.isEmpty || (ifc.mac.map { rule.macs.contains($0) } ?? false)
                    let kindOK = ifc.kind != .virtual || (ifc.linkKind.map { rule.linkKinds.contains($0) } ?? false)
                    if nameOK && macOK && kindOK { out.append(rule.identity) }
                }
            }
        }
        return out
    }

    /// The signal fences of the Wi-Fi rules an associated interface could match by SSID.
    public static func signalFences(for ifc: InterfaceState, _ policy: Policy) -> [SignalFence] {
        guard ifc.kind == .wireless, let ssid = ifc.wireless?.ssid else { return [] }
        var out: [SignalFence] = []
        for site in policy.sites {
            for rule in site.wireless where rule.ssid == ssid {
                if let f = rule.fence, !out.contains(f) { out.append(f) }
            }
        }
        return out
    }

    /// The trusted servers of `identities(for:)`, each once.
    public static func trustedServers(for ifc: InterfaceState, _ policy: Policy) -> [TrustedServerRule] {
        var out: [TrustedServerRule] = []
        for id in identities(for: ifc, policy) {
            if let t = id.trustedServer, !out.contains(t) { out.append(t) }
        }
        return out
    }

    /// What identity a wired rule proved, for the authorized finding ("" when none was asked).
    static func identityProof(_ ifc: InterfaceState, _ rule: WiredRule) -> String {
        var parts: [String] = []
        let id = rule.identity
        if !id.gateways.isEmpty, let g = id.gateways.first(where: { ifc.neighbour($0.address)?.mac == $0.mac }) { parts.append("gateway \(g)") }
        if !id.prefixes.isEmpty { parts.append("inside \(id.prefixes.map(\.description).joined(separator: ", "))") }
        if let t = id.trustedServer { parts.append("trusted server \(t.endpoint) proven") }
        if id.interfaceOnly { parts.append("interface only: the network is not checked") }
        return parts.isEmpty ? "" : " (" + parts.joined(separator: ", ") + ")"
    }

    static func linkState(_ ifc: InterfaceState) -> String {
        if !ifc.isAdminUp { return "is down" }
        if !ifc.hasCarrier { return "has no carrier" }
        return "is \(ifc.operState.rawValue)"
    }

    static func unauthorizedReason(_ findings: [InterfaceFinding], _ snapshot: NetworkSnapshot) -> String {
        let rejected = findings.filter { $0.status == .rejected }
        if !rejected.isEmpty {
            return "no authorized path: " + rejected.map(\.detail).joined(separator: "; ")
        }
        if findings.isEmpty {
            return "no authorized path: no network interface besides loopback"
        }
        let wifi = snapshot.wirelessMonitoring ? "no Wi-Fi is associated to an authorized SSID" : "Wi-Fi is not monitored (no nl80211)"
        return "no authorized path: no interface matches a wired rule and \(wifi)"
    }
}
