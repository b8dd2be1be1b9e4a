// Who is on the other end of a Unix socket, as the kernel reports it.

/// SO_PEERCRED, SO_PEERGROUPS and SO_PEERPIDFD of a connection: the daemon trusts nothing a
/// client says about itself.
public struct PeerCredentials: Sendable, Equatable {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32
    public var groups: [UInt32]
    /// SO_PEERPIDFD of the connecting process (-1 where the kernel has none). Owned by whoever
    /// read it (the control server): valid only while the request is handled.
    public var pidfd: Int32

    public init(pid: Int32, uid: UInt32, gid: UInt32, groups: [UInt32], pidfd: Int32 = -1) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
        self.groups = groups
        self.pidfd = pidfd
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// The id of group `name` (getgrnam_r, reentrant; may ask NSS: LDAP, sssd), nil when unknown.
public func groupID(named name: String) -> UInt32? {
    var grp = Glibc.group()
    var buf = [CChar](repeating: 0, count: 16384)
    var result: UnsafeMutablePointer<Glibc.group>?
    guard getgrnam_r(name, &grp, &buf, buf.count, &result) == 0, result != nil else { return nil }
    return grp.gr_gid
}
