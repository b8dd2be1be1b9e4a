// The handle on the agent that the rest of the process holds: starts the agent's loop and the
// core on it, and turns every outside request (SIGHUP, a bundle, a control request, a
// heartbeat) into a job on that loop. Owns the loop; the core owns everything else.

import Foundation
import Logging
import SegguardCapture
import SegguardPolicy
import SegguardReport
import SegguardSystem
import SegguardWire
import Synchronization

/// The segment-guard agent: decides the segment from the network, binds the VDI to it, blocks
/// capture tools, and says so (events, status, heartbeats).
///
/// Its state lives on one thread, the loop `sg-agent`, where the network source reads its
/// sockets too, so a netlink message is decided and enforced on the thread that read it.
/// Everything else reaches the agent as a job on that loop, run in order.
public final class Agent: Sendable {
    /// The agent's executor.
    public let loop: PollLoop
    let core: LoopBound<AgentCore?>
    let mailbox: Mailbox
    let setup: Setup
    /// Where events go to reach the collector: attached before `start`.
    let reporting = Mutex<(any AgentReporting)?>(nil)
    let ending = Mutex<(ended: Bool, failure: String?, waiters: [CheckedContinuation<Void, any Error>])>((false, nil, []))
    /// Capture records waiting for the loop beyond this many are counted, not queued: a flood
    /// of denied execs cannot grow the agent's memory without bound.
    public static let captureBacklogLimit = 10_000

    struct Setup: Sendable {
        var policy: LoadedPolicy
        var configuration: AgentConfiguration
        var sources: AgentSources
        var observer: any AgentObserver
        var logger: Logger
    }

    /// - Parameters:
    ///   - policy: the policy to start with (`Agent.loadPolicy`); later ones come by `reload`
    ///     and `apply(bundle:)`.
    ///   - clock: the loop's monotonic clock (tests pass a manual one to drive timers).
    public init(policy: LoadedPolicy, configuration: AgentConfiguration, sources: AgentSources, observer: any AgentObserver = SilentObserver(),
                logger: Logger, clock: @escaping PollLoop.Clock = { monotonicNanos() }) {
        loop = PollLoop(name: "sg-agent", clock: clock)
        core = LoopBound(nil, loop: loop)
        mailbox = Mailbox(loop: loop, core: core, captureBacklog: CaptureBacklog(limit: Agent.captureBacklogLimit))
        setup = Setup(policy: policy, configuration: configuration, sources: sources, observer: observer, logger: logger)
    }

    /// Sends the agent's events to the collector from the start on (before `start`: the
    /// reporter is made after the agent, whose heartbeats and bundles it asks for).
    public func attach(reporting r: any AgentReporting) {
        precondition(!loop.isRunning, "attach the reporter before the agent starts")
        reporting.withLock { $0 = r }
    }

    /// Reads and validates a policy file (every error with file:line:column).
    public static func loadPolicy(file: String) throws(PolicyLoadError) -> LoadedPolicy {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw PolicyLoadError(issues: [PolicyIssue(file: file, line: 1, column: 1, path: "", message: "cannot read the policy file: \(String(cString: strerror(errno)))")])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw PolicyLoadError(issues: [PolicyIssue(file: file, line: 1, column: 1, path: "", message: "the policy file is not UTF-8 text")])
        }
        return LoadedPolicy(policy: try PolicyLoader.load(text: text, file: file), file: file, sha256: PolicySigning.sha256Hex(data))
    }

    // MARK: - Life cycle

    /// Starts the loop: the baseline table, then the sources. Throws when the network source
    /// cannot start (nothing keeps running then).
    public func start() throws {
        let failure = Mutex<(any Error)?>(nil)
        let (core, mailbox, setup, reporting) = (self.core, self.mailbox, self.setup, self.reporting.withLock { $0 })
        let end: @Sendable (String) -> Void = { [weak self] why in self?.end(failure: why) }
        loop.start {
            let c = AgentCore(loop: mailbox.loop, mailbox: mailbox, policy: setup.policy, configuration: setup.configuration, sources: setup.sources,
                              observer: setup.observer, reporting: reporting, logger: setup.logger,
                              onFailure: end)
            core.value = c
            do {
                try c.start()
            } catch {
                failure.withLock { $0 = error }
            }
        }
        if let error = failure.withLock({ $0 }) {
            stop()
            throw error
        }
    }

    /// Stops the sources in order, then the loop. Jobs already posted still run.
    public func stop() {
        let job: @Sendable () -> Void = { [core] in core.value?.stop() }
        if loop.inLoop {
            job()
        } else if !loop.sync(timeout: 5, job) {
            setup.logger.error("the agent's loop did not stop its sources within 5 s")
        }
        loop.stop()
        end(failure: nil)
    }

    /// Returns once the agent has stopped; throws `AgentError` when a source failed for good.
    public func waitUntilStopped() async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            let result = ending.withLock { s -> (Bool, String?) in
                if !s.ended { s.waiters.append(c) }
                return (s.ended, s.failure)
            }
            guard result.0 else { return }
            if let why = result.1 { c.resume(throwing: AgentError(why)) } else { c.resume() }
        }
    }

    func end(failure: String?) {
        let (waiters, why) = ending.withLock { s -> ([CheckedContinuation<Void, any Error>], String?) in
            guard !s.ended else { return ([], nil) }
            s.ended = true
            s.failure = failure
            defer { s.waiters = [] }
            return (s.waiters, failure)
        }
        for w in waiters {
            if let why { w.resume(throwing: AgentError(why)) } else { w.resume() }
        }
    }

    // MARK: - Requests

    /// SIGHUP: re-reads the policy file in force.
    public func reload() { mailbox.post { $0.reload() } }

    /// A verified policy bundle (the reporter): validated, written and put in force, in order
    /// with reloads. Throws the reason when it is refused.
    public func apply(bundle payload: PolicyBundlePayload) async throws {
        let result: Result<Void, AgentError>? = await ask { core in
            do {
                try core.applyBundle(payload)
                return .success(())
            } catch {
                return .failure(AgentError("\(error)"))
            }
        }
        guard let result else { throw AgentError("the agent has stopped") }
        try result.get()
    }

    /// The heartbeat as things are now.
    public func heartbeat() async -> Heartbeat {
        if let hb = await ask({ $0.heartbeat() }) { return hb }
        return Heartbeat(hostname: setup.configuration.hostname, agentVersion: segguardVersion,
                         policy: PolicySummary(name: setup.policy.policy.name, sha256: setup.policy.sha256),
                         decision: DecisionSummary(segment: "unauthorized", authorized: false, reason: "segguardd is stopping", interfaces: [], since: Date()),
                         interfaces: [], intervalSeconds: setup.policy.policy.report.heartbeatSeconds, spool: SpoolSummary(pending: 0, dropped: 0), sentAt: Date())
    }

    /// Answers a control-socket request (on the caller's thread, waiting for the loop).
    public func reply(to request: ControlRequest, peer: PeerCredentials, timeout: Double = 2) -> ControlReply {
        let answer = Mutex<ControlReply?>(nil)
        let ran = loop.sync(timeout: timeout) { [core] in
            guard let c = core.value else { return }
            let r = c.reply(to: request, peer: peer)
            answer.withLock { $0 = r }
        }
        if let r = answer.withLock({ $0 }) { return r }
        return ControlReply(error: ran ? "segguardd is stopping" : "segguardd is busy: no answer within \(timeout) s; try again")
    }

    /// Runs `body` on the loop and waits for it (tests, benchmarks): false if it did not run.
    @discardableResult
    public func sync(timeout: Double = 10) -> Bool { loop.sync(timeout: timeout) }

    /// Waits until the loop is idle: no job queued, no timer due, no session termination
    /// running (tests).
    @discardableResult
    public func settle(timeout: Double = 10) -> Bool {
        let deadline = monotonicNanos() &+ nanoseconds(timeout)
        while monotonicNanos() < deadline {
            let busy = Mutex(true)
            guard loop.sync(timeout: timeout, { [core, loop] in
                busy.withLock { $0 = (core.value?.terminationsInFlight ?? 0) > 0 || loop.hasDueTimer }
            }) else { return false }
            if !busy.withLock({ $0 }) { return true }
            usleep(1000)
        }
        return false
    }

    /// Runs `body` with the core on the loop and returns its result; nil if the loop ended.
    func ask<T: Sendable>(_ body: @escaping @Sendable (AgentCore) -> T) async -> T? {
        await withCheckedContinuation { (c: CheckedContinuation<T?, Never>) in
            let accepted = loop.post { [core] in
                c.resume(returning: core.value.map(body))
            }
            if !accepted { c.resume(returning: nil) }
        }
    }
}
