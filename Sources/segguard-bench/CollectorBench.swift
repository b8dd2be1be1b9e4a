// segguard-bench collector: heartbeats/s the collector accepts *and stores*, with SQLite and
// with PostgreSQL, beside the same server's raw floor (POST /api/v1/noop: 204 doing nothing),
// as a ratio. The issue's target: heartbeats/s >= 50 % of the floor.
//
// How it measures
//  * A throwaway PKI in a temporary directory: a CA, a server certificate for 127.0.0.1 and one
//    device certificate per simulated agent (`--agents`, default = `--connections`). The
//    collector takes the agent id from the client certificate, so distinct agents need
//    distinct certificates.
//  * Per store, a fresh store (a SQLite file in the temporary directory; a fresh database on a
//    throwaway PostgreSQL on 127.0.0.1, see `--postgres-fsync`) and the collector in this
//    process on 127.0.0.1 port 0, as segguard-collector runs it: Hummingbird, TLS with client
//    certificates, strict decoding, group commit (HeartbeatBatcher). Log level critical.
//  * Two runs against that same server, over the same kind of mutual-TLS keep-alive
//    connections and with the same heartbeat body: the floor (POST /api/v1/noop) and the
//    heartbeats (POST /api/v1/heartbeat). Each run: `--connections` closed-loop workers (one
//    request in flight each, the next one sent as soon as the answer is in; by default the
//    whole measurement is made twice, with 32 and with 128 in flight: a group commit waits
//    for the batch in flight, so with few requests in flight the heartbeat path is bound by
//    the commit's latency, with many by CPU), a warm-up of
//    `--warmup` seconds, then `--seconds` measured. Only 2xx answers count; other statuses
//    and transport errors are counted and printed apart. After the heartbeat run the store is
//    read back: the sum of the agents' heartbeat counters must equal the 2xx answers of the
//    whole run (warm-up included), i.e. every accepted heartbeat was stored.
//
// Why the load generator is a child process (`segguard-loadgen`, its own target) written
// directly on SwiftNIO rather than AsyncHTTPClient in this process:
//  * In this process the client would share the server's NIO event loops and Swift's
//    cooperative thread pool (2 threads on a 2-core machine): client work would sit in the
//    same queues as the collector's and the server's figures would be those of a different
//    scheduling setup than a real collector's. A separate process leaves the collector's
//    runtime to itself; the kernel shares the cores.
//  * The load still runs on the same machine and competes for the same cores. Throughput on a
//    saturated box is cores / (client CPU + server CPU) per request; a heavy client adds the
//    same cost to both runs and pulls the ratio toward 100 %, flattering the collector. So the
//    client is as thin as it can be: one NIO channel per connection (NIOSSL + HTTP/1.1 codec
//    + a handler that writes the next request when the previous answer ends), no async/await,
//    no connection pool, no per-request allocation beyond NIO's. Each connection does its TLS
//    handshake once before the clock starts and is reused for every request (keep-alive).
//    Both processes' CPU time per request is printed, so the split is visible.
//  * wrk would be thinner still, but it cannot present a client certificate, and
//    /api/v1/heartbeat requires one.
//  * With more agents than connections, each worker round-robins its requests over several
//    keep-alive connections (one per agent) with still one request in flight: `--agents`
//    connections are open, `--connections` requests are in flight.
//
// Output per store: one line per run (2xx answers/s in the measured window, p50/p99/max
// latency, errors, non-2xx), the CPU time per 2xx answer of the load generator, of the
// collector (this process) and of PostgreSQL over the measured window, how busy the whole
// machine was (a large "other processes" share flags a noisy run), the group-commit batching
// (HeartbeatBatcher.batches/.written), the store check, the ratio and the verdict.
// `--breakdown` adds, each in isolation: the JSON work per heartbeat and
// CollectorStore.recordHeartbeats by batch size (the ceiling of the write path).
//
// PostgreSQL: PostgresServer (test support) starts the server with fsync=off; this benchmark
// restarts it without that option (fsync on, the setting a deployment runs) unless
// `--postgres-fsync off`.
//
// Ctrl-C / SIGTERM: the load generator is killed, the collector stopped, PostgreSQL stopped
// and the temporary directory removed, then exit 130.

import ArgumentParser
import Foundation
import Logging
import SegguardCollector
import SegguardLoadReport
import SegguardPKI
import SegguardReport
import SegguardSystem
import SegguardTestSupport
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

// MARK: - The benchmark (parent)

struct CollectorBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "collector",
        abstract: "Heartbeats/s the collector accepts and stores (SQLite, PostgreSQL) vs the same server's 204 floor.")

    enum StoreChoice: String, ExpressibleByArgument, CaseIterable { case sqlite, postgres, all }

    @Option(help: "Measured seconds per run (after the warm-up).")
    var seconds = 10.0

    @Option(help: "Warm-up seconds per run (not counted).")
    var warmup = 2.0

    @Option(help: ArgumentHelp("Concurrent requests in flight (closed-loop workers, one keep-alive connection each); repeat the option to measure several (default: 32 and 128).",
                               discussion: "A group commit waits for the batch in flight, so with few requests in flight the heartbeat path is bound by the commit's latency rather than by CPU; the floor is measured at the same concurrency."))
    var connections: [Int] = [32, 128]

    @Option(help: "Distinct agents = distinct device certificates (default: the connections of each run).")
    var agents: Int?

    @Option(help: "Stores to measure: sqlite, postgres or all.")
    var store: StoreChoice = .all

    @Option(help: "PostgreSQL fsync: on (the durable setting a deployment runs) or off (PostgresServer's test default).")
    var postgresFsync: String = "on"

    @Flag(help: "Also time parts in isolation: the strict decoding of one heartbeat, and store writes by batch size (no HTTP).")
    var breakdown = false

    func validate() throws {
        guard seconds > 0, warmup >= 0 else { throw ValidationError("--seconds must be > 0 and --warmup >= 0") }
        guard !connections.isEmpty, connections.allSatisfy({ $0 >= 1 }) else { throw ValidationError("--connections must be >= 1") }
        if let agents, agents < 1 { throw ValidationError("--agents must be >= 1") }
        guard ["on", "off"].contains(postgresFsync) else { throw ValidationError("--postgres-fsync: on or off") }
    }

    func run() throws {
        // Ctrl-C / SIGTERM: the load generator is killed at once, the next step throws and the
        // normal error path cleans up (collector, PostgreSQL, directory); then exit 130.
        let onSignal = SignalCleanup.install()
        do {
            try benchmark(onSignal)
        } catch {
            if onSignal.fired { _exit(130) }
            throw error
        }
        if onSignal.fired { _exit(130) }
    }

    func benchmark(_ onSignal: SignalCleanup) throws {
        let agentCount = agents ?? connections.max()!
        let stores: [StoreChoice] = store == .all ? [.sqlite, .postgres] : [store]
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sgbench-collector-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir + "/devices", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        onSignal.fallback { try? FileManager.default.removeItem(atPath: dir) }

        // PKI: CA, server certificate for 127.0.0.1, one device certificate per agent.
        let t0 = monotonicNanos()
        let ca = try PKI.makeCA(commonName: "segguard-bench CA", organization: "Bench")
        try PKI.write(ca, certificatePath: dir + "/ca.pem", keyPath: dir + "/ca.key")
        let server = try PKI.issueServer(ca: ca, commonName: "localhost", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"])
        try PKI.write(server, certificatePath: dir + "/server.pem", keyPath: dir + "/server.key")
        for i in 0..<agentCount {
            let paths = LoadFiles.device(dir, i)
            try PKI.write(try PKI.issueDevice(ca: ca, agentID: LoadFiles.agentID(i), group: "bench"), certificatePath: paths.cert, keyPath: paths.key)
        }
        let pkiSeconds = Double(monotonicNanos() - t0) / 1e9

        // The heartbeat every agent sends (no agent_id in the body: the certificate says who).
        let body = try ReportCoding.encoder().encode(Self.sampleHeartbeat())
        try body.write(to: URL(fileURLWithPath: dir + "/heartbeat.json"))

        say("collector benchmark: \(connections.map(String.init).joined(separator: " and ")) connections in flight, as many agents (\(agentCount) device certificates, issued in "
              + String(format: "%.2f s", pkiSeconds) + "), \(String(format: "%g", warmup)) s warm-up + \(String(format: "%g", seconds)) s per run, "
              + "heartbeat body \(body.count) bytes, \(ProcessInfo.processInfo.activeProcessorCount) CPUs")
        say("load generator: child process (SwiftNIO, mutual TLS, keep-alive, closed loop) on the same machine, sharing its CPUs")

        // PostgreSQL: started (blocking) before any load, stopped whatever happens.
        var postgres: PostgresServer?
        defer { postgres?.stop() }
        var postgresURL: String?
        if stores.contains(.postgres) {
            onSignal.fallback { Self.stopPartialPostgres(owner: getpid()) }
            let pg = try PostgresServer()
            postgres = pg
            try onSignal.check()
            if postgresFsync == "on" {
                // PostgresServer starts with `-c fsync=off` on the command line, which ALTER
                // SYSTEM cannot override: restart it with the same options minus that one.
                try Self.restartWithFsync(pg)
                try onSignal.check()
            }
            let fsync = try Self.psql(pg, "SHOW fsync").trimmingCharacters(in: .whitespacesAndNewlines)
            let commit = try Self.psql(pg, "SHOW synchronous_commit").trimmingCharacters(in: .whitespacesAndNewlines)
            say("PostgreSQL: \(PostgresServer.binaries() ?? "?") on 127.0.0.1:\(pg.port), fsync=\(fsync), synchronous_commit=\(commit)")
            for c in connections { try pg.createDatabase("segguard_bench_\(c)") }
            postgresURL = pg.url(database: "segguard_bench")
            if breakdown { try pg.createDatabase("segguard_breakdown") }
        }

        var results: [(Int, StoreResult)] = []
        for c in connections {
            say("")
            say("=== \(c) requests in flight ===")
            let plan = BenchPlan(directory: dir, connections: c, agents: agents ?? c, seconds: seconds, warmup: warmup,
                                 postgresURL: postgresURL.map { $0 + "_\(c)" }, breakdownURL: postgresURL.map { $0.replacingOccurrences(of: "/segguard_bench", with: "/segguard_breakdown") },
                                 postgresDirectory: postgres?.directory, breakdown: breakdown && c == connections.last,
                                 onSignal: onSignal)
            let measured = try runBlocking {
                var out: [StoreResult] = []
                for s in stores { out.append(try await plan.measure(s)) }
                return out
            }
            results += measured.map { (c, $0) }
        }

        say("")
        say("summary (heartbeats accepted and stored per second vs the same server's 204 floor, target >= 50 %):")
        for (c, r) in results {
            let name = r.name.padding(toLength: 10, withPad: " ", startingAt: 0)
            say("  \(String(format: "%4d", c)) in flight  \(name) " + String(format: "%9.1f heartbeats/s vs floor %9.1f req/s = %5.1f %%", r.heartbeat.rate, r.floor.rate, r.ratio * 100)
                  + "  target " + (r.ratio >= 0.5 ? "met" : "NOT met"))
        }
        if breakdown { try Self.decodingBreakdown(body) }
    }

    /// CPU time of the per-request JSON work, one thread, no contention.
    static func decodingBreakdown(_ body: Data) throws {
        func perCall(_ n: Int = 3000, _ f: () throws -> Void) rethrows -> Double {
            for _ in 0..<200 { try f() }
            let t0 = monotonicNanos()
            for _ in 0..<n { try f() }
            return Double(monotonicNanos() - t0) / Double(n) / 1000
        }
        let hb = try ReportCoding.decodeStrict(Heartbeat.self, from: body)
        let reused = ReportCoding.decoder()
        let strict = try perCall { _ = try ReportCoding.decodeStrict(Heartbeat.self, from: body) }
        let fresh = try perCall { _ = try ReportCoding.decoder().decode(Heartbeat.self, from: body) }
        let cached = try perCall { _ = try reused.decode(Heartbeat.self, from: body) }
        let encode = try perCall { _ = try ReportCoding.encoder().encode(hb) }
        let serialization = try perCall { _ = try JSONSerialization.jsonObject(with: body, options: [.fragmentsAllowed]) }
        let interfaces = try perCall { _ = try ReportCoding.encoder().encode(hb.interfaces) }
        say("")
        say("breakdown: JSON work per heartbeat (\(body.count) bytes), one thread, in isolation:")
        say(String(format: "  ReportCoding.decodeStrict(Heartbeat)            %7.1f us  (the strict reader: what the collector runs per request)", strict))
        say("  for comparison (not on the request path):")
        say(String(format: "    JSONDecoder, new per call (not strict)        %7.1f us", fresh))
        say(String(format: "    JSONDecoder, reused (not strict)              %7.1f us", cached))
        say(String(format: "    JSONSerialization.jsonObject                  %7.1f us", serialization))
        say(String(format: "    ReportCoding.encoder().encode(heartbeat)      %7.1f us  (what the agent does)", encode))
        say(String(format: "  ColumnJSON.encode(interfaces) in the store      %7.1f us", interfaces))
    }

    static func sampleHeartbeat() -> Heartbeat {
        let now = Date()
        return Heartbeat(
            hostname: "bench-host.example.lg.jp", agentVersion: "0.1.0",
            policy: PolicySummary(name: "bench-city", sha256: String(repeating: "ab", count: 32), bundleVersion: 7),
            decision: DecisionSummary(segment: "lgwan", authorized: true, reason: "wired eth0 with 802.1X (EAP-TLS) in site bench",
                                      interfaces: ["eth0"], since: now),
            interfaces: [InterfaceSummary(name: "eth0", wireless: false, up: true, deviceAuth: "authorized (EAP-TLS)"),
                         InterfaceSummary(name: "wlan0", wireless: true, up: false)],
            intervalSeconds: 60, spool: SpoolSummary(pending: 0, dropped: 0), sentAt: now)
    }

    /// Stops and removes the servers PostgresServer started for this process
    /// (/tmp/sg-pg-PID-*), whether or not their start had finished.
    static func stopPartialPostgres(owner: Int32) {
        guard let bin = PostgresServer.binaries(),
              let names = try? FileManager.default.contentsOfDirectory(atPath: "/tmp") else { return }
        for name in names where name.hasPrefix("sg-pg-\(owner)-") {
            let dir = "/tmp/" + name
            // initdb or pg_ctl start may still be running (and starting the server): several
            // rounds of stopping the server and ending the processes working there (ours), by pid.
            for _ in 0..<5 {
                if FileManager.default.fileExists(atPath: dir + "/data/postmaster.pid") {
                    let user = getuid() == 0 ? ["runuser", "-u", "postgres", "--"] : []
                    _ = try? runCommand(user + ["\(bin)/pg_ctl", "-D", dir + "/data", "-m", "immediate", "-w", "stop"], allowFailure: true)
                }
                for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
                    guard let pid = Int32(entry), pid != getpid(),
                          let cmdline = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline"),
                          String(decoding: cmdline, as: UTF8.self).contains(dir) else { continue }
                    kill(pid, SIGKILL)
                }
                Thread.sleep(forTimeInterval: 0.2)
            }
            for _ in 0..<10 where FileManager.default.fileExists(atPath: dir) {
                try? FileManager.default.removeItem(atPath: dir)
                Thread.sleep(forTimeInterval: 0.1)
            }
        }
    }

    /// Restarts the throwaway server without `-c fsync=off` (the server must not inherit this
    /// process's pipes: runCommand reads them to the end, as in PostgresServer).
    static func restartWithFsync(_ pg: PostgresServer) throws {
        guard let bin = PostgresServer.binaries() else { throw CommandError(description: "no PostgreSQL binaries") }
        let dir = pg.directory
        let closeAll = #"for f in /proc/$$/fd/*; do n=${f##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done"#
        let user = getuid() == 0 ? "runuser -u postgres -- " : ""
        _ = try runCommand(["bash", "-c", "\(closeAll); exec \(user)'\(bin)/pg_ctl' -D '\(dir)/data' -l '\(dir)/server.log' -w -t 60 restart -m fast "
            + "-o '-p \(pg.port) -k \(dir) -c listen_addresses=127.0.0.1 -c max_connections=100' >>'\(dir)/pg_ctl.log' 2>&1 </dev/null"])
    }

    @discardableResult
    static func psql(_ pg: PostgresServer, _ sql: String) throws -> String {
        var psql = "psql"
        if let bin = PostgresServer.binaries(), FileManager.default.isExecutableFile(atPath: bin + "/psql") { psql = bin + "/psql" }
        return try runCommand([psql, "-X", "-A", "-t", "-h", "127.0.0.1", "-p", "\(pg.port)", "-U", "postgres", "-d", "postgres", "-c", sql])
    }
}

/// Cleanup actions run (newest first) when SIGINT or SIGTERM arrives, then exit.
final class SignalCleanup: Sendable {
    struct State {
        var fired = false
        /// The running load generator, killed as soon as the signal arrives.
        var child: Int32 = 0
    }
    let state = Mutex(State())
    /// Run only when the main thread has not finished cleaning up 20 s after the signal.
    let fallbacks = Mutex<[@Sendable () -> Void]>([])

    /// Blocks SIGINT and SIGTERM in the calling thread (threads started later inherit the mask,
    /// so the signals stay pending instead of killing the process) and waits for them on a
    /// thread of its own. Call it before any other thread is started.
    static func install() -> SignalCleanup {
        let c = SignalCleanup()
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &set, nil)
        let waited = set
        startThread(name: "sg-bench-signal") {
            var s = waited
            var sig: Int32 = 0
            guard sigwait(&s, &sig) == 0 else { return }
            let pid = c.state.withLock { st -> Int32 in
                st.fired = true
                return st.child
            }
            FileHandle.standardError.write(Data("segguard-bench: interrupted, cleaning up\n".utf8))
            if pid > 0 { kill(pid, SIGKILL) }
            Thread.sleep(forTimeInterval: 20)
            for action in c.fallbacks.withLock({ $0 }).reversed() { action() }
            _exit(128 + sig)
        }
        return c
    }

    var fired: Bool { state.withLock { $0.fired } }

    /// Throws once a signal has arrived (between the steps of the benchmark).
    func check() throws {
        if fired { throw CommandError(description: "interrupted") }
    }

    /// Records the running load generator; false when the signal came first (kill it).
    func setChild(_ pid: Int32) -> Bool {
        state.withLock { st in
            if st.fired { return false }
            st.child = pid
            return true
        }
    }

    func clearChild() { state.withLock { $0.child = 0 } }

    func fallback(_ action: @escaping @Sendable () -> Void) { fallbacks.withLock { $0.append(action) } }


}

/// print, flushed at once (progress lines as they come, also into a pipe).
func say(_ line: String) {
    print(line)
    fflush(nil)
}

/// One store's figures.
struct StoreResult: Sendable {
    var name: String
    var floor: LoadReport
    var heartbeat: LoadReport
    var ratio: Double { floor.rate > 0 ? heartbeat.rate / floor.rate : 0 }
}

/// What the async part needs (Sendable copy of the options).
struct BenchPlan: Sendable {
    var directory: String
    var connections: Int
    var agents: Int
    var seconds: Double
    var warmup: Double
    var postgresURL: String?
    var breakdownURL: String?
    var postgresDirectory: String?
    var breakdown = false
    var onSignal: SignalCleanup?

    func measure(_ choice: CollectorBench.StoreChoice) async throws -> StoreResult {
        let name: String
        let backend: any CollectorStore
        switch choice {
        case .postgres:
            guard let url = postgresURL else { throw CommandError(description: "no PostgreSQL server") }
            name = "PostgreSQL"
            backend = PostgresStore(configuration: try PostgresStore.configuration(url: url))
        default:
            name = "SQLite"
            backend = try await SQLiteStore(path: directory + "/collector-\(connections).sqlite")
        }
        say("")
        say(choice == .postgres ? "== PostgreSQL store (fresh database; events on a 16-connection pool, heartbeats on their own with synchronous_commit=off) =="
                                  : "== SQLite store (WAL; events synchronous=FULL, heartbeats on their own connection with NORMAL; \(directory)/collector-\(connections).sqlite) ==")
        let running: RunningCollector
        do {
            try await backend.migrate()
            running = try await RunningCollector.start(store: backend, pkiDirectory: directory)
        } catch {
            try? await backend.close()
            throw error
        }
        do {
            let result = try await measure(running, name: name)
            await running.stop()
            return result
        } catch {
            await running.stop()
            throw error
        }
    }

    private func measure(_ running: RunningCollector, name: String) async throws -> StoreResult {
        let pgDir = postgresDirectory
        let watchPostgres = name == "PostgreSQL"
        // (a) The floor: 204 doing nothing, same TLS, same connections, same body.
        let floor = try await runLoad(port: running.port, path: "/api/v1/noop", postgresDirectory: watchPostgres ? pgDir : nil)
        say(floor.line(label: "floor     "))

        // (b) Heartbeats: identity, strict decoding, validation, group commit, answer after commit.
        let batches0 = running.collector.batcher.batches
        let written0 = running.collector.batcher.written
        let hb = try await runLoad(port: running.port, path: "/api/v1/heartbeat", postgresDirectory: watchPostgres ? pgDir : nil)
        say(hb.line(label: "heartbeat "))
        let batches = running.collector.batcher.batches - batches0
        let written = running.collector.batcher.written - written0
        say(String(format: "  group commit: %d transactions for %d heartbeats = %.1f heartbeats per transaction (max 256), %.1f transactions/s",
                     batches, written, batches > 0 ? Double(written) / Double(batches) : 0, Double(batches) / hb.elapsedTotal))

        // Accepted and stored: the store's per-agent counters against the 2xx answers.
        let rows = try await running.collector.store.agents(AgentFilter())
        let stored = rows.reduce(Int64(0)) { $0 + $1.heartbeats }
        let match = stored == Int64(hb.okTotal)
        say("  stored: \(stored) heartbeats in \(rows.count) agent rows; accepted (2xx, warm-up included): \(hb.okTotal)"
              + (match ? " -> equal" : " -> MISMATCH (errors/timeouts may have been stored without an answer)"))
        let ratio = floor.rate > 0 ? hb.rate / floor.rate : 0
        say(String(format: "  heartbeats/s stored %.1f vs floor %.1f = %.1f %%", hb.rate, floor.rate, ratio * 100))
        say("  target >= 50 %: " + (ratio >= 0.5 ? "met" : "not met"))
        if !match { throw CommandError(description: "\(name): \(stored) heartbeats stored, \(hb.okTotal) accepted") }
        if breakdown { try await storeBreakdown(postgres: name == "PostgreSQL") }
        return StoreResult(name: name, floor: floor, heartbeat: hb)
    }

    /// recordHeartbeats alone (no HTTP, no decoding, nothing else running) on a second fresh
    /// store, by batch size: the ceiling of the write path.
    private func storeBreakdown(postgres: Bool) async throws {
        let store: any CollectorStore
        if postgres {
            guard let url = breakdownURL else { return }
            store = PostgresStore(configuration: try PostgresStore.configuration(url: url))
        } else {
            store = try await SQLiteStore(path: directory + "/breakdown.sqlite")
        }
        do {
            try await store.migrate()
            let hb = CollectorBench.sampleHeartbeat()
            var parts: [String] = []
            for n in [1, 16, 64, 256] {
                let batch = (0..<n).map { (hb, AgentIdentity(agentID: LoadFiles.agentID($0), group: "bench")) }
                _ = try await store.recordHeartbeats(batch, at: Date())
                var batches = 0
                let t0 = monotonicNanos()
                repeat {
                    _ = try await store.recordHeartbeats(batch, at: Date())
                    batches += 1
                } while monotonicNanos() - t0 < 1_000_000_000
                let perBatch = Double(monotonicNanos() - t0) / Double(batches) / 1e6
                parts.append(String(format: "batch %d: %.2f ms = %.0f heartbeats/s", n, perBatch, Double(n) / perBatch * 1000))
            }
            say("  breakdown: recordHeartbeats alone (no HTTP, one writer, otherwise idle): " + parts.joined(separator: "; "))
            try? await store.close()
        } catch {
            try? await store.close()
            throw error
        }
    }

    /// Runs the load generator child on `path`; returns its report with this process's
    /// (the collector's) CPU time, and PostgreSQL's, over the measured window.
    private func runLoad(port: Int, path: String, postgresDirectory: String?) async throws -> LoadReport {
        try onSignal?.check()
        // The load generator: segguard-loadgen, beside this binary.
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("segguard-loadgen")
        let process = Process()
        process.executableURL = exe
        process.arguments = ["--port", "\(port)", "--path", path, "--pki", directory, "--agents", "\(agents)",
                             "--connections", "\(connections)", "--seconds", "\(seconds)", "--warmup", "\(warmup)",
                             "--body", directory + "/heartbeat.json"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.standardError
        let observer = LoadObserver(postgresDirectory: postgresDirectory)
        let reader = out.fileHandleForReading
        let exited: Int32 = try await withCheckedThrowingContinuation { (c: CheckedContinuation<Int32, any Error>) in
            process.terminationHandler = { p in c.resume(returning: p.terminationStatus) }
            do { try process.run() } catch {
                process.terminationHandler = nil
                c.resume(throwing: error)
                return
            }
            if let onSignal, !onSignal.setChild(process.processIdentifier) { kill(process.processIdentifier, SIGKILL) }
            // Lines from the child: "measure-start", "measure-end", then the JSON report.
            startThread(name: "sg-bench-load") {
                var pending = Data()
                while true {
                    let chunk = reader.availableData
                    if chunk.isEmpty { break }
                    pending.append(chunk)
                    while let nl = pending.firstIndex(of: UInt8(ascii: "\n")) {
                        observer.line(String(decoding: pending[pending.startIndex..<nl], as: UTF8.self))
                        pending.removeSubrange(pending.startIndex...nl)
                    }
                }
                if !pending.isEmpty { observer.line(String(decoding: pending, as: UTF8.self)) }
                observer.eof()
            }
        }
        await observer.waitForEOF()
        onSignal?.clearChild()
        guard exited == 0 else { throw CommandError(description: "segguard-loadgen \(path) exited with status \(exited)") }
        return try observer.report()
    }
}

/// Watches the child's output lines and samples CPU times at the start and end of its
/// measured window.
final class LoadObserver: Sendable {
    struct State {
        var startCPU: Double?
        var endCPU: Double?
        var startPG: Double?
        var endPG: Double?
        var startMachine: Double?
        var endMachine: Double?
        var json: String?
        var eof = false
        var waiter: CheckedContinuation<Void, Never>?
    }
    let state = Mutex(State())
    let postgresDirectory: String?
    init(postgresDirectory: String?) { self.postgresDirectory = postgresDirectory }

    func line(_ text: String) {
        switch text {
        case "measure-start":
            let cpu = processCPUSeconds(), pg = postgresDirectory.flatMap(postgresCPUSeconds), machine = machineBusySeconds()
            state.withLock { $0.startCPU = cpu; $0.startPG = pg; $0.startMachine = machine }
        case "measure-end":
            let cpu = processCPUSeconds(), pg = postgresDirectory.flatMap(postgresCPUSeconds), machine = machineBusySeconds()
            state.withLock { $0.endCPU = cpu; $0.endPG = pg; $0.endMachine = machine }
        default:
            if text.hasPrefix("{") { state.withLock { $0.json = text } }
        }
    }

    func eof() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.eof = true
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume()
    }

    func waitForEOF() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let done = state.withLock { s -> Bool in
                if s.eof { return true }
                s.waiter = c
                return false
            }
            if done { c.resume() }
        }
    }

    func report() throws -> LoadReport {
        let s = state.withLock { $0 }
        guard let json = s.json else { throw CommandError(description: "segguard-loadgen printed no report") }
        var r = try JSONDecoder().decode(LoadReport.self, from: Data(json.utf8))
        if let a = s.startCPU, let b = s.endCPU { r.serverCPU = b - a }
        if let a = s.startPG, let b = s.endPG { r.postgresCPU = b - a }
        if let a = s.startMachine, let b = s.endMachine { r.machineCPU = b - a }
        return r
    }
}

/// Busy CPU seconds of the whole machine, all CPUs (/proc/stat: everything but idle and iowait).
func machineBusySeconds() -> Double? {
    guard let stat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
          let line = stat.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") }) else { return nil }
    let v = line.split(separator: " ").dropFirst().compactMap { Double($0) }
    guard v.count >= 5 else { return nil }
    let busy = v.prefix(8).reduce(0, +) - v[3] - v[4]
    return busy / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// CPU seconds of the postmaster and its live children (the backends of the store's pool).
func postgresCPUSeconds(_ directory: String) -> Double? {
    guard let pidFile = try? String(contentsOfFile: directory + "/data/postmaster.pid", encoding: .utf8),
          let pid = pidFile.split(separator: "\n").first.flatMap({ Int32($0.trimmingCharacters(in: .whitespaces)) })
    else { return nil }
    let children = ((try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? "")
        .split(separator: " ").compactMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
    var total = 0.0
    for p in [pid] + children {
        guard let stat = try? String(contentsOfFile: "/proc/\(p)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { continue }
        // Fields after "(comm)": state is field 3; utime and stime are fields 14 and 15.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let u = Double(fields[11]), let s = Double(fields[12]) else { continue }
        total += (u + s) / ticks
    }
    return total
}

/// The collector in this process on 127.0.0.1, a free port.
struct RunningCollector: Sendable {
    let collector: Collector
    let port: Int
    let task: Task<Void, any Error>

    static func start(store: any CollectorStore, pkiDirectory dir: String) async throws -> RunningCollector {
        var config = CollectorConfiguration(certificatePath: dir + "/server.pem", keyPath: dir + "/server.key", clientCAPath: dir + "/ca.pem")
        config.host = "127.0.0.1"
        config.port = 0
        config.staleSweepSeconds = 3600
        var logger = Logger(label: "segguard-bench.collector")
        logger.logLevel = .critical
        let collector = Collector(store: store, configuration: config, logger: logger)
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let app = try collector.application { port in continuation.yield(port) }
        let task = Task {
            defer { continuation.finish() }
            try await app.run()
        }
        var port = 0
        for await p in ports {
            port = p
            break
        }
        guard port > 0 else {
            task.cancel()
            let failure: String
            do { try await task.value; failure = "stopped" } catch { failure = "\(error)" }
            try? await store.close()
            throw CommandError(description: "the collector did not start: \(failure)")
        }
        return RunningCollector(collector: collector, port: port, task: task)
    }

    func stop() async {
        task.cancel()
        _ = try? await task.value
        try? await collector.store.close()
    }
}


