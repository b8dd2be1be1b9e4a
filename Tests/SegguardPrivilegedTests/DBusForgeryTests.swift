// Forged wpa_supplicant signals on a private dbus-daemon that enforces the Debian system-bus
// policy (the <policy> elements of /usr/share/dbus-1/system.conf and wpa_supplicant's own
// policy file: only root may own fi.w1.wpa_supplicant1). A process running as uid 65534 speaks
// raw D-Bus (a small Python client, so that one connection can claim the name in a forged
// NameOwnerChanged and then speak "for" it) unicast to the source's unique name and broadcast.
// The source (WPADBusSource, in this process) reads a real wpa_supplicant -Dwired -u
// authenticating against real hostapd (driver=wired) over a veth pair in a namespace.

import Foundation
import Logging
import SegguardDeviceAuth
import SegguardPolicy
import SegguardTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Log lines of the source under test, for assertions and failure messages.
final class CapturedLog: Sendable {
    let lines = Mutex<[String]>([])
    var text: String { lines.withLock { $0.joined(separator: "\n") } }
}

struct CapturingLogHandler: LogHandler {
    let sink: CapturedLog
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info
    var metadataProvider: Logger.MetadataProvider?

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let fields = (event.metadata ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        sink.lines.withLock { $0.append("\(event.level) \(event.message) \(fields)") }
    }
}

/// Every map the source published, in order.
final class PublishedMaps: Sendable {
    let maps = Mutex<[[String: DeviceAuthState]]>([])
    var count: Int { maps.withLock { $0.count } }
    var last: [String: DeviceAuthState] { maps.withLock { $0.last ?? [:] } }
    func since(_ index: Int) -> [[String: DeviceAuthState]] { maps.withLock { Array($0.dropFirst(index)) } }
}

/// A private system bus with the Debian policy, hostapd on gwx0, the supplicant on tcx0 (when
/// started), and a WPADBusSource on the bus. `cleanup()` ends all of it.
final class DBusForgeryBench {
    let lab: EAPLab
    let ns: TestNamespace
    let log = CapturedLog()
    let published = PublishedMaps()
    let source: WPADBusSource
    var busSocket: String { "\(lab.path)/bus.sock" }
    var forger: String { "\(lab.path)/forge.py" }

    static let wpaPolicyFiles = ["/usr/share/dbus-1/system.d/wpa_supplicant.conf", "/etc/dbus-1/system.d/wpa_supplicant.conf"]
    static var wpaPolicyFile: String? { wpaPolicyFiles.first { FileManager.default.fileExists(atPath: $0) } }
    static var available: Bool {
        EAPLab.available && wpaPolicyFile != nil && FileManager.default.fileExists(atPath: "/usr/share/dbus-1/system.conf")
            && ["/usr/bin/python3", "/usr/bin/setpriv", "/usr/bin/busctl"].allSatisfy { FileManager.default.isExecutableFile(atPath: $0) }
    }

    init() throws {
        let lab = try EAPLab()
        self.lab = lab
        let log = self.log
        source = WPADBusSource(address: lab.busAddress, logger: Logger(label: "test.dbus") { _ in CapturingLogHandler(sink: log) })
        do {
            ns = try TestNamespace(prefix: "sgdbus")
        } catch {
            lab.cleanup()
            throw error
        }
        do {
            // The lab's own bus.conf allows everything; this one is the system bus's policy.
            try Self.systemPolicyConfig(listen: lab.busAddress).write(toFile: "\(lab.path)/bus.conf", atomically: true, encoding: .utf8)
            try Self.forgerScript.write(toFile: forger, atomically: true, encoding: .utf8)
            // uid 65534 reads the script and reaches the socket (0777, as dbus-daemon makes it).
            chmod(lab.path, 0o755)
            chmod(forger, 0o644)
            try lab.startBus()
            try ns.addVeth("tcx0", index: 3991, peer: "gwx0", index: 3992)
            try lab.startAuthenticator(in: ns, interface: "gwx0")
        } catch {
            cleanup()
            throw error
        }
        let published = self.published
        source.start { map in published.maps.withLock { $0.append(map) } }
    }

    func cleanup() {
        source.stop()
        lab.cleanup()
        ns.destroy()
    }

    /// busconfig for a private system bus: the system bus's <policy> elements verbatim, and
    /// wpa_supplicant's policy file included as the system bus includes it.
    static func systemPolicyConfig(listen: String) throws -> String {
        let system = try String(contentsOfFile: "/usr/share/dbus-1/system.conf", encoding: .utf8)
            .replacing(try Regex(#"<!--[\s\S]*?-->"#), with: "")
        let policies = system.matches(of: try Regex(#"<policy[\s\S]*?</policy>"#)).map { String(system[$0.range]) }
        guard policies.count >= 2, let wpa = wpaPolicyFile else {
            throw CommandError(description: "/usr/share/dbus-1/system.conf has \(policies.count) <policy> elements, or no wpa_supplicant D-Bus policy in \(wpaPolicyFiles)")
        }
        return """
            <!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
            <busconfig>
              <type>system</type>
              <listen>\(listen)</listen>
              <auth>EXTERNAL</auth>
            \(policies.joined(separator: "\n"))
              <include>\(wpa)</include>
            </busconfig>

            """
    }

    func startSupplicant(_ cert: EAPLab.Certificate) throws {
        try lab.startSupplicant(in: ns, interface: "tcx0", certificate: cert, dbus: true)
    }

    /// The last published map once `predicate` holds on it (10 s).
    @discardableResult
    func wait(_ what: String, seconds: Double = 10, _ predicate: ([String: DeviceAuthState]) -> Bool) throws -> [String: DeviceAuthState] {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let last = published.last
            if predicate(last) { return last }
            usleep(10_000)
        }
        throw CommandError(description: "\(what): not reached within \(seconds) s; last map: \(published.last)\nsource log:\n\(log.text.suffix(3000))\nwpa_supplicant:\n\(lab.log("wpa_supplicant").suffix(2000))\nhostapd:\n\(lab.log("hostapd").suffix(2000))")
    }

    func waitRejected(atLeast n: UInt64, _ what: String) throws {
        let deadline = Date().addingTimeInterval(5)
        while source.rejectedSignals < n {
            guard Date() < deadline else {
                throw CommandError(description: "\(what): the source ignored \(source.rejectedSignals) signals, expected at least \(n)\n\(log.text.suffix(3000))")
            }
            usleep(5_000)
        }
    }

    /// Runs the forger as uid 65534 with `plan`; its output lines as key=value.
    func forge(_ plan: [[String: Any]]) throws -> [String: String] {
        let json = String(decoding: try JSONSerialization.data(withJSONObject: plan), as: UTF8.self)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        p.arguments = ["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", forger, busSocket, json]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: o, as: UTF8.self)
        guard p.terminationStatus == 0, text.contains("done") else {
            throw CommandError(description: "forger exited \(p.terminationStatus): \(text) \(String(decoding: e, as: UTF8.self))")
        }
        var result: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { result[String(parts[0])] = String(parts[1]) }
        }
        return result
    }

    /// The unique name of this process's connection (the source's), from the bus's own list.
    func sourceUniqueName() throws -> String {
        let json = try runCommand(["/usr/bin/busctl", "--address=\(lab.busAddress)", "list", "--json=short"])
        let entries = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]] ?? []
        let mine = entries.filter { ($0["name"] as? String)?.hasPrefix(":") == true && ($0["pid"] as? Int) == Int(getpid()) }
        guard mine.count == 1, let name = mine[0]["name"] as? String else {
            throw CommandError(description: "expected one connection of pid \(getpid()) on the bus: \(json)")
        }
        return name
    }

    /// The unique name owning fi.w1.wpa_supplicant1 now (asked as root with busctl).
    func supplicantOwner() throws -> String {
        let out = try runCommand(["/usr/bin/busctl", "--address=\(lab.busAddress)", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                  "org.freedesktop.DBus", "GetNameOwner", "s", "fi.w1.wpa_supplicant1"])
        // s ":1.3"
        guard let first = out.firstIndex(of: "\""), let last = out.lastIndex(of: "\""), first < last else {
            throw CommandError(description: "GetNameOwner: \(out)")
        }
        return String(out[out.index(after: first)..<last])
    }

    /// SHA-256 of a lab certificate's DER, lower-case hex (openssl's fingerprint).
    func fingerprint(_ name: String) throws -> String {
        let out = try runCommand(["/usr/bin/openssl", "x509", "-in", "\(lab.path)/\(name).pem", "-noout", "-fingerprint", "-sha256"])
        guard let eq = out.firstIndex(of: "=") else { throw CommandError(description: "openssl fingerprint: \(out)") }
        return out[out.index(after: eq)...].filter { $0 != ":" && !$0.isWhitespace }.lowercased()
    }

    static let ifacePath = "/fi/w1/wpa_supplicant1/Interfaces/0"

    /// Signals that, believed, would make tcx0 authorized with EAP-TLS: the forger's connection
    /// claims wpa_supplicant's name (as if the bus driver said so), then speaks "for" it.
    static func successForgery(destination: String?, path: String = ifacePath) -> [[String: Any]] {
        var plan: [[String: Any]] = [
            ["op": "signal", "path": "/org/freedesktop/DBus", "interface": "org.freedesktop.DBus", "member": "NameOwnerChanged",
             "signature": "sss", "args": ["fi.w1.wpa_supplicant1", "", "$SELF"]],
            ["op": "signal", "path": path, "interface": "fi.w1.wpa_supplicant1.Interface", "member": "EAP", "signature": "ss", "args": ["started", ""]],
            ["op": "signal", "path": path, "interface": "fi.w1.wpa_supplicant1.Interface", "member": "Certification", "signature": "a{sv}",
             "args": [["depth": ["u", 0], "subject": ["s", "/CN=forged-server"], "cert_hash": ["s", String(repeating: "0", count: 64)]]]],
            ["op": "signal", "path": path, "interface": "fi.w1.wpa_supplicant1.Interface", "member": "EAP", "signature": "ss", "args": ["completion", "success"]],
            ["op": "signal", "path": path, "interface": "org.freedesktop.DBus.Properties", "member": "PropertiesChanged", "signature": "sa{sv}as",
             "args": ["fi.w1.wpa_supplicant1.Interface", ["State": ["s", "completed"], "CurrentAuthMode": ["s", "EAP-TLS"]], [String]()]],
        ]
        if let destination { plan = plan.map { $0.merging(["dest": destination]) { _, new in new } } }
        return plan
    }

    /// Signals that, believed, would drop tcx0's state: the supplicant "left the bus", its
    /// interface "was removed", its EAP "failed", its state "disconnected".
    static func dropForgery(destination: String?, owner: String, path: String = ifacePath) -> [[String: Any]] {
        var plan: [[String: Any]] = [
            ["op": "signal", "path": "/org/freedesktop/DBus", "interface": "org.freedesktop.DBus", "member": "NameOwnerChanged",
             "signature": "sss", "args": ["fi.w1.wpa_supplicant1", owner, ""]],
            ["op": "signal", "path": "/fi/w1/wpa_supplicant1", "interface": "fi.w1.wpa_supplicant1", "member": "InterfaceRemoved",
             "signature": "o", "args": [path]],
            ["op": "signal", "path": path, "interface": "fi.w1.wpa_supplicant1.Interface", "member": "EAP", "signature": "ss", "args": ["completion", "failure"]],
            ["op": "signal", "path": path, "interface": "org.freedesktop.DBus.Properties", "member": "PropertiesChanged", "signature": "sa{sv}as",
             "args": ["fi.w1.wpa_supplicant1.Interface", ["State": ["s", "disconnected"]], [String]()]],
        ]
        if let destination { plan = plan.map { $0.merging(["dest": destination]) { _, new in new } } }
        return plan
    }

    /// One unicast signal to the source after a broadcast plan: delivered in order on the
    /// forger's connection, so once the source has ignored it, it has seen whatever the bus
    /// delivered of the broadcasts before it.
    static func fence(destination: String) -> [String: Any] {
        ["op": "signal", "dest": destination, "path": ifacePath, "interface": "org.freedesktop.DBus.Properties", "member": "PropertiesChanged",
         "signature": "sa{sv}as", "args": ["fi.w1.wpa_supplicant1.Interface", ["State": ["s", "completed"]], [String]()]]
    }

    /// Sends `plan` unicast to the source, then broadcast, as uid 65534 (two connections), and
    /// waits until the source has handled what reached it. Returns the forgers' unique names.
    func forgeBothWays(_ make: (String?) -> [[String: Any]]) throws -> (unicast: String, broadcast: String) {
        let me = try sourceUniqueName()
        let before = source.rejectedSignals
        // The bus's policy is in force: uid 65534 may not own wpa_supplicant's name.
        // The forgers stay on the bus a moment so that the source can ask for their uid.
        let first = try forge([["op": "request_name", "name": "fi.w1.wpa_supplicant1"]] + make(me) + [["op": "sleep", "seconds": 0.5]])
        #expect(first["request_name"] == "denied:org.freedesktop.DBus.Error.AccessDenied", "\(first)")
        let unicastSignals = UInt64(make(me).count)
        // sd-bus delivers every unicast signal to the match callbacks (it cannot check a
        // well-known sender= locally), so each one reaches the sender check.
        try waitRejected(atLeast: before + unicastSignals, "unicast forgery")
        let second = try forge(make(nil) + [Self.fence(destination: me), ["op": "sleep", "seconds": 0.5]])
        try waitRejected(atLeast: before + unicastSignals + 1, "broadcast forgery and its fence")
        return (first["self"] ?? "?", second["self"] ?? "?")
    }

    static let forgerScript = #"""
import json, os, socket, struct, sys, time

ALIGN = {'y': 1, 'g': 1, 'v': 1, 'n': 2, 'q': 2, 'b': 4, 'i': 4, 'u': 4, 's': 4, 'o': 4, 'a': 4, 'h': 4,
         'x': 8, 't': 8, 'd': 8, '(': 8, '{': 8}

def pad(buf, n):
    while len(buf) % n:
        buf.append(0)

def end_of(sig, i):
    c = sig[i]
    if c == 'a':
        return end_of(sig, i + 1)
    if c in '({':
        close = ')' if c == '(' else '}'
        j = i + 1
        while sig[j] != close:
            j = end_of(sig, j)
        return j + 1
    return i + 1

def split(sig):
    out, i = [], 0
    while i < len(sig):
        j = end_of(sig, i)
        out.append(sig[i:j])
        i = j
    return out

def put(buf, t, v):
    c = t[0]
    pad(buf, ALIGN[c])
    if c == 'y': buf.append(v)
    elif c == 'b': buf += struct.pack('<I', 1 if v else 0)
    elif c == 'u': buf += struct.pack('<I', v)
    elif c == 'i': buf += struct.pack('<i', v)
    elif c in 'so':
        b = v.encode()
        buf += struct.pack('<I', len(b)) + b + b'\0'
    elif c == 'g':
        b = v.encode()
        buf.append(len(b))
        buf += b + b'\0'
    elif c == 'v':
        put(buf, 'g', v[0])
        put(buf, v[0], v[1])
    elif c == '(':
        for ft, fv in zip(split(t[1:-1]), v):
            put(buf, ft, fv)
    elif c == 'a':
        el = t[1:]
        at = len(buf)
        buf += b'\0\0\0\0'
        pad(buf, ALIGN[el[0]])
        start = len(buf)
        if el[0] == '{':
            kt, vt = split(el[1:-1])
            for k, val in v.items():
                pad(buf, 8)
                put(buf, kt, k)
                put(buf, vt, val)
        else:
            for item in v:
                put(buf, el, item)
        struct.pack_into('<I', buf, at, len(buf) - start)
    else:
        raise ValueError('type ' + t)

serial = 0

def message(kind, path, interface, member, dest=None, sig='', args=()):
    global serial
    serial += 1
    body = bytearray()
    for t, v in zip(split(sig), args):
        put(body, t, v)
    fields = [[1, ['o', path]], [3, ['s', member]]]
    if interface: fields.append([2, ['s', interface]])
    if dest: fields.append([6, ['s', dest]])
    if sig: fields.append([8, ['g', sig]])
    msg = bytearray(b'l') + bytes([kind, 0, 1]) + struct.pack('<II', len(body), serial)
    put(msg, 'a(yv)', fields)
    pad(msg, 8)
    return bytes(msg + body)

def recv_exact(s, n):
    data = b''
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk: raise EOFError('bus closed the connection')
        data += chunk
    return data

def read_message(s):
    head = recv_exact(s, 16)
    body_len, _, fields_len = struct.unpack_from('<III', head, 4)
    rest = recv_exact(s, (fields_len + 7) // 8 * 8 + body_len)
    fields = rest[:fields_len]
    body = rest[(fields_len + 7) // 8 * 8:]
    return head[1], fields, body

def call(s, member, sig='', args=()):
    # A method call to the bus driver; returns (ok, first string of the reply or the error name).
    s.sendall(message(1, '/org/freedesktop/DBus', 'org.freedesktop.DBus', member, 'org.freedesktop.DBus', sig, args))
    while True:
        kind, fields, body = read_message(s)
        if kind in (2, 3):
            if kind == 2:
                text = body[4:4 + struct.unpack_from('<I', body, 0)[0]].decode() if len(body) >= 4 and member != 'RequestName' else ''
                if member == 'RequestName': text = str(struct.unpack_from('<I', body, 0)[0])
                return True, text
            raw = fields.decode('latin1')
            i = raw.find('org.freedesktop.DBus.Error.')
            return False, raw[i:raw.index('\0', i)] if i >= 0 else 'error'

def subst(v, me):
    if isinstance(v, str): return v.replace('$SELF', me)
    if isinstance(v, list): return [subst(x, me) for x in v]
    if isinstance(v, dict): return {subst(k, me): subst(x, me) for k, x in v.items()}
    return v

def main():
    bus, plan = sys.argv[1], json.loads(sys.argv[2])
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(bus)
    s.sendall(b'\0AUTH EXTERNAL ' + str(os.getuid()).encode().hex().encode() + b'\r\n')
    line = b''
    while not line.endswith(b'\r\n'):
        line += s.recv(1)
    if not line.startswith(b'OK'): raise SystemExit('auth refused: %r' % line)
    s.sendall(b'BEGIN\r\n')
    ok, me = call(s, 'Hello')
    print('self=' + me, flush=True)
    for op in plan:
        if op['op'] == 'request_name':
            ok, text = call(s, 'RequestName', 'su', [op['name'], 0])
            print('request_name=' + ('granted:' + text if ok else 'denied:' + text), flush=True)
        elif op['op'] == 'sleep':
            time.sleep(op['seconds'])
        elif op['op'] == 'signal':
            op = subst(op, me)
            s.sendall(message(4, op['path'], op['interface'], op['member'], op.get('dest'), op['signature'], op['args']))
    # A round trip: the bus has routed every signal above once this is answered.
    call(s, 'GetId')
    print('done', flush=True)

main()
"""#
}

@Suite("D-Bus: signals forged by another uid on a bus with the system policy change nothing", .serialized,
       .enabled(if: canCreateNamespaces && DBusForgeryBench.available,
                "needs root, \(EAPLab.programs.joined(separator: ", ")), /usr/bin/python3, setpriv, busctl and the Debian dbus system policy with wpa_supplicant's policy file"))
struct DBusForgeryTests {
    @Test("no supplicant, then a failing one: forged success (unicast and broadcast, uid 65534) is ignored, counted and logged with the uid")
    func forgedSuccess() throws {
        let bench = try DBusForgeryBench()
        defer { bench.cleanup() }

        // No supplicant on the bus: the forger claims its name and reports a completed EAP-TLS.
        try bench.wait("source connected") { _ in bench.log.text.contains("wpa_supplicant is not on the bus yet") }
        let (idle, _) = try bench.forgeBothWays { DBusForgeryBench.successForgery(destination: $0) }
        #expect(bench.published.last.isEmpty, "\(bench.published.last)")
        let allEmpty = bench.published.since(0).allSatisfy { $0.isEmpty }
        #expect(allEmpty)
        #expect(bench.log.text.contains("sender=\(idle) sender_uid=65534"), "\(bench.log.text)")

        // A supplicant whose certificate the authenticator refuses: EAP failure.
        try bench.startSupplicant(.rogue)
        let failed = try bench.wait("EAP failure") { $0["tcx0"]?.eapState == "FAILURE" }
        #expect(failed["tcx0"]?.portStatus == .unauthorized && failed["tcx0"]?.successes == 0)
        let mark = bench.published.count
        let (sender, _) = try bench.forgeBothWays { DBusForgeryBench.successForgery(destination: $0) }
        Thread.sleep(forTimeInterval: 0.2)
        let after = bench.published.last["tcx0"]
        #expect(after?.portStatus == .unauthorized && after?.eapState == "FAILURE" && after?.successes == 0 && after?.serverChain == [],
                "\(String(describing: after))")
        let neverAuthorized = bench.published.since(mark).allSatisfy { $0["tcx0"]?.portStatus != .authorized }
        #expect(neverAuthorized, "\(bench.published.since(mark))")
        // Logged once per sender, with its uid; the rest counted.
        let lines = bench.log.lines.withLock { $0 }.filter { $0.contains("sender=\(sender) ") }
        #expect(lines.count == 1 && lines.first?.hasPrefix("warning") == true && lines.first?.contains("sender_uid=65534") == true, "\(lines)")
    }

    @Test("an authorized port: forged NameOwnerChanged/removal/failure (unicast and broadcast) drop nothing; the real ones still count; reauthenticate gives a fresh success")
    func forgedDropAndReauthentication() throws {
        let bench = try DBusForgeryBench()
        defer { bench.cleanup() }

        try bench.startSupplicant(.client)
        let ok = try bench.wait("EAP-TLS success") { $0["tcx0"]?.isComplete == true && ($0["tcx0"]?.successes ?? 0) >= 1 }
        let auth = try #require(ok["tcx0"])
        #expect(auth.eapMethod == "TLS" && auth.identity == EAPLab.identity)
        // The server's chain from the Certification signals, checked against the lab's files.
        let depths = auth.serverChain.map { $0.depth }
        #expect(depths == [0, 1], "\(auth.serverChain)")
        #expect(auth.serverChain.first?.subject.contains("CN=server") == true && auth.serverChain.last?.subject.contains("CN=segguard-test-ca") == true)
        let serverHash = try bench.fingerprint("server"), caHash = try bench.fingerprint("ca")
        #expect(auth.serverChain.first?.sha256 == serverHash)
        #expect(auth.serverChain.last?.sha256 == caHash)

        let owner = try bench.supplicantOwner()
        let mark = bench.published.count
        _ = try bench.forgeBothWays { DBusForgeryBench.dropForgery(destination: $0, owner: owner) }
        _ = try bench.forgeBothWays { DBusForgeryBench.successForgery(destination: $0) }
        Thread.sleep(forTimeInterval: 0.2)
        #expect(bench.published.since(mark).isEmpty, "forged signals changed the published state: \(bench.published.since(mark))")
        #expect(bench.published.last["tcx0"] == auth)

        // The honest path still works: our own re-authentication request, answered by a fresh
        // EAP-TLS exchange (successes grows, the chain is read again).
        let start = Date()
        bench.source.reauthenticate(interface: "tcx0")
        let callSeconds = Date().timeIntervalSince(start)
        #expect(callSeconds < 0.05, "reauthenticate must return at once (took \(callSeconds) s)")
        // The logoff is published (port unauthorized, same count) before any new success; it
        // may be short, so the history is searched, not the last map.
        let deadline = Date().addingTimeInterval(10)
        var loggedOff: DeviceAuthState?
        while loggedOff == nil && Date() < deadline {
            loggedOff = bench.published.since(mark).lazy.compactMap { $0["tcx0"] }.first { $0.portStatus == .unauthorized }
            usleep(10_000)
        }
        #expect(loggedOff?.successes == auth.successes, "\(bench.published.since(mark))")
        // Known issue: with wpa_supplicant 2.10 -Dwired and hostapd 2.10 (driver=wired) the
        // exchange that EAPLogoff+EAPLogon starts sometimes stalls after the server's
        // certificate (no EAP success within 10 s); other runs complete it. With EAPLogon 0.5 s
        // after EAPLogoff no exchange started at all (tried once).
        var freshCount = auth.successes
        withKnownIssue("the EAP-TLS exchange after EAPLogoff+EAPLogon does not always complete against hostapd driver=wired (issue 17, open)", isIntermittent: true) {
            let fresh = try bench.wait("fresh success after reauthenticate") {
                $0["tcx0"]?.isComplete == true && ($0["tcx0"]?.successes ?? 0) > auth.successes
            }
            let freshSeconds = Date().timeIntervalSince(start)
            let freshHashes = fresh["tcx0"]?.serverChain.map { $0.sha256 }
            #expect(freshHashes == [serverHash, caHash])
            freshCount = fresh["tcx0"]?.successes ?? freshCount
            print("reauthenticate: returned in \(Int(callSeconds * 1_000_000)) µs, fresh EAP-TLS success after \(Int(freshSeconds * 1000)) ms")
        }

        // The bus driver's own NameOwnerChanged still counts: the supplicant dies, the state goes.
        bench.lab.killSupplicant()
        try bench.wait("supplicant gone") { $0["tcx0"] == nil }
        // A new supplicant: a new owner whose interface is read again; the success count does
        // not go back. (Its EAP success after a killed one is not awaited: see the known issue.)
        try bench.startSupplicant(.client)
        let again = try bench.wait("interface of the new supplicant") { $0["tcx0"] != nil }
        #expect((again["tcx0"]?.successes ?? 0) >= freshCount)
        #expect(try bench.supplicantOwner() != owner)
    }
}
