// The agent's durable event spool: every event is committed to an SQLite file (WAL,
// synchronous=FULL: on disk when append returns) before any attempt to send it, and removed
// only when the collector acknowledged it. Ids are UUIDs and sequence numbers count up from 1
// across restarts, so the collector can store each event once and anyone can see a gap.
//
// When the spool is full (the collector away for long, or a flood), an info or notice event
// never pushes out a warning-or-higher one: a new event first displaces the oldest event of a
// lower rank, then (drop-oldest) the oldest of its own rank; an info event finding only
// warnings is dropped itself. So whatever a user floods in, the warnings recorded before the
// flood reach the collector. Every drop is counted and reported (spool-overflow).
//
// An event the collector refuses (a 4xx: a newer field an older collector does not know, a
// conflicting id) is never discarded: it is held (column `dead`, kept for old spools) and
// retried after a backoff that doubles up to six hours, counted in every heartbeat with the
// age of the oldest undelivered event, until the collector takes it.

import FoundationEssentials
import Glibc
import Logging
import SQLiteNIO
import SegguardPolicy
import SegguardReport

/// The spool. One instance per file; calls are serialized.
public actor Spool {
    let connection: SQLiteConnection
    public let path: String
    var maxEvents: Int
    var overflow: SpoolOverflow
    /// Dropped by the overflow policy since the last spool-overflow event was written.
    var droppedUnreported = 0
    /// Actor methods may interleave at every await; a transaction must not. One at a time.
    var busy = false
    var waiters: [CheckedContinuation<Void, Never>] = []

    func exclusive<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        while busy { await withCheckedContinuation { waiters.append($0) } }
        busy = true
        defer {
            busy = false
            if !waiters.isEmpty { waiters.removeFirst().resume() }
        }
        return try await body()
    }

    /// Opens (creating if needed) the spool. `wasRunning` tells whether the previous agent
    /// using it never closed it (a crash or a kill: a tamper sign worth an event).
    public init(path: String, maxEvents: Int = 100_000, overflow: SpoolOverflow = .dropOldest) async throws {
        self.path = path
        self.maxEvents = maxEvents
        self.overflow = overflow
        do {
            connection = try await SQLiteConnection.open(storage: .file(path: path), logger: Logger(label: "segguardd.spool"))
        } catch {
            throw SpoolError("cannot open the event spool \(path): \(error)")
        }
        do {
            for s in [
                "PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA busy_timeout=5000",
                "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, json TEXT NOT NULL, dead INTEGER NOT NULL DEFAULT 0)",
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('last_seq', 0), ('dropped', 0), ('running', 0)",
            ] { _ = try await connection.query(s) }
            // Spools written before ranks existed: add the column, rank the rows from their JSON.
            let columns = try await connection.query("PRAGMA table_info(events)").compactMap { $0.column("name")?.string }
            if !columns.contains("rank") {
                _ = try await connection.query("ALTER TABLE events ADD COLUMN rank INTEGER NOT NULL DEFAULT 0")
                let rows = try await connection.query("SELECT seq, json FROM events")
                for row in rows {
                    guard let seq = row.column("seq")?.integer, let json = row.column("json")?.string,
                        let event = try? ReportCoding.decoder().decode(ReportedEvent.self, from: Data(json.utf8))
                    else { continue }
                    _ = try await connection.query("UPDATE events SET rank = ? WHERE seq = ?", [.integer(SQLiteInt64(Self.rank(event.severity))), .integer(seq)])
                }
            }
            _ = try await connection.query("CREATE INDEX IF NOT EXISTS events_rank ON events (rank, seq)")
            // Spools written before held events were retried: dead rows become held, due now.
            for (column, type) in [("retry_at", "INTEGER NOT NULL DEFAULT 0"), ("attempts", "INTEGER NOT NULL DEFAULT 0"),
                                   ("time_ms", "INTEGER NOT NULL DEFAULT 0"), ("last_error", "TEXT")] where !columns.contains(column) {
                _ = try await connection.query("ALTER TABLE events ADD COLUMN \(column) \(type)")
            }
            if !columns.contains("time_ms") {
                // Backfilled from the JSON; until then (a crash in between) 0 means unknown.
                for row in try await connection.query("SELECT seq, json FROM events") {
                    guard let seq = row.column("seq")?.integer, let json = row.column("json")?.string,
                        let event = try? ReportCoding.decoder().decode(ReportedEvent.self, from: Data(json.utf8))
                    else { continue }
                    _ = try await connection.query("UPDATE events SET time_ms = ? WHERE seq = ?", [.integer(Self.millis(event.time)), .integer(seq)])
                }
            }
        } catch {
            try? await connection.close()
            throw SpoolError("cannot open the event spool \(path): \(error)")
        }
    }

    public func configure(maxEvents: Int, overflow: SpoolOverflow) {
        self.maxEvents = maxEvents
        self.overflow = overflow
    }

    /// Marks the spool in use; returns whether it was already marked (unclean end before).
    public func markRunning() async throws -> Bool {
        let was = try await meta("running") == 1
        _ = try await connection.query("UPDATE meta SET value = 1 WHERE key = 'running'")
        return was
    }

    /// Clean shutdown.
    public func markStopped() async throws {
        _ = try await connection.query("UPDATE meta SET value = 0 WHERE key = 'running'")
    }

    func meta(_ key: String) async throws -> Int {
        Int(try await connection.query("SELECT value FROM meta WHERE key = ?", [.text(key)]).first?.column("value")?.integer ?? 0)
    }

    /// Writes one event durably and returns it with its id and sequence number; nil when the
    /// spool is full and nothing may make room for it (counted as dropped): under drop-newest
    /// no event of its rank or above is displaced, and an event never displaces a higher one.
    @discardableResult
    public func append(kind: String, severity: String, reason: String, details: [String: String] = [:], time: Date = Date()) async throws -> ReportedEvent? {
        try await exclusive { try await appendLocked(kind: kind, severity: severity, reason: reason, details: details, time: time) }
    }

    func appendLocked(kind: String, severity: String, reason: String, details: [String: String], time: Date) async throws -> ReportedEvent? {
        _ = try await connection.query("BEGIN IMMEDIATE")
        do {
            let pending = Int(try await connection.query("SELECT COUNT(*) AS n FROM events").first?.column("n")?.integer ?? 0)
            let rank = Self.rank(severity)
            if pending >= maxEvents {
                _ = try await connection.query("UPDATE meta SET value = value + 1 WHERE key = 'dropped'")
                droppedUnreported += 1
                // The oldest event of a lower rank; under drop-oldest, else the oldest of this rank.
                let below = try await connection.query("SELECT seq FROM events WHERE rank < ? ORDER BY rank, seq LIMIT 1", [.integer(SQLiteInt64(rank))]).first
                let same = overflow == .dropOldest && below == nil
                    ? try await connection.query("SELECT seq FROM events WHERE rank = ? ORDER BY seq LIMIT 1", [.integer(SQLiteInt64(rank))]).first : nil
                guard let victim = (below ?? same)?.column("seq")?.integer else {
                    _ = try await connection.query("COMMIT")
                    return nil
                }
                _ = try await connection.query("DELETE FROM events WHERE seq = ?", [.integer(victim)])
            }
            let seq = Int64(try await meta("last_seq") + 1)
            let event = ReportedEvent(id: UUID().uuidString.lowercased(), seq: seq, time: time, kind: kind, severity: severity, reason: reason, details: details)
            let json = String(decoding: try ReportCoding.encoder().encode(event), as: UTF8.self)
            _ = try await connection.query("INSERT INTO events (seq, id, json, rank, time_ms) VALUES (?, ?, ?, ?, ?)",
                                            [.integer(SQLiteInt64(seq)), .text(event.id), .text(json), .integer(SQLiteInt64(rank)), .integer(Self.millis(time))])
            _ = try await connection.query("UPDATE meta SET value = ? WHERE key = 'last_seq'", [.integer(SQLiteInt64(seq))])
            _ = try await connection.query("COMMIT")
            return event
        } catch {
            _ = try? await connection.query("ROLLBACK")
            throw SpoolError("cannot write an event to the spool \(path): \(error)")
        }
    }

    /// How much an event of `severity` is worth keeping: info and below 0, notice 1, warning 2,
    /// error 3, critical and above 4.
    static func rank(_ severity: String) -> Int {
        switch severity {
        case "notice": 1
        case "warning": 2
        case "error": 3
        case "critical", "alert", "emergency": 4
        default: 0
        }
    }

    static func millis(_ d: Date) -> SQLiteInt64 { SQLiteInt64((d.timeIntervalSince1970 * 1000).rounded()) }

    /// The oldest `limit` events to send now: never refused, or held and due for a retry.
    public func pending(limit: Int, now: Date = Date()) async throws -> [ReportedEvent] {
        let rows = try await connection.query("SELECT json FROM events WHERE dead = 0 OR retry_at <= ? ORDER BY seq LIMIT ?",
                                              [.integer(Self.millis(now)), .integer(SQLiteInt64(limit))])
        return try rows.map { try ReportCoding.decoder().decode(ReportedEvent.self, from: Data(($0.column("json")?.string ?? "").utf8)) }
    }

    /// When the next held event is due (nil: none held).
    public func nextRetry() async throws -> Date? {
        guard let ms = try await connection.query("SELECT MIN(retry_at) AS t FROM events WHERE dead = 1").first?.column("t")?.integer else { return nil }
        return Date(timeIntervalSince1970: Double(ms) / 1000)
    }

    /// Removes delivered events (acknowledged by the collector).
    public func remove(ids: [String]) async throws {
        guard !ids.isEmpty else { return }
        try await exclusive {
            _ = try await connection.query("BEGIN IMMEDIATE")
            do {
                for id in ids { _ = try await connection.query("DELETE FROM events WHERE id = ?", [.text(id)]) }
                _ = try await connection.query("COMMIT")
            } catch {
                _ = try? await connection.query("ROLLBACK")
                throw error
            }
        }
    }

    /// Holds an event the collector refused (4xx): kept on disk, out of the queue until
    /// `baseSeconds` × 2^(refusals − 1) (at most six hours) have passed, then tried again.
    /// Returns when it is due.
    @discardableResult
    public func hold(id: String, error: String, baseSeconds: Double, now: Date = Date()) async throws -> Date {
        try await exclusive {
            let attempts = Int(try await connection.query("SELECT attempts FROM events WHERE id = ?", [.text(id)]).first?.column("attempts")?.integer ?? 0)
            let delay = min(baseSeconds * pow(2, Double(min(attempts, 20))), max(baseSeconds, Self.maxHoldSeconds))
            let due = now.addingTimeInterval(delay)
            _ = try await connection.query("UPDATE events SET dead = 1, attempts = attempts + 1, retry_at = ?, last_error = ? WHERE id = ?",
                                            [.integer(Self.millis(due)), .text(String(error.prefix(1000))), .text(id)])
            return due
        }
    }

    /// Gives an event a new id (the collector stores another event under its id: a 409),
    /// noting the old one in `details.reissued_from`; due at once. Returns the new id.
    @discardableResult
    public func reissue(id: String) async throws -> String? {
        try await exclusive {
            guard let json = try await connection.query("SELECT json FROM events WHERE id = ?", [.text(id)]).first?.column("json")?.string else { return nil }
            var event = try ReportCoding.decoder().decode(ReportedEvent.self, from: Data(json.utf8))
            let newID = UUID().uuidString.lowercased()
            event.details["reissued_from"] = id
            event.id = newID
            let text = String(decoding: try ReportCoding.encoder().encode(event), as: UTF8.self)
            _ = try await connection.query("UPDATE events SET id = ?, json = ?, dead = 0, retry_at = 0 WHERE id = ?", [.text(newID), .text(text), .text(id)])
            return newID
        }
    }

    /// The wire revision the collector last announced (0: never heard).
    public func collectorWire() async throws -> Int { try await meta("collector_wire") }

    public func setCollectorWire(_ revision: Int) async throws {
        _ = try await connection.query("INSERT INTO meta (key, value) VALUES ('collector_wire', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                                        [.integer(SQLiteInt64(revision))])
    }

    /// The longest a held event waits between two attempts.
    public static let maxHoldSeconds = 6 * 3600.0

    /// The spool's backlog, as every heartbeat reports it.
    public struct Summary: Sendable, Equatable {
        /// Undelivered events (held ones included).
        public var pending: Int
        /// Dropped by the overflow policy since the spool was created.
        public var dropped: Int
        /// Refused by the collector (4xx), kept and retried.
        public var held: Int
        /// When the oldest undelivered event happened (nil: none).
        public var oldest: Date?
        public init(pending: Int, dropped: Int, held: Int, oldest: Date?) {
            self.pending = pending
            self.dropped = dropped
            self.held = held
            self.oldest = oldest
        }
    }

    public func summary() async throws -> Summary {
        let row = try await connection.query("SELECT COUNT(*) AS n, COALESCE(SUM(dead), 0) AS held, MIN(NULLIF(time_ms, 0)) AS oldest FROM events").first
        return Summary(pending: Int(row?.column("n")?.integer ?? 0), dropped: try await meta("dropped"), held: Int(row?.column("held")?.integer ?? 0),
                       oldest: row?.column("oldest")?.integer.map { Date(timeIntervalSince1970: Double($0) / 1000) })
    }

    /// The highest sequence number ever assigned.
    public func lastSequence() async throws -> Int64 { Int64(try await meta("last_seq")) }

    /// Events dropped since the last call (to report them once there is room again).
    public func takeUnreportedDrops() -> Int {
        defer { droppedUnreported = 0 }
        return droppedUnreported
    }

    public func close() async throws { try await connection.close() }
}

/// A spool failure, with the file.
public struct SpoolError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
