import Foundation
import SegguardPKI
import SwiftASN1
import Testing
import X509

/// A fresh directory under /tmp, removed by the caller.
private func temporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "segguard-pki-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
    return path
}

private func mode(of path: String) throws -> Int {
    let attributes = try FileManager.default.attributesOfItem(atPath: path)
    return (attributes[.posixPermissions] as! NSNumber).intValue
}

/// Runs `body` and returns the ``PKIError`` it throws; records an issue when it throws nothing or something else.
private func pkiError(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> PKIError? {
    do {
        try body()
        Issue.record("expected a PKIError, nothing was thrown", sourceLocation: sourceLocation)
    } catch let error as PKIError {
        return error
    } catch {
        Issue.record("expected a PKIError, got \(type(of: error)): \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

private func validate(_ leaf: Certificate, against root: Certificate) async -> CertificateValidationResult {
    var verifier = Verifier(rootCertificates: CertificateStore([root])) {
        RFC5280Policy()
    }
    return await verifier.validate(leaf: leaf, intermediates: CertificateStore())
}

private func isValid(_ result: CertificateValidationResult) -> Bool {
    if case .validCertificate = result { return true }
    return false
}

/// One CA, server and device for the whole suite: P-256 signing is cheap, but this keeps the tests short.
private let ca = try! PKI.makeCA(commonName: "segment-guard test CA", organization: "Example Corp")
private let server = try! PKI.issueServer(
    ca: ca, commonName: "collector", dnsNames: ["collector.example.test", "localhost"], ipAddresses: ["127.0.0.1", "::1"])
private let device = try! PKI.issueDevice(ca: ca, agentID: "laptop-042", group: "finance")

@Suite("PKI")
struct PKITests {
    // MARK: - Issuing and chains

    @Test("the CA is self-signed, a critical CA, may sign certificates and has a key identifier")
    func caExtensions() throws {
        let cert = ca.certificate
        #expect(cert.subject == cert.issuer)
        #expect(cert.publicKey.isValidSignature(cert.signature, for: cert))
        #expect(try cert.extensions.basicConstraints == .isCertificateAuthority(maxPathLength: nil))
        #expect(cert.extensions[oid: .X509ExtensionID.basicConstraints]?.critical == true)
        let usage = try #require(try cert.extensions.keyUsage)
        #expect(usage.keyCertSign && usage.cRLSign && !usage.digitalSignature)
        #expect(try cert.extensions.subjectKeyIdentifier != nil)
        #expect(cert.subject.description.contains("CN=segment-guard test CA"))
        #expect(cert.subject.description.contains("O=Example Corp"))
        #expect(cert.publicKey == ca.privateKey.publicKey)
        #expect(ca.certificatePEM.hasPrefix("-----BEGIN CERTIFICATE-----\n"))
        #expect(ca.privateKeyPEM.hasPrefix("-----BEGIN PRIVATE KEY-----\n"))
    }

    @Test("validity starts a few minutes in the past, ends after the requested days, and serials differ")
    func validityAndSerials() throws {
        let now = Date()
        let cert = device.certificate
        #expect(cert.notValidBefore <= now.addingTimeInterval(-60))
        #expect(cert.notValidBefore >= now.addingTimeInterval(-PKI.clockSkewAllowance - 60))
        let expectedEnd = now.addingTimeInterval(825 * 86_400)
        #expect(abs(cert.notValidAfter.timeIntervalSince(expectedEnd)) < 120)
        #expect(abs(ca.certificate.notValidAfter.timeIntervalSince(now.addingTimeInterval(3650 * 86_400))) < 120)
        let other = try PKI.issueDevice(ca: ca, agentID: "laptop-042", group: "finance")
        #expect(other.certificate.serialNumber != cert.serialNumber)
        #expect(other.certificate.publicKey != cert.publicKey)
    }

    @Test("a leaf never outlives its CA")
    func leafCutToCA() throws {
        let shortCA = try PKI.makeCA(commonName: "short CA", validDays: 10)
        let leaf = try PKI.issueDevice(ca: shortCA, agentID: "a", group: "g", validDays: 825)
        #expect(leaf.certificate.notValidAfter == shortCA.certificate.notValidAfter)
    }

    @Test("server and device certificates chain to the CA")
    func chainsToCA() async throws {
        let serverResult = await validate(server.certificate, against: ca.certificate)
        #expect(isValid(serverResult), "server: \(serverResult)")
        let deviceResult = await validate(device.certificate, against: ca.certificate)
        #expect(isValid(deviceResult), "device: \(deviceResult)")
        if case .validCertificate(let chain) = deviceResult {
            #expect(Array(chain) == [device.certificate, ca.certificate])
        }
    }

    @Test("a device certificate from another CA does not validate")
    func otherCARejected() async throws {
        let otherCA = try PKI.makeCA(commonName: "segment-guard test CA", organization: "Example Corp")
        let foreign = try PKI.issueDevice(ca: otherCA, agentID: "laptop-042", group: "finance")
        // Same subject names as the trusted CA and its device: only the signature tells them apart.
        #expect(foreign.certificate.issuer == ca.certificate.subject)
        let result = await validate(foreign.certificate, against: ca.certificate)
        #expect(!isValid(result), "a foreign device certificate validated: \(result)")
        // ...and it does validate against its own CA, so the rejection is about the CA.
        #expect(isValid(await validate(foreign.certificate, against: otherCA.certificate)))
    }

    @Test("the server certificate passes a hostname and an IP check and has the usages of a TLS server")
    func serverIdentity() async throws {
        for (host, ip) in [("collector.example.test", nil), (nil, "127.0.0.1"), (nil, "::1")] as [(String?, String?)] {
            var verifier = Verifier(rootCertificates: CertificateStore([ca.certificate])) {
                RFC5280Policy()
                ServerIdentityPolicy(serverHostname: host, serverIP: ip)
            }
            let result = await verifier.validate(leaf: server.certificate, intermediates: CertificateStore())
            #expect(isValid(result), "host \(host ?? "-") ip \(ip ?? "-"): \(result)")
        }
        var wrongName = Verifier(rootCertificates: CertificateStore([ca.certificate])) {
            RFC5280Policy()
            ServerIdentityPolicy(serverHostname: "evil.example.test", serverIP: nil)
        }
        #expect(!isValid(await wrongName.validate(leaf: server.certificate, intermediates: CertificateStore())))

        let extensions = server.certificate.extensions
        #expect(try extensions.extendedKeyUsage == ExtendedKeyUsage([.serverAuth]))
        let usage = try #require(try extensions.keyUsage)
        #expect(usage.digitalSignature && !usage.keyCertSign)
        #expect(try extensions.basicConstraints == .notCertificateAuthority)
        #expect(try extensions.authorityKeyIdentifier?.keyIdentifier == ca.certificate.extensions.subjectKeyIdentifier?.keyIdentifier)
        #expect(server.certificate.issuer == ca.certificate.subject)
    }

    @Test("the server SAN holds the DNS names and 127.0.0.1 and ::1 as 4- and 16-byte addresses")
    func serverSAN() throws {
        let san = try #require(try server.certificate.extensions.subjectAlternativeNames)
        var dns: [String] = []
        var ips: [[UInt8]] = []
        for name in san {
            switch name {
            case .dnsName(let n): dns.append(n)
            case .ipAddress(let octets): ips.append(Array(octets.bytes))
            default: Issue.record("unexpected SAN entry \(name)")
            }
        }
        #expect(dns == ["collector.example.test", "localhost"])
        #expect(ips.contains([127, 0, 0, 1]))
        #expect(ips.contains([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]))
        #expect(ips.count == 2)
    }

    @Test("server names and addresses are checked; duplicates dropped; at least one is needed")
    func serverNameChecks() throws {
        let dup = try PKI.issueServer(ca: ca, commonName: "c", dnsNames: ["A.example", "a.example."], ipAddresses: ["10.0.0.1", "10.0.0.1", "[fe80::1]"])
        let names = Array(try #require(try dup.certificate.extensions.subjectAlternativeNames))
        #expect(names.count == 3)
        #expect(names.first == .dnsName("a.example"))

        let badIP = pkiError { _ = try PKI.issueServer(ca: ca, commonName: "c", dnsNames: [], ipAddresses: ["127.0.0.256"]) }
        #expect(badIP?.message == "IP address \"127.0.0.256\": not an IPv4 or IPv6 address")
        let badDNS = pkiError { _ = try PKI.issueServer(ca: ca, commonName: "c", dnsNames: ["bad name"], ipAddresses: []) }
        #expect(badDNS?.message.hasPrefix("DNS name \"bad name\"") == true)
        let none = pkiError { _ = try PKI.issueServer(ca: ca, commonName: "c", dnsNames: [], ipAddresses: []) }
        #expect(none?.message.contains("at least one DNS name or IP address") == true)
    }

    @Test("only a CA issues: a device certificate cannot sign another")
    func leafCannotIssue() throws {
        let error = pkiError { _ = try PKI.issueDevice(ca: device, agentID: "x", group: "y") }
        #expect(error?.message.contains("not a CA") == true)
        let days = pkiError { _ = try PKI.issueDevice(ca: ca, agentID: "x", group: "y", validDays: 0) }
        #expect(days?.message == "validity days: must be between 1 and 36500 (got 0)")
    }

    // MARK: - Device identity

    @Test("the device subject is O from the CA, OU = group, CN = agent id, and it is a TLS client")
    func deviceSubject() throws {
        let subject = device.certificate.subject.description
        #expect(subject.contains("CN=laptop-042"))
        #expect(subject.contains("OU=finance"))
        #expect(subject.contains("O=Example Corp"))
        #expect(try device.certificate.extensions.extendedKeyUsage == ExtendedKeyUsage([.clientAuth]))
        #expect(try device.certificate.extensions.keyUsage?.digitalSignature == true)
        #expect(try device.certificate.extensions.subjectAlternativeNames == nil)
        // A CA without O gives a subject without O.
        let bare = try PKI.makeCA(commonName: "bare CA")
        let leaf = try PKI.issueDevice(ca: bare, agentID: "a1", group: "g1")
        #expect(!leaf.certificate.subject.description.contains("O="))
    }

    @Test("DeviceIdentity reads back the agent id and group from PEM, DER and the certificate")
    func deviceIdentityRoundTrip() throws {
        let expected = try DeviceIdentity(agentID: "laptop-042", group: "finance")
        #expect(try DeviceIdentity(certificatePEM: device.certificatePEM) == expected)
        var serializer = DER.Serializer()
        try serializer.serialize(device.certificate)
        let fromDER = try DeviceIdentity(certificateDER: serializer.serializedBytes)
        #expect(fromDER.agentID == "laptop-042")
        #expect(fromDER.group == "finance")
        #expect(try DeviceIdentity(certificate: device.certificate) == fromDER)
        #expect(Set([fromDER, expected]).count == 1)
    }

    @Test("DeviceIdentity rejects a subject without OU, with two CNs, or with a bad agent id")
    func deviceIdentityErrors() throws {
        let noOU = try handMade { CommonName("laptop-1") }
        let e1 = pkiError { _ = try DeviceIdentity(certificate: noOU) }
        #expect(e1?.message.contains("has no OU (group)") == true)

        let noCN = try handMade { OrganizationalUnitName("finance") }
        let e2 = pkiError { _ = try DeviceIdentity(certificate: noCN) }
        #expect(e2?.message.contains("has no CN (agent id)") == true)

        let twoCN = try handMade {
            OrganizationalUnitName("finance")
            CommonName("laptop-1")
            CommonName("laptop-2")
        }
        let e3 = pkiError { _ = try DeviceIdentity(certificate: twoCN) }
        #expect(e3?.message.contains("has 2 CN (agent id) attributes") == true)

        let badID = try handMade {
            OrganizationalUnitName("finance")
            CommonName("a b")
        }
        let e4 = pkiError { _ = try DeviceIdentity(certificate: badID) }
        #expect(e4?.message.hasSuffix("agent id \"a b\": only letters, digits, '.', '_' and '-' are allowed") == true)

        let e5 = pkiError { _ = try DeviceIdentity(certificateDER: [0x30, 0x03, 0x02, 0x01, 0x01]) }
        #expect(e5?.message.hasPrefix("device certificate: not a valid DER X.509 certificate") == true)
        let e6 = pkiError { _ = try DeviceIdentity(certificatePEM: device.privateKeyPEM) }
        #expect(e6?.message == "device certificate: holds a \"PRIVATE KEY\" PEM block, not a CERTIFICATE")
    }

    /// A certificate with an arbitrary subject, signed by the suite's CA.
    private func handMade(@DistinguishedNameBuilder _ subject: () throws -> Result<DistinguishedName, any Error>) throws -> Certificate {
        // Any public key will do for the subject; the CA signs.
        return try Certificate(
            version: .v3, serialNumber: .init(), publicKey: device.certificate.publicKey,
            notValidBefore: Date().addingTimeInterval(-60), notValidAfter: Date().addingTimeInterval(3600),
            issuer: ca.certificate.subject, subject: try DistinguishedName(builder: subject),
            signatureAlgorithm: .ecdsaWithSHA256, extensions: Certificate.Extensions(), issuerPrivateKey: ca.privateKey)
    }

    // MARK: - Names

    @Test("valid names pass", arguments: ["a", "laptop-042", "Host_1.lab", "0", "a.", "a-", String(repeating: "x", count: 64)])
    func validNames(_ name: String) throws {
        try PKI.validateName(name, what: "agent id")
        #expect(try DeviceIdentity(agentID: name, group: name).agentID == name)
    }

    @Test("invalid names are rejected with a message naming the field and the problem")
    func invalidNames() throws {
        let cases: [(String, String)] = [
            ("a b", "agent id \"a b\": only letters, digits, '.', '_' and '-' are allowed"),
            ("", "agent id \"\": must not be empty"),
            (".hidden", "agent id \".hidden\": must not start with '.' or '-'"),
            ("-x", "agent id \"-x\": must not start with '.' or '-'"),
            ("a/b", "agent id \"a/b\": only letters, digits, '.', '_' and '-' are allowed"),
            ("laptöp", "agent id \"laptöp\": only letters, digits, '.', '_' and '-' are allowed"),
            ("a\nb", "agent id \"a\\nb\": only letters, digits, '.', '_' and '-' are allowed"),
            (String(repeating: "x", count: 65), "agent id \"\(String(repeating: "x", count: 65))\": at most 64 characters are allowed (it has 65)"),
        ]
        for (name, message) in cases {
            let error = pkiError { try PKI.validateName(name, what: "agent id") }
            #expect(error?.message == message)
        }
        // The field is named by what the caller says it is.
        let group = pkiError { try PKI.validateName("fin ance", what: "group") }
        #expect(group?.message == "group \"fin ance\": only letters, digits, '.', '_' and '-' are allowed")
        // issueDevice checks both fields and names the one that is wrong.
        let badGroup = pkiError { _ = try PKI.issueDevice(ca: ca, agentID: "ok", group: "..etc") }
        #expect(badGroup?.message == "group \"..etc\": must not start with '.' or '-'")
        let badID = pkiError { _ = try PKI.issueDevice(ca: ca, agentID: "a b", group: "ok") }
        #expect(badID?.message.hasPrefix("agent id \"a b\"") == true)
    }

    // MARK: - Files

    @Test("write() creates the key 0600 and the certificate 0644, and load() reads them back")
    func writeAndLoad() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let certificatePath = dir + "/device.pem"
        let keyPath = dir + "/device.key"
        // With a strict umask the certificate is still 0644 (and the key 0600 with any umask).
        let oldMask = umask(0o077)
        defer { umask(oldMask) }
        try PKI.write(device, certificatePath: certificatePath, keyPath: keyPath)
        #expect(try mode(of: keyPath) == 0o600)
        #expect(try mode(of: certificatePath) == 0o644)
        #expect(try String(contentsOfFile: keyPath, encoding: .utf8) == device.privateKeyPEM)

        let loaded = try PKI.load(certificatePath: certificatePath, keyPath: keyPath)
        #expect(loaded.certificate == device.certificate)
        #expect(loaded.privateKey.publicKey == device.privateKey.publicKey)
        #expect(try DeviceIdentity(certificatePEM: loaded.certificatePEM).agentID == "laptop-042")
        #expect(try PKI.loadCertificate(path: certificatePath) == device.certificate)
        // The loaded pair issues certificates: a CA round-trips through files.
        try PKI.write(ca, certificatePath: dir + "/ca.pem", keyPath: dir + "/ca.key")
        let loadedCA = try PKI.load(certificatePath: dir + "/ca.pem", keyPath: dir + "/ca.key")
        let issued = try PKI.issueDevice(ca: loadedCA, agentID: "from-file", group: "g")
        #expect(issued.certificate.issuer == ca.certificate.subject)
    }

    @Test("write() refuses to overwrite a key file unless told to, and then keeps it 0600")
    func writeRefusesOverwrite() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let certificatePath = dir + "/server.pem"
        let keyPath = dir + "/server.key"
        try PKI.write(server, certificatePath: certificatePath, keyPath: keyPath)

        let error = pkiError { try PKI.write(device, certificatePath: certificatePath, keyPath: keyPath) }
        #expect(error?.message == "key file \(keyPath): already exists; refusing to overwrite it (use --force to replace it)")
        // Neither file changed.
        #expect(try String(contentsOfFile: keyPath, encoding: .utf8) == server.privateKeyPEM)
        #expect(try String(contentsOfFile: certificatePath, encoding: .utf8) == server.certificatePEM)

        // A loose mode on the old file does not survive an overwrite.
        #expect(chmod(keyPath, 0o644) == 0)
        try PKI.write(device, certificatePath: certificatePath, keyPath: keyPath, overwrite: true)
        #expect(try mode(of: keyPath) == 0o600)
        #expect(try String(contentsOfFile: keyPath, encoding: .utf8) == device.privateKeyPEM)
        #expect(try PKI.load(certificatePath: certificatePath, keyPath: keyPath).certificate == device.certificate)
        // No temporary files left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["server.key", "server.pem"])
    }

    @Test("write() into a missing directory names the file")
    func writeMissingDirectory() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let error = pkiError { try PKI.write(device, certificatePath: dir + "/no/x.pem", keyPath: dir + "/no/x.key") }
        #expect(error?.message == "key file \(dir)/no/x.key: cannot create: No such file or directory")
    }

    @Test("load() of a missing file, a non-PEM file, a swapped pair or a mismatched key gives a clear error")
    func loadErrors() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try PKI.write(device, certificatePath: dir + "/d.pem", keyPath: dir + "/d.key")
        try PKI.write(server, certificatePath: dir + "/s.pem", keyPath: dir + "/s.key")

        let missing = pkiError { _ = try PKI.load(certificatePath: dir + "/nope.pem", keyPath: dir + "/d.key") }
        #expect(missing?.message == "certificate file \(dir)/nope.pem: cannot open: No such file or directory")
        let missingKey = pkiError { _ = try PKI.load(certificatePath: dir + "/d.pem", keyPath: dir + "/nope.key") }
        #expect(missingKey?.message == "key file \(dir)/nope.key: cannot open: No such file or directory")

        try "just some text\n".write(toFile: dir + "/text.pem", atomically: true, encoding: .utf8)
        let notPEM = pkiError { _ = try PKI.load(certificatePath: dir + "/text.pem", keyPath: dir + "/d.key") }
        #expect(notPEM?.message == "certificate file \(dir)/text.pem: not a PEM file (no \"-----BEGIN\" line)")

        #expect(FileManager.default.createFile(atPath: dir + "/empty.key", contents: Data()))
        let empty = pkiError { _ = try PKI.load(certificatePath: dir + "/d.pem", keyPath: dir + "/empty.key") }
        #expect(empty?.message == "key file \(dir)/empty.key: not a PEM file (it is empty)")

        let garbled = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"
        try garbled.write(toFile: dir + "/garbled.pem", atomically: true, encoding: .utf8)
        let bad = pkiError { _ = try PKI.load(certificatePath: dir + "/garbled.pem", keyPath: dir + "/d.key") }
        #expect(bad?.message.hasPrefix("certificate file \(dir)/garbled.pem: not valid PEM") == true)

        let directory = pkiError { _ = try PKI.load(certificatePath: dir, keyPath: dir + "/d.key") }
        #expect(directory?.message == "certificate file \(dir): not a regular file")

        let swapped = pkiError { _ = try PKI.load(certificatePath: dir + "/d.key", keyPath: dir + "/d.pem") }
        #expect(swapped?.message == "certificate file \(dir)/d.key: holds a \"PRIVATE KEY\" PEM block, not a CERTIFICATE")

        let mismatch = pkiError { _ = try PKI.load(certificatePath: dir + "/d.pem", keyPath: dir + "/s.key") }
        #expect(mismatch?.message == "key file \(dir)/s.key: the key does not belong to the certificate in \(dir)/d.pem")
    }

    @Test("IssuedCertificate parses PEM text and rejects a key that is not the certificate's")
    func issuedFromPEM() throws {
        let parsed = try IssuedCertificate(certificatePEM: server.certificatePEM, privateKeyPEM: server.privateKeyPEM)
        #expect(parsed.certificate == server.certificate)
        #expect(parsed.certificatePEM == server.certificatePEM)
        let error = pkiError { _ = try IssuedCertificate(certificatePEM: server.certificatePEM, privateKeyPEM: device.privateKeyPEM) }
        #expect(error?.message.hasPrefix("the private key does not belong to the certificate") == true)
    }
}
