// Startup touches far more of the program than the daemon uses afterwards: the dynamic
// loader's relocation records and symbol tables, argument parsing, TLS and SQLite set-up, the
// libraries' own initialisation (NSS, libsystemd, libnftables' parser), and every 4 KB page
// faulted in maps its 64 KB neighbourhood (the kernel's fault-around). Those pages stay mapped,
// and counted in the resident size, for the life of the process.

import CSegguardShims
import FoundationEssentials
import SegguardEssentials

#if canImport(Glibc)
import Glibc
#endif

/// Unmaps the read-only file pages of this program and its shared libraries, so that the
/// resident set is what the program uses from then on.
public enum StartupPages {
    /// How long after its start segguardd releases them (its first decision, table, heartbeat
    /// and capture marks are done by then).
    public static let settleSeconds = 10

    /// The loadable segments that are never writable (code, constants, symbol tables,
    /// relocation records) of the executable and, with `libraries`, of each shared library
    /// loaded from a file, from their ELF program headers: whole pages only. Relocated data,
    /// RELRO included, lies in writable segments and is never named; neither is the vDSO, nor an
    /// object whose code the loader relocated (DT_TEXTREL).
    public static func readOnlySegments(libraries: Bool = true) -> [(start: UInt, end: UInt)] {
        let capacity = 256
        var starts = [UInt](repeating: 0, count: capacity), ends = [UInt](repeating: 0, count: capacity)
        let n = Int(sg_readonly_segments(&starts, &ends, Int32(capacity), libraries ? 1 : 0))
        return (0..<max(0, n)).map { (starts[$0], ends[$0]) }
    }

    /// Drops the page-table entries of the read-only segments of the executable and its
    /// libraries (`readOnlySegments`): their contents are the files', so nothing is lost; the
    /// pages stay in the page cache (a library's are shared with every process using it) and
    /// the next use of one is a minor fault without I/O. Writable segments (relocated data,
    /// RELRO) are left alone.
    ///
    /// - Returns: how much the file-backed resident size (RssFile) fell, in bytes.
    @discardableResult
    public static func release() -> Int {
        let before = residentFileBytes()
        for r in readOnlySegments() {
            _ = madvise(UnsafeMutableRawPointer(bitPattern: r.start), Int(r.end - r.start), MADV_DONTNEED)
        }
        return max(0, before - residentFileBytes())
    }

    /// RssFile of this process (/proc/self/status), in bytes.
    static func residentFileBytes() -> Int {
        guard let status = try? readTextFile("/proc/self/status"),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("RssFile:") }) else { return 0 }
        return (Int(line.dropFirst(8).trimmed().split(separator: " ").first ?? "") ?? 0) * 1024
    }
}
