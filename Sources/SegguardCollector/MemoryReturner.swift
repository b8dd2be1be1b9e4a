// Gives memory back to the system after connections close. Each agent connection costs tens
// of kilobytes (TLS state, buffers, the request task); glibc's allocator keeps what they freed
// in its arenas, so after a reconnect storm or a rollout wave the collector would keep its
// peak RSS for good. When the open connections have fallen well below their peak since the
// last trim, `malloc_trim(0)` returns the free pages (measured: scripts/fleet-load.py).

import Foundation
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// Watches the open-connection count and trims the allocator after a large drop.
struct MemoryReturner: Service {
    /// glibc's malloc_trim (not in the Glibc module's headers), nil on another C library.
    static let mallocTrim: (@convention(c) (Int) -> Int32)? = {
        guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return nil }
        return unsafeBitCast(sym, to: (@convention(c) (Int) -> Int32).self)
    }()

    let collector: Collector
    /// How often the count is looked at.
    var period = 15.0

    func run() async throws {
        var peak = 0
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let open = collector.connections.count
            peak = max(peak, open)
            // A drop of a fifth of the peak, and at least 500 connections (~25 MB).
            if peak - open >= max(500, peak / 5) {
                if let trim = Self.mallocTrim {
                    let trimmed = trim(0)
                    collector.logger.info("returned freed memory to the system", metadata: [
                        "connections": "\(open)", "peak_connections": "\(peak)", "trimmed": "\(trimmed != 0)"])
                }
                peak = open
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(period)) }
        }
    }
}
