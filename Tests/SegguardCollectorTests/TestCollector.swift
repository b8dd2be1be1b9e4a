// An in-process collector on 127.0.0.1 (a free port), real TLS with a test PKI made by
// SegguardPKI, and HTTP clients with and without device certificates.

import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import SegguardCollector
import SegguardPKI
import SegguardReport
import Synchronization
import Testing

/// A test PKI in a temporary directory: CA, server certificate for 127.0.0.1, devices.
struct TestPKI {
    let directory: String
    let ca: IssuedCertificate

    init() throws {
        directory = NSTemporaryDirectory() + "sg-pki-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory + "/devices", withIntermediateDirectories: true)
        ca = try PKI.makeCA(commonName: "segment-guard test CA", organization: "Test City")
        try PKI.write(ca, certificatePath: directory + "/ca.pem", keyPath: directory + "/ca.key")
        let server = try PKI.issueServer(ca: ca, commonName: "localhost", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"])
        try PKI.write(server, certificatePath: directory + "/server.pem", keyPath: directory + "/server.key")
    }

    /// Issues (once) and returns the cert/key paths of a device.
    @discardableResult
    func device(_ id: String, group: String, validDays: Int = 825) throws -> (cert: String, key: String) {
        let cert = "\(directory)/devices/\(id).pem", key = "\(directory)/devices/\(id).key"
        if !FileManager.default.fileExists(atPath: cert) {
            try PKI.write(try PKI.issueDevice(ca: ca, agentID: id, group: group, validDays: validDays), certificatePath: cert, keyPath: key)
        }
        return (cert, key)
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

/// A running collector and what talks to it.
final class TestCollector: Sendable {
    let pki: TestPKI
    let collector: Collector
    let port: Int
    let task: Task<Void, any Error>
    static let adminToken = "test-admin-token-0123456789"

    /// Starts a collector on `store` (a fresh SQLite store when nil).
    static func start(store: (any CollectorStore)? = nil, policyKey: PolicySigningKey? = nil, staleSweepSeconds: Double = 3600,
                      pki: TestPKI? = nil, port: Int = 0, middleware: [any MiddlewareProtocol<Request, Response, CollectorContext>] = [],
                      configure: (inout CollectorConfiguration) -> Void = { _ in }) async throws -> TestCollector {
        let pki = try pki ?? TestPKI()
        let backend: any CollectorStore
        if let store {
            backend = store
        } else {
            backend = try await SQLiteStore(path: pki.directory + "/collector.sqlite")
            try await backend.migrate()
        }
        var config = CollectorConfiguration(certificatePath: pki.directory + "/server.pem", keyPath: pki.directory + "/server.key",
                                            clientCAPath: pki.directory + "/ca.pem")
        config.port = port
        config.adminTokenSHA256 = PolicySigning.sha256Hex(Data(adminToken.utf8))
        config.policyPublicKey = policyKey
        config.staleSweepSeconds = staleSweepSeconds
        configure(&config)
        var logger = Logger(label: "test-collector")
        logger.logLevel = .critical
        let collector = Collector(store: backend, configuration: config, logger: logger)
        let (stream, continuation) = AsyncStream.makeStream(of: Int.self)
        let app = try collector.application(middleware: middleware) { port in continuation.yield(port) }
        let task = Task { try await app.run() }
        var port = 0
        for await p in stream {
            port = p
            break
        }
        return TestCollector(pki: pki, collector: collector, port: port, task: task)
    }

    init(pki: TestPKI, collector: Collector, port: Int, task: Task<Void, any Error>) {
        self.pki = pki
        self.collector = collector
        self.port = port
        self.task = task
    }

    var url: String { "https://127.0.0.1:\(port)" }

    func stop() async {
        task.cancel()
        _ = try? await task.value
        try? await collector.store.close()
    }

    /// An HTTP client trusting the test CA, presenting `device`'s certificate when given.
    func client(device: (cert: String, key: String)? = nil) throws -> HTTPClient { try pki.client(device: device) }
}

extension TestPKI {
    /// An HTTP client trusting this CA, presenting `device`'s certificate when given.
    func client(device: (cert: String, key: String)? = nil) throws -> HTTPClient {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(directory + "/ca.pem"))
        if let device {
            tls.certificateChain = try NIOSSLCertificate.fromPEMFile(device.cert).map { .certificate($0) }
            tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: device.key, format: .pem))
        }
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
    }
}

/// One request; returns status, body text and headers.
func call(_ client: HTTPClient, _ method: HTTPMethodName, _ url: String, body: Data? = nil, headers: [(String, String)] = [],
          contentType: String? = "application/json", timeout: TimeAmount = .seconds(30)) async throws -> (status: Int, body: String, headers: [(String, String)]) {
    var request = HTTPClientRequest(url: url)
    request.method = method.nio
    if let contentType, body != nil { request.headers.add(name: "Content-Type", value: contentType) }
    for (k, v) in headers { request.headers.add(name: k, value: v) }
    if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
    let response = try await client.execute(request, timeout: timeout)
    let text = String(buffer: try await response.body.collect(upTo: 8 << 20))
    return (Int(response.status.code), text, response.headers.map { ($0.name, $0.value) })
}

enum HTTPMethodName: String {
    case GET, POST, PUT
    var nio: HTTPMethod { HTTPMethod(rawValue: rawValue) }
}

func json<T: Encodable>(_ v: T) throws -> Data { try ReportCoding.encoder().encode(v) }

/// Shuts a client down whatever happens.
@discardableResult
func withClient<T>(_ client: HTTPClient, _ body: (HTTPClient) async throws -> T) async throws -> T {
    do {
        let r = try await body(client)
        try await client.shutdown()
        return r
    } catch {
        try? await client.shutdown()
        throw error
    }
}

/// Polls `condition` until it holds or `seconds` pass; returns whether it held. The default is
/// generous: a run on a loaded 2-core machine once needed more than 15 s for a first delivery
/// (TLS handshakes, SQLite); a passing run never waits for it.
func eventually(_ seconds: Double = 60, _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return try await condition()
}
