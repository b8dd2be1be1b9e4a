// Signed policy bundles: an admin signs a policy for a group with an Ed25519 key; the
// collector stores and serves it; agents verify it against the pinned public key before
// anything else. The signature covers the exact payload bytes (base64 in the envelope), so
// nothing depends on how JSON is re-encoded.

import Crypto
import FoundationEssentials
import SegguardEssentials
import Glibc

/// What the admin signed.
public struct PolicyBundlePayload: Codable, StrictDecodable, Sendable, Equatable {
    /// The group of agents this bundle is for (the OU of their device certificates).
    public var group: String
    /// Increases with every bundle of the group; agents refuse a version not above the one
    /// they run (rollback).
    public var version: Int64
    /// The policy file, as the admin wrote it.
    public var policyYAML: String
    /// SHA-256 (hex) of `policyYAML`'s UTF-8 bytes.
    public var policySHA256: String
    public var createdAt: Date
    /// Free text for the audit trail ("open the branch office Wi-Fi").
    public var comment: String?
    /// The end of the bundle's validity: agents refuse it from then on (a collector that keeps
    /// serving an old bundle cannot freeze them on it unnoticed) and report when the bundle in
    /// force passes it. Nil: valid until replaced. Agents before 0.9 refuse a payload that has
    /// the field (unknown field): set it only once every agent of the group is upgraded.
    public var notAfter: Date?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case group, version, policyYAML = "policy_yaml", policySHA256 = "policy_sha256", createdAt = "created_at", comment, notAfter = "not_after"
    }
    public init(reading r: inout StrictJSONReader) throws(ReportDecodingError) {
        var group = "", version: Int64 = 0, policyYAML = "", policySHA256 = "", createdAt = Date(), comment: String?, notAfter: Date?
        let seen = try r.object { (r: inout StrictJSONReader, key: String) throws(ReportDecodingError) in
            switch key {
            case "group": group = try r.string()
            case "version": version = try r.int64()
            case "policy_yaml": policyYAML = try r.string()
            case "policy_sha256": policySHA256 = try r.string()
            case "created_at": createdAt = try r.date()
            case "comment": comment = try r.optionalString()
            case "not_after": notAfter = try r.null() ? nil : r.date()
            default: throw r.unknown()
            }
        }
        try r.require(["group", "version", "policy_yaml", "policy_sha256", "created_at"], in: seen)
        self.notAfter = notAfter
        self.group = group
        self.version = version
        self.policyYAML = policyYAML
        self.policySHA256 = policySHA256
        self.createdAt = createdAt
        self.comment = comment
    }

    public init(group: String, version: Int64, policyYAML: String, createdAt: Date = Date(), comment: String? = nil, notAfter: Date? = nil) {
        self.group = group
        self.version = version
        self.policyYAML = policyYAML
        self.policySHA256 = PolicySigning.sha256Hex(Data(policyYAML.utf8))
        self.createdAt = createdAt
        self.comment = comment
        self.notAfter = notAfter
    }

    /// Whether the bundle's validity has ended at `now`.
    public func expired(at now: Date) -> Bool { notAfter.map { $0 <= now } ?? false }
}

/// The envelope that travels: payload bytes, signature and the signing key's id.
public struct SignedPolicyBundle: Codable, StrictDecodable, Sendable, Equatable {
    public var format: Int
    /// Base64 of the payload's JSON bytes.
    public var payload: String
    /// Base64 of the Ed25519 signature over those bytes.
    public var signature: String
    /// The first 16 hex digits of the SHA-256 of the public key.
    public var keyID: String

    enum CodingKeys: String, CodingKey, CaseIterable { case format, payload, signature, keyID = "key_id" }
    public init(reading r: inout StrictJSONReader) throws(ReportDecodingError) {
        var format = 0, payload = "", signature = "", keyID = ""
        let seen = try r.object { (r: inout StrictJSONReader, key: String) throws(ReportDecodingError) in
            switch key {
            case "format": format = try r.int()
            case "payload": payload = try r.string()
            case "signature": signature = try r.string()
            case "key_id": keyID = try r.string()
            default: throw r.unknown()
            }
        }
        try r.require(["format", "payload", "signature", "key_id"], in: seen)
        self.init(format: format, payload: payload, signature: signature, keyID: keyID)
    }

    public init(format: Int = 1, payload: String, signature: String, keyID: String) {
        self.format = format
        self.payload = payload
        self.signature = signature
        self.keyID = keyID
    }

    /// The payload without checking the signature: for the collector's bookkeeping (group,
    /// version) and for error messages. Agents use `PolicySigning.verify`.
    public func unverifiedPayload() throws(PolicyBundleError) -> PolicyBundlePayload {
        guard format == 1 else { throw .unsupportedFormat(format) }
        guard let bytes = Data(base64Encoded: payload) else { throw .malformed("payload is not base64") }
        do {
            return try ReportCoding.decodeStrict(PolicyBundlePayload.self, from: bytes)
        } catch {
            throw .malformed("payload: \(error)")
        }
    }
}

/// Why a bundle is refused.
public enum PolicyBundleError: Error, CustomStringConvertible, Equatable {
    case unsupportedFormat(Int)
    case malformed(String)
    case unknownKey(bundle: String, pinned: String)
    case badSignature(keyID: String)
    case wrongGroup(bundle: String, expected: String)
    case rollback(version: Int64, current: Int64)
    case digestMismatch
    case badKey(String)
    case expired(version: Int64, notAfter: Date)

    public var description: String {
        switch self {
        case .unsupportedFormat(let f): "bundle format \(f) is not supported (this version reads format 1)"
        case .malformed(let why): "malformed bundle: \(why)"
        case .unknownKey(let b, let p): "bundle signed with key \(b), but the pinned admin key is \(p)"
        case .badSignature(let k): "bad signature: the bundle was not signed by key \(k) or was changed after signing"
        case .wrongGroup(let b, let e): "bundle is for group '\(b)', this agent is in group '\(e)'"
        case .rollback(let v, let c): "bundle version \(v) is not newer than the version in force (\(c)): refused as a rollback"
        case .digestMismatch: "policy_sha256 does not match policy_yaml"
        case .badKey(let why): "bad key: \(why)"
        case .expired(let v, let n): "bundle version \(v) expired at \(RFC3339.format(n)) (its not_after): the collector serves an outdated bundle"
        }
    }
}

/// Ed25519 keys, signing and verification of policy bundles.
public enum PolicySigning {
    /// A new key pair; files hold base64 of the 32-byte raw keys.
    public static func generateKey() -> Curve25519.Signing.PrivateKey { Curve25519.Signing.PrivateKey() }

    public static func privateKey(base64 text: String) throws(PolicyBundleError) -> Curve25519.Signing.PrivateKey {
        guard let raw = Data(base64Encoded: text.trimmed()), raw.count == 32,
              let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw)
        else { throw .badKey("not a base64 Ed25519 private key (32 bytes)") }
        return key
    }

    public static func publicKey(base64 text: String) throws(PolicyBundleError) -> Curve25519.Signing.PublicKey {
        guard let raw = Data(base64Encoded: text.trimmed()), raw.count == 32,
              let key = try? Curve25519.Signing.PublicKey(rawRepresentation: raw)
        else { throw .badKey("not a base64 Ed25519 public key (32 bytes)") }
        return key
    }

    public static func keyID(_ key: Curve25519.Signing.PublicKey) -> String { String(sha256Hex(key.rawRepresentation).prefix(16)) }

    public static func sign(_ payload: PolicyBundlePayload, with key: Curve25519.Signing.PrivateKey) throws -> SignedPolicyBundle {
        let bytes = try ReportCoding.encoder().encode(payload)
        let signature = try key.signature(for: bytes)
        return SignedPolicyBundle(payload: bytes.base64EncodedString(), signature: signature.base64EncodedString(), keyID: keyID(key.publicKey))
    }

    /// The payload, once the signature checks against `key`, the digest matches and (when
    /// given) the group is `group`, the version above `currentVersion` and the bundle still
    /// valid at `now`.
    public static func verify(_ bundle: SignedPolicyBundle, key: Curve25519.Signing.PublicKey, group: String? = nil,
                              currentVersion: Int64? = nil, now: Date? = nil) throws(PolicyBundleError) -> PolicyBundlePayload {
        guard bundle.format == 1 else { throw .unsupportedFormat(bundle.format) }
        let pinned = keyID(key)
        guard bundle.keyID == pinned else { throw .unknownKey(bundle: bundle.keyID, pinned: pinned) }
        guard let bytes = Data(base64Encoded: bundle.payload) else { throw .malformed("payload is not base64") }
        guard let signature = Data(base64Encoded: bundle.signature) else { throw .malformed("signature is not base64") }
        guard key.isValidSignature(signature, for: bytes) else { throw .badSignature(keyID: pinned) }
        let payload: PolicyBundlePayload
        do {
            payload = try ReportCoding.decodeStrict(PolicyBundlePayload.self, from: bytes)
        } catch {
            throw .malformed("payload: \(error)")
        }
        guard sha256Hex(Data(payload.policyYAML.utf8)) == payload.policySHA256 else { throw .digestMismatch }
        if let group, payload.group != group { throw .wrongGroup(bundle: payload.group, expected: group) }
        if let currentVersion, payload.version <= currentVersion { throw .rollback(version: payload.version, current: currentVersion) }
        if let now, let end = payload.notAfter, payload.expired(at: now) { throw .expired(version: payload.version, notAfter: end) }
        return payload
    }

    public static func sha256Hex(_ data: Data) -> String {
        hexString(SHA256.hash(data: data))
    }
}

/// A pinned admin public key (Sendable: kept as its raw bytes).
public struct PolicySigningKey: Sendable, Equatable {
    public let raw: Data
    public init(_ key: Curve25519.Signing.PublicKey) { raw = key.rawRepresentation }
    public init(base64 text: String) throws(PolicyBundleError) { raw = try PolicySigning.publicKey(base64: text).rawRepresentation }
    public var key: Curve25519.Signing.PublicKey { try! Curve25519.Signing.PublicKey(rawRepresentation: raw) }
    public var keyID: String { String(PolicySigning.sha256Hex(raw).prefix(16)) }
}

extension PolicySigning {
    public static func verify(_ bundle: SignedPolicyBundle, key: PolicySigningKey, group: String? = nil,
                              currentVersion: Int64? = nil, now: Date? = nil) throws(PolicyBundleError) -> PolicyBundlePayload {
        try verify(bundle, key: key.key, group: group, currentVersion: currentVersion, now: now)
    }
}
