// Group commit for heartbeats: requests that arrive while a write is in flight are written
// together in the next statement, and each request is answered only once its heartbeat is
// committed. One commit (one fsync) for many heartbeats is what lets a store keep up with
// thousands of thin clients; with a single request in flight it is a plain write.
//
// A lock, not an actor: a request only appends itself and, when no write is running, starts
// the writer; it does not hop to another executor to do so.

import Foundation
import SegguardReport
import Synchronization

/// Collects heartbeats and writes them in batches through the store.
public final class HeartbeatBatcher: Sendable {
    typealias Waiter = CheckedContinuation<Bool, any Error>
    struct State {
        var pending: [(Heartbeat, AgentIdentity, Waiter)] = []
        var writing = false
        var batches = 0
        var written = 0
    }

    let store: any CollectorStore
    let maxBatch: Int
    let state = Mutex(State())

    /// Batches written and heartbeats in them (for metrics and the benchmark).
    public var batches: Int { state.withLock { $0.batches } }
    public var written: Int { state.withLock { $0.written } }

    public init(store: any CollectorStore, maxBatch: Int = 256) {
        self.store = store
        self.maxBatch = maxBatch
    }

    /// Returns once the heartbeat is committed: true when the agent was stale until now.
    public func record(_ heartbeat: Heartbeat, from agent: AgentIdentity) async throws -> Bool {
        try await withCheckedThrowingContinuation { (c: Waiter) in
            let startWriter = state.withLock { s in
                s.pending.append((heartbeat, agent, c))
                if s.writing { return false }
                s.writing = true
                return true
            }
            if startWriter { Task(priority: .high) { await self.drain() } }
        }
    }

    /// Writes batches until nothing is pending; the last one out clears `writing` under the
    /// lock, so a heartbeat appended meanwhile is never left without a writer.
    private func drain() async {
        while true {
            let batch: [(Heartbeat, AgentIdentity, Waiter)]? = state.withLock { s in
                if s.pending.isEmpty {
                    s.writing = false
                    return nil
                }
                let n = min(s.pending.count, maxBatch)
                let b = Array(s.pending.prefix(n))
                s.pending.removeFirst(n)
                return b
            }
            guard let batch else { return }
            do {
                let results = try await store.recordHeartbeats(batch.map { ($0.0, $0.1) }, at: Date())
                state.withLock { s in
                    s.batches += 1
                    s.written += batch.count
                }
                for (i, item) in batch.enumerated() { item.2.resume(returning: results[i]) }
            } catch {
                for item in batch { item.2.resume(throwing: error) }
            }
        }
    }
}
