// Pure unit tests of the trusted-server model: the pin of a certificate equals what openssl
// computes (`openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | sha256sum`),
// pins in every accepted form, and bad entries refused with a message naming them. The
// probe itself runs on the real kernel in SegguardPrivilegedTests/TrustedServerProbeTests.

import Foundation
import SegguardProbe
import Testing

/// A P-256 self-signed certificate made with
/// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 36500 -subj /CN=trusted.example.test`.
let ecCertificatePEM = """
-----BEGIN CERTIFICATE-----
MIIBlDCCATugAwIBAgIUaHVBebVn12L9+U1NgPBiNd0iK/0wCgYIKoZIzj0EAwIw
HzEdMBsGA1UEAwwUdHJ1c3RlZC5leGFtcGxlLnRlc3QwIBcNMjYxMjAxMTAxNzMy
WhgPMjEyNjExMDcxMDE3MzJaMB8xHTAbBgNVBAMMFHRydXN0ZWQuZXhhbXBsZS50
ZXN0MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEO05zq1K+deO0qfxW1tHOYm+U
RtCTLoKA0IQRTzeMbhI0xIIz+VkyD2SFxjoIkWd1kFAzpa14UV63WMmxExEEWqNT
MFEwHQYDVR0OBBYEFGB9491Do7OYpRs61P5IfFNISui2MB8GA1UdIwQYMBaAFGB9
491Do7OYpRs61P5IfFNISui2MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwID
RwAwRAIgNpvGQzwGPoj+9TiUXoRHm9HU1fQxNm7FSBnAqjbDZ3ECIDejlJjUpogR
nxTpInbAxXkvgLDZwKCtentJcOD2gGvP
-----END CERTIFICATE-----
"""
/// `openssl x509 -in ec.pem -pubkey -noout | openssl pkey -pubin -outform der | sha256sum`
let ecPinHex = "41538849e3c3269638f14f1ace676e0f8301e6d7196e6076e95a617c450b984e"
/// The same digest, `… | openssl dgst -sha256 -binary | base64`
let ecPinBase64 = "QVOISePDJpY48U8azmduD4MB5tcZbmB26VphfEULmE4="

/// An RSA-2048 self-signed certificate (`openssl req -x509 -newkey rsa:2048 …`).
let rsaCertificatePEM = """
-----BEGIN CERTIFICATE-----
MIIDGTCCAgGgAwIBAgIUKOjjrWWnR7tAAOQ7xVLtc1PGegUwDQYJKoZIhvcNAQEL
BQAwGzEZMBcGA1UEAwwQcnNhLmV4YW1wbGUudGVzdDAgFw0yNjEyMDExMDE3MzZa
GA8yMTI2MTEwNzEwMTczNlowGzEZMBcGA1UEAwwQcnNhLmV4YW1wbGUudGVzdDCC
ASIwDQYJKoZIhvcNAQEBBQADggEPADCCAQoCggEBANMeCLHzbWt8I1jwiHNh7bWK
hlP2Q/nTfcqDN90EUGwZ3wU50C/g0P/69kx1JJc06pvm3PfmDnkOSdIOMLuNeMmz
NbINO09mdI0Lh8C2HCB7wxO6hpD9ua3hyrxF51xSzCm9435DGL08Bgl7QIxHax4p
CT12h9+b/ol2ZcG+wwRya+sJCj3KZW9ylQDrtO+ErrYMczzk8YxYIjoNak4iq0T8
E9kdfBl9wqiAGkR6M6sW/LzfhLMIdXzQPFy2/1+zWkjCUNA/a6XR3LXbkWjy616U
iD2ggfFlIrJdLAqo0ydD+Ox8Y9ZGhjQVbxxTeUw1JLy47h/4YABLKRbiXywev0cC
AwEAAaNTMFEwHQYDVR0OBBYEFCj0MnrEFWi9vWyIp+90GcjisW6rMB8GA1UdIwQY
MBaAFCj0MnrEFWi9vWyIp+90GcjisW6rMA8GA1UdEwEB/wQFMAMBAf8wDQYJKoZI
hvcNAQELBQADggEBAEyGEbSLJuwun+WdeF7O6fJKBFLoHEvIRwzYXX+9h/9u4s1G
W6h2TDykXwD91v9CfOtMKzcooHGwOhoLEjrzLiR6CA5QS99rk0BX3DxVQ9wiH0ny
Z51m3wOurO0WpANZrbAPSW891qmnNgDhcTNfPWza55fVGvFbh31Vr6zQIPr3uDfF
Ky8Ub5QKUth9RCCI524zU5Xg9BMbuAEi+EKUwBG7DSbzyyx6tpmJaPw48bRXhs+N
LEy1N6s+QcsQhqRMO9Kgq+S7Bn1D+jKBrBHyPIWGblK/MfKjJqPM4aL37gtBgZ/q
tvGH+koCACa2DKn59TETZZ4CNVpilc7UcqrM/yE=
-----END CERTIFICATE-----
"""
let rsaPinHex = "e3b5dfc9d2aa825ec53be86371e22dc13aaabf48d2d6f0dc4a49ded302d1ff95"
let rsaPinBase64 = "47XfydKqgl7FO+hjceItwTqqv0jS1vDcSkne0wLR/5U="

/// The DER bytes of the first PEM block.
func derOf(_ pem: String) -> [UInt8] {
    let body = pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
    return Array(Data(base64Encoded: body)!)
}

@Suite("Trusted server: pins and entries")
struct TrustedServerModelTests {
    @Test("The pin of a certificate is the SHA-256 of its DER SubjectPublicKeyInfo, as openssl computes it")
    func pinOfKnownCertificates() throws {
        #expect(try TrustedServer.spkiSHA256(certificatePEM: ecCertificatePEM) == ecPinHex)
        #expect(try TrustedServer.spkiSHA256(certificateDER: derOf(ecCertificatePEM)) == ecPinHex)
        #expect(try TrustedServer.spkiSHA256(certificatePEM: rsaCertificatePEM) == rsaPinHex)
        #expect(try TrustedServer.spkiSHA256(certificateDER: derOf(rsaCertificatePEM)) == rsaPinHex)
    }

    @Test("Cross-check with the openssl command line when it is installed")
    func pinMatchesOpenSSLAtRuntime() throws {
        let openssl = ["/usr/bin/openssl", "/usr/local/bin/openssl"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let openssl else {
            print("openssl not installed; the constants above were computed with it")
            return
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sg-pin-\(getpid())-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for (pem, name) in [(ecCertificatePEM, "ec"), (rsaCertificatePEM, "rsa")] {
            let path = dir.appendingPathComponent("\(name).pem").path
            try pem.write(toFile: path, atomically: true, encoding: .utf8)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/sh")
            p.arguments = ["-c", "'\(openssl)' x509 -in '\(path)' -pubkey -noout | '\(openssl)' pkey -pubin -outform der | sha256sum"]
            let out = Pipe()
            p.standardOutput = out
            try p.run()
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            let expected = String(text.prefix(64))
            #expect(expected.count == 64, "openssl pipeline printed \(text)")
            #expect(try TrustedServer.spkiSHA256(certificatePEM: pem) == expected)
        }
    }

    @Test("A pin is accepted as hex (any case, with colons) or base64 (with or without sha256//, URL-safe, unpadded) and becomes lower-case hex")
    func pinForms() throws {
        #expect(try SPKIPin.normalize(ecPinHex) == ecPinHex)
        #expect(try SPKIPin.normalize(ecPinHex.uppercased()) == ecPinHex)
        let colons = stride(from: 0, to: 64, by: 2).map { i -> String in
            let a = ecPinHex.index(ecPinHex.startIndex, offsetBy: i)
            return String(ecPinHex[a..<ecPinHex.index(a, offsetBy: 2)]).uppercased()
        }.joined(separator: ":")
        #expect(try SPKIPin.normalize(colons) == ecPinHex)
        #expect(try SPKIPin.normalize(ecPinBase64) == ecPinHex)
        #expect(try SPKIPin.normalize("sha256//" + ecPinBase64) == ecPinHex)
        #expect(try SPKIPin.normalize(String(ecPinBase64.dropLast())) == ecPinHex)
        #expect(try SPKIPin.normalize(rsaPinBase64) == rsaPinHex)
        let urlSafe = rsaPinBase64.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        #expect(try SPKIPin.normalize(urlSafe) == rsaPinHex)
        #expect(try SPKIPin.normalize("  \(rsaPinHex) ") == rsaPinHex)
        #expect(SPKIPin.base64(hexPin: rsaPinHex) == rsaPinBase64)
        #expect(SPKIPin.base64(hexPin: "xyz") == nil)
    }

    @Test("A bad pin is refused with a message quoting it and saying how to get one", arguments: [
        "abc123",
        String(repeating: "g", count: 64),
        String(ecPinHex.dropLast()),
        ecPinHex + "00",
        "41:53:88:49" + String(ecPinHex.dropFirst(8)),
        "sha256//notbase64atall",
        "QUFBQQ==",
        "",
    ])
    func badPins(pin: String) {
        do {
            _ = try SPKIPin.normalize(pin)
            Issue.record("\(pin) was accepted")
        } catch {
            #expect(error.message.contains("\"\(pin.trimmingCharacters(in: .whitespaces).prefix(80))"), "\(error.message)")
            #expect(error.message.contains("is not a SHA-256 pin"))
            #expect(error.message.contains("openssl pkey -pubin -outform der | sha256sum"))
        }
    }

    @Test("validated() checks each field, names the entry and the bad value, and normalizes pins (duplicates dropped)")
    func validation() throws {
        let good = TrustedServer(host: "10.0.0.5", port: 443, serverName: "probe.office.example", spkiSHA256: [ecPinHex.uppercased(), ecPinBase64, rsaPinHex])
        let v = try good.validated()
        #expect(v.spkiSHA256 == [ecPinHex, rsaPinHex])
        #expect(v.host == "10.0.0.5" && v.port == 443 && v.serverName == "probe.office.example")
        #expect(try TrustedServer(host: "fd00::5", port: 8443, spkiSHA256: [ecPinHex]).validated().endpoint == "[fd00::5]:8443")

        func refusal(_ s: TrustedServer) -> String {
            do {
                _ = try s.validated()
                return "accepted"
            } catch { return error.message }
        }
        let name = refusal(TrustedServer(host: "probe.office.example", port: 443, spkiSHA256: [ecPinHex]))
        #expect(name.contains("host \"probe.office.example\" is not an IP address"), "\(name)")
        #expect(refusal(TrustedServer(host: "10.0.0.5", port: 0, spkiSHA256: [ecPinHex])).contains("10.0.0.5:0: port 0"))
        let sni = refusal(TrustedServer(host: "10.0.0.5", port: 443, serverName: "10.0.0.5", spkiSHA256: [ecPinHex]))
        #expect(sni.contains("server_name \"10.0.0.5\" is not a DNS name"), "\(sni)")
        #expect(refusal(TrustedServer(host: "10.0.0.5", port: 443, serverName: "bad_name!", spkiSHA256: [ecPinHex])).contains("\"bad_name!\""))
        #expect(refusal(TrustedServer(host: "10.0.0.5", port: 443, spkiSHA256: [])).contains("10.0.0.5:443: no pinned key"))
        let pin = refusal(TrustedServer(host: "10.0.0.5", port: 443, spkiSHA256: [ecPinHex, "deadbeef"]))
        #expect(pin.hasPrefix("trusted_server 10.0.0.5:443: \"deadbeef\" is not a SHA-256 pin"), "\(pin)")
    }

    @Test("Pins of things that are not certificates are refused with a reason")
    func notCertificates() {
        #expect(throws: TrustedServerError.self) { try TrustedServer.spkiSHA256(certificatePEM: "hello") }
        #expect(throws: TrustedServerError.self) { try TrustedServer.spkiSHA256(certificateDER: [0x30, 0x03, 0x01, 0x01, 0xff]) }
    }

    @Test("TrustedServer and ProbeOutcome round-trip through JSON")
    func codable() throws {
        let s = TrustedServer(host: "10.0.0.5", port: 443, serverName: "probe.office.example", spkiSHA256: [ecPinHex])
        #expect(try JSONDecoder().decode(TrustedServer.self, from: JSONEncoder().encode(s)) == s)
        for o in [ProbeOutcome.proven(spki: ecPinHex, millis: 1.5), .refused(reason: "connect to 10.0.0.5:443 via enp1s0 timed out after 2 s")] {
            #expect(try JSONDecoder().decode(ProbeOutcome.self, from: JSONEncoder().encode(o)) == o)
        }
        #expect(ProbeOutcome.proven(spki: ecPinHex, millis: 1).isProven)
        #expect(!ProbeOutcome.refused(reason: "x").isProven)
    }
}
