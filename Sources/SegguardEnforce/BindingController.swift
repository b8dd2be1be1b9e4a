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
//   baseline file not written -> logged; retried at the next change

import Foundation
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
    let logger: Logger
    /// Key of the table in force and the decision generation it was applied for.
    private(set) var applied: (key: String, generation: UInt64)?
    /// The highest generation handed to `enforce`/`repair`.
    public private(set) var generation: UInt64 = 0
    private var lastFailed = false
    private var baselineGateways: [Gateway]?
    /// Built transactions for one (table, gateways) pair, by mode and allowed interfaces.
    private var built: (gateways: [Gateway], byKey: [String: Data]) = ([], [:])
    public private(set) var lastTiming: Timing?

    public init(binding: any NetworkBinding, baselinePath: String?, logger: Logger) {
        self.binding = binding
        self.baselinePath = baselinePath
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
            try binding.apply(transaction(mode: .enforce, allowed: [], policy: policy))
        } catch {
            logger.critical("cannot load the drop-all baseline at start", metadata: ["error": "\(error)"])
        }
    }

    /// Builds, ahead of need, the drop-all transaction of `policy` (what a lost segment
    /// applies), so the hot path only hands it over.
    public func prepare(_ policy: Policy) {
        _ = transaction(mode: policy.enforcement.networkBinding, allowed: [], policy: policy)
    }

    /// Applies `decision` under `policy` unless the table already says the same.
    public func enforce(_ decision: Decision, policy: Policy, generation: UInt64) -> Outcome {
        precondition(generation >= self.generation, "binding asked to apply decision generation \(generation) after \(self.generation)")
        self.generation = generation
        let mode = policy.enforcement.networkBinding
        let allowed = decision.isAuthorized ? decision.authorizedInterfaces : []
        let key = Self.key(mode: mode, allowed: allowed, gateways: policy.vdi.gateways)
        guard applied?.key != key || lastFailed else {
            applied?.generation = generation
            return .unchanged
        }
        let data = transaction(mode: mode, allowed: allowed, policy: policy)
        let handed = monotonicNanos()
        do {
            try binding.apply(data)
            lastTiming = Timing(handedToKernel: handed, returned: monotonicNanos())
            applied = (key, generation)
            lastFailed = false
            writeBaselineIfNeeded(policy)
            return .applied(mode: mode, allowed: allowed)
        } catch {
            lastTiming = Timing(handedToKernel: handed, returned: monotonicNanos())
            applied = nil
            lastFailed = true
            logger.critical("nftables transaction refused; loading the drop-all baseline", metadata: ["error": "\(error)"])
            var inForce = "the drop-all baseline is in force (no interface may reach the VDI gateways)"
            do {
                try binding.apply(transaction(mode: .enforce, allowed: [], policy: policy))
            } catch {
                inForce = "the drop-all baseline was refused too (\(error)); the previous table stays in force"
            }
            writeBaselineIfNeeded(policy)
            return .failed(error: "\(error)", inForce: inForce)
        }
    }

    /// The periodic check: when the table is gone (`nft flush ruleset`, deleted by hand) or the
    /// last transaction was refused, applies the current decision again. Nil when nothing was
    /// wrong.
    public func repair(_ decision: Decision, policy: Policy, generation: UInt64) -> Outcome? {
        guard policy.enforcement.networkBinding != .off else { return nil }
        let present = (try? binding.listTable()) != nil
        guard !present || lastFailed else { return nil }
        if !present { logger.warning("the nftables table is gone: putting it back", metadata: ["table": "\(binding.table)"]) }
        applied = nil
        return enforce(decision, policy: policy, generation: generation)
    }

    // MARK: - Building

    static func key(mode: ControlMode, allowed: [String], gateways: [Gateway]) -> String {
        "\(mode.rawValue)|\(allowed.joined(separator: ","))|\(gateways.map { "\($0.prefix) \($0.transport) \($0.ports)" })"
    }

    /// The batch for (mode, allowed) under `policy`, built once per policy's gateways.
    private func transaction(mode: ControlMode, allowed: [String], policy: Policy) -> Data {
        if built.gateways != policy.vdi.gateways { built = (policy.vdi.gateways, [:]) }
        let key = "\(mode.rawValue)|\(allowed.joined(separator: ","))"
        if let data = built.byKey[key] { return data }
        let data = NftablesRuleset.transaction(table: binding.table, gateways: policy.vdi.gateways, allowedInterfaces: allowed, mode: mode)
        // Interface sets come and go with the network; keep the table of them small.
        if built.byKey.count > 64 { built.byKey = [:] }
        built.byKey[key] = data
        return data
    }

    /// The boot-time baseline file follows the policy's gateways (written after the
    /// transaction: never on the path from the network event to the table).
    private func writeBaselineIfNeeded(_ policy: Policy) {
        guard let path = baselinePath, baselineGateways != policy.vdi.gateways else { return }
        do {
            try AtomicFile.write(NftablesRuleset.baseline(table: binding.table, gateways: policy.vdi.gateways), to: path, mode: 0o644)
            baselineGateways = policy.vdi.gateways
        } catch {
            logger.error("cannot write the boot-time baseline table; will retry", metadata: ["file": "\(path)", "error": "\(error)"])
        }
    }
}
