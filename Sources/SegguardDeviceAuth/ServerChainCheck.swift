// Verifies the signatures of the 802.1X server's certificate chain as wpa_supplicant reported
// it (DER per depth): which certificate was signed by the one above it, which are CAs, which
// may serve TLS, which were inside their validity. Pure; both sources use it.

import FoundationEssentials
import Glibc
import SegguardPolicy
import X509

/// Marks `signedByNext` on each certificate of a reported chain.
public enum ServerChainCheck {
    /// `chain` with `signedByNext` set where the certificate's DER at depth k verifies with
    /// the public key of the DER at depth k + 1. `der` gives the DER by depth; a certificate
    /// without one (or that does not parse) is never marked.
    /// `isCA`, `serverAuth` and `validWhenSeen` are read from the same DER (`now`: the wall
    /// clock when the chain was reported); without DER all four stay false.
    public static func marked(_ chain: [PeerCertificate], der: [Int: [UInt8]], now: Date = Date()) -> [PeerCertificate] {
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
            if let me = parsed[cert.depth] {
                c.isCA = isCA(me)
                c.serverAuth = mayServeTLS(me)
                c.validWhenSeen = me.notValidBefore <= now && now <= me.notValidAfter
            } else {
                c.isCA = false
                c.serverAuth = false
                c.validWhenSeen = false
            }
            return c
        }
    }

    /// basicConstraints cA = TRUE (an extension that does not parse counts as not a CA).
    static func isCA(_ c: Certificate) -> Bool {
        guard let bc = try? c.extensions.basicConstraints else { return false }
        if case .isCertificateAuthority = bc { return true }
        return false
    }

    /// No extendedKeyUsage, or one with serverAuth (anyExtendedKeyUsage alone is not enough,
    /// as in OpenSSL's check of an SSL server; an extension that does not parse counts as not
    /// usable).
    static func mayServeTLS(_ c: Certificate) -> Bool {
        let result: ExtendedKeyUsage?
        do {
            result = try c.extensions.extendedKeyUsage
        } catch {
            return false
        }
        guard let eku = result else { return true }
        return eku.contains(.serverAuth)
    }
}
