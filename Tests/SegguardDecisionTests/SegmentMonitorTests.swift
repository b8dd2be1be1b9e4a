// SegmentMonitor: what counts as a decision change, and policy replacement.

import SegguardDecision
import SegguardPolicy
import Testing

@Suite("SegmentMonitor")
struct SegmentMonitorTests {
    static let policy = Policy(name: "m", sites: [Site(name: "hq", wired: [WiredRule(interfaces: ["eth*"], location: "p:1")])])
    static func snapshot(carrier: Bool, generation: UInt64) -> NetworkSnapshot {
        NetworkSnapshot(interfaces: [InterfaceState(index: 2, name: "eth0", kind: .wired, hasCarrier: carrier)], generation: generation)
    }

    @Test("fail-closed until the first snapshot; the first decision is initial and not counted")
    func initialDecision() throws {
        var m = SegmentMonitor(policy: Self.policy)
        #expect(m.decision.segment == .unauthorized)
        #expect(m.decision.reason == "no network snapshot yet (netlink dump in progress)")
        #expect(m.hasDecided == false)
        let change = m.update(Self.snapshot(carrier: false, generation: 1))
        let c = try #require(change)
        #expect(c.isInitial)
        #expect(c.current.segment == .unauthorized)
        #expect(m.changes == 0)
    }

    @Test("the same decision again is no change; a different one is counted with its generation")
    func changes() throws {
        var m = SegmentMonitor(policy: Self.policy)
        _ = m.update(Self.snapshot(carrier: true, generation: 1))
        #expect(m.update(Self.snapshot(carrier: true, generation: 2)) == nil)
        let change = m.update(Self.snapshot(carrier: false, generation: 3))
        let c = try #require(change)
        #expect(!c.isInitial && c.generation == 3)
        #expect(c.previous.segment == .authorizedWired && c.current.segment == .unauthorized)
        #expect(c.current.reason == "no authorized path: eth0 matches site 'hq' wired rule (p:1) but has no carrier")
        #expect(m.changes == 1)
    }

    @Test("a new policy re-decides the last snapshot; before any snapshot it only replaces the policy")
    func policyReplacement() throws {
        var m = SegmentMonitor(policy: Self.policy)
        let other = Policy(name: "n", sites: [Site(name: "hq", wired: [WiredRule(interfaces: ["enp*"], location: "q:1")])])
        #expect(m.replacePolicy(other) == nil)
        #expect(m.policy.name == "n")
        _ = m.replacePolicy(Self.policy)
        _ = m.update(Self.snapshot(carrier: true, generation: 1))
        let change = m.replacePolicy(other)
        let c = try #require(change)
        #expect(c.generation == nil)
        #expect(c.current.reason == "no authorized path: no interface matches a wired rule and no Wi-Fi is associated to an authorized SSID")
    }
}
