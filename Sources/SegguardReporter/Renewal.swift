// Renewing the device certificate before it ends: a new key made here, a signing request sent
// with the current certificate (EST simplereenroll), the answer checked, key and certificate
// swapped so that a crash leaves a pair that belongs together, and the connection to the
// collector made again with the new certificate.

import AsyncHTTPClient
import FoundationEssentials
import Glibc
import NIOCore
import NIOHTTP1
import SegguardPKI
import SegguardReport
import X509

/// The device certificate renewed.
public struct RenewalResult: Sendable, Equatable {
    public var serial: String
    public var notAfter: Date
}

extension Reporter {
    /// Renews when the certificate ends within `renewBeforeSeconds` and no failed try is
    /// waiting out its backoff.
    func renewIfDue(now: Date = Date()) async {
        guard let window = configuration.renewBeforeSeconds else { return }
        let state = renewal.withLock { $0 }
        guard state.notAfter.timeIntervalSince(now) <= window, now >= state.nextTry else { return }
        do {
            _ = try await renewNow()
        } catch {
            let wait = renewal.withLock { r -> Double in
                r.nextTry = Date().addingTimeInterval(r.wait)
                defer { r.wait = min(r.wait * 2, 86_400) }
                return r.wait
            }
            logger.error("device certificate not renewed; trying again later",
                         metadata: ["error": "\(error)", "not_after": "\(state.notAfter)", "retry_s": "\(Int(wait))"])
            record(kind: "certificate-renewal-failed", severity: state.notAfter.timeIntervalSince(now) < 7 * 86_400 ? "critical" : "warning",
                   reason: "the device certificate (ends \(RFC3339.format(state.notAfter))) could not be renewed: \(error); next try in \(Int(wait)) s",
                   details: ["not_after": RFC3339.format(state.notAfter), "error": "\(error)"])
        }
    }

    /// Renews the device certificate now (also `segguardctl`-driven tests).
    @discardableResult
    public func renewNow() async throws -> RenewalResult {
        let (request, key) = try PKI.makeRequest(agentID: identity.agentID)
        let body = Data(try PKI.derBytes(request)).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
        let response = try await execute { url in
            var http = HTTPClientRequest(url: url + "/.well-known/est/simplereenroll")
            http.method = .POST
            http.headers.add(name: "Content-Type", value: "application/pkcs10")
            http.body = .bytes(ByteBuffer(string: body))
            return http
        }
        let data = Data((try await response.body.collect(upTo: 1 << 20)).readableBytesView)
        guard response.status == .ok else {
            throw RenewalError("the collector answered \(response.status.code): \(String(decoding: data.prefix(300), as: UTF8.self))")
        }
        let certificate = try EnrollmentAnswer.certificate(from: data, key: key, agentID: identity.agentID)
        let issued = try IssuedCertificate(certificate: certificate, privateKey: key)
        try PKI.replace(issued, certificatePath: configuration.certificatePath, keyPath: configuration.keyPath)
        let old = clientBox.withLock { c -> HTTPClient? in
            guard let new = try? Self.makeClient(configuration) else { return nil }
            defer { c = new }
            return c
        }
        if let old {
            // Requests in flight on the old connection finish (or time out) first.
            let grace = configuration.requestTimeoutSeconds
            Task {
                try? await Task.sleep(for: .seconds(grace))
                try? await old.shutdown()
            }
        }
        let serial = PKI.serialHex(certificate)
        // At most one renewal a day, also when the window is longer than what the CA issues.
        renewal.withLock { $0 = (certificate.notValidAfter, Date().addingTimeInterval(86_400), configuration.renewRetrySeconds) }
        renewedHook.withLock { $0 }?()
        logger.notice("device certificate renewed", metadata: ["serial": "\(serial)", "not_after": "\(certificate.notValidAfter)"])
        record(kind: "certificate-renewed", severity: "info",
               reason: "device certificate renewed: serial \(serial), valid until \(RFC3339.format(certificate.notValidAfter))",
               details: ["serial": serial, "not_after": RFC3339.format(certificate.notValidAfter)])
        return RenewalResult(serial: serial, notAfter: certificate.notValidAfter)
    }

    /// Called after each renewal, once the new files are in place (segguardd: the agent
    /// re-reads its device key).
    public func onCertificateRenewed(_ hook: @escaping @Sendable () -> Void) { renewedHook.withLock { $0 = hook } }

    /// The device certificate's end as the reporter knows it.
    public var certificateNotAfter: Date { renewal.withLock { $0.notAfter } }
}

/// A renewal or enrollment that did not happen, and why.
public struct RenewalError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
