// Gateway traffic the table refused on an authorized interface: what the rule `log group`
// (NftablesRuleset.refusalLogGroup) hands to nfnetlink_log. While the gateways are bound to
// sessions, such a packet came from a process that was not started through the launch gate
// (or went to a port the policy does not list); the agent records it as `gateway-refused`,
// naming the socket's owner (NFULA_UID). Owns one non-blocking NETLINK_NETFILTER socket bound
// to the log group in the namespace of the thread that creates it; the agent watches its
// descriptor on its loop and drains it when readable.
//
// Failure table:
//   socket, bind or the group refused (EBUSY: another listener) -> init throws; the table
//                                        still drops, the agent records nothing (logged)
//   the socket overflowed (ENOBUFS)    -> `overflow`: some refusals were not seen (the rule's
//                                        limit keeps a flood from getting here)
//   a malformed message                -> skipped

import CLibNL
import FoundationEssentials
import SegguardPolicy
import SegguardSystem

#if canImport(Glibc)
import Glibc
#endif

/// One refused packet, as nfnetlink_log describes it.
public struct GatewayRefusal: Sendable, Equatable {
    /// The owner of the sending socket (nil: no local socket, e.g. forwarded).
    public var uid: UInt32?
    /// The interface it was to leave through.
    public var outInterfaceIndex: Int32
    /// From the packet's IP header (nil when the copy was too short to say).
    public var destination: IPAddress?
    /// "tcp", "udp" or "protocol N".
    public var transport: String
    public var port: UInt16?
    public init(uid: UInt32?, outInterfaceIndex: Int32, destination: IPAddress?, transport: String, port: UInt16?) {
        (self.uid, self.outInterfaceIndex, self.destination, self.transport, self.port) = (uid, outInterfaceIndex, destination, transport, port)
    }
}

/// What one drain found.
public struct GatewayRefusals: Sendable, Equatable {
    public var refusals: [GatewayRefusal] = []
    /// Messages were lost (the socket's buffer overflowed).
    public var overflow = false
    public init(refusals: [GatewayRefusal] = [], overflow: Bool = false) {
        self.refusals = refusals
        self.overflow = overflow
    }
}

/// A source of refused gateway packets, watched on the agent's loop. `GatewayRefusalMonitor`
/// is the real one; SegguardTestFakes has a fake.
public protocol GatewayRefusalFeed: AnyObject {
    /// Readable when there is something to drain.
    var fd: Int32 { get }
    /// Reads everything pending without blocking.
    func drain() -> GatewayRefusals
}

/// Listens on one nfnetlink_log group. Used by one thread at a time.
public final class GatewayRefusalMonitor: GatewayRefusalFeed, @unchecked Sendable {
    private let socket: NetfilterSocket
    public var fd: Int32 { socket.fd }
    public let group: UInt16
    private var buffer = [UInt8](repeating: 0, count: 64 * 1024)

    /// Opens the socket in the calling thread's network namespace and binds the group, asking
    /// for the first `NftablesRuleset.refusalSnapLength` bytes of each packet.
    public init(group: UInt16 = NftablesRuleset.refusalLogGroup) throws(NftablesError) {
        self.group = group
        socket = try NetfilterSocket(purpose: "nfnetlink_log", receiveBuffer: 1024 * 1024, nonBlocking: false)
        // Answers within 1 s (the kernel answers at once; a bound socket never waits longer).
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        _ = setsockopt(socket.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        for (seq, message) in NflogMessages.configuration(group: group).enumerated() {
            if let problem = exchange(message, seq: UInt32(seq + 1)) {
                throw NftablesError(operation: "bind nfnetlink_log group \(group)", detail: problem)
            }
        }
    }

    /// Sends one config message (with an ack asked for) and reads the answer; nil when the
    /// kernel accepted it, else what it said.
    private func exchange(_ message: [UInt8], seq: UInt32) -> String? {
        var m = message
        NflogMessages.setSequence(&m, seq)
        var peer = sockaddr_nl()
        peer.nl_family = sa_family_t(AF_NETLINK)
        let sent = m.withUnsafeBytes { bytes in
            withUnsafePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(socket.fd, bytes.baseAddress, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_nl>.size)) }
            }
        }
        guard sent == m.count else { return "send: \(String(cString: strerror(errno)))" }
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(socket.fd, $0.baseAddress, $0.count, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                return "no answer: \(String(cString: strerror(errno)))"
            }
            guard let error = NflogMessages.ackError(buffer, count: n, seq: seq) else { continue }
            return error == 0 ? nil : "\(String(cString: strerror(-error))) (errno \(-error))"
        }
    }

    public func drain() -> GatewayRefusals {
        var out = GatewayRefusals()
        out.overflow = socket.drain(into: &buffer) { bytes, n in out.refusals += NflogMessages.packets(bytes, count: n) }
        return out
    }
}

/// nfnetlink_log's messages: the configuration the monitor sends and the packets it reads.
/// Pure: tests drive the parser with constructed messages.
enum NflogMessages {
    static let subsystem: UInt16 = 4  // NFNL_SUBSYS_ULOG
    static let packetMessage: UInt16 = 0, configMessage: UInt16 = 1  // NFULNL_MSG_*
    // NFULA_*
    static let outDeviceAttribute: UInt16 = 5, payloadAttribute: UInt16 = 9, uidAttribute: UInt16 = 11

    /// Bind the group, then copy the packet's first bytes (enough for the IP and transport
    /// headers) and send each message at once (qthreshold 1).
    static func configuration(group: UInt16) -> [[UInt8]] {
        let bind = attribute(1 /* NFULA_CFG_CMD */, [1 /* NFULNL_CFG_CMD_BIND */])
        var mode = bigEndian(UInt32(NftablesRuleset.refusalSnapLength))
        mode += [2 /* NFULNL_COPY_PACKET */, 0]
        let settings = attribute(2 /* NFULA_CFG_MODE */, mode) + attribute(5 /* NFULA_CFG_QTHRESH */, bigEndian(UInt32(1)))
        return [message(group: group, attributes: bind), message(group: group, attributes: settings)]
    }

    static func message(group: UInt16, attributes: [UInt8]) -> [UInt8] {
        let type = subsystem << 8 | configMessage
        let flags: UInt16 = 0x1 | 0x4  // NLM_F_REQUEST | NLM_F_ACK
        var m = native(UInt32(16 + 4 + attributes.count)) + native(type) + native(flags) + native(UInt32(0)) + native(UInt32(0))
        // nfgenmsg: family AF_UNSPEC, version 0, res_id = the group (big-endian).
        m += [0, 0] + bigEndian(group)
        return m + attributes
    }

    static func setSequence(_ m: inout [UInt8], _ seq: UInt32) {
        m.replaceSubrange(8..<12, with: native(seq))
    }

    /// The error code of the ack for `seq` in a datagram (0: accepted), nil when it has none.
    static func ackError(_ bytes: [UInt8], count: Int, seq: UInt32) -> Int32? {
        var off = 0
        while off + 16 <= count {
            let len = Int(readNative32(bytes, off)), type = readNative16(bytes, off + 4)
            guard len >= 16, off + len <= count else { return nil }
            if type == 2 /* NLMSG_ERROR */, readNative32(bytes, off + 8) == seq, len >= 20 {
                return Int32(bitPattern: readNative32(bytes, off + 16))
            }
            off += (len + 3) & ~3
        }
        return nil
    }

    /// The packets in one datagram (several netlink messages); others are skipped.
    static func packets(_ bytes: [UInt8], count: Int) -> [GatewayRefusal] {
        var out: [GatewayRefusal] = []
        var off = 0
        while off + 16 <= count {
            let len = Int(readNative32(bytes, off)), type = readNative16(bytes, off + 4)
            guard len >= 16, off + len <= count else { break }
            defer { off += (len + 3) & ~3 }
            guard type == subsystem << 8 | packetMessage, len >= 20 else { continue }
            let attributes = NftablesFingerprintReader.attributes(of: Array(bytes[(off + 20)..<(off + len)]))
            // A malformed (short) uid reads as unknown, never as root.
            let uid = attributes.first { $0.type == uidAttribute && $0.payload.count >= 4 }.map { bigEndianU32($0.payload) }
            let device = attributes.first { $0.type == outDeviceAttribute }.map { Int32(bitPattern: bigEndianU32($0.payload)) } ?? 0
            let data = attributes.first { $0.type == payloadAttribute }?.payload ?? []
            let (destination, transport, port) = header(data)
            out.append(GatewayRefusal(uid: uid, outInterfaceIndex: device, destination: destination, transport: transport, port: port))
        }
        return out
    }

    /// Destination, transport and destination port from an IPv4 or IPv6 header (no IPv6
    /// extension headers are walked: their transport is named by number, without a port).
    static func header(_ p: [UInt8]) -> (IPAddress?, String, UInt16?) {
        guard let first = p.first else { return (nil, "unknown", nil) }
        let version = first >> 4
        var proto: UInt8, headerLength: Int, destination: IPAddress?
        if version == 4, p.count >= 20 {
            proto = p[9]
            headerLength = Int(first & 0x0f) * 4
            destination = IPAddress(bytes: Array(p[16..<20]))
        } else if version == 6, p.count >= 40 {
            proto = p[6]
            headerLength = 40
            destination = IPAddress(bytes: Array(p[24..<40]))
        } else {
            return (nil, "unknown", nil)
        }
        let name = proto == 6 ? "tcp" : proto == 17 ? "udp" : "protocol \(proto)"
        guard proto == 6 || proto == 17, p.count >= headerLength + 4 else { return (destination, name, nil) }
        return (destination, name, UInt16(p[headerLength + 2]) << 8 | UInt16(p[headerLength + 3]))
    }

    static func attribute(_ type: UInt16, _ payload: [UInt8]) -> [UInt8] {
        var a = native(UInt16(4 + payload.count)) + native(type) + payload
        while a.count % 4 != 0 { a.append(0) }
        return a
    }

    static func native<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    static func bigEndian<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.bigEndian) { Array($0) } }
    static func readNative32(_ b: [UInt8], _ o: Int) -> UInt32 { UInt32(b[o]) | UInt32(b[o + 1]) << 8 | UInt32(b[o + 2]) << 16 | UInt32(b[o + 3]) << 24 }
    static func readNative16(_ b: [UInt8], _ o: Int) -> UInt16 { UInt16(b[o]) | UInt16(b[o + 1]) << 8 }
    static func bigEndianU32(_ b: [UInt8]) -> UInt32 {
        guard b.count >= 4 else { return 0 }
        return UInt32(b[0]) << 24 | UInt32(b[1]) << 16 | UInt32(b[2]) << 8 | UInt32(b[3])
    }
}
