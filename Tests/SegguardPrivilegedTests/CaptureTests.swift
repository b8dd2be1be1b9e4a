// Screen-capture blocking on the real kernel, safely: segguardd runs in a private mount
// namespace (unshare -m) holding a tmpfs that the test owns, and the policy watches only that
// tmpfs, so fanotify marks nothing the machine needs. Programs are copied into the tmpfs and
// executed inside the same mount namespace (nsenter -m).

import Foundation
import SegguardTestSupport
import SegguardSystem
import SegguardWire
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// segguardd in its own network and mount namespace, with a tmpfs at `tools`.
final class CaptureDaemon {
    let ns: TestNamespace
    let dir: URL
    let tools: String
    let process = Process()
    let log: URL
    var socket: String { dir.appendingPathComponent("control.sock").path }
    var policyFile: URL { dir.appendingPathComponent("policy.yaml") }

    /// `arguments` may name the tmpfs as TOOLS; `setup` runs in the new mount namespace (as
    /// root, $0 = the tmpfs) before segguardd starts.
    init(policy: (String) -> String, arguments: [String] = [], setup: String = "true") throws {
        ns = try TestNamespace(prefix: "sgcap")
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("segguard-capture-\(getpid())-\(ns.name)")
        tools = dir.appendingPathComponent("tools").path
        log = dir.appendingPathComponent("daemon.log")
        do {
            try FileManager.default.createDirectory(atPath: tools, withIntermediateDirectories: true)
            try policy(tools).write(to: policyFile, atomically: true, encoding: .utf8)
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            process.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
            // The tmpfs exists only in the daemon's mount namespace; the host never sees it.
            process.arguments = ["--mount", "--propagation", "private", "/bin/sh", "-c", #"mount -t tmpfs -o mode=0755 sgcaptest "$0" && { "#+setup+#" ; } && exec "$@""#,
                                 tools, binDir.appendingPathComponent("segguardd").path,
                                 "--policy", policyFile.path, "--netns", ns.path, "--socket", socket,
                                 "--nft-table", "sgcaptest", "--baseline-file", dir.appendingPathComponent("baseline.json").path,
                                 "--launcher-path", binDir.appendingPathComponent("segguard-launch").path]
                + arguments.map { $0.replacingOccurrences(of: "TOOLS", with: tools) }
            process.standardError = try FileHandle(forWritingTo: log)
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            // segguardd answers once its agent runs, and the agent starts capture blocking (marks
            // made) before its loop serves a request.
            let deadline = Date().addingTimeInterval(10)
            while (try? status()) == nil {
                guard Date() < deadline, process.isRunning else { throw CommandError(description: "segguardd did not start:\n\(logText)") }
                usleep(20_000)
            }
        } catch {
            cleanup()
            throw error
        }
    }

    var pid: Int32 { process.processIdentifier }
    var logText: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    /// Runs a command inside the daemon's mount namespace; returns its exit status and stderr.
    @discardableResult
    func run(_ argv: [String]) throws -> (Int32, String) {
        let (rc, _, err) = try runCapturing(URL(fileURLWithPath: "/usr/bin/nsenter"), ["-t", "\(pid)", "-m", "--"] + argv)
        return (rc, err)
    }

    /// Copies `source` to `name` in the tmpfs.
    func install(_ source: String, as name: String) throws {
        let (rc, err) = try run(["/bin/cp", source, "\(tools)/\(name)"])
        guard rc == 0 else { throw CommandError(description: "cp \(source) \(name): \(err)") }
    }

    func events() throws -> [EventEntry] {
        let (rc, out, err) = try runCapturing(binDir.appendingPathComponent("segguardctl"), ["why-denied", "--json", "--socket", socket])
        guard rc == 0 else { throw CommandError(description: "why-denied: \(err)") }
        return try ControlCoding.decoder().decode(ControlReply.self, from: Data(out.utf8)).events ?? []
    }

    func status() throws -> StatusReply {
        let (rc, out, err) = try runCapturing(binDir.appendingPathComponent("segguardctl"), ["status", "--json", "--socket", socket])
        guard rc == 0, let s = try ControlCoding.decoder().decode(ControlReply.self, from: Data(out.utf8)).status else {
            throw CommandError(description: "status: \(err)")
        }
        return s
    }

    func reload(_ policy: String) throws {
        try policy.write(to: policyFile, atomically: true, encoding: .utf8)
        kill(pid, SIGHUP)
    }

    func cleanup() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        // A daemon killed during a protecting session leaves vm.memfd_noexec raised; its saved
        // value (what a restarted segguardd would put back) is put back here.
        if let old = try? String(contentsOf: dir.appendingPathComponent("memfd_noexec.saved"), encoding: .utf8) {
            try? old.write(toFile: "/proc/sys/vm/memfd_noexec", atomically: false, encoding: .utf8)
        }
        ns.destroy()
        try? FileManager.default.removeItem(at: dir)
    }
}

/// SHA-256 of a file, by sha256sum.
func sha256(_ path: String) throws -> String {
    String(try runCommand(["sha256sum", path]).prefix(64))
}

func capturePolicy(mode: String = "enforce", failMode: String = "allow", timeoutMs: Int = 250, extra: String = "") throws -> (String) -> String {
    let echoHash = try sha256("/usr/bin/echo")
    return { tools in
        """
        schema_version: 1
        name: capture-test
        sites:
          - name: hq
            wired: [{interfaces: ["sgc*"], link_kinds: [veth]}]
        vdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}
        capture:
          mode: \(mode)
          scope: always
          watch: ["\(tools)"]
          fail_mode: \(failMode)
          decision_timeout_ms: \(timeoutMs)
          block:
            names: [scrot, gnome-screenshot]
            sha256: ["\(echoHash)"]
            arguments: [{name: ffmpeg, any_of: [x11grab]}]
        \(extra)
        """
    }
}

@Suite("Screen-capture blocking with fanotify (private mount namespace, tmpfs only)", .serialized,
       .enabled(if: canCreateNamespaces && FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare") && FileManager.default.isExecutableFile(atPath: "/usr/bin/nsenter"),
                "needs root, unshare and nsenter (util-linux)"))
struct CaptureTests {
    @Test("a listed name and a renamed copy of a listed binary are denied at exec; others run; every denial is an event")
    func blocklist() throws {
        let d = try CaptureDaemon(policy: try capturePolicy())
        defer { d.cleanup() }
        try d.install("/usr/bin/true", as: "scrot")
        try d.install("/usr/bin/echo", as: "notes")     // a listed tool under another name
        try d.install("/usr/bin/true", as: "editor")    // not listed
        let (denied, err) = try d.run(["\(d.tools)/scrot"])
        #expect(denied != 0)
        #expect(err.contains("Operation not permitted"), "\(err)") // FAN_DENY is EPERM
        let (byHashRC, byHashErr) = try d.run(["\(d.tools)/notes", "hello"])
        #expect(byHashRC != 0 && byHashErr.contains("Operation not permitted"), "\(byHashErr)")
        #expect(try d.run(["\(d.tools)/editor"]).0 == 0)
        // Execs outside the watched mount are not touched.
        #expect(try d.run(["/usr/bin/echo", "outside"]).0 == 0)

        let events = try d.events().filter { $0.kind == "exec-denied" }
        #expect(events.count == 2, "\(events)")
        let byName = try #require(events.first { $0.exec?.path == "\(d.tools)/scrot" })
        #expect(byName.reason == "executable name \"scrot\" is listed in capture.block.names")
        #expect(byName.uid == 0 && byName.exec?.parentPid != nil)
        let byHash = try #require(events.first { $0.exec?.path == "\(d.tools)/notes" })
        #expect(byHash.exec?.sha256 == (try sha256("/usr/bin/echo")))
        #expect(byHash.reason.contains("is listed in capture.block.sha256 (a copy or renamed capture tool)"))

        let s = try d.status()
        let c = try #require(s.capture)
        #expect(c.mode == "enforce" && c.level == "blocklist" && c.error == nil)
        #expect(c.watched == [d.tools])
        #expect(c.denied == 2 && c.events >= 3)
    }

    @Test("a blocked tool is told to its user's desktop: one Japanese notification on the user's session bus for a burst of attempts (and English under LANG=C), with the help desk; another user is told nothing",
          .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/dbus-daemon") && FileManager.default.isExecutableFile(atPath: "/usr/bin/dbus-monitor"),
                   "needs dbus-daemon and dbus-monitor (scripts/install-deps.sh installs them)"))
    func blockedToolNotice() throws {
        let policy = try capturePolicy(extra: "helpdesk: {name: \"情報政策課 ヘルプデスク\", contact: \"内線 2345\"}")
        let d = try CaptureDaemon(policy: policy)
        defer { d.cleanup() }
        try d.install("/usr/bin/true", as: "scrot")
        let session = try PrivateSessionBus(dir: d.dir)
        defer { session.close() }
        // The user's desktop in Japanese and in English (root runs the tool here, so root's
        // watchers are the user's); another user's watcher.
        let (ja, _) = try noticeWatcher(socket: d.socket, bus: session.address)
        let (en, _) = try noticeWatcher(socket: d.socket, bus: session.address, lang: "C")
        let (other, otherErr) = try noticeWatcher(socket: d.socket, bus: session.address, user: (65534, 65534))
        defer {
            for p in [ja, en, other] where p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
        }
        Thread.sleep(forTimeInterval: 0.6)  // each watcher has asked once (its starting point)

        for _ in 0..<5 {
            let (rc, err) = try d.run(["\(d.tools)/scrot"])
            #expect(rc != 0 && err.contains("Operation not permitted"), "\(err)")
        }
        #expect(try d.events().filter { $0.kind == "exec-denied" }.count == 5)
        Thread.sleep(forTimeInterval: 1.0)  // a few of the watchers' 0.2 s polls
        for p in [ja, en, other] { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
        let seen = session.seen()
        #expect(seen.components(separatedBy: "string \"このプログラムは使えません\"").count - 1 == 1, "one notice for five attempts: \(seen)")
        #expect(seen.contains("仮想デスクトップの画面を守るため、利用中はこのプログラム（scrot）を使えません。"), "\(seen)")
        #expect(seen.contains("お問い合わせ: 情報政策課 ヘルプデスク（内線 2345）"))
        #expect(seen.components(separatedBy: "string \"This program cannot be used\"").count - 1 == 1, "\(seen)")
        #expect(seen.contains("this program (scrot) cannot be used while it is open"))
        #expect(seen.contains("Help: 情報政策課 ヘルプデスク (内線 2345)"))
        #expect(!seen.contains(d.tools), "the user reads the tool's name, not the path")
        let otherSaid = String(decoding: otherErr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(!otherSaid.contains("scrot") && !otherSaid.contains("プログラム") && !otherSaid.contains("program"), "another user is told nothing: \(otherSaid)")
    }

    @Test("with blocking off, the listed name and the listed hash both run")
    func off() throws {
        let d = try CaptureDaemon(policy: try capturePolicy(mode: "off"))
        defer { d.cleanup() }
        try d.install("/usr/bin/true", as: "scrot")
        try d.install("/usr/bin/echo", as: "notes")
        #expect(try d.run(["\(d.tools)/scrot"]).0 == 0)
        #expect(try d.run(["\(d.tools)/notes", "hi"]).0 == 0)
        #expect(try d.status().capture == nil)
    }

    @Test("under load: 2,000 execs in 4 parallel loops with hashing on, none left hanging")
    func load() throws {
        let d = try CaptureDaemon(policy: try capturePolicy())
        defer { d.cleanup() }
        try d.install("/usr/bin/true", as: "worker")
        try d.install("/usr/bin/true", as: "scrot")
        var loops: [Process] = []
        for i in 0..<4 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
            // 500 allowed execs, every 50th a denied one; exit 0 only if every result is right.
            p.arguments = ["-t", "\(d.pid)", "-m", "--", "/bin/bash", "-c",
                           "for n in $(seq 500); do \(d.tools)/worker || exit 1; if [ $((n % 50)) = 0 ]; then \(d.tools)/scrot 2>/dev/null && exit 2; fi; done; exit 0"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            loops.append(p)
            _ = i
        }
        let deadline = Date().addingTimeInterval(120)
        while loops.contains(where: \.isRunning) && Date() < deadline { usleep(100_000) }
        let hung = loops.filter(\.isRunning)
        for p in hung { kill(p.processIdentifier, SIGKILL) }
        #expect(hung.isEmpty, "\(hung.count) loops still running after 120 s")
        for p in loops where !hung.contains(p) { #expect(p.terminationStatus == 0) }
        let c = try #require(try d.status().capture)
        #expect(c.events >= 2040 && c.denied == 40, "\(c)")
    }

    @Test("process connector: a tool that captures only with certain arguments is ended right after its exec")
    func argumentTool() throws {
        let d = try CaptureDaemon(policy: try capturePolicy())
        defer { d.cleanup() }
        // A stand-in "ffmpeg" (a copy of bash) grabbing the screen by its arguments.
        try d.install("/usr/bin/bash", as: "ffmpeg")
        let (rc, _) = try d.run(["\(d.tools)/ffmpeg", "-c", "sleep 20; true", "-f", "x11grab"])
        #expect(rc != 0) // killed (SIGKILL), not 20 s of sleep
        let killed = try #require(try d.events().first { $0.kind == "process-killed" })
        #expect(killed.exec?.path == "\(d.tools)/ffmpeg")
        #expect(killed.reason.hasPrefix("running ffmpeg with \"x11grab\" in its arguments (capture.block.arguments)"))
        // The same tool without the capturing argument runs.
        #expect(try d.run(["\(d.tools)/ffmpeg", "-c", "true", "-f", "mp4"]).0 == 0)
    }

    @Test("audit mode lets the tool run and records what would have been denied; a reload switches modes")
    func audit() throws {
        let d = try CaptureDaemon(policy: try capturePolicy(mode: "audit"))
        defer { d.cleanup() }
        try d.install("/usr/bin/true", as: "gnome-screenshot")
        #expect(try d.run(["\(d.tools)/gnome-screenshot"]).0 == 0)
        let would = try d.events().filter { $0.kind == "exec-would-be-denied" }
        #expect(would.map(\.exec?.path) == ["\(d.tools)/gnome-screenshot"])

        try d.reload(try capturePolicy(mode: "enforce")(d.tools))
        let deadline = Date().addingTimeInterval(5)
        while (try? d.status().capture?.mode) != "enforce" && Date() < deadline { usleep(50_000) }
        #expect(try d.run(["\(d.tools)/gnome-screenshot"]).0 != 0)
    }

    @Test("an exec whose hash is not ready in time is answered by the fail mode, never left waiting")
    func failMode() throws {
        // Every hash takes 3 s (test hook); the decision bound is 100 ms.
        let allow = try CaptureDaemon(policy: try capturePolicy(failMode: "allow", timeoutMs: 100), arguments: ["--capture-test-hash-delay-ms", "3000"])
        defer { allow.cleanup() }
        try allow.install("/usr/bin/true", as: "slow")
        #expect(try allow.run(["\(allow.tools)/slow"]).0 == 0)
        // Names need no hash: still denied at once.
        try allow.install("/usr/bin/true", as: "scrot")
        #expect(try allow.run(["\(allow.tools)/scrot"]).0 != 0)
        // A fail-mode answer is an event (logged and reported), not a denial.
        #expect(allow.logText.contains("event=exec-fail-mode") && allow.logText.contains("path=\(allow.tools)/slow"), "\(allow.logText.suffix(2000))")
        #expect((try allow.status().capture?.failModeAnswers ?? 0) >= 1)

        let deny = try CaptureDaemon(policy: try capturePolicy(failMode: "deny", timeoutMs: 100), arguments: ["--capture-test-hash-delay-ms", "3000"])
        defer { deny.cleanup() }
        try deny.install("/usr/bin/true", as: "slow")
        #expect(try deny.run(["\(deny.tools)/slow"]).0 != 0)
        #expect(try deny.events().contains { $0.kind == "exec-denied" && $0.reason.contains("capture.fail_mode: deny") })
    }

    @Test("trusted-only during a protecting profile's session: /bin/true (checked against dpkg's md5sums) runs; a copied or modified binary is denied")
    func trustedOnly() throws {
        // scope: sessions, a profile asking for trusted-only; a session runs through the launcher.
        // In the daemon's mount namespace /usr/bin is a tmpfs of the test's (so that it can be
        // watched) holding a copy of the real /usr/bin/true, and /usr/bin/false replaced by true.
        // A binary of its own (sleep plus a unique trailer): its SHA-256 is listed, and no
        // other process on the machine can have it.
        let unique = FileManager.default.temporaryDirectory.appendingPathComponent("sgcap-unique-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        var bytes = try Data(contentsOf: URL(fileURLWithPath: "/usr/bin/sleep"))
        bytes.append(Data(UUID().uuidString.utf8))
        try bytes.write(to: unique)
        chmod(unique.path, 0o755)
        defer { try? FileManager.default.removeItem(at: unique) }
        let uniqueHash = try sha256(unique.path)
        let policy: (String) -> String = { tools in
            """
            schema_version: 1
            name: capture-trusted
            sites:
              - name: hq
                wired: [{interfaces: ["sgc*"], link_kinds: [veth]}]
            vdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}
            profiles:
              - {name: mynumber, segment: mynumber, capture: trusted-only}
            capture:
              scope: sessions
              watch: ["\(tools)", "/usr/bin"]
              block: {names: [scrot], sha256: ["\(uniqueHash)"]}
            """
        }
        let setup = #"cp /usr/bin/true "$0/copied-true" && cp /usr/bin/sleep "$0/scrot" && cp "# + unique.path + #" "$0/notes-app" && cp /usr/bin/true "$0/.true" && cp /usr/bin/cp "$0/.cp" && mount -t tmpfs -o mode=0755 sgusrbin /usr/bin && "$0/.cp" "$0/.true" /usr/bin/true && "$0/.cp" "$0/.true" /usr/bin/false"#
        let d = try CaptureDaemon(policy: policy, setup: setup)
        defer { d.cleanup() }
        try d.ns.addVeth("sgc0", index: 3991, peer: "sgcpeer", index: 3992)

        // No session: nothing applies (scope: sessions).
        #expect(try d.run(["\(d.tools)/copied-true"]).0 == 0)
        #expect(try d.status().capture?.level == "none")
        // A listed tool started now, before any session, runs...
        let early = Process()
        early.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        early.arguments = ["-t", "\(d.pid)", "-m", "--", "\(d.tools)/scrot", "60"]
        early.standardOutput = FileHandle.nullDevice
        early.standardError = FileHandle.nullDevice
        try early.run()
        defer { if early.isRunning { kill(early.processIdentifier, SIGKILL) } }
        // ...and so does a renamed copy of a listed binary (matched by its SHA-256 only).
        let renamed = Process()
        renamed.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        renamed.arguments = ["-t", "\(d.pid)", "-m", "--", "\(d.tools)/notes-app", "60"]
        renamed.standardOutput = FileHandle.nullDevice
        renamed.standardError = FileHandle.nullDevice
        try renamed.run()
        defer { if renamed.isRunning { kill(renamed.processIdentifier, SIGKILL) } }
        usleep(300_000)
        #expect(early.isRunning)
        #expect(renamed.isRunning)

        // A VDI session of the trusted-only profile, through the launcher (host mounts).
        let deadline = Date().addingTimeInterval(10)
        while (try? d.status().decision.segment) != .authorizedWired && Date() < deadline { usleep(50_000) }
        let launcher = Process()
        launcher.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        launcher.arguments = ["--net=\(d.ns.path)", binDir.appendingPathComponent("segguard-launch").path, "--socket", d.socket, "--profile", "mynumber", "--no-notify", "--", "/usr/bin/sleep", "30"]
        launcher.standardOutput = FileHandle.nullDevice
        let launcherErr = d.dir.appendingPathComponent("launcher.err")
        _ = FileManager.default.createFile(atPath: launcherErr.path, contents: nil)
        launcher.standardError = try FileHandle(forWritingTo: launcherErr)
        try launcher.run()
        defer { kill(launcher.processIdentifier, SIGKILL); launcher.waitUntilExit() }
        let raised = Date().addingTimeInterval(10)
        while (try? d.status().capture?.level) != "trusted-only" && Date() < raised { usleep(50_000) }
        let s = try d.status()
        #expect(s.capture?.level == "trusted-only" && s.capture?.profile == "mynumber",
                "\(String(describing: s.capture))\n\(d.logText.suffix(1500))\n\((try? String(contentsOf: launcherErr, encoding: .utf8)) ?? "")")
        // ...and is ended when the protecting session starts.
        early.waitUntilExit()
        #expect(early.terminationStatus != 0)
        #expect(try d.events().contains { $0.kind == "process-killed" && $0.exec?.path == "\(d.tools)/scrot" && $0.profile == "mynumber" })
        renamed.waitUntilExit()
        #expect(renamed.terminationStatus != 0)
        #expect(try d.events().contains { $0.kind == "process-killed" && $0.exec?.path == "\(d.tools)/notes-app" && $0.exec?.sha256 == uniqueHash })

        // dpkg's index loads in the background (from the start: a profile asks for trusted-only);
        // until then trusted-only fails closed.
        let loaded = Date().addingTimeInterval(20)
        while try d.run(["/bin/true"]).0 != 0 && Date() < loaded { usleep(100_000) }
        let (rc, err) = try d.run(["\(d.tools)/copied-true"])
        #expect(rc != 0 && err.contains("Operation not permitted"), "\(err)")
        #expect(try d.run(["/bin/true"]).0 == 0)
        #expect(try d.run(["/usr/bin/false"]).0 != 0) // true's content under false's name: not what dpkg installed
        let denials = try d.events().filter { $0.kind == "exec-denied" }
        let copied = try #require(denials.last { $0.exec?.path == "\(d.tools)/copied-true" })
        #expect(copied.profile == "mynumber")
        // No package ships that path and capture.allow lists nothing: denied from dpkg's record alone.
        #expect(copied.reason == "\(d.tools)/copied-true is not part of an installed package and not in capture.allow: profile 'mynumber' allows trusted executables only")
        #expect(denials.contains { $0.exec?.path == "/usr/bin/false" })
    }
}
