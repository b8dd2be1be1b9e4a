// The store for large deployments: PostgreSQL, shared by every collector replica. Upserts
// and `UPDATE ... RETURNING` make each operation atomic across replicas (an agent goes stale
// once, an event is stored once, a bundle version only rises).

import Foundation
import Logging
import PostgresNIO
import SegguardPolicy
import SegguardReport

/// A batch of heartbeats in one statement (one round trip, one commit), prepared once per
/// connection (the text never changes: the rows travel as arrays). The agents' rows are
/// upserted from the arrays (unnest), the old stale flag comes back through was_stale, the
/// `agent-recovered` events of the agents that were stale are inserted by the same statement
/// (a data-modifying WITH) and their event counters bumped by the upsert itself. Atomic
/// without BEGIN/COMMIT round trips; concurrent replicas serialize on the rows, which every
/// writer (this statement, markStale) locks in agent id order. Returns the ids of the agents
/// that were stale.
struct HeartbeatUpsert: PostgresPreparedStatement {
    typealias Row = String
    static let noBundle = Int64.min
    static let sql = """
        WITH up AS (
            INSERT INTO agents (agent_id, grp, hostname, agent_version, policy_name, policy_sha256, bundle_version, segment,
                authorized, reason, interfaces, interval_s, spool_pending, spool_dropped, first_seen, last_seen, stale, heartbeats,
                spool_held, spool_oldest_s, cert_not_after, cert_serial)
            SELECT a, g, h, v, pn, ps, NULLIF(bv, \(noBundle)), seg, au, r, i, iv, sp, sd, $16, $16, FALSE, n, sh, NULLIF(so, -1), NULLIF(cn, -1),
                   NULLIF(cs, '')
            FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::text[],
                        $9::boolean[], $10::text[], $11::text[], $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[],
                        $17::bigint[], $18::bigint[], $19::bigint[], $20::text[])
                AS t(a, g, h, v, pn, ps, bv, seg, au, r, i, iv, sp, sd, n, sh, so, cn, cs)
            ORDER BY a
            ON CONFLICT (agent_id) DO UPDATE SET grp = EXCLUDED.grp, hostname = EXCLUDED.hostname, agent_version = EXCLUDED.agent_version,
                policy_name = EXCLUDED.policy_name, policy_sha256 = EXCLUDED.policy_sha256, bundle_version = EXCLUDED.bundle_version,
                segment = EXCLUDED.segment, authorized = EXCLUDED.authorized, reason = EXCLUDED.reason, interfaces = EXCLUDED.interfaces,
                interval_s = EXCLUDED.interval_s, spool_pending = EXCLUDED.spool_pending, spool_dropped = EXCLUDED.spool_dropped,
                spool_held = EXCLUDED.spool_held, spool_oldest_s = EXCLUDED.spool_oldest_s,
                cert_not_after = COALESCE(EXCLUDED.cert_not_after, agents.cert_not_after),
                cert_serial = COALESCE(EXCLUDED.cert_serial, agents.cert_serial),
                last_seen = EXCLUDED.last_seen, was_stale = agents.stale, stale = FALSE,
                heartbeats = agents.heartbeats + EXCLUDED.heartbeats, events = agents.events + CASE WHEN agents.stale THEN 1 ELSE 0 END
            RETURNING agent_id, grp, was_stale),
        recovered AS (
            INSERT INTO events (agent_id, event_id, grp, seq, time, kind, severity, reason, details, received)
            SELECT agent_id, '\(RecoveredEvent.idPrefix)' || $16::bigint, grp, 0, $16, '\(RecoveredEvent.kind)', '\(RecoveredEvent.severity)',
                   '\(RecoveredEvent.reason)', '\(RecoveredEvent.detailsJSON)', $16
            FROM up WHERE was_stale
            ON CONFLICT (agent_id, event_id) DO NOTHING)
        SELECT agent_id FROM up WHERE was_stale
        """

    let rows: [(Heartbeat, AgentIdentity, String, Int)]
    let now: Int64

    init(_ rows: [(Heartbeat, AgentIdentity, String, Int)], now: Date) {
        self.rows = rows
        self.now = now.millis
    }

    func makeBindings() throws -> PostgresBindings {
        var b = PostgresBindings(capacity: 20)
        b.append(rows.map(\.1.agentID))
        b.append(rows.map(\.1.group))
        b.append(rows.map(\.0.hostname))
        b.append(rows.map(\.0.agentVersion))
        b.append(rows.map(\.0.policy.name))
        b.append(rows.map(\.0.policy.sha256))
        b.append(rows.map { $0.0.policy.bundleVersion ?? Self.noBundle })
        b.append(rows.map(\.0.decision.segment))
        b.append(rows.map(\.0.decision.authorized))
        b.append(rows.map(\.0.decision.reason))
        b.append(rows.map(\.2))
        b.append(rows.map { Int64($0.0.intervalSeconds) })
        b.append(rows.map { Int64($0.0.spool.pending) })
        b.append(rows.map { Int64($0.0.spool.dropped) })
        b.append(rows.map { Int64($0.3) })
        b.append(now)
        b.append(rows.map { Int64($0.0.spool.held ?? 0) })
        b.append(rows.map { Int64($0.0.spool.oldestSeconds ?? -1) })
        b.append(rows.map { $0.1.certificateNotAfter?.millis ?? -1 })
        b.append(rows.map { $0.1.certificateSerial ?? "" })
        return b
    }

    func decodeRow(_ row: PostgresRow) throws -> String { try row.decode(String.self) }
}

/// The collector's PostgreSQL store (`--store postgres://user@host:port/db`).
public final class PostgresStore: CollectorStore {
    let client: PostgresClient
    /// The heartbeat writer's connections: synchronous_commit=off (a heartbeat is soft state,
    /// replaced by the agent's next one; its commit does not wait for the WAL flush, and a
    /// crash of the database server may lose the last ones, never corrupt anything; so may
    /// the agent-recovered event the heartbeat statement writes). Agent events, bundles and
    /// stale marks go through `client`, fully synchronous.
    let heartbeatClient: PostgresClient
    let runTask: Task<Void, Never>
    let logger: Logger

    /// Connects lazily (the pools open connections as queries need them).
    public init(configuration: PostgresClient.Configuration, logger: Logger = Logger(label: "segguard-collector.postgres")) {
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        var heartbeats = configuration
        heartbeats.options.additionalStartupParameters.append(("synchronous_commit", "off"))
        heartbeats.options.maximumConnections = 2
        let heartbeatClient = PostgresClient(configuration: heartbeats, backgroundLogger: logger)
        self.client = client
        self.heartbeatClient = heartbeatClient
        self.logger = logger
        runTask = Task {
            await withDiscardingTaskGroup { group in
                group.addTask { await client.run() }
                group.addTask { await heartbeatClient.run() }
            }
        }
    }

    /// From `postgres://user[:password]@host[:port]/database` (no TLS: loopback or a
    /// private network; put a TLS proxy in front otherwise).
    public static func configuration(url: String) throws -> PostgresClient.Configuration {
        guard let u = URLComponents(string: url), u.scheme == "postgres" || u.scheme == "postgresql", let host = u.host, !host.isEmpty else {
            throw StoreError("--store \(url): expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE")
        }
        let db = u.path.hasPrefix("/") ? String(u.path.dropFirst()) : u.path
        var c = PostgresClient.Configuration(host: host, port: u.port ?? 5432, username: u.user ?? "postgres", password: u.password,
                                             database: db.isEmpty ? nil : db, tls: .disable)
        c.options.maximumConnections = 16
        return c
    }

    public func close() async throws { runTask.cancel() }

    public func migrate() async throws {
        let statements: [PostgresQuery] = [
            // Several replicas may start at once: serialize the DDL with an advisory lock.
            "SELECT pg_advisory_lock(7305001)",
            """
            CREATE TABLE IF NOT EXISTS agents (
                agent_id TEXT PRIMARY KEY, grp TEXT NOT NULL, hostname TEXT NOT NULL, agent_version TEXT NOT NULL,
                policy_name TEXT NOT NULL, policy_sha256 TEXT NOT NULL, bundle_version BIGINT,
                segment TEXT NOT NULL, authorized BOOLEAN NOT NULL, reason TEXT NOT NULL, interfaces TEXT NOT NULL,
                interval_s BIGINT NOT NULL, spool_pending BIGINT NOT NULL, spool_dropped BIGINT NOT NULL,
                first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL, stale BOOLEAN NOT NULL DEFAULT FALSE,
                heartbeats BIGINT NOT NULL DEFAULT 0, events BIGINT NOT NULL DEFAULT 0)
            """,
            // The stale flag before the latest heartbeat (returned by the heartbeat upsert).
            "ALTER TABLE agents ADD COLUMN IF NOT EXISTS was_stale BOOLEAN NOT NULL DEFAULT FALSE",
            // Wire 2: events the collector refused that the agent holds, the oldest undelivered age.
            "ALTER TABLE agents ADD COLUMN IF NOT EXISTS spool_held BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE agents ADD COLUMN IF NOT EXISTS spool_oldest_s BIGINT",
            // The client certificate's end of validity.
            "ALTER TABLE agents ADD COLUMN IF NOT EXISTS cert_not_after BIGINT",
            "ALTER TABLE agents ADD COLUMN IF NOT EXISTS cert_serial TEXT",
            """
            CREATE TABLE IF NOT EXISTS revocations (
                serial TEXT PRIMARY KEY, agent_id TEXT NOT NULL, reason TEXT NOT NULL, time BIGINT NOT NULL, who TEXT NOT NULL)
            """,
            "CREATE INDEX IF NOT EXISTS agents_group ON agents (grp)",
            """
            CREATE TABLE IF NOT EXISTS events (
                agent_id TEXT NOT NULL, event_id TEXT NOT NULL, grp TEXT NOT NULL, seq BIGINT NOT NULL, time BIGINT NOT NULL,
                kind TEXT NOT NULL, severity TEXT NOT NULL, reason TEXT NOT NULL, details TEXT NOT NULL, received BIGINT NOT NULL,
                PRIMARY KEY (agent_id, event_id))
            """,
            "CREATE INDEX IF NOT EXISTS events_received ON events (received)",
            "CREATE INDEX IF NOT EXISTS events_time ON events (time, agent_id, event_id)",
            """
            CREATE TABLE IF NOT EXISTS bundles (
                grp TEXT PRIMARY KEY, version BIGINT NOT NULL, policy_sha256 TEXT NOT NULL, bundle TEXT NOT NULL,
                pushed_at BIGINT NOT NULL, pushed_by TEXT NOT NULL)
            """,
            """
            CREATE TABLE IF NOT EXISTS enrollment_tokens (
                token_sha256 TEXT PRIMARY KEY, grp TEXT NOT NULL, created_at BIGINT NOT NULL, created_by TEXT NOT NULL,
                expires_at BIGINT NOT NULL, uses_left BIGINT NOT NULL)
            """,
            """
            CREATE TABLE IF NOT EXISTS devices (
                agent_id TEXT PRIMARY KEY, grp TEXT NOT NULL, serial TEXT NOT NULL, previous_serial TEXT, not_after BIGINT NOT NULL,
                enrolled_at BIGINT NOT NULL, enrolled_by TEXT NOT NULL, updated_at BIGINT NOT NULL)
            """,
            """
            CREATE TABLE IF NOT EXISTS admin_actions (
                id BIGSERIAL PRIMARY KEY, time BIGINT NOT NULL, who TEXT NOT NULL, action TEXT NOT NULL,
                target TEXT NOT NULL, detail TEXT NOT NULL)
            """,
            "SELECT pg_advisory_unlock(7305001)",
        ]
        do {
            try await client.withConnection { conn in
                for s in statements { try await conn.query(s, logger: logger) }
            }
        } catch {
            throw StoreError("PostgreSQL schema: \(String(reflecting: error))")
        }
    }

    /// The whole batch in one statement (one round trip, one commit): the agents' rows are
    /// upserted from arrays (unnest), the old stale flag comes back through was_stale, and
    /// the `agent-recovered` events of the agents that were stale are inserted by the same
    /// statement (a data-modifying WITH), their event counters bumped by the upsert itself.
    /// Atomic without BEGIN/COMMIT round trips; concurrent replicas serialize on the rows.
    /// Written through `heartbeatClient` (no wait for the WAL flush).
    public func recordHeartbeats(_ heartbeats: [(Heartbeat, AgentIdentity)], at time: Date) async throws -> [Bool] {
        let rows = HeartbeatRows(heartbeats)
        guard !rows.latest.isEmpty else { return [] }
        // Sorted by agent id: two replicas' batches lock shared rows in the same order (no deadlock).
        let statement = HeartbeatUpsert(rows.latest.sorted { $0.1.agentID < $1.1.agentID }, now: time)
        var recoveredIDs: Set<String> = []
        for try await id in try await heartbeatClient.execute(statement, logger: logger) { recoveredIDs.insert(id) }
        return rows.results(recovered: recoveredIDs)
    }

    static func insert(_ events: [ReportedEvent], agent: AgentIdentity, received: Int64, conn: PostgresConnection, logger: Logger) async throws -> Int {
        var inserted = 0
        for e in events {
            let details = try ColumnJSON.encode(e.details)
            let rows = try await conn.query(
                """
                INSERT INTO events (agent_id, event_id, grp, seq, time, kind, severity, reason, details, received)
                VALUES (\(agent.agentID), \(e.id), \(agent.group), \(e.seq), \(e.time.millis), \(e.kind), \(e.severity), \(e.reason), \(details), \(received))
                ON CONFLICT (agent_id, event_id) DO NOTHING RETURNING seq
                """, logger: logger)
            var new = false
            for try await _ in rows {
                inserted += 1
                new = true
            }
            if !new, !ReportedEvent.reservedIDPrefixes.contains(where: { e.id.hasPrefix($0) }) {
                // Stored before: a resend is fine, the same id with other content is not.
                let stored = try await conn.query(
                    "SELECT seq, time, kind, severity, reason, details FROM events WHERE agent_id = \(agent.agentID) AND event_id = \(e.id)",
                    logger: logger)
                for try await row in stored {
                    let r = row.makeRandomAccess()
                    let was = ReportedEvent(id: e.id, seq: try r["seq"].decode(Int64.self), time: Date(millis: try r["time"].decode(Int64.self)),
                                            kind: try r["kind"].decode(String.self), severity: try r["severity"].decode(String.self),
                                            reason: try r["reason"].decode(String.self),
                                            details: (try? ColumnJSON.decode([String: String].self, try r["details"].decode(String.self))) ?? [:])
                    if !was.sameContent(as: e) { throw EventIDConflict(stored: was, sent: e) }
                }
            }
        }
        if inserted > 0 {
            try await conn.query("UPDATE agents SET events = events + \(Int64(inserted)) WHERE agent_id = \(agent.agentID)", logger: logger)
        }
        return inserted
    }

    public func insertEvents(_ events: [ReportedEvent], from agent: AgentIdentity, at time: Date) async throws -> InsertResult {
        let received = time.millis
        let logger = self.logger
        let inserted: Int
        do {
            inserted = try await client.withTransaction(logger: logger) { conn in
                try await Self.insert(events, agent: agent, received: received, conn: conn, logger: logger)
            }
        } catch let e as PostgresTransactionError {
            // Rolled back because of the batch itself: say so, not "store unavailable".
            if let conflict = e.closureError as? EventIDConflict, e.rollbackError == nil { throw conflict }
            throw e
        }
        return InsertResult(inserted: inserted, duplicates: events.count - inserted)
    }

    static let agentColumns = """
        agent_id, grp, hostname, agent_version, policy_name, policy_sha256, bundle_version, segment, authorized, reason, interfaces,
        interval_s, spool_pending, spool_dropped, first_seen, last_seen, stale, heartbeats, events, spool_held, spool_oldest_s, cert_not_after,
        cert_serial
        """

    static func agent(_ row: PostgresRow) throws -> AgentRecord {
        let r = row.makeRandomAccess()
        return AgentRecord(
            agentID: try r["agent_id"].decode(String.self), group: try r["grp"].decode(String.self), hostname: try r["hostname"].decode(String.self),
            agentVersion: try r["agent_version"].decode(String.self), policyName: try r["policy_name"].decode(String.self),
            policySHA256: try r["policy_sha256"].decode(String.self), bundleVersion: try r["bundle_version"].decode(Int64?.self),
            segment: try r["segment"].decode(String.self), authorized: try r["authorized"].decode(Bool.self), reason: try r["reason"].decode(String.self),
            interfaces: try ColumnJSON.decode([InterfaceSummary].self, try r["interfaces"].decode(String.self)),
            intervalSeconds: Int(try r["interval_s"].decode(Int64.self)), spoolPending: Int(try r["spool_pending"].decode(Int64.self)),
            spoolDropped: Int(try r["spool_dropped"].decode(Int64.self)), firstSeen: Date(millis: try r["first_seen"].decode(Int64.self)),
            lastSeen: Date(millis: try r["last_seen"].decode(Int64.self)), stale: try r["stale"].decode(Bool.self),
            heartbeats: try r["heartbeats"].decode(Int64.self), events: try r["events"].decode(Int64.self),
            spoolHeld: Int(try r["spool_held"].decode(Int64.self)), spoolOldestSeconds: try r["spool_oldest_s"].decode(Int64?.self).map { Int($0) },
            certificateNotAfter: try r["cert_not_after"].decode(Int64?.self).map { Date(millis: $0) },
            certificateSerial: try r["cert_serial"].decode(String?.self))
    }

    public func agents(_ filter: AgentFilter) async throws -> [AgentRecord] {
        let like = filter.likePattern
        let limit = filter.limit.map { Int64(max(0, $0)) }
        let rows = try await client.query(
            """
            SELECT \(unescaped: Self.agentColumns) FROM agents
            WHERE (\(filter.group)::text IS NULL OR grp = \(filter.group))
              AND (\(filter.state)::text IS NULL OR (\(filter.state) = 'stale' AND stale)
                   OR (\(filter.state) = 'authorized' AND NOT stale AND authorized)
                   OR (\(filter.state) = 'unauthorized' AND NOT stale AND NOT authorized))
              AND (\(like)::text IS NULL OR lower(agent_id) LIKE \(like) OR lower(hostname) LIKE \(like))
              AND (\(filter.segment)::text IS NULL OR segment = \(filter.segment))
            ORDER BY grp, agent_id
            LIMIT \(limit) OFFSET \(Int64(max(0, filter.offset)))
            """, logger: logger)
        var out: [AgentRecord] = []
        for try await row in rows { out.append(try Self.agent(row)) }
        return out
    }

    public func agent(id: String) async throws -> AgentRecord? {
        let rows = try await client.query("SELECT \(unescaped: Self.agentColumns) FROM agents WHERE agent_id = \(id)", logger: logger)
        for try await row in rows { return try Self.agent(row) }
        return nil
    }

    public func groups() async throws -> [String] {
        let rows = try await client.query("SELECT DISTINCT grp FROM agents ORDER BY grp", logger: logger)
        var out: [String] = []
        for try await g in rows.decode(String.self) { out.append(g) }
        return out
    }

    public func segments() async throws -> [String] {
        let rows = try await client.query("SELECT DISTINCT segment FROM agents ORDER BY segment", logger: logger)
        var out: [String] = []
        for try await g in rows.decode(String.self) { out.append(g) }
        return out
    }

    public func revoke(_ r: Revocation, recording a: AdminAction) async throws -> Bool {
        // One statement: the revocation, and its action only when the serial was new.
        let rows = try await client.query(
            """
            WITH rev AS (
                INSERT INTO revocations (serial, agent_id, reason, time, who)
                VALUES (\(r.serial), \(r.agentID), \(r.reason), \(r.time.millis), \(r.by))
                ON CONFLICT (serial) DO NOTHING RETURNING serial),
            audit AS (
                INSERT INTO admin_actions (time, who, action, target, detail)
                SELECT \(a.time.millis), \(a.by), \(a.action), \(a.target), \(a.detail) WHERE EXISTS (SELECT 1 FROM rev))
            SELECT serial FROM rev
            """, logger: logger)
        for try await _ in rows { return true }
        return false
    }

    public func revocations() async throws -> [Revocation] {
        let rows = try await client.query("SELECT serial, agent_id, reason, time, who FROM revocations ORDER BY time, serial", logger: logger)
        var out: [Revocation] = []
        for try await (serial, agent, reason, time, who) in rows.decode((String, String, String, Int64, String).self) {
            out.append(Revocation(serial: serial, agentID: agent, reason: reason, time: Date(millis: time), by: who))
        }
        return out
    }

    public func recordAction(_ a: AdminAction) async throws {
        try await client.query(
            "INSERT INTO admin_actions (time, who, action, target, detail) VALUES (\(a.time.millis), \(a.by), \(a.action), \(a.target), \(a.detail))",
            logger: logger)
    }

    public func actions(limit: Int) async throws -> [AdminAction] {
        let rows = try await client.query(
            "SELECT time, who, action, target, detail FROM admin_actions ORDER BY id DESC LIMIT \(Int64(max(0, limit)))", logger: logger)
        var out: [AdminAction] = []
        for try await (time, who, action, target, detail) in rows.decode((Int64, String, String, String, String).self) {
            out.append(AdminAction(time: Date(millis: time), by: who, action: action, target: target, detail: detail))
        }
        return out
    }

    public func agentCount(_ filter: AgentFilter) async throws -> Int {
        let like = filter.likePattern
        let rows = try await client.query(
            """
            SELECT COUNT(*)::BIGINT AS n FROM agents
            WHERE (\(filter.group)::text IS NULL OR grp = \(filter.group))
              AND (\(filter.state)::text IS NULL OR (\(filter.state) = 'stale' AND stale)
                   OR (\(filter.state) = 'authorized' AND NOT stale AND authorized)
                   OR (\(filter.state) = 'unauthorized' AND NOT stale AND NOT authorized))
              AND (\(like)::text IS NULL OR lower(agent_id) LIKE \(like) OR lower(hostname) LIKE \(like))
              AND (\(filter.segment)::text IS NULL OR segment = \(filter.segment))
            """, logger: logger)
        for try await n in rows.decode(Int64.self) { return Int(n) }
        return 0
    }

    static func storedEvent(_ row: PostgresRow) throws -> StoredEvent {
        let r = row.makeRandomAccess()
        return StoredEvent(
            agentID: try r["agent_id"].decode(String.self), group: try r["grp"].decode(String.self),
            event: ReportedEvent(id: try r["event_id"].decode(String.self), seq: try r["seq"].decode(Int64.self),
                                 time: Date(millis: try r["time"].decode(Int64.self)), kind: try r["kind"].decode(String.self),
                                 severity: try r["severity"].decode(String.self), reason: try r["reason"].decode(String.self),
                                 details: try ColumnJSON.decode([String: String].self, try r["details"].decode(String.self))),
            receivedAt: Date(millis: try r["received"].decode(Int64.self)))
    }

    public func events(_ filter: EventFilter) async throws -> [StoredEvent] {
        let rows = try await client.query(
            """
            SELECT agent_id, event_id, grp, seq, time, kind, severity, reason, details, received FROM events
            WHERE (\(filter.agentID)::text IS NULL OR agent_id = \(filter.agentID)) AND (\(filter.group)::text IS NULL OR grp = \(filter.group))
              AND (\(filter.kind)::text IS NULL OR kind = \(filter.kind))
            ORDER BY received DESC, time DESC, seq DESC LIMIT \(Int64(max(0, filter.limit)))
            """, logger: logger)
        var out: [StoredEvent] = []
        for try await row in rows { out.append(try Self.storedEvent(row)) }
        return out
    }

    /// The advisory lock key of the stale sweep (transaction-scoped: released at commit).
    static let staleSweepLock: Int64 = 7305002

    public func markStale(now: Date, intervals: Int) async throws -> [AgentRecord] {
        let nowMs = now.millis
        let logger = self.logger
        return try await client.withTransaction(logger: logger) { conn -> [AgentRecord] in
            // One replica sweeps at a time (the others skip this round; the next sweep is
            // seconds away): no two replicas mark and record the same agents concurrently.
            let lock = try await conn.query("SELECT pg_try_advisory_xact_lock(\(Self.staleSweepLock))", logger: logger)
            for try await got in lock.decode(Bool.self) where !got { return [] }
            let rows = try await conn.query(
                """
                UPDATE agents SET stale = TRUE WHERE agent_id IN (
                    SELECT agent_id FROM agents WHERE NOT stale
                      AND last_seen + LEAST(interval_s, \(Int64(ReportRule.maxHeartbeatSeconds))) * 1000 * \(Int64(intervals)) < \(nowMs)
                    ORDER BY agent_id FOR UPDATE)
                  AND NOT stale
                RETURNING \(unescaped: Self.agentColumns)
                """, logger: logger)
            var agents: [AgentRecord] = []
            for try await row in rows { agents.append(try Self.agent(row)) }
            for a in agents {
                _ = try await Self.insert([staleEvent(for: a, now: now, intervals: intervals)], agent: AgentIdentity(agentID: a.agentID, group: a.group),
                                          received: nowMs, conn: conn, logger: logger)
            }
            return agents
        }
    }

    public func putBundle(_ bundle: StoredBundle, recording action: AdminAction?) async throws -> PutBundleResult {
        let json = try ColumnJSON.encode(bundle.bundle)
        // One statement: stored only when newer (then the action is recorded by the same
        // statement); otherwise the current version comes back.
        let a = action
        let rows = try await client.query(
            """
            WITH up AS (
                INSERT INTO bundles (grp, version, policy_sha256, bundle, pushed_at, pushed_by)
                VALUES (\(bundle.group), \(bundle.version), \(bundle.policySHA256), \(json), \(bundle.pushedAt.millis), \(bundle.pushedBy))
                ON CONFLICT (grp) DO UPDATE SET version = EXCLUDED.version, policy_sha256 = EXCLUDED.policy_sha256, bundle = EXCLUDED.bundle,
                    pushed_at = EXCLUDED.pushed_at, pushed_by = EXCLUDED.pushed_by
                WHERE bundles.version < EXCLUDED.version
                RETURNING version),
            audit AS (
                INSERT INTO admin_actions (time, who, action, target, detail)
                SELECT \(a?.time.millis ?? 0), \(a?.by ?? ""), \(a?.action ?? ""), \(a?.target ?? ""), \(a?.detail ?? "")
                WHERE \(a != nil) AND EXISTS (SELECT 1 FROM up))
            SELECT version FROM up
            """, logger: logger)
        for try await _ in rows { return .stored }
        let current = try await self.bundle(group: bundle.group)?.version ?? bundle.version
        return .notNewer(current: current)
    }

    public func bundle(group: String) async throws -> StoredBundle? {
        let rows = try await client.query(
            "SELECT grp, version, policy_sha256, bundle, pushed_at, pushed_by FROM bundles WHERE grp = \(group)", logger: logger)
        for try await row in rows {
            let r = row.makeRandomAccess()
            return StoredBundle(
                group: try r["grp"].decode(String.self), version: try r["version"].decode(Int64.self), policySHA256: try r["policy_sha256"].decode(String.self),
                bundle: try ColumnJSON.decode(SignedPolicyBundle.self, try r["bundle"].decode(String.self)),
                pushedAt: Date(millis: try r["pushed_at"].decode(Int64.self)), pushedBy: try r["pushed_by"].decode(String.self))
        }
        return nil
    }

    public func exportEvents(_ range: ExportRange, after cursor: ExportCursor?, limit: Int) async throws -> [StoredEvent] {
        let c = cursor
        let rows = try await client.query(
            """
            SELECT agent_id, event_id, grp, seq, time, kind, severity, reason, details, received FROM events
            WHERE time >= \(range.from.millis) AND time < \(range.to.millis)
              AND (\(range.group)::text IS NULL OR grp = \(range.group)) AND (\(range.agentID)::text IS NULL OR agent_id = \(range.agentID))
              AND (\(c?.timeMillis)::bigint IS NULL OR (time, agent_id, event_id) > (\(c?.timeMillis)::bigint, \(c?.agentID)::text, \(c?.eventID)::text))
            ORDER BY time, agent_id, event_id LIMIT \(Int64(max(1, limit)))
            """, logger: logger)
        var out: [StoredEvent] = []
        for try await row in rows { out.append(try Self.storedEvent(row)) }
        return out
    }

    /// One replica prunes at a time (the others skip: the same rows would go either way).
    public func pruneEvents(receivedBefore date: Date) async throws -> Int {
        let logger = self.logger
        return try await client.withTransaction(logger: logger) { conn -> Int in
            let lock = try await conn.query("SELECT pg_try_advisory_xact_lock(\(Self.retentionLock))", logger: logger)
            for try await got in lock.decode(Bool.self) where !got { return 0 }
            let rows = try await conn.query("DELETE FROM events WHERE received < \(date.millis) RETURNING 1", logger: logger)
            var n = 0
            for try await _ in rows { n += 1 }
            return n
        }
    }

    /// The advisory lock key of the retention job.
    static let retentionLock: Int64 = 7305004

    public func counts(expiringBefore: Date) async throws -> StoreCounts {
        let rows = try await client.query(
            """
            SELECT COUNT(*)::BIGINT AS n, COUNT(*) FILTER (WHERE NOT stale AND authorized)::BIGINT AS ok,
                   COUNT(*) FILTER (WHERE NOT stale AND NOT authorized)::BIGINT AS bad, COUNT(*) FILTER (WHERE stale)::BIGINT AS stale,
                   COUNT(*) FILTER (WHERE spool_held > 0 OR COALESCE(spool_oldest_s, 0) > \(unescaped: "\(AgentRecord.backlogSeconds)"))::BIGINT AS backlog,
                   COALESCE(SUM(spool_held), 0)::BIGINT AS held,
                   COUNT(*) FILTER (WHERE cert_not_after < \(expiringBefore.millis))::BIGINT AS expiring,
                   (SELECT COUNT(*) FROM events)::BIGINT AS events FROM agents
            """, logger: logger)
        for try await row in rows {
            let r = row.makeRandomAccess()
            return StoreCounts(agents: Int(try r["n"].decode(Int64.self)), authorized: Int(try r["ok"].decode(Int64.self)),
                               unauthorized: Int(try r["bad"].decode(Int64.self)), stale: Int(try r["stale"].decode(Int64.self)),
                               events: try r["events"].decode(Int64.self), backlogged: Int(try r["backlog"].decode(Int64.self)),
                               heldEvents: try r["held"].decode(Int64.self), certificatesExpiring: Int(try r["expiring"].decode(Int64.self)))
        }
        return StoreCounts()
    }
}
