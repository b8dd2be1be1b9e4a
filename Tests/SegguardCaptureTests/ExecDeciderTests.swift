// Capture blocking decisions without a kernel: the protection in force, path/name/hash
// matches, trusted-only, fail mode; dpkg md5sums parsing; the policy's capture section.

import Foundation
@testable import SegguardCapture
import SegguardPolicy
import Testing

@Suite("Capture blocking decisions")
struct ExecDeciderTests {
    static let toolHash = String(repeating: "ab", count: 32)
    static let clientHash = String(repeating: "ef", count: 32)
    static let rule = CaptureRule(mode: .enforce, scope: .always, blockNames: ["scrot", "gnome-screenshot"], blockPaths: ["/opt/tools/grab"],
                                  blockSHA256: [toolHash], allowPaths: [AllowedExecutable(path: "/opt/vdi/client", sha256: clientHash)], allowSHA256: [String(repeating: "cd", count: 32)])
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
        // capture.allow.paths: the path AND its content; the path alone (a bind mount) is not trusted.
        #expect(d.decide(path: "/opt/vdi/client", sha256: Self.clientHash, packaged: false, protection: Self.trusted) == .allow)
        #expect(d.decide(path: "/opt/vdi/client", sha256: other, packaged: false, protection: Self.trusted).isDeny)
        #expect(d.decide(path: "/opt/x/y", sha256: String(repeating: "cd", count: 32), packaged: false, protection: Self.trusted) == .allow)
        #expect(d.decide(path: "/media/usb/grabber", sha256: other, packaged: false, protection: Self.trusted)
                == .deny(reason: "/media/usb/grabber is not part of an installed package (or differs from it) and not in capture.allow: profile 'mynumber' allows trusted executables only"))
        // A listed tool is denied even when a package ships it.
        #expect(d.decide(path: "/usr/bin/gnome-screenshot", sha256: other, packaged: true, protection: Self.trusted).isDeny)
        #expect(d.quick(path: "/usr/bin/ls", protection: Self.trusted, package: .md5("x")) == .needsContent)
    }

    @Test("trusted-only without hashing: a path no package ships is denied at once unless capture.allow could allow its content; an unloaded index fails closed")
    func trustedOnlyQuick() {
        let noAllow = ExecDecider(rule: CaptureRule(mode: .enforce, blockNames: ["scrot"]))
        #expect(noAllow.quick(path: "/home/u/padded", protection: Self.trusted, package: .none)
                == .deny(reason: "/home/u/padded is not part of an installed package and not in capture.allow: profile 'mynumber' allows trusted executables only"))
        #expect(noAllow.quick(path: "/usr/bin/ls", protection: Self.trusted, package: .unknown)
                == .deny(reason: "/usr/bin/ls could not be checked against the installed packages: profile 'mynumber' allows trusted executables only"))
        #expect(noAllow.quick(path: "/usr/bin/ls", protection: Self.trusted, package: .md5("0")) == .needsContent)
        // With content allowed anywhere, the file must be hashed (and fails closed when it cannot be in time).
        let d = ExecDecider(rule: Self.rule)
        #expect(d.quick(path: "/home/u/padded", protection: Self.trusted, package: .none) == .needsContent)
        #expect(d.failAnswer(path: "/home/u/padded", protection: Self.trusted)
                == .deny(reason: "no decision for /home/u/padded within 250 ms: profile 'mynumber' allows trusted executables only, so it fails closed"))
        // Only the allow-listed path may skip dpkg when only allow.paths is set.
        let pathOnly = ExecDecider(rule: CaptureRule(mode: .enforce, allowPaths: [AllowedExecutable(path: "/opt/vdi/client", sha256: Self.clientHash)]))
        #expect(pathOnly.quick(path: "/opt/vdi/client", protection: Self.trusted, package: .none) == .needsContent)
        #expect(pathOnly.quick(path: "/opt/vdi/other", protection: Self.trusted, package: .none).isDenyVerdict)
        // Running processes: trust by dpkg or allow.
        #expect(d.untrustedRunning(path: "/usr/bin/ls", sha256: "x", packaged: true, protection: Self.trusted) == nil)
        #expect(d.untrustedRunning(path: "/opt/vdi/client", sha256: Self.clientHash, packaged: false, protection: Self.trusted) == nil)
        #expect(d.untrustedRunning(path: "/tmp/x", sha256: "x", packaged: false, protection: Self.trusted)?.hasPrefix("running /tmp/x is not part of an installed package") == true)
        #expect(d.untrustedRunning(path: "/tmp/x", sha256: "x", packaged: false, protection: Self.always) == nil)
    }

    @Test("the dynamic loader: recognised by name, its program found past its own options; a copy elsewhere is denied by content")
    func loader() {
        for l in ["/lib64/ld-linux-x86-64.so.2", "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "/lib/ld-musl-x86_64.so.1", "/lib/ld-2.31.so", "/lib/ld.so", "/lib64/ld64.so.2"] {
            #expect(ExecDecider.isLoader(l), "\(l)")
        }
        for n in ["/usr/bin/ld", "/usr/bin/ld.bfd", "/usr/bin/ld-helper", "/usr/lib/ld-linux.so.2.conf", "/usr/bin/ldd"] {
            #expect(!ExecDecider.isLoader(n), "\(n)")
        }
        #expect(ExecDecider.loaderProgram(["ld.so", "./maim", "-s"])! == ("./maim", 1))
        #expect(ExecDecider.loaderProgram(["ld.so", "--library-path", "/tmp", "--preload", "x.so", "--inhibit-cache", "/tmp/maim"])! == ("/tmp/maim", 6))
        #expect(ExecDecider.loaderProgram(["ld.so", "--argv0", "notes", "maim"])! == ("maim", 3))
        #expect(ExecDecider.loaderProgram(["ld.so", "--list"]) == nil)
        // An option ld.so does not know is, for ld.so, the program's name.
        #expect(ExecDecider.loaderProgram(["ld.so", "--bogus", "maim"])! == ("--bogus", 1))
        #expect(d.needsCommandLine(executable: "/lib64/ld-linux-x86-64.so.2"))
        let loaderHash = String(repeating: "77", count: 32)
        let withLoader = ExecDecider(rule: Self.rule, loaderHashes: [loaderHash])
        #expect(withLoader.decide(path: "/home/u/myld", sha256: loaderHash, packaged: nil, protection: Self.always)
                == .deny(reason: "/home/u/myld is a copy of the dynamic loader (SHA-256 \(loaderHash)): it would run any program unseen"))
        #expect(withLoader.decide(path: "/lib64/ld-linux-x86-64.so.2", sha256: loaderHash, packaged: nil, protection: Self.always) == .allow)
        #expect(withLoader.decide(path: "/home/u/myld", sha256: loaderHash, packaged: nil, protection: .init(level: .none)) == .allow)
    }
    var d: ExecDecider { ExecDecider(rule: Self.rule) }

    @Test("executables with no file of their own: a memfd or a deleted file carries a name")
    func anonymous() {
        #expect(ExecDecider.anonymousName("/memfd:maim (deleted)") == "maim")
        #expect(ExecDecider.anonymousName("/memfd:scrot") == "scrot")
        #expect(ExecDecider.anonymousName("/tmp/scrot (deleted)") == "scrot")
        #expect(ExecDecider.anonymousName("/usr/bin/scrot") == nil)
        #expect(d.running(executable: "maim", argv: [], protection: Self.always) == nil)
        #expect(d.running(executable: "scrot", argv: [], protection: Self.always) != nil)
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
        // The word inside a longer argument, and followed by a combining mark (one Character
        // with its last letter, the same bytes for the program): still the word.
        #expect(d.running(executable: "/usr/bin/ffmpeg", argv: ["ffmpeg", "-fx11grab"], protection: Self.always) != nil)
        #expect(d.running(executable: "/usr/bin/ffmpeg", argv: ["ffmpeg", "-f", "x11grab\u{301}"], protection: Self.always) != nil)
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

extension QuickVerdict {
    var isDenyVerdict: Bool { if case .deny = self { true } else { false } }
}

@Suite("Mounts to mark and vm.memfd_noexec")
struct MountsTests {
    @Test("mountinfo: devices, escaped mount points, types; what a watch covers")
    func parse() {
        let text = """
            22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
            23 22 0:21 / /proc rw,nosuid shared:12 - proc proc rw
            24 22 0:22 / /run/user/1000 rw,nosuid shared:5 - tmpfs tmpfs rw,size=100k
            25 22 8:17 / /media/u/MY\\040STICK rw,nosuid - vfat /dev/sdb1 rw
            26 22 0:30 / /srv/data rw - nfs4 srv:/d rw
            broken line
            """
        let m = MountEntry.parse(text)
        #expect(m.count == 5)
        #expect(m[0] == MountEntry(device: MountEntry.makeDevice(8, 1), mountPoint: "/", fsType: "ext4"))
        #expect(m[3].mountPoint == "/media/u/MY STICK" && m[3].fsType == "vfat")
        #expect(MountEntry.makeDevice(8, 1) == 0x801)
        #expect(MountEntry.makeDevice(0, 300) == (300 & 0xff) | ((300 & 0xffffff00) << 12))
        #expect(m.filter { $0.isCovered(by: ["/"]) }.map(\.mountPoint) == ["/", "/run/user/1000", "/media/u/MY STICK", "/srv/data"])
        #expect(m.filter { $0.isCovered(by: ["/run", "/media/u"]) }.map(\.mountPoint) == ["/run/user/1000", "/media/u/MY STICK"])
        #expect(m.filter { $0.isCovered(by: ["/srv/dat"]) }.isEmpty)
    }

    @Test("memfd_noexec is raised to 2 once, and put back as it was")
    func memfdNoexec() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sg-memfd-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try "1\n".write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let m = MemfdNoexec(path: file.path)
        #expect(m.isAvailable && m.current == "1" && !m.isRaised)
        #expect(m.raise() == nil)
        #expect(m.current == "2" && m.isRaised)
        try "0\n".write(to: file, atomically: false, encoding: .utf8)  // someone lowered it: raise again is a no-op while raised
        #expect(m.raise() == nil)
        m.restore()
        #expect(m.current == "1" && !m.isRaised)
        #expect(MemfdNoexec(path: "/nonexistent/memfd_noexec").raise()?.contains("not available") == true)
    }

    @Test("a daemon killed while memfd_noexec was raised puts the saved value back when it starts again")
    func memfdNoexecAfterCrash() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("sg-memfd-crash-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: base) }
        let sysctl = base.appendingPathComponent("memfd_noexec").path
        let saved = base.appendingPathComponent("memfd_noexec.saved").path
        try "0\n".write(toFile: sysctl, atomically: true, encoding: .utf8)
        let first = MemfdNoexec(path: sysctl, savedFile: saved)
        #expect(first.raise() == nil)
        #expect(first.current == "2" && MemfdNoexec.read(saved) == "0")
        // SIGKILL: no restore ran. The next start finds the saved value and puts it back.
        let next = MemfdNoexec(path: sysctl, savedFile: saved)
        #expect(next.current == "0" && !FileManager.default.fileExists(atPath: saved) && !next.isRaised)
        // A clean restore removes the saved file too.
        #expect(next.raise() == nil)
        next.restore()
        #expect(next.current == "0" && !FileManager.default.fileExists(atPath: saved))
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
        #expect(p.capture.loader == .judge && p.capture.allowPaths.isEmpty)
        let strict = try PolicyLoader.load(text: """
            schema_version: 1
            sites: [{name: hq, wired: [{interfaces: [eth0]}]}]
            vdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}
            capture:
              loader: deny
              allow:
                paths: [{path: /opt/vdi/client, sha256: "\(String(repeating: "CD", count: 32))"}]
            """, file: "p.yaml")
        #expect(strict.capture.loader == .deny)
        #expect(strict.capture.allowPaths == [AllowedExecutable(path: "/opt/vdi/client", sha256: String(repeating: "cd", count: 32))])
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
        ("capture: {allow: {paths: [/opt/vdi/client]}}", "capture.allow.paths[0]: a path alone is not trusted: it needs its sha256"),
        ("capture: {allow: {paths: [{path: /opt/vdi/client}]}}", "capture.allow.paths[0].sha256: missing"),
        ("capture: {allow: {paths: [{path: /opt/vdi/client, sha256: abc}]}}", "capture.allow.paths[0].sha256"),
        ("capture: {allow: {paths: [{path: client, sha256: \(String(repeating: "0", count: 64))}]}}", "capture.allow.paths[0].path"),
        ("capture: {loader: forbid}", "capture.loader"),
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
