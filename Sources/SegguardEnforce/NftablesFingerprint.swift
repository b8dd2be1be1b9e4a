// What the kernel holds of the binding's table, read straight from nf_tables over netlink: the
// table's flags, each chain's definition and each rule's expressions and comment, in order,
// as bytes (handles and counter values left out). Owns one NETLINK_NETFILTER socket, opened in
// the namespace of the thread that creates it. Used by the periodic check: two fingerprints of
// the same table compare equal until someone changes it — a rule inserted, rewritten in place
// (its comment kept), the chain flushed or re-hooked, the table made dormant. It reads three
// small dumps and fills no cache, so the check costs the next decision nothing.
//
// Failure table:
//   socket cannot be opened      -> init throws (the binding cannot be made)
//   the table is absent          -> nil
//   a dump is interrupted        -> read again (at most 3 times), then an error
//   any other netlink error      -> NftablesError naming the request and errno

import CLibNL
import FoundationEssentials
import SegguardSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Reads a table's fingerprint from the kernel.
final class NftablesFingerprintReader: Sendable {
    private let fd: Int32
    private let sequence = Mutex<UInt32>(1)

    // nf_tables' netlink constants (<linux/netfilter/nf_tables.h>, <linux/netfilter/nfnetlink.h>).
    static let subsystem: UInt16 = 10  // NFNL_SUBSYS_NFTABLES
    static let getTable: UInt16 = 1, getChain: UInt16 = 4, getRule: UInt16 = 7  // NFT_MSG_GET*
    static let tableName: UInt16 = 1, tableFlags: UInt16 = 2  // NFTA_TABLE_*
    static let chainTable: UInt16 = 1, chainHandle: UInt16 = 2, chainUse: UInt16 = 6, chainCounters: UInt16 = 8, chainID: UInt16 = 11  // NFTA_CHAIN_*
    static let ruleTable: UInt16 = 1, ruleHandle: UInt16 = 3, ruleExpressions: UInt16 = 4, rulePosition: UInt16 = 6, ruleID: UInt16 = 9,
               rulePositionID: UInt16 = 10, ruleChainID: UInt16 = 11  // NFTA_RULE_*
    static let exprName: UInt16 = 1  // NFTA_EXPR_NAME
    static let familyInet: UInt8 = 1  // NFPROTO_INET

    init() throws(NftablesError) {
        do {
            fd = try systemCall("socket(AF_NETLINK, NETLINK_NETFILTER)") {
                socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 12 /* NETLINK_NETFILTER */)
            }
        } catch {
            throw NftablesError(operation: "open a netlink socket for the table check", detail: error.description)
        }
    }

    deinit { close(fd) }

    /// The fingerprint of `inet <table>`, or nil when it does not exist.
    func read(table: String) throws(NftablesError) -> [UInt8]? {
        for _ in 0..<3 {
            do throws(ReadError) {
                guard let flags = try request(Self.getTable, dump: false, attributes: [(Self.tableName, cString(table))]).first else { return nil }
                var out: [UInt8] = Array("T".utf8) + Self.attributes(of: flags).filter { $0.type == Self.tableFlags }.flatMap(\.bytes)
                for chain in try request(Self.getChain, dump: true, attributes: [(Self.chainTable, cString(table))]) {
                    // Everything but the handle, the use count and the counters.
                    out += Array("C".utf8)
                    out += Self.attributes(of: chain).filter { ![Self.chainHandle, Self.chainUse, Self.chainCounters, Self.chainID].contains($0.type) }
                        .flatMap(\.bytes)
                }
                for rule in try request(Self.getRule, dump: true, attributes: [(Self.ruleTable, cString(table))]) {
                    out += Array("R".utf8)
                    for a in Self.attributes(of: rule) {
                        switch a.type {
                        case Self.ruleHandle, Self.rulePosition, Self.ruleID, Self.rulePositionID, Self.ruleChainID: continue
                        case Self.ruleExpressions: out += Self.withoutCounterValues(a.payload)
                        default: out += a.bytes
                        }
                    }
                }
                return out
            } catch {
                switch error {
                case .interrupted:
                    continue
                case .failed(let e):
                    if e == ENOENT { return nil }
                    throw NftablesError(operation: "read table inet \(table) from the kernel", detail: "\(String(cString: strerror(e))) (errno \(e))")
                }
            }
        }
        throw NftablesError(operation: "read table inet \(table) from the kernel", detail: "the ruleset kept changing during the dump")
    }

    enum ReadError: Error { case interrupted, failed(Int32) }

    /// Sends one nf_tables request and returns the payloads (after the 4-byte nfgenmsg) of the replies.
    private func request(_ message: UInt16, dump: Bool, attributes: [(UInt16, [UInt8])]) throws(ReadError) -> [[UInt8]] {
        let seq = sequence.withLock { s -> UInt32 in
            s &+= 1
            return s
        }
        var body: [UInt8] = [Self.familyInet, 0, 0, 0]  // nfgenmsg: family, version 0, res_id 0
        for (type, value) in attributes {
            body += Self.u16(UInt16(4 + value.count)) + Self.u16(type) + value
            while body.count % 4 != 0 { body.append(0) }
        }
        let flags: UInt16 = 0x1 | (dump ? 0x300 : 0x4)  // NLM_F_REQUEST | NLM_F_DUMP or NLM_F_ACK
        var packet = Self.u32(UInt32(16 + body.count)) + Self.u16(Self.subsystem << 8 | message) + Self.u16(flags) + Self.u32(seq) + Self.u32(0) + body
        var kernel = sockaddr_nl()
        kernel.nl_family = sa_family_t(AF_NETLINK)
        let sent = packet.withUnsafeMutableBytes { raw in
            withUnsafePointer(to: &kernel) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, raw.baseAddress, raw.count, 0, $0, socklen_t(MemoryLayout<sockaddr_nl>.size)) }
            }
        }
        guard sent == packet.count else { throw .failed(errno) }
        var replies: [[UInt8]] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .failed(errno)
            }
            var off = 0
            while off + 16 <= n {
                let len = Int(Self.readU32(buffer, off)), type = Self.readU16(buffer, off + 4), mflags = Self.readU16(buffer, off + 6)
                let mseq = Self.readU32(buffer, off + 8)
                guard len >= 16, off + len <= n else { throw .failed(EPROTO) }
                defer { off += (len + 3) & ~3 }
                guard mseq == seq else { continue }
                if mflags & 0x10 != 0 { throw .interrupted }  // NLM_F_DUMP_INTR
                switch type {
                case 3:  // NLMSG_DONE
                    return replies
                case 2:  // NLMSG_ERROR: an errno (0: the ACK of a request that is not a dump)
                    let code = Int32(bitPattern: Self.readU32(buffer, off + 16))
                    if code != 0 { throw .failed(-code) }
                    if !dump { return replies }
                default:
                    replies.append(Array(buffer[(off + 16 + 4)..<(off + len)]))
                }
            }
        }
    }

    struct Attribute {
        var type: UInt16
        /// Header and payload, as in the message (padding excluded).
        var bytes: [UInt8]
        var payload: [UInt8] { Array(bytes.dropFirst(4)) }
    }

    /// The top-level attributes of a payload (malformed tails are ignored).
    static func attributes(of payload: [UInt8]) -> [Attribute] {
        var out: [Attribute] = []
        var off = 0
        while off + 4 <= payload.count {
            let len = Int(readU16(payload, off))
            guard len >= 4, off + len <= payload.count else { break }
            out.append(Attribute(type: readU16(payload, off + 2) & 0x3fff, bytes: Array(payload[off..<(off + len)])))
            off += (len + 3) & ~3
        }
        return out
    }

    /// A rule's expression list with each counter's packet and byte values left out.
    static func withoutCounterValues(_ list: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        for element in attributes(of: list) {
            let inner = attributes(of: element.payload)
            if let name = inner.first(where: { $0.type == exprName }), String(decoding: name.payload.prefix { $0 != 0 }, as: UTF8.self) == "counter" {
                out += Array("counter".utf8)
            } else {
                out += element.bytes
            }
        }
        return out
    }

    private func cString(_ s: String) -> [UInt8] { Array(s.utf8) + [0] }
    static func u16(_ v: UInt16) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    static func u32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    static func readU16(_ b: [UInt8], _ o: Int) -> UInt16 { UInt16(b[o]) | UInt16(b[o + 1]) << 8 }
    static func readU32(_ b: [UInt8], _ o: Int) -> UInt32 { UInt32(readU16(b, o)) | UInt32(readU16(b, o + 2)) << 16 }
}
