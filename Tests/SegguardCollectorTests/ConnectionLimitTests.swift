// The collector's connection limits: at most --max-connections open (the next waits in the
// listen backlog until one closes, it is not refused or crashed), and kept-alive connections
// idle for --idle-timeout are closed.

import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix
@testable import SegguardCollector
import SegguardReport
import Synchronization
import Testing

@Suite("Connection cap and idle timeout", .serialized)
struct ConnectionLimitTests {
    /// A raw TCP connection to the collector (no TLS: enough to hold a slot).
    static func openTCP(_ port: Int) async throws -> any Channel {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get()
    }

    @Test("with --max-connections 2, a third client waits while two connections are open and is served once one closes")
    func cap() async throws {
        let c = try await TestCollector.start { $0.maxConnections = 2 }
        defer { c.pki.remove() }
        let first = try await Self.openTCP(c.port), second = try await Self.openTCP(c.port)
        // The collector has accepted both (the cap counts accepted connections).
        try await Task.sleep(for: .milliseconds(300))
        final class Flag: Sendable { let value = Mutex(false) }
        let answered = Flag()
        let waiting = Task { () -> Int in
            let status = try await withClient(try c.client()) { (client: HTTPClient) async throws -> Int in
                try await call(client, .GET, c.url + "/healthz").status
            }
            answered.value.withLock { $0 = true }
            return status
        }
        try await Task.sleep(for: .seconds(1.5))
        #expect(!answered.value.withLock { $0 }, "a third connection was served while two held the cap")
        try await first.close()
        let status = try await waiting.value
        #expect(status == 200)
        try? await second.close()
        await c.stop()
    }

    @Test("a kept-alive connection idle for --idle-timeout is closed by the collector")
    func idle() async throws {
        let c = try await TestCollector.start { $0.idleTimeoutSeconds = 1.5 }
        defer { c.pki.remove() }
        let device = try c.pki.device("tc-0801", group: "mynumber")
        // The collector's first agent call loads the revocations and the device table: done
        // first on another connection, so that the measured one is never idle mid-request
        // on a loaded machine (the idle timer counts the server's own time too).
        try await withClient(try c.client(device: try c.pki.device("tc-0802", group: "mynumber"))) { (client: HTTPClient) async throws -> Void in
            _ = try await call(client, .POST, c.url + "/api/v1/heartbeat", body: json(heartbeat("tc-0802")))
        }
        #expect(try await eventually(12) { c.collector.connections.count == 0 })
        try await withClient(try c.client(device: device)) { (client: HTTPClient) async throws -> Void in
            #expect(try await call(client, .POST, c.url + "/api/v1/heartbeat", body: json(heartbeat("tc-0801"))).status == 204)
            #expect(c.collector.connections.count == 1)
            // The collector closes it after 1.5 s idle; the TLS shutdown then waits up to 1 s for the
            // client's close_notify (the collector's TLS shutdownTimeout) before the descriptor is released.
            #expect(try await eventually(12) { c.collector.connections.count == 0 }, "the idle connection was closed")
        }
        await c.stop()
    }
}
