// The signature check behind server_ca_sha256: a pinned CA counts only when it signed the
// chain down to the server. The forged chain a rogue authenticator can send (its own CA with
// the office CA's name, plus the office CA's real certificate) must not pass.

import SegguardDeviceAuth
import SegguardPKI
import SegguardPolicy
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
}
