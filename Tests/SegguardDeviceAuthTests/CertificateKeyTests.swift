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
        #expect(CertificateKey.forSupplicant(clientCert: dir + "/fifo").description == "client_cert \(dir)/fifo: not a regular file")
    }

    @Test("the cache reads a file again only when it changes: rewritten with another certificate, the new key is found")
    func cache() throws {
        let dir = try Self.directory()
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
