// Enrollment over the collector (EST shape): tokens, 200 devices, renewal, revocation with the
// CRL checked by OpenSSL, groups moved on the server; tokens raced across two replicas on one
// PostgreSQL; the agent's own renewal and its key/certificate swap.

import AsyncHTTPClient
import Crypto
import Foundation
import NIOCore
@testable import SegguardCollector
import SegguardPKI
import SegguardReport
import SegguardReporter
import SegguardTestSupport
import Synchronization
import Testing
import X509

/// A device as the imaging tool enrolls it: key made here, CSR, token; returns the certificate and key.
func enrollDevice(_ client: HTTPClient, _ url: String, id: String, token: String?) async throws -> (status: Int, body: String, issued: IssuedCertificate?) {
    let (request, key) = try PKI.makeRequest(agentID: id)
    let body = Data(try PKI.derBytes(request)).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
    var headers: [(String, String)] = []
    if let token { headers.append(("Authorization", "Basic " + Data("\(id):\(token)".utf8).base64EncodedString())) }
    let r = try await call(client, .POST, url + "/.well-known/est/simpleenroll", body: Data(body.utf8), headers: headers, contentType: "application/pkcs10")
    guard r.status == 200 else { return (r.status, r.body, nil) }
    let certificate = try EnrollmentAnswer.certificate(from: Data(r.body.utf8), key: key, agentID: id)
    return (r.status, r.body, try IssuedCertificate(certificate: certificate, privateKey: key))
}

/// Writes an issued certificate into the test PKI's device directory; returns its paths.
func save(_ issued: IssuedCertificate, in pki: TestPKI, as name: String) throws -> (cert: String, key: String) {
    let paths = (cert: "\(pki.directory)/devices/\(name).pem", key: "\(pki.directory)/devices/\(name).key")
    try PKI.write(issued, certificatePath: paths.cert, keyPath: paths.key, overwrite: true)
    return paths
}

/// Runs a program; returns its exit status and output (stdout and stderr).
func run(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = arguments
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

@Suite("Enrollment, renewal, revocation and server-side groups", .serialized)
struct EnrollmentTests {
    static func enrolling(_ pki: TestPKI, days: Int = 30) -> (inout CollectorConfiguration) -> Void {
        { $0.enrollment = EnrollmentAuthority(ca: pki.ca, validDays: days) }
    }

    @Test("200 devices enroll with one-time tokens (reused, expired, unknown and missing tokens refused), renew, one is revoked and refused with its reason and listed in the CRL OpenSSL checks, a device moved to another group gets that group's bundle",
          .timeLimit(.minutes(4)))
    func fleet() async throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let admin = Curve25519.Signing.PrivateKey()
        let c = try await TestCollector.start(policyKey: PolicySigningKey(admin.publicKey), pki: pki, configure: Self.enrolling(pki))
        let anonymous = try c.client(), adminClient = try c.client()
        do {
            try await fleetSteps(c, anonymous: anonymous, adminClient: adminClient, admin: admin)
        } catch {
            try? await anonymous.shutdown()
            try? await adminClient.shutdown()
            await c.stop()
            throw error
        }
        try? await anonymous.shutdown()
        try? await adminClient.shutdown()
        await c.stop()
    }

    func fleetSteps(_ c: TestCollector, anonymous: HTTPClient, adminClient: HTTPClient, admin: Curve25519.Signing.PrivateKey) async throws {
        let auth = [("Authorization", "Bearer \(TestCollector.adminToken)")]
        let store = c.collector.store

        // The CA certificates, as EST clients fetch them first.
        let cacerts = try await call(anonymous, .GET, c.url + "/.well-known/est/cacerts")
        #expect(cacerts.status == 200 && cacerts.headers.contains { $0.0.lowercased() == "content-type" && $0.1.hasPrefix("application/pkcs7-mime") })
        let cas = try CertsOnlyPKCS7.decode([UInt8](try #require(Data(base64Encoded: cacerts.body.filter { !$0.isWhitespace }))))
        #expect(cas == [c.pki.ca.certificate])

        // Tokens from the admin API: 200 one-time tokens of group mynumber, valid an hour.
        #expect(try await call(adminClient, .POST, c.url + "/api/v1/admin/enrollment-tokens", body: Data(#"{"group":"mynumber","count":200,"expires_hours":1}"#.utf8)).status == 401)
        let bad = try await call(adminClient, .POST, c.url + "/api/v1/admin/enrollment-tokens", body: Data(#"{"group":"my number","count":2,"expires_hours":1}"#.utf8), headers: auth)
        #expect(bad.status == 400 && bad.body.contains("group"), "\(bad.body)")
        let made = try await call(adminClient, .POST, c.url + "/api/v1/admin/enrollment-tokens", body: Data(#"{"group":"mynumber","count":200,"expires_hours":1}"#.utf8), headers: auth)
        #expect(made.status == 201, "\(made.body)")
        let tokens = try #require((try JSONSerialization.jsonObject(with: Data(made.body.utf8)) as? [String: Any])?["tokens"] as? [String])
        #expect(tokens.count == 200 && Set(tokens).count == 200)
        // An expired token (made by the store directly, an hour ago for an hour... ended a minute ago).
        let expired = EnrollmentTokens.make()
        try await store.createTokens([EnrollmentToken(sha256: EnrollmentTokens.sha256(expired), group: "mynumber", createdAt: Date().addingTimeInterval(-3600),
                                                      createdBy: "test", expiresAt: Date().addingTimeInterval(-60), usesLeft: 1)],
                                     recording: AdminAction(time: Date(), by: "test", action: "enrollment-tokens", target: "group mynumber", detail: "1 expired"))

        // 200 devices enroll at once (16 in flight), each with its own token.
        let ids = (0..<200).map { String(format: "tc-%04d", 7000 + $0) }
        let started = Date()
        let results = try await withThrowingTaskGroup(of: (String, Int, String, IssuedCertificate?).self) { group in
            var out: [(String, Int, String, IssuedCertificate?)] = []
            var next = 0
            func add() {
                let i = next
                next += 1
                group.addTask {
                    let client = try c.client()
                    let r = try await withClient(client) { (client: HTTPClient) async throws -> (Int, String, IssuedCertificate?) in
                        let r = try await enrollDevice(client, c.url, id: ids[i], token: tokens[i])
                        return (r.status, r.body, r.issued)
                    }
                    return (ids[i], r.0, r.1, r.2)
                }
            }
            for _ in 0..<16 { add() }
            while let r = try await group.next() {
                out.append(r)
                if next < ids.count { add() }
            }
            return out
        }
        let seconds = Date().timeIntervalSince(started)
        print("enrollment: 200 devices in \(String(format: "%.2f", seconds)) s (\(String(format: "%.0f", 200 / seconds)) devices/s, 16 in flight, debug build, one TLS connection each)")
        let failed = results.filter { $0.1 != 200 }
        #expect(failed.isEmpty, "\(failed.prefix(3).map { "\($0.0): \($0.1) \($0.2)" })")
        var issued: [String: IssuedCertificate] = [:]
        for (id, _, _, cert) in results { issued[id] = cert }
        #expect(issued.count == 200 && Set(issued.values.map { PKI.serialHex($0.certificate) }).count == 200)
        let first = try #require(issued["tc-7000"])
        #expect(try DeviceIdentity(certificate: first.certificate) == DeviceIdentity(agentID: "tc-7000", group: "mynumber"))
        #expect(first.certificate.notValidAfter.timeIntervalSinceNow > 29 * 86_400 && first.certificate.notValidAfter.timeIntervalSinceNow < 31 * 86_400)
        #expect(try await store.devices().count == 200)

        // Every other device renews (tc-7000..7002 are used below), 16 at a time, each with its
        // own certificate over mutual TLS: new serials, the rows follow.
        let renewing = Array(ids.dropFirst(3))
        let renewStarted = Date()
        let renewedSerials = try await withThrowingTaskGroup(of: (String, String?).self) { group in
            var out: [String: String?] = [:]
            var next = 0
            func add() throws {
                let id = renewing[next]
                next += 1
                let files = try save(issued[id]!, in: c.pki, as: id)
                group.addTask {
                    try await withClient(try c.client(device: files)) { (client: HTTPClient) async throws -> (String, String?) in
                        let (request, key) = try PKI.makeRequest(agentID: id)
                        let r = try await call(client, .POST, c.url + "/.well-known/est/simplereenroll", body: Data(Data(try PKI.derBytes(request)).base64EncodedString().utf8),
                                               contentType: "application/pkcs10")
                        guard r.status == 200 else { return (id, nil) }
                        return (id, PKI.serialHex(try EnrollmentAnswer.certificate(from: Data(r.body.utf8), key: key, agentID: id)))
                    }
                }
            }
            for _ in 0..<16 { try add() }
            while let (id, serial) = try await group.next() {
                out[id] = serial
                if next < renewing.count { try add() }
            }
            return out
        }
        let renewSeconds = Date().timeIntervalSince(renewStarted)
        print("renewal: \(renewing.count) devices in \(String(format: "%.2f", renewSeconds)) s (\(String(format: "%.0f", Double(renewing.count) / renewSeconds)) devices/s, 16 in flight, debug build)")
        #expect(renewedSerials.count == renewing.count && renewedSerials.values.allSatisfy { $0 != nil })
        let rows = Dictionary(uniqueKeysWithValues: try await store.devices().map { ($0.agentID, $0) })
        #expect(renewing.allSatisfy { id in rows[id]?.serial == renewedSerials[id]! && rows[id]?.previousSerial == PKI.serialHex(issued[id]!.certificate) })

        // Refusals, each named; none of them enrolls anything.
        let reused = try await enrollDevice(anonymous, c.url, id: "tc-7999", token: tokens[0])
        #expect(reused.status == 401 && reused.body.contains("used already"), "\(reused.body)")
        let late = try await enrollDevice(anonymous, c.url, id: "tc-7999", token: expired)
        #expect(late.status == 401 && late.body.contains("expired"), "\(late.body)")
        let unknown = try await enrollDevice(anonymous, c.url, id: "tc-7999", token: EnrollmentTokens.make())
        #expect(unknown.status == 401 && unknown.body.contains("unknown"))
        let none = try await enrollDevice(anonymous, c.url, id: "tc-7999", token: nil)
        #expect(none.status == 401 && none.body.contains("token"))
        #expect(try await store.device(id: "tc-7999") == nil)
        let spare = try await call(adminClient, .POST, c.url + "/api/v1/admin/enrollment-tokens", body: Data(#"{"group":"mynumber","count":4,"expires_hours":1}"#.utf8), headers: auth)
        let spareTokens = try #require((try JSONSerialization.jsonObject(with: Data(spare.body.utf8)) as? [String: Any])?["tokens"] as? [String])
        // Garbage and a forged signature (the sender does not hold the key) are 400, the token is not spent.
        let basic = [("Authorization", "Basic " + Data("x:\(spareTokens[0])".utf8).base64EncodedString())]
        let garbage = try await call(anonymous, .POST, c.url + "/.well-known/est/simpleenroll", body: Data("not base64 ***".utf8), headers: basic, contentType: "application/pkcs10")
        #expect(garbage.status == 400 && garbage.body.contains("base64"))
        var forged = try PKI.derBytes(try PKI.makeRequest(agentID: "tc-7999").request)
        forged[forged.count - 3] ^= 0x55
        let forgedReply = try await call(anonymous, .POST, c.url + "/.well-known/est/simpleenroll", body: Data(Data(forged).base64EncodedString().utf8),
                                         headers: basic, contentType: "application/pkcs10")
        #expect(forgedReply.status == 400, "\(forgedReply.body)")
        // An enrolled device id cannot be taken over with another token (409, the token kept).
        let takeover = try await enrollDevice(anonymous, c.url, id: "tc-7001", token: spareTokens[0])
        #expect(takeover.status == 409 && takeover.body.contains("revoke it first"), "\(takeover.body)")
        #expect(try await store.token(sha256: EnrollmentTokens.sha256(spareTokens[0]))?.usesLeft == 1)

        // Enrolled devices report with their certificate.
        let d0 = try save(first, in: c.pki, as: "tc-7000")
        let d0Client = try c.client(device: d0)
        defer { _ = d0Client.shutdown() }
        #expect(try await call(d0Client, .POST, c.url + "/api/v1/heartbeat", body: json(heartbeat("tc-7000"))).status == 204)
        #expect(try await store.agent(id: "tc-7000")?.group == "mynumber")

        // Renewal with the current certificate: a new key and certificate, recorded.
        let (renewRequest, renewKey) = try PKI.makeRequest(agentID: "tc-7000")
        let renewBody = Data(Data(try PKI.derBytes(renewRequest)).base64EncodedString().utf8)
        let renewed = try await call(d0Client, .POST, c.url + "/.well-known/est/simplereenroll", body: renewBody, contentType: "application/pkcs10")
        #expect(renewed.status == 200, "\(renewed.body)")
        let newCert = try EnrollmentAnswer.certificate(from: Data(renewed.body.utf8), key: renewKey, agentID: "tc-7000")
        #expect(PKI.serialHex(newCert) != PKI.serialHex(first.certificate))
        let row = try #require(try await store.device(id: "tc-7000"))
        #expect(row.serial == PKI.serialHex(newCert) && row.previousSerial == PKI.serialHex(first.certificate))
        // A renewal whose answer was lost may be asked again with the old certificate (C0): the
        // certificate issued first (C1, never used) is revoked as superseded.
        let c1 = try save(try IssuedCertificate(certificate: newCert, privateKey: renewKey), in: c.pki, as: "tc-7000-c1")
        let (retryRequest, retryKey) = try PKI.makeRequest(agentID: "tc-7000")
        let again = try await call(d0Client, .POST, c.url + "/.well-known/est/simplereenroll",
                                   body: Data(Data(try PKI.derBytes(retryRequest)).base64EncodedString().utf8), contentType: "application/pkcs10")
        #expect(again.status == 200, "\(again.body)")
        let c2 = try save(try IssuedCertificate(certificate: try EnrollmentAnswer.certificate(from: Data(again.body.utf8), key: retryKey, agentID: "tc-7000"),
                                                privateKey: retryKey), in: c.pki, as: "tc-7000-c2")
        try await withClient(try c.client(device: c1)) { (client: HTTPClient) async throws -> Void in
            let superseded = try await call(client, .POST, c.url + "/api/v1/heartbeat", body: json(heartbeat("tc-7000")))
            #expect(superseded.status == 403 && superseded.body.contains("superseded"), "\(superseded.body)")
        }
        // One that names another device is refused; without a certificate it is refused.
        let other = try await call(d0Client, .POST, c.url + "/.well-known/est/simplereenroll",
                                   body: Data(Data(try PKI.derBytes(try PKI.makeRequest(agentID: "tc-7001").request)).base64EncodedString().utf8), contentType: "application/pkcs10")
        #expect(other.status == 403 && other.body.contains("its own"), "\(other.body)")
        #expect(try await call(anonymous, .POST, c.url + "/.well-known/est/simplereenroll", body: renewBody, contentType: "application/pkcs10").status == 401)
        // The device uses C2: C0 is revoked as superseded from then on (no renewal with it, no call).
        try await withClient(try c.client(device: c2)) { (client: HTTPClient) async throws -> Void in
            #expect(try await call(client, .POST, c.url + "/api/v1/heartbeat", body: json(heartbeat("tc-7000"))).status == 204)
        }
        let c0Refused = try await call(d0Client, .POST, c.url + "/.well-known/est/simplereenroll",
                                       body: Data(Data(try PKI.derBytes(try PKI.makeRequest(agentID: "tc-7000").request)).base64EncodedString().utf8), contentType: "application/pkcs10")
        #expect(c0Refused.status == 403 && c0Refused.body.contains("superseded"), "\(c0Refused.body)")
        #expect(try await store.device(id: "tc-7000")?.previousSerial == nil)
        // A certificate of the same id the device table does not name (issued by hand) is refused.
        let byHand = try save(try PKI.issueDevice(ca: c.pki.ca, agentID: "tc-7000", group: "mynumber"), in: c.pki, as: "tc-7000-hand")
        try await withClient(try c.client(device: byHand)) { (client: HTTPClient) async throws -> Void in
            let r = try await call(client, .POST, c.url + "/api/v1/heartbeat", body: json(heartbeat("tc-7000")))
            #expect(r.status == 403 && r.body.contains("not tc-7000's current one"), "\(r.body)")
        }
        // Renewed once more (C3, not used yet), then revoked by device id: C3 and C2 both, so
        // neither renews nor reports (the red team's escape: renewing with the one before).
        let (r3, k3) = try PKI.makeRequest(agentID: "tc-7000")
        let c2Client = try c.client(device: c2)
        defer { _ = c2Client.shutdown() }
        let third = try await call(c2Client, .POST, c.url + "/.well-known/est/simplereenroll", body: Data(Data(try PKI.derBytes(r3)).base64EncodedString().utf8),
                                   contentType: "application/pkcs10")
        #expect(third.status == 200)
        let c3Cert = try EnrollmentAnswer.certificate(from: Data(third.body.utf8), key: k3, agentID: "tc-7000")
        let byDevice = try await call(adminClient, .POST, c.url + "/api/v1/admin/revoke", body: Data(#"{"agent_id":"tc-7000","reason":"lost on the train"}"#.utf8), headers: auth)
        let c2Serial = PKI.serialHex(try PKI.loadCertificate(path: c2.cert))
        #expect(byDevice.status == 201 && byDevice.body.contains(PKI.serialHex(c3Cert)) && byDevice.body.contains(c2Serial),
                "\(byDevice.body)")
        let escape = try await call(c2Client, .POST, c.url + "/.well-known/est/simplereenroll",
                                    body: Data(Data(try PKI.derBytes(try PKI.makeRequest(agentID: "tc-7000").request)).base64EncodedString().utf8), contentType: "application/pkcs10")
        #expect(escape.status == 403 && escape.body.contains("lost on the train"), "\(escape.body)")

        // A device that reported with a certificate of `pki issue-device` (no device row) is
        // not taken over with a token; once its certificate is revoked it may enroll.
        let legacy = try c.pki.device("tc-7700", group: "locked")
        try await withClient(try c.client(device: legacy)) { (client: HTTPClient) async throws -> Void in
            #expect(try await call(client, .POST, c.url + "/api/v1/heartbeat", body: json(heartbeat("tc-7700"))).status == 204)
        }
        let takeLegacy = try await enrollDevice(anonymous, c.url, id: "tc-7700", token: spareTokens[2])
        #expect(takeLegacy.status == 409, "\(takeLegacy.body)")
        let legacyRow = try await store.device(id: "tc-7700")
        #expect(try await store.agent(id: "tc-7700")?.group == "locked" && legacyRow == nil)
        // Revoked by a serial typed with a leading zero byte and capitals: the same certificate.
        let legacySerial = "00" + PKI.serialHex(try PKI.loadCertificate(path: legacy.cert)).uppercased()
        #expect(try await call(adminClient, .POST, c.url + "/api/v1/admin/revoke",
                               body: Data(#"{"agent_id":"tc-7700","serial":"\#(legacySerial)","reason":"retired"}"#.utf8), headers: auth).status == 201)
        try await withClient(try c.client(device: legacy)) { (client: HTTPClient) async throws -> Void in
            #expect(try await call(client, .POST, c.url + "/api/v1/heartbeat", body: json(heartbeat("tc-7700"))).status == 403)
        }
        #expect(try await enrollDevice(anonymous, c.url, id: "tc-7700", token: spareTokens[2]).status == 200)

        // Revocation: tc-7001's certificate is refused with the reason, and is in the CRL.
        let d1 = try save(try #require(issued["tc-7001"]), in: c.pki, as: "tc-7001")
        let d2 = try save(try #require(issued["tc-7002"]), in: c.pki, as: "tc-7002")
        let d1Serial = PKI.serialHex(try #require(issued["tc-7001"]).certificate)
        let revoke = try await call(adminClient, .POST, c.url + "/api/v1/admin/revoke",
                                    body: Data(#"{"agent_id":"tc-7001","serial":"\#(d1Serial)","reason":"stolen from the counter"}"#.utf8), headers: auth)
        #expect(revoke.status == 201, "\(revoke.body)")
        try await withClient(try c.client(device: d1)) { (client: HTTPClient) async throws -> Void in
            let refused = try await call(client, .POST, c.url + "/api/v1/heartbeat", body: json(heartbeat("tc-7001")))
            #expect(refused.status == 403 && refused.body.contains("stolen from the counter"), "\(refused.body)")
            let renewal = try await call(client, .POST, c.url + "/.well-known/est/simplereenroll",
                                         body: Data(Data(try PKI.derBytes(try PKI.makeRequest(agentID: "tc-7001").request)).base64EncodedString().utf8), contentType: "application/pkcs10")
            #expect(renewal.status == 403, "a revoked certificate cannot renew itself")
        }
        let crl = try await call(anonymous, .GET, c.url + "/pki/devices.crl")
        #expect(crl.status == 200)
        let crlRaw = try await crlBytes(anonymous, c.url + "/pki/devices.crl")
        let crlPath = c.pki.directory + "/devices.crl"
        try RevocationList.pem(crlRaw).write(toFile: crlPath, atomically: true, encoding: .utf8)
        // OpenSSL verifies the CRL's signature with the CA and finds the serial in it; a check
        // of the revoked certificate against the CRL fails, a good one passes.
        let text = try run("/usr/bin/openssl", ["crl", "-in", crlPath, "-CAfile", c.pki.directory + "/ca.pem", "-noout", "-text"])
        #expect(text.status == 0 && text.output.contains("verify OK") && text.output.uppercased().contains(d1Serial.uppercased()), "\(text.output)")
        let revokedCheck = try run("/usr/bin/openssl", ["verify", "-crl_check", "-CAfile", c.pki.directory + "/ca.pem", "-CRLfile", crlPath, d1.cert])
        #expect(revokedCheck.status != 0 && revokedCheck.output.contains("revoked"), "\(revokedCheck.output)")
        let goodCheck = try run("/usr/bin/openssl", ["verify", "-crl_check", "-CAfile", c.pki.directory + "/ca.pem", "-CRLfile", crlPath, d2.cert])
        #expect(goodCheck.status == 0, "\(goodCheck.output)")
        // Enrolled again after the revocation, with a new token.
        let back = try await enrollDevice(anonymous, c.url, id: "tc-7001", token: spareTokens[1])
        #expect(back.status == 200, "\(back.body)")

        // Groups on the server: bundles for both groups; tc-7002 gets mynumber's, is moved to
        // lgwan, and its next fetch is lgwan's (same certificate, OU still mynumber).
        let yaml = "schema_version: 1\nname: pushed\nsites: [{name: hq, wired: [{interfaces: [eth0]}]}]\nvdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}\n"
        for (group, version) in [("mynumber", 4), ("lgwan", 1)] {
            let b = try PolicySigning.sign(PolicyBundlePayload(group: group, version: Int64(version), policyYAML: yaml), with: admin)
            #expect(try await call(adminClient, .PUT, c.url + "/api/v1/admin/policy/\(group)", body: json(b), headers: auth).status == 201)
        }
        try await withClient(try c.client(device: d2)) { (client: HTTPClient) async throws -> Void in
            let before = try await call(client, .GET, c.url + "/api/v1/policy")
            #expect(try ReportCoding.decoder().decode(SignedPolicyBundle.self, from: Data(before.body.utf8)).unverifiedPayload().group == "mynumber")
            let move = try await call(adminClient, .PUT, c.url + "/api/v1/admin/devices/tc-7002/group", body: Data(#"{"group":"lgwan"}"#.utf8), headers: auth)
            #expect(move.status == 200 && move.body.contains("lgwan"), "\(move.body)")
            #expect(try await call(adminClient, .PUT, c.url + "/api/v1/admin/devices/tc-9999/group", body: Data(#"{"group":"lgwan"}"#.utf8), headers: auth).status == 404)
            #expect(try await call(adminClient, .PUT, c.url + "/api/v1/admin/devices/tc-7002/group", body: Data(#"{"group":"a b"}"#.utf8), headers: auth).status == 400)
            let after = try await call(client, .GET, c.url + "/api/v1/policy")
            #expect(try ReportCoding.decoder().decode(SignedPolicyBundle.self, from: Data(after.body.utf8)).unverifiedPayload().group == "lgwan")
            #expect(try await call(client, .POST, c.url + "/api/v1/heartbeat", body: json(heartbeat("tc-7002"))).status == 204)
        }
        #expect(try await store.agent(id: "tc-7002")?.group == "lgwan")
        // Every step is on the operator-actions record.
        let kinds = Set(try await store.actions(limit: 1000).map(\.action))
        #expect(kinds.isSuperset(of: ["enrollment-tokens", "enroll", "renew", "revoke", "set-group"]), "\(kinds)")
        #expect(try await call(adminClient, .GET, c.url + "/metrics").body.contains("segguard_collector_enrollments_total{result=\"enrolled\"} 202"))
    }

    func crlBytes(_ client: HTTPClient, _ url: String) async throws -> [UInt8] {
        let response = try await client.execute(HTTPClientRequest(url: url), timeout: .seconds(30))
        return Array((try await response.body.collect(upTo: 1 << 20)).readableBytesView)
    }

    @Test("the agent renews its own certificate before it ends: new key and certificate swapped in place, its next heartbeat comes with the new one; a swap cut short between its renames is completed at the next start")
    func agentRenewal() async throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let c = try await TestCollector.start(pki: pki, configure: Self.enrolling(pki, days: 60))
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A certificate 10 days from its end; the agent renews 30 days before.
        try pki.device("tc-7100", group: "mynumber", validDays: 10)
        let device = try pki.device("tc-7100", group: "mynumber")
        let oldSerial = PKI.serialHex(try PKI.loadCertificate(path: device.cert))
        let reporter = try await makeReporter(c, id: "tc-7100", group: "mynumber", dir: dir)
        reporter.start()
        let renewed = try await eventually(30) {
            try await c.collector.store.events(EventFilter(agentID: "tc-7100", limit: 50)).contains { $0.event.kind == "certificate-renewed" }
        }
        #expect(renewed)
        let now = try PKI.load(certificatePath: device.cert, keyPath: device.key)
        #expect(PKI.serialHex(now.certificate) != oldSerial && now.certificate.notValidAfter.timeIntervalSinceNow > 59 * 86_400)
        #expect(reporter.certificateNotAfter == now.certificate.notValidAfter)
        // The collector sees the new certificate on the agent's next heartbeats.
        #expect(try await eventually(30) { try await c.collector.store.agent(id: "tc-7100")?.certificateSerial == PKI.serialHex(now.certificate) })
        let attrs = try FileManager.default.attributesOfItem(atPath: device.key)
        #expect((attrs[.posixPermissions] as? Int) == 0o600)
        await reporter.stop()

        // Cut short between the key's rename and the certificate's: the key is new, the old
        // certificate still in place, the new one waiting beside it.
        let next = try PKI.issueDevice(ca: pki.ca, agentID: "tc-7100", group: "mynumber")
        try next.privateKeyPEM.write(toFile: device.key, atomically: true, encoding: .utf8)
        try next.certificatePEM.write(toFile: device.cert + ".next", atomically: true, encoding: .utf8)
        #expect(throws: PKIError.self) { try PKI.load(certificatePath: device.cert, keyPath: device.key) }
        #expect(try PKI.finishReplace(certificatePath: device.cert, keyPath: device.key))
        #expect(PKI.serialHex(try PKI.load(certificatePath: device.cert, keyPath: device.key).certificate) == PKI.serialHex(next.certificate))
        // Cut short before the first rename: the old pair stays, the new files go.
        try "x".write(toFile: device.key + ".next", atomically: true, encoding: .utf8)
        try "y".write(toFile: device.cert + ".next", atomically: true, encoding: .utf8)
        #expect(try !PKI.finishReplace(certificatePath: device.cert, keyPath: device.key))
        #expect(!FileManager.default.fileExists(atPath: device.key + ".next") && !FileManager.default.fileExists(atPath: device.cert + ".next"))
        await c.stop()
    }

    @Test("a device moved to another group applies that group's bundle (any admin-signed group); moving back never goes back to an older bundle of the first group")
    func agentFollowsGroup() async throws {
        let admin = Curve25519.Signing.PrivateKey()
        let c = try await TestCollector.start(policyKey: PolicySigningKey(admin.publicKey))
        defer { c.pki.remove() }
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = c.collector.store
        let yaml = "schema_version: 1\nname: pushed\nsites: [{name: hq, wired: [{interfaces: [eth0]}]}]\nvdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}\n"
        func push(_ group: String, _ version: Int64) async throws {
            let b = try PolicySigning.sign(PolicyBundlePayload(group: group, version: version, policyYAML: yaml, comment: "\(group) v\(version)"), with: admin)
            _ = try await store.putBundle(StoredBundle(group: group, version: version, policySHA256: try b.unverifiedPayload().policySHA256, bundle: b,
                                                       pushedAt: Date(), pushedBy: "test"))
        }
        try await push("mynumber", 5)
        try await push("lgwan", 1)
        let applied = Mutex<[String]>([])
        let reporter = try await makeReporter(c, id: "tc-7200", group: "mynumber", dir: dir, key: admin.publicKey) { payload in
            applied.withLock { $0.append("\(payload.group) v\(payload.version)") }
        }
        reporter.start()
        #expect(try await eventually(20) { reporter.appliedBundle?.version == 5 })
        let moved = AdminAction(time: Date(), by: "test", action: "set-group", target: "agent tc-7200", detail: "mynumber -> lgwan")
        #expect(try await store.setGroup(agentID: "tc-7200", group: "lgwan", now: Date(), recording: moved))
        try await c.collector.refreshDeviceGroups()
        #expect(try await eventually(20) { reporter.appliedBundle?.group == "lgwan" })
        #expect(reporter.appliedBundle?.version == 1 && reporter.appliedBundle?.earlierGroups == ["mynumber": 5])
        // Back to mynumber, where the collector now serves an older version 3 (a replay): refused.
        let b3 = try PolicySigning.sign(PolicyBundlePayload(group: "mynumber", version: 3, policyYAML: yaml), with: admin)
        let sqlite = try #require(store as? SQLiteStore)
        _ = try await sqlite.connection.query("UPDATE bundles SET version = 3, bundle = ? WHERE grp = 'mynumber'", [.text(try ColumnJSON.encode(b3))])
        #expect(try await store.setGroup(agentID: "tc-7200", group: "mynumber", now: Date(), recording: moved))
        try await c.collector.refreshDeviceGroups()
        #expect(try await eventually(20) {
            try await store.events(EventFilter(agentID: "tc-7200", limit: 100)).contains { $0.event.kind == "bundle-refused" && $0.event.severity == "critical" }
        })
        #expect(reporter.appliedBundle?.group == "lgwan" && applied.withLock { $0 } == ["mynumber v5", "lgwan v1"])
        await reporter.stop()
        await c.stop()
    }

    @Test("several collector URLs: an agent whose first collector cannot be reached reports to the next")
    func severalURLs() async throws {
        let c = try await TestCollector.start()
        defer { c.pki.remove() }
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let dead = try ReplicaTests.freePort()
        let reporter = try await makeReporter(c, id: "tc-7300", group: "mynumber", dir: dir, url: "https://127.0.0.1:\(dead), \(c.url)")
        reporter.start()
        #expect(try await eventually(30) { try await c.collector.store.agent(id: "tc-7300") != nil })
        #expect(reporter.collectorURL == c.url)
        await reporter.stop()
        await c.stop()
    }
}

@Suite("Enrollment tokens across two replicas on one PostgreSQL", .serialized,
       .enabled(if: PostgresServer.binaries() != nil, "PostgreSQL server binaries are not installed (postgresql package)"))
struct EnrollmentReplicaTests {
    @Test("a one-time token raced on two replicas enrolls exactly one device; a three-use token raced by ten devices enrolls exactly three; one new device id raced with two tokens gets one certificate; stale sweeps of both replicas take the advisory lock in turn",
          .timeLimit(.minutes(3)))
    func tokensAcrossReplicas() async throws {
        let server = try SharedPostgres.server.get()
        let db = "e_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        try server.createDatabase(db)
        let storeA = PostgresStore(configuration: try PostgresStore.configuration(url: server.url(database: db)))
        let storeB = PostgresStore(configuration: try PostgresStore.configuration(url: server.url(database: db)))
        try await storeA.migrate()
        let pki = try TestPKI()
        defer { pki.remove() }
        let a = try await TestCollector.start(store: storeA, pki: pki, configure: EnrollmentTests.enrolling(pki))
        let b = try await TestCollector.start(store: storeB, pki: pki, configure: EnrollmentTests.enrolling(pki))
        let now = Date()
        let once = EnrollmentTokens.make(), thrice = EnrollmentTokens.make()
        try await storeA.createTokens([
            EnrollmentToken(sha256: EnrollmentTokens.sha256(once), group: "mynumber", createdAt: now, createdBy: "test", expiresAt: now.addingTimeInterval(600), usesLeft: 1),
            EnrollmentToken(sha256: EnrollmentTokens.sha256(thrice), group: "lgwan", createdAt: now, createdBy: "test", expiresAt: now.addingTimeInterval(600), usesLeft: 3),
        ], recording: AdminAction(time: now, by: "test", action: "enrollment-tokens", target: "test", detail: ""))
        func race(_ token: String, ids: [String]) async throws -> [Int] {
            try await withThrowingTaskGroup(of: Int.self) { group in
                for (i, id) in ids.enumerated() {
                    let target = i % 2 == 0 ? a : b
                    group.addTask {
                        try await withClient(try target.client()) { (client: HTTPClient) async throws -> Int in
                            try await enrollDevice(client, target.url, id: id, token: token).status
                        }
                    }
                }
                var out: [Int] = []
                for try await s in group { out.append(s) }
                return out
            }
        }
        let first = try await race(once, ids: ["tc-7400", "tc-7401"])
        #expect(first.sorted() == [200, 401], "\(first)")
        let second = try await race(thrice, ids: (0..<10).map { "tc-75\(String(format: "%02d", $0))" })
        #expect(second.filter { $0 == 200 }.count == 3 && second.filter { $0 == 401 }.count == 7, "\(second)")
        #expect(try await storeA.devices().count == 4)
        // One new device id enrolled at the same moment on both replicas with two different
        // tokens (no row to lock yet): one certificate, every round.
        let many = (0..<20).map { _ in EnrollmentTokens.make() }
        try await storeA.createTokens(many.map {
            EnrollmentToken(sha256: EnrollmentTokens.sha256($0), group: "mynumber", createdAt: now, createdBy: "test", expiresAt: now.addingTimeInterval(600), usesLeft: 1)
        }, recording: AdminAction(time: now, by: "test", action: "enrollment-tokens", target: "test", detail: ""))
        for round in 0..<10 {
            let id = "tc-78\(String(format: "%02d", round))"
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for (i, target) in [a, b].enumerated() {
                    group.addTask {
                        try await withClient(try target.client()) { (client: HTTPClient) async throws -> Int in
                            try await enrollDevice(client, target.url, id: id, token: many[round * 2 + i]).status
                        }
                    }
                }
                var out: [Int] = []
                for try await s in group { out.append(s) }
                return out.sorted()
            }
            #expect(statuses == [200, 409], "round \(round): \(statuses)")
        }
        #expect(try await storeA.token(sha256: EnrollmentTokens.sha256(thrice))?.usesLeft == 0)
        #expect(try await storeA.devices().count == 14)
        // Two sweeps at the same moment: one holds the lock, the other skips (no error).
        async let s1 = storeA.markStale(now: Date().addingTimeInterval(3600), intervals: 3)
        async let s2 = storeB.markStale(now: Date().addingTimeInterval(3600), intervals: 3)
        _ = try await (s1, s2)
        await a.stop()
        await b.stop()
    }
}

@Suite("segguard-collector's store tools (tokens, devices, revoke, crl)", .serialized,
       .enabled(if: ProcessInfo.processInfo.environment["SEGGUARD_BIN_DIR"] != nil, "SEGGUARD_BIN_DIR is not set (scripts/test.sh sets it to the build's bin directory)"))
struct StoreToolTests {
    @Test("tokens create writes CSV once (0600, never over a file) and stores only hashes; bad arguments are named; devices set-group/list, revoke and crl work on the store, and OpenSSL verifies the CRL")
    func tools() async throws {
        let bin = try #require(ProcessInfo.processInfo.environment["SEGGUARD_BIN_DIR"]) + "/segguard-collector"
        let pki = try TestPKI()
        defer { pki.remove() }
        let dir = pki.directory
        let store = "sqlite:\(dir)/tools.sqlite"
        // Bad arguments: named, exit 2, nothing stored.
        let badGroup = try run(bin, ["tokens", "create", "--store", store, "--group", "my number", "--count", "2"])
        #expect(badGroup.status == 2 && badGroup.output.contains("group \"my number\""), "\(badGroup.output)")
        let badExpiry = try run(bin, ["tokens", "create", "--store", store, "--group", "mynumber", "--expires", "soon"])
        #expect(badExpiry.status == 2 && badExpiry.output.contains("expires \"soon\""), "\(badExpiry.output)")
        let badCount = try run(bin, ["tokens", "create", "--store", store, "--group", "mynumber", "--count", "0"])
        #expect(badCount.status == 2 && badCount.output.contains("count"), "\(badCount.output)")
        // Tokens: CSV to a new 0600 file; an existing file is never overwritten.
        let made = try run(bin, ["tokens", "create", "--store", store, "--group", "mynumber", "--count", "5", "--expires", "30m", "--uses", "2", "-o", dir + "/t.csv"])
        #expect(made.status == 0, "\(made.output)")
        let lines = try String(contentsOfFile: dir + "/t.csv", encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 6 && lines[0] == "token,group,expires_at,uses" && lines.dropFirst().allSatisfy { $0.hasPrefix("sgt_") && $0.hasSuffix(",mynumber," + $0.split(separator: ",")[2] + ",2") })
        #expect((try FileManager.default.attributesOfItem(atPath: dir + "/t.csv")[.posixPermissions] as? Int) == 0o600)
        let again = try run(bin, ["tokens", "create", "--store", store, "--group", "mynumber", "-o", dir + "/t.csv"])
        #expect(again.status != 0 && again.output.contains("must not exist"), "\(again.output)")
        let sqlite = try await SQLiteStore(path: dir + "/tools.sqlite")
        let first = String(lines[1].split(separator: ",")[0])
        let row = try #require(try await sqlite.token(sha256: EnrollmentTokens.sha256(first)))
        #expect(row.usesLeft == 2 && row.expiresAt.timeIntervalSinceNow > 25 * 60 && row.expiresAt.timeIntervalSinceNow < 31 * 60)
        let raw = try await sqlite.connection.query("SELECT * FROM enrollment_tokens").map { "\($0)" }.joined()
        #expect(!raw.contains(first), "the token text itself is not stored")
        // A device that reported with an OU certificate (no device row): moved, revoked.
        let device = try pki.device("tc-7600", group: "mynumber")
        let cert = try PKI.loadCertificate(path: device.cert)
        var hb = heartbeat("tc-7600")
        hb.agentID = nil
        _ = try await sqlite.recordHeartbeat(hb, from: AgentIdentity(agentID: "tc-7600", group: "mynumber", certificateNotAfter: cert.notValidAfter,
                                                                     certificateSerial: PKI.serialHex(cert)), at: Date())
        #expect(try run(bin, ["devices", "set-group", "--store", store, "tc-7600", "lgwan"]).output.contains("(certificate OU) -> lgwan"))
        #expect(try run(bin, ["devices", "set-group", "--store", store, "tc-9999", "lgwan"]).status == 1)
        #expect(try run(bin, ["devices", "set-group", "--store", store, "tc-7600", "a/b"]).status == 2)
        let revoked = try run(bin, ["revoke", "--store", store, "tc-7600", "--reason", "retired", "--by", "sato"])
        #expect(revoked.status == 0 && revoked.output.contains(PKI.serialHex(cert)), "\(revoked.output)")
        #expect(try run(bin, ["revoke", "--store", store, "tc-7600", "--reason", " "]).status == 2)
        let listed = try run(bin, ["devices", "list", "--store", store]).output
        #expect(listed.contains("tc-7600\tlgwan\t\(PKI.serialHex(cert))") && listed.contains("legacy certificate\trevoked"), "\(listed)")
        let actions = try await sqlite.actions(limit: 10)
        #expect(actions.contains { $0.action == "revoke" && $0.by == "sato" } && actions.contains { $0.action == "set-group" } && actions.contains { $0.action == "enrollment-tokens" })
        try await sqlite.close()
        // The CRL file, PEM, verified by OpenSSL with the CA; the revoked certificate fails against it.
        let crl = try run(bin, ["crl", "--store", store, "--ca-cert", dir + "/ca.pem", "--ca-key", dir + "/ca.key", "--pem", "-o", dir + "/devices.crl"])
        #expect(crl.status == 0 && crl.output.contains("1 revoked"), "\(crl.output)")
        let text = try run("/usr/bin/openssl", ["crl", "-in", dir + "/devices.crl", "-CAfile", dir + "/ca.pem", "-noout", "-text"])
        #expect(text.output.contains("verify OK") && text.output.uppercased().contains(PKI.serialHex(cert).uppercased()), "\(text.output)")
        let check = try run("/usr/bin/openssl", ["verify", "-crl_check", "-CAfile", dir + "/ca.pem", "-CRLfile", dir + "/devices.crl", device.cert])
        #expect(check.status != 0 && check.output.contains("revoked"))
        let wrongKey = try run(bin, ["crl", "--store", store, "--ca-cert", dir + "/ca.pem", "--ca-key", dir + "/server.key", "-o", dir + "/x.crl"])
        #expect(wrongKey.status == 2 && wrongKey.output.contains("does not belong"), "\(wrongKey.output)")
    }
}
