// Which filesystems capture blocking marks: every mount at or below a watched path, now and
// whenever one appears (USB media, /run/user/UID at login, a tmpfs mounted later). The kernel
// signals a change of the mount table by POLLPRI on /proc/self/mountinfo; the parsing here is
// pure, so unit tests drive it without a kernel.

import FoundationEssentials
import SegguardEssentials
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One line of /proc/self/mountinfo, as far as marking needs it.
public struct MountEntry: Sendable, Equatable {
    /// st_dev of the filesystem (major:minor).
    public var device: UInt64
    /// Where it is mounted (octal escapes decoded).
    public var mountPoint: String
    /// Filesystem type (tmpfs, ext4, proc, ...).
    public var fsType: String

    public init(device: UInt64, mountPoint: String, fsType: String) {
        (self.device, self.mountPoint, self.fsType) = (device, mountPoint, fsType)
    }

    /// Filesystems no executable is run from (or that fanotify refuses to mark): not marked.
    public static let pseudoTypes: Set<String> = ["proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "debugfs", "tracefs", "securityfs",
                                                   "pstore", "bpf", "configfs", "fusectl", "binfmt_misc", "autofs", "efivarfs", "nsfs", "rpc_pipefs",
                                                   "selinuxfs", "hugetlbfs", "devtmpfs"]

    /// Parses mountinfo text; malformed lines are skipped.
    public static func parse(_ text: String) -> [MountEntry] {
        var out: [MountEntry] = []
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: false)
            // id parent major:minor root mountpoint options [optional...] - type source superopts
            guard f.count >= 10, let dash = f.firstIndex(of: "-"), dash >= 6, dash + 1 < f.count else { continue }
            let mm = f[2].split(separator: ":")
            guard mm.count == 2, let major = UInt32(mm[0]), let minor = UInt32(mm[1]) else { continue }
            out.append(MountEntry(device: Self.makeDevice(major, minor), mountPoint: unescape(f[4]), fsType: String(f[dash + 1])))
        }
        return out
    }

    /// glibc's makedev(3) (a macro Swift cannot see): the st_dev of major:minor.
    public static func makeDevice(_ major: UInt32, _ minor: UInt32) -> UInt64 {
        let ma = UInt64(major), mi = UInt64(minor)
        return ((ma & 0xfffff000) << 32) | ((ma & 0xfff) << 8) | ((mi & 0xffffff00) << 12) | (mi & 0xff)
    }

    /// Decodes mountinfo's \ooo escapes (space, tab, newline, backslash).
    static func unescape(_ s: Substring) -> String {
        guard s.firstRange(of: "\\") != nil else { return String(s) }
        var bytes: [UInt8] = []
        var u = Array(s.utf8)[...]
        while let c = u.first {
            if c == UInt8(ascii: "\\"), u.count >= 4, let v = UInt8(String(decoding: u.dropFirst().prefix(3), as: UTF8.self), radix: 8) {
                bytes.append(v)
                u = u.dropFirst(4)
            } else {
                bytes.append(c)
                u = u.dropFirst()
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Whether this mount is at or below one of `watch` and of a type worth marking.
    public func isCovered(by watch: [String]) -> Bool {
        guard !Self.pseudoTypes.contains(fsType) else { return false }
        return watch.contains { w in
            w == "/" || mountPoint == w || mountPoint.hasPrefix(w.hasSuffix("/") ? w : w + "/")
        }
    }
}

/// vm.memfd_noexec raised to 2 while a protecting session runs (Linux 6.3+; the value is
/// hierarchical since 6.6, so every pid namespace gets it): memfd_create() then makes only
/// sealed, non-executable memfds and refuses MFD_EXEC, closing the "run a copy from memory"
/// route. Restored to what it was when the last such session ends and when the daemon stops;
/// the old value is also written to `savedFile`, so that a daemon killed while it was raised
/// puts it back when it starts again.
public final class MemfdNoexec: Sendable {
    let path: String
    let savedFile: String?
    private let saved = Mutex<String?>(nil)

    public init(path: String = "/proc/sys/vm/memfd_noexec", savedFile: String? = nil) {
        self.path = path
        self.savedFile = savedFile
        if let savedFile, let old = Self.read(savedFile), ["0", "1", "2"].contains(old) {
            _ = Self.write(path, old)
            unlink(savedFile)
        }
    }

    /// Whether the kernel has the setting at all (Debian 12's 6.1 does not).
    public var isAvailable: Bool { access(path, W_OK) == 0 }

    /// The current value, or nil.
    public var current: String? { Self.read(path) }

    /// Raises to 2 (remembering the old value); nil on success, else why not.
    public func raise() -> String? {
        saved.withLock { s -> String? in
            guard s == nil else { return nil }
            guard let old = Self.read(path) else { return "\(path) is not available on this kernel (Linux 6.3+)" }
            if old == "2" { s = old; return nil }
            if let savedFile { _ = Self.write(savedFile, old) }
            guard Self.write(path, "2") else {
                let e = errno
                if let savedFile { unlink(savedFile) }
                return "cannot write \(path): errno \(e)"
            }
            s = old
            return nil
        }
    }

    /// Puts back what `raise` found.
    public func restore() {
        saved.withLock { s in
            guard let old = s else { return }
            if old != "2" { _ = Self.write(path, old) }
            if let savedFile { unlink(savedFile) }
            s = nil
        }
    }

    public var isRaised: Bool { saved.withLock { $0 != nil } }

    static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 32)
        let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return nil }
        return String(decoding: buf[0..<n], as: UTF8.self).trimmed()
    }

    static func write(_ path: String, _ value: String) -> Bool {
        let fd = open(path, O_WRONLY | O_CLOEXEC | O_TRUNC | O_CREAT, 0o600)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let bytes = Array((value + "\n").utf8)
        return bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } == bytes.count
    }
}
