// Issue 17, end to end with the built segguardd: 802.1X tied to the wired link. Real hostapd
// (driver=wired) and wpa_supplicant -Dwired over a veth pair; segguardd reads the supplicant
// through its control socket and decides on a schema_version 2 `device_auth: eap-tls` wired
// rule. The cable moved to a LAN without an authenticator, the supplicant killed, an
// EAPOL-Logoff, and a rogue authenticator against a policy pinning the server's CA.
// ifindexes 4970-4999.

import Foundation
import SegguardDeviceAuth
import SegguardPolicy
import SegguardTestSupport
import SegguardWire
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A wired 802.1X rule (schema_version 2) for interfaces named `pattern`, with extra rule
/// lines (server pins) if any.
func cableMovePolicy(_ pattern: String, extra: [String] = []) -> String {
    (["schema_version: 2",
      "name: cable-move-test",
      "sites:",
      "  - name: hq",
      "    wired:",
      "      - interfaces: [\"\(pattern)\"]",
      "        link_kinds: [veth]",
      "        device_auth: eap-tls"]
        + extra.map { "        " + $0 }
        + ["vdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}", ""]).joined(separator: "\n")
}

/// segguardd in a namespace with the thin client's end of a veth pair (`client`); the switch
/// port's end (`peer`) stays in that namespace, or (`officeNamespace`) lives in a namespace of
/// its own, the office LAN, so that the cable can be moved to another one (`home`).
final class CableMovePort {
    let lab: EAPLab
    let daemon: RunningDaemon
    let client: String
    let peer: String
    /// Where hostapd and the peer end live: the daemon's namespace or the office namespace.
    let office: TestNamespace?
    /// A LAN without an authenticator, made by `moveCableHome()`.
    private(set) var home: TestNamespace?
    var peerNamespace: TestNamespace { office ?? daemon.ns }
    var policyLine: String { "\(daemon.policyFile.path):6" }

    /// `policy` gets the lab (for the certificate hashes it pins).
    init(client: String, clientIndex: Int, peer: String, peerIndex: Int, officeNamespace: Bool = false,
         serverCertificate: String = "server", policy: (EAPLab) throws -> String) throws {
        let lab = try EAPLab()
        self.lab = lab
        self.client = client
        self.peer = peer
        var office: TestNamespace?
        do {
            if officeNamespace { office = try TestNamespace(prefix: "sgoffice") }
            self.office = office
            let text = try policy(lab)
            daemon = try RunningDaemon(policy: text, arguments: ["--wpa-control-dir", lab.controlDirectory, "--client-cert", "\(lab.path)/client.pem"]) { ns in
                try ns.addVeth(client, index: clientIndex, peer: peer, index: peerIndex, up: false)
                if let office {
                    try ns.ip("link", "set", peer, "netns", office.name)
                    try office.ip("link", "set", peer, "up")
                } else {
                    try ns.ip("link", "set", peer, "up")
                }
                try ns.ip("link", "set", client, "up")
                try lab.startAuthenticator(in: office ?? ns, interface: peer, serverCertificate: serverCertificate)
            }
        } catch {
            lab.cleanup()
            office?.destroy()
            throw error
        }
    }

    /// wpa_supplicant on the client end with the lab configuration `config`.
    func startSupplicant(config: String = "client") throws {
        // A socket file left by a killed supplicant would end EAPLab's wait for the new one early.
        try? FileManager.default.removeItem(atPath: "\(lab.controlDirectory)/\(client)")
        try lab.startSupplicant(in: daemon.ns, interface: client, config: config, cleanSignals: false)
    }

    /// The daemon's status now, or nil when it does not answer.
    func statusNow() -> StatusReply? {
        guard let (rc, out, _) = try? daemon.ctl(["status", "--json", "--socket", daemon.socket]), rc == 0,
              let reply = try? ControlCoding.decoder().decode(ControlReply.self, from: Data(out.utf8)) else { return nil }
        return reply.status
    }

    /// The first status satisfying `predicate` within `seconds`, or a failure with the logs.
    func status(_ what: String, seconds: Double = 15, _ predicate: (StatusReply) -> Bool) throws -> StatusReply {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let s = statusNow(), predicate(s) { return s }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw failure(what)
    }

    func describe(_ s: StatusReply?) -> String {
        guard let s else { return "none" }
        let auth = s.snapshot[client]?.deviceAuth
        return "\(s.decision.segment.rawValue): \(s.decision.reason); 802.1X: \(auth.map { "port \($0.portStatus.rawValue), PAE \($0.paeState ?? "?"), EAP \($0.eapState ?? "?"), successes \($0.successes), predatesLinkLoss \($0.predatesLinkLoss), server \($0.serverChain.map(\.subject))" } ?? "none")"
    }

    /// What hostapd knows of the station (its control socket), for failure messages.
    func authenticatorView() -> String {
        let socket = "\(lab.path)/hostapd-ctrl/\(peer)"
        guard FileManager.default.fileExists(atPath: socket) else { return "(hostapd not running)" }
        guard let first = try? lab.controlRequest(socket, "STA-FIRST") else { return "(no answer)" }
        guard let mac = first.split(separator: "\n").first, mac.count == 17 else { return "no station" }
        return (try? lab.controlRequest(socket, "STA \(mac)")) ?? first
    }

    func failure(_ what: String) -> CommandError {
        CommandError(description: "\(what): not reached; last decision: \(describe(statusNow()))\n"
            + "wpa_supplicant STATUS:\n\((try? lab.supplicantRequest(client, "STATUS")) ?? "(no answer)")\n"
            + "hostapd station:\n\(authenticatorView())\n"
            + "processes: \((try? runCommand(["ps", "-o", "pid,stat,args", "-C", "wpa_supplicant,hostapd"])) ?? "")\n"
            + "segguardd:\n\(daemon.logText.suffix(3000))\nwpa_supplicant:\n\(lab.log("wpa_supplicant").suffix(3000))\nhostapd:\n\(lab.log("hostapd").suffix(1500))")
    }

    /// wpa_supplicant's own view, e.g. "suppPortStatus" → "Authorized".
    func supplicantStatus() throws -> [String: String] {
        var out: [String: String] = [:]
        for line in try lab.supplicantRequest(client, "STATUS").split(separator: "\n") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            out[String(line[..<eq])] = String(line[line.index(after: eq)...])
        }
        return out
    }

    /// Unplugs the cable from the office port and plugs it into a LAN without an authenticator:
    /// hostapd stops, the peer end goes to another namespace (the client loses carrier) and
    /// comes up there (carrier returns). Returns the monotonic time the carrier came back.
    @discardableResult
    func moveCableHome() throws -> Double {
        guard let office else { throw CommandError(description: "the port has no office namespace") }
        let home = try self.home ?? TestNamespace(prefix: "sghome")
        self.home = home
        lab.stopAuthenticator()
        try office.ip("link", "set", peer, "netns", home.name)
        try waitCarrier(false)
        try home.ip("link", "set", peer, "up")
        try waitCarrier(true)
        return monotonicSeconds()
    }

    /// Back to the office port: the peer end returns to the office namespace, hostapd starts
    /// on it, and it comes up (carrier returns). Returns the monotonic time the carrier came back.
    @discardableResult
    func moveCableToOffice() throws -> Double {
        guard let office, let home else { throw CommandError(description: "the cable is not at home") }
        try home.ip("link", "set", peer, "netns", office.name)
        try waitCarrier(false)
        try lab.startAuthenticator(in: office, interface: peer, serverCertificate: "server")
        try office.ip("link", "set", peer, "up")
        try waitCarrier(true)
        return monotonicSeconds()
    }

    /// Waits (5 s) until the client end's carrier is `on` as the kernel reports it.
    func waitCarrier(_ on: Bool) throws {
        let path = "/sys/class/net/\(client)/carrier"
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            // /sys shows the namespace of the reader: read it inside the daemon's namespace.
            let text = (try? runCommand(["ip", "netns", "exec", daemon.ns.name, "cat", path], allowFailure: true)) ?? ""
            if text.trimmingCharacters(in: .whitespacesAndNewlines) == (on ? "1" : "0") { return }
            Thread.sleep(forTimeInterval: 0.01)
        }
        throw CommandError(description: "\(client): carrier did not turn \(on ? "on" : "off") within 5 s")
    }

    func cleanup() {
        daemon.cleanup()
        lab.cleanup()
        home?.destroy()
        office?.destroy()
    }
}

/// Follows segguardd's log (its stderr, a file) from the current end, polling every
/// millisecond: when a decision change is logged, that is when segguardd made it.
struct LogFollower {
    let path: String
    var offset: UInt64

    init(_ path: String) {
        self.path = path
        offset = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? UInt64) ?? 0
    }

    /// The monotonic time a line containing all of `needles` was first seen, and the line.
    mutating func wait(for needles: [String], seconds: Double) -> (at: Double, line: String)? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        let deadline = monotonicSeconds() + seconds
        var pending = ""
        while monotonicSeconds() < deadline {
            try? handle.seek(toOffset: offset)
            let data = handle.readDataToEndOfFile()
            if !data.isEmpty {
                let now = monotonicSeconds()
                offset += UInt64(data.count)
                pending += String(decoding: data, as: UTF8.self)
                while let nl = pending.firstIndex(of: "\n") {
                    let line = String(pending[..<nl])
                    pending = String(pending[pending.index(after: nl)...])
                    if needles.allSatisfy(line.contains) { return (now, line) }
                }
            }
            usleep(1000)
        }
        return nil
    }
}

@Suite("802.1X tied to the wired link, end to end (segguardd, hostapd, wpa_supplicant): cable move, supplicant kill, logoff, rogue server", .serialized,
       .enabled(if: canCreateNamespaces && EAPLab.available && FileManager.default.isExecutableFile(atPath: "/usr/sbin/wpa_cli"),
                "needs root and \((EAPLab.programs + ["/usr/sbin/wpa_cli"]).joined(separator: ", ")) (scripts/install-deps.sh installs them)"))
struct CableMoveTests {
    static let stale = "the 802.1X authentication is from before the link lost carrier"

    @Test("the cable moved to a LAN without an authenticator: unauthorized (stale 802.1X) while wpa_supplicant still says authorized; back at the office port: authorized after a fresh EAP success")
    func cableMoved() throws {
        let port = try CableMovePort(client: "tcm0", clientIndex: 4970, peer: "gwm0", peerIndex: 4971, officeNamespace: true) { _ in cableMovePolicy("tcm*") }
        defer { port.cleanup() }

        // At the office port: EAP-TLS succeeds, authorized-wired.
        try port.startSupplicant()
        let ok = try port.status("EAP-TLS success at the office port") { $0.decision.segment == .authorizedWired }
        let first = try #require(ok.snapshot["tcm0"]?.deviceAuth)
        #expect(first.successes >= 1 && first.serverChain.first?.subject == "/CN=server")

        // The cable moves to a LAN without an authenticator.
        let home = try port.moveCableHome()
        let stale = try port.status("unauthorized after the cable moved") { $0.decision.segment == .unauthorized }
        #expect(stale.decision.reason == "no authorized path: tcm0 matches site 'hq' wired rule (\(port.policyLine)) but \(Self.stale) (the cable may have moved); waiting for a fresh one",
                "\(port.describe(stale))")
        // …and stays so: nobody answers the supplicant's EAPOL-Start, and nothing else may
        // bring the old success back.
        var polls = 0
        while monotonicSeconds() - home < 3 {
            let s = try #require(port.statusNow())
            #expect(s.decision.segment == .unauthorized && s.decision.reason.contains(Self.stale), "\(port.describe(s))")
            if s.decision.segment != .unauthorized { break }
            polls += 1
            Thread.sleep(forTimeInterval: 0.1)
        }
        let away = try #require(port.statusNow())
        #expect(away.snapshot["tcm0"]?.deviceAuth?.successes == first.successes)
        #expect(away.snapshot["tcm0"]?.deviceAuth?.predatesLinkLoss == true)
        // wpa_supplicant itself still believes the port is authorized: only segguardd's link
        // tracking stands between the old success and the home LAN.
        let supplicant = try port.supplicantStatus()
        #expect(supplicant["suppPortStatus"] == "Authorized", "\(supplicant)")
        #expect(supplicant["Supplicant PAE state"] == "AUTHENTICATED", "\(supplicant)")
        #expect(port.daemon.logText.contains("802.1X state no longer counts"))
        #expect(port.daemon.logText.contains("802.1X re-authentication requested"))
        print("cable moved: unauthorized for \(polls) polls over 3 s; wpa_supplicant meanwhile: suppPortStatus=\(supplicant["suppPortStatus"] ?? "?"), PAE \(supplicant["Supplicant PAE state"] ?? "?")")

        // Back at the office port: segguardd asks the supplicant for a fresh authentication when
        // the carrier returns; its success authorizes again.
        let back = try port.moveCableToOffice()
        let again = try port.status("authorized again after a fresh EAP success at the office port", seconds: 30) { $0.decision.segment == .authorizedWired }
        let elapsed = monotonicSeconds() - back
        let fresh = try #require(again.snapshot["tcm0"]?.deviceAuth)
        let requests = port.daemon.logText.components(separatedBy: "802.1X re-authentication requested").count - 1
        #expect(requests >= 2, "one request per carrier return (home, office); segguardd log:\n\(port.daemon.logText.suffix(2000))")
        #expect(fresh.successes > first.successes)
        #expect(!fresh.predatesLinkLoss)
        print("cable back at the office port: carrier return → authorized-wired in \(String(format: "%.0f", elapsed * 1000)) ms (status polled every 50 ms; successes \(first.successes) → \(fresh.successes))")
    }

    @Test("wpa_supplicant SIGKILL while authorized: segguardd's decision is unauthorized within 1 s (measured from its log)")
    func supplicantKilled() throws {
        let port = try CableMovePort(client: "tck0", clientIndex: 4980, peer: "gwk0", peerIndex: 4981) { _ in cableMovePolicy("tck*") }
        defer { port.cleanup() }
        var latencies: [Double] = []
        for run in 0..<3 {
            try port.startSupplicant()
            _ = try port.status("run \(run): authorized") { $0.decision.segment == .authorizedWired }
            let pid = try #require(port.lab.supplicantPID)
            var log = LogFollower(port.daemon.log.path)
            let t0 = monotonicSeconds()
            kill(pid, SIGKILL)
            let hit = log.wait(for: ["segment decision changed", "decision=unauthorized"], seconds: 5)
            guard let hit else { throw port.failure("run \(run): decision change after SIGKILL") }
            latencies.append(hit.at - t0)
            let after = try port.status("run \(run): unauthorized, no 802.1X state") { $0.decision.segment == .unauthorized }
            #expect(after.decision.reason.contains("no 802.1X state"), "\(port.describe(after))")
            #expect(after.snapshot["tck0"]?.deviceAuth == nil)
        }
        let ms = latencies.map { $0 * 1000 }
        print("wpa_supplicant SIGKILL → segguardd decision unauthorized (log line), \(ms.count) runs: \(ms.map { String(format: "%.1f", $0) }.joined(separator: ", ")) ms; max \(String(format: "%.1f", ms.max()!)) ms")
        #expect(latencies.allSatisfy { $0 < 1 }, "latencies (ms): \(ms)")
    }

    @Test("EAPOL-Logoff (wpa_cli logoff): segguardd's decision is unauthorized")
    func logoff() throws {
        let port = try CableMovePort(client: "tcl0", clientIndex: 4984, peer: "gwl0", peerIndex: 4985) { _ in cableMovePolicy("tcl*") }
        defer { port.cleanup() }
        try port.startSupplicant()
        _ = try port.status("authorized") { $0.decision.segment == .authorizedWired }
        var log = LogFollower(port.daemon.log.path)
        let t0 = monotonicSeconds()
        let out = try runCommand(["/usr/sbin/wpa_cli", "-p", port.lab.controlDirectory, "-i", "tcl0", "logoff"])
        #expect(out.contains("OK"))
        let off = try port.status("unauthorized after EAPOL-Logoff", seconds: 5) { $0.decision.segment == .unauthorized }
        let logged = log.wait(for: ["segment decision changed", "decision=unauthorized"], seconds: 1)
        #expect(off.decision.reason.contains("802.1X device authentication is not complete"), "\(port.describe(off))")
        #expect(off.snapshot["tcl0"]?.deviceAuth?.paeState == "LOGOFF", "\(port.describe(off))")
        if let logged { print("wpa_cli logoff → segguardd decision unauthorized after \(String(format: "%.1f", (logged.at - t0) * 1000)) ms (including wpa_cli's own run)") }
        // It stays so: segguardd does not log the port back on by itself.
        Thread.sleep(forTimeInterval: 1)
        let later = try #require(port.statusNow())
        #expect(later.decision.segment == .unauthorized, "\(port.describe(later))")
    }

    @Test("rogue authenticator (another CA), supplicant without ca_cert: EAP succeeds but server_ca_sha256 refuses it, naming the server certificate; the honest server with the same policy authorizes")
    func rogueServer() throws {
        let pin = { (lab: EAPLab) throws -> String in cableMovePolicy("tcr*", extra: ["server_ca_sha256: [\(try lab.certificateSHA256("ca"))]"]) }
        let port = try CableMovePort(client: "tcr0", clientIndex: 4990, peer: "gwr0", peerIndex: 4991, serverCertificate: "rogue-server", policy: pin)
        defer { port.cleanup() }
        try port.startSupplicant(config: "client-noca")
        let rogue = try port.status("rogue server: EAP success seen, decision unauthorized") {
            $0.snapshot["tcr0"]?.deviceAuth?.isComplete == true && $0.snapshot["tcr0"]?.deviceAuth?.serverChain.isEmpty == false
        }
        #expect(rogue.decision.segment == .unauthorized)
        let leaf = try port.lab.certificateSHA256("rogue-server")
        #expect(rogue.decision.reason.hasPrefix("no authorized path: tcr0 matches site 'hq' wired rule (\(port.policyLine)) but the 802.1X server's certificate (subject '/CN=rogue-server', SHA-256 \(leaf.prefix(16))…) was not issued under a pinned CA (server_ca_sha256)"),
                "\(port.describe(rogue))")
        print("rogue server, pinned CA: \(rogue.decision.reason)")
        // It stays refused.
        Thread.sleep(forTimeInterval: 1)
        #expect(port.statusNow()?.decision.segment == .unauthorized)

        // The honest server (the pinned CA's), the supplicant still without ca_cert: the
        // decision follows the chain the supplicant reports.
        port.lab.stopSupplicant("tcr0")
        _ = try port.status("supplicant gone") { $0.snapshot["tcr0"]?.deviceAuth == nil }
        port.lab.stopAuthenticator()
        try port.lab.startAuthenticator(in: port.daemon.ns, interface: "gwr0", serverCertificate: "server")
        try port.startSupplicant(config: "client-noca")
        let noCA = try port.status("honest server, supplicant without ca_cert: EAP success seen") {
            $0.snapshot["tcr0"]?.deviceAuth?.isComplete == true && $0.snapshot["tcr0"]?.deviceAuth?.serverChain.isEmpty == false
        }
        Thread.sleep(forTimeInterval: 0.5)
        let noCAAfter = try #require(port.statusNow())
        print("honest server, supplicant without ca_cert, pinned CA: \(port.describe(noCAAfter)); chain \(noCA.snapshot["tcr0"]?.deviceAuth?.serverChain.map { "\($0.depth) \($0.subject) \($0.sha256?.prefix(16) ?? "-")" } ?? [])")

        // The honest server, the supplicant configured with the pinned CA.
        port.lab.stopSupplicant("tcr0")
        _ = try port.status("supplicant gone") { $0.snapshot["tcr0"]?.deviceAuth == nil }
        try port.startSupplicant(config: "client")
        let honest = try port.status("honest server with the pinned CA: authorized") { $0.decision.segment == .authorizedWired }
        let chain = honest.snapshot["tcr0"]?.deviceAuth?.serverChain ?? []
        #expect(chain.first?.subject == "/CN=server")
        #expect(chain.contains { $0.depth == 1 && $0.sha256 == (try? port.lab.certificateSHA256("ca")) })
    }

    @Test("another thin client's device certificate (the office CA's, clientAuth only) as the server's, supplicant without ca_cert: EAP succeeds, server_ca_sha256 refuses it")
    func deviceCertificateAsServer() throws {
        let pin = { (lab: EAPLab) throws -> String in cableMovePolicy("tcd*", extra: ["server_ca_sha256: [\(try lab.certificateSHA256("ca"))]"]) }
        let port = try CableMovePort(client: "tcd0", clientIndex: 4996, peer: "gwd0", peerIndex: 4997, serverCertificate: "other-device", policy: pin)
        defer { port.cleanup() }
        try port.startSupplicant(config: "client-noca")
        let seen = try port.status("device certificate as server: EAP success seen") {
            $0.snapshot["tcd0"]?.deviceAuth?.isComplete == true && $0.snapshot["tcd0"]?.deviceAuth?.serverChain.isEmpty == false
        }
        Thread.sleep(forTimeInterval: 0.5)
        let s = try #require(port.statusNow())
        let chain = seen.snapshot["tcd0"]?.deviceAuth?.serverChain ?? []
        print("device certificate as server, pinned CA: \(port.describe(s))")
        // The chain itself is genuine: signed by the pinned CA, inside its validity.
        #expect(chain.first?.subject == "/CN=tc-0999")
        #expect(chain.first?.signedByNext == true)
        #expect(chain.first?.validWhenSeen == true)
        #expect(chain.first?.serverAuth == false)
        #expect(s.decision.segment == .unauthorized, "\(port.describe(s))")
        #expect(s.decision.reason.contains("is not meant for a TLS server (its extendedKeyUsage lacks serverAuth"), "\(s.decision.reason)")
    }

    @Test("forged chain: a rogue server signed by its own CA named like the office CA sends the office CA's certificate along; supplicant without ca_cert; server_ca_sha256 must not be satisfied")
    func forgedChain() throws {
        let pin = { (lab: EAPLab) throws -> String in
            // The rogue's CA has the office CA's name (any name is free to choose) and its own
            // key; its server certificate file carries the office CA's certificate (public)
            // as the chain hostapd sends.
            try runCommand(["sh", "-c", """
                cd '\(lab.path)' && {
                openssl req -x509 -newkey rsa:2048 -nodes -keyout fakeca.key -out fakeca.pem -days 2 -subj /CN=segguard-test-ca &&
                openssl req -newkey rsa:2048 -nodes -keyout forged-server.key -out forged-server.csr -subj /CN=forged-server &&
                openssl x509 -req -in forged-server.csr -CA fakeca.pem -CAkey fakeca.key -CAcreateserial -out forged-leaf.pem -days 2 &&
                cat forged-leaf.pem ca.pem > forged-server.pem ; } </dev/null >>forge.log 2>&1
                """])
            return cableMovePolicy("tcf*", extra: ["server_ca_sha256: [\(try lab.certificateSHA256("ca"))]"])
        }
        let port = try CableMovePort(client: "tcf0", clientIndex: 4994, peer: "gwf0", peerIndex: 4995, serverCertificate: "forged-server", policy: pin)
        defer { port.cleanup() }
        try port.startSupplicant(config: "client-noca")
        let seen = try port.status("forged chain: EAP success seen") {
            $0.snapshot["tcf0"]?.deviceAuth?.isComplete == true && $0.snapshot["tcf0"]?.deviceAuth?.serverChain.isEmpty == false
        }
        Thread.sleep(forTimeInterval: 0.5)
        let s = try #require(port.statusNow())
        let chain = seen.snapshot["tcf0"]?.deviceAuth?.serverChain ?? []
        print("forged chain, pinned CA: \(port.describe(s)); chain \(chain.map { "\($0.depth) \($0.subject) \($0.sha256?.prefix(16) ?? "-")" })")
        // The scenario: wpa_supplicant (no ca_cert, so no signature is checked) reports the
        // office CA's certificate above the rogue's, by its real hash.
        #expect(chain.first?.subject == "/CN=forged-server")
        #expect(chain.contains { $0.depth == 1 && $0.sha256 == (try? port.lab.certificateSHA256("ca")) })
        // segguardd checks the signatures itself (the DER wpa_supplicant reports): the rogue's
        // certificate does not verify with the office CA's key.
        #expect(s.decision.segment == .unauthorized, "\(port.describe(s))")
        #expect(s.decision.reason.contains("but the chain's signatures do not lead to it"), "\(s.decision.reason)")
        #expect(chain.first?.signedByNext == false)
    }
}
