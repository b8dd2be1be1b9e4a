// Prometheus metrics of the collector: per-agent counters (heartbeats, events by kind and
// severity) kept by this replica, and fleet gauges read from the shared store at scrape time.

import Foundation
import Logging
import Prometheus
import SegguardReport
import ServiceLifecycle
import Synchronization

/// The metrics registry and the counters the routes increment.
public final class CollectorMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    let rejectedBodies: Counter
    let storeErrors: Counter
    let identityMismatches: Counter
    let refusedBundles: Counter
    let staleTransitions: Counter
    let clampedIntervals: Counter
    let agentsGauge: [String: Gauge]
    let eventsStored: Gauge
    let backloggedAgents: Gauge
    let heldEvents: Gauge
    let expiringCertificates: Gauge
    let idConflicts: Counter
    let prunedEvents: Counter
    let authFailures: Counter
    let revokedRefusals: Counter
    let enrollments: [EnrollmentResult: Counter]

    init() {
        rejectedBodies = registry.makeCounter(descriptor: Self.name("segguard_collector_rejected_bodies_total", "Request bodies refused (malformed, unknown fields, too large)."))
        storeErrors = registry.makeCounter(descriptor: Self.name("segguard_collector_store_errors_total", "Requests that failed in the store (answered 503)."))
        identityMismatches = registry.makeCounter(descriptor: Self.name("segguard_collector_identity_mismatches_total", "Bodies naming another agent than the client certificate."))
        refusedBundles = registry.makeCounter(descriptor: Self.name("segguard_collector_bundles_refused_total", "Policy bundle pushes refused."))
        staleTransitions = registry.makeCounter(descriptor: Self.name("segguard_collector_agents_marked_stale_total", "Agents this replica marked stale."))
        clampedIntervals = registry.makeCounter(descriptor: Self.name("segguard_collector_heartbeat_intervals_clamped_total",
                                                                       "Heartbeats claiming a longer interval than the group's policy (held to the policy's)."))
        let registry = self.registry
        agentsGauge = Dictionary(uniqueKeysWithValues: ["authorized", "unauthorized", "stale"].map {
            ($0, registry.makeGauge(descriptor: Self.name("segguard_agents", "Agents by state (from the store)."), labels: [("state", $0)])) })
        eventsStored = registry.makeGauge(descriptor: Self.name("segguard_events_stored", "Events in the store."))
        backloggedAgents = registry.makeGauge(descriptor: Self.name("segguard_agents_delivery_backlog",
            "Agents whose events are not getting through: some refused by the collector, or the oldest undelivered older than an hour."))
        heldEvents = registry.makeGauge(descriptor: Self.name("segguard_agent_events_held", "Events agents hold because the collector refused them (sum of the last heartbeats)."))
        expiringCertificates = registry.makeGauge(descriptor: Self.name("segguard_agents_certificate_expiring",
            "Agents (not stale) whose client certificate ends within \(AgentRecord.certificateWarningDays) days (from the certificate of their latest heartbeat)."))
        authFailures = registry.makeCounter(descriptor: Self.name("segguard_collector_auth_failures_total", "Operator or admin-token authentications refused."))
        revokedRefusals = registry.makeCounter(descriptor: Self.name("segguard_collector_revoked_refused_total", "Agent calls refused because the device certificate is revoked."))
        enrollments = Dictionary(uniqueKeysWithValues: EnrollmentResult.allCases.map { r in
            (r, registry.makeCounter(descriptor: Self.name("segguard_collector_enrollments_total", "EST enrollments and renewals by result (enrolled, renewed, refused)."),
                                     labels: [("result", r.rawValue)]))
        })
        prunedEvents = registry.makeCounter(descriptor: Self.name("segguard_collector_events_pruned_total", "Events deleted past the retention (--retention-days)."))
        idConflicts = registry.makeCounter(descriptor: Self.name("segguard_collector_event_id_conflicts_total",
            "Events sent again under a stored id with other content (answered 409, recorded as event-id-conflict)."))
    }

    static var heartbeatsName: MetricNameDescriptor { name("segguard_agent_heartbeats_total", "Heartbeats received per agent.") }
    static var eventsName: MetricNameDescriptor { name("segguard_agent_events_total", "Events received per agent and kind (resends included).") }
    static var duplicatesName: MetricNameDescriptor {
        name("segguard_agent_duplicate_events_total", "Events received again after being stored (a resend after a lost acknowledgement).")
    }

    /// Each agent's heartbeat counter, looked up once (the registry builds a label key per call).
    let heartbeatCounters = Mutex<[AgentIdentity: Counter]>([:])

    func heartbeat(_ agent: AgentIdentity, recovered: Bool) {
        let counter = heartbeatCounters.withLock { cache in
            if let c = cache[agent] { return c }
            let c = registry.makeCounter(descriptor: Self.heartbeatsName, labels: [("agent", agent.agentID), ("group", agent.group)])
            cache[agent] = c
            return c
        }
        counter.increment()
    }

    func events(_ agent: AgentIdentity, _ events: [ReportedEvent], inserted: Int, duplicates: Int) {
        var byKind: [String: Int] = [:]
        // Kinds outside the closed set count as "other": a label per invented kind would
        // grow /metrics without bound (and slow every request that touches the registry).
        for e in events { byKind[EventKinds.metricLabel(e.kind), default: 0] += 1 }
        for (kind, n) in byKind {
            registry.makeCounter(descriptor: Self.eventsName, labels: [("agent", agent.agentID), ("group", agent.group), ("kind", kind)])
                .increment(by: Int64(n))
        }
        if duplicates > 0 {
            registry.makeCounter(descriptor: Self.duplicatesName, labels: [("agent", agent.agentID), ("group", agent.group)])
                .increment(by: Int64(duplicates))
        }
    }

    /// A metric's full name and help text (the name is given whole, not in parts).
    static func name(_ full: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: full, unitName: "", helpText: help)
    }

    func rejected() { rejectedBodies.increment() }
    func storeError() { storeErrors.increment() }
    func identityMismatch() { identityMismatches.increment() }
    func bundleRefused() { refusedBundles.increment() }
    func markedStale(_ n: Int) { staleTransitions.increment(by: Int64(n)) }
    func intervalClamped() { clampedIntervals.increment() }
    func idConflict() { idConflicts.increment() }
    func pruned(_ n: Int) { prunedEvents.increment(by: Int64(n)) }
    func authFailure() { authFailures.increment() }
    func revokedRefused() { revokedRefusals.increment() }
    func enrollment(_ r: EnrollmentResult) { enrollments[r]?.increment() }

    /// The text exposition, with the fleet gauges set from `counts`.
    func render(counts: StoreCounts) -> String {
        agentsGauge["authorized"]?.set(Double(counts.authorized))
        agentsGauge["unauthorized"]?.set(Double(counts.unauthorized))
        agentsGauge["stale"]?.set(Double(counts.stale))
        eventsStored.set(Double(counts.events))
        backloggedAgents.set(Double(counts.backlogged))
        heldEvents.set(Double(counts.heldEvents))
        expiringCertificates.set(Double(counts.certificatesExpiring))
        return registry.emitToString()
    }
}

/// Marks silent agents stale every `staleSweepSeconds` (each replica sweeps; the store makes
/// sure an agent turns stale, and is reported, once).
/// How an EST request ended (the label of `segguard_collector_enrollments_total`).
enum EnrollmentResult: String, CaseIterable, Sendable { case enrolled, renewed, refused }

struct StaleSweeper: Service {
    let collector: Collector

    func run() async throws {
        let period = collector.configuration.staleSweepSeconds
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await collector.refreshRevocations()
                try await collector.refreshDeviceGroups()
            } catch {
                collector.logger.error("revocations not refreshed", metadata: ["error": "\(error)"])
            }
            do {
                let stale = try await collector.store.markStale(now: Date(), intervals: collector.configuration.staleIntervals)
                if !stale.isEmpty {
                    collector.metrics.markedStale(stale.count)
                    for a in stale {
                        collector.logger.warning("agent is stale", metadata: ["agent": "\(a.agentID)", "group": "\(a.group)", "last_seen": "\(a.lastSeen)"])
                    }
                }
            } catch {
                collector.logger.error("stale sweep failed", metadata: ["error": "\(error)"])
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(period)) }
        }
    }
}
