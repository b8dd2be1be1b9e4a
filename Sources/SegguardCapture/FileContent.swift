// Content facts about an executable: its identity (what a cache may key on), its SHA-256 and
// MD5 read through an open descriptor, and dpkg's record of installed files.

import Crypto
import FoundationEssentials
import SegguardEssentials
import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What identifies one version of a file: a changed file gets a new identity, so hashes cached
/// by it are never stale (a rewrite changes mtime/ctime; a replacement changes the inode).
public struct FileIdentity: Hashable, Sendable {
    public var device: UInt64
    public var inode: UInt64
    public var size: Int64
    public var mtimeNanos: Int64
    public var ctimeNanos: Int64

    /// The identity of an open file.
    public init?(fd: Int32) {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
        size = Int64(st.st_size)
        mtimeNanos = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
        ctimeNanos = Int64(st.st_ctim.tv_sec) * 1_000_000_000 + Int64(st.st_ctim.tv_nsec)
    }
}

/// SHA-256 and MD5 of a file, hex.
public struct FileDigests: Sendable, Equatable {
    public var sha256: String
    public var md5: String

    /// Reads the whole file through `fd` with pread (the descriptor's offset is not moved).
    public static func of(fd: Int32) -> FileDigests? {
        var sha = SHA256()
        var md5 = Insecure.MD5()
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        var offset: off_t = 0
        while true {
            let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
            if n < 0 {
                if errno == EINTR { continue }
                return nil
            }
            if n == 0 { break }
            buf.withUnsafeBytes { raw in
                let chunk = UnsafeRawBufferPointer(rebasing: raw[0..<n])
                sha.update(bufferPointer: chunk)
                md5.update(bufferPointer: chunk)
            }
            offset += off_t(n)
        }
        return FileDigests(sha256: hex(sha.finalize()), md5: hex(md5.finalize()))
    }

    static func hex<D: Sequence>(_ d: D) -> String where D.Element == UInt8 {
        hexString(d)
    }
}

/// Digests by file identity, bounded (the oldest half is dropped when full).
public final class DigestCache: Sendable {
    private let entries = Mutex<[FileIdentity: (FileDigests, UInt64)]>([:])
    private let counter = Mutex<UInt64>(0)
    public let capacity: Int

    public init(capacity: Int = 4096) { self.capacity = capacity }

    public func get(_ id: FileIdentity) -> FileDigests? { entries.withLock { $0[id]?.0 } }

    public func put(_ id: FileIdentity, _ d: FileDigests) {
        let n = counter.withLock { c -> UInt64 in
            c += 1
            return c
        }
        entries.withLock { e in
            if e.count >= capacity {
                let keep = e.sorted { $0.value.1 > $1.value.1 }.prefix(capacity / 2)
                e = Dictionary(uniqueKeysWithValues: keep.map { ($0.key, $0.value) })
            }
            e[id] = (d, n)
        }
    }

    public var count: Int { entries.withLock { $0.count } }
}

/// dpkg's record of installed files and their MD5 (`/var/lib/dpkg/info/*.md5sums`). Loaded on
/// a thread of its own (about 100 000 lines on a desktop system) and again when that directory
/// changes (a package installed, upgraded or removed); lookups never wait for a load.
public final class DpkgIndex: Sendable {
    /// What a lookup knows.
    public enum Lookup: Sendable, Equatable {
        /// Not loaded yet: the caller answers as for an exec it cannot decide in time.
        case notLoaded
        /// The MD5 dpkg recorded, or nil when no installed package ships the file.
        case recorded(String?)
    }

    public let infoDirectory: String
    private struct State {
        var stamp: Int64 = -1
        var md5: [String: String]?
        var loading = false
    }
    private let state = Mutex(State())
    private let loader = DispatchQueue(label: "segguard.capture.dpkg")

    public init(infoDirectory: String = "/var/lib/dpkg/info") { self.infoDirectory = infoDirectory }

    /// Parses one `.md5sums` file: lines of "<32 hex>  <path without leading />". Malformed
    /// lines are skipped (dpkg writes none); returns absolute path → md5.
    public static func parse(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        var utf8 = Substring(text).utf8
        while !utf8.isEmpty {
            let end = utf8.firstIndex(of: UInt8(ascii: "\n")) ?? utf8.endIndex
            let line = utf8[utf8.startIndex..<end]
            utf8 = end == utf8.endIndex ? utf8[end...] : utf8[utf8.index(after: end)...]
            guard line.count > 34 else { continue }
            let md5 = line.prefix(32)
            guard md5.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) || ($0 >= 65 && $0 <= 70) }) else { continue }
            var rest = line.dropFirst(32)
            guard rest.first == UInt8(ascii: " ") else { continue }
            while rest.first == UInt8(ascii: " ") { rest = rest.dropFirst() }
            guard !rest.isEmpty, let path = String(rest) else { continue }
            out["/" + path] = String(md5)!.lowercased()
        }
        return out
    }

    /// What dpkg recorded for `path`; `/usr/bin/x` is also looked up as `/bin/x` and vice
    /// versa (merged /usr). Starts a (re)load in the background when needed.
    public func lookup(_ path: String) -> Lookup {
        let stamp = currentStamp()
        let (index, stale) = state.withLock { s -> ([String: String]?, Bool) in
            let stale = s.stamp != stamp && !s.loading
            if stale { s.loading = true }
            return (s.md5, stale)
        }
        if stale { loader.async { [self] in load(stamp: stamp) } }
        guard let index else { return .notLoaded }
        if let m = index[path] { return .recorded(m) }
        if path.hasPrefix("/usr/") { return .recorded(index[String(path.dropFirst(4))]) }
        return .recorded(index["/usr" + path])
    }

    /// `lookup` as the decider takes it.
    public func record(_ path: String) -> PackageRecord {
        switch lookup(path) {
        case .notLoaded: .unknown
        case .recorded(nil): .none
        case .recorded(let md5?): .md5(md5)
        }
    }

    /// Loads now, on the caller's thread (start-up, tests).
    public func loadNow() {
        load(stamp: currentStamp())
    }

    /// Number of files known (0 before the first load).
    public var count: Int { state.withLock { $0.md5?.count ?? 0 } }

    private func currentStamp() -> Int64 {
        var st = stat()
        return stat(infoDirectory, &st) == 0 ? Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec) : 0
    }

    private func load(stamp: Int64) {
        var md5: [String: String] = [:]
        let files = (try? FileManager.default.contentsOfDirectory(atPath: infoDirectory)) ?? []
        for f in files where f.hasSuffix(".md5sums") {
            if let text = try? String(contentsOfFile: "\(infoDirectory)/\(f)", encoding: .utf8) {
                md5.merge(Self.parse(text)) { a, _ in a }
            }
        }
        state.withLock { s in
            s.stamp = stamp
            s.md5 = md5
            s.loading = false
        }
    }
}
