// The launch gate's decisions, without a kernel: no nftables binding and no session
// tracker, so only what the Enforcer itself decides is under test.

import Foundation
import SegguardDecision
import SegguardEnforce
import SegguardPolicy
import SegguardWire
import Testing

@Suite("Launch gate")
struct EnforcerTests {
    static let authorized = Decision(segment: .authorizedWired, reason: "eth0 has carrier and matches site 'hq' wired rule (p:3)", authorizedInterfaces: ["eth0"], findings: [])
    static let unauthorized = Decision.failClosed("no authorized path: eth0 matches site 'hq' wired rule (p:3) but has no carrier")

    static func policy(gate: ControlMode = .enforce, termination: ControlMode = .enforce) -> Policy {
        Policy(
            name: "t", sites: [Site(name: "hq", wired: [WiredRule(interfaces: ["eth*"], location: "p:3")])],
            enforcement: EnforcementRule(launchGate: gate, sessionTermination: termination),
            profiles: [
                LaunchProfile(name: "mynumber", segment: .mynumber, command: ["/usr/bin/xfreerdp", "/v:192.0.2.10"], enforceArguments: ["-clipboard"]),
                LaunchProfile(name: "lgwan", segment: .lgwan,
                              configFiles: [.init(path: "~/.ICAClient/wfclient.ini", section: "WFClient", set: ["ClipboardAllowed": "Off"])]),
                LaunchProfile(name: "restricted", segment: .lgwan, command: ["/bin/true"], allowedGroups: ["segguard-no-such-group"]),
            ])
    }

    static let user = LaunchRequester(pid: 4242, uid: 1000, gid: 1000, groups: [1000])

    func enforcer(_ decision: Decision, _ policy: Policy) -> Enforcer {
        let e = Enforcer(binding: nil, tracker: nil, baselinePath: nil, logger: .init(label: "test"))
        e.update(decision: decision, policy: policy, eventNanos: monotonicNanos())
        return e
    }

    @Test("a My Number profile off-segment is refused with the decision's reason, and the refusal is an event")
    func refusedOffSegment() throws {
        let e = enforcer(Self.unauthorized, Self.policy())
        let r = e.launch(profileName: "mynumber", command: [], requester: Self.user)
        #expect(!r.allowed)
        #expect(r.reason == "profile 'mynumber' needs the My Number segment: no authorized path: eth0 matches site 'hq' wired rule (p:3) but has no carrier")
        #expect(r.command.isEmpty)
        let denial = try #require(e.events(denialsOnly: true).last)
        #expect(denial.kind == .launchRefused && denial.profile == "mynumber" && denial.uid == 1000 && denial.reason == r.reason)
    }

    @Test("a profile name that could forge log lines is refused before it is recorded")
    func badProfileName() throws {
        let e = enforcer(Self.authorized, Self.policy())
        let r = e.launch(profileName: "x\nsegguardd: decision=authorized", command: [], requester: Self.user)
        #expect(!r.allowed)
        #expect(r.reason == "'x?segguardd: decision=authorized' is not a profile name (letters, digits, - and _, at most 64)")
        #expect(try #require(e.events().last).reason == r.reason)
    }

    @Test("an unknown profile is refused naming the profiles that exist")
    func unknownProfile() {
        let r = enforcer(Self.authorized, Self.policy()).launch(profileName: "mynumbr", command: ["/bin/sh"], requester: Self.user)
        #expect(!r.allowed)
        #expect(r.reason == "unknown profile 'mynumbr' (profiles in the policy: mynumber, lgwan, restricted)")
    }

    @Test("LGWAN profiles start anywhere with the launcher's command; config edits are handed to the launcher")
    func lgwanAnywhere() {
        let r = enforcer(Self.unauthorized, Self.policy()).launch(profileName: "lgwan", command: ["/opt/Citrix/ICAClient/selfservice"], requester: Self.user)
        #expect(r.allowed)
        #expect(r.sessionID == nil)
        #expect(r.command == ["/opt/Citrix/ICAClient/selfservice"])
        #expect(r.configFiles == [ConfigFileEdit(path: "~/.ICAClient/wfclient.ini", section: "WFClient", set: ["ClipboardAllowed": "Off"])])
    }

    @Test("allowed groups: a user outside them is refused")
    func groups() {
        let r = enforcer(Self.authorized, Self.policy()).launch(profileName: "restricted", command: [], requester: Self.user)
        #expect(!r.allowed)
        #expect(r.reason == "uid 1000 is not in a group allowed to launch profile 'restricted' (segguard-no-such-group)")
    }

    @Test("on the segment a My Number launch needs session tracking: without cgroup v2 it fails closed")
    func needsTracking() {
        let r = enforcer(Self.authorized, Self.policy()).launch(profileName: "mynumber", command: [], requester: Self.user)
        #expect(!r.allowed)
        #expect(r.reason == "cannot track a My Number session: no cgroup v2 on this system")
    }

    @Test("with termination off the profile's command plus enforced arguments is returned untracked")
    func terminationOff() {
        let r = enforcer(Self.authorized, Self.policy(termination: .off)).launch(profileName: "mynumber", command: ["/bin/evil"], requester: Self.user)
        #expect(r.allowed)
        #expect(r.command == ["/usr/bin/xfreerdp", "/v:192.0.2.10", "-clipboard"], "the profile's command wins over the launcher's")
        #expect(r.sessionID == nil)
    }

    @Test("audit mode: the launch goes ahead, the would-be refusal is an event")
    func auditGate() throws {
        let e = enforcer(Self.unauthorized, Self.policy(gate: .audit, termination: .off))
        let r = e.launch(profileName: "mynumber", command: [], requester: Self.user)
        #expect(r.allowed)
        #expect(r.reason.hasPrefix("audit mode: profile 'mynumber' needs the My Number segment"))
        let kinds = e.events().map(\.kind)
        #expect(kinds == [.launchWouldBeRefused, .launchAllowed])
        #expect(e.events(denialsOnly: true).map(\.kind) == [.launchWouldBeRefused])
    }

    @Test("client config files: keys replaced in their section, missing ones and sections added, other lines kept")
    func configRewrite() {
        let edit = ConfigFileEdit(path: "x", section: "WFClient", set: ["ClipboardAllowed": "Off", "CDMAllowed": "Off"])
        let before = "[Other]\nClipboardAllowed=On\n[WFClient]\nVersion=2\nClipboardAllowed=On\n"
        #expect(edit.rewrite(before) == "[Other]\nClipboardAllowed=On\n[WFClient]\nVersion=2\nClipboardAllowed=Off\nCDMAllowed=Off\n")
        #expect(edit.rewrite("") == "[WFClient]\nCDMAllowed=Off\nClipboardAllowed=Off\n")
        // A later duplicate would win in last-wins parsers: it is dropped. CRLF lines are recognised.
        let dup = "[WFClient]\r\nClipboardAllowed=On\r\nOther=1\r\nClipboardAllowed=On\r\n"
        #expect(ConfigFileEdit(path: "x", section: "WFClient", set: ["ClipboardAllowed": "Off"]).rewrite(dup)
            == "[WFClient]\nClipboardAllowed=Off\nOther=1\n")
        let flat = ConfigFileEdit(path: "x", section: nil, set: ["disableclipboard": "1"])
        #expect(flat.rewrite("[remmina]\nname=vdi\n") == "disableclipboard=1\n[remmina]\nname=vdi\n")
    }
}
