// Real 802.1X on the real kernel: hostapd (driver=wired, internal EAP server, a CA made by the
// test) on one end of a veth pair and wpa_supplicant -Dwired on the other, in a network
// namespace; segguardd reads the supplicant through its control socket or its D-Bus API (a
// private dbus-daemon) and decides on a `device_auth: eap-tls` wired rule.

import Foundation
import SegguardPolicy
import SegguardTestSupport
import SegguardWire
import Testing

#if canImport(Glibc)
import Glibc
#endif

let eapPolicy = """
    schema_version: 1
    name: eap-test
    sites:
      - name: hq
        wired:
          - interfaces: ["tcx*"]
            link_kinds: [veth]
            device_auth: eap-tls
    vdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}
    """

/// segguardd in a namespace with an 802.1X port: tcx0 (thin client) — gwx0 (hostapd).
final class EAPPort {
    let lab: EAPLab
    let daemon: RunningDaemon
    let dbus: Bool

    init(dbus: Bool) throws {
        let lab = try EAPLab()
        self.lab = lab
        self.dbus = dbus
        do {
            if dbus { try lab.startBus() }
            let args = dbus ? ["--device-auth-source", "dbus", "--wpa-dbus-address", lab.busAddress]
                            : ["--wpa-control-dir", lab.controlDirectory]
            daemon = try RunningDaemon(policy: eapPolicy, arguments: args) { ns in
                try ns.addVeth("tcx0", index: 3981, peer: "gwx0", index: 3982)
                try lab.startAuthenticator(in: ns, interface: "gwx0")
            }
        } catch {
            lab.cleanup()
            throw error
        }
    }

    func startSupplicant(_ cert: EAPLab.Certificate = .client) throws {
        try lab.startSupplicant(in: daemon.ns, interface: "tcx0", certificate: cert, dbus: dbus)
    }

    /// The status once `predicate` holds (10 s), with the lab's logs in the failure message.
    func status(_ what: String, _ predicate: (StatusReply) -> Bool) throws -> StatusReply {
        if let s = try daemon.status(until: predicate) { return s }
        let last = try? daemon.status { _ in true }
        throw CommandError(description: "\(what): not reached; last decision: \(last.map { "\($0.decision.segment.rawValue): \($0.decision.reason)" } ?? "none")\n"
            + "control directory: \((try? FileManager.default.contentsOfDirectory(atPath: lab.controlDirectory)) ?? [])\n"
            + "processes: \((try? runCommand(["ps", "-o", "pid,stat,args", "-C", "wpa_supplicant,hostapd"])) ?? "")\n"
            + "segguardd:\n\((try? String(contentsOf: daemon.log, encoding: .utf8))?.suffix(2000) ?? "")\nwpa_supplicant:\n\(lab.log("wpa_supplicant").suffix(3000))")
    }

    func cleanup() {
        daemon.cleanup()
        lab.cleanup()
    }
}

@Suite("802.1X device authentication with real hostapd and wpa_supplicant", .serialized,
       .enabled(if: canCreateNamespaces && EAPLab.available,
                "needs root and \(EAPLab.programs.joined(separator: ", ")) (scripts/install-deps.sh installs them)"))
struct DeviceAuthTests {
    /// The whole life of a port, for either source.
    func portLifecycle(dbus: Bool) throws {
        let port = try EAPPort(dbus: dbus)
        defer { port.cleanup() }
        let policyLine = "\(port.daemon.policyFile.path):6"

        // Carrier, matching wired rule, but no supplicant yet: not authorized.
        let before = try port.status("no supplicant") { $0.decision.segment == .unauthorized && $0.decision.reason.contains("no 802.1X state") }
        #expect(before.decision.reason == "no authorized path: tcx0 matches site 'hq' wired rule (\(policyLine)) but no 802.1X state from wpa_supplicant")

        // EAP-TLS with the device certificate: authorized-wired, with method and identity.
        try port.startSupplicant(.client)
        let ok = try port.status("EAP-TLS success") { $0.decision.segment == .authorizedWired }
        let auth = try #require(ok.snapshot["tcx0"]?.deviceAuth)
        #expect(auth.eapMethod == "TLS" && auth.portStatus == .authorized && auth.identity == EAPLab.identity)
        #expect(auth.since != nil)
        let (rc, text, _) = try port.daemon.ctl(["status", "--socket", port.daemon.socket])
        #expect(rc == 0)
        #expect(text.contains("802.1X: port authorized (EAP-TLS, EAP state SUCCESS, IEEE 802.1X"), "\(text)")
        #expect(text.contains("identity \(EAPLab.identity), since "), "\(text)")

        // The switch re-authenticates the port: the decision does not move (no flap, no event).
        let changes = ok.decisionChanges
        try port.lab.reauthenticate()
        Thread.sleep(forTimeInterval: 0.5)
        let still = try port.status("after re-authentication") { _ in true }
        #expect(still.decision.segment == .authorizedWired)
        #expect(still.decisionChanges == changes, "a successful re-authentication must not change the decision")
        #expect(still.snapshot["tcx0"]?.deviceAuth?.since == auth.since)

        // The device certificate is revoked and the switch re-authenticates: EAP fails, the
        // port is unauthorized, the decision follows from the failure event.
        try port.lab.revokeDeviceCertificate()
        Thread.sleep(forTimeInterval: 1.2) // hostapd's crl_reload_interval=1
        try port.lab.reauthenticate()
        let refused = try port.status("EAP failure after revocation") { $0.decision.segment == .unauthorized }
        #expect(refused.decision.reason == "no authorized path: tcx0 matches site 'hq' wired rule (\(policyLine)) but 802.1X device authentication is not complete (EAP state FAILURE, port unauthorized)")

        // The supplicant goes away: no 802.1X state at all. Over the control socket it stops
        // cleanly (CTRL-EVENT-TERMINATING); over D-Bus it is killed, as in a crash, and its
        // name leaving the bus (NameOwnerChanged) is the event.
        if port.dbus { port.lab.killSupplicant() } else { port.lab.stopSupplicant("tcx0") }
        let gone = try port.status("supplicant gone") { $0.decision.reason.contains("no 802.1X state") }
        #expect(gone.decision.segment == .unauthorized)
        #expect(gone.snapshot["tcx0"]?.deviceAuth == nil)

        // A certificate from another CA: EAP fails at the first authentication.
        try port.startSupplicant(.rogue)
        Thread.sleep(forTimeInterval: 1.5)
        let rogue = try port.status("foreign certificate") { $0.decision.segment == .unauthorized }
        #expect(rogue.snapshot["tcx0"]?.deviceAuth?.portStatus != .authorized)
        #expect(port.lab.log("wpa_supplicant").contains("CTRL-EVENT-EAP-FAILURE") || rogue.snapshot["tcx0"]?.deviceAuth?.eapState != "SUCCESS")
    }

    @Test("control socket: EAP-TLS authorizes the port; re-authentication keeps it; revocation, a foreign CA or no supplicant do not")
    func controlSocket() throws {
        try portLifecycle(dbus: false)
    }

    @Test("D-Bus (private dbus-daemon): the same life of the port through fi.w1.wpa_supplicant1, and a supplicant crash")
    func dbus() throws {
        try portLifecycle(dbus: true)
    }
}
