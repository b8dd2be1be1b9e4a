// The trusted-server probe on the real kernel. A client namespace has two veths: `pc0` to the
// "office" namespace (its default route) and `pc1` to a "home" namespace (a more specific route
// for 10.48.50.0/24, where both namespaces hold the address 10.48.50.1). Stand-in TLS servers
// (python3's ssl module) run in the peer namespaces with certificates from SegguardPKI: the
// office's with the pinned key, an office port with another key, and an impostor at home.
// The prober's own event loop thread enters the client namespace.

import Foundation
import SegguardPKI
import SegguardProbe
import SegguardTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

private let python = "/usr/bin/python3"

/// A TLS server per `ADDRESS PORT CERT KEY` quadruple; prints "ready" once all listen. Each
/// connection: handshake (5 s at most), then close; nothing is read or written.
private let tlsServerScript = """
    import socket, ssl, sys, threading
    def serve(sock, ctx):
        while True:
            conn, _ = sock.accept()
            threading.Thread(target=handle, args=(conn, ctx), daemon=True).start()
    def handle(conn, ctx):
        conn.settimeout(5)
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                pass
        except Exception as e:
            pass
        finally:
            conn.close()
    args = sys.argv[1:]
    for i in range(0, len(args), 4):
        address, port, cert, key = args[i:i + 4]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address, int(port)))
        s.listen(128)
        threading.Thread(target=serve, args=(s, ctx), daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()
    """

/// A python TLS server inside a namespace; `stop()` (also on deinit) kills it by its pid.
private final class StandInServer {
    let process = Process()
    let input = Pipe()

    /// `endpoints`: (address, port, certificate path, key path).
    init(namespace: TestNamespace, script: String, endpoints: [(String, UInt16, String, String)], log: String) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/ip")
        process.arguments = ["netns", "exec", namespace.name, python, "-u", script] + endpoints.flatMap { [$0.0, "\($0.1)", $0.2, $0.3] }
        let output = Pipe()
        process.standardOutput = output
        process.standardInput = input
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        try process.run()
        // "ready", or EOF when python failed (its stderr is in the log).
        var seen = Data()
        while !String(decoding: seen, as: UTF8.self).contains("ready") {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty {
                stop()
                throw CommandError(description: "stand-in TLS server in \(namespace.name) did not start: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
            }
            seen.append(chunk)
        }
    }

    func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    deinit { stop() }
}

/// The three namespaces, the servers and a prober inside the client namespace.
private final class ProbeLab {
    static let office = "10.48.1.1"
    static let shared = "10.48.50.1"
    static let blackholed = "10.48.9.9"
    static let pc0: Int32 = 4801
    static let pc1: Int32 = 4803

    let client: TestNamespace
    let officeNS: TestNamespace
    let homeNS: TestNamespace
    let dir: URL
    var servers: [StandInServer] = []
    let prober: TrustedServerProber
    /// The office server's key, another office key and the impostor's (home) key, as pins.
    let goodPin: String, otherPin: String, impostorPin: String

    init() throws {
        var made: [TestNamespace] = []
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sg-probe-\(getpid())-\(UUID().uuidString)")
        self.dir = dir
        var started: [StandInServer] = []
        do {
            for _ in 0..<3 { made.append(try TestNamespace(prefix: "sgprb")) }
            let (c, o, h) = (made[0], made[1], made[2])
            try c.ip("link", "add", "pc0", "index", "\(Self.pc0)", "type", "veth", "peer", "name", "po0", "index", "4802", "netns", o.name)
            try c.ip("link", "add", "pc1", "index", "\(Self.pc1)", "type", "veth", "peer", "name", "ph0", "index", "4804", "netns", h.name)
            try c.ip("addr", "add", "10.48.1.2/24", "dev", "pc0")
            try c.ip("addr", "add", "10.48.2.2/24", "dev", "pc1")
            try o.ip("addr", "add", "\(Self.office)/24", "dev", "po0")
            try h.ip("addr", "add", "10.48.2.1/24", "dev", "ph0")
            try o.ip("addr", "add", "\(Self.shared)/32", "dev", "lo")
            try h.ip("addr", "add", "\(Self.shared)/32", "dev", "lo")
            for (ns, l) in [(c, "pc0"), (c, "pc1"), (o, "po0"), (h, "ph0")] { try ns.ip("link", "set", l, "up") }
            // The office is the default route; the home uplink is preferred for 10.48.50.0/24.
            try c.ip("route", "add", "default", "via", Self.office, "dev", "pc0")
            try c.ip("route", "add", "10.48.50.0/24", "via", "10.48.2.1", "dev", "pc1")
            try o.ip("route", "add", "blackhole", "10.48.9.0/24")

            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let ca = try PKI.makeCA(commonName: "probe test CA")
            var pins: [String] = []
            var files: [(String, String)] = []
            for name in ["good", "other", "impostor"] {
                let cert = try PKI.issueServer(ca: ca, commonName: "\(name).office.test", dnsNames: ["probe.office.test"], ipAddresses: [Self.office, Self.shared])
                let (certPath, keyPath) = (dir.appendingPathComponent("\(name).crt").path, dir.appendingPathComponent("\(name).key").path)
                try cert.certificatePEM.write(toFile: certPath, atomically: true, encoding: .utf8)
                try cert.privateKeyPEM.write(toFile: keyPath, atomically: true, encoding: .utf8)
                pins.append(try TrustedServer.spkiSHA256(certificatePEM: cert.certificatePEM))
                files.append((certPath, keyPath))
            }
            let script = dir.appendingPathComponent("tls-server.py").path
            try tlsServerScript.write(toFile: script, atomically: true, encoding: .utf8)
            started.append(try StandInServer(namespace: o, script: script, endpoints: [
                (Self.office, 8443, files[0].0, files[0].1), (Self.shared, 8443, files[0].0, files[0].1),
                (Self.office, 8444, files[1].0, files[1].1),
            ], log: dir.appendingPathComponent("office.log").path))
            started.append(try StandInServer(namespace: h, script: script, endpoints: [(Self.shared, 8443, files[2].0, files[2].1)],
                                             log: dir.appendingPathComponent("home.log").path))
            (goodPin, otherPin, impostorPin) = (pins[0], pins[1], pins[2])
            prober = try TrustedServerProber(networkNamespace: c.path)
            (client, officeNS, homeNS) = (c, o, h)
            servers = started
        } catch {
            started.forEach { $0.stop() }
            made.forEach { $0.destroy() }
            try? FileManager.default.removeItem(at: dir)
            throw error
        }
    }

    func cleanup() {
        prober.shutdown()
        servers.forEach { $0.stop() }
        [client, officeNS, homeNS].forEach { $0.destroy() }
        try? FileManager.default.removeItem(at: dir)
    }

    /// Probes and returns the outcome with the wall time it took, in seconds.
    func probe(_ host: String, _ port: UInt16, pins: [String], via index: Int32, _ name: String, timeout: Double = 2,
               serverName: String? = nil) async -> (ProbeOutcome, Double) {
        // Timed from the call to the completion, on the prober's own thread (as the agent sees
        // it): the async test's own resumption may wait on Swift's cooperative pool, which other
        // suites running in parallel hold (a CI run measured 15 s for an RST that way).
        let start = Date()
        let finished = Mutex<Double>(0)
        let outcome = await withCheckedContinuation { (continuation: CheckedContinuation<ProbeOutcome, Never>) in
            prober.probe(TrustedServer(host: host, port: port, serverName: serverName, spkiSHA256: pins),
                         interfaceIndex: index, interfaceName: name, timeout: timeout) { outcome in
                finished.withLock { $0 = Date().timeIntervalSince(start) }
                continuation.resume(returning: outcome)
            }
        }
        return (outcome, finished.withLock { $0 })
    }
}

private func reason(_ o: ProbeOutcome) -> String {
    if case .refused(let r) = o { return r }
    return "(proven)"
}

@Suite("Trusted-server probe through one interface, on the real kernel", .serialized,
       .enabled(if: canCreateNamespaces && FileManager.default.isExecutableFile(atPath: python),
                "needs root, iproute2 (network namespaces) and /usr/bin/python3 (the stand-in TLS server)"))
struct TrustedServerProbeTests {
    @Test("The pinned key proves the network (hex or base64 pin, with or without SNI); another key is refused naming both hashes")
    func pinnedAndUnpinned() async throws {
        let lab = try ProbeLab()
        defer { lab.cleanup() }

        let (ok, _) = await lab.probe(ProbeLab.office, 8443, pins: [lab.otherPin, lab.goodPin], via: ProbeLab.pc0, "pc0")
        guard case .proven(let spki, let millis) = ok else {
            Issue.record("the pinned key was refused: \(ok)")
            return
        }
        #expect(spki == lab.goodPin && millis > 0 && millis < 2000)
        let b64 = SPKIPin.base64(hexPin: lab.goodPin)!
        let (ok2, _) = await lab.probe(ProbeLab.office, 8443, pins: ["sha256//" + b64], via: ProbeLab.pc0, "pc0", serverName: "probe.office.test")
        #expect(ok2.isProven, "\(ok2)")

        let (wrong, _) = await lab.probe(ProbeLab.office, 8444, pins: [lab.goodPin], via: ProbeLab.pc0, "pc0")
        let r = reason(wrong)
        #expect(r == "the server's key SHA-256 \(lab.otherPin) at 10.48.1.1:8444 via pc0 is not pinned (pinned: \(lab.goodPin))", "\(r)")
    }

    @Test("Nothing listening is refused at once (RST); a blackholed address after the timeout; a missing interface by name")
    func refusals() async throws {
        let lab = try ProbeLab()
        defer { lab.cleanup() }

        let (closed, t1) = await lab.probe(ProbeLab.office, 8445, pins: [lab.goodPin], via: ProbeLab.pc0, "pc0", timeout: 3)
        #expect(reason(closed) == "connect to 10.48.1.1:8445 via pc0 was refused (nothing listens on port 8445 there)")
        #expect(t1 < 1, "an RST answers at once; took \(t1) s")

        let (black, t2) = await lab.probe(ProbeLab.blackholed, 443, pins: [lab.goodPin], via: ProbeLab.pc0, "pc0", timeout: 1)
        #expect(reason(black) == "connect to 10.48.9.9:443 via pc0 timed out after 1 s")
        // The timeout is honoured (not cut short). That the probe's own deadline ended it (and
        // not the socket's connect timeout, 1 s later) is what the reason above says; the wall
        // time seen here also holds the test's own wait on Swift's cooperative pool, which other
        // suites running in parallel can hold for many seconds, so it bounds nothing above.
        #expect(t2 >= 0.95, "took \(t2) s for a 1 s timeout")

        let (gone, _) = await lab.probe(ProbeLab.office, 8443, pins: [lab.goodPin], via: 4859, "nosuch0")
        #expect(reason(gone) == "cannot probe 10.48.1.1:8443: interface nosuch0 (index 4859) does not exist")

        let (bad, _) = await lab.probe("office.test", 8443, pins: [lab.goodPin], via: ProbeLab.pc0, "pc0")
        #expect(reason(bad).contains("host \"office.test\" is not an IP address"), "\(reason(bad))")
    }

    @Test("The probe leaves through the named interface, whatever the routing table prefers")
    func bindingIsReal() async throws {
        let lab = try ProbeLab()
        defer { lab.cleanup() }

        // The table sends 10.48.50.1 out of pc1 (home), and 10.48.1.1 out of pc0 (office).
        let viaTable = try lab.client.ip("route", "get", ProbeLab.shared)
        #expect(viaTable.contains("dev pc1"), "\(viaTable)")

        // Bound to pc0, the probe reaches the office's server at 10.48.50.1 over the default route.
        let (office, _) = await lab.probe(ProbeLab.shared, 8443, pins: [lab.goodPin], via: ProbeLab.pc0, "pc0")
        #expect(office.isProven, "\(office)")
        // Bound to pc1, the same address is the impostor at home: its key is named, not pinned.
        let (home, _) = await lab.probe(ProbeLab.shared, 8443, pins: [lab.goodPin], via: ProbeLab.pc1, "pc1")
        #expect(reason(home).hasPrefix("the server's key SHA-256 \(lab.impostorPin) at 10.48.50.1:8443 via pc1 is not pinned"), "\(reason(home))")
        // The office LAN address is not behind pc1 at all: bound there, nothing answers.
        let (none, _) = await lab.probe(ProbeLab.office, 8443, pins: [lab.goodPin], via: ProbeLab.pc1, "pc1", timeout: 1)
        #expect(!none.isProven)
        #expect(reason(none).hasPrefix("connect to 10.48.1.1:8443 via pc1 "), "\(reason(none))")
    }

    @Test("Callback variant from a plain thread, concurrent probes, latency over 50 probes, shutdown")
    func latencyAndCallbacks() async throws {
        let lab = try ProbeLab()
        defer { lab.cleanup() }
        let server = TrustedServer(host: ProbeLab.office, port: 8443, spkiSHA256: [lab.goodPin])

        // The agent's way: from a non-async thread, called back, never blocking on the loop.
        final class Results: @unchecked Sendable {
            let lock = NSLock()
            var outcomes: [ProbeOutcome] = []
        }
        let results = Results()
        let done = DispatchSemaphore(value: 0)
        let prober = lab.prober
        startThreadForTest {
            for _ in 0..<10 {
                prober.probe(server, interfaceIndex: ProbeLab.pc0, interfaceName: "pc0", timeout: 2) { outcome in
                    results.lock.lock()
                    results.outcomes.append(outcome)
                    results.lock.unlock()
                    done.signal()
                }
            }
        }
        for _ in 0..<10 { #expect(done.wait(timeout: .now() + 10) == .success) }
        #expect(results.outcomes.count == 10 && results.outcomes.allSatisfy(\.isProven), "\(results.outcomes)")

        var millis: [Double] = []
        for _ in 0..<50 {
            let outcome = await lab.prober.probe(server, interfaceIndex: ProbeLab.pc0, interfaceName: "pc0", timeout: 2)
            guard case .proven(let spki, let ms) = outcome else {
                Issue.record("probe refused: \(outcome)")
                continue
            }
            #expect(spki == lab.goodPin)
            millis.append(ms)
        }
        #expect(millis.count == 50)
        millis.sort()
        if !millis.isEmpty {
            let p50 = millis[millis.count / 2]
            let p99 = millis[min(millis.count - 1, Int((Double(millis.count) * 0.99).rounded(.up)) - 1)]
            print(String(format: "trusted-server probe latency over %d probes (veth, P-256 stand-in server in python3): p50 %.2f ms, p99 %.2f ms, max %.2f ms",
                         millis.count, p50, p99, millis.last!))
        }

        lab.prober.shutdown()
        let after = await lab.prober.probe(server, interfaceIndex: ProbeLab.pc0, interfaceName: "pc0", timeout: 2)
        #expect(after == .refused(reason: "the trusted-server prober was shut down"))
    }
}

/// A plain thread, as the agent's poll loop is.
private func startThreadForTest(_ body: @escaping @Sendable () -> Void) {
    let t = Thread { body() }
    t.start()
}
