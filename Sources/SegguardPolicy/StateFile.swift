// A described network state for `segguardctl simulate`: interfaces, addresses, routes,
// neighbours, Wi-Fi association, 802.1X and trusted-server results, as YAML (or JSON, which
// is YAML too). Read with the policy loader's checks: every mistake is reported with its
// file:line:column and key path, and any mistake refuses the file. `render` writes the same
// format back, so a snapshot round-trips (the decision-table tests check it).

import FoundationEssentials
import SegguardEssentials
import Glibc

/// Reads and writes state files (format: Config/states/README.md).
public enum StateFile {
    /// Parses a state file into the snapshot the decision would see.
    public static func load(text: String, file: String) throws(PolicyLoadError) -> NetworkSnapshot {
        var ctx = Context(file: file)
        let root = try ctx.compose(text, emptyHint: "start with 'interfaces:'; see Config/states for examples")
        let snapshot = ctx.state(root)
        if !ctx.issues.isEmpty {
            throw PolicyLoadError(issues: ctx.issues.sorted { ($0.line, $0.column) < ($1.line, $1.column) })
        }
        return snapshot!
    }

    /// Reads the file at `path`.
    public static func load(file path: String) throws(PolicyLoadError) -> NetworkSnapshot {
        try load(text: PolicyLoader.readText(path, what: "the state file"), file: path)
    }

    /// The snapshot as a state file (flow style, one interface per block).
    public static func render(_ s: NetworkSnapshot) -> String {
        func q(_ t: String) -> String {
            "\"" + t.unicodeScalars.map { c -> String in
                switch c {
                case "\"": return "\\\""
                case "\\": return "\\\\"
                default: return c.value < 0x20 || c.value == 0x7f ? format("\\x%02x", c.value) : String(c)
                }
            }.joined() + "\""
        }
        var out = "wireless_monitoring: \(s.wirelessMonitoring)\ninterfaces:\(s.interfaces.isEmpty ? " []" : "")\n"
        for i in s.interfaces {
            out += "  - name: \(q(i.name))\n    index: \(i.index)\n    kind: \(i.kind.rawValue)\n"
            if let k = i.linkKind { out += "    link_kind: \(q(k))\n" }
            if let m = i.mac { out += "    mac: \(q(m.description))\n" }
            out += "    up: \(i.isAdminUp)\n    carrier: \(i.hasCarrier)\n    oper: \(i.operState.rawValue)\n"
            if !i.addresses.isEmpty {
                out += "    addresses: [" + i.addresses.map { a in a.scope == 0 ? q(a.description) : "{address: \(q(a.description)), scope: \(a.scope)}" }.joined(separator: ", ") + "]\n"
            }
            if !i.defaultRoutes.isEmpty {
                out += "    routes:\n"
                for r in i.defaultRoutes {
                    var parts = ["to: \(q(r.destination?.description ?? (r.family == .ipv4 ? "default" : "default6")))"]
                    if let g = r.gateway { parts.append("via: \(q(g.description))") }
                    if r.metric != 0 { parts.append("metric: \(r.metric)") }
                    if r.table != 254 { parts.append("table: \(r.table)") }
                    out += "      - {\(parts.joined(separator: ", "))}\n"
                }
            }
            if !i.neighbours.isEmpty {
                out += "    neighbours: [" + i.neighbours.map { "{address: \(q($0.address.description)), mac: \(q($0.mac.description))}" }.joined(separator: ", ") + "]\n"
            }
            if let w = i.wireless {
                var parts: [String] = []
                if let ssid = w.ssid { parts.append("ssid_hex: \(q(hexString(ssid.bytes)))") }
                if let b = w.bssid { parts.append("bssid: \(q(b.description))") }
                if let f = w.frequencyMHz { parts.append("frequency: \(f)") }
                parts.append("security: \(w.security.rawValue)")
                if !w.akmSuites.isEmpty { parts.append("akm_suites: [\(w.akmSuites.map { String($0) }.joined(separator: ", "))]") }
                if let dBm = w.signalDBM { parts.append("signal: \(dBm)") }
                out += "    wifi: {\(parts.joined(separator: ", "))}\n"
            } else if i.kind == .wireless {
                out += "    wifi: unknown\n"
            }
            if let a = i.deviceAuth {
                out += "    device_auth:\n      port: \(a.portStatus.rawValue)\n"
                if let v = a.keyManagement { out += "      key_management: \(q(v))\n" }
                if let v = a.eapState { out += "      eap_state: \(q(v))\n" }
                if let v = a.eapMethod { out += "      eap_method: \(q(v))\n" }
                if let v = a.paeState { out += "      pae_state: \(q(v))\n" }
                if let v = a.identity { out += "      identity: \(q(v))\n" }
                if a.predatesLinkLoss { out += "      predates_link_loss: true\n" }
                if let v = a.clientKeySHA256 { out += "      client_key_sha256: \(q(v))\n" }
                if let v = a.clientCertificate { out += "      client_certificate: \(q(v))\n" }
                if let v = a.deviceKeySHA256 { out += "      device_key_sha256: \(q(v))\n" }
                if let v = a.deviceCertificate { out += "      device_certificate: \(q(v))\n" }
                if !a.serverChain.isEmpty {
                    out += "      server_chain:\n"
                    for c in a.serverChain {
                        var parts = ["depth: \(c.depth)", "subject: \(q(c.subject))"]
                        if let h = c.sha256 { parts.append("sha256: \(q(h))") }
                        if !c.altSubjects.isEmpty { parts.append("alt: [\(c.altSubjects.map(q).joined(separator: ", "))]") }
                        if c.signedByNext { parts.append("signed_by_next: true") }
                        if c.isCA { parts.append("ca: true") }
                        if c.serverAuth { parts.append("server_auth: true") }
                        if c.validWhenSeen { parts.append("valid: true") }
                        out += "        - {\(parts.joined(separator: ", "))}\n"
                    }
                }
            }
            if !i.trustedServers.isEmpty {
                out += "    trusted_servers: [" + i.trustedServers.map { "{server: \(q($0.server)), proven: \($0.proven), detail: \(q($0.detail))}" }.joined(separator: ", ") + "]\n"
            }
        }
        return out
    }
}

extension Context {
    mutating func state(_ root: Node) -> NetworkSnapshot? {
        guard let top = mapping(root, "", allowed: ["interfaces", "wireless_monitoring"]) else { return nil }
        var monitoring = true
        if let v = top["wireless_monitoring"], let b = bool(v, "wireless_monitoring") { monitoring = b }
        var interfaces: [InterfaceState] = []
        if let v = top["interfaces"], let items = sequence(v, "interfaces") {
            for (k, item) in items.enumerated() {
                if let i = interface(item, "interfaces[\(k)]", defaultIndex: Int32(k + 2)) {
                    if interfaces.contains(where: { $0.name == i.name || $0.index == i.index }) {
                        report(item, "interfaces[\(k)]", "interface \(i.name) (index \(i.index)): the name or index is already used")
                    }
                    interfaces.append(i)
                }
            }
        } else if top["interfaces"] == nil {
            report(root, "interfaces", "missing", hint: "list the interfaces, e.g. interfaces: [{name: enp1s0, kind: wired}]")
        }
        return NetworkSnapshot(interfaces: interfaces, generation: 1, wirelessMonitoring: monitoring)
    }

    mutating func ipText(_ node: Node, _ path: String) -> IPAddress? {
        guard let t = string(node, path) else { return nil }
        guard let a = IPAddress(t) else {
            report(node, path, "\"\(t)\" is not an IPv4/IPv6 address")
            return nil
        }
        return a
    }

    mutating func macText(_ node: Node, _ path: String) -> MACAddress? {
        guard let t = string(node, path) else { return nil }
        guard let m = MACAddress(t) else {
            report(node, path, "\"\(t)\" is not a MAC address", hint: "write six hex bytes: aa:bb:cc:dd:ee:ff")
            return nil
        }
        return m
    }

    mutating func interface(_ node: Node, _ path: String, defaultIndex: Int32) -> InterfaceState? {
        guard let m = mapping(node, path, allowed: ["name", "index", "kind", "link_kind", "mac", "up", "carrier", "oper", "addresses", "routes",
                                                    "neighbours", "wifi", "device_auth", "trusted_servers"]) else { return nil }
        guard let n = m["name"], let name = string(n, "\(path).name"), !name.isEmpty else {
            report(m["name"] ?? node, "\(path).name", "missing or empty", hint: "the interface name, e.g. enp1s0")
            return nil
        }
        var index = defaultIndex
        if let v = m["index"], let i = int(v, "\(path).index", range: 1...Int(Int32.max)) { index = Int32(i) }
        var kind = InterfaceKind.wired
        if let v = m["kind"], let k = oneOf(v, "\(path).kind", InterfaceKind.self) { kind = k } else if name == "lo" { kind = .loopback }
        var ifc = InterfaceState(index: name == "lo" && m["index"] == nil ? 1 : index, name: name, kind: kind)
        if let v = m["link_kind"] { ifc.linkKind = string(v, "\(path).link_kind") }
        if let v = m["mac"] { ifc.mac = macText(v, "\(path).mac") }
        if let v = m["up"], let b = bool(v, "\(path).up") { ifc.isAdminUp = b }
        if let v = m["carrier"], let b = bool(v, "\(path).carrier") { ifc.hasCarrier = b }
        if let v = m["oper"], let o = oneOf(v, "\(path).oper", OperState.self) { ifc.operState = o } else if !ifc.hasCarrier || !ifc.isAdminUp {
            ifc.operState = .down
        }
        if let v = m["addresses"], let items = sequence(v, "\(path).addresses") {
            for (k, item) in items.enumerated() {
                let p = "\(path).addresses[\(k)]"
                var text: String?, scope: UInt8 = 0
                if case .mapping = item, let am = mapping(item, p, allowed: ["address", "scope"]) {
                    text = am["address"].flatMap { string($0, "\(p).address") }
                    if let s = am["scope"], let n = int(s, "\(p).scope", range: 0...255) { scope = UInt8(n) }
                } else {
                    text = string(item, p)
                }
                guard let text else { continue }
                let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
                guard parts.count == 2, let a = IPAddress(parts[0]), let len = UInt8(parts[1]), len <= (a.family == .ipv4 ? 32 : 128) else {
                    report(item, p, "\"\(text)\" is not ADDRESS/PREFIXLEN", hint: "e.g. 10.20.3.4/16")
                    continue
                }
                ifc.addresses.append(InterfaceAddress(address: a, prefixLength: len, scope: scope))
            }
        }
        if let v = m["routes"], let items = sequence(v, "\(path).routes") {
            for (k, item) in items.enumerated() {
                let p = "\(path).routes[\(k)]"
                guard let rm = mapping(item, p, allowed: ["to", "via", "metric", "table"]) else { continue }
                let via = rm["via"].flatMap { ipText($0, "\(p).via") }
                var family: IPAddress.Family = via?.family ?? .ipv4
                var destination: IPPrefix?
                let to = rm["to"].flatMap { string($0, "\(p).to") } ?? "default"
                switch to {
                case "default": break
                case "default6": family = .ipv6
                default:
                    guard let prefix = IPPrefix(to) else {
                        report(rm["to"] ?? item, "\(p).to", "\"\(to)\" is not default, default6 or a prefix")
                        continue
                    }
                    guard DefaultRoute.coversInternet(family: prefix.address.family, prefixLength: prefix.length) else {
                        report(rm["to"] ?? item, "\(p).to", "\(prefix) does not cover the internet: the decision never sees it",
                               hint: "only default routes and wide ones (IPv4 /7 or shorter, IPv6 /3 or shorter) count")
                        continue
                    }
                    family = prefix.address.family
                    destination = prefix
                }
                var metric: UInt32 = 0, table: UInt32 = 254
                if let v = rm["metric"], let n = int(v, "\(p).metric", range: 0...Int(UInt32.max)) { metric = UInt32(n) }
                if let v = rm["table"], let n = int(v, "\(p).table", range: 1...Int(UInt32.max)) { table = UInt32(n) }
                ifc.defaultRoutes.append(DefaultRoute(family: family, gateway: via, metric: metric, table: table, destination: destination))
            }
        }
        if let v = m["neighbours"], let items = sequence(v, "\(path).neighbours") {
            for (k, item) in items.enumerated() {
                let p = "\(path).neighbours[\(k)]"
                guard let nm = mapping(item, p, allowed: ["address", "mac"]) else { continue }
                guard let a = nm["address"].flatMap({ ipText($0, "\(p).address") }), let mac = nm["mac"].flatMap({ macText($0, "\(p).mac") }) else {
                    if nm["address"] == nil || nm["mac"] == nil { report(item, p, "a neighbour needs address and mac") }
                    continue
                }
                ifc.neighbours.append(Neighbour(address: a, mac: mac))
            }
        }
        if let v = m["wifi"], case let .scalar(sc) = v, sc.string == "unknown" {
            // nl80211 has not reported this interface (a kernel without cfg80211).
            ifc.wireless = nil
        } else if let v = m["wifi"] {
            if kind != .wireless { report(v, "\(path).wifi", "only a wireless interface has a Wi-Fi association", hint: "add kind: wireless") }
            ifc.wireless = wifi(v, "\(path).wifi")
        } else if kind == .wireless {
            ifc.wireless = .disconnected
        }
        if let v = m["device_auth"] { ifc.deviceAuth = deviceAuth(v, "\(path).device_auth") }
        if let v = m["trusted_servers"], let items = sequence(v, "\(path).trusted_servers") {
            for (k, item) in items.enumerated() {
                let p = "\(path).trusted_servers[\(k)]"
                guard let tm = mapping(item, p, allowed: ["server", "proven", "detail"]) else { continue }
                guard let server = tm["server"].flatMap({ string($0, "\(p).server") }), let proven = tm["proven"].flatMap({ bool($0, "\(p).proven") }) else {
                    if tm["server"] == nil || tm["proven"] == nil { report(item, p, "a probe result needs server (ADDRESS:PORT) and proven") }
                    continue
                }
                ifc.trustedServers.append(TrustedServerResult(server: server, proven: proven, detail: tm["detail"].flatMap { string($0, "\(p).detail") } ?? ""))
            }
        }
        return ifc
    }

    mutating func wifi(_ node: Node, _ path: String) -> WirelessLink? {
        guard let m = mapping(node, path, allowed: ["ssid", "ssid_hex", "bssid", "frequency", "security", "akm_suites", "signal"]) else { return nil }
        var link = WirelessLink.disconnected
        if let v = m["ssid"], let t = string(v, "\(path).ssid") { link.ssid = SSID(t) }
        if let v = m["ssid_hex"], let t = string(v, "\(path).ssid_hex") {
            if let b = hexBytes(t), b.count <= 32 { link.ssid = SSID(bytes: b) } else if t.isEmpty { link.ssid = SSID(bytes: []) } else {
                report(v, "\(path).ssid_hex", "\"\(t)\" is not up to 32 bytes of hex")
            }
        }
        if let v = m["bssid"] { link.bssid = macText(v, "\(path).bssid") }
        if let v = m["frequency"], let n = int(v, "\(path).frequency", range: 1...100_000) { link.frequencyMHz = UInt32(n) }
        if let v = m["security"], let s = oneOf(v, "\(path).security", WirelessSecurity.self) { link.security = s }
        if let v = m["signal"], let n = int(v, "\(path).signal", range: -150...0) { link.signalDBM = Int32(n) }
        if let v = m["akm_suites"], let items = sequence(v, "\(path).akm_suites") {
            for (k, item) in items.enumerated() {
                if let n = int(item, "\(path).akm_suites[\(k)]", range: 0...Int(UInt32.max)) { link.akmSuites.append(UInt32(n)) }
            }
        }
        return link
    }

    /// A SHA-256 in hex (64 digits), lower-cased; reported otherwise.
    mutating func sha256(_ node: Node, _ path: String) -> String? {
        guard let t = string(node, path) else { return nil }
        let lower = t.lowercased()
        guard lower.count == 64, lower.allSatisfy(\.isHexDigit) else {
            report(node, path, "\"\(t.prefix(70))\" is not a SHA-256 (64 hex digits)")
            return nil
        }
        return lower
    }

    mutating func deviceAuth(_ node: Node, _ path: String) -> DeviceAuthState? {
        guard let m = mapping(node, path, allowed: ["port", "key_management", "eap_state", "eap_method", "pae_state", "identity", "predates_link_loss",
                                                    "server_chain", "client_key_sha256", "client_certificate", "device_key_sha256", "device_certificate"]) else { return nil }
        var a = DeviceAuthState()
        if let v = m["port"], let p = oneOf(v, "\(path).port", DeviceAuthState.PortStatus.self) { a.portStatus = p }
        a.keyManagement = m["key_management"].flatMap { string($0, "\(path).key_management") }
        a.eapState = m["eap_state"].flatMap { string($0, "\(path).eap_state") }
        a.eapMethod = m["eap_method"].flatMap { string($0, "\(path).eap_method") }
        a.paeState = m["pae_state"].flatMap { string($0, "\(path).pae_state") }
        a.identity = m["identity"].flatMap { string($0, "\(path).identity") }
        if let v = m["predates_link_loss"], let b = bool(v, "\(path).predates_link_loss") { a.predatesLinkLoss = b }
        a.clientKeySHA256 = m["client_key_sha256"].flatMap { sha256($0, "\(path).client_key_sha256") }
        a.clientCertificate = m["client_certificate"].flatMap { string($0, "\(path).client_certificate") }
        a.deviceKeySHA256 = m["device_key_sha256"].flatMap { sha256($0, "\(path).device_key_sha256") }
        a.deviceCertificate = m["device_certificate"].flatMap { string($0, "\(path).device_certificate") }
        if let v = m["server_chain"], let items = sequence(v, "\(path).server_chain") {
            for (k, item) in items.enumerated() {
                let p = "\(path).server_chain[\(k)]"
                guard let cm = mapping(item, p, allowed: ["depth", "subject", "sha256", "alt", "signed_by_next", "ca", "server_auth", "valid"]) else { continue }
                let depth = cm["depth"].flatMap { int($0, "\(p).depth", range: 0...16) } ?? k
                let subject = cm["subject"].flatMap { string($0, "\(p).subject") } ?? ""
                let sha = cm["sha256"].flatMap { sha256($0, "\(p).sha256") }
                let alt = cm["alt"].map { strings($0, "\(p).alt") } ?? []
                let signed = cm["signed_by_next"].flatMap { bool($0, "\(p).signed_by_next") } ?? false
                let isCA = cm["ca"].flatMap { bool($0, "\(p).ca") } ?? false
                let serverAuth = cm["server_auth"].flatMap { bool($0, "\(p).server_auth") } ?? false
                let valid = cm["valid"].flatMap { bool($0, "\(p).valid") } ?? false
                a.serverChain.append(PeerCertificate(depth: depth, subject: subject, sha256: sha, altSubjects: alt, signedByNext: signed,
                                                     isCA: isCA, serverAuth: serverAuth, validWhenSeen: valid))
            }
        }
        return a
    }
}
