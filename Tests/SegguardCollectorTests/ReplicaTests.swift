// Two collector processes on one PostgreSQL, as a site runs them behind a TCP load balancer:
// agents switch between them (a resend to the other replica after a lost answer, a replica
// killed with SIGKILL mid-run), and both sweep for stale agents at once. The shared store is
// what keeps it right: every event stored once, one stale mark per silent agent.

import AsyncHTTPClient
import Foundation
import SegguardCollector
import SegguardReport
import SegguardTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Two collector replicas on one PostgreSQL", .serialized,
       .enabled(if: ProcessInfo.processInfo.environment["SEGGUARD_BIN_DIR"] != nil, "SEGGUARD_BIN_DIR is not set (scripts/test.sh sets it to the build's bin directory)"))
struct ReplicaTests {
    /// A collector process; SIGKILLed when dropped.
    final class Replica: @unchecked Sendable {  // Process: kill and isRunning only, from any task
        let process = Process()
        let port: Int
        init(bin: String, port: Int, store: String, pki: TestPKI, log: String) throws {
            self.port = port
            process.executableURL = URL(fileURLWithPath: bin + "/segguard-collector")
            process.arguments = ["--listen", "127.0.0.1:\(port)", "--store", store, "--cert", pki.directory + "/server.pem", "--key", pki.directory + "/server.key",
                                 "--client-ca", pki.directory + "/ca.pem", "--heartbeat-seconds", "2", "--stale-sweep-seconds", "0.3", "--log-level", "warning"]
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            process.standardOutput = FileHandle.nullDevice
            try process.run()
        }
        var url: String { "https://127.0.0.1:\(port)" }
        func kill() {
            guard process.isRunning else { return }
            Glibc.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        deinit { kill() }
    }

    /// A port nothing listens on now.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard bound else { throw TestFailure("no free port") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    struct TestFailure: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    @Test("agents switching between two replicas, one SIGKILLed mid-run: every event stored exactly once; both replicas sweeping: one stale mark per silent agent, none for the others",
          .timeLimit(.minutes(3)))
    func twoReplicas() async throws {
        let bin = try #require(ProcessInfo.processInfo.environment["SEGGUARD_BIN_DIR"])
        let server = try SharedPostgres.server.get()
        let db = "r_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        try server.createDatabase(db)
        let store = PostgresStore(configuration: try PostgresStore.configuration(url: server.url(database: db)))
        try await store.migrate()
        let pki = try TestPKI()
        let dir = try temporaryDirectory()
        defer {
            pki.remove()
            try? FileManager.default.removeItem(atPath: dir)
        }
        let a = try Replica(bin: bin, port: try Self.freePort(), store: server.url(database: db), pki: pki, log: dir + "/a.log")
        let b = try Replica(bin: bin, port: try Self.freePort(), store: server.url(database: db), pki: pki, log: dir + "/b.log")
        defer {
            a.kill()
            b.kill()
        }
        for r in [a, b] {
            let up = try await withClient(try pki.client()) { (client: HTTPClient) async throws -> Bool in
                try await eventually(30) { ((try? await call(client, .GET, r.url + "/healthz").status) ?? 0) == 200 }
            }
            try #require(up, "replica on \(r.port) did not start: \((try? String(contentsOfFile: dir + "/a.log", encoding: .utf8)) ?? "")")
        }

        // 24 agents, one client each (their own device certificate); rounds of a heartbeat and
        // a batch of 3 events, alternating replicas; after a batch every third agent sends it
        // again to the other replica (its answer "lost").
        let agents = (0..<24).map { String(format: "tc-%04d", 5000 + $0) }
        var clients: [String: HTTPClient] = [:]
        for id in agents { clients[id] = try pki.client(device: try pki.device(id, group: "mynumber")) }
        do {
            try await exercise(agents: agents, clients: clients, a: a, b: b, store: store)
        } catch {
            for c in clients.values { try? await c.shutdown() }
            throw error
        }
        for c in clients.values { try? await c.shutdown() }
        b.kill()
        try await store.close()
    }

    func exercise(agents: [String], clients: [String: HTTPClient], a: Replica, b: Replica, store: PostgresStore) async throws {
        final class Sent: Sendable { let ids = Mutex<Set<String>>([]) }
        let sent = Sent()

        /// Sends to the preferred replica; on a failure (a dead replica) to the other one, as an
        /// agent behind a load balancer or with two URLs would.
        /// Replicas found dead (skipped afterwards, as a load balancer's health check does).
        final class Down: Sendable { let ports = Mutex<Set<Int>>([]) }
        let down = Down()
        @Sendable func send(_ id: String, _ path: String, _ body: Data, prefer: Int) async throws {
            let dead = down.ports.withLock { $0 }
            let replicas = (prefer % 2 == 0 ? [a, b] : [b, a]).filter { !dead.contains($0.port) }
            var last: (any Error)?
            for r in replicas {
                do {
                    // A dead replica is given up after 3 s (AsyncHTTPClient keeps retrying the
                    // connection until the request's deadline), as segguardd's request timeout does.
                    let answer = try await call(clients[id]!, .POST, r.url + path, body: body, timeout: .seconds(3))
                    if answer.status < 300 { return }
                    last = TestFailure("\(r.port) answered \(answer.status): \(answer.body)")
                } catch {
                    if !r.process.isRunning { _ = down.ports.withLock { $0.insert(r.port) } }
                    last = error
                }
            }
            throw last ?? TestFailure("no replica")
        }
        func round(_ n: Int, agents list: [String]) async throws {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (i, id) in list.enumerated() {
                    group.addTask {
                        try await send(id, "/api/v1/heartbeat", try json(heartbeat(id, interval: 2)), prefer: i + n)
                        let events = (0..<3).map { k in
                            ReportedEvent(id: "\(id)-\(n)-\(k)", seq: Int64(n * 3 + k + 1), time: Date(), kind: "exec-denied", severity: "warning", reason: "round \(n)")
                        }
                        let body = try json(EventBatch(events: events))
                        try await send(id, "/api/v1/events", body, prefer: i + n)
                        if i % 3 == 0 { try await send(id, "/api/v1/events", body, prefer: i + n + 1) }
                        sent.ids.withLock { $0.formUnion(events.map(\.id)) }
                    }
                }
                try await group.waitForAll()
            }
        }

        // Both replicas up; then 8 agents fall silent (stale after 3 × 2 s) while the others
        // keep heartbeating and both replicas sweep every 0.3 s, until the silent ones are stale.
        for n in 0..<3 { try await round(n, agents: agents) }
        let silent = Array(agents.prefix(8)), talking = Array(agents.dropFirst(8))
        var n = 3
        let deadline = Date().addingTimeInterval(40)
        while try await store.counts().stale < silent.count && Date() < deadline {
            try await round(n, agents: talking)
            n += 1
            try await Task.sleep(for: .milliseconds(300))
        }
        // One stale mark per silent agent although two replicas swept; none for the others.
        for id in silent {
            let marks = try await store.events(EventFilter(agentID: id, kind: "agent-stale", limit: 100))
            #expect(marks.count == 1, "\(id): \(marks.count) stale marks")
        }
        for id in talking {
            let marks = try await store.events(EventFilter(agentID: id, kind: "agent-stale", limit: 100))
            #expect(marks.isEmpty, "\(id) was marked stale while talking: \(marks.map { "\(RFC3339.format($0.event.time)) \($0.event.details)" })")
        }
        #expect(try await store.counts().stale == silent.count)

        // Replica A is killed while a round is in flight; the agents go on with B.
        async let killed: Void = { try? await Task.sleep(for: .milliseconds(30)); a.kill() }()
        try await round(n, agents: talking)
        await killed
        for m in (n + 1)..<(n + 4) { try await round(m, agents: talking) }
        let rounds = n + 4

        // Every event the agents sent is stored exactly once (the primary key would refuse a
        // second copy; counting per id checks nothing was lost either).
        let expected = sent.ids.withLock { $0 }
        var stored: [String: Int] = [:]
        for id in agents {
            for e in try await store.events(EventFilter(agentID: id, kind: "exec-denied", limit: 10_000)) { stored[e.event.id, default: 0] += 1 }
        }
        #expect(Set(stored.keys) == expected, "missing: \(expected.subtracting(stored.keys).sorted().prefix(10)), extra: \(Set(stored.keys).subtracting(expected).sorted().prefix(10))")
        #expect(stored.values.allSatisfy { $0 == 1 })
        #expect(expected.count == silent.count * 3 * 3 + talking.count * 3 * rounds)
        // The silent agents stayed stale, marked once each; the talking ones never were.
        for id in agents {
            #expect(try await store.events(EventFilter(agentID: id, kind: "agent-stale", limit: 100)).count == (silent.contains(id) ? 1 : 0), "\(id)")
        }
        #expect(b.process.isRunning, "replica B survived")
    }
}
