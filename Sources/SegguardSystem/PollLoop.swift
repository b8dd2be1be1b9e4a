// A poll(2) loop on one named thread. Owns: an eventfd that wakes it, the jobs posted to it,
// its timers and the descriptors watched on it, and the thread. Must not own: what the jobs
// and handlers do. It is the agent's executor: the netlink source reads its sockets on it, so
// a kernel message is parsed, decided and enforced with no hand-off between threads; other
// threads post jobs, which run in the order posted.
//
// Failure table:
//   poll(2) fails (not EINTR)   -> the loop stops; `onFailure` handlers run on its thread
//   a job posted after stop     -> never runs (`sync` reports the timeout)

import CSegguardShims
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One thread running posted jobs, timers and descriptor handlers, in order.
///
/// Jobs may be posted from any thread. Everything else (`watch`, `schedule`, `cancel`) is
/// for the loop's own thread (or before `start`): the handlers they keep are confined to it,
/// which is why the class can hold non-Sendable closures and still be `Sendable`.
public final class PollLoop: @unchecked Sendable {
    /// A monotonic clock in nanoseconds (tests pass a manual one).
    public typealias Clock = @Sendable () -> UInt64

    /// Identifies a timer for `cancel`.
    public struct TimerID: Hashable, Sendable { let value: UInt64 }
    /// Identifies a watched descriptor for `unwatch`.
    public struct WatchID: Hashable, Sendable { let value: UInt64 }

    /// Counters (status, tests).
    public struct Statistics: Sendable, Equatable {
        /// Returns from poll(2).
        public var wakeups: UInt64 = 0
        public var jobs: UInt64 = 0
        public var timersFired: UInt64 = 0
        public init() {}
    }

    public let name: String
    public let clock: Clock
    private let wakeFd: Int32

    private struct Shared {
        var jobs: [@Sendable () -> Void] = []
        var sleeping = false
        var wakePending = false
        var running = false
        /// The loop has run its last jobs: nothing posted now would run.
        var closed = false
        var thread: pthread_t?
        var statistics = Statistics()
    }
    private let shared = Mutex(Shared())

    // Confined to the loop's thread.
    private struct Watch { var fd: Int32; var handler: () -> Void }
    private struct Timer { var deadline: UInt64; var id: UInt64; var handler: () -> Void }
    private var watches: [UInt64: Watch] = [:]
    private var watchOrder: [UInt64] = []
    private var timers: [Timer] = []
    private var nextID: UInt64 = 1
    private var stopHandlers: [() -> Void] = []
    private var lastWake: UInt64 = 0
    /// Jobs taken from the queue and not yet run (at most `jobsPerPass` run between polls).
    private var taken: [@Sendable () -> Void] = []
    private var takenIndex = 0
    /// Jobs run in one pass before the loop looks at its descriptors and timers again: a flood
    /// of posted jobs delays a netlink message by one slice, not by the whole flood.
    public static let jobsPerPass = 256

    public init(name: String, clock: @escaping Clock = { monotonicNanos() }) {
        self.name = name
        self.clock = clock
        wakeFd = sg_eventfd()
        precondition(wakeFd >= 0, "eventfd for loop \(name): errno \(errno)")
    }

    deinit { close(wakeFd) }

    // MARK: From any thread

    /// Starts the thread; `setUp` runs on it first (create loop-confined state, watch
    /// descriptors), then the loop. Returns once `setUp` has run.
    public func start(_ setUp: @escaping @Sendable () -> Void = {}) {
        shared.withLock { $0.running = true }
        let started = Gate()
        startThread(name: name) { [self] in
            shared.withLock { $0.thread = pthread_self() }
            setUp()
            started.open()
            run()
        }
        started.wait()
    }

    /// Runs `job` on the loop's thread after the jobs posted before it. From the loop's own
    /// thread it runs in the same pass, before the loop sleeps again. Every job accepted runs
    /// exactly once, also when the loop is stopping (it runs what is queued before it ends);
    /// false when the loop has ended and `job` will never run.
    @discardableResult
    public func post(_ job: @escaping @Sendable () -> Void) -> Bool {
        let (accepted, wake) = shared.withLock { s -> (Bool, Bool) in
            guard !s.closed else { return (false, false) }
            s.jobs.append(job)
            guard s.sleeping, !s.wakePending else { return (true, false) }
            s.wakePending = true
            return (true, true)
        }
        if wake { signalWake() }
        return accepted
    }

    /// Posts `job` and waits until it ran (false when the loop did not run it within
    /// `timeout` seconds, e.g. it has stopped). Never call it on the loop's own thread.
    @discardableResult
    public func sync(timeout: Double = 10, _ job: @escaping @Sendable () -> Void = {}) -> Bool {
        precondition(!inLoop, "PollLoop.sync on its own thread would wait forever")
        let done = Gate()
        guard post({
            job()
            done.open()
        }) else { return false }
        return done.wait(timeout: timeout)
    }

    /// Asks the loop to stop after the current pass; stop handlers run on its thread.
    public func stop() {
        shared.withLock { $0.running = false }
        signalWake()
    }

    public var isRunning: Bool { shared.withLock { $0.running } }
    public var statistics: Statistics { shared.withLock { $0.statistics } }

    /// True on the loop's own thread.
    public var inLoop: Bool {
        guard let t = shared.withLock({ $0.thread }) else { return false }
        return pthread_equal(t, pthread_self()) != 0
    }

    /// Traps unless called on the loop's thread (or before the loop has a thread).
    public func preconditionInLoop(file: StaticString = #fileID, line: UInt = #line) {
        guard let t = shared.withLock({ $0.thread }) else { return }
        precondition(pthread_equal(t, pthread_self()) != 0, "not on the \(name) loop's thread", file: file, line: line)
    }

    // MARK: On the loop's thread

    /// The monotonic time poll(2) last returned: when the event being handled was seen.
    public var wokeAt: UInt64 {
        preconditionInLoop()
        return lastWake
    }

    /// Calls `handler` on the loop's thread whenever `fd` is readable (or has an error).
    @discardableResult
    public func watch(_ fd: Int32, _ handler: @escaping () -> Void) -> WatchID {
        preconditionInLoop()
        let id = nextID
        nextID += 1
        watches[id] = Watch(fd: fd, handler: handler)
        watchOrder.append(id)
        return WatchID(value: id)
    }

    /// Stops watching (the descriptor stays open: its owner closes it).
    public func unwatch(_ id: WatchID) {
        preconditionInLoop()
        watches[id.value] = nil
        watchOrder.removeAll { $0 == id.value }
    }

    /// Calls `handler` once the clock reaches `deadline` (monotonic ns).
    @discardableResult
    public func schedule(at deadline: UInt64, _ handler: @escaping () -> Void) -> TimerID {
        preconditionInLoop()
        let id = nextID
        nextID += 1
        let index = timers.firstIndex { $0.deadline > deadline } ?? timers.endIndex
        timers.insert(Timer(deadline: deadline, id: id, handler: handler), at: index)
        return TimerID(value: id)
    }

    /// `schedule(at: now + seconds)`.
    @discardableResult
    public func schedule(after seconds: Double, _ handler: @escaping () -> Void) -> TimerID {
        schedule(at: clock() &+ nanoseconds(seconds), handler)
    }

    /// True when a timer is due now (it runs at the start of the loop's next pass).
    public var hasDueTimer: Bool {
        preconditionInLoop()
        return timers.first.map { $0.deadline <= clock() } ?? false
    }

    public func cancel(_ id: TimerID) {
        preconditionInLoop()
        timers.removeAll { $0.id == id.value }
    }

    /// Runs on the loop's thread when it stops (close descriptors watched on it).
    public func onStop(_ handler: @escaping () -> Void) {
        preconditionInLoop()
        stopHandlers.append(handler)
    }

    // MARK: The loop

    private func run() {
        var fds: [pollfd] = []
        var ids: [UInt64] = []
        while shared.withLock({ $0.running }) {
            runDueTimers()
            runJobs()
            guard shared.withLock({ $0.running }) else { break }
            fds.removeAll(keepingCapacity: true)
            ids.removeAll(keepingCapacity: true)
            fds.append(pollfd(fd: wakeFd, events: Int16(POLLIN), revents: 0))
            for id in watchOrder {
                guard let w = watches[id] else { continue }
                fds.append(pollfd(fd: w.fd, events: Int16(POLLIN), revents: 0))
                ids.append(id)
            }
            let hasTaken = takenIndex < taken.count
            let sleep = shared.withLock { s -> Bool in
                guard s.jobs.isEmpty, !hasTaken else { return false }
                s.sleeping = true
                return true
            }
            var timeout: Int32 = 0
            if sleep, let first = timers.first {
                let now = clock()
                timeout = first.deadline <= now ? 0 : Int32(clamping: (first.deadline - now + 999_999) / 1_000_000)
            } else if sleep {
                timeout = -1
            }
            let n = poll(&fds, nfds_t(fds.count), timeout)
            let errorCode = errno
            lastWake = clock()
            shared.withLock { s in
                s.sleeping = false
                s.wakePending = false
                s.statistics.wakeups += 1
            }
            if n < 0 {
                if errorCode == EINTR { continue }
                // Nothing sensible is left to do on this thread: stop it and say so.
                fatalError("poll on the \(name) loop: \(String(cString: strerror(errorCode))) (errno \(errorCode))")
            }
            if fds[0].revents != 0 {
                var value: UInt64 = 0
                _ = read(wakeFd, &value, 8)
            }
            for (i, id) in ids.enumerated() where fds[i + 1].revents != 0 {
                // A handler may have unwatched this one in the meantime.
                watches[id]?.handler()
            }
        }
        let handlers = stopHandlers
        stopHandlers = []
        for h in handlers { h() }
        watches = [:]
        watchOrder = []
        timers = []
        // The last jobs: everything accepted runs, nothing is accepted after.
        let last = Array(taken[min(takenIndex, taken.count)...]) + shared.withLock { s -> [@Sendable () -> Void] in
            s.closed = true
            defer { s.jobs = [] }
            return s.jobs
        }
        taken = []
        takenIndex = 0
        for job in last { job() }
    }

    private func runDueTimers() {
        let now = clock()
        while let first = timers.first, first.deadline <= now {
            timers.removeFirst()
            shared.withLock { $0.statistics.timersFired += 1 }
            first.handler()
        }
    }

    /// Runs up to `jobsPerPass` of the jobs posted so far, in order (those posted meanwhile
    /// and the rest of a flood wait for the next pass, after descriptors and timers).
    private func runJobs() {
        if takenIndex >= taken.count {
            taken = shared.withLock { s -> [@Sendable () -> Void] in
                defer { s.jobs = [] }
                return s.jobs
            }
            takenIndex = 0
        }
        let end = min(taken.count, takenIndex + PollLoop.jobsPerPass)
        guard takenIndex < end else { return }
        shared.withLock { $0.statistics.jobs += UInt64(end - takenIndex) }
        while takenIndex < end {
            let job = taken[takenIndex]
            takenIndex += 1
            job()
        }
        if takenIndex >= taken.count {
            taken = []
            takenIndex = 0
        }
    }

    private func signalWake() {
        var one: UInt64 = 1
        _ = write(wakeFd, &one, 8)
    }
}

/// A value that lives on one loop's thread: a `Sendable` box any closure may capture, whose
/// value may be touched only on that thread (checked at every access).
public final class LoopBound<Value>: @unchecked Sendable {
    public let loop: PollLoop
    private var stored: Value

    public init(_ value: Value, loop: PollLoop) {
        self.loop = loop
        self.stored = value
    }

    public var value: Value {
        get {
            loop.preconditionInLoop()
            return stored
        }
        set {
            loop.preconditionInLoop()
            stored = newValue
        }
    }
}

/// A one-shot gate between threads (open once; waiters pass).
public final class Gate: Sendable {
    private let state = Mutex(false)
    private let fd: Int32

    public init() {
        fd = sg_eventfd()
        // Without it a waiter could never be woken: out of descriptors is not a state to run in.
        precondition(fd >= 0, "eventfd: errno \(errno)")
    }

    deinit { close(fd) }

    public func open() {
        state.withLock { $0 = true }
        var one: UInt64 = 1
        _ = write(fd, &one, 8)
    }

    /// Waits until opened; false after `timeout` seconds (nil: forever).
    @discardableResult
    public func wait(timeout: Double? = nil) -> Bool {
        let deadline = timeout.map { monotonicNanos() &+ nanoseconds($0) }
        while !state.withLock({ $0 }) {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            var ms: Int32 = -1
            if let deadline {
                let now = monotonicNanos()
                if now >= deadline { return state.withLock { $0 } }
                ms = Int32(clamping: (deadline - now) / 1_000_000 + 1)
            }
            _ = poll(&p, 1, ms)
        }
        return true
    }
}
