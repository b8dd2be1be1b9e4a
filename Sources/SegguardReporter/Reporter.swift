// The agent's reporter: heartbeats every report.heartbeat_seconds (± jitter), spooled events
// delivered in batches with exponential backoff and full jitter while the collector is away,
// and the group's signed policy bundle fetched (ETag) and handed to the daemon once verified.
// The collector is reached over mutual TLS with the device certificate.

import AsyncHTTPClient
import FoundationEssentials
import SegguardEssentials
import Glibc
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import SegguardPKI
import SegguardPolicy
import SegguardReport
import SegguardSystem
import Synchronization

/// Where the collector is and what to authenticate with (the host's, not policy).
public struct ReporterConfiguration: Sendable {
    /// https://HOST:PORT, or several separated by commas (replicas without a load balancer:
    /// the reporter moves to the next one when one cannot be reached).
    public var collectorURL: String
    /// The CA that issued the collector's server certificate.
    public var caPath: String
    /// This thin client's device certificate and key.
    public var certificatePath: String
    public var keyPath: String
    /// The admin's policy-signing public key (base64 Ed25519); nil: no bundles are fetched.
    public var policyPublicKeyPath: String?
    /// Where the applied bundle is kept (survives restarts; rollback protection).
    public var bundleStatePath: String
    /// How long one request may take before it counts as failed (and is retried).
    public var requestTimeoutSeconds: Double = 20
    /// The first wait before an event the collector refused (4xx) is offered again; it doubles
    /// at each refusal, up to six hours. Refused events are never discarded.
    public var heldRetrySeconds: Double = 300
    /// Renew the device certificate this long before it ends (EST simplereenroll with the
    /// current certificate); nil: never.
    public var renewBeforeSeconds: Double? = 30 * 86_400
    /// The first wait after a failed renewal before the next try (doubles up to a day).
    public var renewRetrySeconds: Double = 600

    public init(collectorURL: String, caPath: String, certificatePath: String, keyPath: String, policyPublicKeyPath: String?, bundleStatePath: String) {
        self.collectorURL = collectorURL
        self.caPath = caPath
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        self.policyPublicKeyPath = policyPublicKeyPath
        self.bundleStatePath = bundleStatePath
    }
}

/// The bundle in force, as kept on disk.
public struct AppliedBundle: Codable, Sendable, Equatable {
    public var group: String
    public var version: Int64
    public var policySHA256: String
    public var etag: String?
    public var bundle: SignedPolicyBundle
    /// The highest version applied of each group this device was in before (the collector
    /// may move a device between groups: going back to a group never goes back to an older
    /// bundle of it).
    public var earlierGroups: [String: Int64]?
    enum CodingKeys: String, CodingKey { case group, version, policySHA256 = "policy_sha256", etag, bundle, earlierGroups = "earlier_groups" }

    /// The version a new bundle of `group` must exceed (the group in force) or reach (a group
    /// the device was in before: going back to the version it had there is no rollback).
    public func floor(for group: String) -> Int64 {
        group == self.group ? version : (earlierGroups?[group] ?? 0)
    }

    /// What the next saved bundle remembers of the groups before it.
    func remembering() -> [String: Int64] {
        var all = earlierGroups ?? [:]
        all[group] = max(all[group] ?? 0, version)
        return all
    }

    public init(group: String, version: Int64, policySHA256: String, etag: String?, bundle: SignedPolicyBundle) {
        self.group = group
        self.version = version
        self.policySHA256 = policySHA256
        self.etag = etag
        self.bundle = bundle
    }

    /// Reads and re-verifies the saved bundle; nil when there is none.
    public static func load(path: String, key: PolicySigningKey, group: String? = nil) throws -> (AppliedBundle, PolicyBundlePayload)? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let saved = try ReportCoding.decoder().decode(AppliedBundle.self, from: data)
        let payload = try PolicySigning.verify(saved.bundle, key: key, group: group)
        return (saved, payload)
    }

    func save(path: String) throws {
        let data = try ReportCoding.encoder().encode(self)
        try AtomicFile.write(data, to: path, mode: 0o600)
    }
}

/// A status code the collector answered with, and its message.
struct CollectorHTTPError: Error, CustomStringConvertible {
    let status: Int
    let message: String
    /// Whether the answer carried a `Segguard-Wire` header (a collector of revision 2 or later).
    var announcedWire = false
    var description: String { "collector answered \(status): \(message)" }
    /// A refusal that an immediate retry cannot fix (the request itself is wrong): the event
    /// is held and retried after a long backoff (the collector may be upgraded meanwhile).
    var isPermanent: Bool { (400..<500).contains(status) && ![401, 403, 408, 425, 429].contains(status) }
}

/// Wakes one waiting task; a signal while nobody waits is kept for the next wait.
final class WakeSignal: Sendable {
    private let state = Mutex<(pending: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))

    func signal() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if let w = s.waiter {
                s.waiter = nil
                return w
            }
            s.pending = true
            return nil
        }
        waiter?.resume()
    }

    /// Returns on a signal or after `seconds`.
    func wait(seconds: Double) async {
        let timer = Task {
            try? await Task.sleep(for: .milliseconds(Int64(seconds * 1000)))
            if !Task.isCancelled { self.signal() }
        }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.pending {
                    s.pending = false
                    return true
                }
                s.waiter = c
                return false
            }
            if now { c.resume() }
        }
        timer.cancel()
    }
}

/// Reports this agent to the collector.
public final class Reporter: Sendable {
    /// The heartbeat as the agent sees things now.
    public typealias HeartbeatSource = @Sendable () async -> Heartbeat
    /// Validates and applies a verified bundle's policy; throws (with the reason) to refuse it.
    public typealias BundleApplier = @Sendable (PolicyBundlePayload) async throws -> Void

    public let configuration: ReporterConfiguration
    public let spool: Spool
    public let identity: DeviceIdentity
    /// The HTTP client, made again with the new certificate after a renewal.
    let clientBox: Mutex<HTTPClient>
    var client: HTTPClient { clientBox.withLock { $0 } }
    /// The collector URLs, and which one is in use.
    let collectorURLs: [String]
    let urlIndex = Mutex(0)
    /// The collector in use now.
    public var collectorURL: String { collectorURLs[urlIndex.withLock { $0 } % collectorURLs.count] }
    /// The device certificate's end, and when a renewal may be tried next.
    let renewal: Mutex<(notAfter: Date, nextTry: Date, wait: Double)>
    let renewedHook = Mutex<(@Sendable () -> Void)?>(nil)
    let logger: Logger
    let heartbeatSource: HeartbeatSource
    let applyBundle: BundleApplier
    let policyKey: PolicySigningKey?
    let rule: Mutex<ReportRule>
    let incoming: AsyncStream<PendingEvent>.Continuation
    let incomingStream: AsyncStream<PendingEvent>
    let deliveryWake = WakeSignal()
    let heartbeatWake = WakeSignal()
    let tasks = Mutex<[Task<Void, Never>]>([])
    let applied: Mutex<AppliedBundle?>
    /// The ETag of a bundle refused already (reported once, not at every heartbeat).
    let refusedETag = Mutex<String?>(nil)
    /// The version of the bundle in force whose expiry was reported (once per bundle).
    let expiryReported = Mutex<Int64?>(nil)
    let counters = Mutex<ReporterStatistics>(ReporterStatistics())
    /// The wire revision the collector announced in its last answer (1 until it announces one).
    let collectorWire = Mutex(1)
    /// Events queued and events written (or failed) by the writer: a heartbeat waits until
    /// what was queued before it is in the spool, so the collector never learns of a decision
    /// before its event is on disk.
    let written = Mutex<(queued: Int, done: Int, waiters: [(Int, CheckedContinuation<Void, Never>)])>((0, 0, []))

    struct PendingEvent: Sendable {
        var kind: String
        var severity: String
        var reason: String
        var details: [String: String]
        var time: Date
        var afterCommit: (@Sendable (String?) -> Void)?
    }

    public init(configuration: ReporterConfiguration, spool: Spool, rule: ReportRule, logger: Logger, applied: AppliedBundle?,
                heartbeat: @escaping HeartbeatSource, applyBundle: @escaping BundleApplier) throws {
        self.configuration = configuration
        self.spool = spool
        self.logger = logger
        self.heartbeatSource = heartbeat
        self.applyBundle = applyBundle
        self.rule = Mutex(rule)
        self.applied = Mutex(applied)
        let issued: IssuedCertificate
        do {
            try PKI.finishReplace(certificatePath: configuration.certificatePath, keyPath: configuration.keyPath)
            issued = try PKI.load(certificatePath: configuration.certificatePath, keyPath: configuration.keyPath)
            identity = try DeviceIdentity(certificatePEM: issued.certificatePEM)
        } catch {
            throw SpoolError("device certificate: \(error)")
        }
        if let p = configuration.policyPublicKeyPath {
            do {
                policyKey = try PolicySigningKey(base64: try String(contentsOfFile: p, encoding: .utf8))
            } catch {
                throw SpoolError("--policy-public-key \(p): \(error)")
            }
        } else {
            policyKey = nil
        }
        collectorURLs = configuration.collectorURL.split(separator: ",").map { String($0).trimmed() }.filter { !$0.isEmpty }
        guard !collectorURLs.isEmpty else { throw SpoolError("--collector: no URL given") }
        clientBox = Mutex(try Self.makeClient(configuration))
        renewal = Mutex((issued.certificate.notValidAfter, .distantPast, configuration.renewRetrySeconds))
        (incomingStream, incoming) = AsyncStream.makeStream(of: PendingEvent.self, bufferingPolicy: .unbounded)
    }

    /// An HTTP client presenting the device certificate in the configured files.
    static func makeClient(_ configuration: ReporterConfiguration) throws -> HTTPClient {
        var tls = TLSConfiguration.makeClientConfiguration()
        do {
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(configuration.caPath))
            tls.certificateChain = try NIOSSLCertificate.fromPEMFile(configuration.certificatePath).map { .certificate($0) }
            tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: configuration.keyPath, format: .pem))
        } catch {
            throw SpoolError("TLS files (--collector-ca \(configuration.caPath), --client-cert, --client-key): \(error)")
        }
        tls.certificateVerification = .fullVerification
        tls.minimumTLSVersion = .tlsv12
        let timeout = TimeAmount.milliseconds(Int64(configuration.requestTimeoutSeconds * 1000))
        var http = HTTPClient.Configuration(tlsConfiguration: tls, timeout: .init(connect: .seconds(5), read: timeout))
        http.httpVersion = .http1Only
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: http)
    }

    /// What the reporter did (status output, tests).
    public var statistics: ReporterStatistics { counters.withLock { $0 } }
    public var appliedBundle: AppliedBundle? { applied.withLock { $0 } }

    /// Records an event: queued at once (never blocks the caller), written to the spool in
    /// order, then delivered. `afterCommit` runs once the event is on disk (with its id,
    /// nil when the spool refused or failed it): the agent logs there, so nothing is logged
    /// that a kill could keep out of the spool.
    public func record(kind: String, severity: String, reason: String, details: [String: String] = [:], time: Date = Date(),
                       afterCommit: (@Sendable (String?) -> Void)? = nil) {
        // Counted and queued under one lock: a heartbeat waiting for "everything queued before
        // me" is never released by a later event while an earlier one is still unwritten.
        let result = written.withLock { w in
            w.queued += 1
            return incoming.yield(PendingEvent(kind: kind, severity: severity, reason: reason, details: details, time: time, afterCommit: afterCommit))
        }
        if case .terminated = result {
            // Stopped: the event cannot be spooled any more (logged by the caller as not spooled).
            afterCommit?(nil)
            wrote()
        }
    }

    /// Returns once every event queued before the call is written (or failed).
    func flushed() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = written.withLock { w -> Bool in
                if w.done >= w.queued { return true }
                w.waiters.append((w.queued, c))
                return false
            }
            if now { c.resume() }
        }
    }

    func wrote() {
        let ready = written.withLock { w -> [CheckedContinuation<Void, Never>] in
            w.done += 1
            let due = w.waiters.filter { $0.0 <= w.done }.map(\.1)
            w.waiters.removeAll { $0.0 <= w.done }
            return due
        }
        for c in ready { c.resume() }
    }

    /// New reporting rule (policy reload).
    public func update(rule new: ReportRule) {
        let changed = rule.withLock { r -> Bool in
            defer { r = new }
            return r != new
        }
        if changed {
            Task { await spool.configure(maxEvents: new.spoolMaxEvents, overflow: new.overflow) }
            heartbeatWake.signal()
        }
    }

    /// Sends a heartbeat soon (decision changed).
    public func heartbeatNow() { heartbeatWake.signal() }

    public func start() {
        let r = rule.withLock { $0 }
        let writer = Task { await self.writeLoop() }
        let delivery = Task { await self.deliveryLoop() }
        let beat = Task { await self.heartbeatLoop() }
        tasks.withLock { $0 = [writer, delivery, beat] }
        Task { await spool.configure(maxEvents: r.spoolMaxEvents, overflow: r.overflow) }
    }

    /// Stops the loops after the queued events are in the spool (clean shutdown).
    public func stop() async {
        incoming.finish()
        let all = tasks.withLock { $0 }
        if let writer = all.first { await writer.value }
        for t in all.dropFirst() { t.cancel() }
        // The loops may be waiting on a wake signal (which does not see cancellation).
        deliveryWake.signal()
        heartbeatWake.signal()
        for t in all.dropFirst() { await t.value }
        try? await spool.markStopped()
        try? await spool.close()
        try? await client.shutdown()
    }

    // MARK: Loops

    func writeLoop() async {
        for await e in incomingStream {
            var event: ReportedEvent?
            do {
                event = try await spool.append(kind: e.kind, severity: e.severity, reason: e.reason, details: e.details, time: e.time)
                if event == nil {
                    logger.warning("event spool full: new event dropped (report.overflow: drop-newest)", metadata: ["kind": "\(e.kind)"])
                }
            } catch {
                logger.critical("event not spooled", metadata: ["kind": "\(e.kind)", "error": "\(error)"])
            }
            e.afterCommit?(event?.id)
            wrote()
            deliveryWake.signal()
        }
        // Finished: release any heartbeat still waiting.
        let left = written.withLock { w -> [CheckedContinuation<Void, Never>] in
            w.done = max(w.done, w.queued)
            defer { w.waiters = [] }
            return w.waiters.map(\.1)
        }
        for c in left { c.resume() }
    }

    func deliveryLoop() async {
        var backoff = 1.0
        while !Task.isCancelled {
            let r = rule.withLock { $0 }
            do {
                let drops = await spool.takeUnreportedDrops()
                if drops > 0 {
                    record(kind: "spool-overflow", severity: "warning",
                           reason: "\(drops) event(s) dropped: the spool was full (\(r.spoolMaxEvents) events, report.overflow: \(r.overflow.rawValue))",
                           details: ["dropped": "\(drops)"])
                }
                let batch = try await spool.pending(limit: r.batchSize)
                if batch.isEmpty {
                    // Nothing due: sleep until woken, or until the next held event is due.
                    let due = try await spool.nextRetry().map { max(0.05, $0.timeIntervalSinceNow) } ?? 30
                    await deliveryWake.wait(seconds: min(30, due))
                    continue
                }
                try await deliver(batch)
                backoff = 1
            } catch {
                let delay = Double.random(in: 0...min(Double(r.maxBackoffSeconds), backoff))
                counters.withLock {
                    $0.deliveryFailures += 1
                    $0.lastError = "events: \(error)"
                }
                logger.info("event delivery failed; retrying", metadata: ["error": "\(error)", "retry_in_s": "\(format("%.1f", delay))"])
                backoff = min(backoff * 2, Double(r.maxBackoffSeconds))
                try? await Task.sleep(for: .milliseconds(Int64(delay * 1000)))
            }
        }
    }

    /// Sends a batch; a batch the collector refuses (4xx) is split down to the event it
    /// refuses, which is held on disk and offered again after a backoff (reported in every
    /// heartbeat as `spool.held`); never discarded.
    func deliver(_ batch: [ReportedEvent]) async throws {
        do {
            let wire = collectorWire.withLock { $0 }
            let (_, body) = try await send("POST", "/api/v1/events", body: try ReportCoding.encoder().encode(EventBatch(events: batch).forWire(wire)))
            let ack = try ReportCoding.decoder().decode(BatchAck.self, from: body)
            try await spool.remove(ids: ack.stored)
            counters.withLock {
                $0.eventsDelivered += ack.inserted
                $0.duplicatesAcknowledged += ack.duplicates
            }
        } catch let e as CollectorHTTPError where e.isPermanent {
            if batch.count == 1 && e.status == 409 {
                // The collector has another event under this id (it recorded the conflict):
                // this one can never be stored under it, so it gets a new id and goes again.
                let new = try await spool.reissue(id: batch[0].id)
                counters.withLock { $0.eventsReissued += 1 }
                logger.error("collector holds another event under this id; sent again under a new id", metadata: [
                    "id": "\(batch[0].id)", "new_id": "\(new ?? "?")", "kind": "\(batch[0].kind)"])
                return
            }
            if batch.count == 1 {
                let due = try await spool.hold(id: batch[0].id, error: "\(e)", baseSeconds: configuration.heldRetrySeconds)
                counters.withLock { $0.eventsHeld += 1 }
                logger.error("collector refuses an event; kept in the spool and offered again later", metadata: [
                    "id": "\(batch[0].id)", "kind": "\(batch[0].kind)", "error": "\(e)", "retry_at": "\(RFC3339.format(due))"])
                return
            }
            let half = batch.count / 2
            try await deliver(Array(batch[..<half]))
            try await deliver(Array(batch[half...]))
        }
    }

    func heartbeatLoop() async {
        if let known = try? await spool.collectorWire() { collectorWire.withLock { $0 = max(1, min(known, ReportWire.version)) } }
        while !Task.isCancelled {
            let r = rule.withLock { $0 }
            await sendHeartbeat(intervalSeconds: r.heartbeatSeconds)
            await fetchBundle()
            await renewIfDue()
            let spread = Double(r.heartbeatSeconds) * r.jitter
            await heartbeatWake.wait(seconds: Double(r.heartbeatSeconds) + Double.random(in: -spread...spread))
        }
    }

    func sendHeartbeat(intervalSeconds: Int) async {
        // The state a heartbeat reports is never ahead of the spool: the snapshot first, then
        // wait for every event queued until then (a decision and its event are queued in the
        // same turn of the agent's loop), so the collector never hears of a decision whose
        // event is not on disk.
        var hb = await heartbeatSource()
        await flushed()
        hb.intervalSeconds = intervalSeconds
        if let s = try? await spool.summary() {
            hb.spool = SpoolSummary(pending: s.pending, dropped: s.dropped, held: s.held,
                                    oldestSeconds: s.oldest.map { max(0, Int(Date().timeIntervalSince($0))) })
        }
        if let a = applied.withLock({ $0 }) { hb.policy.bundleVersion = a.version }
        do {
            let wire = collectorWire.withLock { $0 }
            do {
                _ = try await send("POST", "/api/v1/heartbeat", body: try ReportCoding.encoder().encode(hb.forWire(wire)))
            } catch let e as CollectorHTTPError where e.status == 400 && wire >= 2 && !e.announcedWire {
                // A collector rolled back to revision 1 refuses revision-2 fields (and says no
                // revision): speak revision 1 again (the 2xx without the header records it).
                logger.notice("collector refuses wire revision 2 fields; speaking revision 1", metadata: ["error": "\(e)"])
                _ = try await send("POST", "/api/v1/heartbeat", body: try ReportCoding.encoder().encode(hb.forWire(1)))
            }
            counters.withLock {
                $0.heartbeatsSent += 1
                $0.lastHeartbeatAt = Date()
                $0.lastError = nil
            }
        } catch {
            counters.withLock {
                $0.heartbeatFailures += 1
                $0.lastError = "heartbeat: \(error)"
            }
            logger.info("heartbeat not delivered", metadata: ["error": "\(error)"])
        }
    }

    /// Fetches the group's bundle when it changed; verifies, applies and reports it.
    func fetchBundle() async {
        guard let key = policyKey else { return }
        let current = applied.withLock { $0 }
        reportExpiry(of: current)
        let known = refusedETag.withLock { $0 } ?? current?.etag
        let response: (HTTPResponseStatus, Data, String?)
        do {
            response = try await get("/api/v1/policy", ifNoneMatch: known)
        } catch {
            logger.info("policy bundle not fetched", metadata: ["error": "\(error)"])
            return
        }
        let (status, body, etag) = response
        guard status == .ok else { return }  // 304 unchanged, 404 none pushed
        do {
            let bundle = try ReportCoding.decodeStrict(SignedPolicyBundle.self, from: body)
            // The group is the collector's to decide (server-side groups): any group's bundle
            // signed by the admin key is taken; within each group the version only goes up.
            let payload = try PolicySigning.verify(bundle, key: key, now: Date())
            // Back in a group it was in: the version it had there is fine again, an older one is not.
            let floor = current?.floor(for: payload.group) ?? 0
            guard current?.group == payload.group || current == nil ? payload.version > floor : payload.version >= floor else {
                throw PolicyBundleError.rollback(version: payload.version, current: floor)
            }
            do {
                try await applyBundle(payload)
            } catch {
                throw BundleRefusal.invalidPolicy("\(error)", version: payload.version)
            }
            var saved = AppliedBundle(group: payload.group, version: payload.version, policySHA256: payload.policySHA256, etag: etag, bundle: bundle)
            if let current, current.group != payload.group || current.earlierGroups != nil {
                var earlier = current.remembering()
                earlier.removeValue(forKey: payload.group)
                saved.earlierGroups = earlier.isEmpty ? nil : earlier
            }
            try saved.save(path: configuration.bundleStatePath)
            applied.withLock { $0 = saved }
            refusedETag.withLock { $0 = nil }
            counters.withLock { $0.bundlesApplied += 1 }
            record(kind: "bundle-applied", severity: "info",
                   reason: "policy bundle version \(payload.version) for group '\(payload.group)' applied\(payload.comment.map { ": \($0)" } ?? "")",
                   details: ["version": "\(payload.version)", "policy_sha256": payload.policySHA256, "previous_version": "\(current?.version ?? 0)",
                             "group": payload.group, "previous_group": current?.group ?? ""])
            heartbeatWake.signal()
        } catch {
            refusedETag.withLock { $0 = etag }
            counters.withLock { $0.bundlesRefused += 1 }
            let severity: String
            switch error {
            case PolicyBundleError.badSignature, PolicyBundleError.unknownKey, PolicyBundleError.rollback, PolicyBundleError.wrongGroup,
                 PolicyBundleError.expired: severity = "critical"
            default: severity = "warning"
            }
            logger.error("policy bundle refused; keeping the policy in force", metadata: ["error": "\(error)"])
            record(kind: "bundle-refused", severity: severity, reason: "policy bundle refused, the policy in force is kept: \(error)",
                   details: ["etag": etag ?? "", "version_in_force": "\(current?.version ?? 0)"])
        }
    }

    /// The bundle in force has passed its `not_after` and no newer one came: it stays in force
    /// (the last valid policy: enforcement does not loosen or stop), and this is reported once
    /// per bundle — whether the collector is unreachable or keeps serving the old bundle.
    func reportExpiry(of current: AppliedBundle?, now: Date = Date()) {
        guard let current, let payload = try? current.bundle.unverifiedPayload(), let end = payload.notAfter, payload.expired(at: now) else { return }
        let first = expiryReported.withLock { reported -> Bool in
            defer { reported = current.version }
            return reported != current.version
        }
        guard first else { return }
        logger.error("the policy bundle in force has expired; it stays in force until a newer one arrives",
                     metadata: ["version": "\(current.version)", "not_after": "\(RFC3339.format(end))"])
        record(kind: "bundle-expired", severity: "critical",
               reason: "policy bundle version \(current.version) expired at \(RFC3339.format(end)) and no newer bundle arrived; it stays in force",
               details: ["version": "\(current.version)", "not_after": RFC3339.format(end), "policy_sha256": current.policySHA256])
    }

    // MARK: HTTP

    var requestTimeout: TimeAmount { .milliseconds(Int64(configuration.requestTimeoutSeconds * 1000)) }

    /// The wire revision the collector answered with: its `Segguard-Wire` header, or 1 for a
    /// successful answer without one (a revision-1 collector; a collector rolled back to one
    /// is followed too). An error without the header (a proxy's 502) changes nothing.
    func noteWire(_ status: HTTPResponseStatus, _ headers: HTTPHeaders) {
        let announced = headers.first(name: ReportWire.header).flatMap { Int($0.trimmed()) }
        let code = Int(status.code)
        guard let revision = announced ?? ((200..<300).contains(code) || code == 304 ? 1 : nil) else { return }
        let new = max(1, min(revision, ReportWire.version))
        let changed = collectorWire.withLock { w -> Bool in
            defer { w = new }
            return w != new
        }
        // Kept in the spool: after a restart the first heartbeat already speaks the collector's
        // revision (its held-event count is not reset to nothing for one interval).
        if changed { Task { try? await spool.setCollectorWire(new) } }
    }

    /// The wire revision in use with the collector (tests, status).
    public var wireRevision: Int { collectorWire.withLock { $0 } }

    /// Sends to the collector in use; when it cannot be reached (no answer at all) and there
    /// are others, the next one is tried at once and kept.
    func execute(_ make: (String) -> HTTPClientRequest) async throws -> HTTPClientResponse {
        let first = urlIndex.withLock { $0 }
        var attempt = 0
        while true {
            let index = (first + attempt) % collectorURLs.count
            do {
                return try await client.execute(make(collectorURLs[index]), timeout: requestTimeout)
            } catch {
                attempt += 1
                guard attempt < collectorURLs.count else { throw error }
                let next = (first + attempt) % collectorURLs.count
                urlIndex.withLock { $0 = next }
                logger.notice("collector unreachable; trying the next one", metadata: ["failed": "\(collectorURLs[index])", "next": "\(collectorURLs[next])",
                                                                                       "error": "\(error)"])
            }
        }
    }

    func send(_ method: String, _ path: String, body: Data) async throws -> (HTTPResponseStatus, Data) {
        let response = try await execute { url in
            var request = HTTPClientRequest(url: url + path)
            request.method = HTTPMethod(rawValue: method)
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
            return request
        }
        noteWire(response.status, response.headers)
        let data = Data((try await response.body.collect(upTo: 1 << 20)).readableBytesView)
        guard (200..<300).contains(Int(response.status.code)) else {
            let message = (try? ReportCoding.decoder().decode(ErrorReply.self, from: data))?.error ?? String(decoding: data.prefix(200), as: UTF8.self)
            throw CollectorHTTPError(status: Int(response.status.code), message: message,
                                     announcedWire: response.headers.first(name: ReportWire.header) != nil)
        }
        return (response.status, data)
    }

    func get(_ path: String, ifNoneMatch: String?) async throws -> (HTTPResponseStatus, Data, String?) {
        let response = try await execute { url in
            var request = HTTPClientRequest(url: url + path)
            if let ifNoneMatch { request.headers.add(name: "If-None-Match", value: ifNoneMatch) }
            return request
        }
        noteWire(response.status, response.headers)
        let data = Data((try await response.body.collect(upTo: 4 << 20)).readableBytesView)
        let code = Int(response.status.code)
        guard (200..<300).contains(code) || code == 304 || code == 404 else {
            let message = (try? ReportCoding.decoder().decode(ErrorReply.self, from: data))?.error ?? String(decoding: data.prefix(200), as: UTF8.self)
            throw CollectorHTTPError(status: code, message: message)
        }
        return (response.status, data, response.headers.first(name: "ETag"))
    }
}

/// A verified bundle whose policy does not validate.
enum BundleRefusal: Error, CustomStringConvertible {
    case invalidPolicy(String, version: Int64)
    var description: String {
        switch self {
        case .invalidPolicy(let why, let v): "bundle version \(v) carries an invalid policy: \(why)"
        }
    }
}

/// Counters of the reporter (status output, tests).
public struct ReporterStatistics: Sendable, Equatable {
    public var heartbeatsSent = 0
    public var heartbeatFailures = 0
    public var eventsDelivered = 0
    public var duplicatesAcknowledged = 0
    public var deliveryFailures = 0
    /// Refusals (4xx) of single events, each kept in the spool and offered again later.
    public var eventsHeld = 0
    /// Events sent again under a new id after a 409 (the collector had another under theirs).
    public var eventsReissued = 0
    public var bundlesApplied = 0
    public var bundlesRefused = 0
    public var lastHeartbeatAt: Date?
    /// The last delivery or heartbeat failure (cleared by the next success).
    public var lastError: String?
    public init() {}
}
