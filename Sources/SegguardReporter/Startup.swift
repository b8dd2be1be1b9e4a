// What segguardd does with reporting at start: the saved policy bundle, verified again, and
// the reporter with its spool opened (and whether the previous run ended cleanly).

import FoundationEssentials
import Glibc
import Logging
import SegguardPKI
import SegguardPolicy
import SegguardReport
import SegguardSystem
import SegguardWire

extension AppliedBundle {
    /// The bundle saved in `directory` (bundle.json), verified against the pinned key and this
    /// device's group, and the path of its policy (bundle-policy.yaml, rewritten from the
    /// verified payload when missing or different). Nil when no bundle was saved.
    public static func restore(keyPath: String, certificatePath: String, directory: String) throws -> (AppliedBundle, policyFile: String)? {
        let key = try PolicySigningKey(base64: try String(contentsOfFile: keyPath, encoding: .utf8))
        // Any group's bundle: the collector assigns the group (it may differ from the certificate's OU).
        guard let (saved, payload) = try AppliedBundle.load(path: directory + "/bundle.json", key: key) else { return nil }
        let path = directory + "/bundle-policy.yaml"
        let current = FileManager.default.contents(atPath: path).map(PolicySigning.sha256Hex)
        if current != payload.policySHA256 {
            try AtomicFile.write(Data(payload.policyYAML.utf8), to: path, mode: 0o644)
        }
        return (saved, path)
    }
}

extension Reporter {
    /// What the agent starts with, for the `agent-started` event.
    public struct Start: Sendable {
        public var version: String, policyName: String, policyFile: String, policySHA256: String
        public init(version: String, policyName: String, policyFile: String, policySHA256: String) {
            (self.version, self.policyName, self.policyFile, self.policySHA256) = (version, policyName, policyFile, policySHA256)
        }
    }

    /// Opens the spool (marking this run as running), makes the reporter and records
    /// `agent-started`, and `agent-restarted-uncleanly` when the previous run did not stop
    /// cleanly (killed, crashed, power lost: a possible tamper sign).
    public static func open(configuration: ReporterConfiguration, spoolPath: String, rule: ReportRule, logger: Logger, applied: AppliedBundle?,
                            start: Start, heartbeat: @escaping HeartbeatSource, applyBundle: @escaping BundleApplier) async throws -> Reporter {
        let spool = try await Spool(path: spoolPath, maxEvents: rule.spoolMaxEvents, overflow: rule.overflow)
        do {
            let unclean = try await spool.markRunning()
            let reporter = try Reporter(configuration: configuration, spool: spool, rule: rule, logger: logger, applied: applied,
                                        heartbeat: heartbeat, applyBundle: applyBundle)
            reporter.record(kind: "agent-started", severity: "info", reason: "segguardd \(start.version) started with policy '\(start.policyName)'",
                            details: ["policy_file": start.policyFile, "policy_sha256": start.policySHA256])
            if unclean {
                reporter.record(kind: "agent-restarted-uncleanly", severity: "warning",
                                reason: "the previous segguardd run ended without a clean stop (killed, crashed or power lost): a possible tamper sign")
            }
            return reporter
        } catch {
            try? await spool.close()
            throw error
        }
    }

    /// What `segguardctl status` shows of reporting.
    public var reportingStatus: StatusReply.ReportingStatus {
        let st = statistics
        return .init(collector: configuration.collectorURL, agentID: identity.agentID, group: identity.group, heartbeatsSent: st.heartbeatsSent,
                     heartbeatFailures: st.heartbeatFailures, lastHeartbeatAt: st.lastHeartbeatAt, eventsDelivered: st.eventsDelivered,
                     lastError: st.lastError, bundleVersion: appliedBundle?.version)
    }
}
