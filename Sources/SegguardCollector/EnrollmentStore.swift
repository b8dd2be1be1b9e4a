// What enrollment keeps: the tokens an admin made for the imaging tool (only their SHA-256),
// and one row per enrolled device — its group (decided here, not by the certificate's OU)
// and the certificate it holds now.

import Foundation

/// An enrollment token as stored: its SHA-256 (the token itself is shown once, at creation).
public struct EnrollmentToken: Sendable, Equatable, Codable {
    /// SHA-256 of the token text, lower-case hex.
    public var sha256: String
    /// The group a device enrolled with this token joins.
    public var group: String
    public var createdAt: Date
    /// The operator who made it, or "admin-token" / "cli".
    public var createdBy: String
    public var expiresAt: Date
    /// Enrollments left (1 for a one-time token).
    public var usesLeft: Int
    enum CodingKeys: String, CodingKey {
        case sha256, group, createdAt = "created_at", createdBy = "created_by", expiresAt = "expires_at", usesLeft = "uses_left"
    }
    public init(sha256: String, group: String, createdAt: Date, createdBy: String, expiresAt: Date, usesLeft: Int) {
        self.sha256 = sha256
        self.group = group
        self.createdAt = createdAt
        self.createdBy = createdBy
        self.expiresAt = expiresAt
        self.usesLeft = usesLeft
    }
}

/// An enrolled device: its group and the certificate it holds.
public struct DeviceRecord: Sendable, Equatable, Codable {
    public var agentID: String
    /// The device's group: bundles and the dashboard follow it, whatever the certificate's OU says.
    public var group: String
    /// The serial (hex) of the certificate issued last.
    public var serial: String
    /// The serial before it (a renewal whose answer was lost may be asked again with it).
    public var previousSerial: String?
    public var notAfter: Date
    public var enrolledAt: Date
    /// "token 1a2b3c4d" (the token's hash prefix), "renewal", "legacy certificate".
    public var enrolledBy: String
    public var updatedAt: Date
    enum CodingKeys: String, CodingKey {
        case agentID = "agent_id", group, serial, previousSerial = "previous_serial", notAfter = "not_after", enrolledAt = "enrolled_at",
             enrolledBy = "enrolled_by", updatedAt = "updated_at"
    }
    public init(agentID: String, group: String, serial: String, previousSerial: String? = nil, notAfter: Date, enrolledAt: Date,
                enrolledBy: String, updatedAt: Date) {
        self.agentID = agentID
        self.group = group
        self.serial = serial
        self.previousSerial = previousSerial
        self.notAfter = notAfter
        self.enrolledAt = enrolledAt
        self.enrolledBy = enrolledBy
        self.updatedAt = updatedAt
    }
}

extension DeviceRecord {
    /// What a renewal does to a device's row (both stores apply it in their transaction): the
    /// new row, and the serial to revoke as superseded (the unused certificate, when the
    /// renewal is asked again with the one before). Nil: the presented certificate is neither
    /// the current one nor the one before it.
    static func renewal(of current: DeviceRecord?, agentID: String, presentedSerial: String, legacyGroup: String, serial: String,
                        notAfter: Date, now: Date) -> (row: DeviceRecord, supersede: String?)? {
        var row: DeviceRecord
        var supersede: String?
        if let current {
            if current.serial == presentedSerial {
                row = current
            } else if current.previousSerial == presentedSerial {
                // Asked again with the certificate before: the one issued last was never used
                // (the device would have been confirmed on it); it is superseded.
                row = current
                supersede = current.serial
            } else {
                return nil
            }
        } else {
            row = DeviceRecord(agentID: agentID, group: legacyGroup, serial: presentedSerial, notAfter: notAfter, enrolledAt: now,
                               enrolledBy: "legacy certificate", updatedAt: now)
        }
        row.previousSerial = presentedSerial
        row.serial = serial
        row.notAfter = notAfter
        row.updatedAt = now
        return (row, supersede)
    }
}

/// The outcome of an enrollment with a token.
public enum EnrollOutcome: Sendable, Equatable {
    case enrolled
    case tokenUnknown
    case tokenExpired(Date)
    case tokenUsed
    /// The device id holds a certificate that is neither revoked nor expired.
    case deviceActive(serial: String, notAfter: Date)
}

/// The reason recorded when a certificate is revoked because a newer one replaced it.
public let supersededReason = "superseded by its renewal"

/// The outcome of a renewal.
public enum RenewOutcome: Sendable, Equatable {
    /// Renewed; the device's group.
    case renewed(group: String)
    /// The presented certificate is not the device's current (or previous) one.
    case notCurrent(serial: String)
}

/// The store's part of enrollment (both stores implement it; every replica shares it).
public protocol EnrollmentStore: Sendable {
    /// Stores new tokens and the operator action in one transaction.
    func createTokens(_ tokens: [EnrollmentToken], recording action: AdminAction) async throws
    /// The token with this SHA-256, nil when unknown.
    func token(sha256: String) async throws -> EnrollmentToken?
    /// In one transaction: takes one use of the token (unknown, expired and used up refused),
    /// refuses a device id whose certificate is still good (its device row's, or the one it
    /// last reported with when it has no row), stores the device row and the action.
    func enroll(_ device: DeviceRecord, tokenSHA256: String, now: Date, recording action: AdminAction) async throws -> EnrollOutcome
    /// Records a renewal presented with `presentedSerial`: the device's current certificate,
    /// or the one before it while the current one has never been used (a renewal whose answer
    /// was lost, asked again: the unused certificate is revoked as superseded), or a
    /// certificate of a device without a row (issued by `pki issue-device`; its row is made
    /// with `legacyGroup`, the certificate's OU).
    func renew(agentID: String, presentedSerial: String, legacyGroup: String, serial: String, notAfter: Date, now: Date,
               recording action: AdminAction) async throws -> RenewOutcome
    /// The device used its current certificate (`serial`): the one before it is revoked as
    /// superseded and forgotten. Returns that serial when one was revoked.
    func confirmCurrent(agentID: String, serial: String, now: Date) async throws -> String?
    /// Every device row, by agent id.
    func devices() async throws -> [DeviceRecord]
    func device(id: String) async throws -> DeviceRecord?
    /// Moves a device to `group`. A device without a row that has reported (an OU-based
    /// certificate) gets one from its agent row. False when neither exists.
    func setGroup(agentID: String, group: String, now: Date, recording action: AdminAction) async throws -> Bool
}
