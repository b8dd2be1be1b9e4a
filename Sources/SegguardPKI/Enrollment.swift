// Enrollment in the shape of EST (RFC 7030): the device makes its key and a certificate signing
// request (PKCS#10), the collector checks it and issues the certificate, and both sides speak
// the certs-only PKCS#7 (CMS SignedData without signers) EST answers with. The device CA also
// signs the certificate revocation list (RFC 5280 v2 CRL) the RADIUS server checks.

import Crypto
import FoundationEssentials
import SegguardEssentials
import Glibc
import SwiftASN1
import X509

extension PKI {
    /// A new P-256 key and a signing request naming `agentID` (subject CN), for enrollment.
    /// - Throws: ``PKIError`` when the agent id fails ``validateName(_:what:)``.
    public static func makeRequest(agentID: String, key: Certificate.PrivateKey? = nil) throws -> (request: CertificateSigningRequest, key: Certificate.PrivateKey) {
        try validateName(agentID, what: "agent id")
        let key = key ?? Certificate.PrivateKey(P256.Signing.PrivateKey())
        let subject = try makeName { CommonName(agentID) }
        do {
            let request = try CertificateSigningRequest(version: .v1, subject: subject, privateKey: key, attributes: .init(),
                                                        signatureAlgorithm: .ecdsaWithSHA256)
            return (request, key)
        } catch {
            throw PKIError("cannot sign the certificate request for \"\(agentID)\": \(error)")
        }
    }

    /// The DER bytes of a signing request.
    public static func derBytes(_ request: CertificateSigningRequest) throws -> [UInt8] {
        var serializer = DER.Serializer()
        do { try serializer.serialize(request) } catch { throw PKIError("cannot encode the certificate request: \(error)") }
        return serializer.serializedBytes
    }

    /// Reads a signing request (DER), checks its self-signature and returns it with the agent id
    /// its subject CN names.
    /// - Throws: ``PKIError`` when the bytes are not a PKCS#10 request, the signature does not
    ///   verify (the sender does not hold the key), or the CN is missing or not a valid agent id.
    public static func readRequest(der: [UInt8]) throws -> (request: CertificateSigningRequest, agentID: String) {
        let request: CertificateSigningRequest
        do {
            request = try CertificateSigningRequest(derEncoded: der)
        } catch {
            throw PKIError("certificate request: not a valid DER PKCS#10 certification request")
        }
        // The keys every 802.1X stack and TLS library of a thin client takes.
        guard P256.Signing.PublicKey(request.publicKey) != nil || P384.Signing.PublicKey(request.publicKey) != nil else {
            throw PKIError("certificate request: the key must be ECDSA P-256 or P-384 (segguardctl enroll makes P-256)")
        }
        guard request.publicKey.isValidSignature(request.signature, for: request) else {
            throw PKIError("certificate request: its signature does not verify with its own public key")
        }
        var names: [String] = []
        for rdn in request.subject {
            for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
                guard let s = String(attribute.value) else { throw PKIError("certificate request: the subject CN is not text") }
                names.append(s)
            }
        }
        guard names.count == 1, let agentID = names.first else {
            throw PKIError("certificate request: the subject must have exactly one CN (the agent id); it has \(names.count)")
        }
        try validateName(agentID, what: "certificate request: agent id")
        return (request, agentID)
    }

    /// Issues a device certificate for a checked signing request: the request's public key, CN =
    /// `agentID`, OU = `group` (informational for RADIUS and people: the collector's device table
    /// decides the group), the same extensions as ``issueDevice(ca:agentID:group:validDays:)``.
    public static func issueDevice(ca: IssuedCertificate, request: CertificateSigningRequest, agentID: String, group: String,
                                   validDays: Int = 825) throws -> Certificate {
        let identity = try DeviceIdentity(agentID: agentID, group: group)
        guard request.publicKey.isValidSignature(request.signature, for: request) else {
            throw PKIError("certificate request for \"\(agentID)\": its signature does not verify with its own public key")
        }
        try checkIssuer(ca)
        let (notBefore, notAfter) = try validity(days: validDays, limit: ca.certificate.notValidAfter)
        let subject = try makeName {
            if let organization = organization(of: ca.certificate) { OrganizationName(organization) }
            OrganizationalUnitName(identity.group)
            CommonName(identity.agentID)
        }
        let extensions = try leafExtensions(ca: ca, publicKey: request.publicKey, usage: .clientAuth, subjectAlternativeNames: nil)
        return try sign("device certificate for \"\(agentID)\"", publicKey: request.publicKey, notBefore: notBefore, notAfter: notAfter,
                        issuer: ca.certificate.subject, subject: subject, extensions: extensions, issuerKey: ca.privateKey)
    }

    /// The serial number of a certificate in lower-case hex without leading zero bytes (as
    /// revocations and the CRL name it).
    public static func serialHex(_ certificate: Certificate) -> String {
        normalizedSerial(hexString(certificate.serialNumber.bytes)) ?? ""
    }

    /// A serial as typed or stored ("00AB12", "ab12") in the one form revocations compare:
    /// lower-case hex, whole bytes, no leading zero bytes. Nil when it is not hex (at most 64 digits).
    public static func normalizedSerial(_ text: String) -> String? {
        var hex = text.trimmed().lowercased()
        if hex.hasPrefix("0x") { hex.removeFirst(2) }
        hex.removeAll { $0 == ":" }
        guard !hex.isEmpty, hex.count <= 64, hex.allSatisfy(\.isHexDigit) else { return nil }
        if hex.count % 2 == 1 { hex = "0" + hex }
        while hex.count > 2, hex.hasPrefix("00") { hex.removeFirst(2) }
        return hex
    }
}

/// Certs-only PKCS#7 (RFC 7030 §4.1.3, 4.2.3): a CMS SignedData with certificates and no signers.
public enum CertsOnlyPKCS7 {
    static let signedData: ASN1ObjectIdentifier = [1, 2, 840, 113549, 1, 7, 2]
    static let data: ASN1ObjectIdentifier = [1, 2, 840, 113549, 1, 7, 1]

    /// DER of a certs-only SignedData holding `certificates`.
    public static func encode(_ certificates: [Certificate]) throws -> [UInt8] {
        var s = DER.Serializer()
        do {
            try s.appendConstructedNode(identifier: .sequence) { s in
                try s.serialize(signedData)
                try s.appendConstructedNode(identifier: ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific)) { s in
                    try s.appendConstructedNode(identifier: .sequence) { s in
                        try s.serialize(1)  // version
                        s.appendConstructedNode(identifier: .set) { _ in }  // digestAlgorithms
                        try s.appendConstructedNode(identifier: .sequence) { s in try s.serialize(data) }  // encapContentInfo
                        try s.serializeSetOf(certificates, identifier: ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific))
                        s.appendConstructedNode(identifier: .set) { _ in }  // signerInfos
                    }
                }
            }
        } catch {
            throw PKIError("cannot encode the PKCS#7 certificate list: \(error)")
        }
        return s.serializedBytes
    }

    /// The certificates of a certs-only SignedData (DER).
    /// - Throws: ``PKIError`` when the bytes are not a CMS SignedData or hold no certificate.
    public static func decode(_ der: [UInt8]) throws -> [Certificate] {
        var certificates: [Certificate] = []
        do {
            let root = try DER.parse(der)
            try DER.sequence(root, identifier: .sequence) { nodes in
                let type = try ASN1ObjectIdentifier(derEncoded: &nodes)
                guard type == signedData else { throw PKIError("content type \(type) is not signedData") }
                try DER.explicitlyTagged(&nodes, tagNumber: 0, tagClass: .contextSpecific) { node in
                    try DER.sequence(node, identifier: .sequence) { nodes in
                        _ = try Int(derEncoded: &nodes)
                        _ = nodes.next()  // digestAlgorithms
                        _ = nodes.next()  // encapContentInfo
                        while let next = nodes.next() {
                            guard next.identifier == ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific),
                                  case .constructed(let children) = next.content else { continue }
                            for child in children { certificates.append(try Certificate(derEncoded: child)) }
                        }
                    }
                }
            }
        } catch let error as PKIError {
            throw PKIError("PKCS#7 certificate list: \(error.message)")
        } catch {
            throw PKIError("PKCS#7 certificate list: not a CMS SignedData: \(error)")
        }
        guard !certificates.isEmpty else { throw PKIError("PKCS#7 certificate list: it holds no certificate") }
        return certificates
    }
}

/// One revoked certificate in a CRL.
public struct RevokedEntry: Sendable, Equatable {
    /// The serial in hex (``PKI/serialHex(_:)``).
    public var serialHex: String
    public var time: Date
    public init(serialHex: String, time: Date) {
        self.serialHex = serialHex
        self.time = time
    }
}

/// A v2 certificate revocation list (RFC 5280 §5) signed with the device CA's P-256 key.
public enum RevocationList {
    static let ecdsaWithSHA256: ASN1ObjectIdentifier = [1, 2, 840, 10045, 4, 3, 2]
    static let crlNumber: ASN1ObjectIdentifier = [2, 5, 29, 20]
    static let authorityKeyIdentifier: ASN1ObjectIdentifier = [2, 5, 29, 35]

    /// DER of a CRL listing `entries`, issued by `ca` at `thisUpdate`, next update `nextUpdate`, with CRL
    /// number `number` (the collector uses the signing time in milliseconds: it only grows).
    /// - Throws: ``PKIError`` when the CA's key is not P-256 or a serial is not hex.
    public static func make(ca: IssuedCertificate, entries: [RevokedEntry], number: Int, thisUpdate: Date = Date(), nextUpdate: Date) throws -> [UInt8] {
        let key: P256.Signing.PrivateKey
        do {
            key = try P256.Signing.PrivateKey(pemRepresentation: ca.privateKeyPEM)
        } catch {
            throw PKIError("CRL: the CA key is not a P-256 key (the collector signs CRLs with P-256 CAs made by segguardctl pki init-ca): \(error)")
        }
        let authorityKeyID = (try? ca.certificate.extensions.subjectKeyIdentifier)??.keyIdentifier
            ?? SubjectKeyIdentifier(hash: ca.certificate.publicKey).keyIdentifier
        var tbs = DER.Serializer()
        do {
            try tbs.appendConstructedNode(identifier: .sequence) { s in
                try s.serialize(1)  // v2
                try s.appendConstructedNode(identifier: .sequence) { s in try s.serialize(ecdsaWithSHA256) }
                try s.serialize(ca.certificate.subject)
                try s.serialize(try utcTime(thisUpdate))
                try s.serialize(try utcTime(nextUpdate))
                if !entries.isEmpty {
                    try s.appendConstructedNode(identifier: .sequence) { s in
                        for entry in entries.sorted(by: { $0.serialHex < $1.serialHex }) {
                            try s.appendConstructedNode(identifier: .sequence) { s in
                                let magnitude = try integerContent(hex: entry.serialHex)
                                s.appendPrimitiveNode(identifier: .integer) { $0.append(contentsOf: magnitude) }
                                try s.serialize(try utcTime(entry.time))
                            }
                        }
                    }
                }
                try s.appendConstructedNode(identifier: ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific)) { s in
                    try s.appendConstructedNode(identifier: .sequence) { s in
                        try s.appendConstructedNode(identifier: .sequence) { s in
                            try s.serialize(crlNumber)
                            var inner = DER.Serializer()
                            try inner.serialize(number)
                            try s.serialize(ASN1OctetString(contentBytes: inner.serializedBytes[...]))
                        }
                        try s.appendConstructedNode(identifier: .sequence) { s in
                            try s.serialize(authorityKeyIdentifier)
                            var inner = DER.Serializer()
                            inner.appendConstructedNode(identifier: .sequence) { s in
                                s.appendPrimitiveNode(identifier: ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific)) {
                                    $0.append(contentsOf: authorityKeyID)
                                }
                            }
                            try s.serialize(ASN1OctetString(contentBytes: inner.serializedBytes[...]))
                        }
                    }
                }
            }
        } catch let error as PKIError {
            throw error
        } catch {
            throw PKIError("CRL: cannot encode: \(error)")
        }
        let tbsBytes = tbs.serializedBytes
        let signature: P256.Signing.ECDSASignature
        do { signature = try key.signature(for: tbsBytes) } catch { throw PKIError("CRL: cannot sign: \(error)") }
        var out = DER.Serializer()
        do {
            try out.appendConstructedNode(identifier: .sequence) { s in
                s.serializeRawBytes(tbsBytes)
                try s.appendConstructedNode(identifier: .sequence) { s in try s.serialize(ecdsaWithSHA256) }
                try s.serialize(ASN1BitString(bytes: Array(signature.derRepresentation)[...]))
            }
        } catch {
            throw PKIError("CRL: cannot encode: \(error)")
        }
        return out.serializedBytes
    }

    /// PEM ("X509 CRL") of DER CRL bytes.
    public static func pem(_ der: [UInt8]) -> String {
        PEMDocument(type: "X509 CRL", derBytes: der).pemString + "\n"
    }

    static func utcTime(_ date: Date) throws -> UTCTime {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        guard let year = c.year, year >= 1950, year < 2050 else { throw PKIError("CRL: time \(date) is outside 1950-2049 (UTCTime)") }
        return try UTCTime(year: year, month: c.month!, day: c.day!, hours: c.hour!, minutes: c.minute!, seconds: c.second!)
    }

    /// The content octets of a positive INTEGER from a big-endian magnitude in hex.
    static func integerContent(hex: String) throws -> [UInt8] {
        var text = hex.lowercased()
        if text.count % 2 == 1 { text = "0" + text }
        var bytes: [UInt8] = []
        var i = text.startIndex
        while i < text.endIndex {
            let j = text.index(i, offsetBy: 2)
            guard let b = UInt8(text[i..<j], radix: 16) else { throw PKIError("CRL: serial \"\(hex)\" is not hex") }
            bytes.append(b)
            i = j
        }
        while bytes.count > 1, bytes[0] == 0 { bytes.removeFirst() }
        guard !bytes.isEmpty else { throw PKIError("CRL: serial \"\(hex)\" is empty") }
        if bytes[0] & 0x80 != 0 { bytes.insert(0, at: 0) }
        return bytes
    }
}

/// Reading an EST answer (certs-only PKCS#7, base64): the certificate for our key.
public enum EnrollmentAnswer {
    /// The certificate in the answer whose public key is `key`'s and whose CN is `agentID`.
    public static func certificate(from body: Data, key: Certificate.PrivateKey, agentID: String) throws -> Certificate {
        let text = String(decoding: body, as: UTF8.self).filter { !$0.isWhitespace }
        guard let der = Data(base64Encoded: text) else { throw PKIError("the answer is not base64 (certs-only PKCS#7 expected)") }
        let certificates = try CertsOnlyPKCS7.decode([UInt8](der))
        guard let mine = certificates.first(where: { $0.publicKey == key.publicKey }) else {
            throw PKIError("the answer holds no certificate for the key made for this request")
        }
        let identity = try DeviceIdentity(certificate: mine)
        guard identity.agentID == agentID else {
            throw PKIError("the certificate names \"\(identity.agentID)\", not \"\(agentID)\"")
        }
        return mine
    }
}
