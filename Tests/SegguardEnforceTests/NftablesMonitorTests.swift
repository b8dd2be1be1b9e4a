// nf_tables notifications as the kernel sends them (constructed byte for byte), through the
// monitor's parser: which transactions count as foreign changes to the binding's table.

import Foundation
@testable import SegguardEnforce
import Testing

/// One netlink message of the nf_tables subsystem: header, nfgenmsg, attributes.
private func message(_ type: UInt8, family: UInt8 = 1, _ attributes: [(UInt16, [UInt8])]) -> [UInt8] {
    var body: [UInt8] = [family, 0, 0, 0]
    for (t, v) in attributes {
        body += le16(UInt16(4 + v.count)) + le16(t) + v
        while body.count % 4 != 0 { body.append(0) }
    }
    return le32(UInt32(16 + body.count)) + le16(10 << 8 | UInt16(type)) + le16(0) + le32(1) + le32(0) + body
}

private func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xff), UInt8(v >> 8)] }
private func le32(_ v: UInt32) -> [UInt8] { le16(UInt16(v & 0xffff)) + le16(UInt16(v >> 16)) }
private func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)] }
private func cString(_ s: String) -> [UInt8] { Array(s.utf8) + [0] }

private let newRule: UInt8 = 6, delTable: UInt8 = 2, newChain: UInt8 = 3, newGen: UInt8 = 15

private func generation(_ id: UInt32, pid: Int32, name: String) -> [UInt8] {
    message(newGen, family: 0, [(1, be32(id)), (2, be32(UInt32(bitPattern: pid))), (3, cString(name))])
}

/// The monitor's parser for table inet segguard, with one own thread (777).
private func monitor(own: Set<Int32> = [777]) throws -> NftablesNotificationParser {
    NftablesNotificationParser(table: "segguard") { pid, _ in own.contains(pid) }
}

@Suite("nf_tables notifications")
struct NftablesMonitorTests {
    @Test("a rule added to our table by another task, then its generation: one foreign change with the task's pid and name")
    func foreignRule() throws {
        var m = try monitor()
        let bytes = message(newRule, [(1, cString("segguard")), (2, cString("output"))]) + generation(41, pid: 4242, name: "nft")
        #expect(m.parse(bytes, count: bytes.count) == [TableChange(generation: 41, pid: 4242, process: "nft")])
    }

    @Test("our own transactions, other tables, other families and generations that touched nothing are not foreign changes")
    func notForeign() throws {
        var m = try monitor()
        var bytes = message(newRule, [(1, cString("segguard"))]) + generation(1, pid: 777, name: "sg-agent")  // ours
        bytes += message(newRule, [(1, cString("filter"))]) + generation(2, pid: 4242, name: "nft")  // another table
        bytes += message(newRule, family: 2, [(1, cString("segguard"))]) + generation(3, pid: 4242, name: "nft")  // table ip segguard
        bytes += message(newRule, [(1, cString("segguard2"))]) + generation(4, pid: 4242, name: "nft")  // a longer name
        bytes += generation(5, pid: 4242, name: "nft")  // nothing touched
        #expect(m.parse(bytes, count: bytes.count).isEmpty)
    }

    @Test("a transaction read over two datagrams; the table deleted; several transactions in one datagram")
    func acrossDatagrams() throws {
        var m = try monitor()
        let first = message(newChain, [(1, cString("segguard"))])
        #expect(m.parse(first, count: first.count).isEmpty)
        let second = generation(9, pid: 31337, name: "firewalld")
        #expect(m.parse(second, count: second.count) == [TableChange(generation: 9, pid: 31337, process: "firewalld")])

        let both = message(delTable, [(1, cString("segguard"))]) + generation(10, pid: 1, name: "nft") + message(newRule, [(1, cString("segguard"))])
            + generation(11, pid: 2, name: "iptables-nft")
        #expect(m.parse(both, count: both.count).map(\.generation) == [10, 11])
    }

    @Test("malformed messages are skipped: a short header, a length past the end, another subsystem")
    func malformed() throws {
        var m = try monitor()
        var bytes = message(newRule, [(1, cString("segguard"))])
        bytes[0] = 200  // claims more bytes than there are
        #expect(m.parse(bytes, count: bytes.count).isEmpty)
        let rtnl = le32(20) + le16(16) + le16(0) + le32(0) + le32(0) + [0, 0, 0, 0]
        #expect(m.parse(rtnl + generation(1, pid: 5, name: "x"), count: rtnl.count + 36).isEmpty)
        #expect(m.parse([1, 2, 3], count: 3).isEmpty)
    }
}
