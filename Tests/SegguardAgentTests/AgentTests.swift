// The agent's behaviour without a kernel: every input is a job on its loop, decisions are
// enforced in order, and the fail-closed, grace, repair and policy paths do what the docs say.

import Foundation
import SegguardAgent
import SegguardCapture
import SegguardDecision
import SegguardDeviceAuth
import SegguardEnforce
import SegguardPKI
import SegguardPolicy
import SegguardReport
import SegguardSystem
import SegguardTestFakes
import SegguardWire
import Testing

@Suite("Agent: decide, then enforce")
struct AgentDecisionTests {
    @Test("the drop-all baseline is in force before the first decision; READY=1 comes with the first decision, after its table")
    func startsClosed() throws {
        let h = try AgentHarness()
        defer { h.close() }
        #expect(h.binding.accepted.map(\.allowed) == [[]], "only the baseline before any snapshot")
        #expect(h.observer.notes.isEmpty)
        #expect(h.status.decision.reason == "no network snapshot yet (netlink dump in progress)")

        h.send([AgentHarness.desk])
        #expect(h.binding.accepted.last?.allowed == ["eth0"])
        #expect(h.observer.notes == [.ready("authorized-wired via eth0")])
        #expect(h.status.decision.segment == .authorizedWired)
        #expect(h.events == ["binding-applied"])
        let gateways = [Gateway(prefix: IPPrefix("192.0.2.10")!, ports: [443])]
        #expect(FileManager.default.contents(atPath: h.baselineFile) == NftablesRuleset.baseline(table: "segguard", gateways: gateways))
    }

    @Test("each decision change is enforced before the next is made; the same decision twice costs no transaction")
    func ordered() throws {
        let h = try AgentHarness()
        defer { h.close() }
        h.send([AgentHarness.desk])
        h.send([AgentHarness.deskUnplugged])
        h.send([AgentHarness.deskUnplugged])  // no change: nothing applied
        h.send([AgentHarness.desk, AgentHarness.tether])
        h.send([AgentHarness.desk])
        #expect(h.binding.accepted.map(\.allowed) == [[], ["eth0"], [], ["eth0"]])
        // The tether changes the reason (a change) but not the table (already drop-all).
        #expect(h.observer.changes.map(\.current.segment) == [.authorizedWired, .unauthorized, .unauthorized, .authorizedWired])
        #expect(h.reporter.events.contains { $0.kind == "decision-changed" && $0.reason.hasPrefix("usb0 (virtual rndis) is a second uplink") })
        #expect(h.reporter.events.filter { $0.kind == "decision-changed" }.count == 4)
    }

    @Test("a Wi-Fi roam and a cable/Wi-Fi switch keep the table's interfaces in step")
    func roam() throws {
        let h = try AgentHarness()
        defer { h.close() }
        h.send([AgentHarness.wifi(AgentHarness.ap1)])
        h.send([AgentHarness.wifi(AgentHarness.ap2)])
        h.send([AgentHarness.desk, AgentHarness.wifi(AgentHarness.ap2)])
        #expect(h.binding.accepted.map(\.allowed) == [[], ["wlan0"], ["eth0", "wlan0"]], "a roam between two office APs changes nothing")
        #expect(h.status.decision.segment == .authorizedWired)
    }

    @Test("802.1X state from the device-auth source is merged into the snapshot it decides on")
    func deviceAuth() throws {
        let yaml = AgentHarness.policy().replacingOccurrences(of: "      - interfaces: [\"eth*\"]", with: "      - interfaces: [\"eth*\"]\n        device_auth: eap-tls")
        let h = try AgentHarness(policy: yaml)
        defer { h.close() }
        h.send([AgentHarness.desk])
        #expect(h.status.decision.segment == .unauthorized)
        h.auth.send(["eth0": AgentHarness.eapTLS()])
        h.agent.settle()
        #expect(h.status.decision.segment == .authorizedWired)
        #expect(h.status.snapshot["eth0"]?.deviceAuth?.identity == "tc-0001")
        h.auth.send([:])
        h.agent.settle()
        #expect(h.status.decision.segment == .unauthorized)
        #expect(h.binding.accepted.map(\.allowed) == [[], [], ["eth0"], []], "baseline, first decision (no 802.1X yet), EAP-TLS done, supplicant gone")
    }

    @Test("EAP-TLS counts only with this device's certificate: another key is refused naming both; an unreadable device certificate refuses every EAP-TLS rule")
    func deviceCertificate() throws {
        let yaml = AgentHarness.policy().replacingOccurrences(of: "      - interfaces: [\"eth*\"]", with: "      - interfaces: [\"eth*\"]\n        device_auth: eap-tls")
        let h = try AgentHarness(policy: yaml)
        defer { h.close() }
        h.send([AgentHarness.desk])
        let other = String(repeating: "ab", count: 32)
        h.auth.send(["eth0": AgentHarness.eapTLS(clientKeySHA256: other)])
        h.agent.settle()
        #expect(h.status.decision.segment == .unauthorized)
        #expect(h.status.decision.reason.contains("802.1X authenticated with subject 'CN=tc-0001' in /etc/wpa_supplicant/device.pem (key SHA-256 abababababababab…), not this device's certificate (key SHA-256 \(AgentHarness.deviceKeySHA256.prefix(16))…)"),
                "\(h.status.decision.reason)")
        // The supplicant's certificate could not be read.
        h.auth.send(["eth0": AgentHarness.eapTLS(clientKeySHA256: nil)])
        h.agent.settle()
        #expect(h.status.decision.reason.contains("the certificate wpa_supplicant authenticates with is not known"), "\(h.status.decision.reason)")
        h.auth.send(["eth0": AgentHarness.eapTLS(successes: 1)])
        h.agent.settle()
        #expect(h.status.decision.segment == .authorizedWired)
        #expect(h.status.snapshot["eth0"]?.deviceAuth?.deviceKeySHA256 == AgentHarness.deviceKeySHA256)
        // The device certificate goes away (re-read on reload): no EAP-TLS rule is met.
        try FileManager.default.removeItem(atPath: h.dir + "/device.pem")
        h.agent.reload()
        h.agent.settle()
        #expect(h.status.decision.segment == .unauthorized)
        #expect(h.status.decision.reason.contains("this device's certificate is not known (\(h.dir)/device.pem: open \(h.dir)/device.pem"), "\(h.status.decision.reason)")
    }
}

extension AgentDecisionTests {
    @Test("a renewed device certificate (new key, same file) keeps EAP-TLS authorized: the old key counts until the supplicant's state names the new one, then only the new one")
    func renewedDeviceCertificate() throws {
        let yaml = AgentHarness.policy().replacingOccurrences(of: "      - interfaces: [\"eth*\"]", with: "      - interfaces: [\"eth*\"]\n        device_auth: eap-tls")
        let h = try AgentHarness(policy: yaml)
        defer { h.close() }
        h.send([AgentHarness.desk])
        h.auth.send(["eth0": AgentHarness.eapTLS(successes: 1)])
        h.agent.settle()
        #expect(h.status.decision.segment == .authorizedWired)
        // The reporter renews: a new key and certificate in the same file.
        let renewed = try PKI.issueDevice(ca: try PKI.makeCA(commonName: "agent test CA"), agentID: "tc-0001", group: "mynumber")
        let newKey = try CertificateKey.keySHA256(renewed.certificate.publicKey)
        try renewed.certificatePEM.write(toFile: h.dir + "/device.pem", atomically: true, encoding: .utf8)
        h.agent.deviceCertificateRenewed()
        h.agent.settle()
        #expect(h.status.decision.segment == .authorizedWired, "the supplicant still names the old key: \(h.status.decision.reason)")
        #expect(h.binding.accepted.last?.allowed == ["eth0"])
        // The supplicant's next refresh reads the new file.
        h.auth.send(["eth0": AgentHarness.eapTLS(successes: 2, clientKeySHA256: newKey)])
        h.agent.settle()
        #expect(h.status.decision.segment == .authorizedWired)
        #expect(h.status.snapshot["eth0"]?.deviceAuth?.deviceKeySHA256 == newKey)
        // From then on the old key is no longer this device's.
        h.auth.send(["eth0": AgentHarness.eapTLS(successes: 3)])
        h.agent.settle()
        #expect(h.status.decision.segment == .unauthorized)
        #expect(h.status.decision.reason.contains("not this device's certificate"), "\(h.status.decision.reason)")
    }
}

@Suite("Agent: network identity")
struct AgentNetworkIdentityTests {
    static func authed(_ successes: UInt64) -> DeviceAuthState { AgentHarness.eapTLS(successes: successes) }

    @Test("a cable moved: the 802.1X success from before the carrier loss does not count; the port is re-authenticated when carrier returns; only a fresh success authorizes")
    func staleDeviceAuth() throws {
        let yaml = AgentHarness.policy().replacingOccurrences(of: "      - interfaces: [\"eth*\"]", with: "      - interfaces: [\"eth*\"]\n        device_auth: eap-tls")
        let h = try AgentHarness(policy: yaml)
        defer { h.close() }
        h.send([AgentHarness.desk])
        h.auth.send(["eth0": Self.authed(1)])
        h.agent.settle()
        #expect(h.status.decision.segment == .authorizedWired)
        // Unplugged: the supplicant (-Dwired) says nothing; its state stays "authorized".
        h.send([AgentHarness.deskUnplugged])
        #expect(h.status.decision.segment == .unauthorized)
        #expect(h.auth.reauthenticated == [])
        // Plugged into another LAN: carrier is back, the old success must not count.
        h.send([AgentHarness.desk])
        #expect(h.status.decision.segment == .unauthorized)
        #expect(h.status.decision.reason.contains("the 802.1X authentication is from before the link lost carrier"), "\(h.status.decision.reason)")
        #expect(h.auth.reauthenticated == ["eth0"], "asked for a fresh authentication when carrier came back")
        // The same state re-published (a STATUS re-read) is still stale.
        h.auth.send(["eth0": Self.authed(1)])
        h.agent.settle()
        #expect(h.status.decision.segment == .unauthorized)
        // A fresh EAP success (back at the office port): authorized again.
        h.auth.send(["eth0": Self.authed(2)])
        h.agent.settle()
        #expect(h.status.decision.segment == .authorizedWired)
        // The same port name with another ifindex (a USB NIC re-plugged) is a new link too.
        h.send([FakeInterfaces.wired("eth0", index: 12)])
        #expect(h.status.decision.segment == .unauthorized)
        // A supplicant restarted (its count begins again) authenticates on the link as it is.
        h.auth.send([:])
        h.agent.settle()
        h.auth.send(["eth0": Self.authed(1)])
        h.agent.settle()
        #expect(h.status.decision.segment == .authorizedWired)
    }

    static let probedPolicy = AgentHarness.policy().replacingOccurrences(of: "      - interfaces: [\"eth*\"]", with: """
              - interfaces: ["eth*"]
                trusted_server: {address: 10.20.0.5, port: 443, spki_sha256: ["\(String(repeating: "ab", count: 32))"]}
        """)

    static func desk(index: Int32 = 2, carrier: Bool = true, address: String = "10.20.3.4", gatewayMAC: String = "02:00:5e:00:aa:01") -> InterfaceState {
        var i = FakeInterfaces.wired("eth0", index: index, carrier: carrier)
        i.addresses = [InterfaceAddress(address: IPAddress(address)!, prefixLength: 16)]
        i.defaultRoutes = [DefaultRoute(family: .ipv4, gateway: IPAddress("10.20.0.1"))]
        i.neighbours = [Neighbour(address: IPAddress("10.20.0.1")!, mac: MACAddress(gatewayMAC)!)]
        return i
    }

    @Test("trusted server: unauthorized until proven through the port; the proof lasts while the network stays; a new gateway MAC or a carrier loss drops it and probes again")
    func trustedServerProbes() throws {
        let h = try AgentHarness(policy: Self.probedPolicy)
        defer { h.close() }
        h.send([Self.desk()])
        #expect(h.status.decision.segment == .unauthorized)
        #expect(h.status.decision.reason.contains("the trusted server 10.20.0.5:443 has not been proven through eth0 yet"))
        #expect(h.prober.asked.map(\.interfaceName) == ["eth0"])
        #expect(h.prober.asked.first?.interfaceIndex == 2)
        h.prober.finishNext(proven: true, detail: "key ab…")
        h.agent.settle()
        #expect(h.status.decision.segment == .authorizedWired)
        // The same network again: no new probe, still authorized.
        h.send([Self.desk()])
        #expect(h.prober.asked.isEmpty)
        #expect(h.status.decision.segment == .authorizedWired)
        // Another router answers for the gateway (MAC changed): the proof is gone at once.
        h.send([Self.desk(gatewayMAC: "02:00:5e:00:bb:01")])
        #expect(h.status.decision.segment == .unauthorized)
        #expect(h.prober.asked.count == 1)
        h.prober.finishNext(proven: false, detail: "the server's key SHA-256 cd… is not pinned")
        h.agent.settle()
        #expect(h.status.decision.reason.contains("was not proven: the server's key SHA-256 cd… is not pinned"), "\(h.status.decision.reason)")
        // Refused: retried after 2 s while the network stays the same.
        h.advance(2.1)
        #expect(h.prober.asked.count == 1)
        h.prober.finishNext(proven: false)
        h.agent.settle()
        // Back at the office, proven; then the carrier drops and returns: the proof does not survive it.
        h.send([Self.desk()])
        h.prober.finishNext(proven: true)
        h.agent.settle()
        #expect(h.status.decision.segment == .authorizedWired)
        h.send([Self.desk(carrier: false)])
        h.send([Self.desk()])
        #expect(h.status.decision.segment == .unauthorized)
        #expect(h.prober.asked.count == 1, "probed again for the new link epoch")
        // A proof lasts a minute: then it is made again, and a refusal ends it.
        h.prober.finishNext(proven: true)
        h.agent.settle()
        #expect(h.status.decision.segment == .authorizedWired)
        h.advance(60.1)  // AgentCore.proofLifetime
        #expect(h.prober.asked.count == 1, "re-proven after its lifetime")
        #expect(h.status.decision.segment == .authorizedWired, "the proof stands while the new probe runs")
        h.prober.finishNext(proven: false, detail: "timed out")
        h.agent.settle()
        #expect(h.status.decision.segment == .unauthorized)
        // A carrier flap no snapshot showed (the kernel's carrier-change count moved): a new link epoch.
        h.advance(2.1)
        h.prober.finishNext(proven: true)
        h.agent.settle()
        var counted = Self.desk()
        counted.carrierChanges = 4
        h.send([counted])
        h.prober.finishNext(proven: true)
        h.agent.settle()
        #expect(h.status.decision.segment == .authorizedWired)
        counted.carrierChanges = 6
        h.send([counted])
        #expect(h.status.decision.segment == .unauthorized, "the proof does not survive an unseen flap")
        // A late answer (the probe for the flapped link) for a network that is gone changes nothing.
        h.send([Self.desk(address: "10.20.9.9")])
        h.prober.finishNext(proven: true)
        h.agent.settle()
        #expect(h.status.decision.segment == .unauthorized)
    }
}

@Suite("Agent: fail closed")
struct AgentFailClosedTests {
    @Test("nftables refuses the transaction: the drop-all baseline is loaded, binding-failed names both, the repair tick retries")
    func refusedTransaction() throws {
        let h = try AgentHarness()
        defer { h.close() }
        h.binding.refuse { !$0.allowed.isEmpty }
        h.send([AgentHarness.desk])
        // Baseline; the rules update refused; the whole table refused; the baseline again.
        #expect(h.binding.applied.map(\.allowed) == [[], ["eth0"], ["eth0"], []])
        #expect(h.binding.applied.map(\.accepted) == [true, false, false, true])
        let failed = try #require(h.denials.last)
        #expect(failed.kind == "binding-failed")
        #expect(failed.reason == "nftables: cannot apply the transaction to table inet segguard: Error: Could not process rule: No buffer space available (fake); "
            + "the drop-all baseline is in force (no interface may reach the VDI gateways); retrying every 5 s")
        #expect(h.reporter.events.last { $0.kind == "binding-failed" }?.severity == "critical")

        // Still refused at the next tick: retried, baseline again.
        h.advance(5)
        #expect(h.binding.applied.count == 6)
        h.binding.refuse(nil)
        h.advance(5)
        #expect(h.binding.accepted.last?.allowed == ["eth0"])
        #expect(h.events.last == "binding-applied")
        let before = h.binding.applied.count
        h.advance(5)
        #expect(h.binding.applied.count == before, "nothing to repair: no transaction")
    }

    @Test("the baseline refused as well: the event says the previous table stays in force")
    func baselineRefusedToo() throws {
        let h = try AgentHarness()
        defer { h.close() }
        h.binding.refuse { _ in true }
        h.send([AgentHarness.desk])
        #expect(h.denials.last?.reason.contains("the drop-all baseline was refused too (nftables: cannot apply the transaction to table inet segguard") == true)
        #expect(h.denials.last?.reason.hasSuffix("the previous table stays in force; retrying every 5 s") == true)
    }

    @Test("a source that fails for good stops the agent with the reason")
    func sourceFails() async throws {
        let h = try AgentHarness()
        defer { h.close() }
        h.network.fail("rtnetlink: recv: Bad file descriptor")
        await #expect(throws: AgentError.self) { try await h.agent.waitUntilStopped() }
    }

    @Test("a network source that cannot start: start throws, nothing keeps running")
    func cannotStart() throws {
        let network = FakeNetworkSource()
        network.startError.withLock { $0 = "nl_connect: Permission denied" }
        let dir = NSTemporaryDirectory() + "sg-agent-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try AgentHarness.policy().write(toFile: dir + "/p.yaml", atomically: true, encoding: .utf8)
        let agent = Agent(policy: try Agent.loadPolicy(file: dir + "/p.yaml"), configuration: AgentConfiguration(policyFile: dir + "/p.yaml"),
                          sources: AgentSources(network: network), logger: .init(label: "t"))
        #expect(throws: FakeError.self) { try agent.start() }
        #expect(!agent.loop.isRunning)
    }
}

@Suite("Agent: grace and session termination")
struct AgentGraceTests {
    func launch(_ h: AgentHarness, _ profile: String = "mynumber") -> LaunchReply {
        h.ask(.launch, profile: profile, peer: AgentHarness.user).launch!
    }

    @Test("a user may run at most 4 My Number sessions at once (each holds a cgroup and a descriptor); root is not limited")
    func sessionCapPerUser() throws {
        let h = try AgentHarness()
        defer { h.close() }
        h.send([AgentHarness.desk])
        for _ in 0..<4 { #expect(launch(h).allowed) }
        let fifth = launch(h)
        #expect(!fifth.allowed)
        #expect(fifth.reason == "uid 1000 already has 4 My Number sessions (at most 4 per user)")
        #expect(h.denials.last?.kind == "launch-refused" && h.denials.last?.uid == 1000)
        #expect(h.ask(.launch, profile: "mynumber", peer: AgentHarness.root).launch?.allowed == true)
        #expect(h.ask(.launch, profile: "lgwan", clientCommand: ["/usr/bin/remmina"], peer: AgentHarness.user).launch?.allowed == true, "LGWAN sessions are not tracked")
    }

    @Test("segment lost: the table closes at once, sessions end when the grace expires, counted from the network event")
    func graceExpiry() throws {
        let h = try AgentHarness(policy: AgentHarness.policy(grace: 30))
        defer { h.close() }
        h.send([AgentHarness.desk])
        #expect(launch(h).allowed)
        _ = launch(h, "lgwan")
        #expect(h.sessions.sessions().count == 1, "an LGWAN launch is not tracked")

        h.send([AgentHarness.deskUnplugged])
        #expect(h.binding.accepted.last?.allowed == [], "blocked at once")
        h.advance(29.9)
        #expect(h.sessions.terminations.isEmpty)
        h.advance(0.1)
        #expect(h.sessions.terminations == [[1]])
        let ended = try #require(h.denials.last)
        #expect(ended.kind == "sessions-ended")
        #expect(ended.sessions.map(\.id) == [1])
        #expect(ended.reason == "no authorized path: eth0 matches site 'hq' wired rule (\(h.policyFile):10) but has no carrier")
        // Once per unauthorized spell.
        h.advance(60)
        #expect(h.sessions.terminations.count == 1)
    }

    @Test("a roam between office access points inside the grace keeps the session")
    func roamKeeps() throws {
        let h = try AgentHarness(policy: AgentHarness.policy(grace: 10))
        defer { h.close() }
        h.send([AgentHarness.wifi(AgentHarness.ap1)])
        #expect(launch(h).allowed)
        h.send([AgentHarness.wifi(nil)])  // disconnected from AP1
        #expect(h.binding.accepted.last?.allowed == [])
        h.advance(3)
        h.send([AgentHarness.wifi(AgentHarness.ap2)])  // associated to AP2
        #expect(h.binding.accepted.last?.allowed == ["wlan0"])
        h.advance(30)
        #expect(h.sessions.terminations.isEmpty)
        #expect(h.sessions.sessions().count == 1)
        #expect(!h.events.contains("sessions-ended"))
    }

    @Test("the user told that the VDI will close is told that it stays when the network returns in time, at every spell; after an expiry they are told it closed, not that it stays; other users are told nothing")
    func countdownNotices() throws {
        let h = try AgentHarness(policy: AgentHarness.policy(grace: 10))
        defer { h.close() }
        func told(_ peer: PeerCredentials = AgentHarness.user) -> [UserNotice] {
            h.agent.reply(to: ControlRequest(command: .notices, since: 0), peer: peer).notices?.entries.map(\.notice) ?? []
        }
        h.send([AgentHarness.wifi(AgentHarness.ap1)])
        #expect(launch(h).allowed)
        h.send([AgentHarness.wifi(nil)])
        h.advance(3)
        h.send([AgentHarness.wifi(AgentHarness.ap2)])
        h.agent.settle()
        #expect(told() == [.sessionEndingSoon, .sessionKept])
        // A second spell soon after is told again, and its return too.
        h.send([AgentHarness.wifi(nil)])
        h.advance(2)
        h.send([AgentHarness.wifi(AgentHarness.ap1)])
        h.agent.settle()
        #expect(told() == [.sessionEndingSoon, .sessionKept, .sessionEndingSoon, .sessionKept])
        // A spell that runs out: closed, and the network's later return says nothing more.
        h.send([AgentHarness.wifi(nil)])
        h.advance(10)
        h.agent.settle()
        h.send([AgentHarness.wifi(AgentHarness.ap1)])
        h.agent.settle()
        #expect(told() == [.sessionEndingSoon, .sessionKept, .sessionEndingSoon, .sessionKept, .sessionEndingSoon, .sessionEnded])
        #expect(told(PeerCredentials(pid: 1, uid: 1001, gid: 1001, groups: [])).isEmpty)
    }

    @Test("a cable-to-Wi-Fi switch inside the grace keeps the session; a later loss starts a new grace")
    func switchKeeps() throws {
        let h = try AgentHarness(policy: AgentHarness.policy(grace: 5))
        defer { h.close() }
        h.send([AgentHarness.desk, AgentHarness.wifi(nil)])
        #expect(launch(h).allowed)
        h.send([AgentHarness.deskUnplugged, AgentHarness.wifi(nil)])
        h.advance(2)
        h.send([AgentHarness.deskUnplugged, AgentHarness.wifi(AgentHarness.ap1)])
        h.advance(10)
        #expect(h.sessions.terminations.isEmpty)
        h.send([AgentHarness.deskUnplugged, AgentHarness.wifi(nil)])
        h.advance(4.9)
        #expect(h.sessions.terminations.isEmpty)
        h.advance(0.1)
        #expect(h.sessions.terminations == [[1]])
    }

    @Test("a second uplink is the segment lost too; audit mode only says what it would have ended")
    func auditTermination() throws {
        let h = try AgentHarness(policy: AgentHarness.policy(termination: "audit", grace: 0))
        defer { h.close() }
        h.send([AgentHarness.desk])
        #expect(launch(h).allowed)
        h.send([AgentHarness.desk, AgentHarness.tether])
        #expect(h.sessions.terminations.isEmpty)
        #expect(h.denials.last?.kind == "sessions-would-be-ended")
        #expect(h.denials.last?.reason.hasPrefix("usb0 (virtual rndis) is a second uplink") == true)
    }

    @Test("a session started while unauthorized (gate in audit mode) gets a grace of its own, also after the spell's grace ran out")
    func lateSessionEnded() throws {
        let h = try AgentHarness(policy: AgentHarness.policy(gate: "audit", grace: 5))
        defer { h.close() }
        h.send([AgentHarness.deskUnplugged])
        #expect(launch(h).allowed)
        #expect(h.events.suffix(2) == ["launch-would-be-refused", "launch-allowed"])
        h.advance(5)
        #expect(h.sessions.terminations == [[1]])
        #expect(launch(h).allowed)
        h.advance(4)
        #expect(h.sessions.terminations.count == 1)
        h.advance(1)
        #expect(h.sessions.terminations == [[1], [2]])
    }

    @Test("sessions adopted from an earlier run are ended too; processes that do not die are said to be NOT reaped")
    func adoptedAndStubborn() throws {
        let h = try AgentHarness(policy: AgentHarness.policy(grace: 0))
        defer { h.close() }
        h.sessions.adopt()
        h.sessions.makeStubborn()
        h.send([AgentHarness.deskUnplugged])
        let ended = try #require(h.denials.last)
        #expect(ended.kind == "sessions-ended")
        #expect(ended.reason.hasSuffix("(SIGKILL after 1.0 s); NOT reaped: sessions 1"))
    }
}

@Suite("Agent: repair and policy order")
struct AgentOrderTests {
    @Test("the repair tick puts back the table for the decision in force, never an older one")
    func repairUsesNewestDecision() throws {
        let h = try AgentHarness()
        defer { h.close() }
        h.send([AgentHarness.desk])
        // The table vanishes, then the segment is lost; the repair runs after that decision.
        h.binding.loseTable()
        h.network.send([FakeInterfaces.loopback, AgentHarness.desk, AgentHarness.tether])
        h.agent.settle()
        h.binding.loseTable()
        h.advance(5)
        #expect(h.binding.accepted.map(\.allowed) == [[], ["eth0"], [], []], "the repair re-applied the drop table, not the allow table it had lost")
        #expect(h.binding.isTablePresent)

        // The repair tick and a newer decision due at the same moment, in one pass of the loop:
        // whichever runs first, no allow table follows the drop-all decision.
        h.send([AgentHarness.desk])
        h.binding.loseTable()
        let before = h.binding.accepted.count
        h.clock.advance(seconds: 5)
        h.network.send([FakeInterfaces.loopback, AgentHarness.deskUnplugged])
        h.agent.settle()
        let after = Array(h.binding.accepted.map(\.allowed)[before...])
        #expect(after.last == [])
        #expect(!(after.drop { $0 != [] }).contains(["eth0"]))
    }

    @Test("the repair tick replaces a table changed by hand (an accept inserted into the chain) with the decision in force")
    func repairTampered() throws {
        let h = try AgentHarness()
        defer { h.close() }
        h.send([AgentHarness.deskUnplugged])
        h.advance(0.1)  // the table is read back a moment after each transaction
        h.binding.insertRuleByHand()
        h.advance(5)
        let last = try #require(h.binding.accepted.last)
        #expect(!last.isRulesUpdate && last.allowed == [], "the whole table, drop-all")
        h.advance(0.1)
        let before = h.binding.accepted.count
        h.advance(5)
        #expect(h.binding.accepted.count == before, "intact now: nothing to repair")

        // A rule rewritten in place (its comment kept) and a dormant table are changes too.
        h.binding.replaceRuleByHand()
        h.advance(5)
        #expect(h.binding.accepted.count == before + 1)
        h.advance(0.1)
        h.binding.makeDormantByHand()
        h.advance(5)
        #expect(h.binding.accepted.count == before + 2)
        h.advance(0.1)
        h.advance(5)
        #expect(h.binding.accepted.count == before + 2)
    }

    @Test("a foreign change announced by nf_tables is undone at once (no tick), reported as binding-tampered naming the process; a burst makes one event a second")
    func tamperRestoredAtOnce() throws {
        let h = try AgentHarness(announcesChanges: true)
        defer { h.close() }
        h.send([AgentHarness.desk])
        let before = h.binding.accepted.count
        h.binding.insertRuleByHand()
        h.agent.settle()
        #expect(h.binding.accepted.count == before + 1, "restored without waiting for the repair tick")
        let restored = try #require(h.binding.accepted.last)
        #expect(!restored.isRulesUpdate && restored.allowed == ["eth0"], "the whole table for the decision in force")
        let event = try #require(h.denials.last)
        #expect(event.kind == "binding-tampered")
        #expect(event.reason == "table inet segguard changed by nft (pid 4242): the table for the decision in force was put back")
        #expect(event.exec?.pid == 4242 && event.exec?.path == "[nft]")
        #expect(event.latencyMs != nil)
        #expect(h.reporter.events.last?.kind == "binding-tampered" && h.reporter.events.last?.severity == "critical")

        // A process fighting the table: every change undone, one event a second.
        for _ in 0..<5 {
            h.binding.insertRuleByHand()
            h.agent.settle()
        }
        #expect(h.binding.accepted.count == before + 6)
        #expect(h.denials.filter { $0.kind == "binding-tampered" }.count == 1)
        h.advance(1)
        #expect(h.denials.filter { $0.kind == "binding-tampered" }.count == 2)
        #expect(h.denials.last?.reason.contains("changed by nft (pid 4242) (5 changes since the last report)") == true)

        // Lost notifications: the table is checked, not blindly replaced (intact: nothing to do).
        h.advance(0.1)
        let count = h.binding.accepted.count
        try #require(h.binding.feed).push(TableChanges(overflow: true))
        h.agent.settle()
        #expect(h.binding.accepted.count == count)
        h.binding.replaceRuleByHand(0, nil)  // unannounced, as if its notification were lost too
        try #require(h.binding.feed).push(TableChanges(overflow: true))
        h.agent.settle()
        #expect(h.binding.accepted.count == count + 1)
    }

    @Test("refused gateway packets (logged by the table) are gateway-refused events naming the uid, the interface and why; a flood from one uid is held back")
    func gatewayRefusedRecorded() throws {
        let h = try AgentHarness(logsRefusals: true)
        defer { h.close() }
        h.send([AgentHarness.desk])
        let feed = try #require(h.binding.refusals)
        feed.push([GatewayRefusal(uid: 1000, outInterfaceIndex: 2, destination: IPAddress("192.0.2.10"), transport: "tcp", port: 443)])
        h.agent.settle()
        let event = try #require(h.denials.last)
        #expect(event.kind == "gateway-refused" && event.uid == 1000)
        #expect(event.reason == """
            a process of uid 1000 sent to 192.0.2.10 tcp/443 via eth0: refused, not started through segguard-launch (not in a My Number \
            session); only sessions reach the VDI gateways
            """)
        #expect(h.reporter.events.last?.kind == "gateway-refused" && h.reporter.events.last?.severity == "warning")
        // An unlisted port, an unknown interface.
        feed.push([GatewayRefusal(uid: 1001, outInterfaceIndex: 99, destination: IPAddress("192.0.2.10"), transport: "udp", port: 53)])
        h.agent.settle()
        #expect(h.denials.last?.reason == "a process of uid 1001 sent to 192.0.2.10 udp/53 via ifindex 99: refused, the policy does not list this port for the gateway")
        // A user retrying in a loop: one event, the rest summed up when the minute ends.
        let before = h.denials.count
        feed.push(Array(repeating: GatewayRefusal(uid: 1002, outInterfaceIndex: 2, destination: IPAddress("192.0.2.10"), transport: "tcp", port: 443), count: 500))
        h.agent.settle()
        #expect(h.denials.count == before + 1)
        // Packets without a socket (no uid): held back the same way, under a key of their own.
        feed.push(Array(repeating: GatewayRefusal(uid: nil, outInterfaceIndex: 2, destination: IPAddress("192.0.2.10"), transport: "tcp", port: 443), count: 50))
        h.agent.settle()
        #expect(h.denials.count == before + 2)
        #expect(h.denials.last?.reason.hasPrefix("a packet without a local socket sent to 192.0.2.10 tcp/443 via eth0") == true)
        h.advance(61)
        #expect(h.denials.count == before + 4)
        let summed = Set(h.reporter.events.filter { $0.kind == "gateway-refused" }.compactMap { $0.details["repeated"] })
        #expect(summed == ["499", "49"])
    }

    @Test("the repair tick finds the table gone while authorized and puts the allow table back")
    func repairMissing() throws {
        let h = try AgentHarness()
        defer { h.close() }
        h.send([AgentHarness.desk])
        h.binding.loseTable()
        h.advance(5)
        #expect(h.binding.accepted.map(\.allowed) == [[], ["eth0"], ["eth0"]])
        #expect(h.binding.listings >= 1)
    }

    @Test("a SIGHUP reload and a bundle, in either order and racing from two threads: the bundle's policy is the one in force")
    func reloadAndBundle() async throws {
        let h = try AgentHarness()
        defer { h.close() }
        h.send([AgentHarness.desk])
        for version in 1...20 {
            let payload = PolicyBundlePayload(group: "mynumber", version: Int64(version), policyYAML: AgentHarness.policy(name: "bundle-\(version)"), createdAt: Date())
            async let reload: Void = Task.detached { h.agent.reload() }.value
            async let apply: Void = h.agent.apply(bundle: payload)
            _ = try await (reload, apply)
            h.agent.settle()
            #expect(h.status.policyName == "bundle-\(version)")
            #expect(h.status.policyFile == h.bundleFile)
        }
        // The local file is no longer read once a bundle is in force.
        try AgentHarness.policy(name: "local-edit").write(toFile: h.policyFile, atomically: true, encoding: .utf8)
        h.agent.reload()
        h.agent.settle()
        #expect(h.status.policyName == "bundle-20")
    }

    @Test("a bundle whose policy does not validate is refused with the reason; nothing is written, nothing changes")
    func badBundle() async throws {
        let h = try AgentHarness()
        defer { h.close() }
        let bad = PolicyBundlePayload(group: "mynumber", version: 1, policyYAML: "schema_version: 1\nname: x\nsites: 3\nvdi: {gateways: [{address: 192.0.2.10}]}\n", createdAt: Date())
        do {
            try await h.agent.apply(bundle: bad)
            Issue.record("an invalid bundle was applied")
        } catch {
            #expect("\(error)".hasPrefix("bundle v1:3:8: sites: expected a list, found a single value\n  hint: write a list as [a, b] or as '- a' lines"))
        }
        #expect(!FileManager.default.fileExists(atPath: h.bundleFile))
        #expect(h.status.policyName == "agent-test")
    }

    @Test("an invalid policy on reload is refused, the old one stays, status and the reporter say why; READY follows RELOADING either way")
    func badReload() throws {
        let h = try AgentHarness()
        defer { h.close() }
        h.send([AgentHarness.desk])
        try "schema_version: 1\nname: broken\nsites: 3\nvdi: {gateways: [{address: 192.0.2.10}]}\n".write(toFile: h.policyFile, atomically: true, encoding: .utf8)
        h.agent.reload()
        h.agent.settle()
        #expect(h.status.policyName == "agent-test")
        #expect(h.status.lastPolicyError?.hasPrefix("\(h.policyFile):3:8: sites: expected a list, found a single value") == true)
        #expect(h.reporter.events.last?.kind == "policy-refused")
        #expect(h.observer.notes.suffix(2) == [.reloading, .reloaded("authorized-wired via eth0")])

        try AgentHarness.policy(name: "fixed", binding: "audit").write(toFile: h.policyFile, atomically: true, encoding: .utf8)
        h.agent.reload()
        h.agent.settle()
        #expect(h.status.policyName == "fixed")
        #expect(h.status.lastPolicyError == nil)
        #expect(h.binding.accepted.last?.mode == "audit", "the new mode is applied at once")
        #expect(h.reporter.events.last { $0.kind == "policy-loaded" }?.details["policy_sha256"]?.count == 64)
    }
}

@Suite("Agent: control requests")
struct AgentControlTests {
    @Test("status and why: the decision, the policy, the snapshot and the pipeline timings")
    func status() throws {
        let h = try AgentHarness()
        defer { h.close() }
        h.send([AgentHarness.desk])
        let s = h.status
        #expect(s.daemonVersion == segguardVersion && s.pid == getpid())
        #expect(s.policyName == "agent-test" && s.policyFile == h.policyFile)
        #expect(s.decision.authorizedInterfaces == ["eth0"])
        #expect(s.snapshot.interfaces.map(\.name) == ["lo", "eth0"])
        #expect(s.netlinkMessages == 1)
        #expect(s.reporting?.agentID == "tc-test")
        let pipeline = try #require(s.pipeline)
        #expect(pipeline.samples == 1)
        #expect(pipeline.stages.map(\.name) == ["snapshot", "decided", "handed-to-kernel", "committed"])
        #expect(h.ask(.why).status == h.status)
        #expect(s.capture == nil, "capture off in this policy")
    }

    @Test("launch: the profile's command with its enforced arguments; a My Number session is tracked before the answer")
    func launchAllowed() throws {
        let h = try AgentHarness()
        defer { h.close() }
        h.send([AgentHarness.desk])
        let r = try #require(h.ask(.launch, profile: "mynumber", clientCommand: ["/bin/evil"], peer: AgentHarness.user).launch)
        #expect(r.allowed && r.sessionID == 1)
        #expect(r.command == ["/usr/bin/xfreerdp", "/v:192.0.2.10", "-clipboard"], "the profile's command wins over the launcher's")
        #expect(r.reason == "profile 'mynumber' (mynumber) may start: eth0 has carrier and matches site 'hq' wired rule (\(h.policyFile):10)")
        #expect(h.ask(.sessions).sessions?.map(\.pid) == [4242])
        let lgwan = try #require(h.ask(.launch, profile: "lgwan", clientCommand: ["/opt/Citrix/ICAClient/selfservice"], peer: AgentHarness.user).launch)
        #expect(lgwan.allowed && lgwan.sessionID == nil)
        #expect(lgwan.configFiles == [ConfigFileEdit(path: "~/.ICAClient/wfclient.ini", section: "WFClient", set: ["ClipboardAllowed": "Off"])])
        #expect(h.denials.isEmpty)
    }

    @Test("launch refusals: off-segment, unknown profile, a forged name, no command, untrackable; each an event of why-denied")
    func launchRefused() throws {
        let h = try AgentHarness()
        defer { h.close() }
        h.send([AgentHarness.deskUnplugged])
        func refusal(_ profile: String, _ command: [String]? = nil) -> String? {
            let r = h.ask(.launch, profile: profile, clientCommand: command, peer: AgentHarness.user).launch
            return r?.allowed == false ? r?.reason : nil
        }
        #expect(refusal("mynumber") == "profile 'mynumber' needs the My Number segment: no authorized path: eth0 matches site 'hq' wired rule (\(h.policyFile):10) but has no carrier")
        #expect(refusal("mynumbr") == "unknown profile 'mynumbr' (profiles in the policy: mynumber, lgwan)")
        #expect(refusal("x\nsegguardd: decision=authorized") == "'x?segguardd: decision=authorized' is not a profile name (letters, digits, - and _, at most 64)")
        #expect(refusal("lgwan") == "profile 'lgwan' has no command and none was given after --")
        #expect(h.ask(.launch, profile: "").error?.message == "launch: no profile named")
        let denials = h.denials
        #expect(denials.map(\.kind) == Array(repeating: "launch-refused", count: 4))
        #expect(denials.map(\.uid) == Array(repeating: 1000, count: 4))
        #expect(denials[2].profile == nil, "a name that is not a profile name is not recorded as one")

        let untracked = try AgentHarness(sessionControl: false)
        defer { untracked.close() }
        untracked.send([AgentHarness.desk])
        #expect(untracked.ask(.launch, profile: "mynumber", peer: AgentHarness.user).launch?.reason == "cannot track a My Number session: no cgroup v2 on this system")
        h.send([AgentHarness.desk])
        h.sessions.refuseRegistration("the launcher (pid 4242) exited while it was being tracked; nothing started")
        #expect(refusal("mynumber") == "cannot track the session: the launcher (pid 4242) exited while it was being tracked; nothing started")
    }

    @Test("in audit mode without cgroup v2 the would-be refusal is recorded before the launch is refused for want of tracking")
    func auditWithoutTracking() throws {
        let h = try AgentHarness(policy: AgentHarness.policy(gate: "audit"), sessionControl: false)
        defer { h.close() }
        h.send([AgentHarness.deskUnplugged])
        #expect(h.ask(.launch, profile: "mynumber", peer: AgentHarness.user).launch?.reason == "cannot track a My Number session: no cgroup v2 on this system")
        #expect(h.events.suffix(2) == ["launch-would-be-refused", "launch-refused"])
    }

    @Test("a request the loop cannot start in time is answered 'busy' and never runs; after stop the answer is 'stopping'")
    func busyAndStopping() throws {
        let h = try AgentHarness()
        h.send([AgentHarness.desk])
        let release = Gate()
        h.agent.loop.post { release.wait() }  // the loop is held by a long job
        let busy = h.agent.reply(to: ControlRequest(command: .launch, profile: "mynumber"), peer: AgentHarness.user, timeout: 0.2)
        #expect(busy.error?.message == "segguardd is busy: no answer within 0.2 s; try again")
        release.open()
        h.agent.settle()
        #expect(h.sessions.sessions().isEmpty, "the abandoned launch did not register a session")
        #expect(!h.events.contains("launch-allowed"))
        h.close()
        #expect(h.agent.reply(to: ControlRequest(command: .status), peer: AgentHarness.root).error?.message == "segguardd is stopping")
    }

    @Test("allowed groups: a user outside them is refused, root is not")
    func groups() throws {
        let h = try AgentHarness(policy: AgentHarness.policy(extraProfiles: """
              - name: restricted
                segment: lgwan
                command: ["/bin/true"]
                allowed_groups: [segguard-no-such-group]
            """))
        defer { h.close() }
        h.send([AgentHarness.desk])
        #expect(h.ask(.launch, profile: "restricted", peer: AgentHarness.user).launch?.reason == "uid 1000 is not in a group allowed to launch profile 'restricted' (segguard-no-such-group)")
        #expect(h.ask(.launch, profile: "restricted", peer: AgentHarness.root).launch?.allowed == true)
    }

    @Test("why-denied lists refusals and kills only; another protocol version is refused with both versions")
    func whyDeniedAndVersion() throws {
        let h = try AgentHarness()
        defer { h.close() }
        h.send([AgentHarness.desk])
        _ = h.ask(.launch, profile: "lgwan", clientCommand: ["/bin/x"])
        _ = h.ask(.launch, profile: "nope")
        #expect(h.events == ["binding-applied", "launch-allowed", "launch-refused"])
        #expect(h.denials.map(\.kind) == ["launch-refused"])
        let future = h.agent.reply(to: ControlRequest(command: .status, version: 7), peer: AgentHarness.root)
        #expect(future.error?.message == "control protocol 7 is not supported; segguardd \(segguardVersion) speaks \(controlProtocolVersion)")
    }

    @Test("the heartbeat carries the policy digest, the decision and the interfaces without loopback")
    func heartbeat() async throws {
        let h = try AgentHarness()
        defer { h.close() }
        h.send([AgentHarness.desk, AgentHarness.wifi(AgentHarness.ap1)])
        let hb = await h.agent.heartbeat()
        #expect(hb.hostname == "tc-test")
        #expect(hb.policy.name == "agent-test" && hb.policy.sha256.count == 64)
        #expect(hb.decision.segment == "authorized-wired" && hb.decision.interfaces == ["eth0", "wlan0"])
        #expect(hb.interfaces.map(\.name) == ["eth0", "wlan0"])
        #expect(hb.interfaces[1].bssid == AgentHarness.ap1)
    }
}

@Suite("Agent: capture blocking and life cycle")
struct AgentCaptureTests {
    @Test("capture on: the gate is made, marks the policy's mounts, follows the sessions; its records become events")
    func capture() throws {
        let h = try AgentHarness(policy: AgentHarness.policy(capture: AgentHarness.captureSection))
        defer { h.close() }
        let gate = try #require(h.gates.gate)
        #expect(gate.isStarted && gate.watched == ["/usr"])
        #expect(gate.protection.level == .none, "scope: sessions, none running")
        h.send([AgentHarness.desk])
        #expect(h.ask(.launch, profile: "mynumber", peer: AgentHarness.user).launch?.allowed == true)
        #expect(gate.protection == CaptureProtectionState(level: .trustedOnly, profile: "mynumber"))
        // The gate learns whose session it is (their untrusted processes end), and that dpkg's
        // index is needed (a profile asks for trusted-only).
        #expect(gate.sessionUsers == [AgentHarness.user.uid] && gate.trustedOnlyPossible)
        gate.emit(CaptureDecisionRecord(outcome: .denied, path: "/usr/bin/scrot", sha256: nil, pid: 77, uid: 1000, parentPid: 1, parentExecutable: "/bin/bash",
                                        profile: "mynumber", reason: "scrot is listed in capture.block.names"))
        h.agent.settle()
        let denied = try #require(h.denials.last)
        #expect(denied.kind == "exec-denied" && denied.exec?.path == "/usr/bin/scrot" && denied.exec?.parentExecutable == "/bin/bash" && denied.uid == 1000)
        #expect(h.reporter.events.last?.details["path"] == "/usr/bin/scrot")
        #expect(h.status.capture?.level == "trusted-only")

        // The session ends: the protection drops at the next refresh.
        h.send([AgentHarness.deskUnplugged])
        h.advance(30)
        #expect(gate.protection.level == .none)
    }

    @Test("a refused capture tool is a notice for its user only, once per 10 s for the same tool; without since only the starting point comes back")
    func toolNotice() throws {
        let h = try AgentHarness(policy: AgentHarness.policy(capture: AgentHarness.captureSection))
        defer { h.close() }
        let gate = try #require(h.gates.gate)
        func notices(_ since: UInt64?, _ peer: PeerCredentials) -> NoticesReply? {
            h.agent.reply(to: ControlRequest(command: .notices, since: since), peer: peer).notices
        }
        let start = try #require(notices(nil, AgentHarness.user))
        #expect(start.entries.isEmpty)
        for _ in 0..<50 {
            gate.emit(CaptureDecisionRecord(outcome: .denied, path: "/usr/bin/scrot", sha256: nil, pid: 77, uid: 1000, parentPid: 1, parentExecutable: "/bin/bash",
                                            profile: "mynumber", reason: "scrot is listed in capture.block.names"))
        }
        gate.emit(CaptureDecisionRecord(outcome: .wouldBeDenied, path: "/usr/bin/maim", sha256: nil, pid: 78, uid: 1000, parentPid: 1, parentExecutable: nil,
                                        profile: nil, reason: "audit"))
        h.agent.settle()
        let mine = try #require(notices(start.latest, AgentHarness.user))
        #expect(mine.entries.map(\.notice) == [.toolBlocked] && mine.entries.first?.values == ["tool": "scrot"], "one notice for 50 refusals; none in audit mode")
        #expect(notices(start.latest, PeerCredentials(pid: 1, uid: 1001, gid: 1001, groups: []))?.entries.isEmpty == true, "another user is told nothing")
        #expect(notices(mine.latest, AgentHarness.user)?.entries.isEmpty == true)
        // Another user running refused programs under 200 names gets one notice, and cannot
        // push out this user's.
        for i in 0..<200 {
            gate.emit(CaptureDecisionRecord(outcome: .denied, path: "/tmp/x\(i)", sha256: nil, pid: 90, uid: 1001, parentPid: 1, parentExecutable: nil,
                                            profile: nil, reason: "untrusted"))
        }
        h.agent.settle()
        #expect(notices(start.latest, PeerCredentials(pid: 1, uid: 1001, gid: 1001, groups: []))?.entries.count == 1)
        #expect(notices(start.latest, AgentHarness.user)?.entries.map(\.notice) == [.toolBlocked])
    }

    @Test("a gate that cannot start is said in status; the segment controls go on")
    func captureUnavailable() throws {
        let h = try AgentHarness(policy: AgentHarness.policy(capture: AgentHarness.captureSection), start: false)
        defer { h.close() }
        h.gates.fail("fanotify_init: Operation not permitted (errno 1)")
        try h.agent.start()
        h.send([AgentHarness.desk])
        #expect(h.status.capture?.error == "fanotify_init: Operation not permitted (errno 1)")
        #expect(h.status.decision.segment == .authorizedWired)
    }

    @Test("a flood of capture records is bounded: beyond the backlog they are counted, not queued")
    func captureFlood() throws {
        let h = try AgentHarness(policy: AgentHarness.policy(capture: AgentHarness.captureSection))
        defer { h.close() }
        let gate = try #require(h.gates.gate)
        // Hold the loop so nothing is taken off the queue meanwhile.
        let release = DispatchSemaphore(value: 0)
        h.agent.loop.post { release.wait() }
        let record = CaptureDecisionRecord(outcome: .denied, path: "/tmp/x", sha256: nil, pid: 1, uid: 1000, parentPid: nil, parentExecutable: nil, profile: nil, reason: "r")
        for _ in 0..<(Agent.captureBacklogLimit + 500) { gate.emit(record) }
        release.signal()
        h.agent.settle()
        // The same denial over and over: recorded once, the rest summed up when the minute ends.
        #expect(h.observer.events.filter { $0.kind == .execDenied }.count == 1)
        let dropped = try #require(h.reporter.events.first { $0.kind == "capture-events-dropped" })
        #expect(dropped.details["dropped"] == "500")
        h.advance(60)
        let summary = try #require(h.observer.events.last { $0.kind == .execDenied })
        #expect(summary.repeated == Agent.captureBacklogLimit - 1)
        #expect(summary.reason == "r (and \(Agent.captureBacklogLimit - 1) more like this from uid 1000 within 60 s, held back)")
        #expect(h.reporter.events.last { $0.kind == "exec-denied" }?.details["repeated"] == "\(Agent.captureBacklogLimit - 1)")
    }

    @Test("event flood: 10,000 launch refusals from one user make a handful of events; the warnings before it stay in why-denied and reach the reporter")
    func eventFlood() throws {
        let h = try AgentHarness()
        defer { h.close() }
        h.send([AgentHarness.desk])
        h.send([AgentHarness.deskUnplugged])  // a real warning: the segment lost
        let before = h.reporter.events.filter { $0.severity == "warning" || $0.severity == "critical" }
        #expect(before.contains { $0.kind == "decision-changed" })
        for i in 0..<10_000 {
            // One user: the same refusal 9,970 times, and 30 different (unknown) profile names.
            let profile = i % 333 == 0 ? "junk\(i)" : "mynumber"
            _ = h.ask(.launch, profile: profile, peer: AgentHarness.user)
        }
        let refusals = h.reporter.events.filter { $0.kind == "launch-refused" }
        #expect(refusals.count == 20, "the first of each kind and subject, at most 20 a minute per user")
        #expect(h.denials.filter { $0.kind == "launch-refused" }.count == 20, "why-denied keeps room for the rest")
        let warningsNow = h.reporter.events.filter { $0.severity == "warning" || $0.severity == "critical" }
        #expect(Array(warningsNow.prefix(before.count)).map(\.reason) == before.map(\.reason), "every earlier warning is still there, first")
        // Root is never held back.
        for _ in 0..<30 { _ = h.ask(.launch, profile: "nope", peer: AgentHarness.root) }
        #expect(h.reporter.events.filter { $0.kind == "launch-refused" && $0.details["uid"] == "0" }.count == 30)
        // The minute ends: one summary per key held back.
        h.advance(60)
        let summaries = h.reporter.events.filter { $0.kind == "launch-refused" && $0.details["repeated"] != nil }
        let counted: [Int] = summaries.map { Int($0.details["repeated"] ?? "") ?? 0 }
        #expect(counted.reduce(0, +) == 10_000 - 20)
        #expect(summaries.contains { $0.reason.contains("more like this from uid 1000 within 60 s, held back") })
        // A new minute: the user's events pass again.
        _ = h.ask(.launch, profile: "mynumber", peer: AgentHarness.user)
        #expect(h.reporter.events.last?.kind == "launch-refused" && h.reporter.events.last?.details["repeated"] == nil)
    }

    @Test("stop: STOPPING, then every source stopped; the timings file is written; jobs after stop are refused")
    func stop() async throws {
        let h = try AgentHarness(policy: AgentHarness.policy(capture: AgentHarness.captureSection), watchdog: 1)
        h.send([AgentHarness.desk])
        h.advance(0.5)
        #expect(h.observer.notes.filter { $0 == .watchdog }.count == 2, "one at start, one after half the interval")
        h.agent.stop()
        #expect(h.observer.notes.last == .stopping)
        #expect(h.network.isStopped && h.auth.isStopped && h.gates.gate?.isStopped == true)
        let timings = try String(contentsOfFile: h.dir + "/timings.jsonl", encoding: .utf8)
        #expect(timings.hasPrefix("{\"authorized\":true,\"snapshot_us\":"))
        await #expect(throws: AgentError.self) { try await h.agent.apply(bundle: PolicyBundlePayload(group: "g", version: 1, policyYAML: "", createdAt: Date())) }
        try await h.agent.waitUntilStopped()
        h.close()
    }
}

@Suite("Agent: office-area signal fence")
struct AgentSignalFenceTests {
    static let policy = AgentHarness.policy().replacingOccurrences(
        of: "bssids: [\"02:00:5e:00:53:01\", \"02:00:5e:00:53:02\"]",
        with: "bssids: [\"02:00:5e:00:53:01\", \"02:00:5e:00:53:02\"]\n        min_signal_dbm: -70\n        leave_below_dbm: -75\n        leave_after_seconds: 10")

    static func wifi(_ bssid: String, _ dBm: Int32?) -> InterfaceState {
        var i = AgentHarness.wifi(bssid)
        i.wireless?.signalDBM = dBm
        return i
    }

    @Test("enter at -70 dBm, no flapping above -75, leave only after 10 s below it; a roam to another access point enters anew; thresholds handed to the network source")
    func fence() throws {
        let h = try AgentHarness(policy: Self.policy)
        defer { h.close() }
        #expect(Set(h.network.signalThresholds) == [-70, -75])
        h.send([Self.wifi(AgentHarness.ap1, -72)])
        #expect(h.status.decision.segment == .unauthorized, "outside until -70")
        #expect(h.status.decision.reason.contains("places it outside the office area"))
        h.send([Self.wifi(AgentHarness.ap1, -66)])
        #expect(h.status.decision.segment == .authorizedWireless)
        h.send([Self.wifi(AgentHarness.ap1, -73)])
        #expect(h.status.decision.segment == .authorizedWireless, "hysteresis: -73 is above the leave level")
        h.send([Self.wifi(AgentHarness.ap1, -80)])
        #expect(h.status.decision.segment == .authorizedWireless, "a fade: not yet")
        h.advance(9)
        #expect(h.status.decision.segment == .authorizedWireless)
        h.advance(1.1)
        #expect(h.status.decision.segment == .unauthorized, "10 s below -75: left the office area")
        h.send([Self.wifi(AgentHarness.ap1, -69)])
        #expect(h.status.decision.segment == .authorizedWireless)
        // A roam to the other access point at a weak signal: a new association must enter.
        h.send([Self.wifi(AgentHarness.ap2, -72)])
        #expect(h.status.decision.segment == .unauthorized)
    }
}
