import FoundationEssentials
import Glibc
import SwiftASN1
import X509

/// Who a device certificate names: the agent id (subject CN) and its group (subject OU).
///
/// Reading it does not verify the certificate: the TLS layer has already checked the chain to the CA
/// before the collector asks who the client is.
public struct DeviceIdentity: Sendable, Equatable, Hashable, CustomStringConvertible {
    /// The agent id, from the subject CN.
    public let agentID: String
    /// The group, from the subject OU.
    public let group: String

    /// An identity from its parts, both checked with ``PKI/validateName(_:what:)``.
    public init(agentID: String, group: String) throws {
        try PKI.validateName(agentID, what: "agent id")
        try PKI.validateName(group, what: "group")
        self.agentID = agentID
        self.group = group
    }

    /// Reads the agent id (CN) and group (OU) from a certificate's subject.
    /// - Throws: ``PKIError`` when the CN or OU is missing, appears more than once, is not text, or fails
    ///   ``PKI/validateName(_:what:)``.
    public init(certificate: Certificate) throws {
        let subject = certificate.subject
        let agentID = try Self.single(.RDNAttributeType.commonName, label: "CN (agent id)", in: subject)
        let group = try Self.single(.RDNAttributeType.organizationalUnitName, label: "OU (group)", in: subject)
        do {
            try self.init(agentID: agentID, group: group)
        } catch let error as PKIError {
            throw PKIError("device certificate \(subject): \(error.message)")
        }
    }

    /// Reads the identity from a DER-encoded certificate (what a TLS stack hands over for the peer).
    public init(certificateDER: [UInt8]) throws {
        let certificate: Certificate
        do {
            certificate = try Certificate(derEncoded: certificateDER)
        } catch {
            throw PKIError("device certificate: not a valid DER X.509 certificate: \(error)")
        }
        try self.init(certificate: certificate)
    }

    /// Reads the identity, the certificate's end of validity (notAfter) and its serial number
    /// (lower-case hex, as revocations name it) from DER bytes.
    public static func withExpiry(certificateDER: [UInt8]) throws -> (identity: DeviceIdentity, notValidAfter: Date, serial: String) {
        let certificate: Certificate
        do {
            certificate = try Certificate(derEncoded: certificateDER)
        } catch {
            throw PKIError("device certificate: not a valid DER X.509 certificate: \(error)")
        }
        return (try DeviceIdentity(certificate: certificate), certificate.notValidAfter, PKI.serialHex(certificate))
    }

    /// Reads the identity from a PEM certificate (the first PEM block).
    public init(certificatePEM: String) throws {
        try self.init(certificate: PKI.parseCertificatePEM(certificatePEM, source: "device certificate"))
    }

    /// `group/agentID`.
    public var description: String { "\(group)/\(agentID)" }

    private static func single(_ type: ASN1ObjectIdentifier, label: String, in subject: DistinguishedName) throws -> String {
        var values: [String] = []
        for rdn in subject {
            for attribute in rdn where attribute.type == type {
                guard let value = String(attribute.value) else {
                    throw PKIError("device certificate \(subject): the subject \(label) is not a text string")
                }
                values.append(value)
            }
        }
        guard let value = values.first else {
            throw PKIError("device certificate \(subject): the subject has no \(label)")
        }
        guard values.count == 1 else {
            throw PKIError("device certificate \(subject): the subject has \(values.count) \(label) attributes, expected one")
        }
        return value
    }
}
