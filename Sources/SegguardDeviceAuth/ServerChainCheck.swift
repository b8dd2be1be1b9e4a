// Verifies the signatures of the 802.1X server's certificate chain as wpa_supplicant reported
// it (DER per depth): which certificate was signed by the one above it. Pure; both sources use it.

import SegguardPolicy
import X509

/// Marks `signedByNext` on each certificate of a reported chain.
public enum ServerChainCheck {
    /// `chain` with `signedByNext` set where the certificate's DER at depth k verifies with
    /// the public key of the DER at depth k + 1. `der` gives the DER by depth; a certificate
    /// without one (or that does not parse) is never marked.
    public static func marked(_ chain: [PeerCertificate], der: [Int: [UInt8]]) -> [PeerCertificate] {
        var parsed: [Int: Certificate] = [:]
        for (depth, bytes) in der {
            if let c = try? Certificate(derEncoded: bytes) { parsed[depth] = c }
        }
        return chain.map { cert in
            var c = cert
            if let me = parsed[cert.depth], let issuer = parsed[cert.depth + 1] {
                c.signedByNext = me.issuer == issuer.subject && issuer.publicKey.isValidSignature(me.signature, for: me)
            } else {
                c.signedByNext = false
            }
            return c
        }
    }
}
