// The collector's HTTP API on Hummingbird, over TLS. Agents authenticate with their device
// certificate (mutual TLS): the collector takes the agent id and group from the verified
// certificate, never from the body. Admin calls need the admin bearer token. The dashboard
// and /metrics are read-only pages.
//
//   POST /api/v1/heartbeat          agent    the agent's state (204)
//   POST /api/v1/events             agent    a batch of spooled events (200, BatchAck)
//   GET  /api/v1/policy             agent    the signed bundle of the agent's group (ETag, 304, 404)
//   PUT  /api/v1/admin/policy/:group admin   push a signed bundle (201; 409 when not newer)
//   GET  /api/v1/admin/agents       admin    agents (JSON; ?group= &state=)
//   GET  /api/v1/admin/events       admin    latest events (JSON; ?group= &agent= &limit=)
//   GET  /api/v1/admin/export/events admin   evidence export of a time range, CSV or JSON, streamed
//   GET  /                          -        dashboard (?group= &state=)
//   GET  /metrics                   -        Prometheus text format
//   GET  /healthz                   -        store reachable
//   POST /api/v1/noop               -        204 doing nothing: the benchmark's floor
//   (enrollment, renewal, the CRL, tokens and device groups: Enrollment.swift)

import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOHTTPTypes
import NIOSSL
import SegguardPKI
import SegguardPolicy
import SegguardReport
import ServiceLifecycle
import Synchronization

/// The request context: the channel, to read the client certificate of the TLS connection.
public struct CollectorContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// Everything the collector needs to serve.
public struct CollectorConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 8443
    /// PEM files: the collector's certificate and key, the CA that issued device certificates.
    public var certificatePath: String
    public var keyPath: String
    public var clientCAPath: String
    /// SHA-256 (hex) of the admin bearer token; nil: admin calls are refused.
    public var adminTokenSHA256: String?
    /// When set, pushed bundles must verify against this key (agents verify again).
    public var policyPublicKey: PolicySigningKey?
    /// Agents silent for this many of their intervals are stale.
    public var staleIntervals = 3
    /// How often the stale sweep runs.
    public var staleSweepSeconds = 5.0
    /// The heartbeat interval (s) agents of a group without a bundle are held to (the
    /// policy's default). With a bundle, its policy's `report.heartbeat_seconds`. An agent
    /// claiming a longer interval is held to this one for stale detection (a forged
    /// heartbeat cannot hide a stopped agent for days), and the mismatch is an event.
    public var heartbeatSeconds = 30
    public var maxBodyBytes = 1 << 20
    /// Open connections at most; beyond it new ones wait in the listen backlog (then the
    /// agents' connect timeout and backoff) instead of running the process out of file
    /// descriptors. nil: the open-files limit less a reserve (`defaultMaxConnections`).
    public var maxConnections: Int?
    /// A kept-alive connection idle this long is closed (longer than the heartbeat interval,
    /// so an agent reuses its connection between heartbeats).
    public var idleTimeoutSeconds = 90.0
    /// Pending connections the kernel queues while the cap is reached (also capped by
    /// net.core.somaxconn).
    public var listenBacklog = 4096
    /// Events received more than this many days ago are deleted (hourly); nil keeps them all.
    public var retentionDays: Int?
    /// Named operators (`--operators-file`): when set, the dashboard, /metrics, the admin API
    /// and the export need an operator's password (HTTP Basic) or the admin token.
    public var operators: OperatorAccounts?
    /// The management listener (`--admin-listen`): when set, the dashboard, /metrics, the admin
    /// API and the export are served there only; the agents' listener answers them 404.
    public var adminHost: String?
    public var adminPort: Int?
    /// The device CA enrollments are signed with (`--enroll-ca-cert`, `--enroll-ca-key`); nil:
    /// the EST paths and the CRL answer 404.
    public var enrollment: EnrollmentAuthority?

    public init(certificatePath: String, keyPath: String, clientCAPath: String) {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        self.clientCAPath = clientCAPath
    }

    /// Server TLS: our certificate; client certificates verified against the device CA when
    /// presented (the dashboard is reachable without one; agent calls require one).
    public func tlsConfiguration() throws -> TLSConfiguration {
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        let roots: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(certificatePath) } catch { throw CollectorError("--cert \(certificatePath): \(error)") }
        do { key = try NIOSSLPrivateKey(file: keyPath, format: .pem) } catch { throw CollectorError("--key \(keyPath): \(error)") }
        do { roots = try NIOSSLCertificate.fromPEMFile(clientCAPath) } catch { throw CollectorError("--client-ca \(clientCAPath): \(error)") }
        guard !chain.isEmpty else { throw CollectorError("--cert \(certificatePath): no certificate in the file") }
        guard !roots.isEmpty else { throw CollectorError("--client-ca \(clientCAPath): no certificate in the file") }
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        tls.trustRoots = .certificates(roots)
        tls.certificateVerification = .optionalVerification
        tls.minimumTLSVersion = .tlsv12
        // A closing connection (idle timeout, graceful stop) waits at most this long for the
        // peer's close_notify before its descriptor goes (NIOSSL's default is 5 s): nothing
        // is owed to the peer by then, every answer has been written.
        tls.shutdownTimeout = .seconds(1)
        return tls
    }
}

/// A configuration or start-up problem, said in one line.
public struct CollectorError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// The collector: routes, identity, group commit, metrics, stale sweep.
public final class Collector: Sendable {
    public let store: any CollectorStore
    public let configuration: CollectorConfiguration
    public let batcher: HeartbeatBatcher
    public let metrics: CollectorMetrics
    let logger: Logger
    /// Verified certificate DER -> identity (parsing X.509 once per device, not per request).
    let identities = Mutex<[[UInt8]: AgentIdentity]>([:])
    /// The identity of each open TLS connection, read once on its event loop.
    let connections = ConnectionIdentities()
    /// Revoked device certificates by serial (loaded before the first agent call is answered,
    /// refreshed with every stale sweep: another replica may have revoked one).
    let revoked = Mutex<[String: Revocation]?>(nil)
    /// Each group's heartbeat interval from its bundle's policy (nil: no bundle), and when it
    /// was read (re-read after a minute: another replica may have taken a push).
    let groupIntervals = Mutex<[String: (seconds: Int?, read: Date)]>([:])
    /// The last interval mismatch recorded per agent (claimed, expected): one event per
    /// change, one entry per agent (agents are the device certificates the CA issued).
    let intervalMismatches = Mutex<[AgentIdentity: [Int]]>([:])
    /// The device table by agent id: each device's group and current certificate (loaded
    /// before the first agent call, refreshed with every stale sweep, updated at once by this
    /// replica's own changes; a certificate it does not name is looked up again first).
    let deviceRows = Mutex<[String: DeviceRecord]?>(nil)
    /// The CRL last signed, and when (signed again after a minute).
    let crlCache = Mutex<(made: Date, der: [UInt8], serials: Set<String>)?>(nil)

    public init(store: any CollectorStore, configuration: CollectorConfiguration, logger: Logger) {
        self.store = store
        self.configuration = configuration
        self.logger = logger
        batcher = HeartbeatBatcher(store: store)
        metrics = CollectorMetrics()
    }

    /// The connection cap when none is configured: the soft open-files limit less 128 for the
    /// store, the listener and logging (the unit sets LimitNOFILE=65536).
    public static func defaultMaxConnections() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max else { return 60_000 }
        return max(16, Int(min(limit.rlim_cur, 1 << 20)) - 128)
    }

    /// The connection cap in force.
    public var maxConnections: Int { configuration.maxConnections ?? Self.defaultMaxConnections() }

    /// Which routes a listener serves.
    enum Routes { case agents, operators, all }

    /// Whether the operators' routes have a listener of their own.
    var separateAdminListener: Bool { configuration.adminPort != nil }

    /// The agents' listener (TLS; with every route unless `--admin-listen` is set), with the
    /// periodic jobs. `onRunning` gets the bound port (tests use port 0). `middleware` wraps
    /// every route, outermost first (tests put fault injection there).
    public func application(middleware: [any MiddlewareProtocol<Request, Response, CollectorContext>] = [],
                            onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) throws -> some ApplicationProtocol {
        let app = Application(
            router: router(middleware: middleware, routes: separateAdminListener ? .agents : .all),
            server: try .tls(.http1(configuration: .init(additionalChannelHandlers: [ClientIdentityHandler(collector: self)],
                                                         idleTimeout: .milliseconds(Int64(configuration.idleTimeoutSeconds * 1000)))),
                             tlsConfiguration: configuration.tlsConfiguration()),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "segguard-collector",
                                 backlog: configuration.listenBacklog,
                                 availableConnectionsDelegate: MaximumAvailableConnections(maxConnections, logger: logger)),
            services: ([StaleSweeper(collector: self), MemoryReturner(collector: self)] as [any Service])
                + (configuration.retentionDays.map { [RetentionPruner(collector: self, days: $0)] as [any Service] } ?? []),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: logger)
        return app
    }

    /// The management listener (`--admin-listen`): the dashboard, /metrics, the admin API and
    /// the export, over TLS with the collector's certificate; no client certificate asked.
    public func adminApplication(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) throws -> some ApplicationProtocol {
        guard let port = configuration.adminPort else { throw CollectorError("no --admin-listen configured") }
        var tls = try configuration.tlsConfiguration()
        tls.certificateVerification = .none
        return Application(
            router: router(routes: .operators),
            server: try .tls(.http1(configuration: .init(idleTimeout: .seconds(60))), tlsConfiguration: tls),
            configuration: .init(address: .hostname(configuration.adminHost ?? "127.0.0.1", port: port), serverName: "segguard-collector"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: logger)
    }

    func router(middleware: [any MiddlewareProtocol<Request, Response, CollectorContext>] = [], routes: Routes = .all) -> Router<CollectorContext> {
        let router = Router(context: CollectorContext.self)
        // Middleware applies to the routes added after it; the first added is the outermost.
        for m in middleware { router.add(middleware: m) }
        router.add(middleware: WireRevisionMiddleware())
        router.get("/healthz") { _, _ in
            await self.guarded {
                _ = try await self.store.counts()
                return Response(status: .ok, headers: [.contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(string: "ok\n")))
            }
        }
        if routes != .operators {
            router.post("/api/v1/heartbeat") { request, context in await self.guarded { try await self.heartbeat(request, context) } }
            router.post("/api/v1/events") { request, context in await self.guarded { try await self.events(request, context) } }
            router.get("/api/v1/policy") { request, context in await self.guarded { try await self.policy(request, context) } }
            router.post("/api/v1/noop") { _, _ in Response(status: .noContent) }
            router.get("/.well-known/est/cacerts") { _, _ in await self.guarded { try self.cacerts() } }
            router.post("/.well-known/est/simpleenroll") { request, _ in await self.guarded { try await self.simpleEnroll(request) } }
            router.post("/.well-known/est/simplereenroll") { request, context in await self.guarded { try await self.simpleReenroll(request, context) } }
            router.get("/pki/devices.crl") { _, _ in await self.guarded { try await self.crl() } }
        }
        if routes == .agents {
            // Operators' pages live on the management listener: say where, show nothing.
            for path in ["/", "/metrics", "/agents/:id", "/actions", "/api/v1/admin/agents", "/api/v1/admin/events", "/api/v1/admin/actions",
                         "/api/v1/admin/export/events", "/api/v1/admin/revocations", "/api/v1/admin/devices"] {
                router.get(RouterPath(stringLiteral: path)) { _, _ in
                    (try? Self.json(.notFound, ErrorReply(error: "served on the collector's management listener (--admin-listen), not here"))) ?? Response(status: .notFound)
                }
            }
            router.put("/api/v1/admin/policy/:group") { _, _ in
                (try? Self.json(.notFound, ErrorReply(error: "served on the collector's management listener (--admin-listen), not here"))) ?? Response(status: .notFound)
            }
            for path in ["/api/v1/admin/revoke", "/api/v1/admin/enrollment-tokens"] {
                router.post(RouterPath(stringLiteral: path)) { _, _ in
                    (try? Self.json(.notFound, ErrorReply(error: "served on the collector's management listener (--admin-listen), not here"))) ?? Response(status: .notFound)
                }
            }
            router.put("/api/v1/admin/devices/:id/group") { _, _ in
                (try? Self.json(.notFound, ErrorReply(error: "served on the collector's management listener (--admin-listen), not here"))) ?? Response(status: .notFound)
            }
            return router
        }
        router.put("/api/v1/admin/policy/:group") { request, context in await self.guarded { try await self.pushPolicy(request, context) } }
        router.get("/api/v1/admin/agents") { request, _ in
            await self.guarded {
                try self.requireAdmin(request)
                let q = request.uri.queryParameters
                return try Self.json(.ok, try await self.store.agents(AgentFilter(group: q.get("group"), state: q.get("state"))))
            }
        }
        router.get("/api/v1/admin/events") { request, _ in
            await self.guarded {
                try self.requireAdmin(request)
                let q = request.uri.queryParameters
                let limit = min(max(Int(q.get("limit") ?? "100") ?? 100, 1), 10_000)
                return try Self.json(.ok, try await self.store.events(EventFilter(agentID: q.get("agent"), group: q.get("group"), limit: limit)))
            }
        }
        router.post("/api/v1/admin/revoke") { request, _ in await self.guarded { try await self.revoke(request) } }
        router.post("/api/v1/admin/enrollment-tokens") { request, _ in await self.guarded { try await self.createTokens(request) } }
        router.get("/api/v1/admin/devices") { request, _ in
            await self.guarded {
                try self.requireAdmin(request)
                return try Self.json(.ok, try await self.store.devices())
            }
        }
        router.put("/api/v1/admin/devices/:id/group") { request, context in await self.guarded { try await self.setDeviceGroup(request, context) } }
        router.get("/api/v1/admin/revocations") { request, _ in
            await self.guarded {
                try self.requireAdmin(request)
                return try Self.json(.ok, try await self.store.revocations())
            }
        }
        router.get("/api/v1/admin/actions") { request, _ in
            await self.guarded {
                try self.requireAdmin(request)
                let q = request.uri.queryParameters
                let limit = min(max(Int(q.get("limit") ?? "100") ?? 100, 1), 10_000)
                return try Self.json(.ok, try await self.store.actions(limit: limit))
            }
        }
        router.get("/api/v1/admin/export/events") { request, _ in await self.guarded { try await self.exportEvents(request) } }
        router.get("/") { request, _ in
            await self.guarded {
                try self.requireViewer(request)
                return try await self.dashboard(request)
            }
        }
        router.get("/metrics") { request, _ in
            await self.guarded {
                try self.requireViewer(request)
                return try await self.metricsPage()
            }
        }
        router.get("/agents/:id") { request, context in await self.guarded { try await self.agentPage(request, context) } }
        router.get("/actions") { request, _ in
            await self.guarded {
                try self.requireViewer(request)
                let html = Dashboard.renderActions(try await self.store.actions(limit: 500), now: Date(), language: Self.language(request))
                return Self.html(html)
            }
        }
        return router
    }

    // MARK: Agent calls

    func heartbeat(_ request: Request, _ context: CollectorContext) async throws -> Response {
        let agent = try await identity(context)
        var hb = try await decode(Heartbeat.self, request)
        try checkBodyID(hb.agentID, agent)
        do { try hb.validate() } catch { throw APIError(.unprocessableContent, "\(error)") }
        let expected = try await expectedInterval(group: agent.group)
        if hb.intervalSeconds > expected {
            try await intervalMismatch(agent, claimed: hb.intervalSeconds, expected: expected)
            hb.intervalSeconds = expected
        }
        let recovered = try await batcher.record(hb, from: agent)
        metrics.heartbeat(agent, recovered: recovered)
        return Response(status: .noContent)
    }

    /// The interval a group's agents must keep: its bundle's policy's, else the configured one.
    func expectedInterval(group: String) async throws -> Int {
        if let cached = groupIntervals.withLock({ $0[group] }), Date().timeIntervalSince(cached.read) < 60 {
            return cached.seconds ?? configuration.heartbeatSeconds
        }
        var seconds: Int?
        if let bundle = try await store.bundle(group: group), let payload = try? bundle.bundle.unverifiedPayload(),
           let policy = try? PolicyLoader.load(text: payload.policyYAML, file: "bundle v\(payload.version) of group '\(group)'") {
            seconds = policy.report.heartbeatSeconds
        }
        groupIntervals.withLock { $0[group] = (seconds, Date()) }
        return seconds ?? configuration.heartbeatSeconds
    }

    /// An agent claims a longer heartbeat interval than its group's: recorded as an event
    /// when the (claimed, expected) pair changes (the id `interval-…` is reserved: agents
    /// cannot take it first), counted every time.
    func intervalMismatch(_ agent: AgentIdentity, claimed: Int, expected: Int) async throws {
        metrics.intervalClamped()
        guard intervalMismatches.withLock({ $0[agent] }) != [claimed, expected] else { return }
        logger.warning("agent claims a longer heartbeat interval than its group's; held to the group's",
                       metadata: ["agent": "\(agent.agentID)", "group": "\(agent.group)", "claimed_s": "\(claimed)", "expected_s": "\(expected)"])
        let now = Date()
        let event = ReportedEvent(
            id: "interval-\(claimed)-\(expected)", seq: 0, time: now, kind: "heartbeat-interval-mismatch", severity: "warning",
            reason: "the agent claims a heartbeat interval of \(claimed) s; its group's policy sets \(expected) s: it is held to \(expected) s for stale detection",
            details: ["claimed_s": "\(claimed)", "expected_s": "\(expected)", "source": "collector"])
        try await recordOwnEvent(event, for: agent, at: now)
        intervalMismatches.withLock { $0[agent] = [claimed, expected] }  // after the write: a failed one is tried again
    }

    func events(_ request: Request, _ context: CollectorContext) async throws -> Response {
        let agent = try await identity(context)
        let batch = try await decode(EventBatch.self, request)
        try checkBodyID(batch.agentID, agent)
        do { try batch.validate() } catch { throw APIError(.unprocessableContent, "\(error)") }
        let result: InsertResult
        do {
            result = try await store.insertEvents(batch.events, from: agent, at: Date())
        } catch let conflict as EventIDConflict {
            try await idConflict(agent, conflict)
            throw APIError(.conflict, "\(conflict); nothing of this batch was stored")
        }
        metrics.events(agent, batch.events, inserted: result.inserted, duplicates: result.duplicates)
        return try Self.json(.ok, BatchAck(stored: batch.events.map(\.id), inserted: result.inserted, duplicates: result.duplicates))
    }

    /// The same id with other content: the stored event stands, the new one is refused (the
    /// agent keeps it), and the conflict is an event (id `conflict-…`, once per id).
    func idConflict(_ agent: AgentIdentity, _ conflict: EventIDConflict) async throws {
        metrics.idConflict()
        logger.warning("agent sent an event id again with other content", metadata: [
            "agent": "\(agent.agentID)", "group": "\(agent.group)", "event_id": "\(conflict.sent.id)", "conflict": "\(conflict)"])
        let now = Date()
        let event = ReportedEvent(
            id: "conflict-\(conflict.sent.id)", seq: 0, time: now, kind: "event-id-conflict", severity: "critical",
            reason: "\(conflict): the stored event stands, the new one was refused (409)",
            details: ["event_id": conflict.sent.id, "stored_kind": conflict.stored.kind, "sent_kind": conflict.sent.kind,
                      "stored_seq": "\(conflict.stored.seq)", "sent_seq": "\(conflict.sent.seq)", "source": "collector"])
        try await recordOwnEvent(event, for: agent, at: now)
    }

    /// An event the collector records about an agent (reserved id prefix): stored once, and
    /// counted in the agent's event metrics like its own, so alerts on its kind fire.
    func recordOwnEvent(_ event: ReportedEvent, for agent: AgentIdentity, at time: Date) async throws {
        let r = try await store.insertEvents([event], from: agent, at: time)
        if r.inserted > 0 { metrics.events(agent, [event], inserted: r.inserted, duplicates: 0) }
    }

    func policy(_ request: Request, _ context: CollectorContext) async throws -> Response {
        let agent = try await identity(context)
        guard let bundle = try await store.bundle(group: agent.group) else {
            throw APIError(.notFound, "no policy bundle has been pushed for group '\(agent.group)'")
        }
        if let tags = request.headers[.ifNoneMatch], tags.split(separator: ",").contains(where: { $0.trimmingCharacters(in: .whitespaces) == bundle.etag }) {
            return Response(status: .notModified, headers: [.eTag: bundle.etag])
        }
        var response = try Self.json(.ok, bundle.bundle)
        response.headers[.eTag] = bundle.etag
        return response
    }

    // MARK: Admin calls

    func pushPolicy(_ request: Request, _ context: CollectorContext) async throws -> Response {
        let who = try requireAdmin(request)
        let group = context.parameters.get("group") ?? ""
        do {
            do { try PKI.validateName(group, what: "group") } catch { throw APIError(.badRequest, "\(error)") }
            return try await storePush(request, group: group, by: who)
        } catch let error as APIError {
            // A signed-in operator's refused push is recorded too (who tried what, and why not).
            await record(AdminAction(time: Date(), by: who, action: "policy-push-refused", target: group,
                                     detail: "\(error.status.code): \(error.message)"))
            throw error
        }
    }

    /// Records an operator's action; the action itself has happened, so a store failure is
    /// logged (with everything the record held) rather than turned into an error answer.
    func record(_ action: AdminAction) async {
        do {
            try await store.recordAction(action)
        } catch {
            logger.error("operator action not recorded", metadata: ["by": "\(action.by)", "action": "\(action.action)", "target": "\(action.target)",
                                                                 "detail": "\(action.detail)", "error": "\(error)"])
        }
    }

    func storePush(_ request: Request, group: String, by who: String) async throws -> Response {
        let bundle = try await decode(SignedPolicyBundle.self, request)
        let payload: PolicyBundlePayload
        do {
            if let key = configuration.policyPublicKey {
                payload = try PolicySigning.verify(bundle, key: key, group: group)
            } else {
                payload = try bundle.unverifiedPayload()
            }
        } catch {
            metrics.bundleRefused()
            throw APIError(.unprocessableContent, "\(error)")
        }
        guard payload.group == group else {
            metrics.bundleRefused()
            throw APIError(.unprocessableContent, "the bundle is for group '\(payload.group)', pushed to '\(group)'")
        }
        if let end = payload.notAfter, payload.expired(at: Date()) {
            metrics.bundleRefused()
            throw APIError(.unprocessableContent, "the bundle expired at \(RFC3339.format(end)) (not_after): sign it again with a later --valid-days")
        }
        // The policy must load as agents will load it: a bundle they would refuse is not
        // stored (it would take the version number and reach every agent of the group).
        let policy: Policy
        do {
            policy = try PolicyLoader.load(text: payload.policyYAML, file: "bundle v\(payload.version) for group '\(group)'")
        } catch {
            metrics.bundleRefused()
            throw APIError(.unprocessableContent, "the bundle's policy does not load: \(error)")
        }
        let stored = StoredBundle(group: group, version: payload.version, policySHA256: payload.policySHA256, bundle: bundle,
                                  pushedAt: Date(), pushedBy: who)
        // The push and its record are one transaction: no stored bundle without its record.
        let action = AdminAction(time: stored.pushedAt, by: who, action: "policy-push", target: group,
                                 detail: "version \(payload.version), policy \(policy.name) sha256 \(payload.policySHA256)"
                                     + (payload.notAfter.map { ", valid until \(RFC3339.format($0))" } ?? ""))
        switch try await store.putBundle(stored, recording: action) {
        case .stored:
            groupIntervals.withLock { $0[group] = (policy.report.heartbeatSeconds, Date()) }
            logger.notice("policy bundle pushed", metadata: ["group": "\(group)", "version": "\(payload.version)", "sha256": "\(payload.policySHA256)",
                                                         "by": "\(who)"])
            var r = try Self.json(.created, ["group": group, "version": "\(payload.version)", "etag": stored.etag])
            r.headers[.eTag] = stored.etag
            return r
        case .notNewer(let current):
            metrics.bundleRefused()
            throw APIError(.conflict, "group '\(group)' already has version \(current); push a version above it")
        }
    }

    /// Who makes an admin call: an operator (HTTP Basic, with `--operators-file`) or the holder
    /// of the admin token (Bearer). Refused otherwise.
    @discardableResult
    func requireAdmin(_ request: Request) throws -> String {
        let header = request.headers[.authorization]
        if let operators = configuration.operators, let header, header.hasPrefix("Basic ") {
            switch operators.check(basic: header) {
            case .signedIn(let name): return name
            case .busy: throw APIError(.tooManyRequests, "another sign-in is being checked; try again in a second")
            case .refused:
                metrics.authFailure()
                throw APIError(.unauthorized, "wrong operator name or password")
            }
        }
        guard let expected = configuration.adminTokenSHA256 else {
            if configuration.operators != nil { throw APIError(.unauthorized, "sign in as an operator (HTTP Basic)") }
            throw APIError(.forbidden, "admin calls are disabled: start the collector with --admin-token-file or --operators-file")
        }
        guard let header, header.hasPrefix("Bearer ") else {
            throw APIError(.unauthorized, configuration.operators != nil ? "sign in as an operator (HTTP Basic) or send 'Authorization: Bearer <admin token>'"
                                                                      : "admin calls need 'Authorization: Bearer <token>'")
        }
        let got = Data(SHA256.hash(data: Data(header.dropFirst(7).utf8)))
        let want = Data(hexString: expected) ?? Data()
        // Compare every byte (no early exit on the first difference).
        guard got.count == want.count, zip(got, want).reduce(0, { $0 | ($1.0 ^ $1.1) }) == 0 else {
            metrics.authFailure()
            throw APIError(.unauthorized, "wrong admin token")
        }
        return "admin-token"
    }

    /// The dashboard and /metrics: open without `--operators-file` (then keep the port on the
    /// management network), an operator or the admin token with it.
    func requireViewer(_ request: Request) throws {
        guard configuration.operators != nil else { return }
        try requireAdmin(request)
    }

    // MARK: Pages

    func dashboard(_ request: Request) async throws -> Response {
        let q = request.uri.queryParameters
        let group = q.get("group").flatMap { $0.isEmpty ? nil : $0 }
        let state = q.get("state").flatMap { $0.isEmpty ? nil : $0 }
        if let state, !["authorized", "unauthorized", "stale"].contains(state) {
            throw APIError(.badRequest, "state: \"\(state)\" is not one of authorized, unauthorized, stale")
        }
        let search = q.get("q").flatMap { $0.isEmpty ? nil : String($0.prefix(128)) }
        let segment = q.get("segment").flatMap { $0.isEmpty ? nil : String($0.prefix(128)) }
        let pageText = q.get("page") ?? "1"
        guard let number = Int(pageText), number >= 1, number <= 1_000_000 else { throw APIError(.badRequest, "page: \"\(pageText)\" is not a page number") }
        let size = Self.dashboardPageSize
        let filter = AgentFilter(group: group, state: state, search: search, segment: segment, offset: (number - 1) * size, limit: size)
        let agents = try await store.agents(filter)
        let total = try await store.agentCount(filter)
        let allGroups = try await store.groups()
        let allSegments = try await store.segments()
        var events = try await store.events(EventFilter(group: group, limit: state == nil && segment == nil ? 50 : 500))
        if state != nil || segment != nil {
            // Only the events of the agents shown (the state filter applies to both tables).
            let shown = Set(agents.map(\.agentID))
            events = Array(events.filter { shown.contains($0.agentID) }.prefix(50))
        }
        let html = Dashboard.render(agents: agents, events: events, groups: allGroups, segments: allSegments,
                                    filters: Dashboard.Filters(group: group, state: state, segment: segment, search: search), now: Date(),
                                    staleIntervals: configuration.staleIntervals,
                                    page: Dashboard.Page(offset: filter.offset, size: size, total: total, search: search),
                                    language: Self.language(request))
        return Self.html(html)
    }

    static func language(_ request: Request) -> Dashboard.Language {
        Dashboard.Language.choose(query: request.uri.queryParameters.get("lang"), acceptLanguage: request.headers[.acceptLanguage])
    }

    static func html(_ text: String) -> Response {
        Response(status: .ok, headers: pageHeaders, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// Headers of every dashboard page: no script but the page's own, no framing, no sniffing,
    /// no referrer (agent ids in URLs stay on the collector).
    static let pageHeaders: HTTPFields = [
        .contentType: "text/html; charset=utf-8",
        HTTPField.Name("Content-Security-Policy")!: Dashboard.contentSecurityPolicy,
        HTTPField.Name("X-Content-Type-Options")!: "nosniff",
        HTTPField.Name("X-Frame-Options")!: "DENY",
        HTTPField.Name("Referrer-Policy")!: "no-referrer",
        .cacheControl: "no-store",
    ]

    /// Agents per dashboard page.
    static let dashboardPageSize = 100

    func agentPage(_ request: Request, _ context: CollectorContext) async throws -> Response {
        try requireViewer(request)
        guard let id = context.parameters.get("id") else { throw APIError(.badRequest, "no agent id in the path") }
        guard let record = try await store.agent(id: id) else { throw APIError(.notFound, "no agent \"\(id)\" has reported") }
        let events = try await store.events(EventFilter(agentID: id, limit: 200))
        let decisions = try await store.events(EventFilter(agentID: id, kind: "decision-changed", limit: 200))
        let revocation = record.certificateSerial.flatMap { serial in revoked.withLock { $0?[serial] } }
        return Self.html(Dashboard.renderAgent(record, decisions: decisions, events: events, now: Date(), language: Self.language(request),
                                               revocation: revocation))
    }

    func metricsPage() async throws -> Response {
        let text = metrics.render(counts: try await store.counts())
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    // MARK: Helpers

    /// The agent behind this TLS connection, from its verified client certificate: read once
    /// per connection by ClientIdentityHandler (no hop to the event loop per request), or
    /// asked of the TLS handler when the connection has no entry.
    func identity(_ context: CollectorContext) async throws -> AgentIdentity {
        let id: AgentIdentity
        if let known = connections.lookup(context.channel) {
            id = try known.get()
        } else {
            let cert: NIOSSLCertificate?
            do { cert = try await context.channel.nioSSL_peerCertificate().get() } catch { cert = nil }
            id = try identity(certificate: cert).get()
        }
        try await refuseRevoked(id)
        return try await resolveGroup(id)
    }

    /// A revoked certificate gets 403 with the revocation's reason, on every agent call (an
    /// open connection included). Until the list is loaded no agent call is answered.
    func refuseRevoked(_ id: AgentIdentity) async throws {
        if revoked.withLock({ $0 == nil }) { try await refreshRevocations() }
        guard let serial = id.certificateSerial, let r = revoked.withLock({ $0?[serial] }) else { return }
        metrics.revokedRefused()
        throw APIError(.forbidden, "the device certificate of \(id.agentID) (serial \(serial)) was revoked on \(RFC3339.format(r.time)) by \(r.by): "
                                   + "\(r.reason); enroll the device again for a new certificate")
    }

    /// Reads the revocations from the store (every replica's).
    func refreshRevocations() async throws {
        let all = try await store.revocations()
        revoked.withLock { $0 = Dictionary(all.map { ($0.serial, $0) }, uniquingKeysWith: { a, _ in a }) }
    }

    /// `POST /api/v1/admin/revoke` {"agent_id", "serial"?, "reason"}: without a serial, the
    /// certificate the agent's latest heartbeat came with.
    func revoke(_ request: Request) async throws -> Response {
        let who = try requireAdmin(request)
        let body = try await decode(RevokeRequest.self, request)
        guard !body.reason.trimmingCharacters(in: .whitespaces).isEmpty else { throw APIError(.badRequest, "reason: say why (stolen, lost, retired)") }
        // Without a serial: every certificate the collector knows the device by (its device
        // row's current and previous, the one its latest heartbeat came with).
        var serials: [String] = []
        if let given = body.serial {
            guard let serial = PKI.normalizedSerial(given) else { throw APIError(.badRequest, "serial: \"\(given)\" is not a certificate serial in hex") }
            serials = [serial]
        } else {
            let row = try await store.device(id: body.agentID)
            let agent = try await store.agent(id: body.agentID)
            guard row != nil || agent != nil else {
                throw APIError(.notFound, "no agent \"\(body.agentID)\" has enrolled or reported; give the certificate's serial")
            }
            for s in [row?.serial, row?.previousSerial, agent?.certificateSerial] {
                if let s, let n = PKI.normalizedSerial(s), !serials.contains(n) { serials.append(n) }
            }
            guard !serials.isEmpty else {
                throw APIError(.conflict, "the collector has not seen \(body.agentID)'s certificate since it keeps serials; give the serial")
            }
        }
        var records: [Revocation] = []
        var new = false
        for serial in serials {
            let r = Revocation(serial: serial, agentID: body.agentID, reason: body.reason, time: Date(), by: who)
            let action = AdminAction(time: r.time, by: who, action: "revoke", target: "agent \(body.agentID)", detail: "serial \(serial): \(r.reason)")
            if try await store.revoke(r, recording: action) { new = true }
            records.append(r)
        }
        try await refreshRevocations()
        logger.notice("device certificate revoked", metadata: ["agent": "\(body.agentID)", "serials": "\(serials)", "by": "\(who)", "new": "\(new)"])
        return try Self.json(new ? .created : .ok, RevokeReply(revocation: records[0], serials: serials))
    }

    /// The identity in a verified client certificate (X.509 parsed once per device).
    func identity(certificate cert: NIOSSLCertificate?) -> Result<AgentIdentity, APIError> {
        guard let cert else {
            return .failure(APIError(.unauthorized, "agent calls need a client certificate issued by the collector's device CA (mutual TLS)"))
        }
        let der: [UInt8]
        do { der = try cert.toDERBytes() } catch { return .failure(APIError(.forbidden, "client certificate: \(error)")) }
        if let known = identities.withLock({ $0[der] }) { return .success(known) }
        let id: AgentIdentity
        do {
            let read = try DeviceIdentity.withExpiry(certificateDER: der)
            id = AgentIdentity(agentID: read.identity.agentID, group: read.identity.group, certificateNotAfter: read.notValidAfter,
                               certificateSerial: read.serial)
        } catch {
            return .failure(APIError(.forbidden, "client certificate: \(error)"))
        }
        identities.withLock { cache in
            if cache.count > 100_000 { cache.removeAll() }
            cache[der] = id
        }
        return .success(id)
    }

    func checkBodyID(_ bodyID: String?, _ agent: AgentIdentity) throws {
        if let bodyID, bodyID != agent.agentID {
            metrics.identityMismatch()
            logger.warning("agent wrote another agent's id in the body", metadata: ["certificate": "\(agent.agentID)", "body": "\(bodyID)"])
            throw APIError(.forbidden, "agent_id \"\(bodyID)\" in the body is not the agent of the client certificate (\"\(agent.agentID)\")")
        }
    }

    func decode<T: StrictDecodable>(_ type: T.Type, _ request: Request) async throws -> T {
        if let ct = request.headers[.contentType], !ct.lowercased().hasPrefix("application/json") {
            throw APIError(.unsupportedMediaType, "Content-Type must be application/json, not \(ct)")
        }
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: configuration.maxBodyBytes)
        } catch is NIOTooManyBytesError {
            metrics.rejected()
            throw APIError(.contentTooLarge, "body larger than \(configuration.maxBodyBytes) bytes")
        }
        do {
            return try ReportCoding.decodeStrict(T.self, from: Data(buffer.readableBytesView))
        } catch {
            metrics.rejected()
            throw APIError(.badRequest, "\(error)")
        }
    }

    /// Turns every error into a JSON error reply; store failures are 503 (the agent retries).
    func guarded(_ body: () async throws -> Response) async -> Response {
        do {
            return try await body()
        } catch let e as APIError {
            var r = (try? Self.json(e.status, ErrorReply(error: e.message))) ?? Response(status: e.status)
            if e.status == .unauthorized && configuration.operators != nil {
                // A browser asks for the operator's name and password.
                r.headers[.wwwAuthenticate] = "Basic realm=\"segment-guard collector\", charset=\"UTF-8\""
            }
            return r
        } catch {
            logger.error("request failed", metadata: ["error": "\(String(reflecting: error))"])
            metrics.storeError()
            return (try? Self.json(.serviceUnavailable, ErrorReply(error: "store unavailable: \(error)"))) ?? Response(status: .serviceUnavailable)
        }
    }

    static func json<T: Encodable>(_ status: HTTPResponse.Status, _ value: T) throws -> Response {
        let data = try ReportCoding.encoder().encode(value)
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// The identity of each open connection, keyed by the channel object. An entry also holds
/// the channel weakly and is only used for that very channel, so an entry left behind can
/// never be taken for another connection's.
final class ConnectionIdentities: Sendable {
    struct Entry: Sendable {
        weak var channel: (any Channel)?
        let identity: Result<AgentIdentity, APIError>
    }
    let entries = Mutex<[ObjectIdentifier: Entry]>([:])
    /// Requests that found their connection's identity here (for tests and debugging).
    let hits = Mutex(0)

    func set(_ channel: any Channel, _ identity: Result<AgentIdentity, APIError>) {
        entries.withLock { $0[ObjectIdentifier(channel)] = Entry(channel: channel, identity: identity) }
    }

    func remove(_ channel: any Channel) {
        _ = entries.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    func lookup(_ channel: any Channel) -> Result<AgentIdentity, APIError>? {
        let found = entries.withLock { e -> Result<AgentIdentity, APIError>? in
            guard let entry = e[ObjectIdentifier(channel)], entry.channel === channel else { return nil }
            return entry.identity
        }
        if found != nil { hits.withLock { $0 += 1 } }
        return found
    }

    var count: Int { entries.withLock { $0.count } }
}

/// Sits after the HTTP decoder of every connection: at the first request (the TLS handshake
/// is complete by then) it reads the client certificate's identity once, on the event loop,
/// and forgets it when the connection closes.
final class ClientIdentityHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    let collector: Collector
    var resolved = false

    init(collector: Collector) { self.collector = collector }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if !resolved {
            resolved = true
            let cert = try? context.pipeline.syncOperations.handler(type: NIOSSLHandler.self).peerCertificate
            collector.connections.set(context.channel, collector.identity(certificate: cert))
        }
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        collector.connections.remove(context.channel)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        collector.connections.remove(context.channel)
    }
}

/// Announces the wire revision this collector reads (`Segguard-Wire`) on every answer, so an
/// agent sends a revision's optional fields only to a collector that reads them.
struct WireRevisionMiddleware<Context: RequestContext>: RouterMiddleware {
    static var field: HTTPField.Name { HTTPField.Name(ReportWire.header)! }
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response = try await next(request, context)
        response.headers[Self.field] = "\(ReportWire.version)"
        return response
    }
}

/// The body of `POST /api/v1/admin/revoke`.
struct RevokeRequest: StrictDecodable {
    var agentID: String
    var serial: String?
    var reason: String
    enum CodingKeys: String, CodingKey { case agentID = "agent_id", serial, reason }
    init(reading r: inout StrictJSONReader) throws(ReportDecodingError) {
        var agentID = "", serial: String?, reason = ""
        let seen = try r.object { (r: inout StrictJSONReader, key: String) throws(ReportDecodingError) in
            switch key {
            case "agent_id": agentID = try r.string()
            case "serial": serial = try r.optionalString()
            case "reason": reason = try r.string()
            default: throw r.unknown()
            }
        }
        try r.require(["agent_id", "reason"], in: seen)
        self.agentID = agentID
        self.serial = serial
        self.reason = reason
    }
}

/// The answer to a revocation: the first revocation's fields (`serial` its serial) and every
/// serial revoked (`serials`).
struct RevokeReply: Encodable {
    let revocation: Revocation
    let serials: [String]
    enum CodingKeys: String, CodingKey { case serial, agentID = "agent_id", reason, time, by, serials }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(revocation.serial, forKey: .serial)
        try c.encode(revocation.agentID, forKey: .agentID)
        try c.encode(revocation.reason, forKey: .reason)
        try c.encode(revocation.time, forKey: .time)
        try c.encode(revocation.by, forKey: .by)
        try c.encode(serials, forKey: .serials)
    }
}

/// An HTTP error with the message the client gets.
struct APIError: Error {
    let status: HTTPResponse.Status
    let message: String
    init(_ status: HTTPResponse.Status, _ message: String) {
        self.status = status
        self.message = message
    }
}

extension Data {
    init?(hexString: String) {
        var bytes: [UInt8] = []
        var chars = hexString.lowercased().makeIterator()
        while let a = chars.next() {
            guard let b = chars.next(), let hi = a.hexDigitValue, let lo = b.hexDigitValue else { return nil }
            bytes.append(UInt8(hi << 4 | lo))
        }
        self.init(bytes)
    }
}
