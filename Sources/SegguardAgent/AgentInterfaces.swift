// What the agent is given: its configuration, the kernel sources it reads and drives (each
// behind a protocol, with a fake in SegguardTestFakes), and the two parties it tells what it
// does: the service manager (AgentObserver) and the reporter (AgentReporting).

import FoundationEssentials
import Glibc
import SegguardCapture
import SegguardDecision
import SegguardDeviceAuth
import SegguardEnforce
import SegguardNetlink
import SegguardPolicy
import SegguardWire

/// Files and timings of one agent.
public struct AgentConfiguration: Sendable {
    /// The local policy file (re-read on every reload unless a bundle is in force).
    public var policyFile: String
    /// Where a verified policy bundle's policy is written (nil: bundles are refused).
    public var bundlePolicyFile: String?
    /// The baseline table file (`nft -f`: boot, start, after a stop), kept in line with the
    /// gateways and the binding mode.
    public var baselineFile: String?
    /// Enforcement events kept for `segguardctl why-denied`.
    public var eventCapacity = 500
    /// Seconds between checks that the nftables table is still there.
    public var repairInterval = 5.0
    /// The service watchdog interval (WatchdogSec=): pinged from the agent's loop every half.
    public var watchdogInterval: Double?
    /// A process-connector socket opened earlier (in the initial network namespace), or -1.
    public var procConnector: Int32 = -1
    /// This host's name, for heartbeats.
    public var hostname: String
    /// Binding changes whose pipeline timings are kept (status, benchmarks).
    public var timingsCapacity = 1024
    /// Where the pipeline timings are written at stop, one JSON object per line (benchmarks).
    public var timingsFile: String?
    /// Tracked (My Number) sessions one uid other than root may have at once: each holds a
    /// cgroup and a descriptor in the daemon, so a user cannot run it out of either.
    public var maxSessionsPerUser = 4
    /// This device's certificate (PEM or DER): an EAP-TLS requirement is met only when the
    /// supplicant's client certificate holds the same public key. Read at start and on each
    /// reload. Nil: no device certificate, and no EAP-TLS rule is met.
    public var deviceCertificateFile: String?

    public init(policyFile: String, bundlePolicyFile: String? = nil, baselineFile: String? = nil, hostname: String = "localhost") {
        (self.policyFile, self.bundlePolicyFile, self.baselineFile, self.hostname) = (policyFile, bundlePolicyFile, baselineFile, hostname)
    }
}

/// Makes the exec gate once the policy turns capture blocking on; it reports what it does
/// through the closure it is given (called on the gate's threads).
public typealias ExecGateFactory = @Sendable (CaptureRule, @escaping @Sendable (CaptureDecisionRecord) -> Void) throws -> any ExecGate

/// The kernel sources the agent reads and drives.
public struct AgentSources: Sendable {
    /// Network snapshots (rtnetlink, nl80211); read on the agent's own loop.
    public var network: any NetworkSource
    /// 802.1X state for `device_auth` rules (wpa_supplicant); nil: none.
    public var deviceAuth: (any DeviceAuthSource)?
    /// The nftables table; nil: no network binding on this host.
    public var binding: (any NetworkBinding)?
    /// VDI session cgroups; nil: My Number launches that need tracking are refused.
    public var sessions: (any SessionControl)?
    /// Capture blocking; nil: a policy that turns it on says in status that it cannot run.
    public var execGate: ExecGateFactory?
    /// Trusted-server probes for `trusted_server` rules; nil: such rules never authorize.
    public var prober: (any TrustedServerProbing)?

    public init(network: any NetworkSource, deviceAuth: (any DeviceAuthSource)? = nil, binding: (any NetworkBinding)? = nil,
                sessions: (any SessionControl)? = nil, execGate: ExecGateFactory? = nil, prober: (any TrustedServerProbing)? = nil) {
        (self.network, self.deviceAuth, self.binding, self.sessions, self.execGate) = (network, deviceAuth, binding, sessions, execGate)
        self.prober = prober
    }
}

/// Makes trusted-server probes: a TLS handshake through one interface to an office server
/// whose key is pinned (SegguardProbe's `TrustedServerProber` behind it in segguardd).
public protocol TrustedServerProbing: Sendable {
    /// Starts a probe and returns at once; `completion` runs once, on any thread but the caller's.
    func probe(_ server: TrustedServerRule, interfaceIndex: Int32, interfaceName: String, completion: @escaping @Sendable (TrustedServerResult) -> Void)
}

/// Told what the agent does, on the agent's loop (keep it quick). The service manager's
/// notifications (READY=1, STATUS=, RELOADING=1, WATCHDOG=1, STOPPING=1) and instruments.
public protocol AgentObserver: Sendable {
    /// The first decision is made and enforced.
    func ready(status: String)
    /// The decision changed.
    func status(_ text: String)
    func reloading()
    func reloaded(status: String)
    /// The agent's loop is alive (every half watchdog interval).
    func watchdog()
    func stopping()
    /// A decision change, after it was enforced; `eventNanos` is when the loop woke for the
    /// network message behind it (benchmarks).
    func decisionChanged(_ change: DecisionChange, eventNanos: UInt64)
    /// An enforcement event was recorded.
    func recorded(_ event: EnforcementEvent)
}

extension AgentObserver {
    public func ready(status: String) {}
    public func status(_ text: String) {}
    public func reloading() {}
    public func reloaded(status: String) {}
    public func watchdog() {}
    public func stopping() {}
    public func decisionChanged(_ change: DecisionChange, eventNanos: UInt64) {}
    public func recorded(_ event: EnforcementEvent) {}
}

/// An observer that is told nothing.
public struct SilentObserver: AgentObserver {
    public init() {}
}

/// Where the agent's events go to reach the collector (`Reporter`). Every call returns at once.
public protocol AgentReporting: Sendable {
    /// Queues an event; `afterCommit` runs once it is durably spooled, with its id (nil: it
    /// could not be spooled). The agent logs there: a line in the journal means the event is
    /// on disk, whatever kills the agent next.
    func record(kind: String, severity: String, reason: String, details: [String: String], time: Date,
                afterCommit: (@Sendable (String?) -> Void)?)
    /// Send a heartbeat soon (the decision changed).
    func heartbeatNow()
    /// The policy's `report:` section changed.
    func update(rule: ReportRule)
    /// For `segguardctl status`.
    var reportingStatus: StatusReply.ReportingStatus { get }
}

extension AgentReporting {
    /// Queues an event nobody waits for.
    public func record(kind: String, severity: String, reason: String, details: [String: String], time: Date) {
        record(kind: kind, severity: severity, reason: reason, details: details, time: time, afterCommit: nil)
    }
}
