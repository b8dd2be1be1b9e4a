// Enrollment over the collector, in the shape of EST (RFC 7030), and the device CRL.
//
//   GET  /.well-known/est/cacerts        -        the device CA (certs-only PKCS#7, base64)
//   POST /.well-known/est/simpleenroll   token    PKCS#10 (base64) -> the device certificate;
//                                                  HTTP Basic (password = token) or Bearer
//   POST /.well-known/est/simplereenroll agent    renewal with the current device certificate
//   GET  /pki/devices.crl                -        the CRL of revoked device certificates (DER)
//   POST /api/v1/admin/enrollment-tokens admin    {"group", "count", "expires_hours", "uses"}
//   GET  /api/v1/admin/devices           admin    enrolled devices and their groups
//   PUT  /api/v1/admin/devices/:id/group admin    {"group"}: move a device to another group
//
// The collector signs with the device CA (`--enroll-ca-cert`/`--enroll-ca-key`). An external
// CA fits in front of or instead of it: any EST server with the same CA serves these paths
// (agents take a URL), or sign the CSRs the collector would have signed with your CA and
// keep the device rows with `segguard-collector devices` (see the admin guide).

import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SegguardPKI
import SegguardReport
import Synchronization
import X509

/// The device CA the collector signs enrollments with, and the validity it gives.
public struct EnrollmentAuthority: Sendable {
    public let ca: IssuedCertificate
    public var validDays: Int
    public init(ca: IssuedCertificate, validDays: Int) {
        self.ca = ca
        self.validDays = validDays
    }
}

/// Enrollment tokens: made here, only their hash is stored.
public enum EnrollmentTokens {
    /// A new token: "sgt_" and 32 random bytes, base64url.
    public static func make() -> String {
        var bytes = [UInt8](repeating: 0, count: 32)
        var g = SystemRandomNumberGenerator()
        for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255, using: &g) }
        return "sgt_" + Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    public static func sha256(_ token: String) -> String { PolicySigning.sha256Hex(Data(token.utf8)) }

    /// `count` tokens of `group`, valid `hours`, each good for `uses` enrollments; the
    /// tokens (shown once) and the rows to store.
    public static func create(count: Int, group: String, hours: Double, uses: Int, by: String, now: Date = Date()) throws -> ([String], [EnrollmentToken]) {
        try PKI.validateName(group, what: "group")
        guard (1...100_000).contains(count) else { throw CollectorError("count: \(count) is not between 1 and 100000") }
        guard hours > 0, hours <= 24 * 366 else { throw CollectorError("expires: \(hours) hours is not between a minute and a year") }
        guard (1...100_000).contains(uses) else { throw CollectorError("uses: \(uses) is not between 1 and 100000") }
        let texts = (0..<count).map { _ in make() }
        let rows = texts.map {
            EnrollmentToken(sha256: sha256($0), group: group, createdAt: now, createdBy: by, expiresAt: now.addingTimeInterval(hours * 3600), usesLeft: uses)
        }
        return (texts, rows)
    }

    /// "7d", "12h", "30m" or a number of hours.
    public static func hours(_ text: String) throws -> Double {
        let t = text.trimmingCharacters(in: .whitespaces).lowercased()
        let unit = t.last.map(String.init) ?? ""
        let factor: Double? = ["d": 24, "h": 1, "m": 1.0 / 60][unit]
        guard let value = Double(factor == nil ? t : String(t.dropLast())), value > 0, value.isFinite else {
            throw CollectorError("expires \"\(text)\": write it as 7d, 12h or 30m")
        }
        return value * (factor ?? 1)
    }
}

extension Collector {
    static let pkcs7Type = "application/pkcs7-mime; smime-type=certs-only"

    func requireAuthority() throws -> EnrollmentAuthority {
        guard let a = configuration.enrollment else {
            throw APIError(.notFound, "enrollment is not enabled on this collector (start it with --enroll-ca-cert and --enroll-ca-key)")
        }
        return a
    }

    func cacerts() throws -> Response {
        let a = try requireAuthority()
        return try pkcs7([a.ca.certificate])
    }

    func pkcs7(_ certificates: [Certificate]) throws -> Response {
        let der = try CertsOnlyPKCS7.encode(certificates)
        return Response(status: .ok, headers: [.contentType: Self.pkcs7Type, HTTPField.Name("Content-Transfer-Encoding")!: "base64"],
                        body: .init(byteBuffer: ByteBuffer(string: Data(der).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed]))))
    }

    /// The body of an EST request: base64 of DER (line breaks allowed), at most 64 KiB.
    func csr(_ request: Request) async throws -> (CertificateSigningRequest, String) {
        let buffer: ByteBuffer
        do { buffer = try await request.body.collect(upTo: 64 << 10) } catch is NIOTooManyBytesError {
            throw APIError(.contentTooLarge, "certificate request larger than 64 KiB")
        }
        let text = String(decoding: buffer.readableBytesView, as: UTF8.self).filter { !$0.isWhitespace }
        guard let der = Data(base64Encoded: text) else {
            throw APIError(.badRequest, "the body is not base64 of a DER PKCS#10 certificate request (Content-Type: application/pkcs10)")
        }
        do {
            return try PKI.readRequest(der: [UInt8](der))
        } catch {
            throw APIError(.badRequest, "\(error)")
        }
    }

    /// The token of an enrollment: HTTP Basic (the password; any user name, as EST clients
    /// send one) or Bearer.
    static func enrollmentToken(_ request: Request) -> String? {
        guard let header = request.headers[.authorization] else { return nil }
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2 else { return nil }
        let scheme = parts[0].lowercased(), value = parts[1].trimmingCharacters(in: .whitespaces)
        if scheme == "bearer" { return value }
        if scheme == "basic", let data = Data(base64Encoded: value), let text = String(data: data, encoding: .utf8), let colon = text.firstIndex(of: ":") {
            return String(text[text.index(after: colon)...])
        }
        return nil
    }

    func simpleEnroll(_ request: Request) async throws -> Response {
        let authority = try requireAuthority()
        guard let token = Self.enrollmentToken(request), !token.isEmpty else {
            metrics.enrollment(.refused)
            var r = try Self.json(.unauthorized, ErrorReply(error: "enrollment needs a token: HTTP Basic (the token as password) or 'Authorization: Bearer <token>'"))
            r.headers[.wwwAuthenticate] = "Basic realm=\"segment-guard enrollment\""
            return r
        }
        let hash = EnrollmentTokens.sha256(token)
        let now = Date()
        guard let known = try await store.token(sha256: hash) else {
            metrics.enrollment(.refused)
            throw APIError(.unauthorized, "unknown enrollment token")
        }
        // Checked here for a clear answer before any signing; checked again, atomically, when used.
        if known.expiresAt <= now {
            metrics.enrollment(.refused)
            throw APIError(.unauthorized, "the enrollment token expired on \(RFC3339.format(known.expiresAt)); ask the administrator for a new one")
        }
        if known.usesLeft <= 0 {
            metrics.enrollment(.refused)
            throw APIError(.unauthorized, "the enrollment token has been used already; ask the administrator for a new one")
        }
        let (csr, agentID) = try await csr(request)
        let certificate: Certificate
        do {
            certificate = try PKI.issueDevice(ca: authority.ca, request: csr, agentID: agentID, group: known.group, validDays: authority.validDays)
        } catch {
            throw APIError(.badRequest, "\(error)")
        }
        let serial = PKI.serialHex(certificate)
        let device = DeviceRecord(agentID: agentID, group: known.group, serial: serial, notAfter: certificate.notValidAfter, enrolledAt: now,
                                  enrolledBy: "token \(hash.prefix(8))", updatedAt: now)
        let action = AdminAction(time: now, by: "token \(hash.prefix(8)) (\(known.createdBy))", action: "enroll", target: "agent \(agentID)",
                                 detail: "group \(known.group), serial \(serial), valid until \(RFC3339.format(certificate.notValidAfter))")
        switch try await store.enroll(device, tokenSHA256: hash, now: now, recording: action) {
        case .enrolled:
            deviceRows.withLock { if $0 != nil { $0?[agentID] = device } }
            metrics.enrollment(.enrolled)
            logger.notice("device enrolled", metadata: ["agent": "\(agentID)", "group": "\(known.group)", "serial": "\(serial)", "token": "\(hash.prefix(8))"])
            return try pkcs7([certificate])
        case .tokenUnknown:
            metrics.enrollment(.refused)
            throw APIError(.unauthorized, "unknown enrollment token")
        case .tokenExpired(let end):
            metrics.enrollment(.refused)
            throw APIError(.unauthorized, "the enrollment token expired on \(RFC3339.format(end)); ask the administrator for a new one")
        case .tokenUsed:
            metrics.enrollment(.refused)
            throw APIError(.unauthorized, "the enrollment token has been used already; ask the administrator for a new one")
        case .deviceActive:
            // Not told to a token holder: which certificate, until when.
            metrics.enrollment(.refused)
            throw APIError(.conflict, "device \(agentID) is enrolled already with a certificate that is neither revoked nor expired; "
                                      + "revoke it first (segguard-collector revoke \(agentID) --reason ...) to enroll the device again")
        }
    }

    func simpleReenroll(_ request: Request, _ context: CollectorContext) async throws -> Response {
        let authority = try requireAuthority()
        let agent = try await identity(context)
        let (csr, agentID) = try await csr(request)
        guard agentID == agent.agentID else {
            metrics.identityMismatch()
            throw APIError(.forbidden, "the request names \"\(agentID)\"; the client certificate is \(agent.agentID)'s: a device renews only its own certificate")
        }
        guard let presented = agent.certificateSerial else { throw APIError(.forbidden, "client certificate: no serial number") }
        let now = Date()
        let certificate: Certificate
        do {
            certificate = try PKI.issueDevice(ca: authority.ca, request: csr, agentID: agentID, group: agent.group, validDays: authority.validDays)
        } catch {
            throw APIError(.badRequest, "\(error)")
        }
        let serial = PKI.serialHex(certificate)
        let action = AdminAction(time: now, by: "agent \(agentID)", action: "renew", target: "agent \(agentID)",
                                 detail: "serial \(presented) -> \(serial), valid until \(RFC3339.format(certificate.notValidAfter))")
        switch try await store.renew(agentID: agentID, presentedSerial: presented, legacyGroup: agent.certificateGroup, serial: serial,
                                     notAfter: certificate.notValidAfter, now: now, recording: action) {
        case .renewed(let group):
            if let row = try await store.device(id: agentID) { deviceRows.withLock { if $0 != nil { $0?[agentID] = row } } }
            try await refreshRevocations()  // a retried renewal revoked the unused certificate
            metrics.enrollment(.renewed)
            logger.notice("device certificate renewed", metadata: ["agent": "\(agentID)", "group": "\(group)", "serial": "\(serial)", "previous": "\(presented)"])
            return try pkcs7([certificate])
        case .notCurrent(let current):
            metrics.enrollment(.refused)
            throw APIError(.conflict, "certificate \(presented) is not \(agentID)'s current one (\(current)); a device renews with the certificate it was last issued")
        }
    }

    /// The CRL of every revoked device certificate, signed with the device CA, for the RADIUS
    /// server (fetch it more often than its next update: one hour).
    func crl() async throws -> Response {
        let authority = try requireAuthority()
        let der = try await crlBytes(authority)
        return Response(status: .ok, headers: [.contentType: "application/pkix-crl", .cacheControl: "max-age=60"],
                        body: .init(byteBuffer: ByteBuffer(bytes: der)))
    }

    /// The CRL from the revocations in memory (refreshed with every sweep and at once by this
    /// replica's own revocations): signed again when they changed or after a minute, so an
    /// unauthenticated flood of fetches costs neither the store nor the CA key anything.
    func crlBytes(_ authority: EnrollmentAuthority) async throws -> [UInt8] {
        if revoked.withLock({ $0 == nil }) { try await refreshRevocations() }
        let now = Date()
        let current = revoked.withLock { $0 } ?? [:]
        let serials = Set(current.keys)
        if let cached = crlCache.withLock({ $0 }), cached.serials == serials, now.timeIntervalSince(cached.made) < 60 { return cached.der }
        let entries = current.values.map { RevokedEntry(serialHex: $0.serial, time: $0.time) }
        let der = try RevocationList.make(ca: authority.ca, entries: entries, number: Int(now.timeIntervalSince1970 * 1000), thisUpdate: now,
                                          nextUpdate: now.addingTimeInterval(3600))
        crlCache.withLock { $0 = (now, der, serials) }
        return der
    }

    // MARK: Groups on the server

    /// The group the collector holds for an agent: its device row's, else its certificate's OU.
    /// A device with a row is known only by the certificates the row names (the current one,
    /// and the one before while the current has not been used): any other is refused. The
    /// first call with the current certificate revokes the one before (superseded).
    func resolveGroup(_ id: AgentIdentity) async throws -> AgentIdentity {
        if deviceRows.withLock({ $0 == nil }) { try await refreshDeviceGroups() }
        guard var row = deviceRows.withLock({ $0?[id.agentID] }) else { return id }
        if let serial = id.certificateSerial, !row.serial.isEmpty, serial != row.serial, serial != row.previousSerial {
            // Another replica may have enrolled or renewed it a moment ago: ask the store.
            if let fresh = try await store.device(id: id.agentID) {
                row = fresh
                deviceRows.withLock { $0?[id.agentID] = fresh }
            }
            if serial != row.serial && serial != row.previousSerial {
                metrics.revokedRefused()
                throw APIError(.forbidden, "certificate \(serial) is not \(id.agentID)'s current one: the device was enrolled or renewed since; "
                                           + "use the certificate it holds now")
            }
        }
        if let serial = id.certificateSerial, serial == row.serial, row.previousSerial != nil {
            if let superseded = try await store.confirmCurrent(agentID: id.agentID, serial: serial, now: Date()) {
                logger.notice("renewed certificate in use; the one before is revoked as superseded",
                              metadata: ["agent": "\(id.agentID)", "serial": "\(serial)", "superseded": "\(superseded)"])
                try await refreshRevocations()
            }
            deviceRows.withLock { $0?[id.agentID]?.previousSerial = nil }
        }
        return row.group == id.group ? id : id.moved(to: row.group)
    }

    /// Reads the device table from the store (another replica may have moved one).
    func refreshDeviceGroups() async throws {
        let all = try await store.devices()
        deviceRows.withLock { $0 = Dictionary(all.map { ($0.agentID, $0) }, uniquingKeysWith: { a, _ in a }) }
    }

    func createTokens(_ request: Request) async throws -> Response {
        let who = try requireAdmin(request)
        let body = try await decode(TokenRequest.self, request)
        let (texts, rows): ([String], [EnrollmentToken])
        do {
            (texts, rows) = try EnrollmentTokens.create(count: body.count, group: body.group, hours: body.expiresHours, uses: body.uses ?? 1, by: who)
        } catch {
            throw APIError(.badRequest, "\(error)")
        }
        try await store.createTokens(rows, recording: Self.tokensAction(rows, by: who))
        return try Self.json(.created, TokenReply(group: body.group, expiresAt: rows[0].expiresAt, uses: rows[0].usesLeft, tokens: texts))
    }

    static func tokensAction(_ rows: [EnrollmentToken], by who: String) -> AdminAction {
        AdminAction(time: rows[0].createdAt, by: who, action: "enrollment-tokens", target: "group \(rows[0].group)",
                    detail: "\(rows.count) token(s), \(rows[0].usesLeft) use(s) each, valid until \(RFC3339.format(rows[0].expiresAt))")
    }

    func setDeviceGroup(_ request: Request, _ context: CollectorContext) async throws -> Response {
        let who = try requireAdmin(request)
        let id = context.parameters.get("id") ?? ""
        let body = try await decode(GroupRequest.self, request)
        do {
            try PKI.validateName(id, what: "agent id")
            try PKI.validateName(body.group, what: "group")
        } catch {
            throw APIError(.badRequest, "\(error)")
        }
        let previous = try await store.device(id: id)?.group
        let action = AdminAction(time: Date(), by: who, action: "set-group", target: "agent \(id)", detail: "\(previous ?? "(certificate OU)") -> \(body.group)")
        guard try await store.setGroup(agentID: id, group: body.group, now: action.time, recording: action) else {
            throw APIError(.notFound, "no device \"\(id)\" has enrolled or reported")
        }
        let row = try await store.device(id: id)
        if let row { deviceRows.withLock { if $0 != nil { $0?[id] = row } } }
        logger.notice("device moved to another group", metadata: ["agent": "\(id)", "group": "\(body.group)", "by": "\(who)"])
        return try Self.json(.ok, row)
    }
}

/// `POST /api/v1/admin/enrollment-tokens`.
struct TokenRequest: StrictDecodable {
    var group: String
    var count: Int
    var expiresHours: Double
    var uses: Int?
    init(reading r: inout StrictJSONReader) throws(ReportDecodingError) {
        var group = "", count = 0, hours = 0.0, uses: Int?
        let seen = try r.object { (r: inout StrictJSONReader, key: String) throws(ReportDecodingError) in
            switch key {
            case "group": group = try r.string()
            case "count": count = try r.int()
            case "expires_hours": hours = Double(try r.int())
            case "uses": uses = try r.int()
            default: throw r.unknown()
            }
        }
        try r.require(["group", "count", "expires_hours"], in: seen)
        (self.group, self.count, self.expiresHours, self.uses) = (group, count, hours, uses)
    }
}

struct TokenReply: Encodable {
    var group: String
    var expiresAt: Date
    var uses: Int
    var tokens: [String]
    enum CodingKeys: String, CodingKey { case group, expiresAt = "expires_at", uses, tokens }
}

/// `PUT /api/v1/admin/devices/:id/group`.
struct GroupRequest: StrictDecodable {
    var group: String
    init(reading r: inout StrictJSONReader) throws(ReportDecodingError) {
        var group = ""
        let seen = try r.object { (r: inout StrictJSONReader, key: String) throws(ReportDecodingError) in
            switch key {
            case "group": group = try r.string()
            default: throw r.unknown()
            }
        }
        try r.require(["group"], in: seen)
        self.group = group
    }
}
