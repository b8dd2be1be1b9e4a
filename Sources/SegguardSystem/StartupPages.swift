// Startup touches far more of the program than the daemon uses afterwards: the dynamic
// loader's relocation records and symbol tables, argument parsing, TLS and SQLite set-up, and
// every 4 KB page faulted in maps its 64 KB neighbourhood (the kernel's fault-around). Those
// pages stay mapped, and counted in the resident size, for the life of the process.

import FoundationEssentials
import SegguardEssentials

#if canImport(Glibc)
import Glibc
#endif

/// Unmaps this program's own read-only file pages, so that the resident set is what the
/// program uses from then on.
public enum StartupPages {
    /// How long after its start segguardd releases them (its first decision, table, heartbeat
    /// and capture marks are done by then).
    public static let settleSeconds = 10

    /// Drops the page-table entries of every mapping of the running executable that cannot
    /// be written and holds no private (anonymous) page: code, constants, symbol tables and
    /// relocation records, whose contents are the file's. Nothing is lost: the pages stay in
    /// the page cache, and the next use of one is a minor fault without I/O. Mappings with
    /// private pages (relocated data, RELRO) and shared libraries are left alone.
    ///
    /// - Returns: the bytes that were resident in the mappings released.
    @discardableResult
    public static func release() -> Int {
        guard let text = try? readTextFile("/proc/self/smaps") else { return 0 }
        let exe = PathName.resolved("/proc/self/exe")
        var released = 0
        var current: (start: UInt, end: UInt, readOnly: Bool, mine: Bool)?
        var rss = 0, anonymous = -1
        func finish() {
            if let m = current, m.mine, m.readOnly, anonymous == 0, rss > 0,
               madvise(UnsafeMutableRawPointer(bitPattern: m.start), Int(m.end - m.start), MADV_DONTNEED) == 0 {
                released += rss * 1024
            }
        }
        for line in text.split(separator: "\n") {
            if let first = line.first, first.isHexDigit, let dash = line.firstIndex(of: "-") {
                finish()
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                guard fields.count >= 5, let start = UInt(line[..<dash], radix: 16),
                      let end = UInt(fields[0][fields[0].index(after: fields[0].firstIndex(of: "-")!)...], radix: 16) else {
                    current = nil
                    continue
                }
                let perms = fields[1]
                let path = fields.count >= 6 ? fields[5...].joined(separator: " ") : ""
                current = (start, end, !perms.contains(Character("w")), path == exe)
                rss = 0
                anonymous = -1
            } else if line.hasPrefix("Rss:") {
                rss = Int(line.dropFirst(4).trimmed().split(separator: " ").first ?? "") ?? 0
            } else if line.hasPrefix("Anonymous:") {
                anonymous = Int(line.dropFirst(10).trimmed().split(separator: " ").first ?? "") ?? -1
            }
        }
        finish()
        return released
    }
}
