// Keeps the nftables table in line with the decision. Owns: what was last applied (and for
// which decision generation), the transactions built for the policy in force, the baseline
// file's gateways. Must not own: the decision or the policy (it is handed both), timers or
// threads (the agent calls it on its executor, and runs `repair` on a timer).
//
// Failure table:
//   transaction refused      -> the drop-all baseline is loaded; `.failed` (the agent records
//                               binding-failed); the next `repair` retries
//   baseline refused as well -> the previous table stays in force; said in `.failed`
//   table gone (flushed)     -> `repair` applies the current decision again
//   changed by another process -> `restoreAfterForeignChange` (announced by nf_tables) or
//                               `repair` (the periodic check) puts the whole table back
//   baseline file not written -> logged; retried at the next change
//   the agent stops            -> `close` loads the baseline (enforce: drop-all; audit/off:
//                               no table), as the unit's ExecStopPost does after any exit

import FoundationEssentials
import Glibc
import Logging
import SegguardDecision
import SegguardPolicy
import SegguardSystem

/// Applies the decision to the network binding, one whole-table transaction per change.
///
/// Not thread-safe: confined to the agent's executor, which serializes every decision, so a
/// transaction for an older decision is never applied after one for a newer decision
/// (`apply` checks the generation it is given never goes back).
public final class BindingController {
    /// What one call did.
    public enum Outcome: Sendable, Equatable {
        /// The table already says this.
        case unchanged
        /// A new table is in force.
        case applied(mode: ControlMode, allowed: [String])
        /// The transaction was refused: `error`; `inForce` says what protects the gateways now.
        case failed(error: String, inForce: String)
    }

    /// Monotonic instants of the last transaction (pipeline timings).
    public struct Timing: Sendable, Equatable {
        /// The transaction was ready and handed to the binding.
        public var handedToKernel: UInt64
        /// The binding returned (the kernel committed or refused it).
        public var returned: UInt64
    }

    public let binding: any NetworkBinding
    let baselinePath: String?
    /// How nftables names the session cgroups (nil: it cannot: while the policy binds the
    /// gateways to sessions, no socket may reach them).
    public let sessions: NftablesRuleset.SessionMatch?
    let logger: Logger
    /// Key of the table in force and the decision generation it was applied for.
    private(set) var applied: (key: String, generation: UInt64)?
    /// The highest generation handed to `enforce`/`repair`.
    public private(set) var generation: UInt64 = 0
    private var lastFailed = false
    /// What the baseline file was last written for.
    private var baselineWritten: (gateways: [Gateway], mode: ControlMode)?
    /// Built batches for one gateways list (and its key), by kind, mode and allowed interfaces.
    private var built: (gateways: [Gateway], key: String, byKey: [String: Data]) = ([], "", [:])
    /// The table in the kernel is one this controller made (a whole-table transaction went
    /// through, and nothing failed or went missing since): a change then only replaces the
    /// chain's rules (`NftablesRuleset.update`).
    private var owned = false
    /// The kernel's fingerprint of the table right after the last transaction went through:
    /// the periodic check compares against it, rule expressions included, so a rule rewritten
    /// in place (its comment kept) or a dormant table is seen too.
    private var reference: [UInt8]?
    /// A transaction went through and its fingerprint is not read yet (`readBack`).
    public private(set) var readBackPending = false
    public private(set) var lastTiming: Timing?

    public init(binding: any NetworkBinding, baselinePath: String?, sessions: NftablesRuleset.SessionMatch? = nil, logger: Logger) {
        self.binding = binding
        self.baselinePath = baselinePath
        self.sessions = sessions
        self.logger = logger
    }

    /// True when the last transaction was refused (a `repair` will retry it).
    public var isFailing: Bool { lastFailed }

    /// Loads the drop-all table now, before the first decision, so that a table an earlier run
    /// left allowing some interface is not in force while the agent starts.
    public func applyBaseline(policy: Policy) {
        prepare(policy)
        guard policy.enforcement.networkBinding == .enforce else { return }
        do {
            try binding.apply(batch(.whole, mode: .enforce, allowed: [], policy: policy))
            owned = true
            readBack()
        } catch {
            owned = false
            logger.critical("cannot load the drop-all baseline at start", metadata: ["error": "\(error)"])
        }
    }

    /// The agent stops: loads the baseline of `policy` (under enforce, the drop-all table; under
    /// audit or off, no table), so that nothing stays open while no agent watches the network.
    /// Returns what is in force now, for the log.
    @discardableResult
    public func close(policy: Policy) -> String {
        let mode = policy.enforcement.networkBinding
        do {
            try binding.apply(NftablesRuleset.baseline(table: binding.table, gateways: policy.vdi.gateways, mode: mode))
            applied = nil
            owned = mode == .enforce
            reference = nil
            readBackPending = false
            writeBaselineIfNeeded(policy)
            return mode == .enforce ? "the drop-all baseline (no interface may reach the VDI gateways)" : "no table (network_binding is \(mode.rawValue))"
        } catch {
            logger.critical("cannot load the baseline while stopping", metadata: ["error": "\(error)"])
            return "the last table (the baseline was refused: \(error))"
        }
    }

    /// Builds, ahead of need, the drop-all transaction of `policy` (what a lost segment
    /// applies), so the hot path only hands it over.
    public func prepare(_ policy: Policy) {
        let mode = policy.enforcement.networkBinding
        _ = batch(.whole, mode: mode, allowed: [], policy: policy)
        _ = batch(.rules, mode: mode, allowed: [], policy: policy)
    }

    /// Applies `decision` under `policy` unless the table already says the same.
    public func enforce(_ decision: Decision, policy: Policy, generation: UInt64) -> Outcome {
        precondition(generation >= self.generation, "binding asked to apply decision generation \(generation) after \(self.generation)")
        self.generation = generation
        let mode = policy.enforcement.networkBinding
        let (allowed, match) = effective(decision, policy)
        if built.gateways != policy.vdi.gateways { rebuild(for: policy.vdi.gateways) }
        let key = "\(mode.rawValue)|\(allowed.joined(separator: ","))|\(match?.description ?? "-")|\(built.key)"
        guard applied?.key != key || lastFailed else {
            applied?.generation = generation
            return .unchanged
        }
        // The chain's rules only, when the table is ours and stays; else the whole table.
        let tableDeleted = applied?.key.hasPrefix("off|") ?? false
        let kind: BatchKind = owned && mode != .off && !tableDeleted ? .rules : .whole
        let handed = monotonicNanos()
        var failure: (any Error)?
        do {
            try binding.apply(batch(kind, mode: mode, allowed: allowed, match: match, policy: policy))
        } catch {
            failure = error
            if kind == .rules {
                // The table changed under us (deleted, the chain gone): the whole table.
                logger.warning("nftables refused the rules update; replacing the whole table", metadata: ["error": "\(error)"])
                do {
                    try binding.apply(batch(.whole, mode: mode, allowed: allowed, match: match, policy: policy))
                    failure = nil
                } catch {
                    failure = error
                }
            }
        }
        lastTiming = Timing(handedToKernel: handed, returned: monotonicNanos())
        guard let failure else {
            applied = (key, generation)
            lastFailed = false
            owned = mode != .off
            reference = nil
            readBackPending = true
            writeBaselineIfNeeded(policy)
            return .applied(mode: mode, allowed: allowed)
        }
        applied = nil
        lastFailed = true
        owned = false
        logger.critical("nftables transaction refused; loading the drop-all baseline", metadata: ["error": "\(failure)"])
        var inForce = "the drop-all baseline is in force (no interface may reach the VDI gateways)"
        reference = nil
        readBackPending = false
        do {
            try binding.apply(batch(.whole, mode: .enforce, allowed: [], policy: policy))
            owned = true
            readBackPending = true
        } catch {
            inForce = "the drop-all baseline was refused too (\(error)); the previous table stays in force"
        }
        writeBaselineIfNeeded(policy)
        return .failed(error: "\(failure)", inForce: inForce)
    }

    /// The periodic check: when the table is gone (`nft flush ruleset`, deleted by hand), is not
    /// exactly what the last transaction left (a rule inserted, rewritten in place or removed,
    /// the chain flushed or re-hooked, another chain added, the table made dormant), or the last
    /// transaction was refused, replaces the whole table for the current decision. Nil when
    /// nothing was wrong.
    public func repair(_ decision: Decision, policy: Policy, generation: UInt64) -> Outcome? {
        guard policy.enforcement.networkBinding != .off else { return nil }
        if readBackPending && !lastFailed { readBack() }
        var now: [UInt8]?
        var unreadable = false
        do {
            now = try binding.fingerprint()
        } catch {
            unreadable = true
            logger.error("cannot read the nftables table back; replacing it", metadata: ["error": "\(error)"])
        }
        let intact = !unreadable && now != nil && now == reference
        guard !intact || lastFailed else { return nil }
        if now == nil && !unreadable {
            logger.warning("the nftables table is gone: putting it back", metadata: ["table": "\(binding.table)"])
        } else if !intact && !unreadable {
            logger.warning("the nftables table was changed by someone else: replacing it", metadata: ["table": "\(binding.table)"])
        }
        applied = nil
        owned = false
        return enforce(decision, policy: policy, generation: generation)
    }

    /// Another process changed the table (nf_tables announced it): the whole table for the
    /// current decision goes back at once, without comparing first (the change may be newer
    /// than any fingerprint read so far). Nil when the binding is off (no table to keep).
    public func restoreAfterForeignChange(_ decision: Decision, policy: Policy, generation: UInt64) -> Outcome? {
        guard policy.enforcement.networkBinding != .off else { return nil }
        applied = nil
        owned = false
        return enforce(decision, policy: policy, generation: generation)
    }

    /// Reads back the kernel's fingerprint of what the last transaction left: the reference the
    /// periodic check compares with. The agent calls it a moment after a transaction (never on
    /// the path from the network event to the table, nor in the moment right after it, when the
    /// kernel's notifications of the change are being delivered); three small dumps, no
    /// libnftables.
    public func readBack() {
        reference = (try? binding.fingerprint()).flatMap { $0 }
        readBackPending = false
    }

    // MARK: - Building

    /// A whole-table transaction or a rules-only update.
    enum BatchKind: String { case whole, rules }

    /// New gateways: the batches built so far no longer apply.
    private func rebuild(for gateways: [Gateway]) {
        built = (gateways, gateways.map { "\($0.prefix) \($0.transport) \($0.ports)" }.joined(separator: ";"), [:])
    }

    /// The interfaces the table may open for `decision`, and the sockets it opens them to:
    /// with `bind_to_sessions`, those of the session cgroups, or none when they cannot be named.
    func effective(_ decision: Decision, _ policy: Policy) -> (allowed: [String], match: NftablesRuleset.SessionMatch?) {
        let allowed = decision.isAuthorized ? decision.authorizedInterfaces : []
        guard policy.enforcement.bindToSessions else { return (allowed, nil) }
        guard let sessions else { return ([], nil) }
        return (allowed, sessions)
    }

    /// The batch for (kind, mode, allowed, sessions) under `policy`, built once per gateways list.
    private func batch(_ kind: BatchKind, mode: ControlMode, allowed: [String], match: NftablesRuleset.SessionMatch? = nil, policy: Policy) -> Data {
        if built.gateways != policy.vdi.gateways { rebuild(for: policy.vdi.gateways) }
        let key = "\(kind.rawValue)|\(mode.rawValue)|\(allowed.joined(separator: ","))|\(match?.description ?? "-")"
        if let data = built.byKey[key] { return data }
        let gateways = policy.vdi.gateways
        let data = kind == .whole
            ? NftablesRuleset.transaction(table: binding.table, gateways: gateways, allowedInterfaces: allowed, mode: mode, sessions: match)
            : NftablesRuleset.update(table: binding.table, gateways: gateways, allowedInterfaces: allowed, mode: mode, sessions: match)
        // Interface sets come and go with the network; keep the table of them small.
        if built.byKey.count > 64 { built.byKey = [:] }
        built.byKey[key] = data
        return data
    }

    /// The baseline file (loaded at boot and by the unit after a stop) follows the policy's
    /// gateways and binding mode (written after the
    /// transaction: never on the path from the network event to the table).
    private func writeBaselineIfNeeded(_ policy: Policy) {
        let mode = policy.enforcement.networkBinding
        guard let path = baselinePath, baselineWritten?.gateways != policy.vdi.gateways || baselineWritten?.mode != mode else { return }
        do {
            try AtomicFile.write(NftablesRuleset.baseline(table: binding.table, gateways: policy.vdi.gateways, mode: mode), to: path, mode: 0o644)
            baselineWritten = (policy.vdi.gateways, mode)
        } catch {
            logger.error("cannot write the boot-time baseline table; will retry", metadata: ["file": "\(path)", "error": "\(error)"])
        }
    }
}
