// The test and small-site PKI behind the collector's mutual TLS: one self-signed CA (P-256), the collector's
// server certificate and one client certificate per device (subject CN = agent id, OU = group).

import Crypto
import FoundationEssentials
import SegguardEssentials
import Glibc
import SwiftASN1
import X509

/// A certificate and its private key, as PEM text and parsed.
public struct IssuedCertificate: Sendable {
    /// The certificate, PEM ("CERTIFICATE"), ending in a newline.
    public let certificatePEM: String
    /// The private key, PEM (PKCS#8 "PRIVATE KEY" for keys made here), ending in a newline.
    public let privateKeyPEM: String
    /// The parsed certificate.
    public let certificate: Certificate
    /// The parsed private key; its public key is the certificate's.
    public let privateKey: Certificate.PrivateKey

    /// Pairs a certificate with its private key and serializes both as PEM.
    /// - Throws: ``PKIError`` when the key is not the certificate's.
    public init(certificate: Certificate, privateKey: Certificate.PrivateKey) throws {
        guard certificate.publicKey == privateKey.publicKey else {
            throw PKIError("the private key does not belong to the certificate \(certificate.subject)")
        }
        do {
            self.certificatePEM = try certificate.serializeAsPEM().pemString + "\n"
            self.privateKeyPEM = try privateKey.serializeAsPEM().pemString + "\n"
        } catch {
            throw PKIError("cannot serialize the certificate \(certificate.subject) as PEM: \(error)")
        }
        self.certificate = certificate
        self.privateKey = privateKey
    }

    /// Parses a PEM certificate and its PEM private key.
    /// - Throws: ``PKIError`` when either is not valid PEM of the right kind, or the key is not the certificate's.
    public init(certificatePEM: String, privateKeyPEM: String) throws {
        let certificate = try PKI.parseCertificatePEM(certificatePEM, source: "certificate")
        let key = try PKI.parsePrivateKeyPEM(privateKeyPEM, source: "private key")
        try self.init(certificate: certificate, privateKey: key)
    }
}

/// Makes the CA, the collector's server certificate and device certificates, and reads and writes them as files.
public enum PKI {
    /// How far back `notValidBefore` is set, so that a peer whose clock is a little behind accepts a new certificate.
    public static let clockSkewAllowance: TimeInterval = 5 * 60

    /// The longest validity accepted, in days (100 years).
    public static let maxValidDays = 36_500

    /// Makes a self-signed CA: a new P-256 key, BasicConstraints CA (critical), KeyUsage keyCertSign + cRLSign
    /// (critical) and a SubjectKeyIdentifier.
    ///
    /// - Parameters:
    ///   - commonName: The CA's subject CN.
    ///   - organization: The subject O, if any; device certificates copy it.
    ///   - validDays: Validity from now, in days.
    public static func makeCA(commonName: String, organization: String? = nil, validDays: Int = 3650) throws -> IssuedCertificate {
        try checkText(commonName, what: "CA common name")
        if let organization { try checkText(organization, what: "CA organization") }
        let (notBefore, notAfter) = try validity(days: validDays, limit: nil)

        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let subject = try makeName {
            if let organization { OrganizationName(organization) }
            CommonName(commonName)
        }
        let extensions = try makeExtensions {
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
            Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            SubjectKeyIdentifier(hash: key.publicKey)
        }
        let certificate = try sign(
            "CA certificate", publicKey: key.publicKey, notBefore: notBefore, notAfter: notAfter,
            issuer: subject, subject: subject, extensions: extensions, issuerKey: key)
        return try IssuedCertificate(certificate: certificate, privateKey: key)
    }

    /// Issues the collector's TLS server certificate: a new P-256 key, SubjectAlternativeNames with the DNS names
    /// and IP addresses (IPv4 as 4 bytes, IPv6 as 16), ExtendedKeyUsage serverAuth, KeyUsage digitalSignature
    /// (critical), BasicConstraints not-a-CA (critical), Subject and Authority key identifiers.
    ///
    /// The certificate does not outlive the CA: `notValidAfter` is cut to the CA's.
    ///
    /// - Parameters:
    ///   - ca: The issuing CA with its key.
    ///   - commonName: The subject CN (clients check the SAN, not the CN).
    ///   - dnsNames: DNS names for the SAN; duplicates are dropped.
    ///   - ipAddresses: IPv4/IPv6 addresses in text form for the SAN; duplicates are dropped.
    ///   - validDays: Validity from now, in days.
    /// - Throws: ``PKIError`` for a bad name or address, no name and no address at all, or a CA that cannot issue.
    public static func issueServer(
        ca: IssuedCertificate, commonName: String, dnsNames: [String], ipAddresses: [String], validDays: Int = 825
    ) throws -> IssuedCertificate {
        try checkText(commonName, what: "server common name")
        var names: [GeneralName] = []
        var seenDNS: Set<String> = []
        for raw in dnsNames {
            let name = try checkedDNSName(raw)
            if seenDNS.insert(name).inserted { names.append(.dnsName(name)) }
        }
        var seenIP: Set<[UInt8]> = []
        for raw in ipAddresses {
            let bytes = try ipAddressBytes(raw)
            if seenIP.insert(bytes).inserted { names.append(.ipAddress(ASN1OctetString(contentBytes: bytes[...]))) }
        }
        guard !names.isEmpty else {
            throw PKIError("server certificate \"\(commonName)\": needs at least one DNS name or IP address for its subjectAltName")
        }
        try checkIssuer(ca)
        let (notBefore, notAfter) = try validity(days: validDays, limit: ca.certificate.notValidAfter)

        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let subject = try makeName {
            if let organization = organization(of: ca.certificate) { OrganizationName(organization) }
            CommonName(commonName)
        }
        let extensions = try leafExtensions(ca: ca, publicKey: key.publicKey, usage: .serverAuth, subjectAlternativeNames: names)
        let certificate = try sign(
            "server certificate", publicKey: key.publicKey, notBefore: notBefore, notAfter: notAfter,
            issuer: ca.certificate.subject, subject: subject, extensions: extensions, issuerKey: ca.privateKey)
        return try IssuedCertificate(certificate: certificate, privateKey: key)
    }

    /// Issues a device (agent) client certificate: subject O (the CA's, if it has one), OU = group,
    /// CN = agent id; a new P-256 key, ExtendedKeyUsage clientAuth, KeyUsage digitalSignature (critical),
    /// BasicConstraints not-a-CA (critical), Subject and Authority key identifiers.
    ///
    /// The certificate does not outlive the CA: `notValidAfter` is cut to the CA's.
    ///
    /// - Throws: ``PKIError`` when the agent id or group fails ``validateName(_:what:)``, or the CA cannot issue.
    public static func issueDevice(ca: IssuedCertificate, agentID: String, group: String, validDays: Int = 825) throws -> IssuedCertificate {
        let identity = try DeviceIdentity(agentID: agentID, group: group)
        try checkIssuer(ca)
        let (notBefore, notAfter) = try validity(days: validDays, limit: ca.certificate.notValidAfter)

        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let subject = try makeName {
            if let organization = organization(of: ca.certificate) { OrganizationName(organization) }
            OrganizationalUnitName(identity.group)
            CommonName(identity.agentID)
        }
        let extensions = try leafExtensions(ca: ca, publicKey: key.publicKey, usage: .clientAuth, subjectAlternativeNames: nil)
        let certificate = try sign(
            "device certificate for \"\(agentID)\"", publicKey: key.publicKey, notBefore: notBefore, notAfter: notAfter,
            issuer: ca.certificate.subject, subject: subject, extensions: extensions, issuerKey: ca.privateKey)
        return try IssuedCertificate(certificate: certificate, privateKey: key)
    }

    // MARK: - Helpers

    static func leafExtensions(
        ca: IssuedCertificate, publicKey: Certificate.PublicKey, usage: ExtendedKeyUsage.Usage, subjectAlternativeNames: [GeneralName]?
    ) throws -> Certificate.Extensions {
        let authorityKeyID = (try? ca.certificate.extensions.subjectKeyIdentifier)??.keyIdentifier
            ?? SubjectKeyIdentifier(hash: ca.certificate.publicKey).keyIdentifier
        return try makeExtensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true))
            try ExtendedKeyUsage([usage])
            SubjectKeyIdentifier(hash: publicKey)
            AuthorityKeyIdentifier(keyIdentifier: authorityKeyID)
            if let subjectAlternativeNames { SubjectAlternativeNames(subjectAlternativeNames) }
        }
    }

    /// Checks that the CA may sign certificates and that its key is its own.
    static func checkIssuer(_ ca: IssuedCertificate) throws {
        let name = "\(ca.certificate.subject)"
        guard ca.certificate.publicKey == ca.privateKey.publicKey else {
            throw PKIError("CA \(name): the private key does not belong to the CA certificate")
        }
        let constraints: BasicConstraints?
        let usage: KeyUsage?
        do {
            constraints = try ca.certificate.extensions.basicConstraints
            usage = try ca.certificate.extensions.keyUsage
        } catch {
            throw PKIError("CA \(name): cannot decode its extensions: \(error)")
        }
        guard case .isCertificateAuthority = constraints else {
            throw PKIError("CA \(name): the certificate is not a CA (BasicConstraints has no cA flag)")
        }
        if let usage, !usage.keyCertSign {
            throw PKIError("CA \(name): the certificate's KeyUsage does not allow keyCertSign")
        }
        if ca.certificate.notValidAfter <= Date() {
            throw PKIError("CA \(name): the certificate expired on \(ca.certificate.notValidAfter)")
        }
    }

    /// The first O attribute of a certificate's subject.
    static func organization(of certificate: Certificate) -> String? {
        for rdn in certificate.subject {
            for attribute in rdn where attribute.type == .RDNAttributeType.organizationName {
                if let s = String(attribute.value) { return s }
            }
        }
        return nil
    }

    /// `notValidBefore` a few minutes in the past, `notValidAfter` `days` from now, cut to `limit`; whole seconds.
    static func validity(days: Int, limit: Date?) throws -> (Date, Date) {
        guard (1...maxValidDays).contains(days) else {
            throw PKIError("validity days: must be between 1 and \(maxValidDays) (got \(days))")
        }
        let now = Date().timeIntervalSince1970.rounded(.down)
        let notBefore = Date(timeIntervalSince1970: now - clockSkewAllowance)
        var notAfter = Date(timeIntervalSince1970: now + TimeInterval(days) * 86_400)
        if let limit, limit < notAfter { notAfter = limit }
        return (notBefore, notAfter)
    }

    /// Free text for a CN or O: not empty, at most 64 characters (the X.520 upper bound), no control characters.
    private static func checkText(_ s: String, what: String) throws {
        guard !s.trimmed().isEmpty else {
            throw PKIError("\(what) \(quote(s)): must not be empty")
        }
        guard s.count <= 64 else {
            throw PKIError("\(what) \(quote(s)): at most 64 characters are allowed (it has \(s.count))")
        }
        if s.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            throw PKIError("\(what) \(quote(s)): must not contain control characters")
        }
    }

    static func makeName(
        @DistinguishedNameBuilder _ build: () throws -> Result<DistinguishedName, any Error>
    ) throws -> DistinguishedName {
        do {
            return try DistinguishedName(builder: build)
        } catch {
            throw PKIError("cannot build the subject name: \(error)")
        }
    }

    private static func makeExtensions(
        @ExtensionsBuilder _ build: () throws -> Result<Certificate.Extensions, any Error>
    ) throws -> Certificate.Extensions {
        do {
            return try Certificate.Extensions(builder: build)
        } catch {
            throw PKIError("cannot build the certificate extensions: \(error)")
        }
    }

    static func sign(
        _ what: String, publicKey: Certificate.PublicKey, notBefore: Date, notAfter: Date,
        issuer: DistinguishedName, subject: DistinguishedName, extensions: Certificate.Extensions,
        issuerKey: Certificate.PrivateKey
    ) throws -> Certificate {
        do {
            return try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
                notValidBefore: notBefore, notValidAfter: notAfter, issuer: issuer, subject: subject,
                signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions, issuerPrivateKey: issuerKey)
        } catch {
            throw PKIError("cannot sign the \(what): \(error)")
        }
    }

    // MARK: - PEM parsing

    /// Parses the first PEM block of `text` as a certificate; `source` names where the text came from.
    static func parseCertificatePEM(_ text: String, source: String) throws -> Certificate {
        let documents = try pemDocuments(text, source: source)
        guard let first = documents.first, first.discriminator == Certificate.defaultPEMDiscriminator else {
            throw PKIError("\(source): holds a \"\(documents[0].discriminator)\" PEM block, not a CERTIFICATE")
        }
        do {
            return try Certificate(derEncoded: first.derBytes)
        } catch {
            throw PKIError("\(source): not a valid X.509 certificate: \(error)")
        }
    }

    /// Parses the PEM private key block of `text` (PKCS#8, SEC1 or RSA; other blocks such as
    /// "EC PARAMETERS" are skipped); `source` names where the text came from.
    static func parsePrivateKeyPEM(_ text: String, source: String) throws -> Certificate.PrivateKey {
        let documents = try pemDocuments(text, source: source)
        let keys = documents.filter { $0.discriminator.hasSuffix("PRIVATE KEY") }
        guard keys.count == 1, let document = keys.first else {
            if keys.isEmpty {
                let found = documents.map { "\"\($0.discriminator)\"" }.joined(separator: ", ")
                throw PKIError("\(source): holds no PRIVATE KEY PEM block (found \(found))")
            }
            throw PKIError("\(source): holds \(keys.count) private keys, expected one")
        }
        if document.discriminator.firstRange(of: "ENCRYPTED") != nil {
            throw PKIError("\(source): the private key is encrypted; an unencrypted key is needed")
        }
        do {
            return try Certificate.PrivateKey(pemDocument: document)
        } catch {
            throw PKIError("\(source): not a valid private key: \(error)")
        }
    }

    private static func pemDocuments(_ text: String, source: String) throws -> [PEMDocument] {
        guard text.firstRange(of: "-----BEGIN ") != nil else {
            throw PKIError("\(source): not a PEM file (no \"-----BEGIN\" line)")
        }
        let documents: [PEMDocument]
        do {
            documents = try PEMDocument.parseMultiple(pemString: text)
        } catch {
            throw PKIError("\(source): not valid PEM: \(error)")
        }
        guard !documents.isEmpty else {
            throw PKIError("\(source): not valid PEM (a \"-----BEGIN\" line without a matching \"-----END\" line)")
        }
        return documents
    }
}
