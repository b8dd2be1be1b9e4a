// segguard-launch: the VDI launcher. Asks segguardd whether a profile may start now; if
// allowed, applies the profile's client settings and execs the client, so that the client is
// the very process segguardd put into the session's cgroup. If refused, says why (stderr and
// a desktop notification) and exits 1. It decides nothing itself: the daemon identifies it by
// its peer credentials and tracks what it becomes.

import ArgumentParser
import FoundationEssentials
import SegguardEssentials
import SegguardControl
import SegguardMessages
import SegguardPolicy
import SegguardSystem
import CSegguardShims
import SegguardWire

#if canImport(Glibc)
import Glibc
#endif

struct Launch: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "segguard-launch",
        abstract: "Start a VDI client through the segment-guard launch gate.",
        discussion: "Exit status: 1 refused, 2 usage, 3 segguardd unreachable, 4 the profile's client settings could not be written, 127 the client could not be started.",
        version: segguardVersion)

    @Option(name: .long, help: "Launch profile from the policy (mynumber, lgwan, …).")
    var profile: String = "mynumber"

    @Option(name: .long, help: "Control socket of segguardd.")
    var socket: String = ControlClient.defaultPath

    @Flag(name: .long, help: "Do not show a desktop notification on refusal.")
    var noNotify = false

    @Flag(name: .long, help: "Stay in the desktop session and show what segment-guard tells this user (the VDI will close in N seconds, the office network is back, it was closed, a capture tool was refused) as desktop notifications, in the user's language; started by /etc/xdg/autostart/segguard-notify.desktop.")
    var watch = false

    @Option(name: .long, help: "With --watch: seconds between two questions to segguardd.")
    var interval: Double = 1

    @Argument(parsing: .postTerminator, help: "The client command (used when the profile names none).")
    var command: [String] = []

    func validate() throws {
        guard interval >= 0.1 && interval <= 60 else { throw ValidationError("--interval: \(interval) is not between 0.1 and 60") }
    }

    func run() throws {
        if watch { watchNotices() }
        let reply: ControlReply
        do {
            reply = try ControlClient.send(ControlRequest(command: .launch, profile: profile, clientCommand: command), path: socket)
        } catch {
            tell(.launchUnavailable, helpdesk: nil)
            fail("cannot ask segguardd: \(error)", status: 3)
        }
        if let e = reply.error {
            tell(profile.isEmpty ? .launchBadProfile : .launchUnavailable, helpdesk: nil)
            fail("segguardd: \(e.message)", status: 3)
        }
        guard let launch = reply.launch else { fail("segguardd sent no launch answer", status: 3) }
        guard launch.allowed else {
            if let notice = launch.notice {
                tell(notice, helpdesk: launch.helpdesk)
            } else if !noNotify {
                // An older segguardd: its technical reason is all there is.
                DesktopNotification.send(summary: "VDI start refused (\(profile))", body: launch.reason)
            }
            // The technical reason, for the help desk (also in `segguardctl why-denied`).
            writeStandardError("segguard-launch: refused: \(launch.reason)\n")
            throw ExitCode(1)
        }
        for edit in launch.configFiles {
            do {
                try ConfigFileEditor.apply(edit)
            } catch {
                fail("cannot apply the profile's client settings (the client was not started): \(error)", status: 4)
            }
        }
        guard let exe = launch.command.first else { fail("segguardd allowed an empty command", status: 127) }
        let argv = launch.command.map { strdup($0) } + [nil]
        if exe.contains("/") { execv(exe, argv) } else { execvp(exe, argv) }
        fail("cannot start \(exe): \(String(cString: strerror(errno))) (errno \(errno))", status: 127)
    }

    /// `--watch`: asks segguardd for this user's notices every `interval` and shows each one
    /// (desktop notification, and a line on stderr — the session's log — whether or not a
    /// notification service answers). Never returns; segguardd away is waited out.
    func watchNotices() -> Never {
        let language = UserLanguage.from(environment: ProcessInfo.processInfo.environment)
        // Where this watcher is: the run of segguardd it follows, and the last number it saw.
        var position: (instance: String, since: UInt64)?
        var unreachable = false
        var refused = false
        while true {
            do {
                let reply = try ControlClient.send(ControlRequest(command: .notices, since: position?.since), path: socket)
                unreachable = false
                if let notices = reply.notices {
                    refused = false
                    if let p = position, p.instance != notices.instance {
                        // A new segguardd (restarted): everything it has is news, from its first notice.
                        position = (notices.instance, 0)
                        continue
                    }
                    for entry in notices.entries {
                        var values = entry.values
                        values["profile"] = values["profile"] ?? profile
                        let message = UserMessages.render(entry.notice, language: language, values: values, helpdesk: notices.helpdesk)
                        writeStandardError("segguard-launch: \(message.title): \(message.body.split(whereSeparator: \.isNewline).joined(separator: " "))\n")
                        if !noNotify { DesktopNotification.send(summary: message.title, body: message.body) }
                    }
                    position = (notices.instance, notices.latest)
                } else if let e = reply.error {
                    // An older segguardd without notices: said once.
                    if !refused { writeStandardError("segguard-launch: --watch: segguardd: \(e.message)\n") }
                    refused = true
                    sleepThread(seconds: 30)
                }
            } catch {
                // segguardd restarting or stopped: the position is kept; the next run's
                // instance tells the watcher to start from that run's first notice. Said once.
                if !unreachable { writeStandardError("segguard-launch: --watch: segguardd not reachable (\(error)); trying again\n") }
                unreachable = true
                sleepThread(seconds: 2)
                continue
            }
            sleepThread(seconds: interval)
        }
    }

    /// Says `notice` to the user in their language (the locale of this process): on the
    /// terminal (stderr) and, unless --no-notify, as a desktop notification.
    func tell(_ notice: UserNotice, helpdesk: HelpDesk?) {
        let message = UserMessages.render(notice, language: UserLanguage.from(environment: ProcessInfo.processInfo.environment),
                                          values: ["profile": profile], helpdesk: helpdesk)
        writeStandardError("\(message.title)\n\(message.body)\n")
        if !noNotify { DesktopNotification.send(summary: message.title, body: message.body) }
    }

    func fail(_ message: String, status: Int32) -> Never {
        writeStandardError("segguard-launch: \(message)\n")
        Glibc.exit(status)
    }
}

/// Sets keys in an INI-style client configuration file, keeping every other line.
enum ConfigFileEditor {
    struct EditError: Error, CustomStringConvertible { var description: String }

    /// Rewrites the file atomically as the calling user; a new file is 0600 (client settings
    /// may hold secrets), an existing one keeps its mode.
    static func apply(_ edit: ConfigFileEdit) throws {
        let path = edit.path.hasPrefix("~/") ? homeDirectory() + String(edit.path.dropFirst(1)) : edit.path
        // A missing file is created; one that cannot be read (not UTF-8, permissions) is left
        // alone: rewriting it from nothing would lose the user's other settings.
        let old: String
        do {
            old = try readTextFile(path)
        } catch where error.code == ENOENT {
            old = ""
        } catch {
            throw EditError(description: "\(error) (not changed)")
        }
        let new = edit.rewrite(old)
        var st = stat()
        let mode = stat(path, &st) == 0 ? st.st_mode & 0o7777 : 0o600
        do {
            try makeDirectories(PathName.directory(path))
        } catch {
            throw EditError(description: "\(error)")
        }
        do {
            try AtomicFile.write(Data(new.utf8), to: path, mode: mode)
        } catch {
            throw EditError(description: "\(path): \(error)")
        }
    }

    /// The user's home directory from the password database (not $HOME).
    static func homeDirectory() -> String {
        guard let pw = getpwuid(getuid()), let dir = pw.pointee.pw_dir else { return "/" }
        return String(cString: dir)
    }
}

/// freedesktop Notifications over the user's session bus (sd-bus), best effort: a refusal is
/// already on stderr and in segguardd's event log.
enum DesktopNotification {
    static func send(summary: String, body: String) {
        guard ProcessInfo.processInfo.environment["DBUS_SESSION_BUS_ADDRESS"] != nil
            || FileManager.default.fileExists(atPath: "/run/user/\(getuid())/bus")
        else { return }
        var err = [CChar](repeating: 0, count: 256)
        if sg_notify_desktop("segguard-launch", summary, body, &err, err.count) < 0 {
            writeStandardError("segguard-launch: (no desktop notification: \(String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)))\n")
        }
    }
}

/// segguard-launch's entry point (its own executable in development, a personality of the
/// agent's multi-call binary when installed).
public func segguardLaunchMain() {
    Launch.main()
}
