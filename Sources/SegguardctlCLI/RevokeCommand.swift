// `segguardctl pki revoke`: asks the collector to refuse a device certificate from now on
// (a stolen, lost or retired thin client). The collector records who revoked what and why,
// and every replica refuses the certificate within one stale sweep (5 s by default).

import ArgumentParser
import AsyncHTTPClient
import FoundationEssentials
import SegguardEssentials
import Glibc
import NIOCore
import NIOSSL
import SegguardReport

extension PKICommand {
    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a device's certificate at the collector (admin token required).",
            discussion: "Without --serial, the certificate the device's latest heartbeat came with. The device gets 403 with the reason at its next call; enroll it again for a new certificate.")
        @Option(name: .long, help: "The collector (https://HOST:PORT; its management listener with --admin-listen).")
        var collector: String
        @Option(name: .long, help: "CA certificate that issued the collector's server certificate.")
        var ca: String
        @Option(name: .long, help: "File holding the admin bearer token.")
        var tokenFile: String
        @Option(name: .long, help: "Why (kept with the revocation and shown to the device): stolen, lost, retired, ...")
        var reason: String
        @Option(name: .long, help: "The certificate's serial number in hex (default: the one the collector last saw for the device).")
        var serial: String?
        @Argument(help: "The device (agent id).")
        var device: String

        func run() async throws {
            let token = try readTextFile(tokenFile).trimmed()
            var body: [String: String] = ["agent_id": device, "reason": reason]
            if let serial { body["serial"] = serial }
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
            let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
            do {
                var request = HTTPClientRequest(url: "\(collector)/api/v1/admin/revoke")
                request.method = .POST
                request.headers.add(name: "Content-Type", value: "application/json")
                request.headers.add(name: "Authorization", value: "Bearer \(token)")
                request.body = .bytes(ByteBuffer(bytes: try JSONEncoder().encode(body)))
                let response = try await client.execute(request, timeout: .seconds(30))
                let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
                try? await client.shutdown()
                guard response.status == .created || response.status == .ok else {
                    let message = (try? ReportCoding.decoder().decode(ErrorReply.self, from: Data(text.utf8)))?.error ?? text
                    throw CLIError("collector refused the revocation (\(response.status.code)): \(message)")
                }
                let reply = JSONValue.parse(Data(text.utf8))
                let serials = reply?["serials"]?.array?.compactMap(\.string) ?? [reply?["serial"]?.string ?? "?"]
                let named = serials.count == 1 ? "certificate (serial \(serials[0]))" : "certificates (serials \(serials.joined(separator: ", ")))"
                print(response.status == .created ? "revoked \(device)'s \(named) at \(collector)" : "\(device)'s \(named) was revoked already")
            } catch {
                try? await client.shutdown()
                throw error
            }
        }
    }
}
