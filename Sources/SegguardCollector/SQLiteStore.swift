// The embedded default store: one SQLite file in WAL mode and two connections, each on a
// thread of its own (see `pools`). Events,
// bundles and stale marks: synchronous=FULL (an acknowledged event survives a power cut),
// transactions serialized. Heartbeats (and the agent-recovered event their statement
// writes): their own connection with synchronous=NORMAL (a crash of the collector loses
// nothing; a power cut may lose the last ones).

import Foundation
import Logging
import NIOCore
import NIOPosix
import SQLiteNIO
import SegguardPolicy
import SegguardReport

/// Runs async operations one after another (a transaction must not interleave with another
/// on the same connection).
actor SerialRunner {
    private var tail: Task<Void, Never>?

    func run<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) async throws -> T {
        let previous = tail
        let task = Task { () async throws -> T in
            _ = await previous?.value
            return try await operation()
        }
        tail = Task { _ = try? await task.value }
        return try await task.value
    }
}

/// The collector's SQLite store (`--store sqlite:PATH`).
public final class SQLiteStore: CollectorStore {
    /// Events, bundles, stale marks, reads: synchronous=FULL, transactions serialized.
    let connection: SQLiteConnection
    /// The heartbeat writer's own connection: synchronous=NORMAL. A heartbeat is soft state,
    /// replaced by the agent's next one: its commit does not wait for the disk flush (it
    /// survives a crash of the collector; a power cut may lose the last ones). One statement
    /// per batch, so nothing to serialize beyond SQLite's own write lock.
    let heartbeatConnection: SQLiteConnection
    let serial = SerialRunner()
    /// One thread per connection, not SQLiteNIO's default (NIO's shared blocking pool, as
    /// many threads as cores). A statement waiting for SQLite's write lock sleeps in the busy
    /// handler on its thread; with a shared pool, statements waiting like that (this store's
    /// and any other's in the process) could hold every thread while the transaction that
    /// holds the lock waited for one to run its COMMIT: every writer then failed with
    /// "database is locked" after busy_timeout. Seen on a 2-core CI run.
    let pools: [NIOThreadPool]
    public let path: String

    public init(path: String, logger: Logger = Logger(label: "segguard-collector.sqlite")) async throws {
        self.path = path
        let pools = [NIOThreadPool(numberOfThreads: 1), NIOThreadPool(numberOfThreads: 1)]
        pools.forEach { $0.start() }
        self.pools = pools
        do {
            connection = try await Self.open(path, synchronous: "FULL", on: pools[0], logger: logger)
        } catch {
            for pool in pools { try? await pool.shutdownGracefully() }
            throw error
        }
        do {
            heartbeatConnection = try await Self.open(path, synchronous: "NORMAL", on: pools[1], logger: logger)
        } catch {
            try? await connection.close()
            for pool in pools { try? await pool.shutdownGracefully() }
            throw error
        }
    }

    static func open(_ path: String, synchronous: String, on pool: NIOThreadPool, logger: Logger) async throws -> SQLiteConnection {
        let connection: SQLiteConnection
        do {
            connection = try await SQLiteConnection.open(storage: .file(path: path), threadPool: pool, logger: logger, on: MultiThreadedEventLoopGroup.singleton.any())
        } catch {
            throw StoreError("cannot open the SQLite store \(path): \(error)")
        }
        do {
            for pragma in ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=\(synchronous)", "PRAGMA foreign_keys=ON", "PRAGMA busy_timeout=5000"] {
                _ = try await connection.query(pragma)
            }
        } catch {
            try? await connection.close()
            throw StoreError("cannot set up the SQLite store \(path): \(error)")
        }
        return connection
    }

    public func close() async throws {
        if !heartbeatConnection.isClosed { try? await heartbeatConnection.close() }
        defer { Self.shutDown(pools) }
        if !connection.isClosed { try await connection.close() }
    }

    /// Stops the connections' threads (after their close has run; work queued after that is
    /// cancelled by NIO, and a second shutdown does nothing).
    static func shutDown(_ pools: [NIOThreadPool]) {
        for pool in pools { pool.shutdownGracefully { _ in } }
    }

    /// A store dropped without `close()` (a collector torn down by a failure, a test cancelled
    /// at its time limit) closes its connections on their thread pool instead of reaching
    /// SQLiteNIO's deinit open: in debug builds that is an assertion that ends the process.
    deinit {
        let pools = self.pools
        let open = [connection, heartbeatConnection].filter { !$0.isClosed }
        guard !open.isEmpty else { return }
        let closing = open.map { c -> EventLoopFuture<Void> in
            let f: EventLoopFuture<Void> = c.close()
            return f.map { _ = c }
        }
        EventLoopFuture.andAllComplete(closing, on: closing[0].eventLoop).whenComplete { _ in Self.shutDown(pools) }
    }

    static let schema = [
        """
        CREATE TABLE IF NOT EXISTS agents (
            agent_id TEXT PRIMARY KEY, grp TEXT NOT NULL, hostname TEXT NOT NULL, agent_version TEXT NOT NULL,
            policy_name TEXT NOT NULL, policy_sha256 TEXT NOT NULL, bundle_version INTEGER,
            segment TEXT NOT NULL, authorized INTEGER NOT NULL, reason TEXT NOT NULL, interfaces TEXT NOT NULL,
            interval_s INTEGER NOT NULL, spool_pending INTEGER NOT NULL, spool_dropped INTEGER NOT NULL,
            first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, stale INTEGER NOT NULL DEFAULT 0,
            heartbeats INTEGER NOT NULL DEFAULT 0, events INTEGER NOT NULL DEFAULT 0, was_stale INTEGER NOT NULL DEFAULT 0,
            spool_held INTEGER NOT NULL DEFAULT 0, spool_oldest_s INTEGER, cert_not_after INTEGER, cert_serial TEXT)
        """,
        "CREATE INDEX IF NOT EXISTS agents_group ON agents (grp)",
        """
        CREATE TABLE IF NOT EXISTS events (
            agent_id TEXT NOT NULL, event_id TEXT NOT NULL, grp TEXT NOT NULL, seq INTEGER NOT NULL, time INTEGER NOT NULL,
            kind TEXT NOT NULL, severity TEXT NOT NULL, reason TEXT NOT NULL, details TEXT NOT NULL, received INTEGER NOT NULL,
            PRIMARY KEY (agent_id, event_id))
        """,
        "CREATE INDEX IF NOT EXISTS events_received ON events (received)",
        // The evidence export reads by event time.
        "CREATE INDEX IF NOT EXISTS events_time ON events (time, agent_id, event_id)",
        // An agent that heartbeats again after being stale gets its agent-recovered event in
        // the heartbeat's own statement (the event counter is bumped by the upsert). Not
        // `INSERT OR IGNORE`: inside the DO UPDATE of an upsert SQLite runs triggers with the
        // upsert's ABORT policy, so an existing id would fail the whole batch.
        "DROP TRIGGER IF EXISTS agents_recovered",
        """
        CREATE TRIGGER IF NOT EXISTS agents_recovered_v2 AFTER UPDATE OF stale ON agents WHEN OLD.stale = 1 AND NEW.stale = 0
        BEGIN
            INSERT INTO events (agent_id, event_id, grp, seq, time, kind, severity, reason, details, received)
            SELECT NEW.agent_id, '\(RecoveredEvent.idPrefix)' || NEW.last_seen, NEW.grp, 0, NEW.last_seen, '\(RecoveredEvent.kind)', '\(RecoveredEvent.severity)',
                   '\(RecoveredEvent.reason)', '\(RecoveredEvent.detailsJSON)', NEW.last_seen
            WHERE NOT EXISTS (SELECT 1 FROM events WHERE agent_id = NEW.agent_id AND event_id = '\(RecoveredEvent.idPrefix)' || NEW.last_seen);
        END
        """,
        """
        CREATE TABLE IF NOT EXISTS bundles (
            grp TEXT PRIMARY KEY, version INTEGER NOT NULL, policy_sha256 TEXT NOT NULL, bundle TEXT NOT NULL,
            pushed_at INTEGER NOT NULL, pushed_by TEXT NOT NULL)
        """,
        """
        CREATE TABLE IF NOT EXISTS revocations (
            serial TEXT PRIMARY KEY, agent_id TEXT NOT NULL, reason TEXT NOT NULL, time INTEGER NOT NULL, who TEXT NOT NULL)
        """,
        """
        CREATE TABLE IF NOT EXISTS enrollment_tokens (
            token_sha256 TEXT PRIMARY KEY, grp TEXT NOT NULL, created_at INTEGER NOT NULL, created_by TEXT NOT NULL,
            expires_at INTEGER NOT NULL, uses_left INTEGER NOT NULL)
        """,
        """
        CREATE TABLE IF NOT EXISTS devices (
            agent_id TEXT PRIMARY KEY, grp TEXT NOT NULL, serial TEXT NOT NULL, previous_serial TEXT, not_after INTEGER NOT NULL,
            enrolled_at INTEGER NOT NULL, enrolled_by TEXT NOT NULL, updated_at INTEGER NOT NULL)
        """,
        """
        CREATE TABLE IF NOT EXISTS admin_actions (
            id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, who TEXT NOT NULL, action TEXT NOT NULL,
            target TEXT NOT NULL, detail TEXT NOT NULL)
        """,
    ]

    public func migrate() async throws {
        try await serial.run { [connection] in
            for statement in Self.schema { _ = try await connection.query(statement) }
            // Stores made before was_stale existed (0.x) get the column.
            let columns = try await connection.query("PRAGMA table_info(agents)").compactMap { $0.column("name")?.string }
            if !columns.contains("was_stale") {
                _ = try await connection.query("ALTER TABLE agents ADD COLUMN was_stale INTEGER NOT NULL DEFAULT 0")
            }
            // Wire 2 (held events, oldest undelivered age).
            if !columns.contains("spool_held") {
                _ = try await connection.query("ALTER TABLE agents ADD COLUMN spool_held INTEGER NOT NULL DEFAULT 0")
                _ = try await connection.query("ALTER TABLE agents ADD COLUMN spool_oldest_s INTEGER")
            }
            // The client certificate's end of validity.
            if !columns.contains("cert_not_after") {
                _ = try await connection.query("ALTER TABLE agents ADD COLUMN cert_not_after INTEGER")
            }
            if !columns.contains("cert_serial") {
                _ = try await connection.query("ALTER TABLE agents ADD COLUMN cert_serial TEXT")
            }
        }
    }

    /// BEGIN IMMEDIATE ... COMMIT around `body`, rolled back on error.
    func transaction<T: Sendable>(_ body: @escaping @Sendable (SQLiteConnection) async throws -> T) async throws -> T {
        try await serial.run { [connection] in
            _ = try await connection.query("BEGIN IMMEDIATE")
            do {
                let result = try await body(connection)
                _ = try await connection.query("COMMIT")
                return result
            } catch {
                _ = try? await connection.query("ROLLBACK")
                throw error
            }
        }
    }

    /// One multi-row upsert for the whole batch: one statement in its own (autocommit)
    /// transaction on the heartbeat connection, committed without waiting for the disk. The upsert keeps the old stale flag in was_stale and returns
    /// it, so finding the agents that come back from stale costs no extra read; their
    /// `agent-recovered` events are written by the agents_recovered trigger, in the same
    /// statement.
    public func recordHeartbeats(_ heartbeats: [(Heartbeat, AgentIdentity)], at time: Date) async throws -> [Bool] {
        let rows = HeartbeatRows(heartbeats)
        guard !rows.latest.isEmpty else { return [] }
        let now = time.millis
        var binds: [SQLiteData] = []
        binds.reserveCapacity(rows.latest.count * 17)
        for (hb, agent, interfaces, count) in rows.latest {
            binds += [.text(agent.agentID), .text(agent.group), .text(hb.hostname), .text(hb.agentVersion), .text(hb.policy.name),
                      .text(hb.policy.sha256), hb.policy.bundleVersion.map { .integer(SQLiteInt64($0)) } ?? .null, .text(hb.decision.segment),
                      .integer(hb.decision.authorized ? 1 : 0), .text(hb.decision.reason), .text(interfaces), .integer(SQLiteInt64(hb.intervalSeconds)),
                      .integer(SQLiteInt64(hb.spool.pending)), .integer(SQLiteInt64(hb.spool.dropped)), .integer(SQLiteInt64(count)),
                      .integer(SQLiteInt64(hb.spool.held ?? 0)), hb.spool.oldestSeconds.map { .integer(SQLiteInt64($0)) } ?? .null,
                      agent.certificateNotAfter.map { .integer(SQLiteInt64($0.millis)) } ?? .null,
                      agent.certificateSerial.map { .text($0) } ?? .null]
        }
        let values = Array(repeating: "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, \(now), \(now), 0, ?, ?, ?, ?, ?)", count: rows.latest.count).joined(separator: ", ")
        let sql = """
            INSERT INTO agents (agent_id, grp, hostname, agent_version, policy_name, policy_sha256, bundle_version, segment,
                authorized, reason, interfaces, interval_s, spool_pending, spool_dropped, first_seen, last_seen, stale, heartbeats,
                spool_held, spool_oldest_s, cert_not_after, cert_serial)
            VALUES \(values)
            ON CONFLICT (agent_id) DO UPDATE SET grp = excluded.grp, hostname = excluded.hostname, agent_version = excluded.agent_version,
                policy_name = excluded.policy_name, policy_sha256 = excluded.policy_sha256, bundle_version = excluded.bundle_version,
                segment = excluded.segment, authorized = excluded.authorized, reason = excluded.reason, interfaces = excluded.interfaces,
                interval_s = excluded.interval_s, spool_pending = excluded.spool_pending, spool_dropped = excluded.spool_dropped,
                spool_held = excluded.spool_held, spool_oldest_s = excluded.spool_oldest_s,
                cert_not_after = COALESCE(excluded.cert_not_after, cert_not_after), cert_serial = COALESCE(excluded.cert_serial, cert_serial),
                last_seen = excluded.last_seen, was_stale = stale, stale = 0, heartbeats = heartbeats + excluded.heartbeats,
                events = events + stale
            RETURNING agent_id, was_stale
            """
        let written = try await heartbeatConnection.query(sql, binds)
        let recoveredIDs = Set(written.filter { $0.column("was_stale")?.integer == 1 }.compactMap { $0.column("agent_id")?.string })
        return rows.results(recovered: recoveredIDs)
    }

    static func insert(_ events: [ReportedEvent], agent: AgentIdentity, received: Int64, db: SQLiteConnection) async throws -> Int {
        var inserted = 0
        for e in events {
            let rows = try await db.query(
                """
                INSERT INTO events (agent_id, event_id, grp, seq, time, kind, severity, reason, details, received)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (agent_id, event_id) DO NOTHING RETURNING seq
                """,
                [.text(agent.agentID), .text(e.id), .text(agent.group), .integer(SQLiteInt64(e.seq)), .integer(SQLiteInt64(e.time.millis)),
                 .text(e.kind), .text(e.severity), .text(e.reason), .text(try ColumnJSON.encode(e.details)), .integer(SQLiteInt64(received))])
            inserted += rows.count
            if rows.isEmpty, !ReportedEvent.reservedIDPrefixes.contains(where: { e.id.hasPrefix($0) }) {
                // Stored before: a resend is fine, the same id with other content is not.
                let stored = try await db.query(
                    "SELECT seq, time, kind, severity, reason, details FROM events WHERE agent_id = ? AND event_id = ?",
                    [.text(agent.agentID), .text(e.id)]).first
                if let r = stored {
                    let was = ReportedEvent(id: e.id, seq: Int64(r.column("seq")?.integer ?? 0), time: Date(millis: Int64(r.column("time")?.integer ?? 0)),
                                            kind: r.column("kind")?.string ?? "", severity: r.column("severity")?.string ?? "",
                                            reason: r.column("reason")?.string ?? "",
                                            details: (try? ColumnJSON.decode([String: String].self, r.column("details")?.string ?? "{}")) ?? [:])
                    if !was.sameContent(as: e) { throw EventIDConflict(stored: was, sent: e) }
                }
            }
        }
        if inserted > 0 {
            _ = try await db.query("UPDATE agents SET events = events + ? WHERE agent_id = ?", [.integer(SQLiteInt64(inserted)), .text(agent.agentID)])
        }
        return inserted
    }

    public func insertEvents(_ events: [ReportedEvent], from agent: AgentIdentity, at time: Date) async throws -> InsertResult {
        let received = time.millis
        let inserted = try await transaction { db in try await Self.insert(events, agent: agent, received: received, db: db) }
        return InsertResult(inserted: inserted, duplicates: events.count - inserted)
    }

    static let agentColumns = """
        agent_id, grp, hostname, agent_version, policy_name, policy_sha256, bundle_version, segment, authorized, reason, interfaces,
        interval_s, spool_pending, spool_dropped, first_seen, last_seen, stale, heartbeats, events, spool_held, spool_oldest_s, cert_not_after,
        cert_serial
        """

    static func agent(_ r: SQLiteRow) throws -> AgentRecord {
        func s(_ c: String) -> String { r.column(c)?.string ?? "" }
        func i(_ c: String) -> Int64 { Int64(r.column(c)?.integer ?? 0) }
        return AgentRecord(
            agentID: s("agent_id"), group: s("grp"), hostname: s("hostname"), agentVersion: s("agent_version"), policyName: s("policy_name"),
            policySHA256: s("policy_sha256"), bundleVersion: r.column("bundle_version")?.integer.map { Int64($0) }, segment: s("segment"),
            authorized: i("authorized") == 1, reason: s("reason"), interfaces: try ColumnJSON.decode([InterfaceSummary].self, s("interfaces")),
            intervalSeconds: Int(i("interval_s")), spoolPending: Int(i("spool_pending")), spoolDropped: Int(i("spool_dropped")),
            firstSeen: Date(millis: i("first_seen")), lastSeen: Date(millis: i("last_seen")), stale: i("stale") == 1,
            heartbeats: i("heartbeats"), events: i("events"), spoolHeld: Int(i("spool_held")),
            spoolOldestSeconds: r.column("spool_oldest_s")?.integer.map { Int($0) },
            certificateNotAfter: r.column("cert_not_after")?.integer.map { Date(millis: Int64($0)) },
            certificateSerial: r.column("cert_serial")?.string)
    }

    /// The WHERE clause and binds of an agent filter (offset and limit aside).
    static func agentConditions(_ filter: AgentFilter) -> (sql: String, binds: [SQLiteData]) {
        var conditions: [String] = []
        var binds: [SQLiteData] = []
        if let g = filter.group { conditions.append("grp = ?"); binds.append(.text(g)) }
        switch filter.state {
        case "stale": conditions.append("stale = 1")
        case "authorized": conditions.append("stale = 0 AND authorized = 1")
        case "unauthorized": conditions.append("stale = 0 AND authorized = 0")
        default: break
        }
        if let like = filter.likePattern {
            conditions.append("(lower(agent_id) LIKE ? ESCAPE '\\' OR lower(hostname) LIKE ? ESCAPE '\\')")
            binds += [.text(like), .text(like)]
        }
        if let s = filter.segment { conditions.append("segment = ?"); binds.append(.text(s)) }
        return (conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND "), binds)
    }

    public func agents(_ filter: AgentFilter) async throws -> [AgentRecord] {
        var (whereClause, binds) = Self.agentConditions(filter)
        var sql = "SELECT \(Self.agentColumns) FROM agents \(whereClause) ORDER BY grp, agent_id"
        if let limit = filter.limit {
            sql += " LIMIT ? OFFSET ?"
            binds += [.integer(SQLiteInt64(max(0, limit))), .integer(SQLiteInt64(max(0, filter.offset)))]
        }
        let values = binds, query = sql
        return try await serial.run { [connection] in try await connection.query(query, values).map(Self.agent) }
    }

    public func agent(id: String) async throws -> AgentRecord? {
        try await serial.run { [connection] in
            try await connection.query("SELECT \(Self.agentColumns) FROM agents WHERE agent_id = ?", [.text(id)]).first.map(Self.agent)
        }
    }

    public func groups() async throws -> [String] {
        try await serial.run { [connection] in
            try await connection.query("SELECT DISTINCT grp FROM agents ORDER BY grp").compactMap { $0.column("grp")?.string }
        }
    }

    public func segments() async throws -> [String] {
        try await serial.run { [connection] in
            try await connection.query("SELECT DISTINCT segment FROM agents ORDER BY segment").compactMap { $0.column("segment")?.string }
        }
    }

    public func revoke(_ r: Revocation, recording action: AdminAction) async throws -> Bool {
        try await transaction { db in
            let inserted = try await db.query(
                "INSERT INTO revocations (serial, agent_id, reason, time, who) VALUES (?, ?, ?, ?, ?) ON CONFLICT (serial) DO NOTHING RETURNING serial",
                [.text(r.serial), .text(r.agentID), .text(r.reason), .integer(SQLiteInt64(r.time.millis)), .text(r.by)]).count == 1
            if inserted { try await Self.insert(action: action, db: db) }
            return inserted
        }
    }

    public func revocations() async throws -> [Revocation] {
        try await serial.run { [connection] in
            try await connection.query("SELECT serial, agent_id, reason, time, who FROM revocations ORDER BY time, serial").map { r in
                Revocation(serial: r.column("serial")?.string ?? "", agentID: r.column("agent_id")?.string ?? "", reason: r.column("reason")?.string ?? "",
                           time: Date(millis: Int64(r.column("time")?.integer ?? 0)), by: r.column("who")?.string ?? "")
            }
        }
    }

    public func recordAction(_ a: AdminAction) async throws {
        try await transaction { db in try await Self.insert(action: a, db: db) }
    }

    static func insert(action a: AdminAction, db: SQLiteConnection) async throws {
        _ = try await db.query("INSERT INTO admin_actions (time, who, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                               [.integer(SQLiteInt64(a.time.millis)), .text(a.by), .text(a.action), .text(a.target), .text(a.detail)])
    }

    public func actions(limit: Int) async throws -> [AdminAction] {
        try await serial.run { [connection] in
            try await connection.query("SELECT time, who, action, target, detail FROM admin_actions ORDER BY id DESC LIMIT ?",
                                       [.integer(SQLiteInt64(max(0, limit)))]).map { r in
                AdminAction(time: Date(millis: Int64(r.column("time")?.integer ?? 0)), by: r.column("who")?.string ?? "",
                            action: r.column("action")?.string ?? "", target: r.column("target")?.string ?? "", detail: r.column("detail")?.string ?? "")
            }
        }
    }

    public func agentCount(_ filter: AgentFilter) async throws -> Int {
        let (whereClause, binds) = Self.agentConditions(filter)
        let values = binds
        return try await serial.run { [connection] in
            Int(try await connection.query("SELECT COUNT(*) AS n FROM agents \(whereClause)", values).first?.column("n")?.integer ?? 0)
        }
    }

    public func events(_ filter: EventFilter) async throws -> [StoredEvent] {
        var conditions: [String] = []
        var binds: [SQLiteData] = []
        if let a = filter.agentID { conditions.append("agent_id = ?"); binds.append(.text(a)) }
        if let g = filter.group { conditions.append("grp = ?"); binds.append(.text(g)) }
        if let k = filter.kind { conditions.append("kind = ?"); binds.append(.text(k)) }
        let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        binds.append(.integer(SQLiteInt64(max(0, filter.limit))))
        let sql = """
            SELECT agent_id, event_id, grp, seq, time, kind, severity, reason, details, received FROM events \(whereClause)
            ORDER BY received DESC, time DESC, seq DESC LIMIT ?
            """
        let values = binds
        return try await serial.run { [connection] in try await connection.query(sql, values).map(Self.storedEvent) }
    }

    static func storedEvent(_ r: SQLiteRow) throws -> StoredEvent {
        func s(_ c: String) -> String { r.column(c)?.string ?? "" }
        func i(_ c: String) -> Int64 { Int64(r.column(c)?.integer ?? 0) }
        return StoredEvent(
            agentID: s("agent_id"), group: s("grp"),
            event: ReportedEvent(id: s("event_id"), seq: i("seq"), time: Date(millis: i("time")), kind: s("kind"), severity: s("severity"),
                                 reason: s("reason"), details: try ColumnJSON.decode([String: String].self, s("details"))),
            receivedAt: Date(millis: i("received")))
    }

    public func exportEvents(_ range: ExportRange, after cursor: ExportCursor?, limit: Int) async throws -> [StoredEvent] {
        var conditions = ["time >= ?", "time < ?"]
        var binds: [SQLiteData] = [.integer(SQLiteInt64(range.from.millis)), .integer(SQLiteInt64(range.to.millis))]
        if let g = range.group { conditions.append("grp = ?"); binds.append(.text(g)) }
        if let a = range.agentID { conditions.append("agent_id = ?"); binds.append(.text(a)) }
        if let c = cursor {
            conditions.append("(time, agent_id, event_id) > (?, ?, ?)")
            binds += [.integer(SQLiteInt64(c.timeMillis)), .text(c.agentID), .text(c.eventID)]
        }
        binds.append(.integer(SQLiteInt64(max(1, limit))))
        let sql = """
            SELECT agent_id, event_id, grp, seq, time, kind, severity, reason, details, received FROM events
            WHERE \(conditions.joined(separator: " AND ")) ORDER BY time, agent_id, event_id LIMIT ?
            """
        let values = binds
        return try await serial.run { [connection] in try await connection.query(sql, values).map(Self.storedEvent) }
    }

    public func pruneEvents(receivedBefore date: Date) async throws -> Int {
        let cutoff = date.millis
        return try await transaction { db in
            let n = try await db.query("DELETE FROM events WHERE received < ? RETURNING 1", [.integer(SQLiteInt64(cutoff))]).count
            return n
        }
    }

    public func markStale(now: Date, intervals: Int) async throws -> [AgentRecord] {
        let nowMs = now.millis
        return try await transaction { db in
            let rows = try await db.query(
                "UPDATE agents SET stale = 1 WHERE stale = 0 AND last_seen + MIN(interval_s, ?) * 1000 * ? < ? RETURNING \(Self.agentColumns)",
                [.integer(SQLiteInt64(ReportRule.maxHeartbeatSeconds)), .integer(SQLiteInt64(intervals)), .integer(SQLiteInt64(nowMs))])
            let agents = try rows.map(Self.agent)
            for a in agents {
                _ = try await Self.insert([staleEvent(for: a, now: now, intervals: intervals)], agent: AgentIdentity(agentID: a.agentID, group: a.group),
                                          received: nowMs, db: db)
            }
            return agents
        }
    }

    public func putBundle(_ bundle: StoredBundle, recording action: AdminAction?) async throws -> PutBundleResult {
        let json = try ColumnJSON.encode(bundle.bundle)
        return try await transaction { db in
            if let current = try await db.query("SELECT version FROM bundles WHERE grp = ?", [.text(bundle.group)]).first?.column("version")?.integer,
               Int64(current) >= bundle.version {
                return .notNewer(current: Int64(current))
            }
            _ = try await db.query(
                """
                INSERT INTO bundles (grp, version, policy_sha256, bundle, pushed_at, pushed_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                ON CONFLICT (grp) DO UPDATE SET version = ?2, policy_sha256 = ?3, bundle = ?4, pushed_at = ?5, pushed_by = ?6
                """,
                [.text(bundle.group), .integer(SQLiteInt64(bundle.version)), .text(bundle.policySHA256), .text(json),
                 .integer(SQLiteInt64(bundle.pushedAt.millis)), .text(bundle.pushedBy)])
            if let a = action { try await Self.insert(action: a, db: db) }
            return .stored
        }
    }

    public func bundle(group: String) async throws -> StoredBundle? {
        try await serial.run { [connection] in
            guard let r = try await connection.query(
                "SELECT grp, version, policy_sha256, bundle, pushed_at, pushed_by FROM bundles WHERE grp = ?", [.text(group)]).first
            else { return nil }
            return StoredBundle(
                group: r.column("grp")?.string ?? "", version: Int64(r.column("version")?.integer ?? 0),
                policySHA256: r.column("policy_sha256")?.string ?? "",
                bundle: try ColumnJSON.decode(SignedPolicyBundle.self, r.column("bundle")?.string ?? ""),
                pushedAt: Date(millis: Int64(r.column("pushed_at")?.integer ?? 0)), pushedBy: r.column("pushed_by")?.string ?? "")
        }
    }

    public func counts(expiringBefore: Date) async throws -> StoreCounts {
        let limit = expiringBefore.millis
        return try await serial.run { [connection] in
            let a = try await connection.query(
                """
                SELECT COUNT(*) AS n, COALESCE(SUM(CASE WHEN stale = 0 AND authorized = 1 THEN 1 ELSE 0 END), 0) AS ok,
                       COALESCE(SUM(CASE WHEN stale = 0 AND authorized = 0 THEN 1 ELSE 0 END), 0) AS bad,
                       COALESCE(SUM(stale), 0) AS stale,
                       COALESCE(SUM(CASE WHEN spool_held > 0 OR COALESCE(spool_oldest_s, 0) > \(AgentRecord.backlogSeconds) THEN 1 ELSE 0 END), 0) AS backlog,
                       COALESCE(SUM(spool_held), 0) AS held,
                       COALESCE(SUM(CASE WHEN cert_not_after < \(limit) THEN 1 ELSE 0 END), 0) AS expiring FROM agents
                """).first
            let e = try await connection.query("SELECT COUNT(*) AS n FROM events").first
            func i(_ r: SQLiteRow?, _ c: String) -> Int { Int(r?.column(c)?.integer ?? 0) }
            return StoreCounts(agents: i(a, "n"), authorized: i(a, "ok"), unauthorized: i(a, "bad"), stale: i(a, "stale"), events: Int64(i(e, "n")),
                               backlogged: i(a, "backlog"), heldEvents: Int64(i(a, "held")), certificatesExpiring: i(a, "expiring"))
        }
    }
}
