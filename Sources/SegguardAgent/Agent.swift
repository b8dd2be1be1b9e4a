// The handle on the agent that the rest of the process holds: starts the agent's loop and the
// core on it, and turns every outside request (SIGHUP, a bundle, a control request, a
// heartbeat) into a job on that loop. Owns the loop; the core owns everything else.

import FoundationEssentials
import Logging
import SegguardCapture
import SegguardPolicy
import SegguardReport
import SegguardSystem
import SegguardWire
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

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
    let groupNames = GroupNames()
    let stopped = Mutex(false)
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
        let (core, mailbox, setup, reporting, groupNames) = (self.core, self.mailbox, self.setup, self.reporting.withLock { $0 }, self.groupNames)
        let end: @Sendable (String) -> Void = { [weak self] why in self?.end(failure: why) }
        loop.start {
            let c = AgentCore(loop: mailbox.loop, mailbox: mailbox, policy: setup.policy, configuration: setup.configuration, sources: setup.sources,
                              observer: setup.observer, reporting: reporting, logger: setup.logger, groupNames: groupNames,
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

    /// Stops the sources in order, then the loop. Jobs already posted still run. A second call
    /// does nothing.
    public func stop() {
        guard stopped.withLock({ s in defer { s = true }; return !s }) else { return }
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

    /// The device certificate was renewed in place (new key): re-read it, keeping the old key
    /// accepted for 802.1X until the supplicant's state names the new one.
    public func deviceCertificateRenewed() { mailbox.post { $0.deviceCertificateRenewed() } }

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
    ///
    /// What may block is done here, not on the loop: the groups a launch is checked against are
    /// resolved first. The job gets its own copy of the peer's pidfd (the caller's is closed when
    /// it returns). A request not started within `timeout` is abandoned: the client is told the
    /// agent is busy and the job does nothing when it comes to run.
    public func reply(to request: ControlRequest, peer: PeerCredentials, timeout: Double = 2) -> ControlReply {
        let groups = request.command == .launch ? groupNames.resolve() : [:]
        var own = peer
        own.pidfd = peer.pidfd >= 0 ? fcntl(peer.pidfd, F_DUPFD_CLOEXEC, 0) : -1
        let pidfd = own.pidfd
        let exchange = ReplyExchange()
        let accepted = loop.post { [core, own] in
            defer { if pidfd >= 0 { close(pidfd) } }
            guard exchange.claim() else { return }
            exchange.finish(core.value?.reply(to: request, peer: own, groups: groups) ?? ControlReply(error: "segguardd is stopping"))
        }
        guard accepted else {
            if pidfd >= 0 { close(pidfd) }
            return ControlReply(error: "segguardd is stopping")
        }
        return exchange.wait(timeout: timeout) ?? ControlReply(error: "segguardd is busy: no answer within \(timeout) s; try again")
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

    /// Runs `body` with the core on the loop and returns its result; nil if the loop ended or
    /// the calling task was cancelled meanwhile (a stuck loop never holds up a stopping reporter).
    func ask<T: Sendable>(_ body: @escaping @Sendable (AgentCore) -> T) async -> T? {
        let once = ResumeOnce<T?>()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<T?, Never>) in
                once.set(c)
                let accepted = loop.post { [core] in once.resume(core.value.map(body)) }
                if !accepted { once.resume(nil) }
            }
        } onCancel: {
            once.cancel(with: nil)
        }
    }
}

/// A continuation resumed exactly once: by the job, or by cancellation, whichever comes first.
final class ResumeOnce<T: Sendable>: Sendable {
    private enum State { case empty, waiting(CheckedContinuation<T, Never>), cancelled(T), done }
    private let state = Mutex<State>(.empty)

    /// Parks the continuation; resumes it at once when cancellation came first.
    func set(_ c: CheckedContinuation<T, Never>) {
        let early: T? = state.withLock { s in
            if case .cancelled(let v) = s {
                s = .done
                return v
            }
            s = .waiting(c)
            return nil
        }
        if let early { c.resume(returning: early) }
    }

    func resume(_ value: T) {
        let c: CheckedContinuation<T, Never>? = state.withLock { s in
            guard case .waiting(let c) = s else { return nil }
            s = .done
            return c
        }
        c?.resume(returning: value)
    }

    func cancel(with value: T) {
        let c: CheckedContinuation<T, Never>? = state.withLock { s in
            switch s {
            case .empty:
                s = .cancelled(value)
                return nil
            case .waiting(let c):
                s = .done
                return c
            default:
                return nil
            }
        }
        c?.resume(returning: value)
    }
}

/// One control reply between a waiting connection thread and the job on the loop: the job
/// runs only if it starts before the waiter gave up; once it started, the waiter waits for it.
final class ReplyExchange: Sendable {
    private enum State { case pending, running, done(ControlReply), abandoned }
    private let state = Mutex<State>(.pending)
    private let gate = Gate()

    /// The job may run (false: the waiter gave up and told the client).
    func claim() -> Bool {
        state.withLock { s in
            guard case .pending = s else { return false }
            s = .running
            return true
        }
    }

    func finish(_ reply: ControlReply) {
        state.withLock { $0 = .done(reply) }
        gate.open()
    }

    /// The reply, or nil when the job had not started within `timeout` (it never will).
    func wait(timeout: Double) -> ControlReply? {
        if !gate.wait(timeout: timeout) {
            let abandoned = state.withLock { s -> Bool in
                guard case .pending = s else { return false }
                s = .abandoned
                return true
            }
            if abandoned { return nil }
            gate.wait()
        }
        return state.withLock { s in
            if case .done(let r) = s { return r }
            return nil
        }
    }
}
