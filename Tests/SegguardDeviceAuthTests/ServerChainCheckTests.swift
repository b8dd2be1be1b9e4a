// The signature check behind server_ca_sha256: a pinned CA counts only when it signed the
// chain down to the server. The forged chain a rogue authenticator can send (its own CA with
// the office CA's name, plus the office CA's real certificate) must not pass.

import SegguardDeviceAuth
import SegguardPKI
import SegguardPolicy
import Crypto
import Foundation
import SwiftASN1
import Testing
import X509

@Suite("Server chain signatures")
struct ServerChainCheckTests {
    static func der(_ c: IssuedCertificate) throws -> [UInt8] {
        var s = DER.Serializer()
        try s.serialize(c.certificate)
        return s.serializedBytes
    }

    @Test("the office CA's server: depth 0 is marked signed by depth 1; a rogue CA with the same name sending the office CA along is not")
    func forgedChain() throws {
        let office = try PKI.makeCA(commonName: "Example City RADIUS CA")
        let server = try PKI.issueServer(ca: office, commonName: "radius.example.lg.jp", dnsNames: ["radius.example.lg.jp"], ipAddresses: [])
        let chain = [PeerCertificate(depth: 0, subject: "/CN=radius.example.lg.jp"), PeerCertificate(depth: 1, subject: "/CN=Example City RADIUS CA")]
        let honest = ServerChainCheck.marked(chain, der: [0: try Self.der(server), 1: try Self.der(office)])
        #expect(honest.map(\.signedByNext) == [true, false])

        let rogueCA = try PKI.makeCA(commonName: "Example City RADIUS CA")  // the same name, another key
        let rogue = try PKI.issueServer(ca: rogueCA, commonName: "radius.example.lg.jp", dnsNames: ["radius.example.lg.jp"], ipAddresses: [])
        let forged = ServerChainCheck.marked(chain, der: [0: try Self.der(rogue), 1: try Self.der(office)])
        #expect(forged.map(\.signedByNext) == [false, false])
        // No certificate data at all: nothing is marked (the CA pin then refuses).
        #expect(ServerChainCheck.marked(chain, der: [:]).map(\.signedByNext) == [false, false])
        #expect(ServerChainCheck.marked(chain, der: [0: [0x30, 0x03, 0x02, 0x01, 0x01], 1: try Self.der(office)]).map(\.signedByNext) == [false, false])
    }

    @Test("what a verifying TLS client checks besides signatures: the server's certificate may serve TLS, issuers are CAs, all inside their validity")
    func usesAndValidity() throws {
        let office = try PKI.makeCA(commonName: "Example City RADIUS CA")
        let server = try PKI.issueServer(ca: office, commonName: "radius.example.lg.jp", dnsNames: ["radius.example.lg.jp"], ipAddresses: [])
        let chain = [PeerCertificate(depth: 0, subject: "/CN=radius.example.lg.jp"), PeerCertificate(depth: 1, subject: "/CN=Example City RADIUS CA")]
        let honest = ServerChainCheck.marked(chain, der: [0: try Self.der(server), 1: try Self.der(office)])
        #expect(honest.map(\.serverAuth) == [true, true], "serverAuth for the server; the CA lists no EKU (any use)")
        #expect(honest.map(\.isCA) == [false, true])
        #expect(honest.map(\.validWhenSeen) == [true, true])

        // Another thin client's device certificate, issued by the same CA: clientAuth only.
        let device = try PKI.issueDevice(ca: office, agentID: "tc-0999", group: "mynumber")
        let asServer = ServerChainCheck.marked(chain, der: [0: try Self.der(device), 1: try Self.der(office)])
        #expect(asServer.map(\.signedByNext) == [true, false])
        #expect(asServer[0].serverAuth == false)

        // That device certificate signing a server certificate of its own: the signature
        // verifies, but the issuer is not a CA.
        let now = Date()
        let rogueKey = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let rogue = try Certificate(version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: rogueKey.publicKey,
                                    notValidBefore: now.addingTimeInterval(-60), notValidAfter: now.addingTimeInterval(3600),
                                    issuer: device.certificate.subject, subject: try DistinguishedName { CommonName("radius.example.lg.jp") },
                                    signatureAlgorithm: .ecdsaWithSHA256, extensions: Certificate.Extensions(), issuerPrivateKey: device.privateKey)
        var rs = DER.Serializer()
        try rs.serialize(rogue)
        let three = chain + [PeerCertificate(depth: 2, subject: "/CN=Example City RADIUS CA")]
        let underDevice = ServerChainCheck.marked(three, der: [0: rs.serializedBytes, 1: try Self.der(device), 2: try Self.der(office)])
        #expect(underDevice.map(\.signedByNext) == [true, true, false])
        #expect(underDevice.map(\.isCA) == [false, false, true])
        #expect(underDevice[0].serverAuth, "no EKU: any use")

        // Seen after the server certificate's notAfter (and before the CA's): not valid.
        let later = server.certificate.notValidAfter.addingTimeInterval(1)
        #expect(ServerChainCheck.marked(chain, der: [0: try Self.der(server), 1: try Self.der(office)], now: later).map(\.validWhenSeen) == [false, true])
        let early = server.certificate.notValidBefore.addingTimeInterval(-1)
        #expect(ServerChainCheck.marked(chain, der: [0: try Self.der(server)], now: early).map(\.validWhenSeen) == [false, false])
        // No DER: nothing proven.
        let bare = ServerChainCheck.marked(chain, der: [:])
        #expect(bare.allSatisfy { !$0.isCA && !$0.serverAuth && !$0.validWhenSeen })
    }
}
