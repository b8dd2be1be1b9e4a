// The one monotonic clock: every latency, deadline and timer in segment-guard reads it.

#if canImport(Glibc)
import Glibc
#endif

/// CLOCK_MONOTONIC in nanoseconds (DispatchTime may use a coarser clock on Linux).
@inline(__always)
public func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// Seconds as nanoseconds (negative and non-finite values are 0; huge ones saturate).
public func nanoseconds(_ seconds: Double) -> UInt64 {
    guard seconds.isFinite, seconds > 0 else { return 0 }
    let ns = seconds * 1e9
    return ns >= Double(UInt64.max) ? UInt64.max : UInt64(ns)
}
