// Real-kernel tests of the segment binding: a client namespace running segguardd, a gateway
// namespace with a stand-in VDI gateway (a TCP server), veth links between them. A client
// started by segguard-launch holds a connection and double-forks; the tests change the
// network and assert what the gateway, the processes and segguardd's events show.

import Foundation
import SegguardControl
import SegguardEnforce
import SegguardPolicy
import SegguardTestSupport
import SegguardSystem
import SegguardWire
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Client and gateway namespaces, the gateway server and a running segguardd.
final class EnforcementLab {
    let client: TestNamespace
    let gateway: TestNamespace
    let server: NamespaceTCPServer
    let dir: URL
    let cgroup: String
    var daemon: Process?
    var launchers: [Process] = []
    static let gatewayIP = IPAddress("10.62.9.1")!
    static let port: UInt16 = 8443

    var socket: String { dir.appendingPathComponent("control.sock").path }
    var policyFile: URL { dir.appendingPathComponent("policy.yaml") }
    var log: URL { dir.appendingPathComponent("daemon.log") }
    var baselineFile: String { dir.appendingPathComponent("baseline.nft").path }

    static func policy(mode: String = "enforce", grace: Double = 0) -> String {
        """
        schema_version: 1
        name: enforcement-test
        sites:
          - name: lab
            wired:
              - interfaces: ["sga*"]
                link_kinds: [veth]
        vdi:
          gateways:
            - address: 10.62.9.1
              ports: [8443]
        enforcement:
          launch_gate: \(mode)
          session_termination: \(mode)
          network_binding: \(mode)
          grace_seconds: \(grace)
          kill_timeout_seconds: 1
        profiles:
          - name: mynumber
            segment: mynumber
          - name: lgwan
            segment: lgwan
        """
    }

    /// `sga0` (authorized, 10.62.1.0/24) and `alt0` (not matched by any rule, 10.62.2.0/24)
    /// both reach the gateway namespace, where 10.62.9.1:8443 listens.
    init(policy: String, base: Int) throws {
        client = try TestNamespace(prefix: "sgenf")
        do {
            gateway = try TestNamespace(prefix: "sgenf")
        } catch {
            client.destroy()
            throw error
        }
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("segguard-enf-\(client.name)")
        cgroup = (SessionTrackerPaths.base ?? "/sys/fs/cgroup/segguard") + "-test-\(client.name)"
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try policy.write(to: dir.appendingPathComponent("policy.yaml"), atomically: true, encoding: .utf8)
            try client.ip("link", "add", "sga0", "index", "\(base)", "type", "veth", "peer", "name", "gwa0", "index", "\(base + 1)", "netns", gateway.name)
            try client.ip("link", "add", "alt0", "index", "\(base + 2)", "type", "veth", "peer", "name", "gwb0", "index", "\(base + 3)", "netns", gateway.name)
            try client.ip("addr", "add", "10.62.1.2/24", "dev", "sga0")
            try client.ip("addr", "add", "10.62.2.2/24", "dev", "alt0")
            try gateway.ip("addr", "add", "10.62.1.1/24", "dev", "gwa0")
            try gateway.ip("addr", "add", "10.62.2.1/24", "dev", "gwb0")
            try gateway.ip("addr", "add", "10.62.9.1/32", "dev", "lo")
            for (ns, l) in [(client, "sga0"), (client, "alt0"), (gateway, "gwa0"), (gateway, "gwb0")] { try ns.ip("link", "set", l, "up") }
            try client.ip("route", "add", "10.62.9.1/32", "via", "10.62.1.1", "dev", "sga0")
            server = try NamespaceTCPServer(namespacePath: gateway.path, address: Self.gatewayIP, port: Self.port)
        } catch {
            client.destroy()
            gateway.destroy()
            throw error
        }
    }

    func startDaemon() throws {
        let p = Process()
        p.executableURL = binDir.appendingPathComponent("segguardd")
        p.arguments = ["--netns", client.path, "--policy", policyFile.path, "--socket", socket, "--session-cgroup", cgroup,
                       "--baseline-file", baselineFile, "--launcher-path", binDir.appendingPathComponent("segguard-launch").path]
        if !FileManager.default.fileExists(atPath: log.path) { _ = FileManager.default.createFile(atPath: log.path, contents: nil) }
        let h = try FileHandle(forWritingTo: log)
        h.seekToEndOfFile()
        p.standardError = h
        p.standardOutput = FileHandle.nullDevice // never swift-test's pipe (see RunningDaemon)
        try p.run()
        daemon = p
    }

    func killDaemon(_ signal: Int32 = SIGKILL) {
        guard let d = daemon, d.isRunning else { return }
        kill(d.processIdentifier, signal)
        d.waitUntilExit()
    }

    /// Starts `segguard-launch` in the client namespace (nsenter keeps the host's mounts).
    func launch(profile: String = "mynumber", _ command: [String], user: (uid: Int, gid: Int)? = nil, notify: String? = nil,
                environment: [String: String] = [:]) throws -> Process {
        let p = Process()
        if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        var argv = ["--net=\(client.path)"]
        if let user { argv += ["setpriv", "--reuid=\(user.uid)", "--regid=\(user.gid)", "--clear-groups"] }
        argv += [binDir.appendingPathComponent("segguard-launch").path, "--socket", socket, "--profile", profile]
        if let notify {
            var env = p.environment ?? ProcessInfo.processInfo.environment
            env["DBUS_SESSION_BUS_ADDRESS"] = notify
            p.environment = env
        } else {
            argv.append("--no-notify")
        }
        argv += ["--"] + command
        p.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        p.arguments = argv
        p.standardError = Pipe()
        p.standardOutput = FileHandle.nullDevice // its double-forked child must not hold swift-test's pipe
        try p.run()
        launchers.append(p)
        return p
    }

    /// A stand-in VDI client: holds a TCP connection to the gateway and double-forks a child
    /// that leaves the process tree (setsid, reparented to init).
    static let client = ["/bin/bash", "-c", "exec 3<>/dev/tcp/10.62.9.1/8443; (setsid sleep 3600 &); sleep 3600"]

    func reply(_ command: ControlRequest.Command) -> ControlReply? {
        try? ControlClient.send(ControlRequest(command: command), path: socket)
    }

    /// Waits (bounded) for a condition that segguardd or the kernel makes true.
    func eventually(_ timeout: Double = 10, _ what: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if what() { return true }
            Thread.sleep(forTimeInterval: 0.02)
        }
        return what()
    }

    var segment: String? { reply(.status)?.status?.decision.segment.rawValue }
    /// The binding's table exists in the client namespace (it is applied right after the decision).
    var hasTable: Bool { (try? runCommand(["nsenter", "--net=\(client.path)", "nft", "list", "table", "inet", "segguard"])) != nil }
    /// The decision is authorized and its table, which replaces the start-up baseline a few
    /// milliseconds after the decision, lets the gateway traffic out through sga0.
    var isBoundToSga0: Bool {
        guard segment == "authorized-wired" else { return false }
        let listing = (try? runCommand(["nsenter", "--net=\(client.path)", "nft", "list", "table", "inet", "segguard"])) ?? ""
        return listing.contains("oifname \"sga0\"") && listing.contains("accept")
    }
    /// The table has an accept verdict (some interface may reach the gateway).
    var tableAccepts: Bool {
        let listing = (try? runCommand(["nsenter", "--net=\(client.path)", "nft", "list", "table", "inet", "segguard"])) ?? ""
        return listing.contains(" accept comment")
    }
    var sessions: [SessionEntry] { reply(.sessions)?.sessions ?? [] }
    var denials: [EventEntry] { reply(.whyDenied)?.events ?? [] }
    /// A TCP connection to the gateway succeeds within 1 s. `inSession`: from a process in a
    /// cgroup under the sessions' parent (as a launched client is; the table binds the gateway
    /// to those sockets), else from this test process (as a client started directly is).
    func canReachGateway(inSession: Bool = true) -> Bool {
        guard inSession else {
            if case .success = tcpConnect(namespacePath: client.path, address: Self.gatewayIP, port: Self.port, timeout: 1) { return true }
            return false
        }
        let probe = "\(cgroup)/probe"
        if mkdir(probe, 0o755) != 0 && errno != EEXIST { return false }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        // Python's socket timeout (poll), not timeout(1): a child of the test process inherits
        // its blocked signals, so timeout's SIGALRM would never arrive.
        p.arguments = ["--net=\(client.path)", "/bin/sh", "-c", "echo $$ > \(probe)/cgroup.procs && exec \(Self.connectScript)"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return false }
        p.waitUntilExit()
        return p.terminationStatus == 0
    }

    /// Connects to the gateway within 1 s: exit status 0 when it did.
    static let connectScript = "/usr/bin/python3 -c 'import socket; socket.create_connection((\"\(gatewayIP)\", \(port)), timeout=1)'"

    func cleanup() {
        if ProcessInfo.processInfo.environment["SEGGUARD_TEST_LOGS"] != nil {
            print("---- segguardd log of \(client.name)\n" + ((try? String(contentsOf: log, encoding: .utf8)) ?? ""))
        }
        for l in launchers where l.isRunning { kill(l.processIdentifier, SIGKILL) }
        for s in sessions { for p in s.pids { kill(p, SIGKILL) } }
        killDaemon(SIGTERM)
        server.stop()
        // Session cgroups of this run (and the base) go once they are empty.
        if let entries = try? FileManager.default.contentsOfDirectory(atPath: cgroup) {
            for e in entries where e.hasPrefix("session-") {
                try? "1\n".write(toFile: "\(cgroup)/\(e)/cgroup.kill", atomically: false, encoding: .utf8)
                Thread.sleep(forTimeInterval: 0.05)
                rmdir("\(cgroup)/\(e)")
            }
        }
        rmdir("\(cgroup)/probe")
        rmdir(cgroup)
        client.destroy()
        gateway.destroy()
        try? FileManager.default.removeItem(at: dir)
    }
}

/// Where session cgroups go: the daemon's own default (`<cgroup2 mount>/segguard`).
enum SessionTrackerPaths {
    static let base: String? = SessionTracker.defaultBase()
}

/// A private D-Bus session bus (dbus-daemon) in `dir`, and dbus-monitor recording the
/// desktop-notification calls on it: what a desktop session would show.
final class PrivateSessionBus {
    let address: String
    let daemon = Process()
    let monitor = Process()
    let out = Pipe()

    init(dir: URL) throws {
        let path = dir.appendingPathComponent("bus").path
        address = "unix:path=\(path)"
        daemon.executableURL = URL(fileURLWithPath: "/usr/bin/dbus-daemon")
        daemon.arguments = ["--session", "--nofork", "--address=\(address)"]
        daemon.standardError = FileHandle.nullDevice
        daemon.standardOutput = FileHandle.nullDevice
        try daemon.run()
        let deadline = Date().addingTimeInterval(10)
        while !FileManager.default.fileExists(atPath: path) && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        monitor.executableURL = URL(fileURLWithPath: "/usr/bin/dbus-monitor")
        monitor.arguments = ["--address", address, "interface='org.freedesktop.Notifications'"]
        monitor.standardOutput = out
        do {
            try monitor.run()
        } catch {
            close()
            throw error
        }
        Thread.sleep(forTimeInterval: 0.3)  // let the monitor register before the first call (it has no readiness signal)
    }

    /// Stops the monitor; what it recorded.
    func seen() -> String {
        if monitor.isRunning { kill(monitor.processIdentifier, SIGKILL); monitor.waitUntilExit() }
        return String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }

    /// SIGKILL: processes started by the test runner may inherit an ignored SIGTERM.
    func close() {
        for p in [monitor, daemon] where p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
    }
}

/// `segguard-launch --watch` against `socket`, telling the desktop on `bus` in `lang`: as root
/// (the session's owner in these tests), or as `user` (then with `--no-notify`: its stderr
/// shows what it would have told).
func noticeWatcher(socket: String, bus: String, lang: String = "ja_JP.UTF-8", user: (uid: Int, gid: Int)? = nil) throws -> (Process, Pipe) {
    let p = Process()
    let err = Pipe()
    var argv: [String] = []
    if let user { argv += ["--reuid=\(user.uid)", "--regid=\(user.gid)", "--clear-groups"] }
    argv += [binDir.appendingPathComponent("segguard-launch").path, "--socket", socket, "--watch", "--interval", "0.2"]
    if user != nil { argv.append("--no-notify") }
    p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
    p.arguments = user == nil ? ["--"] + argv : argv
    var env = ProcessInfo.processInfo.environment
    env["DBUS_SESSION_BUS_ADDRESS"] = bus
    env["LANG"] = lang
    env["LC_ALL"] = nil
    env["LC_MESSAGES"] = nil
    p.environment = env
    p.standardError = err
    p.standardOutput = FileHandle.nullDevice
    try p.run()
    return (p, err)
}

func isAlive(_ pid: Int32) -> Bool { kill(pid, 0) == 0 || errno != ESRCH }

@Suite("Segment binding on the real kernel", .serialized,
       .enabled(if: canCreateNamespaces && SessionTrackerPaths.base != nil && FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"),
                "needs root, iproute2, a cgroup v2 mount and python3 (the probe that connects from a session cgroup)"))
struct EnforcementTests {
    @Test("carrier loss: gateway blocked, the session and its double-forked child ended; carrier back: launch allowed again")
    func carrierLossEndsSession() throws {
        let lab = try EnforcementLab(policy: EnforcementLab.policy(), base: 3900)
        defer { lab.cleanup() }
        try lab.startDaemon()
        #expect(lab.eventually { lab.isBoundToSga0 })
        #expect(lab.canReachGateway())

        let launcher = try lab.launch(EnforcementLab.client)
        #expect(lab.eventually { lab.server.acceptedCount >= 2 && (lab.sessions.first?.pids.count ?? 0) >= 2 }, "client connected and forked")
        let session = try #require(lab.sessions.first)
        #expect(session.profile == "mynumber")
        #expect(session.pid == launcher.processIdentifier, "the launcher exec'd the client: same pid")

        try lab.gateway.ip("link", "set", "gwa0", "down")
        #expect(lab.eventually { session.pids.allSatisfy { !isAlive($0) } }, "every process of the session is gone, the setsid child included")
        #expect(!lab.canReachGateway())
        let ended = try #require(lab.denials.last { $0.kind == "sessions-ended" })
        #expect(ended.sessions.map(\.id) == [session.id])
        #expect(ended.reason.contains("sga0 matches site 'lab' wired rule"))
        #expect(ended.reason.contains("has no carrier"))
        #expect((ended.latencyMs ?? 1e9) < 2000)

        try lab.gateway.ip("link", "set", "gwa0", "up")
        #expect(lab.eventually { lab.isBoundToSga0 })
        #expect(lab.eventually { lab.canReachGateway() })
        let again = try lab.launch(["/bin/true"])
        again.waitUntilExit()
        #expect(again.terminationStatus == 0)
    }

    @Test("fail closed on every exit: SIGTERM, SIGKILL with the unit's ExecStopPost, a start with an invalid policy; each leaves the gateway unreachable")
    func failClosedOnExit() throws {
        let lab = try EnforcementLab(policy: EnforcementLab.policy(), base: 4310)
        defer { lab.cleanup() }
        func authorized() throws {
            try lab.startDaemon()
            #expect(lab.eventually { lab.isBoundToSga0 })
            #expect(lab.eventually { lab.canReachGateway() })
        }

        // SIGTERM (systemctl stop): the daemon loads the drop-all baseline itself as it stops.
        try authorized()
        lab.killDaemon(SIGTERM)
        #expect(lab.daemon?.terminationStatus == 0)
        #expect(lab.hasTable && !lab.tableAccepts)
        #expect(!lab.canReachGateway())
        #expect(try String(contentsOf: lab.log, encoding: .utf8).contains("agent stopped; the network binding now holds the drop-all baseline"))

        // SIGKILL: the process can do nothing; the allow table stays until the unit's stop
        // hook runs. The hook's command, read from the shipped unit, with this lab's file.
        try authorized()
        lab.killDaemon(SIGKILL)
        #expect(lab.tableAccepts, "after SIGKILL only the service manager can close the table")
        let unit = try String(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Packaging/segguardd.service"), encoding: .utf8)
        let hook = try #require(unit.split(separator: "\n").first { $0.hasPrefix("ExecStopPost=") })
        #expect(hook == "ExecStopPost=-/usr/sbin/nft -f /var/lib/segguard/baseline.nft")
        let argv = hook.dropFirst("ExecStopPost=-".count).split(separator: " ").map(String.init).map { $0 == "/var/lib/segguard/baseline.nft" ? lab.baselineFile : $0 }
        _ = try runCommand(["nsenter", "--net=\(lab.client.path)"] + argv)
        #expect(!lab.tableAccepts)
        #expect(!lab.canReachGateway())

        // An invalid policy at start, after a run killed while it allowed sga0: segguardd exits 2
        // having loaded the last good policy's baseline before reading the policy.
        try authorized()
        lab.killDaemon(SIGKILL)
        #expect(lab.tableAccepts)
        try "schema_version: 1\nsites: 3\n".write(to: lab.policyFile, atomically: true, encoding: .utf8)
        try lab.startDaemon()
        lab.daemon?.waitUntilExit()
        #expect(lab.daemon?.terminationStatus == 2)
        #expect(lab.hasTable && !lab.tableAccepts)
        #expect(!lab.canReachGateway())
    }

    @Test("a foreign change to the table (chain flushed, accept inserted, table deleted, made dormant) is undone at once and recorded naming nft")
    func tamperRestored() throws {
        let lab = try EnforcementLab(policy: EnforcementLab.policy(), base: 4320)
        defer { lab.cleanup() }
        try lab.gateway.ip("link", "set", "gwa0", "down")
        try lab.startDaemon()
        #expect(lab.eventually { lab.segment == "unauthorized" && lab.hasTable })
        try lab.client.ip("route", "replace", "10.62.9.1/32", "via", "10.62.2.1", "dev", "alt0")
        #expect(!lab.canReachGateway())
        let nft = ["nsenter", "--net=\(lab.client.path)", "nft"]
        let changes: [(String, [String])] = [
            ("flush chain", ["flush", "chain", "inet", "segguard", "output"]),
            ("accept inserted", ["insert", "rule", "inet", "segguard", "output", "accept"]),
            ("table deleted", ["delete", "table", "inet", "segguard"]),
            ("dormant", ["add", "table", "inet", "segguard", "{ flags dormant ; }"]),
        ]
        for (what, argv) in changes {
            let before = lab.denials.filter { $0.kind == "binding-tampered" }.count
            try runCommand(nft + argv)
            #expect(lab.eventually(2) { lab.denials.filter { $0.kind == "binding-tampered" }.count > before }, "\(what): recorded")
            let listing = (try? runCommand(nft + ["list", "table", "inet", "segguard"])) ?? ""
            #expect(listing.contains("drop comment") && !listing.contains("dormant") && !listing.contains(" accept\n"), "\(what): restored\n\(listing)")
            #expect(!lab.canReachGateway(), "\(what): the gateway stays closed")
            Thread.sleep(forTimeInterval: 1.05)  // one tamper event a second
        }
        let event = try #require(lab.denials.last { $0.kind == "binding-tampered" })
        #expect(event.reason.hasPrefix("table inet segguard changed by nft (pid "), "\(event.reason)")
        #expect(event.exec?.path.hasSuffix("nft") == true || event.exec?.path == "[nft]")
    }

    @Test("no lock-out: a user holding and re-opening many control connections, and one asking for status in a loop; root's status answers each time within 1 s, another user's launch succeeds, the log stays short",
          .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"),
                   "needs python3 and setpriv"))
    func noLockOut() throws {
        let lab = try EnforcementLab(policy: EnforcementLab.policy(), base: 4330)
        defer { lab.cleanup() }
        try lab.startDaemon()
        #expect(lab.eventually { lab.isBoundToSga0 })
        let logLinesBefore = ((try? String(contentsOf: lab.log, encoding: .utf8)) ?? "").split(separator: "\n").count

        // uid 65534: holds up to 300 connections, opening a new one whenever one is closed;
        // uid 65533: asks for status (refused: not an admin) as fast as it can.
        let script = lab.dir.appendingPathComponent("flood.py")
        try """
            import socket, sys, time
            path, mode, until = sys.argv[1], sys.argv[2], time.time() + float(sys.argv[3])
            held, opened = [], 0
            while time.time() < until:
                try:
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.settimeout(0.2)
                    s.connect(path)
                    opened += 1
                    if mode == "ask":
                        s.sendall(b'{"version":1,"command":"status"}\\n')
                        s.recv(4096)
                        s.close()
                    else:
                        s.setblocking(False)
                        held.append(s)
                except OSError:
                    s.close()
                alive = []
                for c in held:
                    try:
                        if c.recv(1, socket.MSG_DONTWAIT) == b"":
                            c.close()
                            continue
                    except BlockingIOError:
                        pass
                    except OSError:
                        c.close()
                        continue
                    alive.append(c)
                held = alive[-300:]
            print(opened)
            """.write(to: script, atomically: true, encoding: .utf8)
        chmod(lab.dir.path, 0o755)
        chmod(script.path, 0o644)
        var floods: [Process] = []
        for (uid, mode) in [(65534, "hold"), (65533, "ask")] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            p.arguments = ["--reuid=\(uid)", "--regid=\(uid)", "--clear-groups", "/usr/bin/python3", script.path, lab.socket, mode, "6"]
            let out = Pipe()
            p.standardOutput = out
            p.standardError = FileHandle.nullDevice
            try p.run()
            floods.append(p)
        }
        defer { for p in floods where p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        Thread.sleep(forTimeInterval: 1)

        var slowest = 0.0, failures = 0
        for _ in 0..<20 {
            let start = Date()
            let reply = try? ControlClient.send(ControlRequest(command: .status), path: lab.socket)
            slowest = max(slowest, Date().timeIntervalSince(start))
            if reply?.status == nil { failures += 1 }
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(failures == 0, "root's status failed \(failures) of 20 times during the flood")
        #expect(slowest < 1, "root's slowest status: \(slowest) s")
        let launch = try lab.launch(["/bin/true"], user: (1000, 1000))
        launch.waitUntilExit()
        #expect(launch.terminationStatus == 0, "another user's launch during the flood")
        for p in floods { p.waitUntilExit() }
        let opened = floods.map { String(decoding: ($0.standardOutput as! Pipe).fileHandleForReading.readDataToEndOfFile(), as: UTF8.self) }
        let logLines = ((try? String(contentsOf: lab.log, encoding: .utf8)) ?? "").split(separator: "\n").count - logLinesBefore
        print("lock-out flood: connections opened by uid 65534/65533: \(opened.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }), "
              + "root's slowest status \(String(format: "%.3f", slowest)) s, \(logLines) log lines")
        #expect(logLines < 100, "\(logLines) log lines during the flood (connections opened: \(opened))")
        #expect(opened.allSatisfy { (Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) > 100 }, "the floods ran: \(opened)")
    }

    @Test("bound to sessions: on the authorized segment a client started directly cannot connect to the gateway (refused, recorded with its uid) while a launched one can",
          .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"), "needs setpriv (util-linux)"))
    func boundToSessions() throws {
        let lab = try EnforcementLab(policy: EnforcementLab.policy(), base: 4340)
        defer { lab.cleanup() }
        chmod(lab.dir.path, 0o755)  // uid 1000 reaches the control socket
        try lab.startDaemon()
        #expect(lab.eventually { lab.isBoundToSga0 })
        let listing = try runCommand(["nsenter", "--net=\(lab.client.path)", "nft", "list", "table", "inet", "segguard"])
        #expect(listing.contains("socket cgroupv2 level"), "\(listing)")

        // Started directly, by root (this test) and by uid 1000: no connection.
        #expect(!lab.canReachGateway(inSession: false), "a process outside the sessions is refused")
        let direct = Process()
        direct.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        direct.arguments = ["--net=\(lab.client.path)", "setpriv", "--reuid=1000", "--regid=1000", "--clear-groups",
                            "/bin/sh", "-c", "exec \(EnforcementLab.connectScript)"]
        direct.standardError = FileHandle.nullDevice
        try direct.run()
        direct.waitUntilExit()
        #expect(direct.terminationStatus != 0, "uid 1000's direct client did not connect")
        #expect(lab.server.acceptedCount == 0)
        #expect(lab.eventually { lab.denials.contains { $0.kind == "gateway-refused" && $0.uid == 1000 } }, "recorded with the uid")
        let event = try #require(lab.denials.last { $0.kind == "gateway-refused" && $0.uid == 1000 })
        #expect(event.reason.contains("a process of uid 1000 sent to 10.62.9.1 tcp/8443 via sga0: refused, not started through segguard-launch"), "\(event.reason)")

        // A program of the user's own asking the gate itself (not the launcher): not put into
        // a session; it still cannot connect.
        let script = lab.dir.appendingPathComponent("ask.py")
        try """
            import socket, sys
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(sys.argv[1])
            c.sendall(b'{"version":1,"command":"launch","profile":"mynumber","clientCommand":["/bin/true"]}\\n')
            reply = c.makefile().readline()
            print(reply, end="")
            try:
                socket.create_connection(("\(EnforcementLab.gatewayIP)", \(EnforcementLab.port)), timeout=1)
                print("CONNECTED")
            except OSError as e:
                print("refused:", e)
            """.write(to: script, atomically: true, encoding: .utf8)
        chmod(script.path, 0o644)
        let asker = Process()
        asker.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        asker.arguments = ["--net=\(lab.client.path)", "setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "/usr/bin/python3", script.path, lab.socket]
        let out = Pipe()
        asker.standardOutput = out
        asker.standardError = FileHandle.nullDevice
        try asker.run()
        // (JSONEncoder may write "/" as "\/".)
        let answer = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).replacingOccurrences(of: "\\/", with: "/")
        asker.waitUntilExit()
        #expect(answer.contains("\"allowed\":false"), "\(answer)")
        #expect(answer.contains("came from /usr/bin/python3"), "\(answer)")
        #expect(answer.contains("not from \(binDir.appendingPathComponent("segguard-launch").resolvingSymlinksInPath().path)"), "\(answer)")
        #expect(!answer.contains("CONNECTED") && lab.server.acceptedCount == 0, "\(answer)")
        #expect(lab.sessions.isEmpty)

        // The real launcher with LD_PRELOAD set: refused too.
        let preloaded = try lab.launch(["/bin/true"], user: (1000, 1000), environment: ["LD_PRELOAD": "/nonexistent.so"])
        let said = String(decoding: (preloaded.standardError as? Pipe)?.fileHandleForReading.readDataToEndOfFile() ?? Data(), as: UTF8.self)
        preloaded.waitUntilExit()
        #expect(preloaded.terminationStatus == 1)
        #expect(said.contains("the launcher runs with LD_PRELOAD set"), "\(said)")
        // ... and with SWIFT_BACKTRACE naming the user's own program (the Swift runtime would
        // start it, in the session's cgroup, on SIGQUIT): refused before any session exists.
        let backtraced = try lab.launch(["/bin/true"], user: (1000, 1000), environment: ["SWIFT_BACKTRACE": "enable=yes,swift-backtrace=/tmp/mine"])
        let said2 = String(decoding: (backtraced.standardError as? Pipe)?.fileHandleForReading.readDataToEndOfFile() ?? Data(), as: UTF8.self)
        backtraced.waitUntilExit()
        #expect(backtraced.terminationStatus == 1)
        #expect(said2.contains("the launcher runs with SWIFT_BACKTRACE set"), "\(said2)")
        #expect(lab.sessions.isEmpty)

        // Launched through the gate by the same user: connects.
        let launcher = try lab.launch(EnforcementLab.client, user: (1000, 1000))
        #expect(lab.eventually { lab.server.acceptedCount >= 1 }, "the launched client connected")
        #expect(lab.sessions.first?.pid == launcher.processIdentifier)
        // While it runs, a direct attempt is still refused.
        #expect(!lab.canReachGateway(inSession: false))
    }

    @Test("a second uplink appearing ends the session")
    func secondUplinkEndsSession() throws {
        let lab = try EnforcementLab(policy: EnforcementLab.policy(), base: 3910)
        defer { lab.cleanup() }
        try lab.startDaemon()
        #expect(lab.eventually { lab.isBoundToSga0 })
        _ = try lab.launch(EnforcementLab.client)
        #expect(lab.eventually { (lab.sessions.first?.pids.count ?? 0) >= 2 })
        let session = try #require(lab.sessions.first)

        try lab.client.addVeth("usbtest0", index: 3918, peer: "phone0", index: 3919)
        try lab.client.ip("addr", "add", "10.63.0.2/24", "dev", "usbtest0")
        try lab.client.ip("route", "add", "default", "via", "10.63.0.1", "dev", "usbtest0")
        #expect(lab.eventually { session.pids.allSatisfy { !isAlive($0) } })
        let ended = try #require(lab.denials.last { $0.kind == "sessions-ended" })
        #expect(ended.reason.hasPrefix("usbtest0 (virtual veth) is a second uplink"))
        #expect(!lab.canReachGateway(), "sga0 still has carrier, but the decision is unauthorized: the table drops")
    }

    @Test("off-segment: segguard-launch refuses with the reason and the refusal is an event; unknown profile and wrong user too")
    func refusals() throws {
        let lab = try EnforcementLab(policy: EnforcementLab.policy() + "\n    allowed_groups: [root]\n", base: 3920)
        defer { lab.cleanup() }
        try lab.gateway.ip("link", "set", "gwa0", "down")
        try lab.startDaemon()
        #expect(lab.eventually { lab.segment == "unauthorized" })

        let p = try lab.launch(["/bin/true"], environment: ["LANG": "C", "LC_ALL": "", "LC_MESSAGES": ""])
        p.waitUntilExit()
        #expect(p.terminationStatus == 1)
        let stderr = String(decoding: (p.standardError as! Pipe).fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        // The user's words first (LANG=C: English), then the
        // technical reason for the help desk.
        #expect(stderr.hasPrefix("The virtual desktop was not started\nThis computer is not connected to the office network."), "\(stderr)")
        #expect(stderr.contains("\nsegguard-launch: refused: profile 'mynumber' needs the My Number segment: no authorized path: sga0"))
        #expect(lab.denials.last?.kind == "launch-refused")

        let unknown = try lab.launch(profile: "mynumbre", ["/bin/true"])
        unknown.waitUntilExit()
        #expect(unknown.terminationStatus == 1)
        #expect(lab.denials.last?.reason == "unknown profile 'mynumbre' (profiles in the policy: mynumber, lgwan)")

        // The lgwan profile (allowed_groups: [root] appended to it) refuses an unprivileged user.
        try lab.gateway.ip("link", "set", "gwa0", "up")
        #expect(lab.eventually { lab.isBoundToSga0 })
        let nobody = try lab.launch(profile: "lgwan", ["/bin/true"], user: (65534, 65534))
        nobody.waitUntilExit()
        #expect(nobody.terminationStatus == 1)
        #expect(lab.denials.last?.reason == "uid 65534 is not in a group allowed to launch profile 'lgwan' (root)")
        #expect(lab.sessions.isEmpty, "nothing half-applied")
    }

    @Test("a refusal is shown as a freedesktop notification on the user's session bus, in Japanese on a Japanese desktop and in English under LANG=C, with the help desk",
          .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/dbus-daemon") && FileManager.default.isExecutableFile(atPath: "/usr/bin/dbus-monitor"),
                   "needs dbus-daemon and dbus-monitor (scripts/install-deps.sh installs them)"))
    func refusalNotification() throws {
        let lab = try EnforcementLab(policy: EnforcementLab.policy() + "\nhelpdesk: {name: \"情報政策課 ヘルプデスク\", contact: \"内線 2345\"}\n", base: 3950)
        defer { lab.cleanup() }
        try lab.gateway.ip("link", "set", "gwa0", "down")
        try lab.startDaemon()
        #expect(lab.eventually { lab.segment == "unauthorized" })

        // A private session bus and a monitor recording the Notifications calls on it.
        let session = try PrivateSessionBus(dir: lab.dir)
        defer { session.close() }
        let bus = session.address

        // A Japanese desktop, then an English one (LANG=C): the same refusal in the user's
        // words, with the policy's help desk; the technical reason stays on stderr.
        let ja = try lab.launch(["/bin/true"], notify: bus, environment: ["LANG": "ja_JP.UTF-8", "LC_ALL": "", "LC_MESSAGES": ""])
        ja.waitUntilExit()
        #expect(ja.terminationStatus == 1)
        let jaErr = String(decoding: (ja.standardError as! Pipe).fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(jaErr.contains("庁舎内の無線LANまたは有線LANに接続してから") && jaErr.contains("refused: profile 'mynumber' needs the My Number segment"), "\(jaErr)")
        let en = try lab.launch(["/bin/true"], notify: bus, environment: ["LANG": "C", "LC_ALL": "", "LC_MESSAGES": ""])
        en.waitUntilExit()
        #expect(en.terminationStatus == 1)
        Thread.sleep(forTimeInterval: 0.3)
        let seen = session.seen()
        #expect(seen.components(separatedBy: "member=Notify").count - 1 == 2, "\(seen)")
        #expect(seen.contains("string \"仮想デスクトップを開始できません\""), "\(seen)")
        #expect(seen.contains("この端末は、いま庁舎のネットワークにつながっていません。"))
        #expect(seen.contains("お問い合わせ: 情報政策課 ヘルプデスク（内線 2345）"))
        #expect(seen.contains("string \"The virtual desktop was not started\""))
        #expect(seen.contains("Connect to the office Wi-Fi or a LAN cable at your desk, then start it again."))
        #expect(seen.contains("Help: 情報政策課 ヘルプデスク (内線 2345)"))
        #expect(!seen.contains("sga0"), "no interface names in what the user reads")
    }

    @Test("the user's desktop session (segguard-launch --watch) is told, in Japanese (and in English under LANG=C), that the VDI will close in N seconds when the office network is lost, that it stays when the network returns in time, that it was closed when not, also across a restart of segguardd; another user's watcher is told nothing",
          .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/dbus-daemon") && FileManager.default.isExecutableFile(atPath: "/usr/bin/dbus-monitor"),
                   "needs dbus-daemon and dbus-monitor (scripts/install-deps.sh installs them)"))
    func graceAndEndNotices() throws {
        let lab = try EnforcementLab(policy: EnforcementLab.policy(grace: 2) + "\nhelpdesk: {name: \"情報政策課 ヘルプデスク\", contact: \"内線 2345\"}\n", base: 3955)
        defer { lab.cleanup() }
        try lab.startDaemon()
        #expect(lab.eventually { lab.isBoundToSga0 })

        // The desktop's private session bus, a monitor of the Notifications calls on it.
        let session = try PrivateSessionBus(dir: lab.dir)
        defer { session.close() }
        let bus = session.address

        // The session owner's watchers (root here, as the session): a Japanese desktop and an
        // English one (LANG=C); and another user's.
        let (mine, mineErr) = try noticeWatcher(socket: lab.socket, bus: bus)
        let (english, _) = try noticeWatcher(socket: lab.socket, bus: bus, lang: "C")
        let (other, otherErr) = try noticeWatcher(socket: lab.socket, bus: bus, user: (65534, 65534))
        defer {
            for p in [mine, english, other] where p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
        }
        Thread.sleep(forTimeInterval: 0.6)  // each watcher has asked once (its starting point)

        _ = try lab.launch(EnforcementLab.client)
        #expect(lab.eventually { (lab.sessions.first?.pids.count ?? 0) >= 2 })
        // A short loss (the cable back well within the 2 s grace): the countdown, then that
        // the network is back; the session goes on.
        try lab.gateway.ip("link", "set", "gwa0", "down")
        #expect(lab.eventually { lab.segment == "unauthorized" })
        try lab.gateway.ip("link", "set", "gwa0", "up")
        #expect(lab.eventually { lab.isBoundToSga0 })
        Thread.sleep(forTimeInterval: 2.5)
        #expect(lab.sessions.count == 1, "kept")
        try lab.gateway.ip("link", "set", "gwa0", "down")
        #expect(lab.eventually(15) { lab.sessions.isEmpty }, "the session ends after the 2 s grace")
        Thread.sleep(forTimeInterval: 0.8)
        // segguardd restarts (its notices count from 1 again, below what the watcher saw):
        // the watcher notices the new run and shows its notices from the first.
        lab.killDaemon(SIGTERM)
        try lab.gateway.ip("link", "set", "gwa0", "up")
        try lab.startDaemon()
        #expect(lab.eventually { lab.isBoundToSga0 })
        Thread.sleep(forTimeInterval: 2.5)  // the watcher's retry after the restart
        _ = try lab.launch(EnforcementLab.client)
        #expect(lab.eventually { (lab.sessions.first?.pids.count ?? 0) >= 2 })
        try lab.gateway.ip("link", "set", "gwa0", "down")
        #expect(lab.eventually(15) { lab.sessions.isEmpty })
        Thread.sleep(forTimeInterval: 0.8)
        for p in [mine, english, other] { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
        let seen = session.seen()
        #expect(seen.contains("string \"庁舎のネットワークから切断されました\""), "\(seen)")
        #expect(seen.contains("string \"庁舎のネットワークに戻りました\"") && seen.contains("仮想デスクトップはそのまま使えます。"), "the short loss's return: \(seen)")
        let order = ["庁舎のネットワークから切断されました", "庁舎のネットワークに戻りました", "庁舎のネットワークから切断されました", "仮想デスクトップを終了しました"]
        var rest = Substring(seen)
        for title in order {
            guard let r = rest.range(of: "string \"\(title)\"") else { Issue.record("\(title) missing in order: \(seen)"); break }
            rest = rest[r.upperBound...]
        }
        #expect(seen.contains("2秒以内に庁舎の無線LANまたは有線LANに戻らない場合、仮想デスクトップは終了します。"))
        #expect(seen.components(separatedBy: "string \"仮想デスクトップを終了しました\"").count - 1 == 2, "both runs' endings: \(seen)")
        #expect(seen.contains("お問い合わせ: 情報政策課 ヘルプデスク（内線 2345）"))
        // The same notices on the English desktop, in the same order.
        var restEn = Substring(seen)
        for title in ["Disconnected from the office network", "Back on the office network", "Disconnected from the office network", "The virtual desktop was closed"] {
            guard let r = restEn.range(of: "string \"\(title)\"") else { Issue.record("\(title) missing in order: \(seen)"); break }
            restEn = restEn[r.upperBound...]
        }
        #expect(seen.contains("Unless the office Wi-Fi or LAN is back within 2 seconds, the virtual desktop will close."))
        #expect(seen.contains("Your virtual desktop stays open; carry on."))
        #expect(seen.components(separatedBy: "string \"The virtual desktop was closed\"").count - 1 == 2, "both runs' endings: \(seen)")
        #expect(seen.contains("Help: 情報政策課 ヘルプデスク (内線 2345)"))
        let said = String(decoding: mineErr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(said.contains("庁舎のネットワークから切断されました") && said.contains("仮想デスクトップを終了しました"), "\(said)")
        let otherSaid = String(decoding: otherErr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        // Its log may say that segguardd was unreachable while it restarted, never a notice.
        #expect(!otherSaid.contains("仮想デスクトップ") && !otherSaid.contains("庁舎") && !otherSaid.contains("virtual desktop"),
                "another user's watcher is told nothing: \(otherSaid)")
    }

    @Test("a restarted segguardd adopts the sessions of the run before and still ends them")
    func restartAdoptsSessions() throws {
        let lab = try EnforcementLab(policy: EnforcementLab.policy(), base: 3960)
        defer { lab.cleanup() }
        try lab.startDaemon()
        #expect(lab.eventually { lab.isBoundToSga0 })
        _ = try lab.launch(EnforcementLab.client)
        #expect(lab.eventually { (lab.sessions.first?.pids.count ?? 0) >= 2 })
        let before = try #require(lab.sessions.first)

        lab.killDaemon(SIGKILL)
        try lab.startDaemon()
        #expect(lab.eventually { lab.isBoundToSga0 })
        let adopted = try #require(lab.sessions.first)
        #expect(adopted.id == before.id && adopted.profile == "(adopted after restart)")
        #expect(Set(adopted.pids) == Set(before.pids))

        try lab.gateway.ip("link", "set", "gwa0", "down")
        #expect(lab.eventually { before.pids.allSatisfy { !isAlive($0) } })
        let next = try lab.launch(profile: "lgwan", ["/bin/true"])
        next.waitUntilExit()
        #expect(next.terminationStatus == 0)
    }

    @Test("a table removed behind segguardd's back (nft flush ruleset) is put back at once, without any network change")
    func tableRestored() throws {
        let lab = try EnforcementLab(policy: EnforcementLab.policy(), base: 3970)
        defer { lab.cleanup() }
        try lab.startDaemon()
        #expect(lab.eventually { lab.isBoundToSga0 })
        try runCommand(["nsenter", "--net=\(lab.client.path)", "nft", "flush", "ruleset"])
        #expect(lab.eventually(1) { lab.isBoundToSga0 }, "restored without any network change")
        #expect(lab.canReachGateway())
    }

    @Test("SIGKILL of segguardd leaves the drop in place; a restarted segguardd reconciles the table")
    func crashFailsClosed() throws {
        let lab = try EnforcementLab(policy: EnforcementLab.policy(), base: 3930)
        defer { lab.cleanup() }
        try lab.startDaemon()
        #expect(lab.eventually { lab.isBoundToSga0 })
        #expect(lab.canReachGateway())

        lab.killDaemon(SIGKILL)
        // The path through alt0 was never authorized: with segguardd dead it stays closed.
        try lab.client.ip("route", "replace", "10.62.9.1/32", "via", "10.62.2.1", "dev", "alt0")
        #expect(!lab.canReachGateway(), "the table outlives the daemon")

        // Someone removes the table while segguardd is down; the restart puts it back.
        try runCommand(["nsenter", "--net=\(lab.client.path)", "nft", "delete", "table", "inet", "segguard"])
        #expect(lab.canReachGateway(), "without the table alt0 reaches the gateway")
        try lab.startDaemon()
        #expect(lab.eventually { lab.isBoundToSga0 })
        #expect(!lab.canReachGateway(), "reconciled: alt0 blocked again")
        try lab.client.ip("route", "replace", "10.62.9.1/32", "via", "10.62.1.1", "dev", "sga0")
        #expect(lab.canReachGateway())
    }

    @Test("audit mode: the same second-uplink scenario logs would-be actions and blocks nothing")
    func auditBlocksNothing() throws {
        let lab = try EnforcementLab(policy: EnforcementLab.policy(mode: "audit"), base: 3940)
        defer { lab.cleanup() }
        try lab.startDaemon()
        #expect(lab.eventually { lab.segment == "authorized-wired" && lab.hasTable }, "audit: a counting table, no baseline drop")
        _ = try lab.launch(EnforcementLab.client)
        #expect(lab.eventually { (lab.sessions.first?.pids.count ?? 0) >= 2 })
        let session = try #require(lab.sessions.first)

        try lab.client.addVeth("usbtest0", index: 3948, peer: "phone0", index: 3949)
        try lab.client.ip("addr", "add", "10.63.0.2/24", "dev", "usbtest0")
        try lab.client.ip("route", "add", "default", "via", "10.63.0.1", "dev", "usbtest0")
        #expect(lab.eventually { lab.denials.contains { $0.kind == "sessions-would-be-ended" } })
        #expect(session.pids.allSatisfy(isAlive), "audit: the session keeps running")
        #expect(lab.canReachGateway(), "audit: the gateway stays reachable")
        let refused = try lab.launch(["/bin/true"])
        refused.waitUntilExit()
        #expect(refused.terminationStatus == 0, "audit: the launch goes ahead")
        #expect(lab.denials.contains { $0.kind == "launch-would-be-refused" })
    }
}
