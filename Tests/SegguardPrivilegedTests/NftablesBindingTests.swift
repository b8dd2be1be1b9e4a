// Real-kernel tests of the nftables network binding: per test a client namespace and a
// gateway namespace joined by two veth pairs, a TCP server on the VDI address in the gateway
// namespace, and the binding's table applied inside the client namespace. Without root they
// are skipped with the reason shown.

import Foundation
import Logging
import SegguardDecision
import SegguardEnforce
import SegguardPolicy
import SegguardTestSupport
import Testing

/// Client ⇄ gateway over two paths: sga0 (10.61.1.2) ⇄ gwa0 (10.61.1.1) and sgb0 (10.61.2.2)
/// ⇄ gwb0 (10.61.2.1); the VDI address 10.61.9.1 sits on the gateway's lo with a TCP server
/// on port 8443. Torn down by `close()`.
final class GatewayLab {
    static let vdi = IPAddress("10.61.9.1")!
    static let port: UInt16 = 8443
    static let gateway = Gateway(prefix: IPPrefix("10.61.9.1")!, ports: [8443], transport: .both)
    static let table = "segguard_test"

    let client: TestNamespace
    let gatewayNS: TestNamespace
    let server: NamespaceTCPServer
    /// Created inside the client namespace, so it acts there from any thread.
    let binding: NftablesBinding

    init() throws {
        client = try TestNamespace(prefix: "sgnftc")
        do {
            gatewayNS = try TestNamespace(prefix: "sgnftg")
        } catch {
            client.destroy()
            throw error
        }
        do {
            try client.addVeth("sga0", index: 3201, peer: "gwa0", index: 3202, up: false)
            try client.addVeth("sgb0", index: 3203, peer: "gwb0", index: 3204, up: false)
            try client.ip("link", "set", "gwa0", "netns", gatewayNS.name)
            try client.ip("link", "set", "gwb0", "netns", gatewayNS.name)
            try client.ip("addr", "add", "10.61.1.2/24", "dev", "sga0")
            try client.ip("addr", "add", "10.61.2.2/24", "dev", "sgb0")
            try client.ip("link", "set", "sga0", "up")
            try client.ip("link", "set", "sgb0", "up")
            try gatewayNS.ip("addr", "add", "10.61.9.1/32", "dev", "lo")
            try gatewayNS.ip("addr", "add", "10.61.1.1/24", "dev", "gwa0")
            try gatewayNS.ip("addr", "add", "10.61.2.1/24", "dev", "gwb0")
            try gatewayNS.ip("link", "set", "gwa0", "up")
            try gatewayNS.ip("link", "set", "gwb0", "up")
            try client.ip("route", "add", "10.61.9.1/32", "via", "10.61.1.1", "dev", "sga0")
            server = try NamespaceTCPServer(namespacePath: gatewayNS.path, address: GatewayLab.vdi, port: GatewayLab.port)
            binding = try withNetworkNamespace(client.path) { try NftablesBinding(table: GatewayLab.table) }
        } catch {
            client.destroy()
            gatewayNS.destroy()
            throw error
        }
    }

    func close() {
        server.stop()
        client.destroy()
        gatewayNS.destroy()
    }

    /// Routes the VDI address through path "a" (sga0) or "b" (sgb0).
    func route(via path: String) throws {
        let (gw, dev) = path == "a" ? ("10.61.1.1", "sga0") : ("10.61.2.1", "sgb0")
        try client.ip("route", "replace", "10.61.9.1/32", "via", gw, "dev", dev)
    }

    func apply(_ allowed: [String], _ mode: ControlMode = .enforce) throws {
        try binding.apply(transaction(allowed, mode))
    }

    func transaction(_ allowed: [String], _ mode: ControlMode = .enforce) -> Data {
        NftablesRuleset.transaction(table: GatewayLab.table, gateways: [GatewayLab.gateway], allowedInterfaces: allowed, mode: mode)
    }

    /// TCP connect to the VDI server from the client; short timeout when a drop is expected.
    func connect(timeout: Double = 5) -> Result<Void, SocketFailure> {
        tcpConnect(namespacePath: client.path, address: GatewayLab.vdi, port: GatewayLab.port, timeout: timeout)
    }

    func udp(to address: IPAddress = GatewayLab.vdi, port: UInt16 = GatewayLab.port) -> Result<Void, SocketFailure> {
        udpSend(namespacePath: client.path, address: address, port: port)
    }

    /// Packet counters of the output chain's rules, by role (nil when the table or rule is absent).
    func packets(_ role: NftablesRuleset.RuleRole, chain: String = NftablesRuleset.chainName) throws -> UInt64? {
        guard let listing = try binding.listTable() else { return nil }
        let comment = NftablesRuleset.comment(role, gateway: GatewayLab.gateway)
        return NftablesRuleset.counters(inListing: listing).first { $0.comment == comment && $0.chain == chain }?.packets
    }

    /// TCP connect to the gateway address on another port (nothing listens there: the
    /// gateway's kernel answers with a reset, "Connection refused", unless a drop eats the SYN).
    func connect(port: UInt16, timeout: Double = 1) -> Result<Void, SocketFailure> {
        tcpConnect(namespacePath: client.path, address: GatewayLab.vdi, port: port, timeout: timeout)
    }
}

extension Result where Success == Void {
    var succeeded: Bool { if case .success = self { true } else { false } }
    var error: Failure? { if case .failure(let f) = self { f } else { nil } }
}

@Suite("Nftables binding on the real kernel", .serialized, .enabled(if: canCreateNamespaces, "needs root and iproute2 to create network namespaces"))
struct NftablesBindingTests {
    @Test("enforce: the gateway is reachable only through the authorized interface")
    func enforceFollowsAllowedInterface() throws {
        let lab = try GatewayLab()
        defer { lab.close() }
        try lab.apply(["sga0"])

        #expect(lab.connect().succeeded)
        #expect(lab.server.waitForAccepted(1) == 1)
        #expect(lab.udp().succeeded)
        #expect(try #require(try lab.packets(.allow)) >= 3)  // at least the SYN, the ACK and the datagram
        #expect(try lab.packets(.drop) == 0)

        try lab.route(via: "b")
        #expect(lab.connect(timeout: 1).error == .timedOut)  // the SYN is dropped in the output hook
        #expect(lab.udp().error == .notPermitted)
        #expect(lab.udp().error?.message == "Operation not permitted")
        #expect(lab.server.acceptedCount == 1)
        #expect(try #require(try lab.packets(.drop)) >= 2)
        // Only the gateway's prefix is bound: other destinations on sgb0 still flow.
        #expect(lab.udp(to: IPAddress("10.61.2.1")!, port: 8443).succeeded)

        // A new decision moves the binding to sgb0 in one transaction.
        try lab.apply(["sgb0"])
        #expect(lab.connect().succeeded)
        #expect(lab.server.waitForAccepted(2) == 2)
        try lab.route(via: "a")
        #expect(lab.udp().error == .notPermitted)
    }

    @Test("a rules update moves the binding and removes what was inserted into the chain by hand; an accept in another table does not get past the drop")
    func rulesUpdateOnRealKernel() throws {
        let lab = try GatewayLab()
        defer { lab.close() }
        try lab.apply(["sga0"])
        let applied = try #require(try lab.binding.fingerprint())
        _ = lab.connect()  // counters move; the fingerprint does not
        #expect(try lab.binding.fingerprint() == applied)
        // A local admin's mistake (or a root user's trick): accept everything at the head of the chain.
        try runCommand(["nsenter", "--net=\(lab.client.path)", "nft", "insert", "rule", "inet", GatewayLab.table, "output", "accept"])
        #expect(try lab.binding.fingerprint() != applied, "the repair tick would replace it")
        try runCommand(["nsenter", "--net=\(lab.client.path)", "nft", "add", "table", "inet", "sgnft_other"])
        try runCommand(["nsenter", "--net=\(lab.client.path)", "nft", "add", "chain", "inet", "sgnft_other", "out",
                        "{ type filter hook output priority -10 ; policy accept ; }"])
        try runCommand(["nsenter", "--net=\(lab.client.path)", "nft", "add", "rule", "inet", "sgnft_other", "out", "accept"])
        defer { _ = try? runCommand(["nsenter", "--net=\(lab.client.path)", "nft", "delete", "table", "inet", "sgnft_other"]) }

        try lab.binding.apply(NftablesRuleset.update(table: GatewayLab.table, gateways: [GatewayLab.gateway], allowedInterfaces: ["sgb0"], mode: .enforce))
        let listing = try #require(try lab.binding.listTable())
        let comments = NftablesRuleset.counters(inListing: listing).filter { $0.chain == "output" }.map(\.comment)
        #expect(comments == [NftablesRuleset.comment(.allow, gateway: GatewayLab.gateway), NftablesRuleset.comment(.drop, gateway: GatewayLab.gateway)])
        #expect(!listing.contains(#""expr": [{"accept": null}]"#), "the inserted bare accept is gone")
        #expect(NftablesRuleset.counters(inListing: listing).filter { $0.chain == "forward" }.count == 2)
        // sga0 is no longer allowed: dropped, whatever the other table accepts.
        #expect(lab.connect(timeout: 1).error == .timedOut)
        #expect(lab.udp().error == .notPermitted)
        try lab.route(via: "b")
        #expect(lab.connect().succeeded)

        // The table deleted by hand: no fingerprint; an update cannot apply (the agent then
        // replaces the whole table).
        try lab.binding.deleteTable()
        #expect(try lab.binding.fingerprint() == nil)
        #expect(throws: NftablesError.self) {
            try lab.binding.apply(NftablesRuleset.update(table: GatewayLab.table, gateways: [GatewayLab.gateway], allowedInterfaces: [], mode: .enforce))
        }
    }

    @Test("the binding controller's check sees a rule rewritten in place (comment kept) and a dormant table, and replaces the table")
    func controllerRepairsTamper() throws {
        let lab = try GatewayLab()
        defer { lab.close() }
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let c = BindingController(binding: lab.binding, baselinePath: nil, logger: logger)
        let policy = Policy(name: "t", sites: [], vdi: VDIRule(gateways: [GatewayLab.gateway]))
        let lost = Decision.failClosed("lost")
        #expect(c.enforce(lost, policy: policy, generation: 1) == .applied(mode: .enforce, allowed: []))
        c.readBack()  // what the agent does 0.1 s after each transaction
        #expect(c.repair(lost, policy: policy, generation: 1) == nil, "untouched: nothing to do")
        let nft = ["nsenter", "--net=\(lab.client.path)", "nft"]

        // The drop rule turned into an accept, its comment kept: the gateway is reachable now.
        let listing = try #require(try lab.binding.listTable())
        let handle = try #require(listing.range(of: #""handle": (\d+), "comment": "segguard: [^"]*drop elsewhere""#, options: .regularExpression).flatMap {
            Int(listing[$0].split(separator: ",")[0].split(separator: " ").last ?? "")
        })
        let comment = NftablesRuleset.comment(.drop, gateway: GatewayLab.gateway)
        try runCommand(nft + ["replace", "rule", "inet", GatewayLab.table, "output", "handle", "\(handle)", "ip", "daddr", "10.61.9.1", "accept", "comment", "\"\(comment)\""])
        #expect(lab.connect().succeeded, "the rewritten rule lets the gateway through")
        #expect(c.repair(lost, policy: policy, generation: 1) == .applied(mode: .enforce, allowed: []))
        c.readBack()
        #expect(lab.connect(timeout: 1).error == .timedOut)

        // A dormant table unhooks its chains.
        try runCommand(nft + ["add", "table", "inet", GatewayLab.table, "{ flags dormant ; }"])
        #expect(lab.connect().succeeded, "dormant: nothing filtered")
        #expect(c.repair(lost, policy: policy, generation: 1) == .applied(mode: .enforce, allowed: []))
        #expect(lab.connect(timeout: 1).error == .timedOut)
    }

    @Test("the listed ports narrow what is allowed, never what is dropped: other tcp and udp ports to the gateway are dropped through every interface")
    func unlistedPortsDropped() throws {
        let lab = try GatewayLab()
        defer { lab.close() }
        try lab.route(via: "b")
        // Without the table: nothing listens on tcp/80, so the gateway answers with a reset.
        #expect(lab.connect(port: 80).error == SocketFailure(errno: ECONNREFUSED))
        #expect(lab.udp(port: 53).succeeded)

        try lab.apply(["sga0"])
        // Through the unauthorized interface: every protocol and port to the gateway dropped.
        #expect(lab.connect(port: 80).error == .timedOut)
        #expect(lab.connect(port: 443).error == .timedOut)
        #expect(lab.udp(port: 53).error == .notPermitted)
        #expect(lab.udp(port: 443).error == .notPermitted)
        // Through the authorized interface: the listed port passes, the others are dropped too.
        try lab.route(via: "a")
        #expect(lab.connect().succeeded)
        #expect(lab.connect(port: 80).error == .timedOut)
        #expect(lab.udp(port: 53).error == .notPermitted)
        #expect(lab.udp().succeeded, "udp/8443 is listed (transport both)")
    }

    @Test("forward chain: gateway traffic routed through the client (a local VM or container) leaves only through the authorized interface")
    func forwardedTrafficBound() throws {
        let lab = try GatewayLab()
        defer { lab.close() }
        let vm = try TestNamespace(prefix: "sgnftv")
        defer { vm.destroy() }
        try lab.client.addVeth("sgv0", index: 3205, peer: "vmv0", index: 3206, up: false)
        try lab.client.ip("link", "set", "vmv0", "netns", vm.name)
        try lab.client.ip("addr", "add", "10.61.7.1/24", "dev", "sgv0")
        try lab.client.ip("link", "set", "sgv0", "up")
        try vm.ip("addr", "add", "10.61.7.2/24", "dev", "vmv0")
        try vm.ip("link", "set", "vmv0", "up")
        try vm.ip("route", "add", "default", "via", "10.61.7.1")
        try lab.gatewayNS.ip("route", "add", "10.61.7.0/24", "via", "10.61.1.2")  // replies come back over path a
        _ = try runCommand(["ip", "netns", "exec", lab.client.name, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        func vmConnect(timeout: Double = 5) -> Result<Void, SocketFailure> {
            tcpConnect(namespacePath: vm.path, address: GatewayLab.vdi, port: GatewayLab.port, timeout: timeout)
        }
        #expect(vmConnect().succeeded, "forwarding works without the table")

        try lab.apply(["sga0"])
        #expect(vmConnect().succeeded, "forwarded through the authorized sga0")
        try lab.route(via: "b")
        #expect(vmConnect(timeout: 1).error == .timedOut, "forwarded through the unauthorized sgb0: dropped")
        #expect(try #require(try lab.packets(.drop, chain: "forward")) >= 1)
    }

    @Test("nf_tables notifications: nft's changes to the table are foreign changes naming nft; the binding's own and other tables' are not")
    func monitorSeesForeignChanges() throws {
        let lab = try GatewayLab()
        defer { lab.close() }
        let watched = try withNetworkNamespace(lab.client.path) { try NftablesBinding(table: GatewayLab.table, watchChanges: true) }
        let feed = try #require(watched.changeFeed())
        #expect(watched.changeFeed() == nil, "handed out once")
        /// Waits (bounded) for the feed to become readable, then drains it.
        func next(_ timeout: Int32 = 2000) -> TableChanges {
            var p = pollfd(fd: feed.fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, timeout)
            return feed.drain()
        }
        try watched.apply(lab.transaction(["sga0"]))
        #expect(next(300).isEmpty, "the binding's own transaction")
        let nft = ["nsenter", "--net=\(lab.client.path)", "nft"]
        try runCommand(nft + ["add", "table", "inet", "sgnft_other"])
        try runCommand(nft + ["add", "chain", "inet", "sgnft_other", "c"])
        #expect(next(300).isEmpty, "another table")

        try runCommand(nft + ["insert", "rule", "inet", GatewayLab.table, "output", "accept"])
        let insert = next()
        #expect(insert.foreign.count == 1 && insert.foreign.first?.process == "nft" && (insert.foreign.first?.pid ?? 0) > 0, "\(insert)")
        try runCommand(nft + ["flush", "chain", "inet", GatewayLab.table, "output"])
        #expect(next().foreign.map(\.process) == ["nft"])
        try runCommand(nft + ["flush", "ruleset"])
        #expect(next().foreign.map(\.process) == ["nft"], "the table deleted with the whole ruleset")
        // A transaction from another thread of this process is foreign too: only the threads
        // that ran the binding's own transactions are its own.
        try withNetworkNamespace(lab.client.path) { try lab.apply(["sgb0"]) }
        #expect(next().foreign.count == 1)
    }

    @Test("enforce with no authorized interface: gateway traffic is dropped on both paths")
    func noAllowedInterfaceDropsAll() throws {
        let lab = try GatewayLab()
        defer { lab.close() }
        try lab.apply([])

        #expect(lab.connect(timeout: 1).error == .timedOut)
        #expect(lab.udp().error == .notPermitted)
        try lab.route(via: "b")
        #expect(lab.udp().error == .notPermitted)
        #expect(lab.server.acceptedCount == 0)
        #expect(try lab.packets(.allow) == nil)
        #expect(try #require(try lab.packets(.drop)) >= 3)
    }

    @Test("audit: nothing is blocked; the would-drop counter counts traffic leaving elsewhere")
    func auditBlocksNothing() throws {
        let lab = try GatewayLab()
        defer { lab.close() }
        try lab.apply(["sga0"], .audit)

        #expect(lab.connect().succeeded)
        #expect(try lab.packets(.wouldDrop) == 0)

        try lab.route(via: "b")
        #expect(lab.connect().succeeded)
        #expect(lab.udp().succeeded)
        #expect(lab.server.waitForAccepted(2) == 2)
        #expect(try #require(try lab.packets(.wouldDrop)) >= 3)
        #expect(try lab.packets(.drop) == nil)
        #expect(try lab.packets(.allow) == nil)
    }

    @Test("off: the table is deleted and traffic flows; deleting again is not an error")
    func offRemovesTable() throws {
        let lab = try GatewayLab()
        defer { lab.close() }
        try lab.route(via: "b")
        try lab.apply([])
        #expect(lab.udp().error == .notPermitted)
        #expect(try lab.binding.listTable() != nil)

        try lab.apply(["sga0"], .off)
        #expect(try lab.binding.listTable() == nil)
        #expect(lab.connect().succeeded)
        #expect(lab.udp().succeeded)
        try lab.apply(["sga0"], .off)
        try lab.binding.deleteTable()
        #expect(try lab.binding.listTable() == nil)
    }

    @Test("a failing transaction throws libnftables' text and leaves the previous table in place")
    func failedTransactionKeepsPreviousTable() throws {
        let lab = try GatewayLab()
        defer { lab.close() }
        try lab.apply(["sga0"])
        let before = try #require(try lab.binding.listTable())

        // Rejected by libnftables' parser: an unknown statement in the last rule.
        let bogus = appending("add rule inet \(GatewayLab.table) output bogus", to: lab.transaction(["sgb0"]))
        let parseError = try #require(throws: NftablesError.self) { try lab.binding.apply(bogus) }
        #expect(parseError.operation == "apply the transaction to table inet segguard_test")
        #expect(parseError.detail.contains("syntax error"), "\(parseError.detail)")
        #expect(parseError.description.hasPrefix("nftables: cannot apply the transaction to table inet segguard_test: "))
        #expect(try lab.binding.listTable() == before)

        // Rejected by the kernel: the batch (which had already deleted and re-made our table)
        // also deletes a table that does not exist, so the whole transaction is aborted.
        let kernelRejected = appending("delete table inet segguard_absent", to: lab.transaction(["sgb0"]))
        let kernelError = try #require(throws: NftablesError.self) { try lab.binding.apply(kernelRejected) }
        #expect(kernelError.detail.contains("No such file or directory"), "\(kernelError.detail)")
        #expect(try lab.binding.listTable() == before)

        // Connectivity is what the previous table says: sga0 allowed, sgb0 not.
        #expect(lab.connect().succeeded)
        try lab.route(via: "b")
        #expect(lab.udp().error == .notPermitted)
    }

    @Test("the table outlives the binding object (fail closed), and a binding acts in the namespace it was created in")
    func tableSurvivesRelease() throws {
        let lab = try GatewayLab()
        defer { lab.close() }
        try withNetworkNamespace(lab.client.path) {
            let b = try NftablesBinding(table: "segguard_released")
            try b.apply(NftablesRuleset.baseline(table: "segguard_released", gateways: [GatewayLab.gateway]))
        }
        // The object is gone; the kernel still has the table and still drops.
        let listing = try runCommand(["ip", "netns", "exec", lab.client.name, "nft", "-j", "list", "table", "inet", "segguard_released"])
        let counters = NftablesRuleset.counters(inListing: listing)
        #expect(counters.map(\.comment) == [NftablesRuleset.comment(.drop, gateway: GatewayLab.gateway), NftablesRuleset.comment(.drop, gateway: GatewayLab.gateway)])
        #expect(counters.map(\.chain) == ["output", "forward"])
        #expect(lab.udp().error == .notPermitted)

        // A binding created on a thread inside the client namespace, used here from the
        // test's own thread: it still sees the client's tables, not the host's.
        let viaLab = try withNetworkNamespace(lab.client.path) { try NftablesBinding(table: "segguard_released") }
        #expect(try viaLab.listTable().map { NftablesRuleset.counters(inListing: $0).count } == 2)
        try viaLab.deleteTable()
        #expect(lab.udp().succeeded)
    }

    @Test("the baseline file is written atomically and `nft -f` loads it, blocking the gateway")
    func baselineFileLoadsWithNft() throws {
        let lab = try GatewayLab()
        defer { lab.close() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sgnft-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("segguard-baseline.nft").path

        try "stale".write(toFile: path, atomically: false, encoding: .utf8)
        try lab.binding.writeBaseline(gateways: [GatewayLab.gateway], to: path)
        #expect(FileManager.default.contents(atPath: path) == NftablesRuleset.baseline(table: GatewayLab.table, gateways: [GatewayLab.gateway]))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["segguard-baseline.nft"])
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o644)

        #expect(lab.connect().succeeded)
        try runCommand(["ip", "netns", "exec", lab.client.name, "nft", "-f", path])
        #expect(lab.connect(timeout: 1).error == .timedOut)
        #expect(lab.udp().error == .notPermitted)
        #expect(try lab.packets(.allow) == nil)
        #expect(try #require(try lab.packets(.drop)) >= 2)

        // Loading it again (the unit restarting) replaces it cleanly; then the daemon takes over.
        try runCommand(["ip", "netns", "exec", lab.client.name, "nft", "-f", path])
        #expect(try lab.packets(.drop) == 0)
        try lab.apply(["sga0"])
        #expect(lab.connect().succeeded)
        #expect(lab.server.waitForAccepted(2) == 2)
    }

    @Test("IPv6 gateway prefix: ip6 daddr matches in the inet table, tcp and udp")
    func ipv6Gateway() throws {
        let lab = try GatewayLab()
        defer { lab.close() }
        try lab.gatewayNS.ip("addr", "add", "fd61:9::1/128", "dev", "lo")
        try lab.gatewayNS.ip("addr", "add", "fd61:1::1/64", "dev", "gwa0", "nodad")
        try lab.client.ip("addr", "add", "fd61:1::2/64", "dev", "sga0", "nodad")
        try lab.client.ip("route", "add", "fd61:9::/64", "via", "fd61:1::1", "dev", "sga0")
        let vdi6 = IPAddress("fd61:9::1")!
        let server6 = try NamespaceTCPServer(namespacePath: lab.gatewayNS.path, address: vdi6, port: 443)
        defer { server6.stop() }
        let gw6 = Gateway(prefix: IPPrefix("fd61:9::/64")!, ports: [], transport: .both)
        func apply(_ allowed: [String]) throws {
            try lab.binding.apply(NftablesRuleset.transaction(table: GatewayLab.table, gateways: [GatewayLab.gateway, gw6], allowedInterfaces: allowed, mode: .enforce))
        }

        try apply([])
        #expect(tcpConnect(namespacePath: lab.client.path, address: vdi6, port: 443, timeout: 1).error == .timedOut)
        #expect(udpSend(namespacePath: lab.client.path, address: vdi6, port: 53).error == .notPermitted)
        // Traffic to other destinations still flows.
        #expect(lab.udp(to: IPAddress("10.61.1.1")!, port: 9999).succeeded)

        try apply(["sga0"])
        #expect(tcpConnect(namespacePath: lab.client.path, address: vdi6, port: 443, timeout: 5).succeeded)
        #expect(server6.waitForAccepted(1) == 1)
        #expect(udpSend(namespacePath: lab.client.path, address: vdi6, port: 53).succeeded)
        let listing = try #require(try lab.binding.listTable())
        let allow6 = NftablesRuleset.counters(inListing: listing).first { $0.comment == NftablesRuleset.comment(.allow, gateway: gw6) }
        #expect(try #require(allow6).packets >= 3)
    }

    @Test("writing the baseline into a missing directory fails with the path and the system error")
    func baselineWriteFailure() throws {
        let b = try NftablesBinding(table: "segguard_unused")
        let path = "/nonexistent-segguard-dir/baseline.json"
        let e = try #require(throws: NftablesError.self) { try b.writeBaseline(gateways: [GatewayLab.gateway], to: path) }
        #expect(e.operation == "write the baseline ruleset to \(path)")
        // AtomicFile's temporary name: .<name>.tmp-<pid>-<random hex>.
        #expect(e.detail.hasPrefix("open /nonexistent-segguard-dir/.baseline.json.tmp-\(getpid())-"))
        #expect(e.detail.hasSuffix(": No such file or directory (errno 2)"))
    }

    /// The batch with one more command line appended.
    private func appending(_ command: String, to batch: Data) -> Data {
        batch + Data((command + "\n").utf8)
    }
}
