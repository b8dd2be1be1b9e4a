// Group commit for heartbeats: requests that arrive while a write is in flight are written
// together in the next transaction, and each request is answered only once its heartbeat is
// committed. One transaction (one fsync) for many heartbeats is what lets a store keep up
// with thousands of thin clients; with a single request in flight it is a plain write.

import Foundation
import SegguardReport

/// Collects heartbeats and writes them in batches through the store.
public actor HeartbeatBatcher {
    typealias Waiter = CheckedContinuation<Bool, any Error>
    let store: any CollectorStore
    let maxBatch: Int
    var pending: [(Heartbeat, AgentIdentity, Waiter)] = []
    var writing = false
    /// Batches written and heartbeats in them (for metrics and the benchmark).
    public private(set) var batches: Int = 0
    public private(set) var written: Int = 0

    public init(store: any CollectorStore, maxBatch: Int = 256) {
        self.store = store
        self.maxBatch = maxBatch
    }

    /// Returns once the heartbeat is committed: true when the agent was stale until now.
    public func record(_ heartbeat: Heartbeat, from agent: AgentIdentity) async throws -> Bool {
        try await withCheckedThrowingContinuation { (c: Waiter) in
            pending.append((heartbeat, agent, c))
            if !writing {
                writing = true
                Task { await self.drain() }
            }
        }
    }

    private func drain() async {
        while !pending.isEmpty {
            let batch = Array(pending.prefix(maxBatch))
            pending.removeFirst(batch.count)
            do {
                let results = try await store.recordHeartbeats(batch.map { ($0.0, $0.1) }, at: Date())
                for (i, item) in batch.enumerated() { item.2.resume(returning: results[i]) }
                batches += 1
                written += batch.count
            } catch {
                for item in batch { item.2.resume(throwing: error) }
            }
        }
        writing = false
    }
}
