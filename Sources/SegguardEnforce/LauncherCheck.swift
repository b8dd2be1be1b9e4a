// Whether the process that asked the launch gate is the launcher itself, run as installed:
// only then is it put into a session, whose sockets reach the VDI gateways. Pure: the caller
// reads /proc/PID/exe, environ and status (SessionTracker) and tests drive it with text.

import FoundationEssentials
import SegguardEssentials
import Glibc

/// Decides whether a launch requester is `segguard-launch` as installed, unaltered.
public enum LauncherCheck {
    /// Environment variables that make the dynamic loader, glibc or the Swift runtime run
    /// other code in the launcher (and so in the session): every `LD_*` the loader reads,
    /// `GCONV_PATH`, and every `SWIFT_*` the runtime reads (`SWIFT_BACKTRACE=…,swift-backtrace=
    /// PATH` names a program the runtime starts, as a child in the session's cgroup, when the
    /// launcher crashes or receives SIGQUIT: found by review, reproduced with the built binary).
    static func isLoaderVariable(_ name: Substring) -> Bool {
        name.hasPrefix("LD_") || name == "GCONV_PATH" || name.hasPrefix("SWIFT_")
    }

    /// Nil when the requester is the launcher: its executable is `expected` (not a copy, not
    /// the dynamic loader running it, not a script that asked by itself), its environment sets
    /// no loader variable, and no process traces it. Else why it is not, for the refusal.
    /// `executable`: the /proc/PID/exe link (nil: unreadable); `environ`: /proc/PID/environ;
    /// `status`: /proc/PID/status.
    public static func problem(executable: String?, environ: [UInt8]?, status: String?, expected: String) -> String? {
        guard let executable else { return "the requester's executable cannot be read; only \(expected) may start a My Number session" }
        guard executable == expected else {
            return "the launch request came from \(executable), not from \(expected); only the launcher may start a My Number session"
        }
        guard let environ else { return "the launcher's environment cannot be read" }
        for entry in environ.split(separator: 0) {
            let text = String(decoding: entry, as: UTF8.self)
            let name = text.prefix { $0 != "=" }
            if isLoaderVariable(name) {
                return "the launcher runs with \(name) set (it would load other code into the session); start it without"
            }
        }
        guard let status else { return "the launcher's status cannot be read" }
        for line in status.split(separator: "\n") where line.hasPrefix("TracerPid:") {
            let tracer = line.dropFirst("TracerPid:".count).trimmed()
            if tracer != "0" { return "the launcher is traced by pid \(tracer); start it without a debugger" }
        }
        return nil
    }
}
