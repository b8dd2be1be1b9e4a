// The event kinds segment-guard itself produces: a closed set, so what an agent sends as a
// kind can label a metric only when it is one of these (anything else counts as "other").
// A test reads the sources for every kind literal and checks it is listed here.

/// The kinds of events agents and the collector produce.
public enum EventKinds {
    /// Every kind an agent records or the collector writes.
    public static let known: Set<String> = [
        // segguardd (agent core, reporter)
        "decision-changed", "policy-loaded", "policy-refused", "capture-events-dropped",
        "agent-started", "agent-restarted-uncleanly", "spool-overflow", "bundle-applied", "bundle-refused", "bundle-expired",
        "certificate-renewed", "certificate-renewal-failed",
        // enforcement records (EnforcementEvent.Kind)
        "launch-allowed", "launch-refused", "launch-would-be-refused", "sessions-ended", "sessions-would-be-ended",
        "binding-applied", "binding-failed", "binding-tampered", "gateway-refused",
        "exec-denied", "exec-would-be-denied", "exec-fail-mode", "process-killed", "process-would-be-killed",
        // the collector
        "agent-stale", "agent-recovered", "heartbeat-interval-mismatch", "event-id-conflict",
    ]

    /// The label value for a metric: the kind when known, else "other" (an agent cannot add
    /// series by inventing kinds).
    public static func metricLabel(_ kind: String) -> String { known.contains(kind) ? kind : "other" }
}
