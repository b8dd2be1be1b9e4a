// `segguardctl enroll`: the device's first certificate. The key is made here and never
// leaves the device; the collector gets a signing request (EST simpleenroll) with the
// enrollment token the admin gave the imaging tool, and answers with the certificate.

import ArgumentParser
import AsyncHTTPClient
import FoundationEssentials
import SegguardEssentials
import Glibc
import NIOCore
import NIOSSL
import SegguardPKI
import SegguardReport
import SegguardSystem


struct Enroll: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Enroll this device at the collector with a token: a key made here, the certificate from the collector (EST).",
        discussion: """
            Writes the key (0600) and the certificate; an existing key is kept unless --force. Point segguardd at them \
            (--client-cert/--client-key); it renews the certificate itself before it ends.
            """)
    @Option(name: .long, help: "The collector (https://HOST:PORT; several separated by commas are tried in turn).")
    var collector: String
    @Option(name: .long, help: "CA certificate that issued the collector's server certificate.")
    var collectorCa: String = "/etc/segguard/collector-ca.pem"
    @Option(name: .long, help: "File holding the enrollment token (one line).")
    var tokenFile: String
    @Option(name: .long, help: "This device's agent id (the certificate's CN); default: the host name.")
    var deviceId: String?
    @Option(name: .long, help: "Where to write the certificate.")
    var cert: String = "/etc/segguard/pki/device.pem"
    @Option(name: .long, help: "Where to write the key.")
    var key: String = "/etc/segguard/pki/device.key"
    @Flag(name: .long, help: "Replace an existing key and certificate.")
    var force = false

    func run() async throws {
        let token: String
        do {
            token = try readTextFile(tokenFile).trimmed()
        } catch {
            throw CLIError("--token-file \(error)")
        }
        guard !token.isEmpty, !token.contains(where: { $0.isNewline }) else { throw CLIError("--token-file \(tokenFile): expected the token on one line") }
        let agentID = deviceId ?? hostName().split(separator: ".").first.map(String.init) ?? ""
        try PKI.validateName(agentID, what: "--device-id")
        let urls = collector.split(separator: ",").map { String($0).trimmed() }
        for url in urls where !url.lowercased().hasPrefix("https://") {
            throw CLIError("--collector \(url): must be https:// (the token is a secret)")
        }
        if !force, FileManager.default.fileExists(atPath: key) {
            throw CLIError("\(key) exists: this device has a key already (renewal is segguardd's; use --force to enroll again)")
        }
        // Where the files go must take them before the token is spent.
        for path in [key, cert] {
            let directory = PathName.directory(path)
            do {
                try makeDirectories(directory, mode: 0o755)
            } catch {
                throw CLIError("\(directory): cannot create it: \(error.reason)")
            }
            guard access(directory, W_OK) == 0 else { throw CLIError("\(directory): not writable (run as root)") }
        }
        let (request, privateKey) = try PKI.makeRequest(agentID: agentID)
        let body = Data(try PKI.derBytes(request)).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
        var tls = TLSConfiguration.makeClientConfiguration()
        do { tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(collectorCa)) } catch { throw CLIError("--collector-ca \(collectorCa): \(error)") }
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
        defer { _ = client.shutdown() }
        var lastError: (any Error)?
        for url in urls {
            var http = HTTPClientRequest(url: url + "/.well-known/est/simpleenroll")
            http.method = .POST
            http.headers.add(name: "Content-Type", value: "application/pkcs10")
            http.headers.add(name: "Authorization", value: "Basic " + Data("\(agentID):\(token)".utf8).base64EncodedString())
            http.body = .bytes(ByteBuffer(string: body))
            let response: HTTPClientResponse
            do {
                response = try await client.execute(http, timeout: .seconds(30))
            } catch {
                lastError = error
                continue
            }
            let data = Data((try await response.body.collect(upTo: 1 << 20)).readableBytesView)
            guard response.status == .ok else {
                let message = (try? ReportCoding.decoder().decode(ErrorReply.self, from: data))?.error ?? String(decoding: data.prefix(300), as: UTF8.self)
                throw CLIError("the collector refused the enrollment (\(response.status.code)): \(message)")
            }
            let certificate = try EnrollmentAnswer.certificate(from: data, key: privateKey, agentID: agentID)
            let issued = try IssuedCertificate(certificate: certificate, privateKey: privateKey)
            try PKI.write(issued, certificatePath: cert, keyPath: key, overwrite: force)
            let group = (try? DeviceIdentity(certificate: certificate).group) ?? "?"
            print("enrolled \(agentID) (group \(group)) at \(url): certificate serial \(PKI.serialHex(certificate)), valid until \(RFC3339.format(certificate.notValidAfter))")
            print("wrote \(cert) and \(key)")
            return
        }
        throw CLIError("no collector reachable (\(collector)): \(lastError.map { "\($0)" } ?? "no URL")")
    }
}
