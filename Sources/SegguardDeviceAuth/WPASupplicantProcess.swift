// Which process serves a wpa_supplicant control socket, found through procfs, so that the
// source can hold a pidfd of it and learn of its exit at once (a SIGKILLed supplicant sends no
// event and leaves its socket file behind).
//
// SO_PEERCRED does not help: for a connected AF_UNIX datagram socket it reports pid 0 (and
// SO_PEERPIDFD ENODATA), measured on Linux 6.18. So the socket's inode is looked up by path in
// /proc/<pid>/net/unix (per network namespace: the supplicant may run in another one) and
// confirmed by a `socket:[inode]` descriptor of that process.

import FoundationEssentials
import SegguardSystem

#if canImport(Glibc)
import Glibc
#endif

enum WPASupplicantProcess {
    /// The process (named wpa_supplicant*) holding the socket bound at `socketPath`, or nil.
    static func owner(ofSocket socketPath: String, procRoot: String = "/proc") -> pid_t? {
        var target = stat()
        guard stat(socketPath, &target) == 0 else { return nil }
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: procRoot) else { return nil }
        // Namespaces already searched: /proc/<pid>/net/unix lists the sockets of a whole network
        // namespace, so one read per namespace finds the inode.
        var inodes: [UInt64: UInt64?] = [:]
        for entry in entries {
            guard let pid = pid_t(entry), pid > 0 else { continue }
            guard let comm = readSmallTextFile("\(procRoot)/\(pid)/comm", limit: 64), comm.hasPrefix("wpa_supplicant") else { continue }
            var ns = stat()
            guard stat("\(procRoot)/\(pid)/ns/net", &ns) == 0 else { continue }
            let inode: UInt64?
            if let known = inodes[UInt64(ns.st_ino)] {
                inode = known
            } else {
                inode = socketInode(netUnix: "\(procRoot)/\(pid)/net/unix", path: socketPath, target: target)
                inodes[UInt64(ns.st_ino)] = inode
            }
            guard let inode else { continue }
            if holds(pid: pid, socketInode: inode, procRoot: procRoot) { return pid }
        }
        return nil
    }

    /// The inode of the socket bound at `path` in a /proc/…/net/unix listing ("Num RefCount
    /// Protocol Flags Type St Inode Path"), matched by path text or by the file it names.
    static func socketInode(netUnix: String, path: String, target: stat) -> UInt64? {
        guard let text = readSmallTextFile(netUnix, limit: 16 << 20) else { return nil }
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ", maxSplits: 7, omittingEmptySubsequences: true)
            guard fields.count == 8, let inode = UInt64(fields[6]) else { continue }
            let bound = String(fields[7])
            if bound == path { return inode }
            var st = stat()
            if bound.hasPrefix("/"), stat(bound, &st) == 0, st.st_dev == target.st_dev, st.st_ino == target.st_ino { return inode }
        }
        return nil
    }

    /// True when `pid` has a descriptor for socket `socketInode`.
    static func holds(pid: pid_t, socketInode: UInt64, procRoot: String = "/proc") -> Bool {
        let dir = "\(procRoot)/\(pid)/fd"
        guard let fds = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return false }
        let want = "socket:[\(socketInode)]"
        var buf = [UInt8](repeating: 0, count: 64)
        for fd in fds {
            let n = buf.withUnsafeMutableBufferPointer { b in
                b.withMemoryRebound(to: CChar.self) { readlink("\(dir)/\(fd)", $0.baseAddress!, $0.count) }
            }
            guard n > 0 else { continue }
            if String(decoding: buf[0..<n], as: UTF8.self) == want { return true }
        }
        return false
    }

    /// The socket inode of the control socket `pid` serves at `socketPath` (to re-check after
    /// pidfd_open that the pid was not reused in between).
    static func socketInode(pid: pid_t, socketPath: String, procRoot: String = "/proc") -> UInt64? {
        var target = stat()
        guard stat(socketPath, &target) == 0 else { return nil }
        return socketInode(netUnix: "\(procRoot)/\(pid)/net/unix", path: socketPath, target: target)
    }
}
