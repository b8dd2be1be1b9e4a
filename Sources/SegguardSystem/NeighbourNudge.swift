// Makes the kernel resolve a neighbour (ARP / IPv6 neighbour discovery) by sending it one
// empty UDP datagram out of a given interface.

#if canImport(Glibc)
import Glibc
#endif

/// Sends one empty UDP datagram to the IPv4 (4 bytes) or IPv6 (16 bytes) `address`, port 9 (discard), out of interface
/// `interfaceIndex` (SO_BINDTOIFINDEX), from the calling thread's network namespace. To send
/// it the kernel resolves the neighbour, which is the point. Returns 0 or the errno.
public func nudgeNeighbour(interfaceIndex: Int32, address: [UInt8]) -> Int32 {
    guard address.count == 4 || address.count == 16 else { return EINVAL }
    let family = address.count == 4 ? AF_INET : AF_INET6
    let fd = socket(family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
    guard fd >= 0 else { return errno }
    defer { close(fd) }
    var index = interfaceIndex
    guard setsockopt(fd, SOL_SOCKET, 62 /* SO_BINDTOIFINDEX */, &index, socklen_t(MemoryLayout<Int32>.size)) == 0 else { return errno }
    let rc: Int
    if address.count == 4 {
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = UInt16(9).bigEndian
        withUnsafeMutableBytes(of: &sa.sin_addr) { $0.copyBytes(from: address) }
        rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, nil, 0, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    } else {
        var sa = sockaddr_in6()
        sa.sin6_family = sa_family_t(AF_INET6)
        sa.sin6_port = UInt16(9).bigEndian
        sa.sin6_scope_id = UInt32(bitPattern: interfaceIndex)
        withUnsafeMutableBytes(of: &sa.sin6_addr) { $0.copyBytes(from: address) }
        rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, nil, 0, 0, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
    }
    return rc < 0 ? errno : 0
}
