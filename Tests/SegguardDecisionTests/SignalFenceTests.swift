// The office-area signal fence: enter at the threshold, leave only after staying below the
// leave level for the set time. Each edge, on a hand-driven clock.

import Testing

import SegguardDecision
import SegguardPolicy

@Suite("Office-area signal fence")
struct SignalFenceTests {
    static let fence = SignalFence(enterDBM: -70, leaveBelowDBM: -75, leaveAfterSeconds: 10)

    func step(_ old: SignalFenceState?, _ signal: Int32?, at now: Double) -> (SignalFenceState, Double?) {
        SignalFenceState.step(old, fence: Self.fence, signal: signal, now: now)
    }

    @Test("a new association enters exactly at the threshold, not below it; an unknown signal is outside")
    func enter() {
        #expect(step(nil, -70, at: 0).0.inside)
        #expect(!step(nil, -71, at: 0).0.inside)
        #expect(!step(nil, nil, at: 0).0.inside)
        // Outside, a signal between the leave and the enter level does not let it in.
        #expect(!step(step(nil, -80, at: 0).0, -72, at: 1).0.inside)
    }

    @Test("inside, the signal dancing around the entry threshold changes nothing (no flapping)")
    func noFlapping() {
        var s = step(nil, -70, at: 0).0
        for (t, dBm) in [(1.0, -71), (2, -69), (3, -74), (4, -70), (5, -75)] as [(Double, Int32)] {
            let (next, recheck) = step(s, dBm, at: t)
            #expect(next.inside, "at \(t) s, \(dBm) dBm")
            #expect(recheck == nil)
            s = next
        }
    }

    @Test("inside, below the leave level: still inside until it has lasted leave_after_seconds, with the moment to look again")
    func leaveAfter() {
        let inside = step(nil, -60, at: 0).0
        let (fading, recheck) = step(inside, -80, at: 100)
        #expect(fading.inside && fading.belowSince == 100 && recheck == 110)
        let (still, recheck2) = step(fading, -82, at: 105)
        #expect(still.inside && still.belowSince == 100 && recheck2 == 110)
        #expect(!step(still, -82, at: 110).0.inside)
        // Back above the leave level before the time is up: the fade is forgotten.
        let (back, none) = step(still, -74, at: 108)
        #expect(back.inside && back.belowSince == nil && none == nil)
        #expect(step(back, -80, at: 109).1 == 119)
        // A signal momentarily unknown while inside is a fade too, not an exit.
        let (unknown, at) = step(back, nil, at: 200)
        #expect(unknown.inside && at == 210)
        #expect(!step(unknown, nil, at: 210).0.inside)
    }

    @Test("the decision: a Wi-Fi rule with a fence authorizes only while the fence says inside, and names the signal")
    func decision() {
        let policy = Policy(name: "fence", sites: [Site(name: "hq", wireless: [
            WirelessRule(ssid: SSID("mn-office"), fence: Self.fence, location: "f.yaml:4"),
        ])])
        var w = wifi(index: 3, ssid: SSID("mn-office"), bssid: MAC.mainAP1)
        w.wireless?.signalDBM = -80
        w.signalFences = [SignalFenceState(fence: Self.fence, inside: false, signalDBM: -80)]
        let out = SegmentDecider.decide(NetworkSnapshot(interfaces: [loopback(), w]), policy)
        #expect(out.segment == .unauthorized)
        #expect(out.reason.contains("the signal (-80 dBm) places it outside the office area (enter at -70 dBm, leave below -75 dBm after 10 s)"), "\(out.reason)")
        w.signalFences = [SignalFenceState(fence: Self.fence, inside: true, signalDBM: -72)]
        #expect(SegmentDecider.decide(NetworkSnapshot(interfaces: [loopback(), w]), policy).segment == .authorizedWireless)
        w.signalFences = []
        #expect(SegmentDecider.decide(NetworkSnapshot(interfaces: [loopback(), w]), policy).segment == .unauthorized, "no fence state: outside")
    }
}
