// The enforcement and profiles sections of the policy.

import Foundation
import SegguardPolicy
import Testing

@Suite("Enforcement policy")
struct EnforcementPolicyTests {
    static let good = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/good/enforcement-profiles.yaml").path

    @Test("modes, timings and profiles are read as written")
    func parsed() throws {
        let p = try PolicyLoader.load(file: Self.good)
        #expect(p.enforcement == EnforcementRule(launchGate: .enforce, sessionTermination: .audit, networkBinding: .off, graceSeconds: 7.5, killTimeoutSeconds: 2))
        #expect(p.profiles.map(\.name) == ["mynumber-freerdp", "lgwan-citrix"])
        let mn = try #require(p.profile(named: "mynumber-freerdp"))
        #expect(mn.needsAuthorizedSegment)
        #expect(mn.command == ["/usr/bin/xfreerdp", "/v:192.0.2.10"])
        #expect(mn.enforceArguments == ["-clipboard", "-drives"])
        #expect(mn.allowedGroups == ["vdi-users"])
        #expect(mn.location.hasSuffix("enforcement-profiles.yaml:18"))
        let lg = try #require(p.profile(named: "lgwan-citrix"))
        #expect(!lg.needsAuthorizedSegment)
        #expect(lg.configFiles == [LaunchProfile.ConfigFile(path: "~/.ICAClient/wfclient.ini", section: "WFClient", set: ["ClipboardAllowed": "Off", "CDMAllowed": "Off"])])
    }

    @Test("without an enforcement section every control enforces, with a 5 s grace")
    func defaults() throws {
        let p = try PolicyLoader.load(text: "schema_version: 1\nsites:\n  - name: hq\n    wired: [{interfaces: [eth0]}]\nvdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}\n", file: "d.yaml")
        #expect(p.enforcement == EnforcementRule())
        #expect(p.enforcement.launchGate == .enforce && p.enforcement.sessionTermination == .enforce && p.enforcement.networkBinding == .enforce)
        #expect(p.enforcement.graceSeconds == 5 && p.enforcement.killTimeoutSeconds == 3)
        #expect(p.profiles.isEmpty)
    }

    @Test("the shipped example policies load", arguments: ["policy.example.yaml", "demo-veth.yaml", "profiles.example.yaml"])
    func shipped(file: String) throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Config").appendingPathComponent(file).path
        _ = try PolicyLoader.load(file: path)
    }
}
