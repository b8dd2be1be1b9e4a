// systemd integration of the daemon: readiness, status, reload and watchdog notifications
// through sd_notify(3). Owns nothing but the message texts: sd_notify opens and closes the
// NOTIFY_SOCKET datagram each time. Outside systemd (no NOTIFY_SOCKET) every call is a no-op.

import CSystemd
import FoundationEssentials
import Glibc
import SegguardSystem

/// Tells the service manager what the daemon is doing (Type=notify).
public struct ServiceNotifier: Sendable {
    /// True when started by a service manager that listens (NOTIFY_SOCKET is set).
    public let isSupervised: Bool

    public init() { isSupervised = getenv("NOTIFY_SOCKET") != nil }

    /// The watchdog interval systemd expects pings within (WatchdogSec=), nil when none.
    public var watchdogInterval: Double? {
        var usec: UInt64 = 0
        guard sd_watchdog_enabled(0, &usec) > 0, usec > 0 else { return nil }
        return Double(usec) / 1e6
    }

    /// READY=1 with the first status line: send only once the first decision and the
    /// enforcement tables are in place.
    public func ready(status: String) {
        guard isSupervised else { return }
        send(["READY=1", ServiceNotifier.statusAssignment(status), "MAINPID=\(getpid())"])
    }

    /// STATUS= line shown by `systemctl status`.
    public func status(_ text: String) {
        guard isSupervised else { return }
        send([ServiceNotifier.statusAssignment(text)])
    }

    /// `STATUS=text` on one line (a newline would start a new assignment), at most 400 characters.
    public static func statusAssignment(_ text: String) -> String { "STATUS=\(clean(text))" }

    /// Around a policy reload (SIGHUP): RELOADING=1 with the monotonic timestamp systemd 253+ wants.
    public func reloading() {
        let usec = monotonicNanos() / 1000
        send(["RELOADING=1", "MONOTONIC_USEC=\(usec)", "STATUS=reloading the policy"])
    }

    /// After a reload, successful or refused: READY=1 again.
    public func reloaded(status: String) {
        guard isSupervised else { return }
        send(["READY=1", ServiceNotifier.statusAssignment(status)])
    }

    public func watchdog() { send(["WATCHDOG=1"]) }

    public func stopping() { send(["STOPPING=1", "STATUS=stopping"]) }

    /// The datagram text (one assignment per line), exposed for tests.
    public static func message(_ assignments: [String]) -> String { assignments.joined(separator: "\n") }

    /// A status is one line: newlines would start new assignments.
    static func clean(_ text: String) -> String {
        String(text.map { $0.isNewline ? " " : $0 }.prefix(400))
    }

    func send(_ assignments: [String]) {
        guard isSupervised else { return }
        _ = sd_notify(0, ServiceNotifier.message(assignments))
    }
}
