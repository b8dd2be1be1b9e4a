// The nftables ruleset of the network binding, as libnftables JSON. Pure: owns no state; it
// turns (gateways, authorized interfaces, mode) into ONE batch that replaces the whole
// `inet <table>` atomically. Names and addresses always go in as JSON values (built with
// JSONSerialization), never as spliced nft command text.

import Foundation
import SegguardPolicy

/// Builds the JSON batches (`{"nftables":[...]}`) that the binding hands to libnftables.
///
/// Every batch fully replaces the table: `add table` + `delete table` + `add table` (so a
/// missing table is not an error and nothing from the previous version survives: rules,
/// chains or sets someone added by hand), then the `output` chain and the gateway rules.
/// The kernel commits the batch as one transaction, so there is never a moment where the
/// gateway path is open through an interface that is no longer authorized.
public enum NftablesRuleset {
    /// The address family of the table: one table for IPv4 and IPv6.
    public static let family = "inet"
    /// The base chain on the output hook.
    public static let chainName = "output"
    /// Priority of the base chain (filter). Output-hook NAT (-100) has already run, so the
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
        /// Enforce: drop gateway traffic leaving through any other interface.
        case drop = "drop elsewhere"
        /// Audit: count gateway traffic that enforce mode would drop; blocks nothing.
        case wouldDrop = "would drop (audit)"
    }

    /// The batch for the current decision: in `enforce` gateway traffic leaves only through
    /// `allowedInterfaces` (none: all of it is dropped); in `audit` it is only counted; `off`
    /// deletes the table (idempotently).
    ///
    /// Interface names that nftables cannot match exactly (empty, longer than 15 bytes, with a
    /// NUL, or ending in `*` while containing `\`) are left out of the allowed set: fail
    /// closed. A trailing `*` (a wildcard for nftables) is escaped as `\*`.
    public static func transaction(table: String, gateways: [Gateway], allowedInterfaces: [String], mode: ControlMode) -> Data {
        serialize(commands(table: table, gateways: gateways, allowedInterfaces: allowedInterfaces, mode: mode))
    }

    /// The batch that changes only the rules of the table's `output` chain (flush, then the
    /// rules for the decision), for a table this binding made and still owns: no table or
    /// chain is deleted and re-created, so libnftables needs far less of the kernel's ruleset
    /// and the kernel re-registers no hook. Anything inserted into the chain by hand is gone
    /// with the flush, as with `transaction`; an accept in another base chain never lets a
    /// packet past this chain's drop. `off` deletes the table, as `transaction` does.
    public static func update(table: String, gateways: [Gateway], allowedInterfaces: [String], mode: ControlMode) -> Data {
        guard mode != .off else { return deleteCommand(table: table) }
        let flush: [String: Any] = ["flush": ["chain": ["family": family, "table": table, "name": chainName] as [String: Any]]]
        return serialize([flush] + rules(table: table, gateways: gateways, allowedInterfaces: allowedInterfaces, mode: mode))
    }

    /// What the boot-time unit loads (`nft -j -f FILE`) before the network comes up: the
    /// enforce table with no authorized interface, so gateway traffic is dropped until the
    /// daemon has decided.
    public static func baseline(table: String, gateways: [Gateway]) -> Data {
        transaction(table: table, gateways: gateways, allowedInterfaces: [], mode: .enforce)
    }

    /// `list table inet <table>`.
    public static func listCommand(table: String) -> Data {
        serialize([["list": ["table": tableObject(table)]]])
    }

    /// `list tables` (every family).
    public static func listTablesCommand() -> Data {
        serialize([["list": ["tables": NSNull()]]])
    }

    /// Deletes the table if it exists (add-then-delete in one batch).
    public static func deleteCommand(table: String) -> Data {
        serialize([["add": ["table": tableObject(table)]], ["delete": ["table": tableObject(table)]]])
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

    /// The JSON string nftables needs to match interface `name` exactly, or nil when it
    /// cannot be matched exactly (such names are never allowed).
    public static func interfaceNameValue(_ name: String) -> String? {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= maxInterfaceNameLength, !bytes.contains(0) else { return nil }
        guard name.hasSuffix("*") else { return name }
        // nftables reads a trailing `*` as a prefix wildcard and `\*` as a literal star; its
        // unescaping also drops other backslashes, so such names cannot be said exactly.
        guard !name.contains("\\") else { return nil }
        return String(name.dropLast()) + "\\*"
    }

    /// One rule's counter in a table listing.
    public struct RuleCounter: Sendable, Equatable {
        /// The rule's comment (`segguard: <gateway>: <role>`), "" when it has none.
        public var comment: String
        public var packets: UInt64
        public var bytes: UInt64
        public init(comment: String, packets: UInt64, bytes: UInt64) {
            self.comment = comment
            self.packets = packets
            self.bytes = bytes
        }
    }

    /// The counters of the rules in a JSON listing (`NftablesBinding.listTable()`), in rule
    /// order; rules without a counter are skipped. Empty when the text is not a listing.
    public static func counters(inListing json: String) -> [RuleCounter] {
        guard let root = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
            let items = root["nftables"] as? [Any]
        else { return [] }
        var out: [RuleCounter] = []
        for case let item as [String: Any] in items {
            guard let rule = item["rule"] as? [String: Any], let expr = rule["expr"] as? [Any] else { continue }
            for case let stmt as [String: Any] in expr {
                guard let c = stmt["counter"] as? [String: Any] else { continue }
                let packets = (c["packets"] as? NSNumber)?.uint64Value ?? 0
                let bytes = (c["bytes"] as? NSNumber)?.uint64Value ?? 0
                out.append(RuleCounter(comment: rule["comment"] as? String ?? "", packets: packets, bytes: bytes))
            }
        }
        return out
    }

    // MARK: - Building

    static func commands(table: String, gateways: [Gateway], allowedInterfaces: [String], mode: ControlMode) -> [Any] {
        let t: [String: Any] = ["table": tableObject(table)]
        if mode == .off { return [["add": t], ["delete": t]] }
        var out: [Any] = [["add": t], ["delete": t], ["add": t]]
        out.append([
            "add": [
                "chain": [
                    "family": family, "table": table, "name": chainName,
                    "type": "filter", "hook": "output", "prio": chainPriority, "policy": "accept",
                ] as [String: Any]
            ]
        ])
        return out + rules(table: table, gateways: gateways, allowedInterfaces: allowedInterfaces, mode: mode)
    }

    /// The gateway rules of the `output` chain.
    static func rules(table: String, gateways: [Gateway], allowedInterfaces: [String], mode: ControlMode) -> [Any] {
        var out: [Any] = []
        var seen = Set<String>()
        let allowed = allowedInterfaces.compactMap(interfaceNameValue).filter { seen.insert($0).inserted }.sorted()
        for g in gateways {
            let matches = gatewayMatches(g)
            switch mode {
            case .enforce:
                if !allowed.isEmpty {
                    out.append(rule(table, matches + [oifname("==", allowed), counter, ["accept": NSNull()]], comment(.allow, gateway: g)))
                }
                out.append(rule(table, matches + [counter, ["drop": NSNull()]], comment(.drop, gateway: g)))
            case .audit:
                let other = allowed.isEmpty ? [] : [oifname("!=", allowed)]
                out.append(rule(table, matches + other + [counter], comment(.wouldDrop, gateway: g)))
            case .off:
                break
            }
        }
        return out
    }

    private static func tableObject(_ table: String) -> [String: Any] { ["family": family, "name": table] }

    private static var counter: [String: Any] { ["counter": NSNull()] }

    private static func rule(_ table: String, _ expr: [Any], _ comment: String) -> [String: Any] {
        ["add": ["rule": ["family": family, "table": table, "chain": chainName, "comment": comment, "expr": expr] as [String: Any]]]
    }

    private static func match(_ op: String, _ left: Any, _ right: Any) -> [String: Any] {
        ["match": ["op": op, "left": left, "right": right] as [String: Any]]
    }

    /// One value as itself, several as an anonymous set.
    private static func oneOrSet(_ items: [Any]) -> Any { items.count == 1 ? items[0] : ["set": items] }

    /// One name as itself (no anonymous set for the kernel to create), several as a set.
    private static func oifname(_ op: String, _ names: [String]) -> [String: Any] {
        match(op, ["meta": ["key": "oifname"]], names.count == 1 ? names[0] : ["set": names])
    }

    /// Destination address/prefix, transport, and destination ports when given.
    private static func gatewayMatches(_ g: Gateway) -> [Any] {
        let proto = g.prefix.address.family == .ipv4 ? "ip" : "ip6"
        let hostLength = g.prefix.address.bytes.count * 8
        let addr: Any = Int(g.prefix.length) == hostLength
            ? g.prefix.address.description
            : ["prefix": ["addr": g.prefix.address.description, "len": Int(g.prefix.length)] as [String: Any]]
        var out: [Any] = [match("==", ["payload": ["protocol": proto, "field": "daddr"]], addr)]
        let l4: [Any] = switch g.transport {
        case .tcp: ["tcp"]
        case .udp: ["udp"]
        case .both: ["tcp", "udp"]
        }
        out.append(match("==", ["meta": ["key": "l4proto"]], oneOrSet(l4)))
        if !g.ports.isEmpty {
            let ports: [Any] = Array(Set(g.ports)).sorted().map { Int($0) }
            out.append(match("==", ["payload": ["protocol": "th", "field": "dport"]], oneOrSet(ports)))
        }
        return out
    }

    private static func serialize(_ commands: [Any]) -> Data {
        // Only strings, numbers, NSNull, arrays and dictionaries: serialization cannot fail.
        // swiftlint:disable:next force_try
        try! JSONSerialization.data(withJSONObject: ["nftables": commands], options: [.sortedKeys, .withoutEscapingSlashes])
    }

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
