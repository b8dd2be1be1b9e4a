// An agent on its real loop, with a fake of every kernel source and a manual clock: what the
// agent does is driven and observed here without root.

import Foundation
import SegguardDeviceAuth
import SegguardPKI
import Logging
import SegguardAgent
import SegguardPolicy
import SegguardSystem
import SegguardTestFakes
import SegguardWire

/// One agent with fakes; `close()` stops it and removes its files.
final class AgentHarness: Sendable {
    let clock = ManualClock()
    let network = FakeNetworkSource()
    let auth = FakeDeviceAuthSource()
    let binding: FakeNetworkBinding
    let sessions = FakeSessionControl()
    let gates = FakeExecGateFactory()
    let prober = FakeProber()
    let observer = RecordingObserver()
    let reporter = RecordingReporter()
    let dir: String
    let agent: Agent

    static let root = PeerCredentials(pid: getpid(), uid: 0, gid: 0, groups: [])
    static let user = PeerCredentials(pid: 4242, uid: 1000, gid: 1000, groups: [1000])

    var policyFile: String { dir + "/policy.yaml" }
    var bundleFile: String { dir + "/bundle-policy.yaml" }
    var baselineFile: String { dir + "/baseline.json" }

    /// - Parameters:
    ///   - sessionControl: false: no cgroup v2 on this host (no session tracking).
    ///   - announcesChanges: the fake binding announces by-hand changes as nf_tables does.
    init(policy yaml: String = AgentHarness.policy(), sessionControl: Bool = true, watchdog: Double? = nil, start: Bool = true,
         announcesChanges: Bool = false, logsRefusals: Bool = false) throws {
        binding = FakeNetworkBinding(announcesChanges: announcesChanges, logsRefusals: logsRefusals)
        dir = NSTemporaryDirectory() + "sg-agent-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try yaml.write(toFile: dir + "/policy.yaml", atomically: true, encoding: .utf8)
        var configuration = AgentConfiguration(policyFile: dir + "/policy.yaml", bundlePolicyFile: dir + "/bundle-policy.yaml",
                                               baselineFile: dir + "/baseline.json", hostname: "tc-test")
        configuration.watchdogInterval = watchdog
        configuration.timingsFile = dir + "/timings.jsonl"
        try AgentHarness.device.certificatePEM.write(toFile: dir + "/device.pem", atomically: true, encoding: .utf8)
        configuration.deviceCertificateFile = dir + "/device.pem"
        var logger = Logger(label: "agent-test")
        logger.logLevel = .critical
        agent = Agent(policy: try Agent.loadPolicy(file: dir + "/policy.yaml"), configuration: configuration,
                      sources: AgentSources(network: network, deviceAuth: auth, binding: binding, sessions: sessionControl ? sessions : nil,
                                            execGate: gates.factory, prober: prober),
                      observer: observer, logger: logger, clock: clock.clock)
        agent.attach(reporting: reporter)
        if start { try agent.start() }
    }

    /// This device's certificate (written to `device.pem` in each harness's directory) and
    /// the SHA-256 of its key, which an EAP-TLS state's client certificate must match.
    static let device: IssuedCertificate = {
        let ca = try! PKI.makeCA(commonName: "agent test CA")
        return try! PKI.issueDevice(ca: ca, agentID: "tc-0001", group: "mynumber")
    }()
    static let deviceKeySHA256 = try! CertificateKey.keySHA256(device.certificate.publicKey)

    /// An authorized EAP-TLS state with this device's certificate.
    static func eapTLS(successes: UInt64 = 0, clientKeySHA256: String? = AgentHarness.deviceKeySHA256) -> DeviceAuthState {
        var s = DeviceAuthState(eapState: "SUCCESS", eapMethod: "TLS", portStatus: .authorized, identity: "tc-0001", successes: successes)
        s.clientKeySHA256 = clientKeySHA256
        s.clientCertificate = "subject 'CN=tc-0001' in /etc/wpa_supplicant/device.pem"
        return s
    }

    func close() {
        agent.stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// The network as the watcher would report it; returns once the agent has acted on it.
    func send(_ interfaces: [InterfaceState]) {
        network.send([FakeInterfaces.loopback] + interfaces)
        agent.settle()
    }

    /// Moves the clock (timers due fire) and waits for what they started.
    func advance(_ seconds: Double) {
        clock.advance(seconds: seconds)
        agent.settle()
    }

    func ask(_ command: ControlRequest.Command, profile: String? = nil, clientCommand: [String]? = nil, peer: PeerCredentials = AgentHarness.root) -> ControlReply {
        agent.reply(to: ControlRequest(command: command, profile: profile, clientCommand: clientCommand), peer: peer)
    }

    var status: StatusReply { ask(.status).status! }
    var denials: [EventEntry] { ask(.whyDenied).events ?? [] }
    /// Every event the agent recorded (why-denied shows only the denials).
    var events: [String] { observer.events.map(\.kind.rawValue) }

    /// The office: wired ports eth*, Wi-Fi "mn-office" (enterprise) through two pinned access
    /// points, other uplinks denied, one gateway, a My Number and an LGWAN profile.
    static func policy(name: String = "agent-test", gate: String = "enforce", termination: String = "enforce", binding: String = "enforce",
                       grace: Double = 30, capture: String = "", extraProfiles: String = "") -> String {
        """
        schema_version: 1
        name: \(name)
        sites:
          - name: hq
            wireless:
              - ssid: "mn-office"
                security: [enterprise]
                bssids: ["02:00:5e:00:53:01", "02:00:5e:00:53:02"]
            wired:
              - interfaces: ["eth*"]
        uplinks:
          other_uplinks: deny
        vdi:
          gateways:
            - address: 192.0.2.10
              ports: [443]
              protocol: tcp
        enforcement:
          launch_gate: \(gate)
          session_termination: \(termination)
          network_binding: \(binding)
          grace_seconds: \(grace)
          kill_timeout_seconds: 1
        profiles:
          - name: mynumber
            segment: mynumber
            command: ["/usr/bin/xfreerdp", "/v:192.0.2.10"]
            enforce_arguments: ["-clipboard"]
            capture: trusted-only
          - name: lgwan
            segment: lgwan
            config_files:
              - path: "~/.ICAClient/wfclient.ini"
                section: WFClient
                set: {ClipboardAllowed: "Off"}
        \(extraProfiles)
        \(capture)
        """
    }

    static let captureSection = """
        capture:
          mode: enforce
          scope: sessions
          watch: ["/usr"]
          block:
            names: [scrot]
        """

    static let desk = FakeInterfaces.wired("eth0", index: 2)
    static let deskUnplugged = FakeInterfaces.wired("eth0", index: 2, carrier: false)
    static func wifi(_ bssid: String?) -> InterfaceState { FakeInterfaces.wifi("wlan0", index: 3, ssid: bssid == nil ? nil : "mn-office", bssid: bssid) }
    static let ap1 = "02:00:5e:00:53:01", ap2 = "02:00:5e:00:53:02"
    /// A phone tether: another running interface with a default route.
    static let tether = InterfaceState(index: 9, name: "usb0", kind: .virtual, linkKind: "rndis", operState: .up, hasCarrier: true,
                                       defaultRoutes: [DefaultRoute(family: .ipv4, gateway: IPAddress("172.20.10.1"), metric: 50)])
}
