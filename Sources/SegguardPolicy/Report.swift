// The `report:` section: how the agent reports to the collector (the collector's address and
// certificates are the host's, on segguardd's command line; the rhythm and the spool limits are
// policy, so admins can change them per group with a bundle).

/// What the spool does when it is full.
public enum SpoolOverflow: String, Sendable, Codable, CaseIterable {
    /// Drop the oldest undelivered event for each new one (the newest state matters most);
    /// events of a lower severity go first, and a lower one never displaces a higher one.
    case dropOldest = "drop-oldest"
    /// Keep what is spooled; drop new events (a new event still displaces the oldest one of a
    /// lower severity).
    case dropNewest = "drop-newest"
}

/// Reporting rhythm and spool limits.
public struct ReportRule: Sendable, Equatable, Codable {
    /// The longest heartbeat interval a policy may set; the collector never waits longer,
    /// whatever a stored heartbeat says.
    public static let maxHeartbeatSeconds = 3600
    /// Seconds between heartbeats (the collector marks an agent stale after three).
    public var heartbeatSeconds: Int
    /// Each interval is drawn from heartbeat ± this fraction, so that thousands of clients
    /// that booted together do not report in the same second.
    public var jitter: Double
    /// Events per delivery request.
    public var batchSize: Int
    /// At most this many undelivered events on disk.
    public var spoolMaxEvents: Int
    public var overflow: SpoolOverflow
    /// Upper bound of the retry backoff while the collector is unreachable.
    public var maxBackoffSeconds: Int

    public init(heartbeatSeconds: Int = 30, jitter: Double = 0.1, batchSize: Int = 200, spoolMaxEvents: Int = 100_000,
                overflow: SpoolOverflow = .dropOldest, maxBackoffSeconds: Int = 300) {
        self.heartbeatSeconds = heartbeatSeconds
        self.jitter = jitter
        self.batchSize = batchSize
        self.spoolMaxEvents = spoolMaxEvents
        self.overflow = overflow
        self.maxBackoffSeconds = maxBackoffSeconds
    }
}
