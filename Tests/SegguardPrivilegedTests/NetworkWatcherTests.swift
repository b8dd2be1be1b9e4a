// Real-kernel tests: a network namespace with veth pairs per test, the watcher running inside
// it, links/addresses/routes changed with iproute2 and the snapshot and decision asserted.
// Without root they are skipped with the reason shown.

import Foundation
import SegguardDecision
import SegguardNetlink
import SegguardPolicy
import SegguardTestSupport
import Synchronization
import Testing

/// The policy these tests decide with: wired ports named sgw* (veth admitted), uplinks denied.
let wiredPolicy = Policy(
    name: "privileged-test",
    sites: [Site(name: "test-site", wired: [WiredRule(interfaces: ["sgw*"], linkKinds: ["veth"], location: "test:1")])],
    uplinks: UplinkRule(otherUplinks: .deny))

/// A watcher running in a fresh namespace, recording every snapshot; torn down by `close()`.
final class WatchedNamespace {
    let ns: TestNamespace
    let watcher: NetworkWatcher
    let recorder = SnapshotRecorder()

    init(receiveBufferSize: Int32 = 1 << 20, gate: Gate? = nil, setup: (TestNamespace) throws -> Void = { _ in }) throws {
        ns = try TestNamespace()
        do {
            try setup(ns)
            var hook: (@Sendable () -> Void)?
            if let gate { hook = { gate.pass() } }
            watcher = NetworkWatcher(options: .init(networkNamespace: ns.path, receiveBufferSize: receiveBufferSize, beforeRead: hook))
            let rec = recorder
            try watcher.start(onSnapshot: { rec.record($0) })
        } catch {
            ns.destroy()
            throw error
        }
    }

    func close() {
        watcher.stop()
        ns.destroy()
    }

    /// Waits for a snapshot whose decision under `policy` has `segment`.
    func waitDecision(_ segment: Segment, after gen: UInt64 = 0, policy: Policy = wiredPolicy) -> (NetworkSnapshot, Decision)? {
        guard let s = recorder.wait(after: gen, { SegmentDecider.decide($0, policy).segment == segment }) else { return nil }
        return (s, SegmentDecider.decide(s, policy))
    }

    var generation: UInt64 { recorder.latest?.generation ?? 0 }
}

@Suite("Network watcher on the real kernel", .serialized, .enabled(if: canCreateNamespaces, "needs root and iproute2 to create network namespaces"))
struct NetworkWatcherTests {
    @Test("wired veth with carrier is authorized-wired; carrier loss makes it unauthorized; carrier back re-authorizes")
    func carrierFollowsDecision() throws {
        let w = try WatchedNamespace { ns in try ns.addVeth("sgw0", index: 3101, peer: "peer0", index: 3102) }
        defer { w.close() }

        let (first, d1) = try #require(w.waitDecision(.authorizedWired))
        #expect(d1.authorizedInterfaces == ["sgw0"])
        #expect(d1.reason == "sgw0 has carrier and matches site 'test-site' wired rule (test:1)")
        let sgw = try #require(first["sgw0"])
        #expect(sgw.kind == .virtual && sgw.linkKind == "veth" && sgw.hasCarrier && sgw.index == 3101)

        try w.ns.ip("link", "set", "peer0", "down")
        let (lost, d2) = try #require(w.waitDecision(.unauthorized, after: first.generation))
        #expect(lost["sgw0"]?.hasCarrier == false)
        #expect(d2.reason == "no authorized path: sgw0 matches site 'test-site' wired rule (test:1) but has no carrier")

        try w.ns.ip("link", "set", "peer0", "up")
        let (_, d3) = try #require(w.waitDecision(.authorizedWired, after: lost.generation))
        #expect(d3.authorizedInterfaces == ["sgw0"])

        try w.ns.ip("link", "set", "sgw0", "down")
        let (_, d4) = try #require(w.waitDecision(.unauthorized, after: w.generation - 0))
        #expect(d4.reason == "no authorized path: sgw0 matches site 'test-site' wired rule (test:1) but is down")
    }

    @Test("a second uplink appearing makes the segment unauthorized, naming it; its removal re-authorizes")
    func secondUplink() throws {
        let w = try WatchedNamespace { ns in
            try ns.addVeth("sgw0", index: 3201, peer: "peer0", index: 3202)
            try ns.ip("addr", "add", "10.77.0.2/24", "dev", "sgw0")
            try ns.ip("route", "add", "default", "via", "10.77.0.1", "dev", "sgw0")
        }
        defer { w.close() }
        let (s1, _) = try #require(w.waitDecision(.authorizedWired))
        #expect(s1["sgw0"]?.defaultRoutes.first?.gateway == IPAddress("10.77.0.1"))

        // A tethered phone: another link, an address from its DHCP, a default route through it.
        try w.ns.addVeth("usbtest0", index: 3203, peer: "phone0", index: 3204)
        try w.ns.ip("addr", "add", "10.78.0.2/24", "dev", "usbtest0")
        try w.ns.ip("route", "add", "default", "via", "10.78.0.1", "dev", "usbtest0", "metric", "50")
        let (s2, d2) = try #require(w.waitDecision(.unauthorized, after: s1.generation))
        #expect(s2["usbtest0"]?.isUplink == true)
        #expect(d2.reason == "usbtest0 (virtual veth) is a second uplink (default route 0.0.0.0/0 via 10.78.0.1 metric 50) while on the My Number segment via sgw0 (uplinks.other_uplinks: deny)")
        #expect(d2.findings.first { $0.interface == "usbtest0" }?.status == .conflictingUplink)

        try w.ns.ip("route", "del", "default", "via", "10.78.0.1", "dev", "usbtest0", "metric", "50")
        let (s3, _) = try #require(w.waitDecision(.authorizedWired, after: s2.generation))
        #expect(s3["usbtest0"]?.defaultRoutes.isEmpty == true)
    }

    @Test("addresses and IPv4/IPv6 default routes are added and removed in the snapshot")
    func addressesAndRoutes() throws {
        let w = try WatchedNamespace { ns in try ns.addVeth("sgw0", index: 3301, peer: "peer0", index: 3302) }
        defer { w.close() }
        let (s0, _) = try #require(w.waitDecision(.authorizedWired))

        try w.ns.ip("addr", "add", "192.0.2.10/24", "dev", "sgw0")
        try w.ns.ip("-6", "addr", "add", "2001:db8::10/64", "dev", "sgw0", "nodad")
        try w.ns.ip("route", "add", "default", "via", "192.0.2.1", "dev", "sgw0")
        try w.ns.ip("-6", "route", "add", "default", "via", "2001:db8::1", "dev", "sgw0")
        let s1 = try #require(w.recorder.wait(after: s0.generation) { s in
            let i = s["sgw0"]
            return i?.defaultRoutes.count == 2 && i?.addresses.contains { $0.address == IPAddress("2001:db8::10") } == true
        })
        let sgw = try #require(s1["sgw0"])
        #expect(sgw.addresses.contains(InterfaceAddress(address: IPAddress("192.0.2.10")!, prefixLength: 24)))
        #expect(Set(sgw.defaultRoutes.map(\.description)) == ["0.0.0.0/0 via 192.0.2.1", "::/0 via 2001:db8::1 metric 1024"])

        // Removing the only IPv4 address makes the kernel drop the IPv4 default route without
        // RTM_DELROUTE; the snapshot must follow the kernel, not keep a stale uplink.
        try w.ns.ip("-6", "route", "del", "default", "via", "2001:db8::1", "dev", "sgw0")
        try w.ns.ip("addr", "del", "192.0.2.10/24", "dev", "sgw0")
        let s2 = try #require(w.recorder.wait(after: s1.generation) { s in
            let i = s["sgw0"]
            return i?.defaultRoutes.isEmpty == true && i?.addresses.contains { $0.address == IPAddress("192.0.2.10") } == false
        })
        #expect(try w.ns.ip("route", "show", "default").isEmpty, "the kernel has no IPv4 default route left either")
        #expect(try w.ns.ip("-6", "route", "show", "default").isEmpty)

        // Routes again, then the link goes down.
        try w.ns.ip("addr", "add", "192.0.2.10/24", "dev", "sgw0")
        try w.ns.ip("route", "add", "default", "via", "192.0.2.1", "dev", "sgw0")
        let s2b = try #require(w.recorder.wait(after: s2.generation) { $0["sgw0"]?.defaultRoutes.map(\.description) == ["0.0.0.0/0 via 192.0.2.1"] })

        // Taking the link down flushes its IPv4 routes without RTM_DELROUTE; the snapshot must drop it too.
        try w.ns.ip("link", "set", "sgw0", "down")
        let s3 = try #require(w.recorder.wait(after: s2b.generation) { $0["sgw0"]?.isAdminUp == false })
        #expect(s3["sgw0"]?.defaultRoutes.isEmpty == true)
        #expect(try w.ns.ip("route", "show", "default").isEmpty)

        try w.ns.ip("link", "del", "sgw0")
        let s4 = try #require(w.recorder.wait(after: s3.generation) { $0["sgw0"] == nil && $0["peer0"] == nil })
        #expect(s4.interfaces.map(\.name) == ["lo"], "deleting one end of a veth pair deletes both")
    }

    @Test("decisions come from netlink events: an idle network wakes the loop zero times, a change is seen at once")
    func eventDrivenNotPolled() throws {
        // No IPv6 in this namespace: its DAD and router solicitations would send late events.
        let w = try WatchedNamespace { ns in
            try runCommand(["ip", "netns", "exec", ns.name, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])
            try ns.addVeth("sgw0", index: 3401, peer: "peer0", index: 3402)
        }
        defer { w.close() }
        let (s1, _) = try #require(w.waitDecision(.authorizedWired))
        let before = w.watcher.statistics
        // Idle for 2 s: a polling loop would wake; this one blocks in poll(2) with no timeout.
        Thread.sleep(forTimeInterval: 2.0)
        let idle = w.watcher.statistics
        #expect(idle.wakeups == before.wakeups, "the watcher woke \(idle.wakeups - before.wakeups) times with no network change")
        #expect(idle.snapshots == before.snapshots)

        try w.ns.ip("link", "set", "peer0", "down")
        let (s2, d2) = try #require(w.waitDecision(.unauthorized, after: s1.generation))
        let after = w.watcher.statistics
        #expect(d2.reason.hasSuffix("but has no carrier"))
        #expect(after.messages > idle.messages, "the new snapshot was caused by netlink messages")
        #expect(after.emptyWakeups == 0, "every wakeup of the loop read a kernel message")
        #expect(s2.generation > s1.generation)
    }

    @Test("a receive-buffer overrun (ENOBUFS) triggers a full re-dump and the snapshot matches the kernel")
    func overrunResyncs() throws {
        let gate = Gate()
        let w = try WatchedNamespace(receiveBufferSize: 4096, gate: gate) { ns in
            try ns.addVeth("sgw0", index: 3501, peer: "peer0", index: 3502)
        }
        defer {
            gate.open()
            w.close()
        }
        let (s1, _) = try #require(w.waitDecision(.authorizedWired))
        #expect(w.watcher.statistics.resyncs == 0)

        // Hold the watcher thread while the kernel queues far more than 4 KiB of events.
        gate.close()
        var lines: [String] = []
        for i in 0..<40 {
            lines.append("link add sgx\(i) index \(3600 + 2 * i) type veth peer name sgxp\(i) index \(3601 + 2 * i)")
            lines.append("link set sgx\(i) up")
        }
        lines.append("link set peer0 down")
        try w.ns.ipBatch(lines)
        gate.open()

        let s2 = try #require(w.recorder.wait(after: s1.generation) { s in
            s.interfaces.filter { $0.name.hasPrefix("sgxp") }.count == 40 && s["sgw0"]?.hasCarrier == false
        })
        #expect(w.watcher.statistics.resyncs >= 1, "expected ENOBUFS and a re-dump with a 4 KiB buffer")
        #expect(SegmentDecider.decide(s2, wiredPolicy).segment == .unauthorized)
        #expect(s2.interfaces.count == 1 + 2 + 80)
    }
}

/// Blocks the watcher thread in its `beforeRead` hook while closed.
final class Gate: Sendable {
    private let condition = NSCondition()
    private let isClosed = Synchronization.Mutex(false)

    func close() { isClosed.withLock { $0 = true } }

    func open() {
        condition.lock()
        isClosed.withLock { $0 = false }
        condition.broadcast()
        condition.unlock()
    }

    func pass() {
        condition.lock()
        while isClosed.withLock({ $0 }) { condition.wait() }
        condition.unlock()
    }
}
