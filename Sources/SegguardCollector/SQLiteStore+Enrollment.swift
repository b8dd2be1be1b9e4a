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
            var row: DeviceRecord
            if let current = try await db.query("SELECT * FROM devices WHERE agent_id = ?", [.text(agentID)]).first.map(Self.device) {
                guard current.serial == presentedSerial || current.previousSerial == presentedSerial else { return .notCurrent(serial: current.serial) }
                row = current
            } else {
                row = DeviceRecord(agentID: agentID, group: legacyGroup, serial: presentedSerial, notAfter: notAfter, enrolledAt: now,
                                   enrolledBy: "legacy certificate", updatedAt: now)
            }
            row.previousSerial = presentedSerial
            row.serial = serial
            row.notAfter = notAfter
            row.updatedAt = now
            try await Self.upsert(row, db: db)
            try await Self.insert(action: action, db: db)
            return .renewed(group: row.group)
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
