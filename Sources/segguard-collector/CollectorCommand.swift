// segguard-collector: wiring only. Opens the store (SQLite file by default, PostgreSQL for
// several replicas), serves the agent API over mutual TLS, the dashboard and /metrics, and
// sweeps stale agents. SIGTERM/SIGINT stop it gracefully (requests in flight finish).

import ArgumentParser
import Foundation
import Hummingbird
import Logging
import SegguardCollector
import SegguardPKI
import SegguardReport
import SegguardService
import SegguardWire
import ServiceLifecycle

/// The segment-guard collector: `serve` (the default) and the admin's tools on the store.
@main
struct CollectorRoot: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "segguard-collector",
        abstract: "Collects heartbeats and events from segguardd agents (mutual TLS), serves signed policy bundles, enrollment and a dashboard.",
        version: segguardVersion,
        subcommands: [CollectorCommand.self, TokensCommand.self, DevicesCommand.self, RevokeCommand.self, CRLCommand.self],
        defaultSubcommand: CollectorCommand.self)
}

/// `segguard-collector [serve]`: the collector itself.
struct CollectorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve agents (mutual TLS), enrollment, policy bundles, the dashboard and /metrics (the default command).")

    @Option(name: .long, help: "Address and port to listen on.")
    var listen: String = "127.0.0.1:8443"

    @Option(name: .long, help: "sqlite:PATH (default, no setup) or postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE (shared by replicas).")
    var store: String = "sqlite:/var/lib/segguard-collector/collector.sqlite"

    @Option(name: .long, help: "The collector's TLS certificate (PEM).")
    var cert: String = "/etc/segguard-collector/server.pem"

    @Option(name: .long, help: "The collector's TLS key (PEM).")
    var key: String = "/etc/segguard-collector/server.key"

    @Option(name: .long, help: "The CA that issued the device certificates (PEM); agents must present one.")
    var clientCa: String = "/etc/segguard-collector/ca.pem"

    @Option(name: .long, help: "File holding the admin bearer token (needed to push policy bundles and read the admin API).")
    var adminTokenFile: String?

    @Option(name: .long, help: "Admin policy-signing public key (base64 Ed25519); pushed bundles must verify against it.")
    var policyPublicKey: String?

    @Option(name: .long, help: "An agent silent for this many of its heartbeat intervals is stale.")
    var staleIntervals: Int = 3

    @Option(name: .long, help: "Heartbeat interval (s) of groups without a policy bundle (the policy default); an agent claiming a longer one is held to its group's.")
    var heartbeatSeconds: Int = 30

    @Option(name: .long, help: "Seconds between stale sweeps.")
    var staleSweepSeconds: Double = 5

    @Option(name: .long, help: "Open connections at most (default: the open-files limit less 128); beyond it new connections wait in the listen backlog.")
    var maxConnections: Int?

    @Option(name: .long, help: "Seconds before an idle kept-alive connection is closed (keep it above the heartbeat interval).")
    var idleTimeout: Double = 90

    @Option(name: .long, help: "Management listener HOST:PORT: the dashboard, /metrics, the admin API and the export are served there only (TLS, same certificate).")
    var adminListen: String?

    @Option(name: .long, help: "Operator accounts (NAME:scrypt$... lines, made with --hash-password): the dashboard, /metrics, the admin API and the export then need an operator's password or the admin token.")
    var operatorsFile: String?

    @Flag(name: .long, help: "Read a password on standard input, print its hash for --operators-file, and exit.")
    var hashPassword = false

    @Option(name: .long, help: "Delete events received more than this many days ago (checked hourly); default: keep every event.")
    var retentionDays: Int?

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Option(name: .long, help: "The device CA certificate (PEM) enrollments are signed with (EST /.well-known/est, the CRL at /pki/devices.crl); with --enroll-ca-key.")
    var enrollCaCert: String?

    @Option(name: .long, help: "The device CA's private key (PEM, readable by the collector only).")
    var enrollCaKey: String?

    @Option(name: .long, help: "Validity in days of certificates issued by enrollment and renewal.")
    var enrollValidDays: Int = 397

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level: \"\(logLevel)\" is not a log level") }
        guard parseListen() != nil else { throw ValidationError("--listen \(listen): expected HOST:PORT, e.g. 127.0.0.1:8443") }
        guard staleIntervals >= 1 else { throw ValidationError("--stale-intervals: at least 1") }
        guard (1...86_400).contains(heartbeatSeconds) else { throw ValidationError("--heartbeat-seconds: 1 to 86400") }
        guard staleSweepSeconds > 0 else { throw ValidationError("--stale-sweep-seconds: must be positive") }
        if let m = maxConnections, m < 1 { throw ValidationError("--max-connections: at least 1") }
        guard idleTimeout > 0 else { throw ValidationError("--idle-timeout: must be positive") }
        if let a = adminListen, Self.parseAddress(a) == nil { throw ValidationError("--admin-listen \(a): expected HOST:PORT, e.g. 10.0.0.5:9443") }
        if let a = adminListen, a == listen { throw ValidationError("--admin-listen: must differ from --listen") }
        if let d = retentionDays, d < 1 { throw ValidationError("--retention-days: at least 1 (leave it out to keep every event)") }
        guard (enrollCaCert == nil) == (enrollCaKey == nil) else { throw ValidationError("--enroll-ca-cert and --enroll-ca-key go together") }
        guard (1...3650).contains(enrollValidDays) else { throw ValidationError("--enroll-valid-days: \(enrollValidDays) is not between 1 and 3650") }
        guard store.hasPrefix("sqlite:") || store.hasPrefix("postgres://") || store.hasPrefix("postgresql://") else {
            throw ValidationError("--store \(store): expected sqlite:PATH or postgres://USER@HOST:PORT/DATABASE")
        }
    }

    func parseListen() -> (String, Int)? { Self.parseAddress(listen) }

    static func parseAddress(_ listen: String) -> (String, Int)? {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (0...65535).contains(port) else { return nil }
        var host = String(listen[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return host.isEmpty ? nil : (host, port)
    }

    func run() async throws {
        if hashPassword {
            let password = (readLine(strippingNewline: true) ?? "")
            guard password.count >= 12 else {
                FileHandle.standardError.write(Data("segguard-collector: the password must have at least 12 characters\n".utf8))
                throw ExitCode(2)
            }
            print(try OperatorAccount.hash(password: password))
            return
        }
        JournalLogHandler.bootstrap(level: Logger.Level(rawValue: logLevel) ?? .info)
        let logger = Logger(label: "segguard-collector")
        let (host, port) = parseListen()!

        var config = CollectorConfiguration(certificatePath: cert, keyPath: key, clientCAPath: clientCa)
        config.host = host
        config.port = port
        config.staleIntervals = staleIntervals
        config.heartbeatSeconds = heartbeatSeconds
        config.staleSweepSeconds = staleSweepSeconds
        config.maxConnections = maxConnections
        config.idleTimeoutSeconds = idleTimeout
        config.retentionDays = retentionDays
        if let a = adminListen, let (h, p) = Self.parseAddress(a) {
            config.adminHost = h
            config.adminPort = p
        }
        do {
            if let adminTokenFile {
                let token = try String(contentsOfFile: adminTokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
                guard token.count >= 16 else { throw CollectorError("--admin-token-file \(adminTokenFile): the token is shorter than 16 characters") }
                config.adminTokenSHA256 = PolicySigning.sha256Hex(Data(token.utf8))
            }
            if let operatorsFile { config.operators = try OperatorAccounts.load(path: operatorsFile) }
            if let policyPublicKey {
                let text = try String(contentsOfFile: policyPublicKey, encoding: .utf8)
                config.policyPublicKey = try PolicySigningKey(base64: text)
            }
            if let enrollCaCert, let enrollCaKey {
                config.enrollment = EnrollmentAuthority(ca: try PKI.load(certificatePath: enrollCaCert, keyPath: enrollCaKey), validDays: enrollValidDays)
            }
            _ = try config.tlsConfiguration()
        } catch {
            FileHandle.standardError.write(Data("segguard-collector: \(error)\n".utf8))
            throw ExitCode(2)
        }

        let backend = try await openStore(store)
        let collector = Collector(store: backend, configuration: config, logger: logger)
        let notifier = ServiceNotifier()
        let storeName = store.hasPrefix("sqlite:") ? store : "postgres"
        let app = try collector.application { bound in
            logger.notice("collector listening", metadata: ["address": "\(host):\(bound)", "store": "\(storeName)",
                                                            "max_connections": "\(collector.maxConnections)", "idle_timeout_s": "\(idleTimeout)"])
            notifier.ready(status: "listening on \(host):\(bound), store \(storeName)")
        }
        if config.adminPort != nil {
            let adminHost = config.adminHost ?? "", operatorCount = config.operators?.accounts.count ?? 0
            let adminApp = try collector.adminApplication { bound in
                logger.notice("management listener", metadata: ["address": "\(adminHost):\(bound)", "operators": "\(operatorCount)"])
            }
            let group = ServiceGroup(configuration: .init(services: [.init(service: app), .init(service: adminApp)],
                                                          gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await group.run()
        } else {
            try await app.runService(gracefulShutdownSignals: [.sigterm, .sigint])
        }
        notifier.stopping()
        try? await backend.close()
    }
}

