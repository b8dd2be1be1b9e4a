// The kernel side of enforcement behind two roles, so that the agent's fail-closed paths,
// grace and termination logic are tested without root (SegguardTestFakes has a fake of each).

import FoundationEssentials
import Glibc

/// Applies whole-table nftables transactions and says whether the table is still there.
/// `NftablesBinding` is the real one (libnftables).
public protocol NetworkBinding: AnyObject, Sendable {
    /// The table (family `inet`) the binding owns.
    var table: String { get }
    /// Runs one batch from `NftablesRuleset` as one kernel transaction; on failure nothing of
    /// it is committed and the previous table stays.
    func apply(_ transaction: Data) throws(NftablesError)
    /// The JSON listing of the table, or nil when it is absent.
    func listTable() throws(NftablesError) -> String?
    /// The table as the kernel holds it (flags, chains, rules; no handles or counter values),
    /// or nil when it is absent: equal fingerprints mean nobody changed it in between.
    func fingerprint() throws(NftablesError) -> [UInt8]?
    /// Foreign changes to the table as the kernel announces them, for the agent's loop (nil:
    /// none; the periodic check alone sees them). Handed out once.
    func changeFeed() -> (any TableChangeFeed)?
    /// Gateway packets the table refused and logged (`NftablesRuleset.RuleRole.refused`), for
    /// the agent's loop; nil: not watched. Handed out once; throws what kept it from opening.
    func refusalFeed() throws(NftablesError) -> (any GatewayRefusalFeed)?
}

/// Keeps VDI sessions (each a process tree held in a cgroup) and ends them. `SessionTracker` is
/// the real one (cgroup v2 and pidfds).
public protocol SessionControl: AnyObject, Sendable {
    /// Starts tracking the process `pid` (the launcher, which then execs the client) as a
    /// session of `profile`. `peerPidfd` names the very process that asked (-1 if unknown).
    func register(pid: Int32, uid: UInt32, profile: String, peerPidfd: Int32) throws(SessionError) -> SessionInfo
    /// Live sessions (ended ones are forgotten).
    func sessions() -> [SessionInfo]
    /// Ends every live session whose profile satisfies `matching`: SIGTERM, then SIGKILL after
    /// `killTimeout` seconds. Blocks until done; the agent calls it off its executor.
    func terminate(matching: @escaping @Sendable (String) -> Bool, killTimeout: Double) -> [TerminationResult]
    /// How nftables names the sessions' parent cgroup (nil: it cannot; the binding then lets
    /// no socket reach the gateways while sessions are to be bound).
    var socketMatch: NftablesRuleset.SessionMatch? { get }
}

extension NftablesBinding: NetworkBinding {}
extension SessionTracker: SessionControl {}
