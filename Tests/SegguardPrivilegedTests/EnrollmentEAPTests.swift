// The fleet chapter end to end with the built programs and a real 802.1X port: a device
// enrolled with a token (`segguardctl enroll` against `segguard-collector`), authenticated by
// hostapd's EAP-TLS server that trusts the collector's device CA and checks its CRL; the
// device revoked with `segguard-collector revoke` on the running collector's store; the CRL
// fetched from the collector; the port refuses the device at its next re-authentication.

import Foundation
import SegguardPKI
import SegguardTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Enrollment, CRL and a real EAP-TLS port", .serialized,
       .enabled(if: canCreateNamespaces && EAPLab.available && FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"),
                "needs root and \((EAPLab.programs + ["/usr/bin/curl"]).joined(separator: ", ")) (scripts/install-deps.sh installs them)"))
struct EnrollmentEAPTests {
    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// Polls `condition` every 100 ms for `seconds`.
    static func eventually(_ seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try condition() { return true }
            usleep(100_000)
        }
        return try condition()
    }

    @Test("enroll with a token, authenticate on an EAP-TLS port that checks the collector's CRL, revoke on the store: the collector's CRL lists it and the port refuses the device at re-authentication", .timeLimit(.minutes(3)))
    func enrollAuthenticateRevoke() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sg-enroll-eap-\(getpid())-\(UUID().uuidString.prefix(6))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ca = try PKI.makeCA(commonName: "Test City device CA", organization: "Test City")
        try PKI.write(ca, certificatePath: dir + "/ca.pem", keyPath: dir + "/ca.key")
        try PKI.write(try PKI.issueServer(ca: ca, commonName: "localhost", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"]),
                      certificatePath: dir + "/server.pem", keyPath: dir + "/server.key")
        let radius = try PKI.issueServer(ca: ca, commonName: "radius", dnsNames: ["radius.example.lg.jp"], ipAddresses: [])
        let store = "sqlite:\(dir)/collector.sqlite"
        let collectorBin = binDir.appendingPathComponent("segguard-collector"), ctl = binDir.appendingPathComponent("segguardctl")

        // The admin makes a token; the collector runs with enrollment on.
        let made = try runCapturing(collectorBin, ["tokens", "create", "--store", store, "--count", "1", "--group", "mynumber", "--expires", "1h", "-o", dir + "/tokens.csv"])
        #expect(made.0 == 0, "\(made.2)")
        let token = try #require(try String(contentsOfFile: dir + "/tokens.csv", encoding: .utf8).split(separator: "\n").dropFirst().first?.split(separator: ",").first)
        try "\(token)\n".write(toFile: dir + "/token", atomically: true, encoding: .utf8)
        let port = Self.freePort()
        let collector = Process()
        collector.executableURL = collectorBin
        collector.arguments = ["--listen", "127.0.0.1:\(port)", "--store", store, "--cert", dir + "/server.pem", "--key", dir + "/server.key",
                               "--client-ca", dir + "/ca.pem", "--enroll-ca-cert", dir + "/ca.pem", "--enroll-ca-key", dir + "/ca.key",
                               "--stale-sweep-seconds", "0.5", "--log-level", "warning"]
        _ = FileManager.default.createFile(atPath: dir + "/collector.log", contents: nil)
        collector.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/collector.log"))
        collector.standardOutput = FileHandle.nullDevice
        try collector.run()
        defer {
            if collector.isRunning {
                kill(collector.processIdentifier, SIGKILL)
                collector.waitUntilExit()
            }
        }
        let url = "https://127.0.0.1:\(port)"
        func fetchCRL() throws -> String? {
            let got = try runCapturing(URL(fileURLWithPath: "/usr/bin/curl"), ["-sf", "--cacert", dir + "/ca.pem", "-o", dir + "/devices.crl", url + "/pki/devices.crl"])
            guard got.0 == 0 else { return nil }
            let pem = try runCapturing(URL(fileURLWithPath: "/usr/bin/openssl"), ["crl", "-inform", "DER", "-in", dir + "/devices.crl", "-outform", "PEM"])
            return pem.0 == 0 ? pem.1 : nil
        }
        #expect(try Self.eventually(20) { try fetchCRL() != nil }, "collector: \((try? String(contentsOfFile: dir + "/collector.log", encoding: .utf8)) ?? "")")

        // The device enrolls: its key made here, the certificate from the collector. The token
        // does not work twice.
        let enrolled = try runCapturing(ctl, ["enroll", "--collector", url, "--collector-ca", dir + "/ca.pem", "--token-file", dir + "/token",
                                              "--device-id", EAPLab.identity, "--cert", dir + "/device/device.pem", "--key", dir + "/device/device.key"])
        #expect(enrolled.0 == 0 && enrolled.1.contains("enrolled \(EAPLab.identity) (group mynumber)"), "\(enrolled.1)\(enrolled.2)")
        let again = try runCapturing(ctl, ["enroll", "--collector", url, "--collector-ca", dir + "/ca.pem", "--token-file", dir + "/token",
                                           "--device-id", "tc-0043", "--cert", dir + "/other/device.pem", "--key", dir + "/other/device.key"])
        #expect(again.0 != 0 && again.2.contains("used already"), "\(again.2)")
        let device = try PKI.load(certificatePath: dir + "/device/device.pem", keyPath: dir + "/device/device.key")
        let serial = PKI.serialHex(device.certificate)

        // The office port: hostapd trusting the device CA, checking the collector's CRL.
        let lab = try EAPLab()
        defer { lab.cleanup() }
        let ns = try TestNamespace(prefix: "sgenr")
        defer { ns.destroy() }
        try lab.install(caPEM: ca.certificatePEM, crlPEM: try #require(try fetchCRL()), serverCertificatePEM: radius.certificatePEM,
                        serverKeyPEM: radius.privateKeyPEM, deviceCertificatePEM: device.certificatePEM, deviceKeyPEM: device.privateKeyPEM)
        try ns.addVeth("tce0", index: 4761, peer: "gwe0", index: 4762)
        try lab.startAuthenticator(in: ns, interface: "gwe0")
        try lab.startSupplicant(in: ns, interface: "tce0", config: "client", cleanSignals: false)
        func status() -> String { (try? lab.supplicantRequest("tce0", "STATUS")) ?? "" }
        let authorized = Self.eventually(20) { status().contains("suppPortStatus=Authorized") && status().contains("EAP state=SUCCESS") }
        #expect(authorized, "enrolled device not authenticated: \(status())\nhostapd: \(lab.log("hostapd").suffix(1500))\nwpa_supplicant: \(lab.log("wpa_supplicant").suffix(2000))")

        // A re-authentication before the revocation succeeds (the control for the refusal below).
        try lab.reauthenticate()
        #expect(Self.eventually(20) { lab.log("wpa_supplicant").components(separatedBy: "CTRL-EVENT-EAP-SUCCESS").count - 1 >= 2 },
                "re-authentication before the revocation: \(lab.log("wpa_supplicant").suffix(2000))")

        // Revoked on the store while the collector runs; its CRL lists the serial within a sweep.
        let revoked = try runCapturing(collectorBin, ["revoke", "--store", store, EAPLab.identity, "--reason", "stolen from the counter", "--by", "sato"])
        #expect(revoked.0 == 0 && revoked.1.contains(serial), "\(revoked.1)\(revoked.2)")
        var crl = ""
        let listed = try Self.eventually(20) {
            crl = try fetchCRL() ?? ""
            try crl.write(toFile: dir + "/crl.pem", atomically: true, encoding: .utf8)
            let text = try runCapturing(URL(fileURLWithPath: "/usr/bin/openssl"), ["crl", "-in", dir + "/crl.pem", "-noout", "-text"])
            return text.1.uppercased().contains(serial.uppercased())
        }
        #expect(listed, "the collector's CRL never listed \(serial)")
        // The RADIUS side loads it; at the next re-authentication the device is refused.
        try lab.publish(crl: crl)
        usleep(1_200_000)  // hostapd reloads the CRL when more than crl_reload_interval (1 s) passed
        try lab.reauthenticate()
        let refused = Self.eventually(20) {
            status().contains("suppPortStatus=Unauthorized") && status().contains("EAP state=FAILURE") && lab.log("wpa_supplicant").contains("CTRL-EVENT-EAP-FAILURE")
        }
        #expect(refused, "revoked device still authorized: \(status())\nhostapd: \(lab.log("hostapd").suffix(1500))")
        // Who revoked it, on the record.
        let list = try runCapturing(collectorBin, ["devices", "list", "--store", store])
        #expect(list.1.contains("\(EAPLab.identity)\tmynumber\t\(serial)") && list.1.contains("revoked"), "\(list.1)")
        kill(collector.processIdentifier, SIGTERM)
        collector.waitUntilExit()
        #expect(collector.terminationStatus == 0)
    }
}
