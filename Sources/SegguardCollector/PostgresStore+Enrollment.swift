// Enrollment tokens and device rows in PostgreSQL: a token's row is locked (FOR UPDATE) for
// the enrollment's transaction, so two replicas cannot both take its last use.

import Foundation
import Logging
import PostgresNIO

extension PostgresStore {
    public func createTokens(_ tokens: [EnrollmentToken], recording a: AdminAction) async throws {
        let logger = self.logger
        try await client.withTransaction(logger: logger) { conn in
            for t in tokens {
                try await conn.query(
                    """
                    INSERT INTO enrollment_tokens (token_sha256, grp, created_at, created_by, expires_at, uses_left)
                    VALUES (\(t.sha256), \(t.group), \(t.createdAt.millis), \(t.createdBy), \(t.expiresAt.millis), \(Int64(t.usesLeft)))
                    """, logger: logger)
            }
            try await Self.insert(action: a, conn: conn, logger: logger)
        }
    }

    static func insert(action a: AdminAction, conn: PostgresConnection, logger: Logger) async throws {
        try await conn.query(
            "INSERT INTO admin_actions (time, who, action, target, detail) VALUES (\(a.time.millis), \(a.by), \(a.action), \(a.target), \(a.detail))",
            logger: logger)
    }

    public func token(sha256: String) async throws -> EnrollmentToken? {
        let rows = try await client.query(
            "SELECT token_sha256, grp, created_at, created_by, expires_at, uses_left FROM enrollment_tokens WHERE token_sha256 = \(sha256)", logger: logger)
        for try await row in rows { return try Self.token(row) }
        return nil
    }

    static func token(_ row: PostgresRow) throws -> EnrollmentToken {
        let (h, g, c, by, e, u) = try row.decode((String, String, Int64, String, Int64, Int64).self)
        return EnrollmentToken(sha256: h, group: g, createdAt: Date(millis: c), createdBy: by, expiresAt: Date(millis: e), usesLeft: Int(u))
    }

    static let deviceColumns = "agent_id, grp, serial, previous_serial, not_after, enrolled_at, enrolled_by, updated_at"

    static func device(_ row: PostgresRow) throws -> DeviceRecord {
        let (id, g, serial, previous, notAfter, at, by, updated) = try row.decode((String, String, String, String?, Int64, Int64, String, Int64).self)
        return DeviceRecord(agentID: id, group: g, serial: serial, previousSerial: previous, notAfter: Date(millis: notAfter), enrolledAt: Date(millis: at),
                            enrolledBy: by, updatedAt: Date(millis: updated))
    }

    static func device(id: String, conn: PostgresConnection, logger: Logger, lock: Bool) async throws -> DeviceRecord? {
        let rows = try await conn.query("SELECT \(unescaped: deviceColumns) FROM devices WHERE agent_id = \(id) \(unescaped: lock ? "FOR UPDATE" : "")",
                                        logger: logger)
        for try await row in rows { return try device(row) }
        return nil
    }

    static func upsert(_ d: DeviceRecord, conn: PostgresConnection, logger: Logger) async throws {
        try await conn.query(
            """
            INSERT INTO devices (agent_id, grp, serial, previous_serial, not_after, enrolled_at, enrolled_by, updated_at)
            VALUES (\(d.agentID), \(d.group), \(d.serial), \(d.previousSerial), \(d.notAfter.millis), \(d.enrolledAt.millis), \(d.enrolledBy), \(d.updatedAt.millis))
            ON CONFLICT (agent_id) DO UPDATE SET grp = excluded.grp, serial = excluded.serial, previous_serial = excluded.previous_serial,
                not_after = excluded.not_after, enrolled_at = excluded.enrolled_at, enrolled_by = excluded.enrolled_by, updated_at = excluded.updated_at
            """, logger: logger)
    }

    public func enroll(_ d: DeviceRecord, tokenSHA256: String, now: Date, recording a: AdminAction) async throws -> EnrollOutcome {
        let logger = self.logger
        return try await client.withTransaction(logger: logger) { conn -> EnrollOutcome in
            let rows = try await conn.query(
                """
                SELECT token_sha256, grp, created_at, created_by, expires_at, uses_left FROM enrollment_tokens
                WHERE token_sha256 = \(tokenSHA256) FOR UPDATE
                """, logger: logger)
            var found: EnrollmentToken?
            for try await row in rows { found = try Self.token(row) }
            guard let token = found else { return .tokenUnknown }
            if token.expiresAt <= now { return .tokenExpired(token.expiresAt) }
            if token.usesLeft <= 0 { return .tokenUsed }
            // Two enrollments of one new device id (no row to lock yet) wait for each other.
            try await Self.lockDevice(d.agentID, conn: conn, logger: logger)
            if let current = try await Self.device(id: d.agentID, conn: conn, logger: logger, lock: true) {
                if current.notAfter > now, try await !Self.revoked(current.serial, conn: conn, logger: logger) {
                    return .deviceActive(serial: current.serial, notAfter: current.notAfter)
                }
            } else {
                // A device without a row that reported with a certificate still good (issued
                // by `pki issue-device`): not taken over by a token either.
                var reported: (String?, Int64?)?
                for try await row in try await conn.query("SELECT cert_serial, cert_not_after FROM agents WHERE agent_id = \(d.agentID)", logger: logger) {
                    reported = try row.decode((String?, Int64?).self)
                }
                if let reported, let serial = reported.0, !serial.isEmpty, let end = reported.1, Date(millis: end) > now,
                   try await !Self.revoked(serial, conn: conn, logger: logger) {
                    return .deviceActive(serial: serial, notAfter: Date(millis: end))
                }
            }
            try await conn.query("UPDATE enrollment_tokens SET uses_left = uses_left - 1 WHERE token_sha256 = \(tokenSHA256)", logger: logger)
            try await Self.upsert(d, conn: conn, logger: logger)
            try await Self.insert(action: a, conn: conn, logger: logger)
            return .enrolled
        }
    }

    public func renew(agentID: String, presentedSerial: String, legacyGroup: String, serial: String, notAfter: Date, now: Date,
                      recording a: AdminAction) async throws -> RenewOutcome {
        let logger = self.logger
        return try await client.withTransaction(logger: logger) { conn -> RenewOutcome in
            try await Self.lockDevice(agentID, conn: conn, logger: logger)
            let current = try await Self.device(id: agentID, conn: conn, logger: logger, lock: true)
            guard let (row, supersede) = DeviceRecord.renewal(of: current, agentID: agentID, presentedSerial: presentedSerial, legacyGroup: legacyGroup,
                                                              serial: serial, notAfter: notAfter, now: now) else {
                return .notCurrent(serial: current?.serial ?? "")
            }
            if let supersede { try await Self.revokeSuperseded(supersede, agentID: agentID, now: now, conn: conn, logger: logger) }
            try await Self.upsert(row, conn: conn, logger: logger)
            try await Self.insert(action: a, conn: conn, logger: logger)
            return .renewed(group: row.group)
        }
    }

    /// A transaction-scoped lock on one device id (its row may not exist yet).
    static func lockDevice(_ agentID: String, conn: PostgresConnection, logger: Logger) async throws {
        try await conn.query("SELECT pg_advisory_xact_lock(7305003, hashtext(\(agentID)))", logger: logger)
    }

    static func revoked(_ serial: String, conn: PostgresConnection, logger: Logger) async throws -> Bool {
        for try await _ in try await conn.query("SELECT 1 FROM revocations WHERE serial = \(serial)", logger: logger) { return true }
        return false
    }

    static func revokeSuperseded(_ serial: String, agentID: String, now: Date, conn: PostgresConnection, logger: Logger) async throws {
        guard !serial.isEmpty else { return }
        try await conn.query(
            """
            INSERT INTO revocations (serial, agent_id, reason, time, who) VALUES (\(serial), \(agentID), \(supersededReason), \(now.millis), 'collector')
            ON CONFLICT (serial) DO NOTHING
            """, logger: logger)
    }

    public func confirmCurrent(agentID: String, serial: String, now: Date) async throws -> String? {
        let logger = self.logger
        return try await client.withTransaction(logger: logger) { conn -> String? in
            guard let row = try await Self.device(id: agentID, conn: conn, logger: logger, lock: true), row.serial == serial,
                  let previous = row.previousSerial else { return nil }
            try await Self.revokeSuperseded(previous, agentID: agentID, now: now, conn: conn, logger: logger)
            try await conn.query("UPDATE devices SET previous_serial = NULL WHERE agent_id = \(agentID)", logger: logger)
            return previous
        }
    }

    public func devices() async throws -> [DeviceRecord] {
        let rows = try await client.query("SELECT \(unescaped: Self.deviceColumns) FROM devices ORDER BY agent_id", logger: logger)
        var out: [DeviceRecord] = []
        for try await row in rows { out.append(try Self.device(row)) }
        return out
    }

    public func device(id: String) async throws -> DeviceRecord? {
        let rows = try await client.query("SELECT \(unescaped: Self.deviceColumns) FROM devices WHERE agent_id = \(id)", logger: logger)
        for try await row in rows { return try Self.device(row) }
        return nil
    }

    public func setGroup(agentID: String, group: String, now: Date, recording a: AdminAction) async throws -> Bool {
        let logger = self.logger
        return try await client.withTransaction(logger: logger) { conn -> Bool in
            var updated = false
            for try await _ in try await conn.query(
                "UPDATE devices SET grp = \(group), updated_at = \(now.millis) WHERE agent_id = \(agentID) RETURNING agent_id", logger: logger) { updated = true }
            if !updated {
                var agent: (String?, Int64?)?
                for try await row in try await conn.query("SELECT cert_serial, cert_not_after FROM agents WHERE agent_id = \(agentID)", logger: logger) {
                    agent = try row.decode((String?, Int64?).self)
                }
                guard let agent else { return false }
                try await Self.upsert(DeviceRecord(agentID: agentID, group: group, serial: agent.0 ?? "", notAfter: Date(millis: agent.1 ?? 0), enrolledAt: now,
                                                   enrolledBy: "legacy certificate", updatedAt: now), conn: conn, logger: logger)
            }
            try await Self.insert(action: a, conn: conn, logger: logger)
            return true
        }
    }
}
