// nfnetlink_log messages as the kernel sends them for the table's `refused` rules
// (constructed byte for byte), through the monitor's parser; and the configuration it sends.

import Foundation
import SegguardPolicy
@testable import SegguardEnforce
import Testing

private func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xff), UInt8(v >> 8)] }
private func le32(_ v: UInt32) -> [UInt8] { le16(UInt16(v & 0xffff)) + le16(UInt16(v >> 16)) }
private func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
private func be32(_ v: UInt32) -> [UInt8] { be16(UInt16(v >> 16)) + be16(UInt16(v & 0xffff)) }

/// One NFULNL_MSG_PACKET: header, nfgenmsg (family, group), attributes.
private func packet(family: UInt8 = 2, _ attributes: [(UInt16, [UInt8])]) -> [UInt8] {
    var body: [UInt8] = [family, 0] + be16(4747)
    for (t, v) in attributes {
        body += le16(UInt16(4 + v.count)) + le16(t) + v
        while body.count % 4 != 0 { body.append(0) }
    }
    return le32(UInt32(16 + body.count)) + le16(4 << 8 | 0) + le16(0) + le32(0) + le32(0) + body
}

/// An IPv4 header (20 bytes) to `to` with `proto`, then a transport header to `port`.
private func ipv4(to: [UInt8], proto: UInt8, port: UInt16) -> [UInt8] {
    var h: [UInt8] = [0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, proto, 0, 0, 10, 62, 1, 2] + to
    h += be16(40000) + be16(port) + [UInt8](repeating: 0, count: 16)
    return h
}

@Suite("nfnetlink_log refusals")
struct GatewayRefusalTests {
    @Test("a refused TCP packet: the socket's uid, the output interface, destination and port")
    func tcpPacket() {
        let m = packet([(1, be16(0x0800) + [3, 0]), (5, be32(3900)), (11, be32(1000)), (14, be32(1000)),
                        (9, ipv4(to: [10, 62, 9, 1], proto: 6, port: 8443))])
        #expect(NflogMessages.packets(m, count: m.count) == [
            GatewayRefusal(uid: 1000, outInterfaceIndex: 3900, destination: IPAddress("10.62.9.1"), transport: "tcp", port: 8443)
        ])
    }

    @Test("UDP, IPv6, another protocol, no uid (no local socket), two in one datagram")
    func variants() {
        var v6: [UInt8] = [0x60, 0, 0, 0, 0, 8, 17, 64] + [UInt8](repeating: 0, count: 16)
        v6 += [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1]
        v6 += be16(5000) + be16(3389) + [0, 8, 0, 0]
        let a = packet(family: 10, [(5, be32(7)), (9, v6), (11, be32(0))])
        let b = packet([(5, be32(8)), (9, ipv4(to: [192, 0, 2, 10], proto: 1, port: 0))])
        let bytes = a + b
        #expect(NflogMessages.packets(bytes, count: bytes.count) == [
            GatewayRefusal(uid: 0, outInterfaceIndex: 7, destination: IPAddress("2001:db8::1"), transport: "udp", port: 3389),
            GatewayRefusal(uid: nil, outInterfaceIndex: 8, destination: IPAddress("192.0.2.10"), transport: "protocol 1", port: nil),
        ])
    }

    @Test("malformed input: a length past the datagram, a truncated header, another message type; nothing invented")
    func malformed() {
        var long = packet([(5, be32(1))])
        long.replaceSubrange(0..<4, with: le32(4096))
        #expect(NflogMessages.packets(long, count: long.count).isEmpty)
        let short = packet([(5, be32(2)), (9, [0x45, 0, 0])])
        #expect(NflogMessages.packets(short, count: short.count) == [GatewayRefusal(uid: nil, outInterfaceIndex: 2, destination: nil, transport: "unknown", port: nil)])
        var other = packet([(5, be32(3))])
        other.replaceSubrange(4..<6, with: le16(10 << 8 | 6))
        #expect(NflogMessages.packets(other, count: other.count).isEmpty)
        #expect(NflogMessages.packets([1, 2, 3], count: 3).isEmpty)
        let shortUID = packet([(5, be32(4)), (11, [0, 0])])
        #expect(NflogMessages.packets(shortUID, count: shortUID.count).first?.uid == nil, "a short uid is unknown, not root")
    }

    @Test("configuration: bind the group (its number in res_id, big-endian), then copy the headers, one message at a time, each acked")
    func configuration() {
        let messages = NflogMessages.configuration(group: 4747)
        #expect(messages.count == 2)
        for m in messages {
            #expect(Int(NftablesFingerprintReader.readU32(m, 0)) == m.count)
            #expect(NftablesFingerprintReader.readU16(m, 4) == 4 << 8 | 1, "NFULNL_MSG_CONFIG")
            #expect(NftablesFingerprintReader.readU16(m, 6) == 0x5, "request, ack")
            #expect(Array(m[18..<20]) == be16(4747))
        }
        #expect(Array(messages[0][20...]) == le16(5) + le16(1) + [1, 0, 0, 0], "NFULA_CFG_CMD bind")
        #expect(Array(messages[1][20..<32]) == le16(10) + le16(2) + be32(UInt32(NftablesRuleset.refusalSnapLength)) + [2, 0, 0, 0], "copy packet")
        var ack = le32(36) + le16(2) + le16(0) + le32(2) + le32(0) + le32(UInt32(bitPattern: -16)) + [UInt8](repeating: 0, count: 16)
        #expect(NflogMessages.ackError(ack, count: ack.count, seq: 2) == -16)
        #expect(NflogMessages.ackError(ack, count: ack.count, seq: 1) == nil)
        ack.replaceSubrange(16..<20, with: le32(0))
        #expect(NflogMessages.ackError(ack, count: ack.count, seq: 2) == 0)
    }

    @Test("a gateway's entry says which refused packets went to a listed port")
    func listedPorts() throws {
        let g = Gateway(prefix: try #require(IPPrefix("10.62.9.1/32")), ports: [8443], transport: .tcp)
        #expect(g.allows(transport: "tcp", port: 8443))
        #expect(!g.allows(transport: "tcp", port: 80))
        #expect(!g.allows(transport: "udp", port: 8443))
        #expect(!g.allows(transport: "tcp", port: nil))
        #expect(Gateway(prefix: g.prefix, ports: [], transport: .both).allows(transport: "udp", port: nil))
    }
}
