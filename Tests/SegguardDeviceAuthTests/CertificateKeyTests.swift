// Reading a certificate file for its key: the supplicant's client_cert and segguardd's device
// certificate are compared by it. PEM and DER, renewed certificates, and files that are not
// certificates (a FIFO must not block the reader; a huge file is not read).

import Foundation
import SegguardDeviceAuth
import SegguardPKI
import SwiftASN1
import Testing
import X509

@Suite("Certificate keys (802.1X client certificate vs this device's)")
struct CertificateKeyTests {
    static func directory() throws -> String {
        let dir = NSTemporaryDirectory() + "sg-certkey-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test("PEM and DER of one certificate give one key; a certificate renewed for the same key matches; another device's does not")
    func sameAndOther() throws {
        let dir = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ca = try PKI.makeCA(commonName: "Example City device CA")
        let device = try PKI.issueDevice(ca: ca, agentID: "tc-0001", group: "mynumber")
        try ("# a comment before the block\n" + device.certificatePEM + ca.certificatePEM).write(toFile: dir + "/device.pem", atomically: true, encoding: .utf8)
        var der = DER.Serializer()
        try der.serialize(device.certificate)
        try Data(der.serializedBytes).write(to: URL(fileURLWithPath: dir + "/device.der"))
        let pem = try CertificateKey.read(path: dir + "/device.pem")
        let fromDER = try CertificateKey.read(path: dir + "/device.der")
        #expect(pem.keySHA256 == fromDER.keySHA256)
        #expect(pem.keySHA256 == (try CertificateKey.keySHA256(device.certificate.publicKey)))
        #expect(pem.keySHA256.count == 64)
        #expect(pem.description.hasPrefix("subject '") && pem.description.contains("tc-0001") && pem.description.hasSuffix("in \(dir)/device.pem"), "\(pem.description)")
        // The first certificate of the file counts (the chain after it is ignored).
        #expect(pem.keySHA256 != (try CertificateKey.keySHA256(ca.certificate.publicKey)))

        // Renewed: a new certificate for the same key.
        let renewed = try Certificate(version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: device.certificate.publicKey,
                                      notValidBefore: Date().addingTimeInterval(-60), notValidAfter: Date().addingTimeInterval(86400),
                                      issuer: ca.certificate.subject, subject: device.certificate.subject, signatureAlgorithm: .ecdsaWithSHA256,
                                      extensions: device.certificate.extensions, issuerPrivateKey: ca.privateKey)
        try renewed.serializeAsPEM().pemString.write(toFile: dir + "/renewed.pem", atomically: true, encoding: .utf8)
        #expect(try CertificateKey.read(path: dir + "/renewed.pem").keySHA256 == pem.keySHA256)

        let other = try PKI.issueDevice(ca: ca, agentID: "tc-0999", group: "mynumber")
        try other.certificatePEM.write(toFile: dir + "/other.pem", atomically: true, encoding: .utf8)
        #expect(try CertificateKey.read(path: dir + "/other.pem").keySHA256 != pem.keySHA256)
    }

    @Test("not a certificate: missing, a FIFO (does not block), a directory, too large, garbage, a PEM without END; supplicant values that are not paths")
    func refused() throws {
        let dir = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func message(_ path: String) -> String {
            do {
                _ = try CertificateKey.read(path: path)
                return "read"
            } catch {
                return "\(error)"
            }
        }
        #expect(message(dir + "/missing.pem").hasPrefix("\(dir)/missing.pem: open \(dir)/missing.pem"), "\(message(dir + "/missing.pem"))")
        #expect(mkfifo(dir + "/fifo", 0o600) == 0)
        #expect(message(dir + "/fifo") == "\(dir)/fifo: not a regular file")
        #expect(message(dir) == "\(dir): not a regular file")
        try Data(count: 300 * 1024).write(to: URL(fileURLWithPath: dir + "/big.pem"))
        #expect(message(dir + "/big.pem").contains("more than a certificate"), "\(message(dir + "/big.pem"))")
        try "hello".write(toFile: dir + "/garbage.pem", atomically: true, encoding: .utf8)
        #expect(message(dir + "/garbage.pem").hasPrefix("\(dir)/garbage.pem: not a PEM or DER certificate"), "\(message(dir + "/garbage.pem"))")
        try "-----BEGIN CERTIFICATE-----\nMIIB\n".write(toFile: dir + "/cut.pem", atomically: true, encoding: .utf8)
        #expect(message(dir + "/cut.pem") == "\(dir)/cut.pem: a PEM certificate without its END line")

        #expect(CertificateKey.forSupplicant(clientCert: nil) == CertificateKeyFinding(keySHA256: nil, description: "wpa_supplicant's network names no client_cert"))
        #expect(CertificateKey.forSupplicant(clientCert: "blob://device").description == "client_cert 'blob://device' is not a file path segguardd can read")
        // Under /tmp (writable by everyone): refused before anything is opened.
        #expect(CertificateKey.forSupplicant(clientCert: dir + "/fifo").description.contains("/tmp can be changed by uid 0 or by group/others (mode 1777)"),
                "\(CertificateKey.forSupplicant(clientCert: dir + "/fifo").description)")
    }

    /// A directory only root can change (under /run), or nil when not root.
    static func rootOnlyDirectory() throws -> String? {
        guard geteuid() == 0 else { return nil }
        let dir = "/run/sg-certkey-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
        return dir
    }

    @Test("the supplicant's files must be ones only root can change: a user's file, a group-writable one, a symlink, a PKCS#12 key elsewhere, an engine are refused; a TRUSTED CERTIFICATE block first is refused",
          .enabled(if: geteuid() == 0, "needs root (files owned by root under /run)"))
    func rootOnly() throws {
        let dir = try #require(try Self.rootOnlyDirectory())
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ca = try PKI.makeCA(commonName: "Example City device CA")
        let mine = try PKI.issueDevice(ca: ca, agentID: "tc-0001", group: "mynumber")
        let other = try PKI.issueDevice(ca: ca, agentID: "tc-0999", group: "mynumber")
        try mine.certificatePEM.write(toFile: dir + "/device.pem", atomically: true, encoding: .utf8)
        try mine.privateKeyPEM.write(toFile: dir + "/device.key", atomically: true, encoding: .utf8)
        let myKey = try CertificateKey.keySHA256(mine.certificate.publicKey)
        #expect(CertificateKey.forSupplicant(clientCert: dir + "/device.pem", privateKey: dir + "/device.key", engine: "0").keySHA256 == myKey)

        // A file a user owns (chown 65534), a group-writable one, a symlink to the good file.
        try mine.certificatePEM.write(toFile: dir + "/users.pem", atomically: true, encoding: .utf8)
        #expect(chown(dir + "/users.pem", 65534, 65534) == 0)
        #expect(CertificateKey.forSupplicant(clientCert: dir + "/users.pem").description.contains("users.pem can be changed by uid 65534"))
        try mine.certificatePEM.write(toFile: dir + "/group.pem", atomically: true, encoding: .utf8)
        #expect(chmod(dir + "/group.pem", 0o664) == 0)
        #expect(CertificateKey.forSupplicant(clientCert: dir + "/group.pem").description.contains("(mode 664)"))
        #expect(symlink(dir + "/device.pem", dir + "/link.pem") == 0)
        #expect(CertificateKey.forSupplicant(clientCert: dir + "/link.pem").description.contains("link.pem is a symbolic link"))
        // This device's certificate, but the key (a PKCS#12 would carry another certificate)
        // in a place a user can write: refused.
        #expect(CertificateKey.forSupplicant(clientCert: dir + "/device.pem", privateKey: "/tmp/other.p12").description.contains("/tmp can be changed"))
        #expect(CertificateKey.forSupplicant(clientCert: dir + "/device.pem", privateKey: "pkcs11:token=x").description.contains("is not a file path"))
        #expect(CertificateKey.forSupplicant(clientCert: dir + "/device.pem", engine: "1").description.hasPrefix("the network uses an engine"))
        #expect(CertificateKey.forSupplicant(clientCert: dir + "/device.pem", privateKey: dir + "/../etc/key").description.contains("not a plain path"))

        // Another device's certificate labelled TRUSTED CERTIFICATE first, this device's after
        // it: OpenSSL would present the first; segguardd refuses the file.
        let trusted = other.certificatePEM.replacingOccurrences(of: "BEGIN CERTIFICATE", with: "BEGIN TRUSTED CERTIFICATE")
            .replacingOccurrences(of: "END CERTIFICATE", with: "END TRUSTED CERTIFICATE")
        try (trusted + mine.certificatePEM).write(toFile: dir + "/trusted.pem", atomically: true, encoding: .utf8)
        #expect(CertificateKey.forSupplicant(clientCert: dir + "/trusted.pem").description.contains("the first PEM block is '-----BEGIN TRUSTED CERTIFICATE-----', not a CERTIFICATE"))
        // A BEGIN line not at the start of a line is not a block (OpenSSL skips it too).
        try ("x -----BEGIN CERTIFICATE-----\n" + other.certificatePEM).write(toFile: dir + "/inline.pem", atomically: true, encoding: .utf8)
        #expect(CertificateKey.forSupplicant(clientCert: dir + "/inline.pem").keySHA256 == (try CertificateKey.keySHA256(other.certificate.publicKey)))
    }

    @Test("the cache reads a file again only when it changes: rewritten with another certificate, the new key is found",
          .enabled(if: geteuid() == 0, "needs root (files owned by root under /run)"))
    func cache() throws {
        let dir = try #require(try Self.rootOnlyDirectory())
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ca = try PKI.makeCA(commonName: "Example City device CA")
        let one = try PKI.issueDevice(ca: ca, agentID: "tc-0001", group: "mynumber")
        let two = try PKI.issueDevice(ca: ca, agentID: "tc-0002", group: "mynumber")
        let path = dir + "/client.pem"
        try one.certificatePEM.write(toFile: path, atomically: true, encoding: .utf8)
        var cache = CertificateKeyCache()
        let first = cache.finding(clientCert: path)
        #expect(first.keySHA256 == (try CertificateKey.keySHA256(one.certificate.publicKey)))
        #expect(cache.finding(clientCert: path) == first)
        #expect(cache.reads == 1, "the unchanged file was not parsed again")
        // The path checks still run on a cached file: made group-writable, it is refused.
        #expect(chmod(path, 0o666) == 0)
        #expect(cache.finding(clientCert: path).keySHA256 == nil)
        #expect(chmod(path, 0o644) == 0)
        try two.certificatePEM.write(toFile: path, atomically: true, encoding: .utf8)  // a new inode (atomic rename)
        #expect(cache.finding(clientCert: path).keySHA256 == (try CertificateKey.keySHA256(two.certificate.publicKey)))
        // Rewritten in place (same inode): size or times differ.
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: 0)
        try handle.write(contentsOf: Data(one.certificatePEM.utf8))
        try handle.close()
        #expect(cache.finding(clientCert: path).keySHA256 == first.keySHA256)
        try FileManager.default.removeItem(atPath: path)
        #expect(cache.finding(clientCert: path).keySHA256 == nil)
        #expect(cache.finding(clientCert: nil).description == "wpa_supplicant's network names no client_cert")
    }
}
