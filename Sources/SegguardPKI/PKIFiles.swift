#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import FoundationEssentials
import SegguardSystem
import X509

extension PKI {
    /// Mode of a written private key file.
    public static let keyFileMode: mode_t = 0o600
    /// Mode of a written certificate file.
    public static let certificateFileMode: mode_t = 0o644
    /// Larger files are not read as PEM.
    static let maxPEMFileSize = 1 << 20

    /// Writes a certificate and its key as PEM files.
    ///
    /// The key file gets mode 0600 and the certificate 0644, whatever the umask. An existing key file is never
    /// replaced unless `overwrite` is true; then the key is written to a new 0600 file renamed over the old one, so
    /// neither a half-written key nor the old file's looser mode can be seen. The certificate always replaces an
    /// existing file, atomically. The directory must exist.
    ///
    /// - Throws: ``PKIError`` naming the file, e.g. when the key file exists and `overwrite` is false.
    public static func write(_ issued: IssuedCertificate, certificatePath: String, keyPath: String, overwrite: Bool = false) throws {
        guard certificatePath != keyPath else {
            throw PKIError("\(keyPath): the certificate and the key cannot be written to the same file")
        }
        if overwrite {
            try writeReplacing(path: keyPath, contents: issued.privateKeyPEM, mode: keyFileMode, what: "key file")
        } else {
            try writeExclusive(path: keyPath, contents: issued.privateKeyPEM, mode: keyFileMode, what: "key file")
        }
        do {
            try writeReplacing(path: certificatePath, contents: issued.certificatePEM, mode: certificateFileMode, what: "certificate file")
        } catch {
            // A new key without its certificate would only block the next try.
            if !overwrite { unlink(keyPath) }
            throw error
        }
    }

    /// Replaces a certificate and its key (renewal) so that a crash at any point leaves a pair
    /// that belongs together, or one ``finishReplace(certificatePath:keyPath:)`` completes:
    /// both new files are written and synced beside the old ones (`.next`), then the key is
    /// renamed over the old key and the certificate over the old certificate.
    public static func replace(_ issued: IssuedCertificate, certificatePath: String, keyPath: String) throws {
        let nextKey = keyPath + ".next", nextCert = certificatePath + ".next"
        try writeReplacing(path: nextKey, contents: issued.privateKeyPEM, mode: keyFileMode, what: "new key file")
        try writeReplacing(path: nextCert, contents: issued.certificatePEM, mode: certificateFileMode, what: "new certificate file")
        guard rename(nextKey, keyPath) == 0 else { throw PKIError("key file \(keyPath): cannot rename \(nextKey) over it: \(errnoText(errno))") }
        guard rename(nextCert, certificatePath) == 0 else {
            throw PKIError("certificate file \(certificatePath): cannot rename \(nextCert) over it: \(errnoText(errno)) (the next start completes it)")
        }
    }

    /// Completes a ``replace(_:certificatePath:keyPath:)`` cut short between its two renames (the
    /// key is new, the certificate old, the new one waiting in `.next`); removes a `.next` pair
    /// left before the first rename. Returns whether a replacement was completed.
    @discardableResult
    public static func finishReplace(certificatePath: String, keyPath: String) throws -> Bool {
        let nextCert = certificatePath + ".next", nextKey = keyPath + ".next"
        guard access(nextCert, F_OK) == 0 else { return false }
        if access(nextKey, F_OK) == 0 {
            // Cut short before the key's rename: the old pair is whole; drop the new one.
            unlink(nextKey)
            unlink(nextCert)
            return false
        }
        let keyText = try readPEMFile(keyPath, what: "key file")
        let key = try parsePrivateKeyPEM(keyText, source: "key file \(keyPath)")
        let pending = try loadCertificate(path: nextCert)
        guard pending.publicKey == key.publicKey else {
            unlink(nextCert)
            return false
        }
        guard rename(nextCert, certificatePath) == 0 else {
            throw PKIError("certificate file \(certificatePath): cannot rename \(nextCert) over it: \(errnoText(errno))")
        }
        return true
    }

    /// Reads a certificate and its private key from PEM files and checks that they belong together.
    /// - Throws: ``PKIError`` naming the file that is missing, unreadable, not PEM or of the wrong kind, or saying
    ///   that the key is not the certificate's.
    public static func load(certificatePath: String, keyPath: String) throws -> IssuedCertificate {
        let certificate = try loadCertificate(path: certificatePath)
        let keyText = try readPEMFile(keyPath, what: "key file")
        let key = try parsePrivateKeyPEM(keyText, source: "key file \(keyPath)")
        guard certificate.publicKey == key.publicKey else {
            throw PKIError("key file \(keyPath): the key does not belong to the certificate in \(certificatePath)")
        }
        return try IssuedCertificate(certificate: certificate, privateKey: key)
    }

    /// Reads a PEM certificate file (the first block), e.g. the CA certificate a verifier trusts.
    /// - Throws: ``PKIError`` naming the file that is missing, unreadable or not a PEM certificate.
    public static func loadCertificate(path: String) throws -> Certificate {
        let text = try readPEMFile(path, what: "certificate file")
        return try parseCertificatePEM(text, source: "certificate file \(path)")
    }

    // MARK: - POSIX file helpers

    private static func errnoText(_ code: Int32) -> String {
        String(cString: strerror(code))
    }

    /// Reads a small text file; the errors say "<what> <path>: <reason>".
    static func readPEMFile(_ path: String, what: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw PKIError("\(what) \(path): cannot open: \(errnoText(errno))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw PKIError("\(what) \(path): cannot stat: \(errnoText(errno))")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw PKIError("\(what) \(path): not a regular file")
        }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let n: Int
            do {
                n = try systemCall("read") { buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) } }
            } catch {
                throw PKIError("\(what) \(path): cannot read: \(errnoText(error.errno))")
            }
            if n == 0 { break }
            bytes.append(contentsOf: buffer[..<n])
            if bytes.count > maxPEMFileSize {
                throw PKIError("\(what) \(path): not a PEM file (larger than \(maxPEMFileSize) bytes)")
            }
        }
        guard !bytes.isEmpty else {
            throw PKIError("\(what) \(path): not a PEM file (it is empty)")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw PKIError("\(what) \(path): not a PEM file (not text)")
        }
        guard text.firstRange(of: "-----BEGIN ") != nil else {
            throw PKIError("\(what) \(path): not a PEM file (no \"-----BEGIN\" line)")
        }
        return text
    }

    private static func writeAll(fd: Int32, _ contents: String, path: String, what: String) throws {
        do {
            try SegguardSystem.writeAll(fd, Array(contents.utf8), call: "write")
            try systemCall("fsync") { fsync(fd) }
        } catch {
            throw PKIError("\(what) \(path): cannot \(error.call): \(errnoText(error.errno))")
        }
    }

    /// Creates `path`, failing if anything exists there.
    private static func writeExclusive(path: String, contents: String, mode: mode_t, what: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)
        guard fd >= 0 else {
            let code = errno
            if code == EEXIST {
                throw PKIError("\(what) \(path): already exists; refusing to overwrite it (use --force to replace it)")
            }
            throw PKIError("\(what) \(path): cannot create: \(errnoText(code))")
        }
        do {
            guard fchmod(fd, mode) == 0 else {
                throw PKIError("\(what) \(path): cannot set mode \(String(mode, radix: 8)): \(errnoText(errno))")
            }
            try writeAll(fd: fd, contents, path: path, what: what)
        } catch {
            close(fd)
            unlink(path)
            throw error
        }
        close(fd)
    }

    /// Replaces `path` atomically (`AtomicFile`).
    private static func writeReplacing(path: String, contents: String, mode: mode_t, what: String) throws {
        do {
            try AtomicFile.write(Data(contents.utf8), to: path, mode: mode)
        } catch {
            throw PKIError("\(what) \(path): cannot write: \(error)")
        }
    }
}
