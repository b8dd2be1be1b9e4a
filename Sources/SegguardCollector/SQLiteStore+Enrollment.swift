// Enrollment tokens and device rows in the SQLite store (one writer: BEGIN IMMEDIATE makes
// a token's use and the device row one step).

import Foundation
import SQLiteNIO

extension SQLiteStore {
    public func createTokens(_ tokens: [EnrollmentToken], recording action: AdminAction) async throws {
        try await transaction { db in
            for t in tokens {
                _ = try await db.query(
                    "INSERT INTO enrollment_tokens (token_sha256, grp, created_at, created_by, expires_at, uses_left) VALUES (?, ?, ?, ?, ?, ?)",
                    [.text(t.sha256), .text(t.group), .integer(SQLiteInt64(t.createdAt.millis)), .text(t.createdBy),
                     .integer(SQLiteInt64(t.expiresAt.millis)), .integer(SQLiteInt64(t.usesLeft))])
            }
            try await Self.insert(action: action, db: db)
        }
    }

    public func token(sha256: String) async throws -> EnrollmentToken? {
        try await serial.run { [connection] in
            try await connection.query("SELECT * FROM enrollment_tokens WHERE token_sha256 = ?", [.text(sha256)]).first.map(Self.token)
        }
    }

    static func token(_ r: SQLiteRow) -> EnrollmentToken {
        EnrollmentToken(sha256: r.column("token_sha256")?.string ?? "", group: r.column("grp")?.string ?? "",
                        createdAt: Date(millis: Int64(r.column("created_at")?.integer ?? 0)), createdBy: r.column("created_by")?.string ?? "",
                        expiresAt: Date(millis: Int64(r.column("expires_at")?.integer ?? 0)), usesLeft: r.column("uses_left")?.integer ?? 0)
    }

    static func device(_ r: SQLiteRow) -> DeviceRecord {
        DeviceRecord(agentID: r.column("agent_id")?.string ?? "", group: r.column("grp")?.string ?? "", serial: r.column("serial")?.string ?? "",
                     previousSerial: r.column("previous_serial")?.string, notAfter: Date(millis: Int64(r.column("not_after")?.integer ?? 0)),
                     enrolledAt: Date(millis: Int64(r.column("enrolled_at")?.integer ?? 0)), enrolledBy: r.column("enrolled_by")?.string ?? "",
                     updatedAt: Date(millis: Int64(r.column("updated_at")?.integer ?? 0)))
    }

    public func enroll(_ d: DeviceRecord, tokenSHA256: String, now: Date, recording action: AdminAction) async throws -> EnrollOutcome {
        try await transaction { db in
            guard let token = try await db.query("SELECT * FROM enrollment_tokens WHERE token_sha256 = ?", [.text(tokenSHA256)]).first.map(Self.token) else {
                return .tokenUnknown
            }
            if token.expiresAt <= now { return .tokenExpired(token.expiresAt) }
            if token.usesLeft <= 0 { return .tokenUsed }
            if let current = try await db.query("SELECT * FROM devices WHERE agent_id = ?", [.text(d.agentID)]).first.map(Self.device),
               current.notAfter > now,
               try await db.query("SELECT 1 FROM revocations WHERE serial = ?", [.text(current.serial)]).isEmpty {
                return .deviceActive(serial: current.serial, notAfter: current.notAfter)
            }
            // A device without a row that reported with a certificate still good (issued by
            // `pki issue-device`): not taken over by a token either.
            if let agent = try await db.query("SELECT cert_serial, cert_not_after FROM agents WHERE agent_id = ?", [.text(d.agentID)]).first,
               let serial = agent.column("cert_serial")?.string, !serial.isEmpty, let end = agent.column("cert_not_after")?.integer,
               Date(millis: Int64(end)) > now, try await db.query("SELECT 1 FROM devices WHERE agent_id = ?", [.text(d.agentID)]).isEmpty,
               try await db.query("SELECT 1 FROM revocations WHERE serial = ?", [.text(serial)]).isEmpty {
                return .deviceActive(serial: serial, notAfter: Date(millis: Int64(end)))
            }
            _ = try await db.query("UPDATE enrollment_tokens SET uses_left = uses_left - 1 WHERE token_sha256 = ?", [.text(tokenSHA256)])
            try await Self.upsert(d, db: db)
            try await Self.insert(action: action, db: db)
            return .enrolled
        }
    }

    static func upsert(_ d: DeviceRecord, db: SQLiteConnection) async throws {
        _ = try await db.query(
            """
            INSERT INTO devices (agent_id, grp, serial, previous_serial, not_after, enrolled_at, enrolled_by, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (agent_id) DO UPDATE SET grp = excluded.grp, serial = excluded.serial, previous_serial = excluded.previous_serial,
                not_after = excluded.not_after, enrolled_at = excluded.enrolled_at, enrolled_by = excluded.enrolled_by, updated_at = excluded.updated_at
            """,
            [.text(d.agentID), .text(d.group), .text(d.serial), d.previousSerial.map { .text($0) } ?? .null, .integer(SQLiteInt64(d.notAfter.millis)),
             .integer(SQLiteInt64(d.enrolledAt.millis)), .text(d.enrolledBy), .integer(SQLiteInt64(d.updatedAt.millis))])
    }

    public func renew(agentID: String, presentedSerial: String, legacyGroup: String, serial: String, notAfter: Date, now: Date,
                      recording action: AdminAction) async throws -> RenewOutcome {
        try await transaction { db in
            let current = try await db.query("SELECT * FROM devices WHERE agent_id = ?", [.text(agentID)]).first.map(Self.device)
            guard let (row, supersede) = DeviceRecord.renewal(of: current, agentID: agentID, presentedSerial: presentedSerial, legacyGroup: legacyGroup,
                                                              serial: serial, notAfter: notAfter, now: now) else {
                return .notCurrent(serial: current?.serial ?? "")
            }
            if let supersede { try await Self.revokeSuperseded(supersede, agentID: agentID, now: now, db: db) }
            try await Self.upsert(row, db: db)
            try await Self.insert(action: action, db: db)
            return .renewed(group: row.group)
        }
    }

    static func revokeSuperseded(_ serial: String, agentID: String, now: Date, db: SQLiteConnection) async throws {
        guard !serial.isEmpty else { return }
        _ = try await db.query("INSERT INTO revocations (serial, agent_id, reason, time, who) VALUES (?, ?, ?, ?, 'collector') ON CONFLICT (serial) DO NOTHING",
                               [.text(serial), .text(agentID), .text(supersededReason), .integer(SQLiteInt64(now.millis))])
    }

    public func confirmCurrent(agentID: String, serial: String, now: Date) async throws -> String? {
        try await transaction { db in
            guard let row = try await db.query("SELECT * FROM devices WHERE agent_id = ?", [.text(agentID)]).first.map(Self.device),
                  row.serial == serial, let previous = row.previousSerial else { return nil }
            try await Self.revokeSuperseded(previous, agentID: agentID, now: now, db: db)
            _ = try await db.query("UPDATE devices SET previous_serial = NULL WHERE agent_id = ?", [.text(agentID)])
            return previous
        }
    }

    public func devices() async throws -> [DeviceRecord] {
        try await serial.run { [connection] in
            try await connection.query("SELECT * FROM devices ORDER BY agent_id").map(Self.device)
        }
    }

    public func device(id: String) async throws -> DeviceRecord? {
        try await serial.run { [connection] in
            try await connection.query("SELECT * FROM devices WHERE agent_id = ?", [.text(id)]).first.map(Self.device)
        }
    }

    public func setGroup(agentID: String, group: String, now: Date, recording action: AdminAction) async throws -> Bool {
        try await transaction { db in
            let updated = try await db.query("UPDATE devices SET grp = ?, updated_at = ? WHERE agent_id = ? RETURNING agent_id",
                                             [.text(group), .integer(SQLiteInt64(now.millis)), .text(agentID)]).count
            if updated == 0 {
                guard let agent = try await db.query("SELECT cert_serial, cert_not_after FROM agents WHERE agent_id = ?", [.text(agentID)]).first else {
                    return false
                }
                try await Self.upsert(DeviceRecord(agentID: agentID, group: group, serial: agent.column("cert_serial")?.string ?? "",
                                                   notAfter: Date(millis: Int64(agent.column("cert_not_after")?.integer ?? 0)), enrolledAt: now,
                                                   enrolledBy: "legacy certificate", updatedAt: now), db: db)
            }
            try await Self.insert(action: action, db: db)
            return true
        }
    }
}
