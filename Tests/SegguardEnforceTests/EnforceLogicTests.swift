// The enforcement rules without a kernel: the launch gate's verdicts, the grace period's
// state, the binding controller against a fake binding, and the launcher's config rewrite.

import Foundation
import Logging
import SegguardDecision
@testable import SegguardEnforce
import SegguardPolicy
import SegguardSystem
import SegguardTestFakes
import SegguardWire
import Testing

@Suite("Launch gate")
struct LaunchGateTests {
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
                LaunchProfile(name: "restricted", segment: .lgwan, command: ["/bin/true"], allowedGroups: ["staff"]),
            ])
    }

    static let user = PeerCredentials(pid: 4242, uid: 1000, gid: 1000, groups: [1000])

    func verdict(_ profile: String, _ decision: Decision, _ policy: Policy = Self.policy(), command: [String] = [], requester: PeerCredentials = Self.user) -> LaunchVerdict {
        LaunchGate.evaluate(profileName: profile, command: command, requester: requester, decision: decision, policy: policy,
                            gid: { $0 == "staff" ? 50 : nil })
    }

    @Test("a My Number profile off-segment is refused with the decision's reason")
    func refusedOffSegment() {
        #expect(verdict("mynumber", Self.unauthorized)
            == .refuse("profile 'mynumber' needs the My Number segment: no authorized path: eth0 matches site 'hq' wired rule (p:3) but has no carrier", .launchOffSegment))
    }

    @Test("off the segment because of a second uplink, the user is told to disconnect it; otherwise to connect to the office network")
    func refusalNotice() {
        let tethered = Decision(segment: .unauthorized, reason: "usb0 is a second uplink", authorizedInterfaces: [],
                                findings: [InterfaceFinding(interface: "eth0", status: .authorized, detail: "ok", site: "hq"),
                                           InterfaceFinding(interface: "usb0", status: .conflictingUplink, detail: "default route")])
        #expect(verdict("mynumber", tethered) == .refuse("profile 'mynumber' needs the My Number segment: usb0 is a second uplink", .launchSecondUplink))
        #expect(LaunchGate.offSegmentNotice(Self.unauthorized) == .launchOffSegment)
    }

    @Test("a profile name that could forge log lines is refused, shown with its controls replaced")
    func badProfileName() {
        #expect(verdict("x\nsegguardd: decision=authorized", Self.authorized)
            == .refuse("'x?segguardd: decision=authorized' is not a profile name (letters, digits, - and _, at most 64)", .launchBadProfile))
        #expect(!LaunchGate.isProfileName(String(repeating: "a", count: 65)) && LaunchGate.isProfileName("mynumber-citrix_2"))
    }

    @Test("an unknown profile is refused naming the profiles that exist")
    func unknownProfile() {
        #expect(verdict("mynumbr", Self.authorized, command: ["/bin/sh"]) == .refuse("unknown profile 'mynumbr' (profiles in the policy: mynumber, lgwan, restricted)", .launchBadProfile))
    }

    @Test("LGWAN profiles start anywhere with the launcher's command, untracked")
    func lgwanAnywhere() throws {
        guard case let .allow(profile, command, _, track, wouldRefuse) = verdict("lgwan", Self.unauthorized, command: ["/opt/Citrix/ICAClient/selfservice"]) else {
            Issue.record("refused")
            return
        }
        #expect(profile.name == "lgwan" && command == ["/opt/Citrix/ICAClient/selfservice"] && !track && wouldRefuse == nil)
    }

    @Test("allowed groups: a member (primary or supplementary) and root pass, others are refused")
    func groups() {
        #expect(verdict("restricted", Self.authorized) == .refuse("uid 1000 is not in a group allowed to launch profile 'restricted' (staff)", .launchNotAllowed))
        if case .refuse = verdict("restricted", Self.authorized, requester: PeerCredentials(pid: 1, uid: 1000, gid: 1000, groups: [50])) { Issue.record("member refused") }
        if case .refuse = verdict("restricted", Self.authorized, requester: PeerCredentials(pid: 1, uid: 0, gid: 0, groups: [])) { Issue.record("root refused") }
    }

    @Test("on the segment a My Number launch is to be tracked; with termination off it is not")
    func tracking() {
        guard case .allow(_, _, _, true, _) = verdict("mynumber", Self.authorized) else {
            Issue.record("not to be tracked")
            return
        }
        guard case let .allow(_, command, _, track, _) = verdict("mynumber", Self.authorized, Self.policy(termination: .off), command: ["/bin/evil"]) else {
            Issue.record("refused")
            return
        }
        #expect(command == ["/usr/bin/xfreerdp", "/v:192.0.2.10", "-clipboard"], "the profile's command wins over the launcher's")
        #expect(!track)
    }

    @Test("audit mode: allowed, with the would-be refusal; off: allowed, said in the reason")
    func auditAndOff() {
        guard case let .allow(_, _, reason, _, wouldRefuse) = verdict("mynumber", Self.unauthorized, Self.policy(gate: .audit)) else {
            Issue.record("refused")
            return
        }
        #expect(reason.hasPrefix("audit mode: profile 'mynumber' needs the My Number segment"))
        #expect(wouldRefuse?.hasPrefix("profile 'mynumber' needs the My Number segment") == true)
        guard case let .allow(_, _, offReason, _, none) = verdict("mynumber", Self.unauthorized, Self.policy(gate: .off)) else {
            Issue.record("refused")
            return
        }
        #expect(offReason.hasPrefix("launch gate off: ") && none == nil)
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

@Suite("Grace period")
struct GracePeriodTests {
    @Test("armed once per unauthorized spell, from the network event; an authorized decision cancels it; a stale timer does nothing")
    func spell() {
        var g = GracePeriod()
        #expect(g.decision(authorized: false, mode: .enforce, hasSessions: false, eventNanos: 100, graceSeconds: 5) == .nothing, "no sessions: nothing to end")
        let arm = g.decision(authorized: false, mode: .enforce, hasSessions: true, eventNanos: 1_000, graceSeconds: 5)
        #expect(arm == .arm(deadline: 5_000_001_000, token: 1))
        #expect(g.decision(authorized: false, mode: .enforce, hasSessions: true, eventNanos: 2_000, graceSeconds: 5) == .nothing, "already running")
        #expect(g.decision(authorized: true, mode: .enforce, hasSessions: true, eventNanos: 3_000, graceSeconds: 5) == .cancelled)
        #expect(g.expire(1) == nil, "the cancelled timer is stale")
        guard case let .arm(_, token) = g.decision(authorized: false, mode: .enforce, hasSessions: true, eventNanos: 4_000, graceSeconds: 5) else {
            Issue.record("not armed")
            return
        }
        #expect(g.expire(token) == 4_000)
        #expect(g.hasExpired)
        #expect(g.decision(authorized: false, mode: .enforce, hasSessions: true, eventNanos: 5_000, graceSeconds: 5) == .nothing, "once per spell")
        #expect(g.sessionStarted(authorized: false, mode: .enforce, now: 6_000, graceSeconds: 5) == .arm(deadline: 5_000_006_000, token: token + 1))
    }

    @Test("termination off cancels and never arms")
    func off() {
        var g = GracePeriod()
        _ = g.decision(authorized: false, mode: .enforce, hasSessions: true, eventNanos: 1, graceSeconds: 1)
        #expect(g.decision(authorized: false, mode: .off, hasSessions: true, eventNanos: 2, graceSeconds: 1) == .cancelled)
        #expect(g.sessionStarted(authorized: false, mode: .off, now: 3, graceSeconds: 1) == .nothing)
    }
}

@Suite("Table fingerprint")
struct FingerprintTests {
    /// One netlink attribute: length, type, payload, padding.
    static func attr(_ type: UInt16, _ payload: [UInt8]) -> [UInt8] {
        var out = NftablesFingerprintReader.u16(UInt16(4 + payload.count)) + NftablesFingerprintReader.u16(type) + payload
        while out.count % 4 != 0 { out.append(0) }
        return out
    }
    static func expr(_ name: String, _ data: [UInt8]) -> [UInt8] {
        attr(1 /* NFTA_LIST_ELEM */, attr(1 /* NFTA_EXPR_NAME */, Array(name.utf8) + [0]) + attr(2 /* NFTA_EXPR_DATA */, data))
    }

    @Test("a rule's counter values are left out; every other expression byte counts")
    func counterValuesIgnored() {
        let cmp = Self.expr("cmp", [1, 2, 3, 4])
        let a = cmp + Self.expr("counter", Self.attr(1, [0, 0, 0, 0, 0, 0, 0, 9]))
        let b = cmp + Self.expr("counter", Self.attr(1, [0, 0, 0, 0, 0, 0, 1, 0]))
        let c = Self.expr("cmp", [1, 2, 3, 5]) + Self.expr("counter", Self.attr(1, [0, 0, 0, 0, 0, 0, 0, 9]))
        #expect(NftablesFingerprintReader.withoutCounterValues(a) == NftablesFingerprintReader.withoutCounterValues(b))
        #expect(NftablesFingerprintReader.withoutCounterValues(a) != NftablesFingerprintReader.withoutCounterValues(c))
        #expect(NftablesFingerprintReader.attributes(of: a).count == 2)
        #expect(NftablesFingerprintReader.attributes(of: Array(a.prefix(6))).isEmpty, "a truncated attribute is ignored, not read past")
    }
}

@Suite("Binding controller")
struct BindingControllerTests {
    static let gateway = Gateway(prefix: IPPrefix("192.0.2.10")!, ports: [443])
    static func policy(_ mode: ControlMode = .enforce, gateways: [Gateway] = [gateway]) -> Policy {
        Policy(name: "t", sites: [], vdi: VDIRule(gateways: gateways), enforcement: EnforcementRule(networkBinding: mode))
    }
    static let eth0 = Decision(segment: .authorizedWired, reason: "r", authorizedInterfaces: ["eth0"], findings: [])
    static let closed = Decision.failClosed("lost")
    static let sessions = NftablesRuleset.SessionMatch(path: "unified/segguard", level: 1)!

    @Test("bound to sessions: the accept names the session cgroups; when they cannot be named nothing is allowed; bind_to_sessions off: any socket")
    func sessionBinding() {
        let fake = FakeNetworkBinding()
        let bound = BindingController(binding: fake, baselinePath: nil, sessions: Self.sessions, logger: Logger(label: "t"))
        #expect(bound.enforce(Self.eth0, policy: Self.policy(), generation: 1) == .applied(mode: .enforce, allowed: ["eth0"]))
        #expect(String(decoding: fake.accepted.last!.data, as: UTF8.self).contains(#"oifname "eth0" socket cgroupv2 level 1 "unified/segguard" counter accept"#))

        let unnamed = BindingController(binding: fake, baselinePath: nil, sessions: nil, logger: Logger(label: "t"))
        #expect(unnamed.enforce(Self.eth0, policy: Self.policy(), generation: 1) == .applied(mode: .enforce, allowed: []), "fail closed")
        var anySocket = Self.policy()
        anySocket.enforcement.bindToSessions = false
        #expect(unnamed.enforce(Self.eth0, policy: anySocket, generation: 2) == .applied(mode: .enforce, allowed: ["eth0"]))
        #expect(!String(decoding: fake.accepted.last!.data, as: UTF8.self).contains("socket cgroupv2"))
        // Turning the binding to sessions on again (a reload) changes the table.
        #expect(bound.enforce(Self.eth0, policy: anySocket, generation: 3) == .applied(mode: .enforce, allowed: ["eth0"]))
        #expect(bound.enforce(Self.eth0, policy: Self.policy(), generation: 4) == .applied(mode: .enforce, allowed: ["eth0"]))
    }

    @Test("one transaction per change; the same decision again is unchanged; a new generation never goes back")
    func transactions() {
        let fake = FakeNetworkBinding()
        let c = BindingController(binding: fake, baselinePath: nil, sessions: Self.sessions, logger: Logger(label: "t"))
        #expect(c.enforce(Self.eth0, policy: Self.policy(), generation: 1) == .applied(mode: .enforce, allowed: ["eth0"]))
        #expect(c.enforce(Self.eth0, policy: Self.policy(), generation: 2) == .unchanged)
        #expect(c.enforce(Self.closed, policy: Self.policy(), generation: 3) == .applied(mode: .enforce, allowed: []))
        #expect(c.enforce(Self.closed, policy: Self.policy(.audit), generation: 4) == .applied(mode: .audit, allowed: []))
        #expect(fake.accepted.map(\.allowed) == [["eth0"], [], []])
        // The first is the whole table (none of ours yet); then only the chain's rules.
        #expect(fake.accepted.map(\.data) == [
            NftablesRuleset.transaction(table: "segguard", gateways: [Self.gateway], allowedInterfaces: ["eth0"], mode: .enforce, sessions: Self.sessions),
            NftablesRuleset.update(table: "segguard", gateways: [Self.gateway], allowedInterfaces: [], mode: .enforce),
            NftablesRuleset.update(table: "segguard", gateways: [Self.gateway], allowedInterfaces: [], mode: .audit),
        ])
        #expect(c.generation == 4)
        #expect(c.lastTiming.map { $0.returned >= $0.handedToKernel } == true)
    }

    @Test("the table deleted by hand: the rules update is refused, the whole table is applied at once")
    func rulesUpdateFallsBack() {
        let fake = FakeNetworkBinding()
        let c = BindingController(binding: fake, baselinePath: nil, sessions: Self.sessions, logger: Logger(label: "t"))
        c.applyBaseline(policy: Self.policy())
        fake.loseTable()
        #expect(c.enforce(Self.eth0, policy: Self.policy(), generation: 1) == .applied(mode: .enforce, allowed: ["eth0"]))
        #expect(fake.applied.map(\.isRulesUpdate) == [false, true, false])
        #expect(fake.applied.map(\.accepted) == [true, false, true])
        #expect(fake.isTablePresent)
    }

    @Test("refused: the baseline is loaded and the failure says so; repair retries; a missing table is put back")
    func failAndRepair() throws {
        let fake = FakeNetworkBinding()
        let dir = NSTemporaryDirectory() + "sg-bc-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let c = BindingController(binding: fake, baselinePath: dir + "/baseline.json", sessions: Self.sessions, logger: Logger(label: "t"))
        fake.refuse { !$0.allowed.isEmpty }
        guard case let .failed(error, inForce) = c.enforce(Self.eth0, policy: Self.policy(), generation: 1) else {
            Issue.record("not failed")
            return
        }
        #expect(error.hasPrefix("nftables: cannot apply the transaction"))
        #expect(inForce == "the drop-all baseline is in force (no interface may reach the VDI gateways)")
        #expect(c.isFailing)
        #expect(FileManager.default.contents(atPath: dir + "/baseline.json") == NftablesRuleset.baseline(table: "segguard", gateways: [Self.gateway]))
        fake.refuse(nil)
        #expect(c.repair(Self.eth0, policy: Self.policy(), generation: 1) == .applied(mode: .enforce, allowed: ["eth0"]))
        #expect(c.repair(Self.eth0, policy: Self.policy(), generation: 1) == nil, "present and applied: nothing to do")
        fake.loseTable()
        #expect(c.repair(Self.eth0, policy: Self.policy(), generation: 1) == .applied(mode: .enforce, allowed: ["eth0"]))
        #expect(c.repair(Self.eth0, policy: Self.policy(.off), generation: 1) == nil, "binding off: no repair")
    }
}

@Suite("Session cgroups named for nftables")
struct SessionMatchTests {
    static let unified = "24 30 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
    static let hybrid = """
        25 24 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
        26 24 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
        """

    @Test("the path relative to /sys/fs/cgroup and the depth below the hierarchy's root, on unified and hybrid hosts")
    func levels() throws {
        let u = SessionTracker.cgroup2Mounts(Self.unified)
        #expect(u == [SessionTracker.Mount(point: "/sys/fs/cgroup", root: "/")])
        #expect(SessionTracker.socketMatch(for: "/sys/fs/cgroup/system.slice/segguardd.service/sessions", mounts: u)
            == NftablesRuleset.SessionMatch(path: "system.slice/segguardd.service/sessions", level: 3))
        #expect(SessionTracker.socketMatch(for: "/sys/fs/cgroup/segguard/", mounts: u) == NftablesRuleset.SessionMatch(path: "segguard", level: 1))
        let h = SessionTracker.cgroup2Mounts(Self.hybrid)
        #expect(h == [SessionTracker.Mount(point: "/sys/fs/cgroup/unified", root: "/")], "the v1 mount is not cgroup2")
        #expect(SessionTracker.socketMatch(for: "/sys/fs/cgroup/unified/system.slice/segguardd.service/sessions", mounts: h)
            == NftablesRuleset.SessionMatch(path: "unified/system.slice/segguardd.service/sessions", level: 3))
        // A mount of a sub-tree (its root below the hierarchy's): its depth counts.
        let sub = [SessionTracker.Mount(point: "/sys/fs/cgroup", root: "/machine.slice/x.scope")]
        #expect(SessionTracker.socketMatch(for: "/sys/fs/cgroup/segguard", mounts: sub) == NftablesRuleset.SessionMatch(path: "segguard", level: 3))
    }

    @Test("what cannot be named: outside any cgroup2 mount, outside /sys/fs/cgroup, a mount root itself; escaped mount points read back")
    func unnamed() {
        let u = SessionTracker.cgroup2Mounts(Self.unified)
        #expect(SessionTracker.socketMatch(for: "/tmp/segguard", mounts: u) == nil)
        #expect(SessionTracker.socketMatch(for: "/sys/fs/cgroup", mounts: u) == nil)
        let elsewhere = SessionTracker.cgroup2Mounts("40 1 0:30 / /mnt/cg\\040two rw - cgroup2 none rw\n")
        #expect(elsewhere == [SessionTracker.Mount(point: "/mnt/cg two", root: "/")])
        #expect(SessionTracker.socketMatch(for: "/mnt/cg two/segguard", mounts: elsewhere) == nil, "nft looks paths up under /sys/fs/cgroup only")
        #expect(SessionTracker.cgroup2Mounts("garbage\n\n - cgroup2\n").isEmpty)
        #expect(SessionTracker.cgroup2Mounts(nil).isEmpty)
    }

    @Test("the initial cgroup namespace is told from another (in a container the level is counted from the namespace's root)")
    func namespace() {
        #expect(SessionTracker.inInitialCgroupNamespace("cgroup:[4026531835]"))
        #expect(!SessionTracker.inInitialCgroupNamespace("cgroup:[4026532400]"))
        #expect(!SessionTracker.inInitialCgroupNamespace(nil))
    }
}

@Suite("The launcher check")
struct LauncherCheckTests {
    static let launcher = "/usr/bin/segguard-launch"
    static func environ(_ entries: [String]) -> [UInt8] { entries.flatMap { Array($0.utf8) + [0] } }
    static let untraced = "Name:\tsegguard-launch\nTracerPid:\t0\nUid:\t1000\t1000\t1000\t1000\n"

    @Test("the launcher as installed, with an ordinary environment and no tracer, passes")
    func passes() {
        #expect(LauncherCheck.problem(executable: Self.launcher, environ: Self.environ(["HOME=/home/a", "DISPLAY=:0", "OLD_LD=1"]),
                                      status: Self.untraced, expected: Self.launcher) == nil)
    }

    @Test("another program asking the gate, the loader running it, loader variables, a tracer, unreadable facts: each refused with its reason")
    func refusals() {
        let env = Self.environ(["HOME=/h"])
        #expect(LauncherCheck.problem(executable: "/usr/bin/python3.11", environ: env, status: Self.untraced, expected: Self.launcher)
            == "the launch request came from /usr/bin/python3.11, not from /usr/bin/segguard-launch; only the launcher may start a My Number session")
        #expect(LauncherCheck.problem(executable: "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", environ: env, status: Self.untraced, expected: Self.launcher) != nil)
        #expect(LauncherCheck.problem(executable: "/tmp/segguard-launch", environ: env, status: Self.untraced, expected: Self.launcher) != nil, "a copy")
        for variable in ["LD_PRELOAD=/home/a/x.so", "LD_LIBRARY_PATH=/home/a", "LD_AUDIT=/home/a/a.so", "GCONV_PATH=/home/a/g",
                         "SWIFT_BACKTRACE=enable=yes,swift-backtrace=/home/a/x", "SWIFT_ROOT=/home/a"] {
            let name = variable.prefix { $0 != "=" }
            #expect(LauncherCheck.problem(executable: Self.launcher, environ: Self.environ(["HOME=/h", variable]), status: Self.untraced, expected: Self.launcher)
                == "the launcher runs with \(name) set (it would load other code into the session); start it without")
        }
        #expect(LauncherCheck.problem(executable: Self.launcher, environ: env, status: "Name:\tx\nTracerPid:\t4242\n", expected: Self.launcher)
            == "the launcher is traced by pid 4242; start it without a debugger")
        #expect(LauncherCheck.problem(executable: nil, environ: env, status: Self.untraced, expected: Self.launcher) != nil)
        #expect(LauncherCheck.problem(executable: Self.launcher, environ: nil, status: Self.untraced, expected: Self.launcher) != nil)
        #expect(LauncherCheck.problem(executable: Self.launcher, environ: env, status: nil, expected: Self.launcher) != nil)
    }
}
