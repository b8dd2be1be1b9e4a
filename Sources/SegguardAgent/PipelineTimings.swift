// How long the way from a netlink message to the nftables transaction took, per stage, for
// the last binding changes caused by a network event: in `segguardctl status` and, for
// benchmarks, in a file written at stop.

import FoundationEssentials
import SegguardEssentials
import Glibc
import SegguardWire

/// Monotonic instants of one binding change (ns).
struct PipelineSample: Codable, Sendable, Equatable {
    /// The loop woke for the netlink message (poll returned).
    var woke: UInt64
    /// The snapshot reached the agent (messages parsed, snapshot built).
    var snapshot: UInt64
    /// The decision was made.
    var decided: UInt64
    /// The transaction was handed to libnftables.
    var handedToKernel: UInt64
    /// libnftables returned: the kernel committed the new table.
    var committed: UInt64
    /// The new table lets gateway traffic out (false: the segment was lost).
    var authorized: Bool
}

/// The last `capacity` samples.
struct PipelineTimings {
    let capacity: Int
    private(set) var samples: [PipelineSample] = []

    init(capacity: Int) { self.capacity = max(1, capacity) }

    mutating func add(_ s: PipelineSample) {
        samples.append(s)
        if samples.count > capacity { samples.removeFirst(samples.count - capacity) }
    }

    /// Percentiles of each stage, counted from the wakeup; nil without samples.
    var status: StatusReply.PipelineStatus? {
        guard !samples.isEmpty else { return nil }
        func stage(_ name: String, _ at: (PipelineSample) -> UInt64) -> StatusReply.PipelineStatus.Stage {
            let micros = samples.map { Double(at($0) &- $0.woke) / 1000 }.sorted()
            func pct(_ p: Double) -> Double { micros[min(micros.count - 1, Int((p / 100 * Double(micros.count - 1)).rounded()))] }
            return .init(name: name, p50Micros: pct(50), p99Micros: pct(99), maxMicros: micros.last ?? 0)
        }
        return .init(samples: samples.count, stages: [
            stage("snapshot", \.snapshot), stage("decided", \.decided), stage("handed-to-kernel", \.handedToKernel), stage("committed", \.committed),
        ])
    }

    /// One JSON object per line, microseconds from the wakeup (benchmarks).
    func jsonLines() -> String {
        samples.map { s in
            "{\"authorized\":\(s.authorized)," + format("\"snapshot_us\":%.1f,\"decided_us\":%.1f,\"handed_to_kernel_us\":%.1f,\"committed_us\":%.1f}",
                   Double(s.snapshot &- s.woke) / 1000, Double(s.decided &- s.woke) / 1000,
                   Double(s.handedToKernel &- s.woke) / 1000, Double(s.committed &- s.woke) / 1000)
        }.joined(separator: "\n") + (samples.isEmpty ? "" : "\n")
    }
}
