// Network identity on the real kernel (issue 17): wide routes, nexthop objects and neighbour
// entries as the watcher sees them; then the built segguardd deciding an "office" namespace
// (pinned gateway MAC, trusted TLS server with a pinned key) against a "home router" and a
// VPN-style split route. Each test owns its namespaces (client and peer) and processes and
// removes them in `defer`. Without root they are skipped with the reason shown.

import Foundation
import SegguardDecision
import SegguardNetlink
import SegguardPKI
import SegguardPolicy
import SegguardProbe
import SegguardTestSupport
import SegguardWire
import Testing

#if canImport(Glibc)
import Glibc
#endif

private let python3 = "/usr/bin/python3"

/// Sends one UDP datagram from inside `namespace` to `address` (port 9, discard): enough to make
/// the kernel resolve the neighbour (ARP) of the next hop.
private func sendDatagram(in namespace: TestNamespace, to address: String) throws {
    try runCommand(["ip", "netns", "exec", namespace.name, python3, "-c",
                    "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'x', ('\(address)', 9))"])
}

/// A veth pair: `name` (index `index`) in `client`, `peerName` (index `peerIndex`) in `peer`; both up.
private func crossVeth(_ client: TestNamespace, _ name: String, index: Int, peer: TestNamespace, _ peerName: String, index peerIndex: Int, peerMAC: String? = nil) throws {
    try client.ip("link", "add", name, "index", "\(index)", "type", "veth", "peer", "name", peerName, "index", "\(peerIndex)", "netns", peer.name)
    if let peerMAC { try peer.ip("link", "set", "dev", peerName, "address", peerMAC) }
    try client.ip("link", "set", name, "up")
    try peer.ip("link", "set", peerName, "up")
}

// MARK: - Watcher level

@Suite("Network identity facts from rtnetlink on the real kernel", .serialized,
       .enabled(if: canCreateNamespaces && FileManager.default.isExecutableFile(atPath: python3),
                "needs root, iproute2 (network namespaces) and /usr/bin/python3 (traffic that resolves a neighbour)"))
struct NetworkIdentityTestsNetlink {
    @Test("split routes 0.0.0.0/1 + 128.0.0.0/1 (and a /7) are wide routes of their interface; removing them removes them")
    func splitRoutes() throws {
        let w = try WatchedNamespace { ns in try ns.addVeth("sgnw0", index: 4901, peer: "sgnwp0", index: 4902) }
        defer { w.close() }
        let s0 = try #require(w.recorder.wait { $0["sgnw0"]?.isRunning == true })
        #expect(s0["sgnw0"]?.defaultRoutes.isEmpty == true)

        try w.ns.ip("route", "add", "0.0.0.0/1", "dev", "sgnw0")
        try w.ns.ip("route", "add", "128.0.0.0/1", "dev", "sgnw0")
        let s1 = try #require(w.recorder.wait(after: s0.generation) { $0["sgnw0"]?.defaultRoutes.count == 2 },
                              "the split halves never showed: \(String(describing: w.recorder.latest?["sgnw0"]?.defaultRoutes))")
        let sgn = try #require(s1["sgnw0"])
        #expect(sgn.defaultRoutes.map(\.description) == ["0.0.0.0/1", "128.0.0.0/1"])
        #expect(Set(sgn.defaultRoutes.compactMap(\.destination)) == [IPPrefix("0.0.0.0/1")!, IPPrefix("128.0.0.0/1")!])
        #expect(sgn.isUplink)
        #expect(s1["sgnwp0"]?.defaultRoutes.isEmpty == true)

        // A /7 still covers 1/128 of the internet; a /8 does not count.
        try w.ns.ip("route", "add", "64.0.0.0/7", "dev", "sgnwp0")
        try w.ns.ip("route", "add", "10.0.0.0/8", "dev", "sgnwp0")
        let s2 = try #require(w.recorder.wait(after: s1.generation) { $0["sgnwp0"]?.defaultRoutes.isEmpty == false })
        #expect(s2["sgnwp0"]?.defaultRoutes.map(\.description) == ["64.0.0.0/7"])

        try w.ns.ip("route", "del", "0.0.0.0/1", "dev", "sgnw0")
        try w.ns.ip("route", "del", "128.0.0.0/1", "dev", "sgnw0")
        let s3 = try #require(w.recorder.wait(after: s2.generation) { $0["sgnw0"]?.defaultRoutes.isEmpty == true })
        #expect(s3["sgnw0"]?.isUplink == false)
        #expect(s3["sgnwp0"]?.defaultRoutes.map(\.description) == ["64.0.0.0/7"])
    }

    @Test("nexthop_compat_mode=0: a default route through a nexthop object (and a group) is a default route of the hops' interfaces; deleting the nexthop removes it")
    func nexthopObjects() throws {
        let w = try WatchedNamespace { ns in
            // Per network namespace (net.ipv4.nexthop_compat_mode); the host keeps its own.
            try runCommand(["ip", "netns", "exec", ns.name, "sysctl", "-q", "-w", "net.ipv4.nexthop_compat_mode=0"])
            try ns.addVeth("sgnh0", index: 4903, peer: "sgnhp0", index: 4904)
            try ns.addVeth("sgnh1", index: 4905, peer: "sgnhp1", index: 4906)
            try ns.ip("addr", "add", "10.61.0.2/24", "dev", "sgnh0")
            try ns.ip("addr", "add", "10.62.0.2/24", "dev", "sgnh1")
        }
        defer { w.close() }
        #expect(try runCommand(["ip", "netns", "exec", w.ns.name, "cat", "/proc/sys/net/ipv4/nexthop_compat_mode"]).hasPrefix("0"))
        let s0 = try #require(w.recorder.wait { $0["sgnh0"]?.isRunning == true && $0["sgnh1"]?.isRunning == true })

        try w.ns.ip("nexthop", "add", "id", "41", "via", "10.61.0.1", "dev", "sgnh0")
        try w.ns.ip("route", "add", "default", "nhid", "41")
        // With compat mode 0 the kernel's route names only the nexthop (no RTA_OIF/RTA_GATEWAY).
        let kernel = try w.ns.ip("route", "show", "default")
        #expect(kernel.contains("nhid 41") && !kernel.contains("dev"), "\(kernel)")
        let s1 = try #require(w.recorder.wait(after: s0.generation) { $0["sgnh0"]?.defaultRoutes.isEmpty == false },
                              "route through nexthop 41 never showed on sgnh0")
        #expect(s1["sgnh0"]?.defaultRoutes.map(\.description) == ["0.0.0.0/0 via 10.61.0.1"])
        #expect(s1["sgnh1"]?.defaultRoutes.isEmpty == true)

        // A group of two hops on two interfaces: the route shows on both.
        try w.ns.ip("nexthop", "add", "id", "42", "via", "10.62.0.1", "dev", "sgnh1")
        try w.ns.ip("nexthop", "add", "id", "43", "group", "41/42")
        try w.ns.ip("route", "del", "default", "nhid", "41")
        try w.ns.ip("route", "add", "default", "nhid", "43")
        let s2 = try #require(w.recorder.wait(after: s1.generation) { s in
            s["sgnh1"]?.defaultRoutes.isEmpty == false && s["sgnh0"]?.defaultRoutes.count == 1
        }, "the group's route never showed on both interfaces: \(String(describing: w.recorder.latest.map { ($0["sgnh0"]?.defaultRoutes, $0["sgnh1"]?.defaultRoutes) }))")
        #expect(s2["sgnh0"]?.defaultRoutes.map(\.description) == ["0.0.0.0/0 via 10.61.0.1"])
        #expect(s2["sgnh1"]?.defaultRoutes.map(\.description) == ["0.0.0.0/0 via 10.62.0.1"])
        #expect(s2["sgnh0"]?.isUplink == true && s2["sgnh1"]?.isUplink == true)

        // Deleting the group deletes the route through it (the kernel sends no RTM_DELROUTE).
        try w.ns.ip("nexthop", "del", "id", "43")
        #expect(try w.ns.ip("route", "show", "default").isEmpty)
        let s3 = try #require(w.recorder.wait(after: s2.generation) { s in
            s["sgnh0"]?.defaultRoutes.isEmpty == true && s["sgnh1"]?.defaultRoutes.isEmpty == true
        }, "stale routes after deleting the group: \(String(describing: w.recorder.latest.map { ($0["sgnh0"]?.defaultRoutes, $0["sgnh1"]?.defaultRoutes) }))")

        // A single nexthop deleted under its route, and a split route through a nexthop.
        try w.ns.ip("route", "add", "default", "nhid", "42")
        try w.ns.ip("route", "add", "128.0.0.0/1", "nhid", "41")
        let s4 = try #require(w.recorder.wait(after: s3.generation) { s in
            s["sgnh1"]?.defaultRoutes.count == 1 && s["sgnh0"]?.defaultRoutes.count == 1
        })
        #expect(s4["sgnh0"]?.defaultRoutes.map(\.description) == ["128.0.0.0/1 via 10.61.0.1"])
        try w.ns.ip("nexthop", "del", "id", "42")
        try w.ns.ip("nexthop", "del", "id", "41")
        let s5 = try #require(w.recorder.wait(after: s4.generation) { s in
            s["sgnh0"]?.defaultRoutes.isEmpty == true && s["sgnh1"]?.defaultRoutes.isEmpty == true
        })
        #expect(s5["sgnh0"]?.isUplink == false && s5["sgnh1"]?.isUplink == false)
    }

    @Test("`ip route replace` of a default route leaves one route in the snapshot, as in the kernel")
    func routeReplace() throws {
        let w = try WatchedNamespace { ns in
            try ns.addVeth("sgnr0", index: 4909, peer: "sgnrp0", index: 4910)
            try ns.ip("addr", "add", "10.64.0.2/24", "dev", "sgnr0")
            try ns.ip("route", "add", "default", "via", "10.64.0.1", "dev", "sgnr0")
        }
        defer { w.close() }
        let s0 = try #require(w.recorder.wait { $0["sgnr0"]?.defaultRoutes.isEmpty == false })
        #expect(s0["sgnr0"]?.defaultRoutes.map(\.description) == ["0.0.0.0/0 via 10.64.0.1"])

        // NLM_F_REPLACE: the kernel sends one RTM_NEWROUTE for the new route and no RTM_DELROUTE
        // for the one it replaced (DHCP clients and NetworkManager replace routes this way).
        try w.ns.ip("route", "replace", "default", "via", "10.64.0.3", "dev", "sgnr0")
        #expect(try w.ns.ip("route", "show", "default").trimmingCharacters(in: .whitespacesAndNewlines) == "default via 10.64.0.3 dev sgnr0")
        let s1 = try #require(w.recorder.wait(after: s0.generation) { s in
            s["sgnr0"]?.defaultRoutes.contains { $0.gateway == IPAddress("10.64.0.3") } == true
        })
        #expect(s1["sgnr0"]?.defaultRoutes.map(\.description) == ["0.0.0.0/0 via 10.64.0.3"])
    }

    @Test("neighbour entries: a manual reachable entry and one learned from traffic appear with their MAC; nud failed and delete remove them")
    func neighbours() throws {
        let peer = try TestNamespace(prefix: "sgnip")
        defer { peer.destroy() }
        let w = try WatchedNamespace { ns in
            try crossVeth(ns, "sgnn0", index: 4907, peer: peer, "sgnnp0", index: 4908, peerMAC: "02:00:5e:00:cc:01")
            try ns.ip("addr", "add", "10.63.0.2/24", "dev", "sgnn0")
            try peer.ip("addr", "add", "10.63.0.1/24", "dev", "sgnnp0")
        }
        defer { w.close() }
        let s0 = try #require(w.recorder.wait { $0["sgnn0"]?.isRunning == true })
        #expect(s0["sgnn0"]?.neighbours.contains { $0.address == IPAddress("10.63.0.1") } == false)

        // Manual entry.
        try w.ns.ip("neigh", "replace", "10.63.0.9", "lladdr", "02:00:5e:00:cc:09", "dev", "sgnn0", "nud", "reachable")
        let s1 = try #require(w.recorder.wait(after: s0.generation) { $0["sgnn0"]?.neighbour(IPAddress("10.63.0.9")!) != nil })
        #expect(s1["sgnn0"]?.neighbour(IPAddress("10.63.0.9")!)?.mac == MACAddress("02:00:5e:00:cc:09"))

        // Learned: one datagram to the peer makes the kernel resolve it by ARP.
        try sendDatagram(in: w.ns, to: "10.63.0.1")
        let s2 = try #require(w.recorder.wait(after: s1.generation) { $0["sgnn0"]?.neighbour(IPAddress("10.63.0.1")!) != nil },
                              "ARP for 10.63.0.1 never showed: kernel says \((try? w.ns.ip("neigh", "show", "dev", "sgnn0")) ?? "?")")
        #expect(s2["sgnn0"]?.neighbour(IPAddress("10.63.0.1")!)?.mac == MACAddress("02:00:5e:00:cc:01"))
        #expect(s2["sgnnp0"] == nil, "the peer end lives in the peer namespace")

        // An entry marked failed is no longer resolved: removed; then a deleted one.
        try w.ns.ip("neigh", "replace", "10.63.0.9", "dev", "sgnn0", "nud", "failed")
        let s3 = try #require(w.recorder.wait(after: s2.generation) { $0["sgnn0"]?.neighbour(IPAddress("10.63.0.9")!) == nil })
        #expect(s3["sgnn0"]?.neighbour(IPAddress("10.63.0.1")!) != nil)
        try w.ns.ip("neigh", "del", "10.63.0.1", "dev", "sgnn0")
        let s4 = try #require(w.recorder.wait(after: s3.generation) { $0["sgnn0"]?.neighbour(IPAddress("10.63.0.1")!) == nil })
        // IPv6 link-local neighbours (the peer's, from neighbour discovery) may be there too.
        let v4 = { (s: NetworkSnapshot) in s["sgnn0"]?.neighbours.filter { $0.address.family == .ipv4 } ?? [] }
        #expect(v4(s4).isEmpty, "\(v4(s4))")

        // A MAC change of the neighbour (another router at the same address) replaces the entry.
        try w.ns.ip("neigh", "replace", "10.63.0.1", "lladdr", "02:00:5e:00:cc:02", "dev", "sgnn0", "nud", "reachable")
        let s5 = try #require(w.recorder.wait(after: s4.generation) { $0["sgnn0"]?.neighbour(IPAddress("10.63.0.1")!) != nil })
        #expect(s5["sgnn0"]?.neighbour(IPAddress("10.63.0.1")!)?.mac == MACAddress("02:00:5e:00:cc:02"))
        try w.ns.ip("neigh", "replace", "10.63.0.1", "lladdr", "02:00:5e:00:cc:01", "dev", "sgnn0", "nud", "reachable")
        let s6 = try #require(w.recorder.wait(after: s5.generation) { $0["sgnn0"]?.neighbour(IPAddress("10.63.0.1")!)?.mac == MACAddress("02:00:5e:00:cc:01") })
        #expect(v4(s6).map(\.description) == [Neighbour(address: IPAddress("10.63.0.1")!, mac: MACAddress("02:00:5e:00:cc:01")!).description])
        print("neighbours of sgnn0 at the end: \(s6["sgnn0"]?.neighbours.map(\.description) ?? [])")
    }
}

// MARK: - segguardd level

/// A certificate for a stand-in TLS server at `address`, written to `dir`; (cert, key, SPKI SHA-256 hex).
private func makeServerCertificate(_ name: String, address: String, in dir: URL) throws -> (String, String, String) {
    let ca = try PKI.makeCA(commonName: "identity test CA \(name)")
    let cert = try PKI.issueServer(ca: ca, commonName: "\(name).office.test", dnsNames: ["\(name).office.test"], ipAddresses: [address])
    let certPath = dir.appendingPathComponent("\(name).crt").path, keyPath = dir.appendingPathComponent("\(name).key").path
    try cert.certificatePEM.write(toFile: certPath, atomically: true, encoding: .utf8)
    try cert.privateKeyPEM.write(toFile: keyPath, atomically: true, encoding: .utf8)
    return (certPath, keyPath, try TrustedServer.spkiSHA256(certificatePEM: cert.certificatePEM))
}

/// A TLS server: handshake, then close; prints "ready" once it listens.
private let identityTLSServerScript = """
    import socket, ssl, sys, threading
    address, port, cert, key = sys.argv[1:5]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, int(port)))
    s.listen(64)
    def handle(conn):
        conn.settimeout(5)
        try:
            with ctx.wrap_socket(conn, server_side=True):
                pass
        except Exception:
            pass
        finally:
            conn.close()
    def serve():
        while True:
            conn, _ = s.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()
    """

/// Starts the stand-in TLS server in `namespace`; returns once it listens (the caller kills it).
private func startTLSServer(in namespace: TestNamespace, address: String, port: UInt16, cert: String, key: String, dir: URL) throws -> Process {
    let script = dir.appendingPathComponent("tls-server.py").path
    try identityTLSServerScript.write(toFile: script, atomically: true, encoding: .utf8)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/ip")
    p.arguments = ["netns", "exec", namespace.name, python3, "-u", script, address, "\(port)", cert, key]
    let out = Pipe(), input = Pipe()
    p.standardOutput = out
    p.standardInput = input
    let log = dir.appendingPathComponent("tls-\(namespace.name)-\(port).log")
    _ = FileManager.default.createFile(atPath: log.path, contents: nil)
    p.standardError = try FileHandle(forWritingTo: log)
    try p.run()
    var seen = Data()
    while !String(decoding: seen, as: UTF8.self).contains("ready") {
        let chunk = out.fileHandleForReading.availableData
        if chunk.isEmpty {
            stopProcess(p)
            throw CommandError(description: "stand-in TLS server in \(namespace.name) did not start: \((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
        }
        seen.append(chunk)
    }
    return p
}

private func stopProcess(_ p: Process) {
    guard p.isRunning else { return }
    kill(p.processIdentifier, SIGKILL)
    p.waitUntilExit()
}

/// segguardd in a client namespace with a peer namespace (the "office" or "home" LAN) on the
/// other end of one veth; `cleanup()` stops every process and removes both namespaces.
private final class IdentityLab {
    let peer: TestNamespace
    let daemon: RunningDaemon
    /// When segguardd was started (after the namespaces, links and servers were set up).
    let started: Date
    var servers: [Process] = []

    /// `setup` runs before segguardd starts, with (client, peer); processes it returns are
    /// killed by `cleanup()` (or at once if the start fails).
    init(policy: String, setup: (TestNamespace, TestNamespace) throws -> [Process]) throws {
        peer = try TestNamespace(prefix: "sgnip")
        var made: [Process] = []
        do {
            let p = peer
            daemon = try RunningDaemon(policy: policy) { ns in made = try setup(ns, p) }
            started = Date()
            servers = made
        } catch {
            made.forEach(stopProcess)
            peer.destroy()
            throw error
        }
    }

    var client: TestNamespace { daemon.ns }

    func cleanup() {
        servers.forEach(stopProcess)
        daemon.cleanup()
        peer.destroy()
    }

    /// Polls `segguardctl status --json` until `predicate` holds or `timeout` passes; returns the
    /// matching status (or nil) and the last status seen (for the failure message).
    func status(timeout: Double = 15, until predicate: (StatusReply) -> Bool) -> (StatusReply?, StatusReply?) {
        let deadline = Date().addingTimeInterval(timeout)
        var last: StatusReply?
        while Date() < deadline {
            if let (rc, out, _) = try? daemon.ctl(["status", "--json", "--socket", daemon.socket]), rc == 0,
               let reply = try? ControlCoding.decoder().decode(ControlReply.self, from: Data(out.utf8)), let s = reply.status {
                last = s
                if predicate(s) { return (s, s) }
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        return (nil, last)
    }

    var elapsed: Double { Date().timeIntervalSince(started) }
}

private let officeMAC = "02:00:5e:00:aa:01"
private let homeMAC = "02:00:5e:00:bb:01"

private func gatewayPolicy(_ name: String) -> String {
    """
    schema_version: 2
    name: \(name)
    sites:
      - name: hq
        wired:
          - interfaces: ["sgnd*"]
            link_kinds: [veth]
            gateway:
              - {address: 10.49.0.1, mac: "\(officeMAC)"}
    uplinks: {other_uplinks: deny}
    vdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}
    """
}

private func trustedServerPolicy(_ name: String, pin: String) -> String {
    """
    schema_version: 2
    name: \(name)
    sites:
      - name: hq
        wired:
          - interfaces: ["sgnd*"]
            link_kinds: [veth]
            trusted_server: {address: 10.49.0.5, port: 8443, spki_sha256: ["\(pin)"]}
    uplinks: {other_uplinks: deny}
    vdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}
    """
}

/// The DHCP-style client side: address and default route via the gateway.
private func lan(_ client: TestNamespace, _ peer: TestNamespace, index: Int, mac: String, gateway: String, client address: String, prefix: Int,
                 extraPeerAddresses: [String] = []) throws {
    try crossVeth(client, "sgnd0", index: index, peer: peer, "sgndp0", index: index + 1, peerMAC: mac)
    try peer.ip("addr", "add", "\(gateway)/\(prefix)", "dev", "sgndp0")
    for a in extraPeerAddresses { try peer.ip("addr", "add", "\(a)/\(prefix)", "dev", "sgndp0") }
    try client.ip("addr", "add", "\(address)/\(prefix)", "dev", "sgnd0")
    try client.ip("route", "add", "default", "via", gateway, "dev", "sgnd0")
}

private func describe(_ s: StatusReply?) -> String {
    guard let s else { return "(no status)" }
    let ifc = s.snapshot.interfaces.first { $0.name == "sgnd0" }
    return "\(s.decision.segment.rawValue): \(s.decision.reason) | sgnd0 neighbours \(ifc?.neighbours.map(\.description) ?? []), routes \(ifc?.defaultRoutes.map(\.description) ?? []), servers \(ifc?.trustedServers.map { "\($0.server) \($0.proven) \($0.detail)" } ?? [])"
}

@Suite("segguardd decides the network's identity (gateway MAC, split routes, trusted server)", .serialized,
       .enabled(if: canCreateNamespaces && FileManager.default.isExecutableFile(atPath: python3),
                "needs root, iproute2 (network namespaces) and /usr/bin/python3 (traffic and the stand-in TLS server)"))
struct NetworkIdentityTests {
    @Test("office: the pinned gateway MAC authorizes once the neighbour is resolved; a VPN-style split route on a second interface is a second uplink")
    func officeGateway() throws {
        let lab = try IdentityLab(policy: gatewayPolicy("identity-office")) { c, p in
            try lan(c, p, index: 4911, mac: officeMAC, gateway: "10.49.0.1", client: "10.49.0.23", prefix: 16)
            return []
        }
        defer { lab.cleanup() }

        // No traffic from the test: segguardd makes the kernel resolve the pinned gateway itself
        // (one empty datagram to its discard port, out of sgnd0) and hears RTM_NEWNEIGH.
        let (ok, last) = lab.status { $0.decision.segment == .authorizedWired }
        let authorized = try #require(ok, "not authorized: segguardd did not resolve the pinned gateway: \(describe(last))")
        print(String(format: "office gateway: authorized-wired %.3f s after segguardd start, the gateway resolved by segguardd", lab.elapsed))
        #expect(authorized.decision.reason.contains("gateway 10.49.0.1 at \(officeMAC)"), "\(authorized.decision.reason)")
        #expect(authorized.decision.authorizedInterfaces == ["sgnd0"])
        #expect(try lab.client.ip("neigh", "show", "10.49.0.1", "dev", "sgnd0").contains(officeMAC))

        // A VPN client's split default route on a second interface (a veth: this kernel may
        // lack the dummy module, and a tun without its VPN process has no carrier).
        try lab.client.addVeth("sgvpn0", index: 4915, peer: "sgvpnp0", index: 4916)
        try lab.client.ip("route", "add", "0.0.0.0/1", "dev", "sgvpn0")
        try lab.client.ip("route", "add", "128.0.0.0/1", "dev", "sgvpn0")
        let (vpn, lastVPN) = lab.status { $0.decision.segment == .unauthorized }
        let split = try #require(vpn, "the split route did not unauthorize: \(describe(lastVPN))")
        #expect(split.decision.reason.contains("sgvpn0 (virtual veth) is a second uplink (default route 0.0.0.0/1, 128.0.0.0/1)"), "\(split.decision.reason)")
        #expect(split.decision.reason.contains("0.0.0.0/1") && split.decision.reason.contains("128.0.0.0/1"), "\(split.decision.reason)")
        print("office + split route: \(split.decision.reason)")

        try lab.client.ip("link", "del", "sgvpn0")
        let (back, lastBack) = lab.status { $0.decision.segment == .authorizedWired }
        #expect(back != nil, "not re-authorized after the VPN interface went: \(describe(lastBack))")
    }

    @Test("home router: another gateway address and MAC is unauthorized, naming the gateway")
    func homeRouter() throws {
        let lab = try IdentityLab(policy: gatewayPolicy("identity-home")) { c, p in
            try lan(c, p, index: 4913, mac: homeMAC, gateway: "192.168.1.1", client: "192.168.1.23", prefix: 24)
            return []
        }
        defer { lab.cleanup() }
        try sendDatagram(in: lab.client, to: "192.168.1.1")
        let expected = "its default gateway 192.168.1.1 at \(homeMAC) is not an office gateway"
        let (hit, last) = lab.status { $0.decision.reason.contains(expected) }
        let s = try #require(hit, "reason never named the home gateway: \(describe(last))")
        #expect(s.decision.segment == .unauthorized)
        #expect(s.decision.reason.contains("(10.49.0.1 at \(officeMAC))"), "\(s.decision.reason)")
        print("home router: \(s.decision.reason)")
    }

    @Test("office gateway address answering from another MAC (a copied address) is unauthorized, naming both MACs")
    func impostorGatewayMAC() throws {
        let lab = try IdentityLab(policy: gatewayPolicy("identity-impostor")) { c, p in
            try lan(c, p, index: 4917, mac: homeMAC, gateway: "10.49.0.1", client: "10.49.0.23", prefix: 16)
            return []
        }
        defer { lab.cleanup() }
        try sendDatagram(in: lab.client, to: "10.49.0.1")
        let (hit, last) = lab.status { $0.decision.reason.contains("answers from MAC") }
        let s = try #require(hit, "\(describe(last))")
        #expect(s.decision.segment == .unauthorized)
        #expect(s.decision.reason.contains("its gateway 10.49.0.1 answers from MAC \(homeMAC), not the office router's \(officeMAC)"), "\(s.decision.reason)")
    }

    @Test("trusted server with the pinned key authorizes (time printed); a server holding another key does not, naming its key")
    func trustedServer() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sg-identity-\(getpid())-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let (goodCert, goodKey, goodPin) = try makeServerCertificate("good", address: "10.49.0.5", in: dir)
        let (otherCert, otherKey, otherPin) = try makeServerCertificate("other", address: "10.49.0.5", in: dir)
        #expect(goodPin != otherPin)

        // The office: the server with the pinned key at 10.49.0.5:8443, listening before segguardd starts.
        do {
            let lab = try IdentityLab(policy: trustedServerPolicy("identity-ts", pin: goodPin)) { c, p in
                try lan(c, p, index: 4921, mac: officeMAC, gateway: "10.49.0.1", client: "10.49.0.23", prefix: 16, extraPeerAddresses: ["10.49.0.5"])
                return [try startTLSServer(in: p, address: "10.49.0.5", port: 8443, cert: goodCert, key: goodKey, dir: dir)]
            }
            defer { lab.cleanup() }
            let (ok, last) = lab.status(timeout: 20) { $0.decision.segment == .authorizedWired }
            let s = try #require(ok, "not authorized by the pinned server: \(describe(last))")
            print(String(format: "trusted server (pinned key): authorized-wired %.3f s after segguardd start", lab.elapsed))
            #expect(s.decision.reason.contains("trusted server 10.49.0.5:8443 proven"), "\(s.decision.reason)")
            let result = s.snapshot.interfaces.first { $0.name == "sgnd0" }?.trustedServers.first
            #expect(result?.proven == true && result?.server == "10.49.0.5:8443", "\(String(describing: result))")
            print("trusted server result: \(result?.detail ?? "none")")

            // Link down and up again: a new carrier epoch is probed again before authorizing.
            try lab.peer.ip("link", "set", "sgndp0", "down")
            let (down, lastDown) = lab.status { $0.decision.segment == .unauthorized }
            #expect(down != nil, "\(describe(lastDown))")
            let up = Date()
            try lab.peer.ip("link", "set", "sgndp0", "up")
            let (again, lastAgain) = lab.status(timeout: 20) { $0.decision.segment == .authorizedWired }
            #expect(again != nil, "not re-authorized after the carrier came back: \(describe(lastAgain))")
            print(String(format: "trusted server (pinned key): authorized-wired again %.3f s after the peer's link up", Date().timeIntervalSince(up)))
        }

        // Another key at the same address and port: unauthorized, naming the key it saw.
        do {
            let lab = try IdentityLab(policy: trustedServerPolicy("identity-ts-other", pin: goodPin)) { c, p in
                try lan(c, p, index: 4923, mac: officeMAC, gateway: "10.49.0.1", client: "10.49.0.23", prefix: 16, extraPeerAddresses: ["10.49.0.5"])
                return [try startTLSServer(in: p, address: "10.49.0.5", port: 8443, cert: otherCert, key: otherKey, dir: dir)]
            }
            defer { lab.cleanup() }
            let (refused, last) = lab.status(timeout: 20) { $0.decision.reason.contains("was not proven") }
            let s = try #require(refused, "no refused probe: \(describe(last))")
            print(String(format: "trusted server (other key): refused %.3f s after segguardd start: %@", lab.elapsed, s.decision.reason))
            #expect(s.decision.segment == .unauthorized)
            #expect(s.decision.reason.contains("the trusted server 10.49.0.5:8443 was not proven"), "\(s.decision.reason)")
            #expect(s.decision.reason.contains(String(otherPin.prefix(16))), "\(s.decision.reason)")
        }
    }
}
