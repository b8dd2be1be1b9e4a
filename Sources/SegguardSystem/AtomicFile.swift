// The one atomic file writer: the signing key, policy bundles, the boot-time baseline table.
// A reader (or a crash at any moment) sees the old file or the new one, never a mix.

import FoundationEssentials
import SegguardEssentials

#if canImport(Glibc)
import Glibc
#endif

/// Replaces a file atomically and durably.
public enum AtomicFile {
    /// Writes `data` to a new temporary file beside `path` (O_CREAT|O_EXCL|O_NOFOLLOW: never
    /// through a link someone planted, never over a file someone else created), sets `mode`,
    /// fsyncs it, renames it over `path` and fsyncs the directory so the rename itself is on
    /// disk. On failure the temporary file is removed and `path` is untouched.
    public static func write(_ data: Data, to path: String, mode: mode_t = 0o644) throws(SystemError) {
        let dir = PathName.directory(path)
        let temporary = (dir.isEmpty ? "." : dir) + "/." + PathName.last(path)
            + ".tmp-\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        let fd = try systemCall("open \(temporary)") { open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode) }
        var renamed = false
        defer { if !renamed { unlink(temporary) } }
        do throws(SystemError) {
            try systemCall("fchmod \(temporary)") { fchmod(fd, mode) }
            try writeAll(fd, data, call: "write \(temporary)")
            try systemCall("fsync \(temporary)") { fsync(fd) }
        } catch {
            close(fd)
            throw error
        }
        // close(2) must not be retried on EINTR (the descriptor is gone either way).
        if close(fd) != 0 && errno != EINTR { throw SystemError(call: "close \(temporary)", errno: errno) }
        try systemCall("rename \(temporary) to \(path)") { rename(temporary, path) }
        renamed = true
        let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            _ = fsync(dfd)
            close(dfd)
        }
    }
}
