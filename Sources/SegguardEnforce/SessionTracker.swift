// Tracks VDI client sessions started through the launch gate and ends them. Owns: one cgroup
// v2 directory per session under a base directory (e.g. /sys/fs/cgroup/segguard/session-7),
// and a pidfd of each session's first process. Every process of a session stays in its
// cgroup, whatever it forks (a double-forked child included), so ending a session kills the
// whole cgroup. Must not own: decisions or modes (the Enforcer decides when to end what).

import CSegguardShims
import Foundation
import SegguardWire
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
        var pidfd: Int32
    }

    public let base: String
    private let state = Mutex<(next: UInt64, entries: [UInt64: Entry])>((1, [:]))

    /// `base` is a cgroup v2 directory to create sessions in; it is created if missing.
    public init(base: String) throws(SessionError) {
        self.base = base
        if mkdir(base, 0o755) != 0 && errno != EEXIST {
            throw SessionError("mkdir \(base): \(String(cString: strerror(errno))) (errno \(errno))")
        }
        guard access("\(base)/cgroup.procs", F_OK) == 0 else {
            throw SessionError("\(base) is not a cgroup v2 directory (no cgroup.procs)")
        }
    }

    /// `<cgroup2 mount>/segguard`, from /proc/self/mountinfo; nil without a cgroup v2 mount.
    public static func defaultBase() -> String? {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            // ... mount-point ... - fstype source options
            let halves = line.components(separatedBy: " - ")
            guard halves.count == 2, halves[1].hasPrefix("cgroup2 ") else { continue }
            let fields = halves[0].split(separator: " ")
            guard fields.count >= 5 else { continue }
            return String(fields[4]) + "/segguard"
        }
        return nil
    }

    /// Puts `pid` (and so everything it will fork) into a new session cgroup.
    public func register(pid: Int32, uid: UInt32, profile: String) throws(SessionError) -> SessionInfo {
        let id = state.withLock { s -> UInt64 in
            defer { s.next += 1 }
            return s.next
        }
        let dir = "\(base)/session-\(id)"
        guard mkdir(dir, 0o755) == 0 || errno == EEXIST else {
            throw SessionError("mkdir \(dir): \(String(cString: strerror(errno))) (errno \(errno))")
        }
        let pidfd = sg_pidfd_open(pid)
        guard pidfd >= 0 else {
            rmdir(dir)
            throw SessionError("pidfd_open(\(pid)): \(String(cString: strerror(-pidfd))) (errno \(-pidfd))")
        }
        do {
            try write("\(pid)\n", to: "\(dir)/cgroup.procs")
        } catch {
            close(pidfd)
            rmdir(dir)
            throw error
        }
        let info = SessionInfo(id: id, profile: profile, pid: pid, uid: uid, startedAt: Date(), cgroup: dir, pids: [pid])
        state.withLock { $0.entries[id] = Entry(info: info, pidfd: pidfd) }
        return info
    }

    /// Live sessions; sessions whose cgroup is empty are forgotten (and their cgroup removed).
    public func sessions() -> [SessionInfo] {
        var live: [SessionInfo] = []
        var gone: [Entry] = []
        state.withLock { s in
            for (id, e) in s.entries {
                let pids = SessionTracker.pids(in: e.info.cgroup)
                if pids.isEmpty {
                    gone.append(e)
                    s.entries[id] = nil
                } else {
                    var info = e.info
                    info.pids = pids
                    live.append(info)
                }
            }
        }
        for e in gone { forget(e) }
        return live.sorted { $0.id < $1.id }
    }

    /// Ends every live session whose profile satisfies `matching`: SIGTERM to every process,
    /// then SIGKILL (cgroup.kill) for what is left after `killTimeout` seconds. Blocks until
    /// done (at most `killTimeout` + 2 s).
    public func terminate(matching: (String) -> Bool, killTimeout: Double) -> [TerminationResult] {
        let targets = state.withLock { s in s.entries.values.filter { matching($0.info.profile) } }
        var results: [TerminationResult] = []
        for e in targets {
            var info = e.info
            info.pids = SessionTracker.pids(in: info.cgroup)
            _ = sg_pidfd_send_signal(e.pidfd, SIGTERM)
            for p in info.pids { kill(p, SIGTERM) }
            var reapedAt = SessionTracker.waitEmpty(info.cgroup, timeout: killTimeout, pidfd: e.pidfd)
            var killed = false
            if reapedAt == 0 {
                killed = true
                SessionTracker.killAll(info.cgroup)
                reapedAt = SessionTracker.waitEmpty(info.cgroup, timeout: 2)
            }
            results.append(TerminationResult(session: info, killed: killed, reaped: reapedAt != 0, reapedAtNanos: reapedAt))
            if reapedAt != 0 {
                state.withLock { _ = $0.entries.removeValue(forKey: e.info.id) }
                // Removing a cgroup waits for RCU grace periods (10-30 ms): not on the kill path.
                close(e.pidfd)
                let dir = e.info.cgroup
                DispatchQueue.global(qos: .utility).async { rmdir(dir) }
            }
        }
        return results
    }

    private func forget(_ e: Entry) {
        close(e.pidfd)
        rmdir(e.info.cgroup)
    }

    // MARK: cgroup files

    static func pids(in cgroup: String) -> [Int32] {
        guard let text = readSmallFile("\(cgroup)/cgroup.procs") else { return [] }
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

    static func isPopulated(_ cgroup: String) -> Bool {
        guard let text = readSmallFile("\(cgroup)/cgroup.events") else { return false }
        return text.contains("populated 1")
    }
}

/// The contents of a small kernel file (cgroup, proc), read with one open and plain reads.
func readSmallFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var out = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(fd, &buf, buf.count)
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        out += buf[0..<n]
    }
    return String(decoding: out, as: UTF8.self)
}

/// CLOCK_MONOTONIC in nanoseconds.
public func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Writes `text` to an existing file (cgroup and proc files: no temp file, no truncation games).
func write(_ text: String, to path: String) throws(SessionError) {
    let fd = open(path, O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { throw SessionError("open \(path): \(String(cString: strerror(errno))) (errno \(errno))") }
    defer { close(fd) }
    let n = text.withCString { Glibc.write(fd, $0, strlen($0)) }
    guard n >= 0 else { throw SessionError("write \(path): \(String(cString: strerror(errno))) (errno \(errno))") }
}
