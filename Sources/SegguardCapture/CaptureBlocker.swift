// Exec blocking with fanotify permission events (FAN_OPEN_EXEC_PERM), as fapolicyd does. Owns:
// the fanotify descriptor and its mount marks, the thread that answers every event, and the
// hashing queue. The one rule above all: every permission event gets an answer, at once when
// the path decides, within `capture.decision_timeout_ms` when the content must be hashed
// (else `capture.fail_mode` answers); if this process dies the kernel allows what was pending.

import CSegguardShims
import FoundationEssentials
import SegguardEssentials
import Dispatch
import Logging
import SegguardPolicy
import SegguardSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A capture-blocking setup failure (fanotify unavailable, a mount that cannot be marked).
public struct CaptureSetupError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(description: String) { self.description = description }
}

/// One exec capture blocking acted on (or, in audit mode, would have).
public struct CaptureDecisionRecord: Sendable {
    public enum Outcome: String, Sendable { case denied, wouldBeDenied, failMode, killed, wouldBeKilled }
    public var outcome: Outcome
    public var path: String
    public var sha256: String?
    public var pid: Int32
    public var uid: UInt32?
    public var parentPid: Int32?
    public var parentExecutable: String?
    public var profile: String?
    public var reason: String

    public init(outcome: Outcome, path: String, sha256: String?, pid: Int32, uid: UInt32?, parentPid: Int32?, parentExecutable: String?,
                profile: String?, reason: String) {
        (self.outcome, self.path, self.sha256, self.pid, self.uid) = (outcome, path, sha256, pid, uid)
        (self.parentPid, self.parentExecutable, self.profile, self.reason) = (parentPid, parentExecutable, profile, reason)
    }
}

/// Counters for status and benchmarks.
public struct CaptureStatistics: Sendable, Equatable {
    public var events: UInt64 = 0
    public var allowed: UInt64 = 0
    public var denied: UInt64 = 0
    public var failModeAnswers: UInt64 = 0
    public var hashed: UInt64 = 0
    public var cacheHits: UInt64 = 0
    /// Exec notifications from the process connector, and capture tools ended.
    public var processExecs: UInt64 = 0
    public var processesKilled: UInt64 = 0
    public init() {}
}

/// The sessions running now, as capture blocking needs them.
public struct CaptureSessions: Sendable {
    /// The profiles of the sessions running.
    public var profiles: [LaunchProfile]
    /// The uids of their users: under trusted-only, their untrusted processes are ended.
    public var users: Set<UInt32>
    /// Whether any profile of the policy asks for trusted-only (dpkg's index is loaded ahead).
    public var trustedOnlyPossible: Bool

    public init(profiles: [LaunchProfile] = [], users: Set<UInt32> = [], trustedOnlyPossible: Bool = false) {
        (self.profiles, self.users, self.trustedOnlyPossible) = (profiles, users, trustedOnlyPossible)
    }
}

/// Answers fanotify exec permission events on the watched mounts.
public final class CaptureBlocker: Sendable {
    struct Config: Sendable {
        var decider: ExecDecider
        var protection: CaptureProtectionState
        var mode: ControlMode
        var sessionUsers: Set<UInt32> = []
    }

    let logger: Logger
    let config: Mutex<Config>
    let stats = Mutex(CaptureStatistics())
    let cache = DigestCache()
    let dpkg: DpkgIndex
    let fanotifyFd: Int32
    let stopSignal = StopSignal()
    let marked = Mutex<[String]>([])
    /// st_dev of every filesystem marked (the watch paths, the mounts below them, and any
    /// filesystem an exec was first seen on): a process running from another is judged by the
    /// watcher, and its filesystem is marked then.
    let markedDevices = Mutex<Set<UInt64>>([])
    /// st_dev of every filesystem in this daemon's own mount table: one of these that is not
    /// marked is outside the watch on purpose, never marked on first sight.
    let knownDevices = Mutex<Set<UInt64>>([])
    /// Mount points marked because they lie below a watched path (removed with the watch).
    let belowMarks = Mutex<[String]>([])
    /// The system's dynamic loaders' SHA-256 (a renamed copy is a loader too).
    let loaderHashes: Set<String>
    /// vm.memfd_noexec while a protecting session runs.
    let memfdNoexec: MemfdNoexec
    /// Hashing jobs running now (bounded by `hashers`), and the file each one reads: a second
    /// exec of the same file waits for that job rather than starting another.
    let hashing = Mutex<[FileIdentity: (group: DispatchGroup, forExec: Bool)]>([:])
    /// At most this many files are hashed at once for exec answers; past that an exec is
    /// answered at once by the fail mode (deny under trusted-only).
    let hashers = max(2, ProcessInfo.processInfo.activeProcessorCount)
    let onRecord: @Sendable (CaptureDecisionRecord) -> Void
    /// Hashing runs here (in parallel, at most `hashers` at once), so that the answering
    /// thread can give up waiting for it.
    let hasher = DispatchQueue(label: "segguard.capture.hash", attributes: .concurrent)
    /// Execs whose answer waits for a hash wait here, not on the thread reading events.
    let answerers = DispatchQueue(label: "segguard.capture.answer", attributes: .concurrent)
    let pendingAnswers = Mutex(0)
    /// Running programs judged by content (the watcher's and the sweeps' work).
    let judges = DispatchQueue(label: "segguard.capture.judge", attributes: .concurrent)
    let pendingJudgements = Mutex(0)
    /// Test hook: extra delay in the hasher (ms), to prove the fail-mode bound.
    let hashDelayMs: Int
    /// Asked (on another queue, at most once a second, from exec events) to recompute the
    /// protection when sessions may have ended; never waited for.
    let refresh = Mutex<(hint: (@Sendable () -> Void)?, last: UInt64)>((nil, 0))

    public init(rule: CaptureRule, dpkg: DpkgIndex = DpkgIndex(), logger: Logger = Logger(label: "segguard.capture"), hashDelayMs: Int = 0,
                memfdNoexec: MemfdNoexec = MemfdNoexec(), onRecord: @escaping @Sendable (CaptureDecisionRecord) -> Void) throws(CaptureSetupError) {
        let fd = sg_fanotify_init()
        guard fd >= 0 else {
            let e = errno
            throw CaptureSetupError(description: "fanotify_init: \(String(cString: strerror(e))) (errno \(e)); capture blocking needs CAP_SYS_ADMIN and a kernel with CONFIG_FANOTIFY_ACCESS_PERMISSIONS")
        }
        fanotifyFd = fd
        self.logger = logger
        self.dpkg = dpkg
        self.onRecord = onRecord
        self.hashDelayMs = hashDelayMs
        self.memfdNoexec = memfdNoexec
        let loaders = Self.systemLoaderHashes()
        loaderHashes = loaders
        config = Mutex(Config(decider: ExecDecider(rule: rule, loaderHashes: loaders), protection: CaptureProtectionState.current(rule, sessionProfiles: []), mode: rule.mode))
    }

    /// Where distributions put the dynamic loader (the real files behind these links are hashed).
    static let loaderPaths = ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1", "/lib/ld-linux-armhf.so.3", "/lib/ld-linux.so.2",
                              "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1", "/lib/ld-musl-x86_64.so.1"]

    static func systemLoaderHashes() -> Set<String> {
        var out: Set<String> = []
        for p in loaderPaths {
            let fd = open(p, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            if let d = FileDigests.of(fd: fd) { out.insert(d.sha256) }
        }
        return out
    }

    deinit {
        memfdNoexec.restore()
        close(fanotifyFd)
    }

    /// Marks the filesystems holding `paths`, and every mount below them (a path that cannot
    /// be marked is an error naming it; the marks made so far stay). Mounts made later are
    /// marked as they appear (`watchMounts`).
    public func watch(_ paths: [String]) throws(CaptureSetupError) {
        for p in paths {
            guard sg_fanotify_mark_filesystem(fanotifyFd, p, 1) == 0 else {
                let e = errno
                throw CaptureSetupError(description: "capture.watch \(p): fanotify_mark: \(String(cString: strerror(e))) (errno \(e))")
            }
            var st = stat()
            if stat(p, &st) == 0 { _ = markedDevices.withLock { $0.insert(UInt64(st.st_dev)) } }
            marked.withLock { $0.append(p) }
        }
        markNewMounts()
    }

    /// Marks every mount below the watched paths not marked yet (at start, and on each change
    /// of the mount table). A mount that cannot be marked is logged once and left to the
    /// process watcher.
    func markNewMounts() {
        let watch = marked.withLock { $0 }
        guard !watch.isEmpty, let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return }
        let mounts = MountEntry.parse(text)
        // Device numbers are reused (a tmpfs unmounted gives its anonymous 0:N to the next):
        // both sets follow the mount table as it is now, never as it was.
        let current = Set(mounts.map(\.device))
        knownDevices.withLock { $0 = current }
        markedDevices.withLock { $0.formIntersection(current) }
        for m in mounts where m.isCovered(by: watch) {
            guard !markedDevices.withLock({ $0.contains(m.device) }) else { continue }
            // The mount point may hide the filesystem it names (mounted over): stat confirms.
            var st = stat()
            guard stat(m.mountPoint, &st) == 0, UInt64(st.st_dev) == m.device else { continue }
            if sg_fanotify_mark_filesystem(fanotifyFd, m.mountPoint, 1) == 0 {
                _ = markedDevices.withLock { $0.insert(m.device) }
                belowMarks.withLock { $0.append(m.mountPoint) }
                logger.info("capture blocking: marked a filesystem", metadata: ["mount": "\(m.mountPoint)", "type": "\(m.fsType)"])
            } else {
                let e = errno
                _ = markedDevices.withLock { $0.insert(m.device) }  // once: the watcher covers it
                logger.warning("capture blocking: cannot mark a filesystem; execs there are judged by the process watcher only",
                               metadata: ["mount": "\(m.mountPoint)", "type": "\(m.fsType)", "error": "\(String(cString: strerror(e)))"])
            }
        }
    }

    /// Waits for changes of the mount table (POLLPRI on /proc/self/mountinfo) and marks new
    /// filesystems below the watched paths.
    func watchMounts() {
        let fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            logger.error("cannot watch the mount table: filesystems mounted later are judged by the process watcher only", metadata: ["errno": "\(errno)"])
            return
        }
        defer { close(fd) }
        while stopSignal.wait(for: fd, events: Int16(POLLPRI)) == .readable {
            markNewMounts()
        }
    }

    /// A new policy or a change of the sessions running: takes effect for the next exec.
    public func update(rule: CaptureRule, sessions: CaptureSessions) {
        let protection = CaptureProtectionState.current(rule, sessionProfiles: sessions.profiles)
        // Trusted-only needs dpkg's index: start loading it now, not at the first exec.
        if protection.level == .trustedOnly || sessions.trustedOnlyPossible { _ = dpkg.lookup("/") }
        let users = Set(sessions.users.filter { $0 != 0 })
        let (changed, raised, newUsers) = config.withLock { c -> (Bool, Bool, Bool) in
            let changed = c.protection != protection || c.mode != rule.mode
            let raised = protection.level > c.protection.level || (c.mode != .enforce && rule.mode == .enforce)
            let newUsers = !users.isSubset(of: c.sessionUsers)
            c = Config(decider: ExecDecider(rule: rule, loaderHashes: loaderHashes), protection: protection, mode: rule.mode, sessionUsers: users)
            return (changed, raised, newUsers)
        }
        // A session of a protecting profile: memfds cannot be executed while it runs.
        if protection.profile != nil && protection.level >= .blocklist && rule.mode == .enforce && stopSignal.isRunning {
            if !memfdNoexec.isRaised {
                if let why = memfdNoexec.raise() {
                    logger.info("vm.memfd_noexec not raised: memfd executables are judged by the process watcher only", metadata: ["reason": "\(why)"])
                } else {
                    logger.notice("vm.memfd_noexec = 2 while the protecting session runs")
                }
            }
        } else if memfdNoexec.isRaised {
            memfdNoexec.restore()
            logger.notice("vm.memfd_noexec restored", metadata: ["value": "\(memfdNoexec.current ?? "?")"])
        }
        // Tools already running when the protection rises (a session starts) are ended now;
        // under trusted-only so is every untrusted process of the sessions' users.
        if raised || (protection.level == .trustedOnly && newUsers), stopSignal.isRunning {
            DispatchQueue.global(qos: .userInitiated).async { [self] in
                sweep(byContent: true)
                sweepUntrusted()
            }
        }
        if changed {
            logger.notice("capture protection", metadata: ["level": "\(protection.level.rawValue)", "profile": "\(protection.profile ?? "-")", "mode": "\(rule.mode.rawValue)"])
        }
    }

    /// Sets the refresh hint (see `refresh`).
    public func onStaleProtection(_ hint: @escaping @Sendable () -> Void) { refresh.withLock { $0.hint = hint } }

    /// The marked paths.
    public var watched: [String] { marked.withLock { $0 } }

    /// Removes the marks, then marks `paths` (a policy reload that changed capture.watch).
    public func rewatch(_ paths: [String]) throws(CaptureSetupError) {
        let old = marked.withLock { m -> [String] in
            let o = m
            m = []
            return o
        }
        let below = belowMarks.withLock { b -> [String] in
            let o = b
            b = []
            return o
        }
        for p in old + below { _ = sg_fanotify_mark_filesystem(fanotifyFd, p, 0) }
        markedDevices.withLock { $0.removeAll() }
        try watch(paths)
    }

    public var protection: CaptureProtectionState { config.withLock { $0.protection } }
    public var statistics: CaptureStatistics { stats.withLock { $0 } }

    /// Starts answering execs and watching processes. `procConnector`: a connector socket
    /// opened earlier (in the initial network namespace), or -1 to open one now.
    public func start(procConnector: Int32 = -1) {
        stopSignal.arm()
        startThread(name: "sg-capture") { [self] in run() }
        startThread(name: "sg-mounts") { [self] in watchMounts() }
        let fd = procConnector >= 0 ? procConnector : sg_proc_connector_open()
        if fd < 0 {
            let e = errno
            logger.error("process connector unavailable: running capture tools are not ended", metadata: ["error": "\(String(cString: strerror(e))) (errno \(e))"])
        } else {
            startThread(name: "sg-procs") { [self] in watchProcesses(fd) }
        }
        // Names and paths before returning; the executables' contents (listed SHA-256, a
        // renamed copy started earlier) right after, off the caller's thread.
        sweep(byContent: false)
        DispatchQueue.global(qos: .utility).async { [self] in sweep(byContent: true) }
    }

    // MARK: - Running processes (proc connector)

    /// Reads exec notifications until stopped; every exec is checked against the running-tool
    /// rules (names, paths, arguments), which also catches tools started before blocking began
    /// execing again, interpreted tools and argument-dependent ones (ffmpeg -f x11grab).
    func watchProcesses(_ fd: Int32) {
        defer { close(fd) }
        // SCHED_BATCH: the kernel does not let this thread preempt the process whose exec
        // woke it (every exec on the machine does), so the look at each new process runs
        // beside it, not in its place; the thread still gets its fair share under load.
        var param = sched_param()
        if sched_setscheduler(0, 3 /* SCHED_BATCH, hidden behind _GNU_SOURCE */, &param) != 0 {
            logger.debug("SCHED_BATCH not set for the process watcher", metadata: ["errno": "\(errno)"])
        }
        var buf = [UInt8](repeating: 0, count: 16384)
        var execs = [sg_proc_exec](repeating: sg_proc_exec(), count: 128)
        while stopSignal.wait(for: fd) == .readable {
            while true {
                let got = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                if got < 0 {
                    // ENOBUFS: notifications were lost; look at every process instead.
                    // A user flooding execs to hide one: the processes of users other than
                    // root are judged as if just exec'd (loader, memfd, unmarked filesystems).
                    if errno == ENOBUFS { sweep(byContent: false, lostEvents: true) }
                    break
                }
                if got == 0 { break }
                let count = buf.withUnsafeBytes { raw in
                    execs.withUnsafeMutableBufferPointer { sg_proc_connector_parse(raw.baseAddress, got, $0.baseAddress, Int32($0.count)) }
                }
                guard count > 0 else { continue }
                stats.withLock { $0.processExecs += UInt64(count) }
                for e in execs.prefix(Int(count)) { check(pid: e.tgid) }
            }
        }
    }

    /// Checks every running process (protection raised, notifications lost, start).
    /// `byContent`: then hashes the executables of the processes no name, path or argument
    /// matched (through the digest cache, off the hasher that exec answers wait for) against
    /// the listed SHA-256, so a renamed copy started before the protection is ended too.
    public func sweep(byContent: Bool = true, lostEvents: Bool = false) {
        guard config.withLock({ $0.protection.level != .none }) else { return }
        let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }
        // Names and paths first for everyone (cheap), then the contents of the others
        // (hashing a large executable must not delay ending a listed tool).
        var unmatched: [Int32] = []
        for pid in pids where pid != getpid() {
            let fresh = lostEvents && (Self.processInfo(pid).0 ?? 0) != 0
            if !check(pid: pid, fresh: fresh) { unmatched.append(pid) }
        }
        guard byContent, config.withLock({ $0.decider.hasHashes }) else { return }
        for pid in unmatched { checkContent(pid: pid) }
    }

    /// Ends `pid` when it runs a capture tool (by name, path, arguments) and the protection in
    /// force says so. True when it matched. Also what fanotify cannot see: a direct run of the
    /// dynamic loader is judged by the program it loads; an executable with no file (memfd,
    /// deleted) by the name it carries and its content; one on a filesystem no mark covers (a
    /// user namespace's own tmpfs) by its content and trust, and that filesystem is marked.
    /// `fresh`: the process has just exec'd (from the connector); a sweep over every process
    /// judges by name, path and arguments only (a long-running daemon whose binary an upgrade
    /// replaced shows as deleted, and is not a capture tool for that).
    @discardableResult
    func check(pid: Int32, fresh: Bool = true) -> Bool {
        let cfg = config.withLock { $0 }
        guard cfg.protection.level != .none else { return false }
        guard let exe = Self.readLink("/proc/\(pid)/exe") else {
            // No path to read (longer than PATH_MAX, or the process is gone): judged by the
            // content of /proc/PID/exe, which needs none, and its filesystem is marked.
            if fresh, access("/proc/\(pid)/exe", F_OK) == 0 || errno == ENAMETOOLONG {
                let unnamed = "/proc/\(pid)/exe (a path too long to read)"
                markFirstSight(pid: pid, exe: unnamed)
                judgeContent(pid: pid, exe: nil, program: unnamed, file: "/proc/\(pid)/exe", anonymous: true, cfg: cfg)
            }
            return false
        }
        if let anonymous = ExecDecider.anonymousName(exe) {
            if let reason = cfg.decider.running(executable: anonymous, argv: [], protection: cfg.protection) {
                return end(pid: pid, exe: exe, sha256: nil, reason: "\(reason); it runs with no file of its own (\(exe))", cfg: cfg)
            }
            if fresh { judgeContent(pid: pid, exe: exe, program: exe, file: "/proc/\(pid)/exe", anonymous: true, cfg: cfg) }
            return false
        }
        if ExecDecider.isLoader(exe) {
            // Trusted-only implies capture.loader: deny (its program could be anything).
            if cfg.decider.rule.loader == .deny || cfg.protection.level == .trustedOnly, let uid = Self.processInfo(pid).0, uid != 0 {
                let argv = Self.commandLine(pid) ?? []  // for the record only: the first page is enough
                let why = cfg.decider.rule.loader == .deny ? "capture.loader: deny" : "\(cfg.decider.who(cfg.protection)) allows trusted executables only, and the loader run directly could load anything"
                return end(pid: pid, exe: exe, sha256: nil, reason: "uid \(uid) ran the dynamic loader \(exe) directly (\(argv.prefix(4).map { String($0.prefix(200)) }.joined(separator: " "))): \(why)", cfg: cfg)
            }
            // The whole command line: a long argv[0] or option must not push the program out of sight.
            let (full, complete) = Self.fullCommandLine(pid)
            guard complete, let (program, index) = ExecDecider.loaderProgram(full) else {
                if !complete {
                    return end(pid: pid, exe: exe, sha256: nil, reason: "the dynamic loader \(exe) was run directly with a command line too long to judge (over \(Self.commandLineLimit) bytes)", cfg: cfg)
                }
                return false
            }
            let (shown, file) = Self.resolve(program, for: pid)
            // The file the path leads to (a symlink under an innocent name names the real one).
            let fd = open(file, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
            let real = fd >= 0 ? Self.path(of: fd) : nil
            if fd >= 0 { close(fd) }
            for candidate in [shown] + (real.map { [$0] } ?? []) {
                if let reason = cfg.decider.running(executable: candidate, argv: Array(full[index...].prefix(2)), protection: cfg.protection) {
                    return end(pid: pid, exe: exe, shown: shown, sha256: nil, reason: "\(reason), loaded by the dynamic loader \(exe)", cfg: cfg)
                }
            }
            if fresh { judgeContent(pid: pid, exe: exe, program: shown, file: file, anonymous: false, cfg: cfg) }
            return false
        }
        // One readlink for most execs; the command line only where it can matter.
        let argv = cfg.decider.needsCommandLine(executable: exe) ? (Self.commandLine(pid) ?? []) : []
        if let reason = cfg.decider.running(executable: exe, argv: argv, protection: cfg.protection) {
            return end(pid: pid, exe: exe, sha256: nil, reason: reason + " (" + argv.prefix(6).joined(separator: " ") + ")", cfg: cfg)
        }
        // A filesystem below a watched path that this daemon's mount table does not show
        // (mounted in a user's own mount namespace): mark it for the next exec (again each
        // time: marking is idempotent, and a device number may have been reused), judge this
        // one by content.
        if fresh, MountEntry(device: 0, mountPoint: exe, fsType: "").isCovered(by: marked.withLock { $0 }), markFirstSight(pid: pid, exe: exe) {
            judgeContent(pid: pid, exe: exe, program: exe, file: "/proc/\(pid)/exe", anonymous: false, cfg: cfg)
        }
        return false
    }

    /// Marks the filesystem of `pid`'s executable when this daemon's mount table does not show
    /// it; true when it did so (the exec was not seen by fanotify).
    /// (A filesystem a user mounted in their own namespace, `unshare -Urm`, and execs from
    /// there or through /proc/PID/root from outside it. segguardd in a container has no process
    /// watcher: the kernel gives the connector to the initial namespaces only.)
    @discardableResult
    func markFirstSight(pid: Int32, exe: String) -> Bool {
        var st = stat()
        guard stat("/proc/\(pid)/exe", &st) == 0 else { return false }
        let device = UInt64(st.st_dev)
        guard !knownDevices.withLock({ $0.contains(device) }) else { return false }
        if sg_fanotify_mark_filesystem(fanotifyFd, "/proc/\(pid)/exe", 1) == 0 {
            logger.notice("capture blocking: marked the filesystem of an exec first seen by the process watcher", metadata: ["path": "\(exe)", "pid": "\(pid)"])
        }
        return true
    }

    /// The most of a loader's command line read (an argument list longer than this is not judged: ended).
    static let commandLineLimit = 1 << 20

    /// The whole command line (up to `commandLineLimit` bytes); false when it was longer.
    static func fullCommandLine(_ pid: Int32) -> ([String], Bool) {
        let fd = open("/proc/\(pid)/cmdline", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return ([], true) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while bytes.count <= commandLineLimit {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        guard bytes.count <= commandLineLimit else { return ([], false) }
        return (bytes.split(separator: 0, omittingEmptySubsequences: false).dropLast(bytes.last == 0 ? 1 : 0).map { String(decoding: $0, as: UTF8.self) }, true)
    }

    /// The path a process gave (the loader's program argument) as it would show it, and a path
    /// this daemon can open it by (through the process's own root or working directory, so a
    /// file in another mount namespace is the one read).
    static func resolve(_ program: String, for pid: Int32) -> (shown: String, file: String) {
        // Names that mean "this process" must mean the loader's process, not this daemon.
        for (prefix, own) in [("/proc/self/", "/proc/\(pid)/"), ("/proc/thread-self/", "/proc/\(pid)/"), ("/dev/fd/", "/proc/\(pid)/fd/")] where program.hasPrefix(prefix) {
            let mapped = own + program.dropFirst(prefix.count)
            return (program, mapped)
        }
        if let n = ["/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2][program] { return (program, "/proc/\(pid)/fd/\(n)") }
        if program.hasPrefix("/proc/") { return (program, program) }
        if program.hasPrefix("/") { return (program, "/proc/\(pid)/root\(program)") }
        let cwd = readLink("/proc/\(pid)/cwd") ?? "."
        return (cwd == "/" ? "/" + program : cwd + "/" + program, "/proc/\(pid)/cwd/\(program)")
    }

    /// Ends `pid` (enforce) or records that it would be (audit): through a pidfd, and only while
    /// it still runs `exe`. True when it was ended or would be.
    /// `shown`: the path recorded, when it is not `exe` (the program a loader loads).
    /// `exe` nil: the executable's path cannot be read; `identity`, when given, is the file the
    /// process must still run.
    @discardableResult
    func end(pid: Int32, exe: String?, shown: String? = nil, sha256: String?, reason: String, cfg: Config, pidfd given: Int32 = -1,
             identity: FileIdentity? = nil) -> Bool {
        var outcome: CaptureDecisionRecord.Outcome = .wouldBeKilled
        if cfg.mode == .enforce {
            // pidfd: the signal reaches this process, not a later one that got its pid.
            let pidfd = given >= 0 ? given : sg_pidfd_open(pid)
            guard pidfd >= 0 else { return false }
            defer { if given < 0 { close(pidfd) } }
            guard Self.readLink("/proc/\(pid)/exe") == exe else { return false }
            if let identity {
                let now = open("/proc/\(pid)/exe", O_RDONLY | O_CLOEXEC | O_NONBLOCK)
                defer { if now >= 0 { close(now) } }
                guard now >= 0, FileIdentity(fd: now) == identity else { return false }
            }
            var st = stat()
            let running = stat("/proc/\(pid)/exe", &st) == 0 ? (UInt64(st.st_dev), UInt64(st.st_ino)) : nil
            var owner = stat()
            let uid = stat("/proc/\(pid)", &owner) == 0 ? owner.st_uid : nil
            let commandLineBefore = Self.commandLine(pid) ?? []
            guard sg_pidfd_send_signal(pidfd, SIGKILL) == 0 else { return false }
            outcome = .killed
            stats.withLock { $0.processesKilled += 1 }
            if let running, let uid {
                endForks(of: pid, file: running, uid: uid, commandLine: commandLineBefore, shown: shown ?? exe ?? "/proc/\(pid)/exe", cfg: cfg)
            }
        }
        record(outcome, exe: shown ?? exe ?? "/proc/\(pid)/exe", sha256: sha256, pid: pid, profile: cfg.protection.profile, reason: reason)
        return true
    }

    /// A process ended after its exec may have forked meanwhile (a child that calls setsid, a
    /// relay that forks and exits every few ms): every process of the same user that runs the
    /// same file with the same command line (a fork keeps both) is ended too, now and twice more
    /// shortly after (forks in flight).
    func endForks(of pid: Int32, file: (UInt64, UInt64), uid: uid_t, commandLine: [String], shown: String, cfg: Config) {
        let pass: @Sendable () -> Void = { [self] in
            var ended: [Int32] = []
            let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }
            for other in pids where other != pid && other != getpid() {
                var owner = stat()
                guard stat("/proc/\(other)", &owner) == 0, owner.st_uid == uid else { continue }
                var st = stat()
                guard stat("/proc/\(other)/exe", &st) == 0, UInt64(st.st_dev) == file.0, UInt64(st.st_ino) == file.1,
                      Self.commandLine(other) ?? [] == commandLine else { continue }
                let fd = sg_pidfd_open(other)
                guard fd >= 0 else { continue }
                // Still that file (not exec'd since the stat) when the signal goes.
                var again = stat()
                if stat("/proc/\(other)/exe", &again) == 0, UInt64(again.st_dev) == file.0, UInt64(again.st_ino) == file.1, sg_pidfd_send_signal(fd, SIGKILL) == 0 {
                    ended.append(other)
                }
                close(fd)
            }
            guard !ended.isEmpty else { return }
            stats.withLock { $0.processesKilled += UInt64(ended.count) }
            record(.killed, exe: shown, sha256: nil, pid: ended[0], profile: cfg.protection.profile,
                   reason: "\(ended.count) more process(es) of uid \(uid) running the same file as pid \(pid) (forked before it was ended): \(ended.prefix(8).map(String.init).joined(separator: ", "))")
        }
        judges.async(execute: pass)
        judges.asyncAfter(deadline: .now() + .milliseconds(20), execute: pass)
        judges.asyncAfter(deadline: .now() + .milliseconds(100), execute: pass)
    }

    /// Judges a running program by its content, off the watcher's thread: a listed SHA-256, a
    /// copy of the loader, and under trusted-only its trust (dpkg's record or capture.allow; a
    /// file no package ships is ended without hashing unless capture.allow could allow it).
    /// `program`: the path shown and looked up in dpkg's index; `file`: where to read it (a path
    /// the user chose, for the loader's program: opened non-blocking, only a regular file is
    /// read, at most its size). `exe`: what /proc/PID/exe reads now, or nil when it cannot be
    /// read (then the process must still run the file judged, by identity).
    func judgeContent(pid: Int32, exe: String?, program: String, file: String, anonymous: Bool, cfg: Config) {
        let trusted = cfg.protection.level == .trustedOnly
        guard trusted || cfg.decider.hasHashes || !loaderHashes.isEmpty else { return }
        let pidfd = sg_pidfd_open(pid)
        guard pidfd >= 0 else { return }
        let shownExe = exe ?? program
        // Bounded: a user cannot pile up judgements (each may wait for a hash). Beyond the
        // bound trusted-only ends the process unjudged; the blocklist lets it be.
        let admitted = pendingJudgements.withLock { n -> Bool in
            guard n < Self.pendingJudgementLimit else { return false }
            n += 1
            return true
        }
        guard admitted else {
            if trusted { end(pid: pid, exe: exe, shown: program, sha256: nil, reason: "running \(program) could not be judged (too many judgements pending): \(cfg.decider.who(cfg.protection)) allows trusted executables only", cfg: cfg, pidfd: pidfd) }
            close(pidfd)
            return
        }
        judges.async { [self] in
            defer {
                close(pidfd)
                pendingJudgements.withLock { $0 -= 1 }
            }
            var package: PackageRecord = anonymous ? .none : .unknown
            if trusted && !anonymous {
                if dpkg.lookup("/") == .notLoaded { dpkg.loadNow() }
                package = dpkg.record(program)
            }
            if trusted, package == .none, !cfg.decider.allowsByContent {
                let why = anonymous ? "running \(shownExe) has no file of its own (memfd, deleted, or a path too long to read) and capture.allow lists no content: \(cfg.decider.who(cfg.protection)) allows trusted executables only"
                    : cfg.decider.untrustedRunning(path: program, sha256: nil, packaged: false, protection: cfg.protection)!
                end(pid: pid, exe: exe, shown: program, sha256: nil, reason: program == shownExe ? why : "\(why), loaded by the dynamic loader \(shownExe)", cfg: cfg, pidfd: pidfd)
                return
            }
            let fd = open(file, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
            var st = stat()
            let regular = fd >= 0 && fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
            let identity = fd >= 0 && exe == nil ? FileIdentity(fd: fd) : nil
            let digests = regular ? self.digests(fd: fd, timeoutMs: Self.sweepHashTimeoutMs, on: .global(qos: .utility)) : nil
            if fd >= 0 { close(fd) }
            guard let digests else {
                if trusted {
                    let what = fd < 0 || regular ? "could not be read in time" : "is not a regular file"
                    end(pid: pid, exe: exe, shown: program, sha256: nil, reason: "running \(program) \(what): \(cfg.decider.who(cfg.protection)) allows trusted executables only", cfg: cfg, pidfd: pidfd, identity: identity)
                }
                return
            }
            var packaged: Bool?
            if case .md5(let m) = package { packaged = m == digests.md5 } else if package == .none { packaged = false }
            let reason = cfg.decider.running(sha256: digests.sha256, executable: program, protection: cfg.protection)
                ?? (loaderHashes.contains(digests.sha256) && !ExecDecider.isLoader(program) ? "running \(program) is a copy of the dynamic loader (SHA-256 \(digests.sha256))" : nil)
                ?? cfg.decider.untrustedRunning(path: program, sha256: digests.sha256, packaged: packaged, protection: cfg.protection)
            guard let reason else { return }
            end(pid: pid, exe: exe, shown: program, sha256: digests.sha256, reason: program == shownExe ? reason : "\(reason), loaded by the dynamic loader \(shownExe)",
                cfg: cfg, pidfd: pidfd, identity: identity)
        }
    }

    /// Judgements of running programs waiting or hashing at once, at most.
    static let pendingJudgementLimit = 64

    /// Under trusted-only: ends every process of the sessions' users (never root's) whose
    /// executable is not trusted, e.g. a tool started before the session to wait for it.
    func sweepUntrusted() {
        let cfg = config.withLock { $0 }
        guard cfg.protection.level == .trustedOnly, !cfg.sessionUsers.isEmpty else { return }
        if dpkg.lookup("/") == .notLoaded { dpkg.loadNow() }
        let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }
        for pid in pids where pid != getpid() {
            guard let uid = Self.processInfo(pid).0, cfg.sessionUsers.contains(uid) else { continue }
            guard let exe = Self.readLink("/proc/\(pid)/exe") else {
                if errno == ENAMETOOLONG {
                    judgeContent(pid: pid, exe: nil, program: "/proc/\(pid)/exe (a path too long to read)", file: "/proc/\(pid)/exe", anonymous: true, cfg: cfg)
                }
                continue
            }
            judgeContent(pid: pid, exe: exe, program: exe, file: "/proc/\(pid)/exe", anonymous: ExecDecider.anonymousName(exe) != nil, cfg: cfg)
        }
    }

    /// Ends `pid` when its executable's SHA-256 is listed (a renamed copy). The pidfd is taken
    /// first and pins the process; the file is hashed (cache, or within a deadline); the
    /// signal goes only if the process still runs that very file (same file identity).
    func checkContent(pid: Int32) {
        let cfg = config.withLock { $0 }
        guard cfg.protection.level != .none, cfg.decider.hasHashes else { return }
        let pidfd = sg_pidfd_open(pid)
        guard pidfd >= 0 else { return }
        defer { close(pidfd) }
        guard let exe = Self.readLink("/proc/\(pid)/exe") else { return }
        let fd = open("/proc/\(pid)/exe", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        guard let id = FileIdentity(fd: fd), let digests = digests(fd: fd, timeoutMs: Self.sweepHashTimeoutMs, on: .global(qos: .utility)),
              let reason = cfg.decider.running(sha256: digests.sha256, executable: exe, protection: cfg.protection) else { return }
        var outcome: CaptureDecisionRecord.Outcome = .wouldBeKilled
        if cfg.mode == .enforce {
            let again = open("/proc/\(pid)/exe", O_RDONLY | O_CLOEXEC)
            defer { if again >= 0 { close(again) } }
            guard again >= 0, FileIdentity(fd: again) == id, sg_pidfd_send_signal(pidfd, SIGKILL) == 0 else { return }
            outcome = .killed
            stats.withLock { $0.processesKilled += 1 }
        }
        record(outcome, exe: exe, sha256: digests.sha256, pid: pid, profile: cfg.protection.profile, reason: reason)
    }

    /// How long the sweep waits for one executable's digests (a hung read, e.g. a stuck
    /// network mount, must not stop the sweep: that file is skipped, the hashing goes on and
    /// fills the cache).
    static let sweepHashTimeoutMs = 5000

    func record(_ outcome: CaptureDecisionRecord.Outcome, exe: String, sha256: String?, pid: Int32, profile: String?, reason: String) {
        let (uid, ppid) = Self.processInfo(pid)
        let parentExe = ppid.flatMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\($0)/exe") }
        onRecord(CaptureDecisionRecord(outcome: outcome, path: exe, sha256: sha256, pid: pid, uid: uid, parentPid: ppid,
                                       parentExecutable: parentExe, profile: profile, reason: reason))
    }

    public func stop() {
        stopSignal.stop()
        memfdNoexec.restore()
    }


    func run() {
        var buf = [UInt8](repeating: 0, count: 8192)
        // Room for every event a read can return (24-byte records): events left unparsed would
        // never be answered, and their processes would hang.
        var events = [sg_fanotify_event](repeating: sg_fanotify_event(), count: buf.count / 24 + 1)
        while stopSignal.wait(for: fanotifyFd) == .readable {
            while true {
                let got = buf.withUnsafeMutableBytes { read(fanotifyFd, $0.baseAddress, $0.count) }
                if got <= 0 { break }
                let count = buf.withUnsafeBytes { raw in
                    events.withUnsafeMutableBufferPointer { sg_fanotify_parse(raw.baseAddress, got, $0.baseAddress, Int32($0.count)) }
                }
                guard count >= 0 else {
                    logger.critical("fanotify returned a record of an unknown version; capture blocking stops (the kernel allows pending execs when the descriptor closes)")
                    return
                }
                for e in events.prefix(Int(count)) { handle(e) }
            }
        }
    }

    /// Answers one event, now or (when its content must be hashed) from `answerers`: a
    /// permission event is never left unanswered, and a slow hash never holds up the events
    /// behind it.
    func handle(_ e: sg_fanotify_event) {
        guard e.fd >= 0 else { return }
        guard sg_fanotify_is_exec_perm(e.mask) != 0 else {
            close(e.fd)
            return
        }
        let started = monotonicNanos()
        let hint = refresh.withLock { r -> (@Sendable () -> Void)? in
            guard let h = r.hint, started &- r.last > 1_000_000_000 else { return nil }
            r.last = started
            return h
        }
        if let hint { DispatchQueue.global(qos: .utility).async(execute: hint) }
        let cfg = config.withLock { $0 }
        let path = Self.path(of: e.fd) ?? "?"
        // Under trusted-only dpkg's record decides first: a path no package ships is denied
        // with no hashing (unless capture.allow could allow it by content).
        let package: PackageRecord = cfg.protection.level == .trustedOnly ? dpkg.record(path) : .unknown
        switch cfg.decider.quick(path: path, protection: cfg.protection, package: package) {
        case .allow:
            finish(e, path: path, cfg: cfg, verdict: .allow)
        case .deny(let reason):
            finish(e, path: path, cfg: cfg, verdict: .deny(reason: reason))
        case .needsContent:
            if let id = FileIdentity(fd: e.fd), let hit = cache.get(id) {
                stats.withLock { $0.cacheHits += 1 }
                finish(e, path: path, cfg: cfg, verdict: verdict(path, hit, package, cfg), sha256: hit.sha256)
                return
            }
            let admitted = pendingAnswers.withLock { n -> Bool in
                guard n < Self.pendingAnswerLimit else { return false }
                n += 1
                return true
            }
            guard admitted else {
                let answer = cfg.decider.failAnswer(path: path, protection: cfg.protection)
                if !answer.isDeny { followUp(e, path: path, package: package, cfg: cfg) }
                finish(e, path: path, cfg: cfg, verdict: answer, failMode: true)
                return
            }
            answerers.async { [self] in
                defer { pendingAnswers.withLock { $0 -= 1 } }
                let left = cfg.decider.rule.decisionTimeoutMs - Int((monotonicNanos() &- started) / 1_000_000)
                if let d = digests(fd: e.fd, timeoutMs: left) {
                    finish(e, path: path, cfg: cfg, verdict: verdict(path, d, package, cfg), sha256: d.sha256)
                } else {
                    let answer = cfg.decider.failAnswer(path: path, protection: cfg.protection)
                    if !answer.isDeny { followUp(e, path: path, package: package, cfg: cfg) }
                    finish(e, path: path, cfg: cfg, verdict: answer, failMode: true)
                }
            }
        }
    }

    /// An exec the fail mode allowed is judged again once its content is known: a listed one is
    /// ended then (while it still runs that very file).
    func followUp(_ e: sg_fanotify_event, path: String, package: PackageRecord, cfg: Config) {
        guard cfg.mode == .enforce else { return }
        let admitted = pendingJudgements.withLock { n -> Bool in
            guard n < Self.pendingJudgementLimit else { return false }
            n += 1
            return true
        }
        guard admitted else { return }
        let fd = dup(e.fd)
        guard fd >= 0 else {
            pendingJudgements.withLock { $0 -= 1 }
            return
        }
        let pid = e.pid
        judges.async { [self] in
            defer {
                close(fd)
                pendingJudgements.withLock { $0 -= 1 }
            }
            guard let id = FileIdentity(fd: fd), let d = digests(fd: fd, timeoutMs: Self.sweepHashTimeoutMs, on: .global(qos: .utility)),
                  case .deny(let reason) = verdict(path, d, package, cfg) else { return }
            end(pid: pid, exe: path, sha256: d.sha256, reason: "\(reason) (allowed at exec by capture.fail_mode, ended once its content was known)", cfg: cfg, identity: id)
        }
    }

    /// At most this many execs wait for their hash at once (beyond, the fail mode answers now).
    static let pendingAnswerLimit = 256

    func verdict(_ path: String, _ d: FileDigests, _ package: PackageRecord, _ cfg: Config) -> ExecVerdict {
        var packaged: Bool?
        if cfg.protection.level == .trustedOnly {
            switch package {
            case .md5(let md5): packaged = md5 == d.md5
            case .none: packaged = false
            case .unknown: packaged = nil
            }
        }
        return cfg.decider.decide(path: path, sha256: d.sha256, packaged: packaged, protection: cfg.protection)
    }

    /// Writes the answer, closes the event's descriptor, counts and records it.
    func finish(_ e: sg_fanotify_event, path: String, cfg: Config, verdict: ExecVerdict, sha256: String? = nil, failMode: Bool = false) {
        defer { close(e.fd) }
        let deny = verdict.isDeny && cfg.mode == .enforce
        // Who tried, read while the process still waits for this answer (a denied exec
        // exits at once, and its /proc entry with it).
        let recorded = verdict.isDeny || failMode
        let (uid, ppid) = recorded ? Self.processInfo(e.pid) : (nil, nil)
        let parentExe = recorded ? ppid.flatMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\($0)/exe") } : nil
        if sg_fanotify_respond(fanotifyFd, e.fd, deny ? 0 : 1) != 0 {
            logger.error("cannot answer a fanotify event", metadata: ["path": "\(path)", "errno": "\(errno)"])
        }
        stats.withLock { s in
            s.events += 1
            if deny { s.denied += 1 } else { s.allowed += 1 }
            if failMode { s.failModeAnswers += 1 }
        }
        guard verdict.isDeny || failMode else { return }
        let reason: String
        if case .deny(let r) = verdict { reason = r } else { reason = "no decision for \(path) within \(cfg.decider.rule.decisionTimeoutMs) ms: allowed by capture.fail_mode" }
        let outcome: CaptureDecisionRecord.Outcome = failMode && !verdict.isDeny ? .failMode : (deny ? .denied : .wouldBeDenied)
        onRecord(CaptureDecisionRecord(outcome: outcome, path: path, sha256: sha256, pid: e.pid, uid: uid, parentPid: ppid,
                                       parentExecutable: parentExe, profile: cfg.protection.profile, reason: reason))
    }

    /// The file's digests from the cache, or hashed within `timeoutMs`; nil when that is not
    /// enough (the hashing goes on and fills the cache for the next exec). Exec answers hash on
    /// `hasher`, at most `hashers` files at once: a second exec of a file being hashed waits
    /// for that job; past the bound the exec gets the fail mode at once (a user cannot make a
    /// queue of large files that every later exec waits behind). Sweeps pass their own queue.
    func digests(fd: Int32, timeoutMs: Int, on queue: DispatchQueue? = nil) -> FileDigests? {
        guard let id = FileIdentity(fd: fd) else { return nil }
        if let hit = cache.get(id) {
            stats.withLock { $0.cacheHits += 1 }
            return hit
        }
        let deadline = DispatchTime.now() + .milliseconds(max(timeoutMs, 0))
        enum Slot { case wait(DispatchGroup), run(DispatchGroup), full }
        let slot = hashing.withLock { h -> Slot in
            if let g = h[id] { return .wait(g.group) }
            // Only exec answers count against the bound (sweeps hash on their own queue).
            if queue == nil && h.values.count(where: \.forExec) >= hashers { return .full }
            let g = DispatchGroup()
            g.enter()
            h[id] = (g, queue == nil)
            return .run(g)
        }
        switch slot {
        case .full:
            return nil
        case .wait(let g):
            guard g.wait(timeout: deadline) == .success else { return nil }
            return cache.get(id)
        case .run(let g):
            let copy = dup(fd)
            guard copy >= 0 else {
                _ = hashing.withLock { $0.removeValue(forKey: id) }
                g.leave()
                return nil
            }
            let delay = hashDelayMs
            (queue ?? hasher).async { [self] in
                defer {
                    close(copy)
                    _ = hashing.withLock { $0.removeValue(forKey: id) }
                    g.leave()
                }
                if delay > 0 { usleep(UInt32(delay) * 1000) }
                guard let d = FileDigests.of(fd: copy) else { return }
                // Written to while it was read (the kernel stops writes to a file only once its
                // exec is allowed): this digest is of no one version. Not cached; the caller
                // finds nothing and answers by the fail mode (deny under trusted-only).
                guard FileIdentity(fd: copy) == id else {
                    logger.notice("an executable changed while it was hashed: no decision from its content", metadata: ["inode": "\(id.inode)"])
                    return
                }
                cache.put(id, d)
                stats.withLock { $0.hashed += 1 }
            }
            guard g.wait(timeout: deadline) == .success else { return nil }
            return cache.get(id)
        }
    }

    /// The path of an open descriptor (readlink of /proc/self/fd/N), without Foundation: this
    /// runs for every exec on the watched filesystems.
    static func path(of fd: Int32) -> String? { readLink("/proc/self/fd/\(fd)") }

    /// readlink(2) into a stack-sized buffer.
    static func readLink(_ path: String) -> String? {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: Int(PATH_MAX)) { buf in
            let n = readlink(path, buf.baseAddress!, buf.count)
            guard n > 0 else { return nil }
            return String(decoding: UnsafeRawBufferPointer(start: buf.baseAddress!, count: n), as: UTF8.self)
        }
    }

    /// The first `limit` bytes of /proc/PID/cmdline split at NULs, without Foundation.
    static func commandLine(_ pid: Int32, limit: Int = 4096) -> [String]? {
        let fd = open("/proc/\(pid)/cmdline", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: limit) { buf -> [String]? in
            let n = read(fd, buf.baseAddress!, buf.count)
            guard n > 0 else { return nil }
            return UnsafeBufferPointer(rebasing: buf[0..<n]).split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        }
    }

    /// Real uid and parent pid of `pid` from /proc/PID/status.
    static func processInfo(_ pid: Int32) -> (UInt32?, Int32?) {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return (nil, nil) }
        var uid: UInt32?, ppid: Int32?
        for line in text.split(separator: "\n") {
            if line.hasPrefix("Uid:") { uid = line.dropFirst(4).split(whereSeparator: \.isWhitespace).first.flatMap { UInt32($0) } }
            if line.hasPrefix("PPid:") { ppid = Int32(line.dropFirst(5).trimmed()) }
        }
        return (uid, ppid)
    }
}

/// The exec gate the agent drives: blocks capture tools at exec and ends running ones, at the
/// protection level the policy and the running sessions call for. `CaptureBlocker` is the real
/// one (fanotify and the process connector).
public protocol ExecGate: AnyObject, Sendable {
    /// Marks the filesystems holding `paths`.
    func watch(_ paths: [String]) throws(CaptureSetupError)
    /// Replaces the marks (a policy that changed `capture.watch`).
    func rewatch(_ paths: [String]) throws(CaptureSetupError)
    var watched: [String] { get }
    /// A new policy or a change of the sessions running: takes effect for the next exec.
    func update(rule: CaptureRule, sessions: CaptureSessions)
    var protection: CaptureProtectionState { get }
    var statistics: CaptureStatistics { get }
    /// Called (off the caller's thread, at most once a second) when sessions may have ended.
    func onStaleProtection(_ hint: @escaping @Sendable () -> Void)
    /// Starts answering execs; `procConnector` is a connector socket opened earlier, or -1.
    func start(procConnector: Int32)
    func stop()
}

extension CaptureBlocker: ExecGate {}
