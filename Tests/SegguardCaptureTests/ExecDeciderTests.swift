// Capture blocking decisions without a kernel: the protection in force, path/name/hash
// matches, trusted-only, fail mode; dpkg md5sums parsing; the policy's capture section.

import Foundation
import SegguardCapture
import SegguardPolicy
import Testing

@Suite("Capture blocking decisions")
struct ExecDeciderTests {
    static let toolHash = String(repeating: "ab", count: 32)
    static let rule = CaptureRule(mode: .enforce, scope: .always, blockNames: ["scrot", "gnome-screenshot"], blockPaths: ["/opt/tools/grab"],
                                  blockSHA256: [toolHash], allowPaths: ["/opt/vdi/client"], allowSHA256: [String(repeating: "cd", count: 32)])
    static let always = CaptureProtectionState(level: .blocklist)
    static let trusted = CaptureProtectionState(level: .trustedOnly, profile: "mynumber")

    @Test("protection in force: scope always, sessions, the strongest running profile, mode off")
    func protection() {
        let plain = LaunchProfile(name: "lgwan", segment: .lgwan)
        let strict = LaunchProfile(name: "mynumber", segment: .mynumber, capture: .trustedOnly)
        let list = LaunchProfile(name: "mn-list", segment: .mynumber, capture: .blocklist)
        var r = Self.rule
        #expect(CaptureProtectionState.current(r, sessionProfiles: []) == .init(level: .blocklist))
        #expect(CaptureProtectionState.current(r, sessionProfiles: [plain, strict]) == .init(level: .trustedOnly, profile: "mynumber"))
        r.scope = .sessions
        #expect(CaptureProtectionState.current(r, sessionProfiles: []) == .init(level: .none))
        #expect(CaptureProtectionState.current(r, sessionProfiles: [plain]) == .init(level: .none))
        #expect(CaptureProtectionState.current(r, sessionProfiles: [plain, list]) == .init(level: .blocklist, profile: "mn-list"))
        r.mode = .off
        #expect(CaptureProtectionState.current(r, sessionProfiles: [strict]) == .init(level: .none))
    }

    @Test("names and paths deny at once; hashes need the content; nothing applies without protection")
    func quick() {
        let d = ExecDecider(rule: Self.rule)
        #expect(d.quick(path: "/usr/bin/scrot", protection: Self.always) == .deny(reason: "executable name \"scrot\" is listed in capture.block.names"))
        #expect(d.quick(path: "/opt/tools/grab", protection: Self.always) == .deny(reason: "/opt/tools/grab is listed in capture.block.paths"))
        #expect(d.quick(path: "/usr/bin/ls", protection: Self.always) == .needsContent)
        #expect(d.quick(path: "/usr/bin/scrot", protection: .init(level: .none)) == .allow)
        #expect(ExecDecider(rule: CaptureRule(mode: .enforce, blockNames: ["scrot"])).quick(path: "/usr/bin/ls", protection: Self.always) == .allow)
    }

    @Test("a renamed copy of a listed tool is denied by its SHA-256")
    func hash() {
        let d = ExecDecider(rule: Self.rule)
        #expect(d.decide(path: "/home/u/notes", sha256: Self.toolHash, packaged: nil, protection: Self.always)
                == .deny(reason: "SHA-256 \(Self.toolHash) of /home/u/notes is listed in capture.block.sha256 (a copy or renamed capture tool)"))
        #expect(d.decide(path: "/usr/bin/ls", sha256: String(repeating: "00", count: 32), packaged: nil, protection: Self.always) == .allow)
    }

    @Test("trusted-only: packaged or allowlisted files run, anything else is denied with the profile named")
    func trustedOnly() {
        let d = ExecDecider(rule: Self.rule)
        let other = String(repeating: "11", count: 32)
        #expect(d.decide(path: "/usr/bin/ls", sha256: other, packaged: true, protection: Self.trusted) == .allow)
        #expect(d.decide(path: "/opt/vdi/client", sha256: other, packaged: false, protection: Self.trusted) == .allow)
        #expect(d.decide(path: "/opt/x/y", sha256: String(repeating: "cd", count: 32), packaged: false, protection: Self.trusted) == .allow)
        #expect(d.decide(path: "/media/usb/grabber", sha256: other, packaged: false, protection: Self.trusted)
                == .deny(reason: "/media/usb/grabber is not part of an installed package (or differs from it) and not in capture.allow: profile 'mynumber' allows trusted executables only"))
        // A listed tool is denied even when a package ships it.
        #expect(d.decide(path: "/usr/bin/gnome-screenshot", sha256: other, packaged: true, protection: Self.trusted).isDeny)
        #expect(d.quick(path: "/usr/bin/ls", protection: Self.trusted) == .needsContent)
    }

    @Test("running processes: names (also of the script), paths, and tools that capture only with certain arguments")
    func running() {
        var r = Self.rule
        r.blockArguments = [ArgumentRule(name: "ffmpeg", anyOf: ["x11grab", "kmsgrab"])]
        let d = ExecDecider(rule: r)
        #expect(d.running(executable: "/usr/bin/scrot", argv: ["scrot"], protection: Self.always) == "running \"scrot\" (/usr/bin/scrot) is listed in capture.block.names")
        #expect(d.running(executable: "/usr/bin/python3.11", argv: ["python3", "/home/u/scrot"], protection: Self.always)?.contains("\"scrot\"") == true)
        #expect(d.running(executable: "/opt/tools/grab", argv: ["grab"], protection: Self.always) == "running /opt/tools/grab is listed in capture.block.paths")
        #expect(d.running(executable: "/usr/bin/ffmpeg", argv: ["ffmpeg", "-f", "x11grab", "-i", ":0", "out.mp4"], protection: Self.always)
                == "running ffmpeg with \"x11grab\" in its arguments (capture.block.arguments)")
        #expect(d.running(executable: "/usr/bin/ffmpeg", argv: ["ffmpeg", "-i", "in.mp4", "out.webm"], protection: Self.always) == nil)
        #expect(d.running(executable: "/usr/bin/scrot", argv: ["scrot"], protection: .init(level: .none)) == nil)
        // By content: a renamed copy of a listed binary, already running.
        let listed = Self.toolHash
        #expect(d.hasHashes)
        #expect(d.running(sha256: listed, executable: "/home/u/notes", protection: Self.always)
                == "running /home/u/notes has SHA-256 \(listed), listed in capture.block.sha256 (a copy or renamed capture tool)")
        #expect(d.running(sha256: String(repeating: "0", count: 64), executable: "/home/u/notes", protection: Self.always) == nil)
        #expect(d.running(sha256: listed, executable: "/home/u/notes", protection: .init(level: .none)) == nil)
        #expect(!ExecDecider(rule: CaptureRule()).hasHashes)
        // The command line is read only for interpreters and argument-rule tools.
        #expect(d.needsCommandLine(executable: "/usr/bin/python3.11") && d.needsCommandLine(executable: "/usr/bin/bash"))
        #expect(d.needsCommandLine(executable: "/usr/bin/ffmpeg"))
        #expect(!d.needsCommandLine(executable: "/usr/bin/true"))
    }

    @Test("fail mode answers when no decision comes in time")
    func failMode() {
        #expect(ExecDecider(rule: Self.rule).failAnswer(path: "/x") == .allow)
        var r = Self.rule
        r.failMode = .deny
        #expect(ExecDecider(rule: r).failAnswer(path: "/x") == .deny(reason: "no decision for /x within 250 ms (capture.fail_mode: deny)"))
    }
}

@Suite("dpkg md5sums and file digests")
struct DpkgIndexTests {
    @Test("md5sums lines: two spaces, paths without the leading slash, malformed lines skipped")
    func parse() {
        let text = """
            d41d8cd98f00b204e9800998ecf8427e  usr/bin/true
            0123456789ABCDEF0123456789abcdef  usr/share/doc/x y/README
            nonsense
            zz1d8cd98f00b204e9800998ecf8427e  usr/bin/bad
            d41d8cd98f00b204e9800998ecf8427e
            """
        #expect(DpkgIndex.parse(text) == ["/usr/bin/true": "d41d8cd98f00b204e9800998ecf8427e", "/usr/share/doc/x y/README": "0123456789abcdef0123456789abcdef"])
    }

    @Test("the machine's own dpkg database knows /usr/bin/true with the file's MD5 (merged /usr aware)")
    func realIndex() throws {
        let index = DpkgIndex()
        guard FileManager.default.fileExists(atPath: index.infoDirectory) else { return }
        index.loadNow()
        #expect(index.count > 100)
        guard case .recorded(let md5?) = index.lookup("/usr/bin/true") else {
            Issue.record("dpkg does not list /usr/bin/true")
            return
        }
        let recorded = md5
        let fd = open("/usr/bin/true", O_RDONLY)
        defer { close(fd) }
        let d = try #require(FileDigests.of(fd: fd))
        #expect(d.md5 == recorded)
        #expect(index.lookup("/nonexistent/tool") == .recorded(nil))
        #expect(DpkgIndex(infoDirectory: "/nonexistent").lookup("/usr/bin/true") == .notLoaded)
    }

    @Test("digests of a known file; the cache keys on identity and stays bounded")
    func digests() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sgcap-\(getpid())-\(UUID().uuidString.prefix(6))").path
        try Data("abc".utf8).write(to: URL(fileURLWithPath: path))
        defer { unlink(path) }
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        let d = try #require(FileDigests.of(fd: fd))
        #expect(d.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(d.md5 == "900150983cd24fb0d6963f7d28e17f72")
        let id = try #require(FileIdentity(fd: fd))
        let cache = DigestCache(capacity: 4)
        cache.put(id, d)
        #expect(cache.get(id) == d)
        var other = id
        for i in 0..<10 {
            other.inode = UInt64(1000 + i)
            cache.put(other, d)
        }
        #expect(cache.count <= 4)
        // A rewrite is a new identity.
        try Data("abcd".utf8).write(to: URL(fileURLWithPath: path))
        let fd2 = open(path, O_RDONLY)
        defer { close(fd2) }
        #expect(FileIdentity(fd: fd2) != id)
    }
}

@Suite("Policy capture section")
struct CapturePolicyTests {
    @Test("capture: and a profile's capture: load with their defaults")
    func load() throws {
        let p = try PolicyLoader.load(text: """
            schema_version: 1
            sites: [{name: hq, wired: [{interfaces: [eth0]}]}]
            vdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}
            profiles:
              - {name: mynumber, segment: mynumber, command: [/usr/bin/xfreerdp], capture: trusted-only}
            capture:
              scope: sessions
              watch: [/, /home]
              block:
                names: [scrot]
                sha256: ["\(String(repeating: "AB", count: 32))"]
                arguments: [{name: ffmpeg, any_of: [x11grab, kmsgrab]}]
            """, file: "p.yaml")
        #expect(p.capture.blockArguments == [ArgumentRule(name: "ffmpeg", anyOf: ["x11grab", "kmsgrab"])])
        #expect(p.capture.mode == .enforce && p.capture.scope == .sessions && p.capture.failMode == .allow && p.capture.decisionTimeoutMs == 250)
        #expect(p.capture.blockSHA256 == [String(repeating: "ab", count: 32)])
        #expect(p.profiles[0].capture == .trustedOnly)
        let none = try PolicyLoader.load(text: "schema_version: 1\nsites: [{name: hq, wired: [{interfaces: [eth0]}]}]\nvdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}\n", file: "q.yaml")
        #expect(none.capture.mode == .off)
    }

    @Test("mistakes in capture: are located", arguments: [
        ("capture: {block: {names: [/usr/bin/scrot]}}", "sites"),
        ("capture: {block: {sha256: [abc]}}", "capture.block.sha256[0]"),
        ("capture: {watch: [home]}", "capture.watch[0]"),
        ("capture: {scope: sometimes}", "capture.scope"),
        ("capture: {decision_timeout_ms: 1}", "capture.decision_timeout_ms"),
        ("capture: {blok: {}}", "capture"),
        ("capture: {block: {arguments: [{name: ffmpeg}]}}", "capture.block.arguments[0].any_of"),
    ])
    func mistakes(line: String, path: String) {
        let text = "schema_version: 1\nsites: [{name: hq, wired: [{interfaces: [eth0]}]}]\n\(line)\nvdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}\n"
        do {
            _ = try PolicyLoader.load(text: text, file: "c.yaml")
            Issue.record("accepted: \(line)")
        } catch {
            let all = error.issues.map(\.description).joined(separator: "\n")
            #expect(all.contains("c.yaml:3:"), "\(all)")
            if path != "sites" { #expect(all.contains(path), "\(all)") } else { #expect(all.contains("capture.block.names[0]"), "\(all)") }
        }
    }
}
