// Whose key a certificate file holds: the supplicant's `client_cert` and segguardd's own
// device certificate are compared by the SHA-256 of their public keys, so a certificate
// renewed for the same key still matches, and one copied from another device does not.

import Crypto
import Foundation
import Glibc
import SegguardSystem
import SwiftASN1
import X509

/// A certificate file read for its public key.
public struct CertificateKey: Sendable, Equatable {
    /// SHA-256 of the DER SubjectPublicKeyInfo, lower-case hex.
    public let keySHA256: String
    /// "subject '/CN=tc-0001' in /etc/segguard/device.pem".
    public let description: String

    /// Files larger than this are not certificates segguardd reads.
    static let maxSize = 256 * 1024

    /// Reads the first certificate of a PEM or DER file. Regular files only (a FIFO or a
    /// device does not block the reader), at most 256 KB.
    /// - Throws: ``CertificateKeyError`` naming the file and what is wrong.
    public static func read(path: String) throws(CertificateKeyError) -> CertificateKey {
        let bytes: [UInt8]
        do {
            bytes = try readSmallRegularFile(path)
        } catch {
            throw CertificateKeyError("\(path): \(error)")
        }
        let certificate: Certificate
        do {
            if let text = String(bytes: bytes, encoding: .utf8), text.contains("-----BEGIN CERTIFICATE-----") {
                let start = text.range(of: "-----BEGIN CERTIFICATE-----")!.lowerBound
                guard let end = text.range(of: "-----END CERTIFICATE-----", range: start..<text.endIndex)?.upperBound else {
                    throw CertificateKeyError("\(path): a PEM certificate without its END line")
                }
                certificate = try Certificate(pemEncoded: String(text[start..<end]))
            } else {
                certificate = try Certificate(derEncoded: bytes)
            }
        } catch let e as CertificateKeyError {
            throw e
        } catch {
            throw CertificateKeyError("\(path): not a PEM or DER certificate (\(error))")
        }
        do {
            return CertificateKey(keySHA256: try keySHA256(certificate.publicKey), description: "subject '\(certificate.subject)' in \(path)")
        } catch {
            throw CertificateKeyError("\(path): its public key does not serialize (\(error))")
        }
    }

    /// SHA-256 of a public key's DER SubjectPublicKeyInfo, lower-case hex.
    public static func keySHA256(_ key: Certificate.PublicKey) throws -> String {
        var serializer = DER.Serializer()
        try serializer.serialize(key)
        return SHA256.hash(data: serializer.serializedBytes).map { String(format: "%02x", $0) }.joined()
    }

    static func readSmallRegularFile(_ path: String) throws -> [UInt8] {
        let fd = try systemCall("open \(path)") { open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY) }
        defer { close(fd) }
        var st = stat()
        _ = try systemCall("fstat \(path)") { fstat(fd, &st) }
        guard st.st_mode & S_IFMT == S_IFREG else { throw CertificateKeyError("not a regular file") }
        guard Int(st.st_size) <= maxSize else { throw CertificateKeyError("\(st.st_size) bytes, more than a certificate (\(maxSize))") }
        var out = [UInt8](repeating: 0, count: Int(st.st_size) + 1)
        var filled = 0
        while filled < out.count {
            let n = try out.withUnsafeMutableBytes { buf in
                try systemCall("read \(path)") { Glibc.read(fd, buf.baseAddress! + filled, buf.count - filled) }
            }
            if n == 0 { break }
            filled += n
        }
        guard filled <= maxSize else { throw CertificateKeyError("grew past \(maxSize) bytes while read") }
        return Array(out[..<filled])
    }
}

/// A certificate file that could not be read for its key.
public struct CertificateKeyError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A certificate as segguardd found it (the supplicant's client certificate, this device's):
/// its key, or why none.
public struct CertificateKeyFinding: Sendable, Equatable {
    public var keySHA256: String?
    public var description: String
    public init(keySHA256: String?, description: String) { (self.keySHA256, self.description) = (keySHA256, description) }
}

extension CertificateKey {
    /// What the source records for the supplicant's `client_cert` value (quotes removed):
    /// the key, or why there is none. Blobs (`blob://`), PKCS#11 URIs and PKCS#12 keys
    /// without a `client_cert` are not read.
    public static func forSupplicant(clientCert value: String?) -> CertificateKeyFinding {
        guard let value, !value.isEmpty else {
            return CertificateKeyFinding(keySHA256: nil, description: "wpa_supplicant's network names no client_cert")
        }
        guard value.hasPrefix("/") else {
            return CertificateKeyFinding(keySHA256: nil, description: "client_cert '\(value.prefix(80))' is not a file path segguardd can read")
        }
        do {
            let k = try read(path: value)
            return CertificateKeyFinding(keySHA256: k.keySHA256, description: k.description)
        } catch {
            return CertificateKeyFinding(keySHA256: nil, description: "client_cert \(error)")
        }
    }
}

/// The last finding per certificate file, read again only when the file changes (device,
/// inode, size, modification and change times): a source refreshes on every supplicant
/// event, and parsing the certificate each time would sit on the 802.1X event path.
public struct CertificateKeyCache: Sendable {
    private var entries: [String: (stamp: [Int], finding: CertificateKeyFinding)] = [:]

    public init() {}

    /// As `CertificateKey.forSupplicant(clientCert:)`, from the cache when the file is unchanged.
    public mutating func finding(clientCert value: String?) -> CertificateKeyFinding {
        guard let value, value.hasPrefix("/") else { return CertificateKey.forSupplicant(clientCert: value) }
        var st = stat()
        guard stat(value, &st) == 0 else { return CertificateKey.forSupplicant(clientCert: value) }
        let stamp = [Int(st.st_dev), Int(st.st_ino), Int(st.st_size), st.st_mtim.tv_sec, st.st_mtim.tv_nsec, st.st_ctim.tv_sec, st.st_ctim.tv_nsec]
        if let e = entries[value], e.stamp == stamp { return e.finding }
        let found = CertificateKey.forSupplicant(clientCert: value)
        if entries.count >= 16 { entries.removeAll() }
        entries[value] = (stamp, found)
        return found
    }
}
