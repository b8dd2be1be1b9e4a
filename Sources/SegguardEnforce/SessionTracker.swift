// Tracks VDI client sessions started through the launch gate and ends them. Owns: one cgroup
// v2 directory per session under a base directory (e.g. /sys/fs/cgroup/segguard/session-7),
// and a pidfd of each session's first process. Every process of a session stays in its
// cgroup, whatever it forks (a double-forked child included), so ending a session kills the
// whole cgroup. Must not own: decisions or modes (the Enforcer decides when to end what).

import CSegguardShims
import FoundationEssentials
import SegguardEssentials
import Dispatch
import SegguardSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A failure of session tracking, with the call and errno.
public struct SessionError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Registers sessions in cgroups and ends them.
public final class SessionTracker: Sendable {
    struct Entry: Sendable {
        var info: SessionInfo
        /// -1 when none could be opened (an adopted session whose first process is gone).
        var pidfd: Int32
        /// Being ended by `terminate`: `prune` must not release it meanwhile.
        var terminating = false
    }

    public let base: String
    /// How nftables names the sessions' parent cgroup (`socket cgroupv2 level N "path"`), so
    /// that only sockets of processes in a session reach the gateways; nil when it cannot be
    /// named (the base is not under /sys/fs/cgroup).
    public let socketMatch: NftablesRuleset.SessionMatch?
    private let state = Mutex<(next: UInt64, entries: [UInt64: Entry])>((1, [:]))

    /// The launcher whose requests alone become sessions (`LauncherCheck`); nil: any
    /// requester (tests, benchmarks).
    public let launcher: String?

    /// `base` is a cgroup v2 directory to create sessions in; it is created if missing.
    /// `launcher`: only a request from this executable, unaltered, is put into a session.
    /// Sessions left by an earlier run of segguardd (a restart, a crash) are adopted so that
    /// they are still ended when the segment is lost; empty ones are removed.
    public init(base: String, launcher: String?) throws(SessionError) {
        // As /proc/PID/exe names it: symbolic links resolved.
        self.launcher = launcher.map(PathName.resolved)
        self.base = base
        if mkdir(base, 0o755) != 0 && errno != EEXIST {
            throw SessionError("mkdir \(base): \(String(cString: strerror(errno))) (errno \(errno))")
        }
        guard access("\(base)/cgroup.procs", F_OK) == 0 else {
            throw SessionError("\(base) is not a cgroup v2 directory (no cgroup.procs)")
        }
        socketMatch = SessionTracker.socketMatch(for: base, mounts: SessionTracker.cgroup2Mounts())
        var next: UInt64 = 1
        var adopted: [UInt64: Entry] = [:]
        for name in (try? FileManager.default.contentsOfDirectory(atPath: base)) ?? [] where name.hasPrefix("session-") {
            guard let id = UInt64(name.dropFirst("session-".count)) else { continue }
            next = max(next, id + 1)
            let dir = "\(base)/\(name)"
            let pids = SessionTracker.pids(in: dir)
            guard SessionTracker.isPopulated(dir), let first = pids.first else {
                rmdir(dir)
                continue
            }
            let info = SessionInfo(id: id, profile: SessionTracker.adoptedProfile, pid: first, uid: SessionTracker.uid(of: first) ?? 0,
                                   startedAt: Date(), cgroup: dir, pids: pids)
            adopted[id] = Entry(info: info, pidfd: sg_pidfd_open(first))
        }
        state.withLock { $0 = (next, adopted) }
    }

    /// Profile name given to sessions adopted from an earlier run (their profile is unknown,
    /// so they are treated as needing the My Number segment).
    public static let adoptedProfile = "(adopted after restart)"

    /// Where sessions go by default: under the service's own cgroup when segguardd runs as a
    /// systemd service with `Delegate=yes` (`<mount>/system.slice/segguardd.service/sessions`:
    /// the subtree is segguardd's, and the service manager leaves it alone), else
    /// `<cgroup2 mount>/segguard`. Nil without a cgroup v2 mount.
    public static func defaultBase() -> String? {
        guard let mount = cgroup2Mounts().first else { return nil }
        if let own = ownCgroup(), own.hasSuffix(".service"), isDelegated("\(mount.point)\(own)") {
            return "\(mount.point)\(own)/sessions"
        }
        return mount.point + "/segguard"
    }

    /// A cgroup v2 mount: where it is, and which cgroup of the hierarchy (relative to this
    /// process's cgroup namespace) is its root.
    public struct Mount: Sendable, Equatable {
        public var point: String
        public var root: String
        public init(point: String, root: String) { (self.point, self.root) = (point, root) }
    }

    /// The cgroup v2 mounts, from /proc/self/mountinfo (usually one).
    public static func cgroup2Mounts(_ mountinfo: String? = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) -> [Mount] {
        var out: [Mount] = []
        for line in (mountinfo ?? "").split(separator: "\n") {
            // id parent major:minor root mount-point options ... - fstype source options
            let halves = line.components(separatedBy: " - ")
            guard halves.count == 2, halves[1].hasPrefix("cgroup2 ") else { continue }
            let fields = halves[0].split(separator: " ")
            guard fields.count >= 5 else { continue }
            out.append(Mount(point: unescapeMountinfo(String(fields[4])), root: unescapeMountinfo(String(fields[3]))))
        }
        return out
    }

    /// This process's cgroup v2 path ("0::/system.slice/segguardd.service" -> the path).
    static func ownCgroup() -> String? {
        guard let text = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8) else { return nil }
        return text.split(separator: "\n").first { $0.hasPrefix("0::") }.map { String($0.dropFirst(3)) }
    }

    /// The service manager gave this cgroup to us (Delegate=yes): systemd marks a delegated
    /// cgroup with the extended attribute `trusted.delegate=1` (root can write any cgroup, so
    /// write access says nothing). Without the mark, sessions go to `<mount>/segguard`.
    static func isDelegated(_ dir: String) -> Bool {
        var value = [UInt8](repeating: 0, count: 8)
        let n = getxattr(dir, "trusted.delegate", &value, value.count)
        return n == 1 && value[0] == UInt8(ascii: "1") && access("\(dir)/cgroup.subtree_control", W_OK) == 0
    }

    /// The nftables match for sockets of processes under `base`: its path relative to
    /// /sys/fs/cgroup (where nft looks a cgroupv2 path up) and its depth below the hierarchy's
    /// root as this process sees it (its cgroup namespace; the kernel adds the namespace root's
    /// own depth when the rule is added): the mount's own root depth plus the components below
    /// the mount point. Nil when nft cannot name it.
    public static func socketMatch(for base: String, mounts: [Mount]) -> NftablesRuleset.SessionMatch? {
        let clean = base.hasSuffix("/") ? String(base.dropLast()) : base
        guard let mount = mounts.filter({ clean.hasPrefix($0.point + "/") }).max(by: { $0.point.count < $1.point.count }) else { return nil }
        let below = clean.dropFirst(mount.point.count).split(separator: "/")
        let level = mount.root.split(separator: "/").count + below.count
        let sysfs = "/sys/fs/cgroup/"
        guard clean.hasPrefix(sysfs) else { return nil }
        return NftablesRuleset.SessionMatch(path: String(clean.dropFirst(sysfs.count)), level: level)
    }

    /// True when this process sees the whole cgroup hierarchy (the initial cgroup namespace,
    /// inode 0xEFFFFFFB). In another one (a container) the level is counted from the
    /// namespace's root, as the kernel does since nft_socket's cgroup namespace fix (2024;
    /// verified on 6.18); an older kernel counts from the real root and never matches: fail
    /// closed, and said so in the log.
    public static func inInitialCgroupNamespace(_ link: String? = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/cgroup")) -> Bool {
        link == "cgroup:[4026531835]"
    }

    /// mountinfo escapes space, tab, newline and backslash as \ooo.
    static func unescapeMountinfo(_ s: String) -> String {
        guard s.contains("\\") else { return s }
        var out = [UInt8](), bytes = Array(s.utf8), i = 0
        while i < bytes.count {
            if bytes[i] == 0x5C, i + 3 < bytes.count, let v = UInt8(String(decoding: bytes[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                out.append(v)
                i += 4
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Puts the process `pid` (and so everything it will fork) into a new session cgroup.
    ///
    /// `peerPidfd` (SO_PEERPIDFD, Linux 6.5+; -1 where unavailable) names the very process
    /// that connected; without it the pid's owner must be `uid`. The process must be alive
    /// before and after the move: a pid number cannot be reused while its process lives, so
    /// this proves the move reached the requester and not a process that recycled its pid.
    public func register(pid: Int32, uid: UInt32, profile: String, peerPidfd: Int32 = -1) throws(SessionError) -> SessionInfo {
        prune()
        let pidfd = peerPidfd >= 0 ? fcntl(peerPidfd, F_DUPFD_CLOEXEC, 0) : sg_pidfd_open(pid)
        guard pidfd >= 0 else {
            let e = peerPidfd >= 0 ? errno : -pidfd
            throw SessionError("the launcher (pid \(pid)) is gone: \(String(cString: strerror(e))) (errno \(e))")
        }
        func alive() -> Bool { sg_pidfd_send_signal(pidfd, 0) == 0 }
        guard alive(), SessionTracker.uid(of: pid) == uid else {
            close(pidfd)
            throw SessionError("the launcher (pid \(pid)) exited or is not owned by uid \(uid); nothing tracked")
        }
        if let launcher {
            let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")
            let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ").map { [UInt8]($0) }
            let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
            // Read while the pidfd proves it is the same process.
            if let problem = LauncherCheck.problem(executable: exe, environ: environ, status: status, expected: launcher) ?? (alive() ? nil : "the launcher exited") {
                close(pidfd)
                throw SessionError(problem)
            }
        }
        let id = state.withLock { s -> UInt64 in
            defer { s.next += 1 }
            return s.next
        }
        let dir = "\(base)/session-\(id)"
        guard mkdir(dir, 0o755) == 0 else {
            let e = errno
            close(pidfd)
            throw SessionError("mkdir \(dir): \(String(cString: strerror(e))) (errno \(e))")
        }
        do {
            try write("\(pid)\n", to: "\(dir)/cgroup.procs")
        } catch {
            close(pidfd)
            rmdir(dir)
            throw error
        }
        guard alive() else {
            // The pid may have been recycled between the checks: undo whatever was moved.
            SessionTracker.killAll(dir)
            close(pidfd)
            DispatchQueue.global(qos: .utility).async { rmdir(dir) }
            throw SessionError("the launcher (pid \(pid)) exited while it was being tracked; nothing started")
        }
        let info = SessionInfo(id: id, profile: profile, pid: pid, uid: uid, startedAt: Date(), cgroup: dir, pids: [pid])
        state.withLock { $0.entries[id] = Entry(info: info, pidfd: pidfd) }
        return info
    }

    /// Live sessions; sessions whose cgroup is empty are forgotten (and their cgroup removed).
    public func sessions() -> [SessionInfo] {
        prune()
        return state.withLock { s in s.entries.values.map(\.info) }
            .map { info in
                var i = info
                i.pids = SessionTracker.pids(in: info.cgroup)
                return i
            }
            .sorted { $0.id < $1.id }
    }

    /// Forgets sessions whose cgroup reports `populated 0` (a read failure keeps them) and
    /// releases their pidfd and cgroup. Only the remover closes: no double close.
    func prune() {
        let candidates = state.withLock { s in s.entries.values.filter { !$0.terminating }.map(\.info.id) }
        for id in candidates {
            guard let cg = state.withLock({ $0.entries[id]?.info.cgroup }), SessionTracker.populatedState(cg) == false else { continue }
            if let e = state.withLock({ s in s.entries[id]?.terminating == false ? s.entries.removeValue(forKey: id) : nil }) {
                forget(e)
            }
        }
    }

    /// Ends every live session whose profile satisfies `matching`: SIGTERM to every process of
    /// every such session at once, then SIGKILL (cgroup.kill) for what is left after
    /// `killTimeout` seconds. Blocks until done (at most `killTimeout` + 2 s).
    public func terminate(matching: @escaping @Sendable (String) -> Bool, killTimeout: Double) -> [TerminationResult] {
        let targets = state.withLock { s -> [Entry] in
            let t = s.entries.values.filter { !$0.terminating && matching($0.info.profile) }
            for e in t { s.entries[e.info.id]?.terminating = true }
            return t
        }
        var infos: [UInt64: SessionInfo] = [:]
        for e in targets {
            var info = e.info
            info.pids = SessionTracker.pids(in: info.cgroup)
            infos[e.info.id] = info
            if e.pidfd >= 0 { _ = sg_pidfd_send_signal(e.pidfd, SIGTERM) }
            // Processes of the cgroup cannot change pid under us: the cgroup holds them, and a
            // recycled pid would be a new process outside it, so re-read right before killing.
            for p in SessionTracker.pids(in: info.cgroup) { kill(p, SIGTERM) }
        }
        let deadline = Double(monotonicNanos()) / 1e9 + killTimeout
        var results: [TerminationResult] = []
        for e in targets {
            let remaining = max(0, deadline - Double(monotonicNanos()) / 1e9)
            var reapedAt = SessionTracker.waitEmpty(e.info.cgroup, timeout: remaining, pidfd: e.pidfd)
            var killed = false
            if reapedAt == 0 {
                killed = true
                SessionTracker.killAll(e.info.cgroup)
                reapedAt = SessionTracker.waitEmpty(e.info.cgroup, timeout: 2)
            }
            results.append(TerminationResult(session: infos[e.info.id] ?? e.info, killed: killed, reaped: reapedAt != 0, reapedAtNanos: reapedAt))
            let removed = state.withLock { s -> Entry? in
                if reapedAt != 0 { return s.entries.removeValue(forKey: e.info.id) }
                s.entries[e.info.id]?.terminating = false
                return nil
            }
            if let removed {
                // Removing a cgroup waits for RCU grace periods (10-30 ms): not on the kill path.
                if removed.pidfd >= 0 { close(removed.pidfd) }
                let dir = removed.info.cgroup
                DispatchQueue.global(qos: .utility).async { rmdir(dir) }
            }
        }
        return results
    }

    private func forget(_ e: Entry) {
        if e.pidfd >= 0 { close(e.pidfd) }
        let dir = e.info.cgroup
        DispatchQueue.global(qos: .utility).async { rmdir(dir) }
    }

    // MARK: cgroup files

    static func pids(in cgroup: String) -> [Int32] {
        guard let text = readSmallTextFile("\(cgroup)/cgroup.procs") else { return [] }
        return text.split(separator: "\n").compactMap { Int32($0) }
    }

    /// SIGKILL to every process: cgroup.kill where the kernel has it (5.14+), else one by one
    /// until the cgroup is empty (frozen first so nothing forks in between).
    static func killAll(_ cgroup: String) {
        if (try? write("1\n", to: "\(cgroup)/cgroup.kill")) != nil { return }
        try? write("1\n", to: "\(cgroup)/cgroup.freeze")
        for _ in 0..<100 {
            let pids = pids(in: cgroup)
            if pids.isEmpty { return }
            for p in pids { kill(p, SIGKILL) }
        }
    }

    /// Waits until the cgroup has no process and returns the monotonic time it was seen empty,
    /// or 0 on timeout. Woken by the session's pidfd (readable the moment its first process has
    /// exited, after it left the cgroup) and by inotify on cgroup.events (the kernel rate-limits
    /// that one to about one notification per 10 ms, so it only serves for leftover children).
    static func waitEmpty(_ cgroup: String, timeout: Double, pidfd: Int32 = -1) -> UInt64 {
        let events = "\(cgroup)/cgroup.events"
        let fd = inotify_init1(Int32(IN_CLOEXEC) | Int32(IN_NONBLOCK))
        // Closing an inotify instance waits for an SRCU grace period (10-20 ms): not on the kill path.
        defer { if fd >= 0 { DispatchQueue.global(qos: .utility).async { close(fd) } } }
        if fd >= 0 { _ = inotify_add_watch(fd, events, UInt32(IN_MODIFY)) }
        var watchPidfd = pidfd >= 0
        let deadline = monotonicNanos() + UInt64(timeout * 1e9)
        while true {
            if !isPopulated(cgroup) { return monotonicNanos() }
            let now = monotonicNanos()
            if now >= deadline { return 0 }
            var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
            if watchPidfd { fds.append(pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)) }
            // Bounded by the deadline; every wakeup is a kernel notification.
            let ms = Int32(min(UInt64(Int32.max), (deadline - now) / 1_000_000 + 1))
            if poll(&fds, nfds_t(fds.count), ms) > 0 {
                if fds[0].revents != 0 {
                    var buf = [UInt8](repeating: 0, count: 4096)
                    _ = read(fd, &buf, buf.count)
                }
                // A pidfd stays readable once its process has exited: watch it only once.
                if watchPidfd && fds[1].revents != 0 { watchPidfd = false }
            }
        }
    }

    /// `populated` of cgroup.events; nil when it cannot be read (out of fds, …).
    static func populatedState(_ cgroup: String) -> Bool? {
        guard let text = readSmallTextFile("\(cgroup)/cgroup.events") else { return nil }
        return text.contains("populated 1")
    }

    /// The real uid owning a process, from /proc/PID/status.
    static func uid(of pid: Int32) -> UInt32? {
        guard let text = readSmallTextFile("/proc/\(pid)/status") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("Uid:") {
            return line.split(whereSeparator: { $0 == "\t" || $0 == " " }).dropFirst().first.flatMap { UInt32($0) }
        }
        return nil
    }

    static func isPopulated(_ cgroup: String) -> Bool {
        guard let text = readSmallTextFile("\(cgroup)/cgroup.events") else { return false }
        return text.contains("populated 1")
    }
}

/// Writes `text` to an existing file (cgroup and proc files: no temp file, no truncation games).
func write(_ text: String, to path: String) throws(SessionError) {
    do throws(SystemError) {
        let fd = try systemCall("open \(path)") { open(path, O_WRONLY | O_CLOEXEC) }
        defer { close(fd) }
        try writeAll(fd, Array(text.utf8), call: "write \(path)")
    } catch {
        throw SessionError(error.description)
    }
}
