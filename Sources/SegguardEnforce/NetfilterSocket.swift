// One NETLINK_NETFILTER socket as the nf_tables monitor and the refusal log read it: opened
// in the namespace of the thread that creates it, bound (the kernel picks the port id: an
// unbound socket gets no multicast), with a receive buffer large enough for a burst.

import CLibNL
import FoundationEssentials
import SegguardSystem

#if canImport(Glibc)
import Glibc
#endif

/// A bound NETLINK_NETFILTER socket; closed when released. Used by one thread at a time.
final class NetfilterSocket {
    let fd: Int32

    /// `purpose` names it in errors ("nf_tables notifications"); `receiveBuffer` in bytes
    /// (SO_RCVBUFFORCE needs CAP_NET_ADMIN, which the daemon has; else the default size, and
    /// an overflow is still reported by `drain`).
    init(purpose: String, receiveBuffer: Int32, nonBlocking: Bool = true) throws(NftablesError) {
        let flags = Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | (nonBlocking ? Int32(SOCK_NONBLOCK.rawValue) : 0)
        do {
            fd = try systemCall("socket(AF_NETLINK, NETLINK_NETFILTER)") { socket(AF_NETLINK, flags, 12 /* NETLINK_NETFILTER */) }
        } catch {
            throw NftablesError(operation: "open a netlink socket for \(purpose)", detail: error.description)
        }
        var local = sockaddr_nl()
        local.nl_family = sa_family_t(AF_NETLINK)
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_nl>.size)) }
        }
        guard bound == 0 else {
            let e = errno
            close(fd)
            throw NftablesError(operation: "bind the netlink socket for \(purpose)", detail: "\(String(cString: strerror(e))) (errno \(e))")
        }
        var size = receiveBuffer
        if setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
    }

    deinit { close(fd) }

    /// Reads every pending datagram into `buffer` without blocking, handing each to
    /// `datagram` (the buffer and its length). True when the socket overflowed (ENOBUFS:
    /// messages were lost); `lost` runs at that moment.
    func drain(into buffer: inout [UInt8], lost: () -> Void = {}, _ datagram: ([UInt8], Int) -> Void) -> Bool {
        var overflow = false
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == ENOBUFS {
                    overflow = true
                    lost()
                    continue
                }
                return overflow  // EAGAIN: drained
            }
            if n == 0 { return overflow }
            datagram(buffer, n)
        }
    }
}
