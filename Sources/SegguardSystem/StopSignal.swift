// The one way segguardd's event-loop threads (netlink watcher, wpa_supplicant sources, capture
// blocker) are told to stop: a flag and an eventfd each loop polls beside its own descriptors,
// so a stop wakes a loop that has no timeout.

import CSegguardShims
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A running flag with an eventfd that `stop()` makes readable.
public final class StopSignal: Sendable {
    private let flag = Mutex(false)
    /// Poll this beside the loop's own descriptors (POLLIN after `stop()`).
    public let fd: Int32

    public init() { fd = sg_eventfd() }

    deinit { close(fd) }

    /// Marks the loop running (before its thread starts).
    public func arm() { flag.withLock { $0 = true } }

    public var isRunning: Bool { flag.withLock { $0 } }

    /// Clears the flag and wakes every poll on `fd`.
    public func stop() {
        flag.withLock { $0 = false }
        var one: UInt64 = 1
        _ = write(fd, &one, 8)
    }

    /// What a wait for one descriptor ended with.
    public enum Wake: Equatable, Sendable {
        /// The descriptor has something to read (or an error condition to collect).
        case readable
        /// `stop()` was called.
        case stopped
        /// poll(2) failed with this errno (EINTR is retried, never returned).
        case failed(Int32)
    }

    /// Waits without a timeout until `descriptor` is readable (or has one of `events`) or the
    /// loop is stopped.
    public func wait(for descriptor: Int32, events: Int16 = Int16(POLLIN)) -> Wake {
        while isRunning {
            var fds = [pollfd(fd: descriptor, events: events, revents: 0), pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
            if poll(&fds, 2, -1) < 0 {
                if errno == EINTR { continue }
                return .failed(errno)
            }
            if fds[1].revents != 0 { continue }
            return .readable
        }
        return .stopped
    }
}
