// The nftables ruleset of the network binding, as nft command text for libnftables. Pure:
// owns no state; it turns (gateways, authorized interfaces, mode, session cgroup) into ONE
// batch that replaces the whole `inet <table>` atomically. Text, not JSON: libnftables 1.0.6
// (Debian 12) cannot say `socket cgroupv2 level N` in JSON. Every value spliced into the text
// is one this file formats itself (addresses, numbers) or one checked to be quotable exactly
// (interface names, the cgroup path); a name that cannot be is left out of what is allowed:
// fail closed.

import FoundationEssentials
import SegguardEssentials
import Glibc
import SegguardPolicy

/// Builds the batches (nft command text, one command per line) that the binding hands to
/// libnftables.
///
/// Every whole-table batch replaces the table: `add table` + `delete table` + `add table` (so a
/// missing table is not an error and nothing from the previous version survives: rules,
/// chains or sets someone added by hand), then the `output` and `forward` chains and the
/// gateway rules in each. The kernel commits the batch as one transaction, so there is never a
/// moment where the gateway path is open through an interface that is no longer authorized.
///
/// The rules, in each chain, for gateways G1..Gn:
/// - enforce: for each gateway, `daddr G [proto] [ports] oifname {authorized} [socket in a
///   session cgroup] counter accept`; then for each gateway `daddr G counter drop`: traffic to
///   a gateway prefix of ANY protocol and port that no accept rule took is dropped (the listed
///   ports and transports narrow what is allowed, never what is dropped). All accepts come
///   before all drops, so overlapping gateways do not shadow each other. With sessions bound,
///   the output chain has between them, for each gateway, `daddr G oifname {authorized} limit
///   … log group 4747 … counter drop`: what a process outside a session sends there is
///   dropped and reported (`GatewayRefusalMonitor`).
/// - audit: the same accept matches end in `return` (allowed), then `daddr G counter` counts
///   what enforce would drop; nothing is blocked.
/// - off: the table is deleted.
/// Forwarded packets (local VMs, containers) carry no local socket (and nftables has no socket
/// match on the forward hook), so with sessions bound the forward chain has no accept:
/// forwarded gateway traffic is dropped.
public enum NftablesRuleset {
    /// The address family of the table: one table for IPv4 and IPv6.
    public static let family = "inet"
    /// The base chain on the output hook (locally generated traffic).
    public static let chainName = "output"
    /// The base chain on the forward hook (traffic routed through this host).
    public static let forwardChainName = "forward"
    /// Both base chains, in the order their rules are added.
    public static let chainNames = [chainName, forwardChainName]
    /// Priority of the base chains (filter). Output-hook NAT (-100) has already run, so the
    /// chain sees the final destination; routing has chosen the final output interface.
    public static let chainPriority = 0
    /// Linux interface names have at most 15 bytes (IFNAMSIZ - 1).
    public static let maxInterfaceNameLength = 15
    /// Rule comments are kept under the kernel's 128-byte user-data comment limit.
    public static let maxCommentLength = 127

    /// What a rule does, named in its comment (`segguard: <gateway>: <role>`).
    public enum RuleRole: String, Sendable, CaseIterable {
        /// Enforce: accept gateway traffic leaving through an authorized interface.
        case allow = "allow via authorized interface"
        /// Enforce: drop all other traffic to the gateway's prefix.
        case drop = "drop elsewhere"
        /// Audit: gateway traffic enforce mode would accept (returns: not counted as a drop).
        case wouldAllow = "allowed (audit)"
        /// Audit: count traffic to the gateway's prefix that enforce mode would drop.
        case wouldDrop = "would drop (audit)"
        /// Enforce with sessions bound: gateway traffic on an authorized interface that no
        /// accept took (not from a session, or to an unlisted port) is dropped and handed to
        /// nfnetlink_log (at most `refusalRate` a second), so the agent can record it.
        case refused = "refused, logged"
    }

    /// The nfnetlink_log group of the `refused` rules (per network namespace; binding it
    /// needs CAP_NET_ADMIN, so no user can take it).
    public static let refusalLogGroup: UInt16 = 4747
    /// Bytes of each refused packet copied to the log: the IP and transport headers.
    public static let refusalSnapLength = 96
    /// Refused packets logged a second (burst: twice as many); the rest are dropped unlogged.
    public static let refusalRate = 20

    /// Which sockets may reach the gateways: those of processes in the session cgroups under
    /// one parent (`socket cgroupv2 level <level> "<path>"`). `path` is relative to
    /// `/sys/fs/cgroup` (where nft looks it up, e.g. `unified/system.slice/segguardd.service/
    /// sessions` on a hybrid host); `level` is the depth of that parent below the cgroup2
    /// root (`/sessions` directly under the root: 1).
    public struct SessionMatch: Sendable, Equatable, CustomStringConvertible {
        public let path: String
        public let level: Int

        /// Nil when `path` cannot be quoted exactly for nft (empty, `..`, a quote, a backslash,
        /// a control character) or `level` is not 1...255.
        public init?(path: String, level: Int) {
            let ok = path.unicodeScalars.allSatisfy { c in
                c.properties.isAlphabetic || c.properties.numericType != nil || "-_.:@/+=,".unicodeScalars.contains(c)
            }
            guard ok, !path.isEmpty, !path.hasPrefix("/"), !path.split(separator: "/").contains(".."), (1...255).contains(level) else { return nil }
            self.path = path
            self.level = level
        }

        public var description: String { "socket cgroupv2 level \(level) \"\(path)\"" }
    }

    /// True when `name` can be a table name here: 1 to 64 ASCII letters, digits, `_` or `-`,
    /// starting with a letter (spliced into nft text unquoted).
    public static func isValidTableName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard let first = bytes.first, (1...64).contains(bytes.count), isLetter(first) else { return false }
        return bytes.allSatisfy { isLetter($0) || ($0 >= 48 && $0 <= 57) || $0 == 95 || $0 == 45 }
    }

    private static func isLetter(_ b: UInt8) -> Bool { (b >= 65 && b <= 90) || (b >= 97 && b <= 122) }

    /// The batch for the current decision: in `enforce` gateway traffic leaves only through
    /// `allowedInterfaces` (none: all of it is dropped), and with `sessions` only from a
    /// session's sockets; in `audit` it is only counted; `off` deletes the table
    /// (idempotently).
    ///
    /// Interface names that nftables cannot match exactly (empty, longer than 15 bytes, with a
    /// NUL, a quote or a backslash) are left out of the allowed set: fail closed. A trailing
    /// `*` (a wildcard for nftables) is escaped as `\*`.
    public static func transaction(table: String, gateways: [Gateway], allowedInterfaces: [String], mode: ControlMode,
                                   sessions: SessionMatch? = nil) -> Data {
        precondition(isValidTableName(table), "table name \(table) is not a valid nftables table name here")
        let t = "\(family) \(table)"
        if mode == .off { return batch(["add table \(t)", "delete table \(t)"]) }
        var lines = ["add table \(t)", "delete table \(t)", "add table \(t)"]
        for (chain, hook) in [(chainName, "output"), (forwardChainName, "forward")] {
            lines.append("add chain \(t) \(chain) { type filter hook \(hook) priority \(chainPriority); policy accept; }")
        }
        return batch(lines + rules(table: table, gateways: gateways, allowedInterfaces: allowedInterfaces, mode: mode, sessions: sessions))
    }

    /// The batch that changes only the rules of the table's chains (flush each, then the
    /// rules for the decision), for a table this binding made and still owns: no table or
    /// chain is deleted and re-created, so libnftables needs far less of the kernel's ruleset
    /// and the kernel re-registers no hook. Anything inserted into the chains by hand is gone
    /// with the flush, as with `transaction`; an accept in another base chain never lets a
    /// packet past this chain's drop. `off` deletes the table, as `transaction` does.
    public static func update(table: String, gateways: [Gateway], allowedInterfaces: [String], mode: ControlMode,
                              sessions: SessionMatch? = nil) -> Data {
        precondition(isValidTableName(table), "table name \(table) is not a valid nftables table name here")
        guard mode != .off else { return deleteCommand(table: table) }
        let flush = chainNames.map { "flush chain \(family) \(table) \($0)" }
        return batch(flush + rules(table: table, gateways: gateways, allowedInterfaces: allowedInterfaces, mode: mode, sessions: sessions))
    }

    /// What the boot-time unit loads before the network comes up and the service's stop hook
    /// loads after segguardd has stopped (`nft -f FILE`): under `enforce` the table with no
    /// authorized interface, so gateway traffic is dropped until the daemon has decided; under
    /// `audit` or `off` (which must never block) the table is deleted.
    public static func baseline(table: String, gateways: [Gateway], mode: ControlMode = .enforce) -> Data {
        mode == .enforce ? transaction(table: table, gateways: gateways, allowedInterfaces: [], mode: .enforce) : deleteCommand(table: table)
    }

    /// `list table inet <table>` (JSON output).
    public static func listCommand(table: String) -> Data {
        batch(["list table \(family) \(table)"])
    }

    /// `list tables` (every family).
    public static func listTablesCommand() -> Data {
        batch(["list tables"])
    }

    /// Deletes the table if it exists (add-then-delete in one batch).
    public static func deleteCommand(table: String) -> Data {
        batch(["add table \(family) \(table)", "delete table \(family) \(table)"])
    }

    /// The comment put on a gateway's rule with `role`, at most 127 bytes.
    public static func comment(_ role: RuleRole, gateway: Gateway) -> String {
        truncateUTF8("segguard: \(describe(gateway)): \(role.rawValue)", to: maxCommentLength)
    }

    /// `10.0.0.1/32 tcp 443,8443` / `2001:db8::/64 udp all ports`.
    public static func describe(_ gateway: Gateway) -> String {
        let ports = gateway.ports.isEmpty ? "all ports" : Array(Set(gateway.ports)).sorted().map(String.init).joined(separator: ",")
        return "\(gateway.prefix) \(gateway.transport.rawValue) \(ports)"
    }

    /// The quoted nft string that matches interface `name` exactly, or nil when it cannot be
    /// matched exactly (such names are never allowed). Linux names have no whitespace or `/`
    /// but may have quotes, which nft's quoted strings cannot hold.
    public static func interfaceNameValue(_ name: String) -> String? {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= maxInterfaceNameLength else { return nil }
        // No NUL, quote, backslash or control byte: nft's scanner takes a quoted string up to
        // the next `"`, and its unescaping drops backslashes.
        guard !bytes.contains(where: { $0 < 0x20 || $0 == 0x7F || $0 == 0x22 || $0 == 0x5C }) else { return nil }
        // nftables reads a trailing `*` as a prefix wildcard and `\*` as a literal star.
        let body = name.hasSuffix("*") ? String(name.dropLast()) + "\\*" : name
        return "\"" + body + "\""
    }

    /// One rule's counter in a table listing.
    public struct RuleCounter: Sendable, Equatable {
        /// The chain the rule is in (`output`, `forward`).
        public var chain: String
        /// The rule's comment (`segguard: <gateway>: <role>`), "" when it has none.
        public var comment: String
        public var packets: UInt64
        public var bytes: UInt64
        public init(chain: String = NftablesRuleset.chainName, comment: String, packets: UInt64, bytes: UInt64) {
            self.chain = chain
            self.comment = comment
            self.packets = packets
            self.bytes = bytes
        }
    }

    /// The counters of the rules in a JSON listing (`NftablesBinding.listTable()`), in rule
    /// order; rules without a counter are skipped. Empty when the text is not a listing.
    public static func counters(inListing json: String) -> [RuleCounter] {
        guard let root = JSONValue.parse(Data(json.utf8)), let items = root["nftables"]?.array else { return [] }
        var out: [RuleCounter] = []
        for item in items {
            guard let rule = item["rule"], let expr = rule["expr"]?.array else { continue }
            for stmt in expr {
                guard let c = stmt["counter"] else { continue }
                out.append(RuleCounter(chain: rule["chain"]?.string ?? "", comment: rule["comment"]?.string ?? "",
                                       packets: c["packets"]?.uint64 ?? 0, bytes: c["bytes"]?.uint64 ?? 0))
            }
        }
        return out
    }

    // MARK: - Building

    /// The gateway rules of both chains (`add rule` lines).
    static func rules(table: String, gateways: [Gateway], allowedInterfaces: [String], mode: ControlMode, sessions: SessionMatch?) -> [String] {
        guard mode != .off else { return [] }
        var seen = Set<String>()
        let allowed = allowedInterfaces.compactMap(interfaceNameValue).filter { seen.insert($0).inserted }.sorted()
        var out: [String] = []
        for chain in chainNames {
            let head = "add rule \(family) \(table) \(chain) "
            // nftables has no socket match on the forward hook (EOPNOTSUPP), and a forwarded
            // packet comes from no local session: with sessions bound, no accept there.
            if !allowed.isEmpty, sessions == nil || chain == chainName {
                let oif = "oifname " + oneOrSet(allowed)
                let socket = sessions.map { " " + $0.description } ?? ""
                for g in gateways {
                    let (verdict, role): (String, RuleRole) = mode == .enforce ? ("counter accept", .allow) : ("return", .wouldAllow)
                    out.append(head + "\(destination(g)) \(transport(g)) \(oif)\(socket) \(verdict) comment \"\(comment(role, gateway: g))\"")
                }
                // Only locally sent packets carry the socket's owner worth recording.
                if sessions != nil, mode == .enforce, chain == chainName {
                    let log = "limit rate \(refusalRate)/second burst \(refusalRate * 2) packets log group \(refusalLogGroup) snaplen \(refusalSnapLength)"
                    for g in gateways {
                        out.append(head + "\(destination(g)) \(oif) \(log) counter drop comment \"\(comment(.refused, gateway: g))\"")
                    }
                }
            }
            for g in gateways {
                let (verdict, role): (String, RuleRole) = mode == .enforce ? ("counter drop", .drop) : ("counter", .wouldDrop)
                out.append(head + "\(destination(g)) \(verdict) comment \"\(comment(role, gateway: g))\"")
            }
        }
        return out
    }

    /// `ip daddr 10.0.0.1` / `ip6 daddr 2001:db8::/48` (addresses formatted by IPAddress).
    private static func destination(_ g: Gateway) -> String {
        let proto = g.prefix.address.family == .ipv4 ? "ip" : "ip6"
        let hostLength = g.prefix.address.bytes.count * 8
        let addr = Int(g.prefix.length) == hostLength ? g.prefix.address.description : "\(g.prefix.address.description)/\(g.prefix.length)"
        return "\(proto) daddr \(addr)"
    }

    /// `meta l4proto tcp [th dport 443]`: the transport and destination ports allowed.
    private static func transport(_ g: Gateway) -> String {
        let l4 = switch g.transport {
        case .tcp: "tcp"
        case .udp: "udp"
        case .both: "{ tcp, udp }"
        }
        guard !g.ports.isEmpty else { return "meta l4proto \(l4)" }
        return "meta l4proto \(l4) th dport " + oneOrSet(Array(Set(g.ports)).sorted().map(String.init))
    }

    /// One value as itself, several as an anonymous set.
    private static func oneOrSet(_ items: [String]) -> String { items.count == 1 ? items[0] : "{ " + items.joined(separator: ", ") + " }" }

    private static func batch(_ lines: [String]) -> Data { Data((lines.joined(separator: "\n") + "\n").utf8) }

    private static func truncateUTF8(_ s: String, to limit: Int) -> String {
        guard s.utf8.count > limit else { return s }
        var out = ""
        var used = 0
        for ch in s {
            let n = String(ch).utf8.count
            if used + n > limit { break }
            out.append(ch)
            used += n
        }
        return out
    }
}
