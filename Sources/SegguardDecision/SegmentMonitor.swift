// Keeps the latest snapshot, policy and decision together and tells when the decision
// changes. Pure value: the daemon holds one behind a lock and feeds it snapshots and policy
// reloads; tests feed it by hand.

import SegguardPolicy

/// A change of decision, with what it was before.
public struct DecisionChange: Sendable, Equatable {
    public var previous: Decision
    public var current: Decision
    /// Snapshot generation that caused it (nil for a policy reload).
    public var generation: UInt64?
    /// The first decision from a real snapshot, replacing the fail-closed placeholder.
    public var isInitial: Bool
}

/// The current (policy, snapshot, decision) triple.
public struct SegmentMonitor: Sendable {
    public private(set) var policy: Policy
    public private(set) var snapshot: NetworkSnapshot?
    public private(set) var decision: Decision
    /// Number of decision changes so far (the initial decision is not counted).
    public private(set) var changes: UInt64 = 0
    /// False until the first snapshot has been decided.
    public private(set) var hasDecided = false

    /// Until the first snapshot arrives the decision is fail-closed.
    public init(policy: Policy) {
        self.policy = policy
        self.decision = .failClosed("no network snapshot yet (netlink dump in progress)")
    }

    /// Applies a new snapshot; returns the change if the decision differs.
    public mutating func update(_ snapshot: NetworkSnapshot) -> DecisionChange? {
        self.snapshot = snapshot
        return settle(SegmentDecider.decide(snapshot, policy), generation: snapshot.generation)
    }

    /// Replaces the policy (already validated); returns the change if the decision differs.
    public mutating func replacePolicy(_ policy: Policy) -> DecisionChange? {
        self.policy = policy
        guard let snapshot else { return nil }
        return settle(SegmentDecider.decide(snapshot, policy), generation: nil)
    }

    private mutating func settle(_ new: Decision, generation: UInt64?) -> DecisionChange? {
        if !hasDecided {
            let change = DecisionChange(previous: decision, current: new, generation: generation, isInitial: true)
            decision = new
            hasDecided = true
            return change
        }
        // Findings may change wording without changing the outcome; only the segment, the
        // authorized interfaces and the reason count as a change worth logging.
        guard new.segment != decision.segment || new.authorizedInterfaces != decision.authorizedInterfaces || new.reason != decision.reason else {
            decision = new
            return nil
        }
        let change = DecisionChange(previous: decision, current: new, generation: generation, isInitial: false)
        decision = new
        changes += 1
        return change
    }
}
