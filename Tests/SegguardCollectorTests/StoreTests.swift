// One test suite, both stores: every test runs against SQLite (a temporary file) and against
// a real PostgreSQL server started on loopback for this test process.

import Foundation
@testable import SegguardCollector
import NIOCore
import PostgresNIO
import SegguardReport
import SegguardTestSupport
import Synchronization
import Testing

/// The PostgreSQL server of this test process (started on first use, stopped at exit).
enum SharedPostgres {
    static let server: Result<PostgresServer, any Error> = {
        let r = Result { try PostgresServer() }
        if case .success = r { atexit { if case .success(let s) = SharedPostgres.server { s.stop() } } }
        return r
    }()
}

/// SQLite files of this test process, removed at exit (with their -wal and -shm).
enum TemporaryStoreFiles {
    static let paths = Mutex<[String]>([])
    static let installed: Void = { atexit { TemporaryStoreFiles.removeAll() } }()
    static func register(_ path: String) {
        _ = installed
        paths.withLock { $0.append(path) }
    }
    static func removeAll() {
        for p in paths.withLock({ $0 }) {
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: p + suffix) }
        }
    }
}

enum Backend: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite, postgres
    var testDescription: String { rawValue }

    /// A fresh, migrated store of this kind (own file / own database).
    func makeStore() async throws -> any CollectorStore {
        switch self {
        case .sqlite:
            let path = NSTemporaryDirectory() + "sg-store-\(UUID().uuidString).sqlite"
            TemporaryStoreFiles.register(path)
            let s = try await SQLiteStore(path: path)
            try await s.migrate()
            return s
        case .postgres:
            let server = try SharedPostgres.server.get()
            let db = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
            try server.createDatabase(db)
            let s = PostgresStore(configuration: try PostgresStore.configuration(url: server.url(database: db)))
            try await s.migrate()
            return s
        }
    }
}

func heartbeat(_ agent: String, authorized: Bool = true, interval: Int = 30, reason: String = "authorized-wired via eth0") -> Heartbeat {
    Heartbeat(agentID: agent, hostname: "host-\(agent)", agentVersion: "0.2.0",
              policy: PolicySummary(name: "office", sha256: String(repeating: "a", count: 64)),
              decision: DecisionSummary(segment: authorized ? "authorized-wired" : "unauthorized", authorized: authorized, reason: reason,
                                        interfaces: authorized ? ["eth0"] : [], since: Date()),
              interfaces: [InterfaceSummary(name: "eth0", wireless: false, up: true), InterfaceSummary(name: "wlan0", wireless: true, up: true, ssid: "office", bssid: "02:00:00:00:00:01")],
              intervalSeconds: interval, spool: SpoolSummary(pending: 0, dropped: 0), sentAt: Date())
}

func event(_ seq: Int64, kind: String = "exec-denied", id: String? = nil) -> ReportedEvent {
    ReportedEvent(id: id ?? UUID().uuidString.lowercased(), seq: seq, time: Date(timeIntervalSince1970: 1_790_000_000 + Double(seq)), kind: kind,
                  severity: "warning", reason: "scrot is listed", details: ["path": "/usr/bin/scrot", "uid": "1000"])
}

@Suite("Collector stores: the same suite on SQLite and on PostgreSQL")
struct StoreTests {
    let hq = AgentIdentity(agentID: "tc-0001", group: "mynumber")
    let branch = AgentIdentity(agentID: "tc-0002", group: "lgwan")

    @Test("a heartbeat creates the agent, the next one updates it; filters by group and state", arguments: Backend.allCases)
    func heartbeats(backend: Backend) async throws {
        let store = try await backend.makeStore()
        defer { Task { try? await store.close() } }
        let t0 = Date()
        #expect(try await store.recordHeartbeat(heartbeat("tc-0001"), from: hq, at: t0) == false)
        #expect(try await store.recordHeartbeat(heartbeat("tc-0002", authorized: false, reason: "no authorized path"), from: branch, at: t0) == false)
        #expect(try await store.recordHeartbeat(heartbeat("tc-0001", authorized: false, reason: "cable out"), from: hq, at: t0.addingTimeInterval(1)) == false)

        let all = try await store.agents(AgentFilter())
        #expect(all.map(\.agentID) == ["tc-0002", "tc-0001"])  // ordered by group, then id
        let a = try #require(all.first { $0.agentID == "tc-0001" })
        #expect(a.heartbeats == 2)
        #expect(a.reason == "cable out")
        #expect(a.authorized == false)
        #expect(a.interfaces.count == 2 && a.interfaces[1].ssid == "office")
        #expect(abs(a.lastSeen.timeIntervalSince(t0.addingTimeInterval(1))) < 0.01)
        #expect(abs(a.firstSeen.timeIntervalSince(t0)) < 0.01)
        #expect(try await store.agents(AgentFilter(group: "lgwan")).map(\.agentID) == ["tc-0002"])
        #expect(try await store.agents(AgentFilter(state: "unauthorized")).count == 2)
        #expect(try await store.agents(AgentFilter(state: "authorized")).isEmpty)
        let counts = try await store.counts()
        #expect(counts == StoreCounts(agents: 2, authorized: 0, unauthorized: 2, stale: 0, events: 0))
    }

    @Test("each (agent, event id) is stored once: a resent batch is all duplicates", arguments: Backend.allCases)
    func idempotentEvents(backend: Backend) async throws {
        let store = try await backend.makeStore()
        defer { Task { try? await store.close() } }
        _ = try await store.recordHeartbeat(heartbeat("tc-0001"), from: hq, at: Date())
        let batch = (1...5).map { event(Int64($0)) }
        #expect(try await store.insertEvents(batch, from: hq, at: Date()) == InsertResult(inserted: 5, duplicates: 0))
        #expect(try await store.insertEvents(batch, from: hq, at: Date()) == InsertResult(inserted: 0, duplicates: 5))
        let overlap = Array(batch[3...]) + [event(6)]
        #expect(try await store.insertEvents(overlap, from: hq, at: Date()) == InsertResult(inserted: 1, duplicates: 2))
        // The same id from another agent is another event.
        #expect(try await store.insertEvents([batch[0]], from: branch, at: Date()) == InsertResult(inserted: 1, duplicates: 0))

        let mine = try await store.events(EventFilter(agentID: "tc-0001", limit: 100))
        #expect(mine.map(\.event.seq).sorted() == [1, 2, 3, 4, 5, 6])
        #expect(mine.first?.event.details["path"] == "/usr/bin/scrot")
        #expect(try await store.events(EventFilter(group: "lgwan")).count == 1)
        #expect(try await store.events(EventFilter(limit: 2)).count == 2)
        #expect(try await store.agents(AgentFilter(group: "mynumber")).first?.events == 6)
        #expect(try await store.counts().events == 7)
    }

    @Test("concurrent batches with overlapping ids: every event stored exactly once", arguments: Backend.allCases)
    func concurrentInserts(backend: Backend) async throws {
        let store = try await backend.makeStore()
        defer { Task { try? await store.close() } }
        _ = try await store.recordHeartbeat(heartbeat("tc-0001"), from: hq, at: Date())
        let events = (1...200).map { event(Int64($0)) }
        let agent = hq
        let inserted = try await withThrowingTaskGroup(of: Int.self) { group in
            for start in stride(from: 0, to: 200, by: 10) {
                // Each task sends 30 events starting at `start`: neighbours overlap.
                let slice = Array(events[start..<min(200, start + 30)])
                group.addTask { try await store.insertEvents(slice, from: agent, at: Date()).inserted }
            }
            return try await group.reduce(0, +)
        }
        #expect(inserted == 200)
        #expect(try await store.events(EventFilter(agentID: "tc-0001", limit: 1000)).count == 200)
    }

    @Test("an agent silent for 3 intervals turns stale once (with an event) and recovers with its next heartbeat", arguments: Backend.allCases)
    func staleness(backend: Backend) async throws {
        let store = try await backend.makeStore()
        defer { Task { try? await store.close() } }
        let t0 = Date()
        _ = try await store.recordHeartbeat(heartbeat("tc-0001", interval: 10), from: hq, at: t0)
        _ = try await store.recordHeartbeat(heartbeat("tc-0002", interval: 10), from: branch, at: t0.addingTimeInterval(25))
        #expect(try await store.markStale(now: t0.addingTimeInterval(29), intervals: 3).isEmpty)
        let stale = try await store.markStale(now: t0.addingTimeInterval(31), intervals: 3)
        #expect(stale.map(\.agentID) == ["tc-0001"])
        #expect(try await store.markStale(now: t0.addingTimeInterval(40), intervals: 3).isEmpty)  // once
        #expect(try await store.agents(AgentFilter(state: "stale")).map(\.agentID) == ["tc-0001"])
        let events = try await store.events(EventFilter(agentID: "tc-0001"))
        #expect(events.map(\.event.kind) == ["agent-stale"])
        #expect(events.first?.event.reason.contains("3 intervals of 10 s") == true)

        #expect(try await store.recordHeartbeat(heartbeat("tc-0001", interval: 10), from: hq, at: t0.addingTimeInterval(50)) == true)
        #expect(try await store.agents(AgentFilter(state: "stale")).isEmpty)
        #expect(try await store.events(EventFilter(agentID: "tc-0001")).map(\.event.kind).contains("agent-recovered"))
        #expect(try await store.counts().stale == 0)
    }

    @Test("a stored interval longer than any policy may set (a row from before intervals were checked) waits at most 3 × 3600 s", arguments: Backend.allCases)
    func storedIntervalCapped(backend: Backend) async throws {
        let store = try await backend.makeStore()
        let t0 = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
        _ = try await store.recordHeartbeat(heartbeat("tc-long", interval: 86_400), from: AgentIdentity(agentID: "tc-long", group: "g"), at: t0)
        #expect(try await store.markStale(now: t0.addingTimeInterval(3 * 3600 - 10), intervals: 3).isEmpty)
        let marked = try await store.markStale(now: t0.addingTimeInterval(3 * 3600 + 10), intervals: 3)
        #expect(marked.map(\.agentID) == ["tc-long"])
        let stale = try await store.events(EventFilter(agentID: "tc-long")).first { $0.event.kind == "agent-stale" }
        #expect(stale?.event.reason == "no heartbeat for 10810 s (3 intervals of 3600 s)", "\(stale?.event.reason ?? "none")")
        try await store.close()
    }

    @Test("held events and the oldest undelivered age are stored per agent and counted; an id re-sent with other content is a conflict, nothing of its batch stored",
          arguments: Backend.allCases)
    func backlogAndConflicts(backend: Backend) async throws {
        let store = try await backend.makeStore()
        let t0 = Date()
        var hb = heartbeat("tc-held")
        hb.spool = SpoolSummary(pending: 4, dropped: 0, held: 2, oldestSeconds: 7200)
        _ = try await store.recordHeartbeats([(hb, AgentIdentity(agentID: "tc-held", group: "hq")),
                                              (heartbeat("tc-fine"), AgentIdentity(agentID: "tc-fine", group: "hq"))], at: t0)
        let agents = Dictionary(uniqueKeysWithValues: try await store.agents(AgentFilter()).map { ($0.agentID, $0) })
        #expect(agents["tc-held"]?.spoolHeld == 2 && agents["tc-held"]?.spoolOldestSeconds == 7200 && agents["tc-held"]?.deliveryBacklog == true)
        #expect(agents["tc-fine"]?.spoolHeld == 0 && agents["tc-fine"]?.spoolOldestSeconds == nil && agents["tc-fine"]?.deliveryBacklog == false)
        let counts = try await store.counts()
        #expect(counts.backlogged == 1 && counts.heldEvents == 2)

        let e = event(1, id: "9d5e0b1c-2222-4000-8000-000000000001")
        #expect(try await store.insertEvents([e], from: hq, at: t0).inserted == 1)
        #expect(try await store.insertEvents([e], from: hq, at: t0).duplicates == 1)  // a true resend
        var changed = e
        changed.severity = "info"
        let fresh = event(2)
        await #expect(throws: EventIDConflict.self) { try await store.insertEvents([fresh, changed], from: hq, at: t0) }
        let stored = try await store.events(EventFilter(agentID: hq.agentID, limit: 10))
        #expect(stored.map(\.event.id) == [e.id] && stored[0].event.severity == "warning")
        try await store.close()
    }

    @Test("agents page by page in (group, id) order, counted; search by id or host name, case-insensitive, % and _ literal; one agent by id; the groups", arguments: Backend.allCases)
    func agentPages(backend: Backend) async throws {
        let store = try await backend.makeStore()
        var batch: [(Heartbeat, AgentIdentity)] = []
        for i in 0..<30 {
            var hb = heartbeat("a\(i)")
            hb.hostname = i == 7 ? "Counter_7%" : "counter-\(i)"
            batch.append((hb, AgentIdentity(agentID: String(format: "tc-%03d", i), group: i < 20 ? "mynumber" : "lgwan")))
        }
        _ = try await store.recordHeartbeats(batch, at: Date())
        let page = try await store.agents(AgentFilter(offset: 10, limit: 10))
        // lgwan (tc-020…029) sorts first: the second page of ten is mynumber's first ten.
        #expect(page.map(\.agentID) == (0..<10).map { String(format: "tc-%03d", $0) })
        #expect(try await store.agentCount(AgentFilter(offset: 10, limit: 10)) == 30)
        #expect(try await store.agents(AgentFilter(group: "mynumber", offset: 15, limit: 10)).count == 5)
        #expect(try await store.agents(AgentFilter(search: "COUNTER_7%")).map(\.agentID) == ["tc-007"])
        #expect(try await store.agents(AgentFilter(search: "%")).map(\.agentID) == ["tc-007"])
        #expect(try await store.agentCount(AgentFilter(search: "counter-1")) == 11)
        #expect(try await store.agentCount(AgentFilter(search: "TC-02")) == 10)
        #expect(try await store.agent(id: "tc-007")?.hostname == "Counter_7%")
        #expect(try await store.agent(id: "nope") == nil)
        #expect(try await store.groups() == ["lgwan", "mynumber"])
        try await store.close()
    }

    @Test("operator actions: recorded and listed newest first with a limit; the decision filter and the segments list", arguments: Backend.allCases)
    func actionsAndSegments(backend: Backend) async throws {
        let store = try await backend.makeStore()
        defer { Task { try? await store.close() } }
        let t0 = Date(millis: Date().millis)
        for i in 0..<5 {
            try await store.recordAction(AdminAction(time: t0.addingTimeInterval(Double(i)), by: "sato", action: i == 3 ? "policy-push-refused" : "policy-push",
                                                     target: "mynumber", detail: "version \(i) <b>'\"x\"'</b>"))
        }
        let latest = try await store.actions(limit: 3)
        #expect(latest.map(\.detail) == ["version 4 <b>'\"x\"'</b>", "version 3 <b>'\"x\"'</b>", "version 2 <b>'\"x\"'</b>"])
        #expect(latest[1].action == "policy-push-refused" && latest[1].by == "sato" && latest[1].time == t0.addingTimeInterval(3))
        #expect(try await store.actions(limit: 100).count == 5)
        // A detail is kept to 2,000 characters.
        #expect(AdminAction(time: t0, by: "x", action: "export", target: "y", detail: String(repeating: "d", count: 5000)).detail.count == 2000)

        let ids = { (id: String, group: String) in AgentIdentity(agentID: id, group: group) }
        _ = try await store.recordHeartbeats([(heartbeat("tc-0001"), ids("tc-0001", "mynumber")), (heartbeat("tc-0002", authorized: false), ids("tc-0002", "mynumber")),
                                              (heartbeat("tc-0003"), ids("tc-0003", "lgwan"))], at: t0)
        #expect(try await store.segments() == ["authorized-wired", "unauthorized"])
        #expect(try await store.agents(AgentFilter(segment: "unauthorized")).map(\.agentID) == ["tc-0002"])
        #expect(try await store.agentCount(AgentFilter(group: "mynumber", segment: "authorized-wired")) == 1)
        #expect(try await store.agentCount(AgentFilter(segment: "no-such")) == 0)
    }

    @Test("revocations: stored once per serial with their action in the same transaction; listed oldest first; the agent's certificate serial kept from its heartbeats", arguments: Backend.allCases)
    func revocations(backend: Backend) async throws {
        let store = try await backend.makeStore()
        defer { Task { try? await store.close() } }
        let t0 = Date(millis: Date().millis)
        let r = Revocation(serial: "0a1b", agentID: "tc-0001", reason: "stolen", time: t0, by: "sato")
        let action = AdminAction(time: t0, by: "sato", action: "revoke", target: "agent tc-0001", detail: "serial 0a1b: stolen")
        #expect(try await store.revoke(r, recording: action))
        #expect(try await store.revoke(Revocation(serial: "0a1b", agentID: "tc-0001", reason: "again", time: t0.addingTimeInterval(5), by: "kato"), recording: action) == false)
        #expect(try await store.revoke(Revocation(serial: "ff", agentID: "tc-0002", reason: "lost", time: t0.addingTimeInterval(1), by: "sato"), recording: action))
        #expect(try await store.revocations() == [r, Revocation(serial: "ff", agentID: "tc-0002", reason: "lost", time: t0.addingTimeInterval(1), by: "sato")])
        #expect(try await store.actions(limit: 10).count == 2, "one action per new revocation")
        _ = try await store.recordHeartbeat(heartbeat("tc-0001"), from: AgentIdentity(agentID: "tc-0001", group: "mynumber", certificateSerial: "0a1b"), at: t0)
        _ = try await store.recordHeartbeat(heartbeat("tc-0001"), from: AgentIdentity(agentID: "tc-0001", group: "mynumber"), at: t0)
        #expect(try await store.agent(id: "tc-0001")?.certificateSerial == "0a1b")
    }

    @Test("enrollment rows: a token's uses, a good certificate not taken over (device row or reported OU certificate), renewal with the current one, a retry with the one before supersedes the unused one, first use of the current one supersedes the one before, any other refused; set-group makes a row for an OU device", arguments: Backend.allCases)
    func enrollmentRows(backend: Backend) async throws {
        let store = try await backend.makeStore()
        defer { Task { try? await store.close() } }
        let now = Date(millis: Date().millis)
        let later = now.addingTimeInterval(86_400 * 30)
        let action = AdminAction(time: now, by: "test", action: "enroll", target: "t", detail: "")
        try await store.createTokens([EnrollmentToken(sha256: "t2", group: "mynumber", createdAt: now, createdBy: "test", expiresAt: now.addingTimeInterval(60), usesLeft: 2),
                                      EnrollmentToken(sha256: "old", group: "mynumber", createdAt: now, createdBy: "test", expiresAt: now.addingTimeInterval(-1), usesLeft: 1)],
                                     recording: action)
        func device(_ id: String, _ serial: String) -> DeviceRecord {
            DeviceRecord(agentID: id, group: "mynumber", serial: serial, notAfter: later, enrolledAt: now, enrolledBy: "token t2", updatedAt: now)
        }
        #expect(try await store.enroll(device("tc-1", "a1"), tokenSHA256: "nope", now: now, recording: action) == .tokenUnknown)
        #expect(try await store.enroll(device("tc-1", "a1"), tokenSHA256: "old", now: now, recording: action) == .tokenExpired(now.addingTimeInterval(-1)))
        #expect(try await store.enroll(device("tc-1", "a1"), tokenSHA256: "t2", now: now, recording: action) == .enrolled)
        #expect(try await store.enroll(device("tc-1", "a2"), tokenSHA256: "t2", now: now, recording: action) == .deviceActive(serial: "a1", notAfter: later))
        // An OU-certificate device that reported is not taken over either.
        _ = try await store.recordHeartbeat(heartbeat("tc-2"), from: AgentIdentity(agentID: "tc-2", group: "locked", certificateNotAfter: later, certificateSerial: "b1"), at: now)
        #expect(try await store.enroll(device("tc-2", "b2"), tokenSHA256: "t2", now: now, recording: action) == .deviceActive(serial: "b1", notAfter: later))
        #expect(try await store.token(sha256: "t2")?.usesLeft == 1, "refusals spend nothing")
        #expect(try await store.enroll(device("tc-3", "c1"), tokenSHA256: "t2", now: now, recording: action) == .enrolled)
        #expect(try await store.enroll(device("tc-4", "d1"), tokenSHA256: "t2", now: now, recording: action) == .tokenUsed)
        // Renewal a1 -> a2; asked again with a1 (lost answer): a2 superseded, a3 current.
        #expect(try await store.renew(agentID: "tc-1", presentedSerial: "a1", legacyGroup: "x", serial: "a2", notAfter: later, now: now, recording: action) == .renewed(group: "mynumber"))
        #expect(try await store.renew(agentID: "tc-1", presentedSerial: "a1", legacyGroup: "x", serial: "a3", notAfter: later, now: now, recording: action) == .renewed(group: "mynumber"))
        let superseded = try await store.revocations()
        #expect(superseded.map(\.serial) == ["a2"] && superseded.first?.reason == supersededReason)
        #expect(try await store.renew(agentID: "tc-1", presentedSerial: "a2", legacyGroup: "x", serial: "a4", notAfter: later, now: now, recording: action) == .notCurrent(serial: "a3"))
        // a3 used: a1 superseded, forgotten; only a3 renews now.
        #expect(try await store.confirmCurrent(agentID: "tc-1", serial: "a3", now: now) == "a1")
        #expect(try await store.confirmCurrent(agentID: "tc-1", serial: "a3", now: now) == nil)
        #expect(Set(try await store.revocations().map(\.serial)) == ["a1", "a2"])
        #expect(try await store.renew(agentID: "tc-1", presentedSerial: "a1", legacyGroup: "x", serial: "a5", notAfter: later, now: now, recording: action) == .notCurrent(serial: "a3"))
        #expect(try await store.device(id: "tc-1")?.previousSerial == nil)
        // An OU device renews into a row of its OU's group; set-group moves it.
        #expect(try await store.renew(agentID: "tc-2", presentedSerial: "b1", legacyGroup: "locked", serial: "b2", notAfter: later, now: now, recording: action) == .renewed(group: "locked"))
        #expect(try await store.setGroup(agentID: "tc-2", group: "lgwan", now: now, recording: action))
        #expect(try await store.device(id: "tc-2")?.group == "lgwan")
        #expect(try await store.setGroup(agentID: "tc-404", group: "lgwan", now: now, recording: action) == false)
        // Revoked, the device may enroll again.
        _ = try await store.revoke(Revocation(serial: "c1", agentID: "tc-3", reason: "lost", time: now, by: "test"), recording: action)
        try await store.createTokens([EnrollmentToken(sha256: "t3", group: "lgwan", createdAt: now, createdBy: "test", expiresAt: now.addingTimeInterval(60), usesLeft: 1)],
                                     recording: action)
        #expect(try await store.enroll(DeviceRecord(agentID: "tc-3", group: "lgwan", serial: "c2", notAfter: later, enrolledAt: now, enrolledBy: "token t3", updatedAt: now),
                                       tokenSHA256: "t3", now: now, recording: action) == .enrolled)
        #expect(try await store.devices().map(\.agentID) == ["tc-1", "tc-2", "tc-3"])
    }

    @Test("the dashboard's templates never write a value unescaped ({{{…}}} or {{&…}}), and every page escapes what it shows")
    func templatesEscape() throws {
        for (name, text) in Dashboard.templateTexts {
            #expect(!text.contains("{{{") && !text.contains("{{&"), "template \(name) writes a value unescaped")
        }
        let hostile = "<img src=x onerror=alert(1)>\"'&"
        let escaped = "&lt;img src=x onerror=alert(1)&gt;&quot;&#39;&amp;"
        // A quote with a combining mark is one Swift Character but two scalars: the quote
        // must still be escaped (a browser would end the attribute at it).
        let combining = "x\"\u{301} autofocus onfocus=alert(4) y=\"\u{301}"
        #expect(Dashboard.escapeHTML(combining).unicodeScalars.elementsEqual("x&quot;\u{301} autofocus onfocus=alert(4) y=&quot;\u{301}".unicodeScalars))
        let quoteThenMark: [UInt8] = [0x22, 0xCC, 0x81]
        func rawQuoteMark(_ html: String) -> Bool {
            let bytes = Array(html.utf8)
            return bytes.indices.contains { i in bytes[i...].starts(with: quoteThenMark) }
        }
        var combiningRecord = AgentRecord(agentID: "tc-1", group: "g", hostname: combining, agentVersion: "1", policyName: combining, policySHA256: combining,
                                          bundleVersion: nil, segment: combining, authorized: true, reason: combining, interfaces: [], intervalSeconds: 30,
                                          spoolPending: 0, spoolDropped: 0, firstSeen: Date(), lastSeen: Date(), stale: false, heartbeats: 1, events: 0)
        combiningRecord.spoolHeld = 0
        let combiningEvent = StoredEvent(agentID: "tc-1", group: "g", event: ReportedEvent(id: "e", seq: 1, time: Date(), kind: combining, severity: combining, reason: combining),
                                         receivedAt: Date())
        for html in [Dashboard.render(agents: [combiningRecord], events: [combiningEvent], groups: [combining], segments: [combining],
                                      filters: Dashboard.Filters(group: combining, segment: combining, search: combining), now: Date(), staleIntervals: 3,
                                      page: Dashboard.Page(offset: 0, size: 100, total: 1, search: combining)),
                     Dashboard.renderAgent(combiningRecord, decisions: [combiningEvent], events: [], now: Date(), language: .ja),
                     Dashboard.renderActions([AdminAction(time: Date(), by: combining, action: combining, target: combining, detail: combining)], now: Date())] {
            #expect(!rawQuoteMark(html), "a quote followed by a combining mark reached the page unescaped")
            #expect(html.utf8.count > 1000)
        }
        let page = Dashboard.renderActions([AdminAction(time: Date(), by: hostile, action: hostile, target: hostile, detail: hostile)], now: Date(), language: .ja)
        #expect(!page.contains("<img") && page.components(separatedBy: escaped).count == 6 /* by, action (attribute and label), target, detail */, "\(page)")
        let record = AgentRecord(agentID: hostile, group: hostile, hostname: hostile, agentVersion: hostile, policyName: hostile, policySHA256: hostile,
                                 bundleVersion: nil, segment: hostile, authorized: false, reason: hostile, interfaces: [], intervalSeconds: 30,
                                 spoolPending: 0, spoolDropped: 0, firstSeen: Date(), lastSeen: Date(), stale: false, heartbeats: 1, events: 0)
        for html in [Dashboard.renderAgent(record, decisions: [], events: [], now: Date()),
                     Dashboard.render(agents: [record], events: [], groups: [hostile], segments: [hostile], filters: Dashboard.Filters(group: hostile, search: hostile),
                                      now: Date(), staleIntervals: 3, page: Dashboard.Page(offset: 0, size: 100, total: 1, search: hostile), language: .en)] {
            #expect(!html.contains("<img"), "\(html)")
            #expect(html.contains(escaped))
        }
    }

    @Test("one batch: an agent twice (counted twice, one row), a stale agent recovers once with one event", arguments: Backend.allCases)
    func batchWithRepeatsAndRecovery(backend: Backend) async throws {
        let store = try await backend.makeStore()
        defer { Task { try? await store.close() } }
        let t0 = Date()
        _ = try await store.recordHeartbeats([(heartbeat("tc-0001", interval: 10), hq), (heartbeat("tc-0002", interval: 10), branch)], at: t0)
        #expect(try await store.markStale(now: t0.addingTimeInterval(31), intervals: 3).count == 2)
        let third = AgentIdentity(agentID: "tc-0003", group: "lgwan")
        let results = try await store.recordHeartbeats([
            (heartbeat("tc-0001", interval: 10), hq), (heartbeat("tc-0003"), third),
            (heartbeat("tc-0001", authorized: false, interval: 10, reason: "cable out"), hq),
        ], at: t0.addingTimeInterval(40))
        // The recovery is reported on the agent's latest heartbeat of the batch; tc-0002 stays stale.
        #expect(results == [false, false, true])
        let agents = Dictionary(uniqueKeysWithValues: try await store.agents(AgentFilter()).map { ($0.agentID, $0) })
        #expect(agents["tc-0001"]?.heartbeats == 3)
        #expect(agents["tc-0001"]?.stale == false)
        #expect(agents["tc-0001"]?.reason == "cable out")  // the batch's latest heartbeat of the agent wins
        #expect(agents["tc-0001"]?.events == 2)  // agent-stale + agent-recovered
        #expect(agents["tc-0002"]?.stale == true)
        #expect(agents["tc-0003"]?.heartbeats == 1)
        let kinds = try await store.events(EventFilter(agentID: "tc-0001")).map(\.event.kind)
        #expect(kinds.sorted() == ["agent-recovered", "agent-stale"])
        // Next heartbeat: no second recovery.
        #expect(try await store.recordHeartbeat(heartbeat("tc-0001", interval: 10), from: hq, at: t0.addingTimeInterval(45)) == false)
        #expect(try await store.events(EventFilter(agentID: "tc-0001")).count == 2)
    }

    @Test("a recovery whose event id is already taken still stores the batch (no duplicate, no failure)", arguments: Backend.allCases)
    func recoveryWithTakenID(backend: Backend) async throws {
        let store = try await backend.makeStore()
        defer { Task { try? await store.close() } }
        let t0 = Date(timeIntervalSince1970: 1_795_000_000)
        _ = try await store.recordHeartbeat(heartbeat("tc-0001", interval: 10), from: hq, at: t0)
        #expect(try await store.markStale(now: t0.addingTimeInterval(31), intervals: 3).count == 1)
        let t1 = t0.addingTimeInterval(40)
        _ = try await store.insertEvents([event(1, kind: "x", id: "recovered-\(t1.millis)")], from: hq, at: t1)
        #expect(try await store.recordHeartbeats([(heartbeat("tc-0001", interval: 10), hq), (heartbeat("tc-0002"), branch)], at: t1) == [true, false])
        #expect(try await store.agents(AgentFilter(state: "stale")).isEmpty)
        let mine = try await store.events(EventFilter(agentID: "tc-0001", limit: 100))
        #expect(mine.filter { $0.event.id == "recovered-\(t1.millis)" }.count == 1)
    }

    @Test("heartbeats commit without waiting for the disk flush; everything else waits for it", arguments: Backend.allCases)
    func durabilityLevels(backend: Backend) async throws {
        let store = try await backend.makeStore()
        defer { Task { try? await store.close() } }
        _ = try await store.recordHeartbeat(heartbeat("tc-0001"), from: hq, at: Date())
        _ = try await store.insertEvents([event(1)], from: hq, at: Date())
        switch store {
        case let s as SQLiteStore:
            // FULL (2) for everything but heartbeats, NORMAL (1) for the heartbeat writer.
            #expect(try await s.connection.query("PRAGMA synchronous").first?.column("synchronous")?.integer == 2)
            #expect(try await s.heartbeatConnection.query("PRAGMA synchronous").first?.column("synchronous")?.integer == 1)
        case let p as PostgresStore:
            func level(_ client: PostgresClient) async throws -> String {
                for try await row in try await client.query("SHOW synchronous_commit") { return try row.decode(String.self) }
                return "?"
            }
            #expect(try await level(p.heartbeatClient) == "off")
            #expect(try await level(p.client) == "on")
        default:
            Issue.record("unknown store \(type(of: store))")
        }
    }

    @Test("the interfaces column written by hand reads back as written, and as JSONEncoder writes it")
    func interfacesColumn() throws {
        let names = ["eth0", "wlan0", "tab\there", "quote\"back\\slash", "ctl\u{1}\u{1F}", "\u{3042}\u{1F600}", "new\nline\r", ""]
        var lists: [[InterfaceSummary]] = [[]]
        for (n, name) in names.enumerated() {
            lists.append([InterfaceSummary(name: name, wireless: n % 2 == 0, up: n % 3 == 0, ssid: n % 2 == 0 ? "office \(name)" : nil,
                                           bssid: n % 4 == 0 ? "02:00:00:00:00:0\(n)" : nil, deviceAuth: n % 3 == 1 ? "authorized (EAP-TLS)" : nil),
                          InterfaceSummary(name: "eth\(n)", wireless: false, up: true)])
        }
        for list in lists {
            let mine = ColumnJSON.encode(interfaces: list)
            #expect(try ColumnJSON.decode([InterfaceSummary].self, mine) == list, "\(mine)")
            #expect(mine == String(decoding: try ReportCoding.encoder().encode(list), as: UTF8.self))
        }
    }

    @Test("a group's bundle version only rises", arguments: Backend.allCases)
    func bundles(backend: Backend) async throws {
        let store = try await backend.makeStore()
        defer { Task { try? await store.close() } }
        func stored(_ v: Int64) -> StoredBundle {
            StoredBundle(group: "mynumber", version: v, policySHA256: String(repeating: "\(v % 10)", count: 64),
                         bundle: SignedPolicyBundle(payload: "cGF5bG9hZA==", signature: "c2ln", keyID: "0123456789abcdef"), pushedAt: Date(), pushedBy: "admin-token")
        }
        #expect(try await store.bundle(group: "mynumber") == nil)
        #expect(try await store.putBundle(stored(1)) == .stored)
        #expect(try await store.putBundle(stored(1)) == .notNewer(current: 1))
        #expect(try await store.putBundle(stored(3)) == .stored)
        #expect(try await store.putBundle(stored(2)) == .notNewer(current: 3))
        // A push's record is written with the bundle, and only when it is stored.
        let action = { (v: Int64) in AdminAction(time: Date(millis: Date().millis), by: "sato", action: "policy-push", target: "mynumber", detail: "version \(v)") }
        #expect(try await store.putBundle(stored(3), recording: action(3)) == .notNewer(current: 3))
        #expect(try await store.actions(limit: 10).isEmpty)
        #expect(try await store.putBundle(stored(4), recording: action(4)) == .stored)
        #expect(try await store.actions(limit: 10).map(\.detail) == ["version 4"])
        _ = try await store.putBundle(stored(3))
        let b = try #require(try await store.bundle(group: "mynumber"))
        #expect(b.version == 4)
        #expect(b.bundle.keyID == "0123456789abcdef")
        #expect(b.etag == "\"mynumber-4-4444444444444444\"")
        #expect(try await store.bundle(group: "lgwan") == nil)
    }

    @Test("many heartbeats in one group commit", arguments: Backend.allCases)
    func groupCommit(backend: Backend) async throws {
        let store = try await backend.makeStore()
        defer { Task { try? await store.close() } }
        let batcher = HeartbeatBatcher(store: store)
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for i in 0..<300 {
                let id = AgentIdentity(agentID: "tc-\(i % 100)", group: "g\(i % 3)")
                group.addTask { try await batcher.record(heartbeat(id.agentID), from: id) }
            }
            for try await recovered in group { #expect(recovered == false) }
        }
        let agents = try await store.agents(AgentFilter())
        #expect(agents.count == 100)
        #expect(agents.allSatisfy { $0.heartbeats == 3 })
        let batches = batcher.batches
        #expect(batches < 300)  // several heartbeats shared a transaction
    }
}

@Suite("SQLite store life cycle")
struct SQLiteStoreLifeTests {
    @Test("a store dropped without close() closes its connections (no SQLiteNIO assertion ends the process)")
    func droppedOpen() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sg-store-drop-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).db").path
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        var store: SQLiteStore? = try await SQLiteStore(path: path)
        try await store!.migrate()
        weak let dropped = store
        store = nil
        #expect(dropped == nil)
        // The closing runs on SQLiteNIO's thread pool; once it is done the file opens again
        // (a connection left open would still hold the database; the assertion would have
        // ended this process).
        try await Task.sleep(for: .milliseconds(200))
        let again = try await SQLiteStore(path: path)
        try await again.migrate()
        try await again.close()
    }

    /// Writers waiting for SQLite's write lock (in the busy handler, on a thread) must not
    /// keep the lock's holder from running its COMMIT. Before each connection had a thread of
    /// its own they shared NIO's blocking pool (as many threads as cores): with more stores
    /// waiting than cores, every thread slept in a busy handler, no transaction could finish,
    /// and every waiting heartbeat failed with "database is locked" after busy_timeout.
    @Test("heartbeats waiting for a transaction's write lock never starve it of a thread (more stores than cores)")
    func waitersDoNotStarveTheHolder() async throws {
        let count = NIOSingletons.blockingPoolThreadCountSuggestion + 1
        var stores: [SQLiteStore] = []
        var paths: [String] = []
        defer { for path in paths { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } } }
        for i in 0..<count {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("sg-store-lock-\(getpid())-\(i)-\(UInt32.random(in: 0...UInt32.max)).db").path
            paths.append(path)
            let store = try await SQLiteStore(path: path)
            try await store.migrate()
            stores.append(store)
        }
        final class Flags: Sendable { let began = Mutex(0), release = Mutex(false) }
        let flags = Flags()
        try await withThrowingTaskGroup(of: String.self) { group in
            for (i, store) in stores.enumerated() {
                // The holder: BEGIN IMMEDIATE (the write lock), then waits, then one more
                // statement and COMMIT, each of which needs the connection's thread.
                group.addTask {
                    try await store.transaction { c in
                        flags.began.withLock { $0 += 1 }
                        while !flags.release.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(5)) }
                        _ = try await c.query("SELECT count(*) FROM agents")
                        return "holder \(i)"
                    }
                }
            }
            while flags.began.withLock({ $0 }) < count { try await Task.sleep(for: .milliseconds(5)) }
            for (i, store) in stores.enumerated() {
                // The waiter: a heartbeat on the other connection sleeps in the busy handler.
                group.addTask {
                    let written = try await store.recordHeartbeats([(heartbeat("tc-\(i)"), AgentIdentity(agentID: "tc-\(i)", group: "g"))], at: Date())
                    return "heartbeat \(i): \(written.count)"
                }
            }
            try await Task.sleep(for: .milliseconds(300))  // the heartbeats are in their busy handlers
            flags.release.withLock { $0 = true }
            var finished: [String] = []
            for try await r in group { finished.append(r) }
            #expect(finished.count == 2 * count)
            #expect(finished.filter { $0.hasPrefix("heartbeat") }.allSatisfy { $0.hasSuffix(": 1") }, "\(finished)")
        }
        for store in stores {
            #expect(try await store.agents(AgentFilter()).count == 1)
            try await store.close()
        }
    }
}
