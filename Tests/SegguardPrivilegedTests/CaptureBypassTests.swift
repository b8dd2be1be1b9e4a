// The routes a user takes around capture blocking, on the real kernel (fanotify only on a tmpfs
// the test owns, in segguardd's private mount namespace): the dynamic loader, a memfd, a
// filesystem mounted after the daemon started (by root, or by the user in a user namespace),
// and trusted-only failing closed (a padded binary, a busy hasher, a tool started before the
// session). Each attempt runs as uid 65534 where the route is a user's.

import Foundation
import SegguardTestSupport
import SegguardWire
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// How one attempt ended.
struct Attempt {
    var status: Int32
    var killed: Bool
    var seconds: Double
    var stderr: String
}

extension CaptureDaemon {
    /// Runs `argv` in the daemon's mount namespace (as uid 65534 when `nobody`) and waits.
    func attempt(_ argv: [String], nobody: Bool = true) throws -> Attempt {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        p.arguments = ["-t", "\(pid)", "-m", "--"] + (nobody ? ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] : []) + argv
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        let start = Date()
        try p.run()
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return Attempt(status: p.terminationStatus, killed: p.terminationReason == .uncaughtSignal && p.terminationStatus == SIGKILL,
                       seconds: Date().timeIntervalSince(start), stderr: text)
    }

    /// Waits until an event matching `match` is listed (events are posted by the agent's loop).
    func waitForEvent(_ what: String, _ match: (EventEntry) -> Bool) throws -> EventEntry {
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if let e = try events().last(where: match) { return e }
            usleep(50_000)
        }
        throw CommandError(description: "no \(what) event:\n" + (try events()).map { "\($0.kind) \($0.reason)" }.joined(separator: "\n"))
    }
}

/// A copy of /usr/bin/sleep with a unique trailer: a SHA-256 no other file on the machine has.
func uniqueSleep(_ tag: String) throws -> (URL, String) {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("sgcap-\(tag)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    var bytes = try Data(contentsOf: URL(fileURLWithPath: "/usr/bin/sleep"))
    bytes.append(Data(UUID().uuidString.utf8))
    try bytes.write(to: url)
    chmod(url.path, 0o755)
    return (url, try sha256(url.path))
}

/// A python script that writes a file into a memfd named argv[1] and execs it with the rest.
let memfdRunner = """
    import os, sys
    fd = os.memfd_create(sys.argv[1], 0)
    os.write(fd, open(sys.argv[2], "rb").read())
    os.execv("/proc/self/fd/%d" % fd, [sys.argv[1]] + sys.argv[3:])
    """

let loaderPath = ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"].first { FileManager.default.fileExists(atPath: $0) }

/// In the capture suite (serialized with it: every test daemon's process watcher sees the whole
/// machine, so two must not judge each other's tools).
extension CaptureTests {
    static var bypassesPossible: Bool {
        loaderPath != nil && FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv")
    }

    static func policy(_ hash: String, level: String = "scope: always", profiles: String = "", allow: String = "", loader: String = "judge",
                       names: String = "[sgbp-grab]", extra: String = "") -> (String) -> String {
        { tools in
            """
            schema_version: 1
            name: capture-bypass
            sites:
              - name: hq
                wired: [{interfaces: ["sgc*"], link_kinds: [veth]}]
            vdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}
            \(profiles)
            capture:
              \(level)
              watch: ["\(tools)"]
              loader: \(loader)
              \(extra)
              block:
                names: \(names)
                sha256: ["\(hash)"]
              \(allow)
            """
        }
    }

    @Test("the loader route: a listed tool run through ld.so (by name, by content) is ended at once and recorded; capture.loader: deny ends any user's direct loader run", .enabled(if: CaptureTests.bypassesPossible, "needs /usr/bin/python3, setpriv and the dynamic loader"))
    func loaderRoute() throws {
        let (unique, hash) = try uniqueSleep("loader")
        defer { try? FileManager.default.removeItem(at: unique) }
        let setup = #"cp /usr/bin/sleep "$0/sgbp-grab" && cp "# + unique.path + #" "$0/notes" && cp /usr/bin/sleep "$0/plain-sleep" && chmod 755 "$0"/*"#
        let d = try CaptureDaemon(policy: Self.policy(hash), setup: setup)
        defer { d.cleanup() }
        let ld = loaderPath!
        // The blocklist by name: without the loader fanotify denies it.
        #expect(try d.attempt(["\(d.tools)/sgbp-grab", "5"]).status == 126 || (try d.attempt(["\(d.tools)/sgbp-grab", "5"]).stderr.contains("not permitted")))
        // Through the loader: fanotify sees only ld.so; the watcher ends it.
        let byName = try d.attempt([ld, "\(d.tools)/sgbp-grab", "5"])
        #expect(byName.killed && byName.seconds < 4, "\(byName)")
        let e1 = try d.waitForEvent("process-killed (loader, name)") { $0.kind == "process-killed" && $0.reason.contains("loaded by the dynamic loader") && $0.reason.contains("sgbp-grab") }
        #expect(e1.exec?.path == "\(d.tools)/sgbp-grab" && e1.uid == 65534, "\(e1)")
        // A relative path and loader options before it.
        let relative = try d.attempt(["/bin/sh", "-c", "cd \(d.tools) && exec \(ld) --inhibit-cache ./sgbp-grab 5"])
        #expect(relative.killed && relative.seconds < 4, "\(relative)")
        // A symlink under an innocent name: judged by the file it leads to.
        try d.run(["/bin/ln", "-s", "\(d.tools)/sgbp-grab", "\(d.tools)/innocent"])
        let linked = try d.attempt([ld, "\(d.tools)/innocent", "5"])
        #expect(linked.killed && linked.seconds < 4, "\(linked)")
        // By content: a renamed copy of a listed binary through the loader.
        let byHash = try d.attempt([ld, "\(d.tools)/notes", "5"])
        #expect(byHash.killed && byHash.seconds < 4, "\(byHash)")
        _ = try d.waitForEvent("process-killed (loader, hash)") { $0.kind == "process-killed" && $0.exec?.sha256 == hash && $0.reason.contains("loaded by the dynamic loader") }
        // A command line longer than a page (argv[0] of 5,000 bytes) does not hide the program.
        let long = try d.attempt(["/bin/bash", "-c", "exec -a $(head -c 5000 /dev/zero | tr '\\0' A) \(ld) \(d.tools)/notes 5"])
        #expect(long.killed && long.seconds < 4, "\(long)")
        // /proc/self/fd/N names the loader's own descriptor, not the daemon's.
        let viaFd = try d.attempt(["/bin/sh", "-c", "exec \(ld) /proc/self/fd/3 5 3<\(d.tools)/notes"])
        #expect(viaFd.killed && viaFd.seconds < 4, "\(viaFd)")
        // A FIFO as the program holds nothing up: the next route is still judged.
        try d.run(["/usr/bin/mkfifo", "\(d.tools)/fifo"])
        try d.run(["/bin/chmod", "666", "\(d.tools)/fifo"])
        let fifos = try (0..<12).map { _ -> Process in
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
            p.arguments = ["-t", "\(d.pid)", "-m", "--", "/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", ld, "\(d.tools)/fifo"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            return p
        }
        defer { for p in fifos where p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        usleep(300_000)
        let afterFifo = try d.attempt([ld, "\(d.tools)/notes", "5"])
        #expect(afterFifo.killed && afterFifo.seconds < 4, "\(afterFifo)")
        // A listed program that forks before it is ended: the fork (same file, same user) is
        // ended too, not left running.
        try d.install("/bin/dash", as: "sgbp-grab-sh")
        let marker = "sgbp-fork-\(getpid())"
        try d.reload(Self.policy(hash, names: "[sgbp-grab, sgbp-grab-sh]")(d.tools))
        usleep(300_000)
        let forking = try d.attempt([ld, "\(d.tools)/sgbp-grab-sh", "-c", "{ n=0; while [ $n -lt 3000000 ]; do n=$((n+1)); done; } & wait", marker])
        #expect(forking.killed, "\(forking)")
        usleep(300_000)
        let left = try runCommand(["/usr/bin/pgrep", "-f", marker], allowFailure: true).trimmingCharacters(in: .whitespacesAndNewlines)
        if !left.isEmpty { _ = try? runCommand(["/usr/bin/pkill", "-9", "-f", marker], allowFailure: true) }
        #expect(left.isEmpty, "a fork of the ended program still runs: \(left)")
        // An unlisted program through the loader runs.
        let fine = try d.attempt([ld, "\(d.tools)/plain-sleep", "0.2"])
        #expect(fine.status == 0 && !fine.killed, "\(fine)")
        // A renamed copy of the loader itself is denied at exec (its content is the loader's).
        try d.install(ld, as: "myld")
        let copy = try d.attempt(["\(d.tools)/myld", "\(d.tools)/plain-sleep", "0.2"])
        #expect(copy.status != 0 && copy.stderr.contains("not permitted"), "\(copy)\n\(d.logText.suffix(3000))")
        _ = try d.waitForEvent("exec-denied (loader copy)") { $0.kind == "exec-denied" && $0.reason.contains("copy of the dynamic loader") }

        // capture.loader: deny — any direct run by a user is ended, root's is not.
        try d.reload(Self.policy(hash, loader: "deny")(d.tools))
        let deadline = Date().addingTimeInterval(10)
        var denied = try d.attempt([ld, "\(d.tools)/plain-sleep", "2"])
        while !denied.killed && Date() < deadline { denied = try d.attempt([ld, "\(d.tools)/plain-sleep", "2"]) }
        #expect(denied.killed, "\(denied)")
        _ = try d.waitForEvent("process-killed (loader: deny)") { $0.kind == "process-killed" && $0.reason.contains("capture.loader: deny") }
        let root = try d.attempt([ld, "\(d.tools)/plain-sleep", "0.2"], nobody: false)
        #expect(root.status == 0 && !root.killed, "\(root)")
    }

    @Test("the memfd route: a listed tool copied into a memfd and run from /proc/self/fd is ended (by its name, by its content) and recorded", .enabled(if: CaptureTests.bypassesPossible, "needs /usr/bin/python3, setpriv and the dynamic loader"))
    func memfdRoute() throws {
        let (unique, hash) = try uniqueSleep("memfd")
        defer { try? FileManager.default.removeItem(at: unique) }
        let runner = FileManager.default.temporaryDirectory.appendingPathComponent("sgcap-memfd-\(getpid()).py")
        try memfdRunner.write(to: runner, atomically: true, encoding: .utf8)
        chmod(runner.path, 0o644)
        defer { try? FileManager.default.removeItem(at: runner) }
        let d = try CaptureDaemon(policy: Self.policy(hash))
        defer { d.cleanup() }
        let before = try String(contentsOfFile: "/proc/sys/vm/memfd_noexec", encoding: .utf8)
        let named = try d.attempt(["/usr/bin/python3", runner.path, "sgbp-grab", "/usr/bin/sleep", "5"])
        #expect(named.killed && named.seconds < 4, "\(named)")
        let e = try d.waitForEvent("process-killed (memfd, name)") { $0.kind == "process-killed" && $0.reason.contains("no file of its own") }
        #expect(e.exec?.path.hasPrefix("/memfd:sgbp-grab") == true && e.uid == 65534, "\(e)")
        let renamed = try d.attempt(["/usr/bin/python3", runner.path, "notes", unique.path, "5"])
        #expect(renamed.killed && renamed.seconds < 4, "\(renamed)")
        _ = try d.waitForEvent("process-killed (memfd, hash)") { $0.kind == "process-killed" && $0.exec?.sha256 == hash }
        let fine = try d.attempt(["/usr/bin/python3", runner.path, "notes", "/usr/bin/sleep", "0.2"])
        #expect(fine.status == 0 && !fine.killed, "\(fine)")
        // scope: always is no session: vm.memfd_noexec is left alone.
        #expect(try String(contentsOfFile: "/proc/sys/vm/memfd_noexec", encoding: .utf8) == before)
    }

    @Test("filesystems mounted after the daemon started are marked: by root (mount table change) and by a user in a user namespace (first exec seen, ended)", .enabled(if: CaptureTests.bypassesPossible, "needs /usr/bin/python3, setpriv and the dynamic loader"))
    func lateMounts() throws {
        let (unique, hash) = try uniqueSleep("late")
        defer { try? FileManager.default.removeItem(at: unique) }
        let d = try CaptureDaemon(policy: Self.policy(hash), setup: #"mkdir -m 0777 "$0/userns""#)
        defer { d.cleanup() }
        // Root mounts a tmpfs below the watched one after the start: a listed tool on it is denied at exec.
        try runCommand(["/usr/bin/nsenter", "-t", "\(d.pid)", "-m", "--", "/bin/sh", "-c",
                        "mkdir -p \(d.tools)/late && mount -t tmpfs sglate \(d.tools)/late && cp /usr/bin/sleep \(d.tools)/late/sgbp-grab && cp \(unique.path) \(d.tools)/late/notes && chmod 755 \(d.tools)/late/*"])
        let deadline = Date().addingTimeInterval(10)
        var late = try d.attempt(["\(d.tools)/late/notes", "5"])
        while !late.stderr.contains("not permitted") && Date() < deadline {
            usleep(50_000)
            late = try d.attempt(["\(d.tools)/late/notes", "5"])
        }
        #expect(late.stderr.contains("not permitted") && !late.killed, "\(late)")
        #expect(try d.attempt(["\(d.tools)/late/sgbp-grab", "5"]).stderr.contains("not permitted"))
        // A user's own tmpfs in a user namespace never shows in the daemon's mount table: the
        // first exec there is judged by the watcher (content) and ended, and that filesystem is
        // marked, so the next exec is denied before it runs.
        let script = "mount -t tmpfs sguser \(d.tools)/userns && cp \(unique.path) \(d.tools)/userns/notes && \(d.tools)/userns/notes 5; echo first=$? >&2; \(d.tools)/userns/notes 5; echo second=$? >&2"
        let user = try d.attempt(["/usr/bin/unshare", "--user", "--map-root-user", "--mount", "/bin/sh", "-c", script])
        #expect(user.stderr.contains("first=137"), "\(user)")
        #expect(user.stderr.contains("not permitted") && user.stderr.contains("second=126"), "\(user)")
        // Again, after that tmpfs is gone: the next one may get the same device number, and
        // must be marked again. And a path longer than PATH_MAX (no readlink) is judged too.
        let again = try d.attempt(["/usr/bin/unshare", "--user", "--map-root-user", "--mount", "/bin/sh", "-c", script])
        // (The second exec: denied at exec, or ended at once — never run to its end.)
        #expect(again.stderr.contains("first=137") && (again.stderr.contains("second=126") || again.stderr.contains("second=137")), "\(again)")
        let deep = "mount -t tmpfs sguser \(d.tools)/userns && cd \(d.tools)/userns && D=$(printf 'd%.0s' $(seq 250)) && for i in $(seq 18); do mkdir $D && cd $D; done && cp \(unique.path) t && ./t 5; echo deep=$? >&2"
        let deepRun = try d.attempt(["/usr/bin/unshare", "--user", "--map-root-user", "--mount", "/bin/bash", "-c", deep])
        #expect(deepRun.stderr.contains("deep=137") || deepRun.stderr.contains("deep=126"), "\(deepRun)")
        _ = try d.waitForEvent("exec-denied (user namespace mount)") { $0.kind == "exec-denied" && $0.exec?.path == "\(d.tools)/userns/notes" }
    }

    @Test("trusted-only fails closed: a tool started before the session is ended when it starts; a 500 MB padded binary and, with the hasher busy, a small one are denied on their first exec; memfds cannot run during the session", .enabled(if: CaptureTests.bypassesPossible, "needs /usr/bin/python3, setpriv and the dynamic loader"))
    func trustedOnlyClosed() throws {
        let (unique, _) = try uniqueSleep("trusted")
        defer { try? FileManager.default.removeItem(at: unique) }
        let launcherPath = binDir.appendingPathComponent("segguard-launch").path
        let launcherHash = try sha256(launcherPath)
        let runner = FileManager.default.temporaryDirectory.appendingPathComponent("sgcap-memfd-t-\(getpid()).py")
        try memfdRunner.write(to: runner, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: runner) }
        let profiles = "profiles:\n  - {name: mynumber, segment: mynumber, capture: trusted-only}"
        // capture.allow lists the (unpackaged) launcher by content: unpackaged files must then be hashed.
        let policy = Self.policy(String(repeating: "0", count: 64), level: "scope: sessions", profiles: profiles, allow: "allow: {sha256: [\"\(launcherHash)\"]}")
        let setup = #"for i in 1 2 3 4; do cp /usr/bin/sleep "$0/padded$i" && truncate -s 500M "$0/padded$i"; done && cp /usr/bin/true "$0/small" && cp "# + unique.path + #" "$0/notes" && cp /usr/bin/sleep "$0/notes2" && chmod 755 "$0"/*"#
        let d = try CaptureDaemon(policy: policy, setup: setup)
        defer { d.cleanup() }
        try d.ns.addVeth("sgc0", index: 3993, peer: "sgcpeer", index: 3994)
        let before = try? String(contentsOfFile: "/proc/sys/vm/memfd_noexec", encoding: .utf8)

        // A tool of the user's, unpackaged and on no list, started before any session: runs.
        let early = Process()
        early.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        early.arguments = ["-t", "\(d.pid)", "-m", "--", "/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "\(d.tools)/notes", "60"]
        early.standardOutput = FileHandle.nullDevice
        early.standardError = FileHandle.nullDevice
        try early.run()
        defer { if early.isRunning { kill(early.processIdentifier, SIGKILL) } }
        usleep(300_000)
        #expect(early.isRunning)

        // The user starts a trusted-only session.
        let deadline = Date().addingTimeInterval(10)
        while (try? d.status().decision.segment) != .authorizedWired && Date() < deadline { usleep(50_000) }
        let launcher = Process()
        launcher.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        launcher.arguments = ["--net=\(d.ns.path)", "/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                              launcherPath, "--socket", d.socket, "--profile", "mynumber", "--no-notify", "--", "/usr/bin/sleep", "30"]
        launcher.standardOutput = FileHandle.nullDevice
        launcher.standardError = FileHandle.nullDevice
        try launcher.run()
        defer { if launcher.isRunning { kill(launcher.processIdentifier, SIGKILL); launcher.waitUntilExit() } }
        let raised = Date().addingTimeInterval(10)
        while (try? d.status().capture?.level) != "trusted-only" && Date() < raised { usleep(50_000) }
        #expect(try d.status().capture?.level == "trusted-only", "\(d.logText.suffix(2000))")
        // ...the early tool is ended (its user now has a protecting session); the launcher, allowed by content, is not.
        early.waitUntilExit()
        #expect(early.terminationReason == .uncaughtSignal && early.terminationStatus == SIGKILL)
        let killed = try d.waitForEvent("process-killed (pre-session tool)") { $0.kind == "process-killed" && $0.exec?.path == "\(d.tools)/notes" }
        #expect(killed.reason.contains("not part of an installed package") && killed.profile == "mynumber", "\(killed)")
        #expect(launcher.isRunning)
        if before != nil { #expect(try String(contentsOfFile: "/proc/sys/vm/memfd_noexec", encoding: .utf8).hasPrefix("2")) }

        // Three padded 500 MB files at once keep the hashers busy; each is denied on its first
        // exec (no decision in time fails closed), and so is a small unpackaged tool meanwhile.
        let padded = (1...3).map { i -> Process in
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
            p.arguments = ["-t", "\(d.pid)", "-m", "--", "/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "\(d.tools)/padded\(i)", "5"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            return p
        }
        for p in padded { try p.run() }
        let small = try d.attempt(["\(d.tools)/small"])
        for p in padded { p.waitUntilExit() }
        #expect(padded.allSatisfy { $0.terminationStatus != 0 && $0.terminationReason == .exit }, "\(padded.map(\.terminationStatus))")
        #expect(small.status != 0 && small.stderr.contains("not permitted"), "\(small)")
        let denials = try d.events().filter { $0.kind == "exec-denied" }
        #expect(denials.contains { $0.exec?.path == "\(d.tools)/padded1" }, "\(denials.map(\.reason))")
        #expect(denials.contains { $0.exec?.path == "\(d.tools)/small" })
        // A memfd cannot be executed while the session runs (vm.memfd_noexec = 2, or the watcher).
        let memfd = try d.attempt(["/usr/bin/python3", runner.path, "notes", "/usr/bin/sleep", "5"])
        #expect(memfd.killed || memfd.stderr.contains("Permission denied"), "\(memfd)")
        // The loader route under trusted-only: a user's direct run of ld.so is ended, whatever it loads.
        let loaded = try d.attempt([loaderPath!, "\(d.tools)/notes2", "5"])
        #expect(loaded.killed && loaded.seconds < 4, "\(loaded)")
        _ = try d.waitForEvent("process-killed (loader under trusted-only)") {
            $0.kind == "process-killed" && $0.reason.contains("the loader run directly could load anything") && $0.reason.contains("notes2") && $0.uid == 65534
        }

        // Without content to allow, an unpackaged file is denied from dpkg's record alone (no hashing).
        try d.reload(Self.policy(String(repeating: "0", count: 64), level: "scope: sessions", profiles: profiles)(d.tools))
        // (A new padded file per attempt: repeated denials of one path are held back as one event.)
        let fresh = Date().addingTimeInterval(10)
        var reason = ""
        var attempt = 0
        while Date() < fresh {
            attempt += 1
            let file = "\(d.tools)/padded-r\(attempt)"
            try d.run(["/bin/sh", "-c", "cp /usr/bin/sleep \(file) && truncate -s 500M \(file) && chmod 755 \(file)"])
            _ = try d.attempt([file, "5"])
            reason = try d.events().last { $0.exec?.path == file }?.reason ?? ""
            if reason.contains("not part of an installed package and not in capture.allow") { break }
            usleep(200_000)
        }
        #expect(reason.hasSuffix("is not part of an installed package and not in capture.allow: profile 'mynumber' allows trusted executables only"), "\(reason)")

        // The session ends: vm.memfd_noexec is put back.
        kill(launcher.processIdentifier, SIGTERM)
        launcher.waitUntilExit()
        if let before {
            let back = Date().addingTimeInterval(20)
            while (try? String(contentsOfFile: "/proc/sys/vm/memfd_noexec", encoding: .utf8)) != before && Date() < back {
                usleep(100_000)
            }
            #expect(try String(contentsOfFile: "/proc/sys/vm/memfd_noexec", encoding: .utf8) == before,
                    "capture: \(String(describing: try? d.status().capture)); sessions: \((try? runCapturing(binDir.appendingPathComponent("segguardctl"), ["sessions", "--socket", d.socket]).1) ?? "?")\n\(d.logText.suffix(1500))")
        }
    }

    @Test("a burst of 300 execs while a large file is hashed: every one is answered (none left waiting), the daemon's descriptors stay bounded",
          .enabled(if: CaptureTests.bypassesPossible, "needs /usr/bin/python3, setpriv and the dynamic loader"))
    func burst() throws {
        let (unique, hash) = try uniqueSleep("burst")
        defer { try? FileManager.default.removeItem(at: unique) }
        let setup = #"cp /usr/bin/true "$0/t" && cp "# + unique.path + #" "$0/big" && truncate -s 1G "$0/big" && chmod 755 "$0"/*"#
        let d = try CaptureDaemon(policy: Self.policy(hash), setup: setup)
        defer { d.cleanup() }
        let fds = { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(d.pid)/fd").count) ?? 0 }
        let before = fds()
        // One exec of a 1 GB file (hashed, past the timeout), then 300 execs at once of a small
        // file whose hash is new (each needs the content).
        let script = "\(d.tools)/big 1 & for i in $(seq 300); do \(d.tools)/t & done; wait; echo done >&2"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        p.arguments = ["-t", "\(d.pid)", "-m", "--", "/bin/bash", "-c", script]
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(60)
        while p.isRunning && Date() < deadline { usleep(100_000) }
        let finished = !p.isRunning
        if !finished {
            // Left waiting: end the whole group so the test cleans up.
            _ = try? runCommand(["/usr/bin/pkill", "-9", "-f", "\(d.tools)/"], allowFailure: true)
        }
        p.waitUntilExit()
        #expect(finished, "execs were left waiting for an answer")
        #expect(String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).contains("done"))
        // Bounded while it lasts (at most 256 waiting answers and 64 judgements hold one each),
        // and back to where it was once the hashing is done.
        let settled = Date().addingTimeInterval(20)
        while fds() >= before + 40 && Date() < settled { usleep(200_000) }
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(d.pid)/fd").compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(d.pid)/fd/\($0)") }) ?? []
        #expect(fds() < before + 80, "descriptors: \(before) before, \(fds()) after: \(open.sorted())")
    }

    @Test("a file written to while it is hashed gets no decision from its content (fail mode), never the verdict of a version that is not the one executed",
          .enabled(if: CaptureTests.bypassesPossible, "needs /usr/bin/python3, setpriv and the dynamic loader"))
    func rewrittenWhileHashed() throws {
        let (unique, hash) = try uniqueSleep("rewrite")
        defer { try? FileManager.default.removeItem(at: unique) }
        // The listed content, written to the watched tmpfs; its hash is held back 800 ms (test
        // hook), the decision may wait 3 s; the user appends a byte meanwhile.
        let setup = #"cp "# + unique.path + #" "$0/x" && chmod 777 "$0" && chmod 666 "$0/x" && chmod +x "$0/x""#
        let d = try CaptureDaemon(policy: Self.policy(hash, extra: "fail_mode: deny\n  decision_timeout_ms: 3000"), arguments: ["--capture-test-hash-delay-ms", "800"], setup: setup)
        defer { d.cleanup() }
        let run = try d.attempt(["/bin/sh", "-c", "\(d.tools)/x 0.1 & sleep 0.3; printf Z >> \(d.tools)/x; wait $!; echo rc=$? >&2"])
        #expect(run.stderr.contains("rc=126") || run.stderr.contains("not permitted"), "\(run)")
        let denied = try d.waitForEvent("exec-denied (changed while hashed)") { $0.kind == "exec-denied" && $0.exec?.path == "\(d.tools)/x" }
        #expect(denied.reason.contains("no decision"), "\(denied.reason)")
    }
}
