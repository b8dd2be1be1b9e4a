// Whose key a certificate file holds: the supplicant's `client_cert` and segguardd's own
// device certificate are compared by the SHA-256 of their public keys, so a certificate
// renewed for the same key still matches, and one copied from another device does not.

import Crypto
import FoundationEssentials
import SegguardEssentials
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

    /// O_PATH (Linux; not exported by Glibc's Swift overlay without _GNU_SOURCE).
    static let oPath: Int32 = 0o10000000

    /// Files larger than this are not certificates segguardd reads.
    static let maxSize = 256 * 1024

    /// Reads the first certificate of a PEM or DER file. Regular files only (a FIFO or a
    /// device does not block the reader), at most 256 KB.
    /// - Throws: ``CertificateKeyError`` naming the file and what is wrong.
    public static func read(path: String) throws(CertificateKeyError) -> CertificateKey {
        try read(path: path, stamp: nil)
    }

    /// As `read(path:)`; `stamp` gets the identity of the file actually read (from fstat of
    /// the descriptor, not a second lookup of the path).
    static func read(path: String, stamp: UnsafeMutablePointer<[Int]>?) throws(CertificateKeyError) -> CertificateKey {
        let bytes: [UInt8]
        do {
            bytes = try readSmallRegularFile(path, stamp: stamp)
        } catch {
            throw CertificateKeyError("\(path): \(error)")
        }
        let certificate: Certificate
        do {
            if let text = String(bytes: bytes, encoding: .utf8), text.firstRange(of: "-----BEGIN ") != nil {
                // The first PEM block whose BEGIN starts a line, as OpenSSL (and so
                // wpa_supplicant) takes it; any label but CERTIFICATE is refused (OpenSSL also
                // reads a TRUSTED CERTIFICATE block, which must not let another one be judged).
                let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.hasSuffix("\r") ? $0.dropLast() : $0 }
                guard let begin = lines.firstIndex(where: { $0.hasPrefix("-----BEGIN ") }) else {
                    throw CertificateKeyError("\(path): no PEM block starts a line")
                }
                guard lines[begin] == "-----BEGIN CERTIFICATE-----" else {
                    throw CertificateKeyError("\(path): the first PEM block is '\(lines[begin].prefix(60))', not a CERTIFICATE")
                }
                guard let end = lines[begin...].firstIndex(where: { $0 == "-----END CERTIFICATE-----" }) else {
                    throw CertificateKeyError("\(path): a PEM certificate without its END line")
                }
                certificate = try Certificate(pemEncoded: lines[begin...end].joined(separator: "\n"))
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

    /// A file's identity and version: device, inode, size, modification and change times.
    static func stamp(_ st: stat) -> [Int] {
        [Int(st.st_dev), Int(st.st_ino), Int(st.st_size), st.st_mtim.tv_sec, st.st_mtim.tv_nsec, st.st_ctim.tv_sec, st.st_ctim.tv_nsec]
    }

    /// Refuses a path anyone but root could change: from / down, every directory must be
    /// owned by root and not writable by group or others, no component a symbolic link, and
    /// the file a regular file owned by root and not writable by group or others. Each
    /// component is looked at only once the one above it passed, so nothing under a user's
    /// directory (a user's FUSE mount, say) is ever touched. `owner`: the uid accepted
    /// besides root (tests running as another user); nil: root only.
    public static func checkRootOnly(_ path: String, owner: uid_t? = nil) throws(CertificateKeyError) {
        guard path.hasPrefix("/") else { throw CertificateKeyError("\(path): not an absolute path") }
        let parts = path.split(separator: "/").map(String.init)
        guard !parts.isEmpty, !parts.contains("."), !parts.contains("..") else { throw CertificateKeyError("\(path): not a plain path") }
        func trusted(_ st: stat) -> Bool { (st.st_uid == 0 || st.st_uid == owner) && st.st_mode & 0o022 == 0 }
        var current = ""
        var st = stat()
        guard lstat("/", &st) == 0, trusted(st) else { throw CertificateKeyError("\(path): / is writable by others than root") }
        for (i, part) in parts.enumerated() {
            current += "/" + part
            guard lstat(current, &st) == 0 else { throw CertificateKeyError("\(current): \(String(cString: strerror(errno)))") }
            let type = st.st_mode & S_IFMT
            if type == S_IFLNK { throw CertificateKeyError("\(current) is a symbolic link (the certificate's path must be one only root can change)") }
            let last = i == parts.count - 1
            if !last && type != S_IFDIR { throw CertificateKeyError("\(current): not a directory") }
            if last && type != S_IFREG { throw CertificateKeyError("\(current): not a regular file") }
            guard trusted(st) else {
                throw CertificateKeyError("\(current) can be changed by uid \(st.st_uid) or by group/others (mode \(String(st.st_mode & 0o7777, radix: 8))): the certificate's path must be one only root can change")
            }
        }
    }

    /// SHA-256 of a public key's DER SubjectPublicKeyInfo, lower-case hex.
    public static func keySHA256(_ key: Certificate.PublicKey) throws -> String {
        var serializer = DER.Serializer()
        try serializer.serialize(key)
        return hexString(SHA256.hash(data: serializer.serializedBytes))
    }

    static func readSmallRegularFile(_ path: String, stamp: UnsafeMutablePointer<[Int]>? = nil) throws -> [UInt8] {
        // O_PATH first: nothing is opened for reading (no device side effect, no FIFO wait)
        // until fstat says it is a regular file; then that very inode is opened.
        let pathFd = try systemCall("open \(path)") { open(path, Self.oPath | O_CLOEXEC) }
        defer { close(pathFd) }
        var st = stat()
        _ = try systemCall("fstat \(path)") { fstat(pathFd, &st) }
        guard st.st_mode & S_IFMT == S_IFREG else { throw CertificateKeyError("not a regular file") }
        let fd = try systemCall("open \(path)") { open("/proc/self/fd/\(pathFd)", O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY) }
        defer { close(fd) }
        _ = try systemCall("fstat \(path)") { fstat(fd, &st) }
        stamp?.pointee = Self.stamp(st)
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
    ///
    /// Both files the supplicant's TLS takes its certificate from must be ones only root can
    /// change (`checkRootOnly`): `client_cert`, and `private_key` (a PKCS#12 key file carries
    /// a certificate of its own that replaces `client_cert`). A network using an engine
    /// (PKCS#11: `engine=1`) is refused: its certificate is not in a file.
    public static func forSupplicant(clientCert value: String?, privateKey: String? = nil, engine: String? = nil, owner: uid_t? = nil) -> CertificateKeyFinding {
        forSupplicant(clientCert: value, privateKey: privateKey, engine: engine, owner: owner, stamp: nil)
    }

    static func forSupplicant(clientCert value: String?, privateKey: String?, engine: String?, owner: uid_t?, stamp: UnsafeMutablePointer<[Int]>?) -> CertificateKeyFinding {
        guard let value, !value.isEmpty else {
            return CertificateKeyFinding(keySHA256: nil, description: "wpa_supplicant's network names no client_cert")
        }
        guard value.hasPrefix("/") else {
            return CertificateKeyFinding(keySHA256: nil, description: "client_cert '\(value.prefix(80))' is not a file path segguardd can read")
        }
        if let refused = forSupplicantChecks(clientCert: value, privateKey: privateKey, engine: engine, owner: owner) { return refused }
        do {
            let k = try read(path: value, stamp: stamp)
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

    /// Files parsed (not answered from the cache), for tests.
    public private(set) var reads = 0

    /// As `CertificateKey.forSupplicant`, from the cache when the certificate file is
    /// unchanged. The path checks run every time (cheap); the entry's stamp is the one of the
    /// descriptor actually read, so a file swapped between a look at the path and the read
    /// cannot leave one file's key under another's stamp.
    public mutating func finding(clientCert value: String?, privateKey: String? = nil, engine: String? = nil, owner: uid_t? = nil) -> CertificateKeyFinding {
        guard let value, value.hasPrefix("/") else { return CertificateKey.forSupplicant(clientCert: value, privateKey: privateKey, engine: engine, owner: owner) }
        var st = stat()
        if stat(value, &st) == 0, let e = entries[value], e.stamp == CertificateKey.stamp(st), e.finding.keySHA256 != nil {
            // Same file as read before: the path checks still decide (cheap, no read).
            let checked = CertificateKey.forSupplicantChecks(clientCert: value, privateKey: privateKey, engine: engine, owner: owner)
            return checked ?? e.finding
        }
        var stamp: [Int] = []
        let found = CertificateKey.forSupplicant(clientCert: value, privateKey: privateKey, engine: engine, owner: owner, stamp: &stamp)
        reads += 1
        if entries.count >= 16 { entries.removeAll() }
        if !stamp.isEmpty { entries[value] = (stamp, found) }
        return found
    }
}

extension CertificateKey {
    /// The refusals of `forSupplicant` that need no read (engine, paths), or nil when they pass.
    static func forSupplicantChecks(clientCert value: String, privateKey: String?, engine: String?, owner: uid_t?) -> CertificateKeyFinding? {
        if let engine, engine != "0" {
            return CertificateKeyFinding(keySHA256: nil, description: "the network uses an engine (engine=\(engine.prefix(8))): its certificate is not a file segguardd can read")
        }
        do {
            try checkRootOnly(value, owner: owner)
            if let privateKey, !privateKey.isEmpty {
                guard privateKey.hasPrefix("/") else { throw CertificateKeyError("private_key '\(privateKey.prefix(80))' is not a file path segguardd can check") }
                try checkRootOnly(privateKey, owner: owner)
            }
            return nil
        } catch {
            return CertificateKeyFinding(keySHA256: nil, description: "client_cert \(error)")
        }
    }
}
