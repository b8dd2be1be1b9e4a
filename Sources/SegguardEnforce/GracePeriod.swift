// When VDI sessions end after the segment is lost. Pure state: the agent feeds it decisions
// and session starts, arms a timer when told to, and asks it at expiry whether the timer is
// still the current one. A Wi-Fi roam or a cable/Wi-Fi switch inside the grace keeps sessions.

import SegguardPolicy

/// The grace period of one unauthorized spell.
public struct GracePeriod: Sendable, Equatable {
    /// Monotonic time of the network event that started the running grace; nil when none runs.
    public private(set) var startedAt: UInt64?
    /// Names the running grace: a timer whose token is not current is stale.
    public private(set) var token: UInt64 = 0
    /// The grace of this unauthorized spell has expired (sessions ended, or would have been in
    /// audit mode): no new grace until a session starts or the segment returns.
    public private(set) var hasExpired = false

    /// What the caller must do.
    public enum Step: Sendable, Equatable {
        case nothing
        /// An authorized decision (or termination turned off) stopped a running grace.
        case cancelled
        /// Arm a timer for `deadline` (monotonic ns) carrying `token`.
        case arm(deadline: UInt64, token: UInt64)
    }

    public init() {}

    /// A decision under the policy's termination `mode`. Authorized, or termination off, ends
    /// the grace; unauthorized with sessions running starts it once per unauthorized spell,
    /// counted from `eventNanos` (the network event, not the moment this runs).
    public mutating func decision(authorized: Bool, mode: ControlMode, hasSessions: Bool, eventNanos: UInt64, graceSeconds: Double) -> Step {
        if authorized || mode == .off {
            let wasRunning = startedAt != nil
            startedAt = nil
            token &+= 1
            hasExpired = false
            return wasRunning ? .cancelled : .nothing
        }
        guard hasSessions, startedAt == nil, !hasExpired else { return .nothing }
        return start(at: eventNanos, graceSeconds: graceSeconds)
    }

    /// A session started while unauthorized (the gate in audit or off): it gets a grace of its
    /// own from now if the spell's grace has already expired or none runs.
    public mutating func sessionStarted(authorized: Bool, mode: ControlMode, now: UInt64, graceSeconds: Double) -> Step {
        guard !authorized, mode != .off, startedAt == nil else { return .nothing }
        hasExpired = false
        return start(at: now, graceSeconds: graceSeconds)
    }

    /// The timer carrying `token` fired: returns when the grace started if it is still the
    /// current one (the caller then ends the sessions), nil for a stale timer.
    public mutating func expire(_ token: UInt64) -> UInt64? {
        guard token == self.token, let started = startedAt else { return nil }
        startedAt = nil
        hasExpired = true
        return started
    }

    private mutating func start(at nanos: UInt64, graceSeconds: Double) -> Step {
        startedAt = nanos
        token &+= 1
        let seconds = max(0, graceSeconds)
        return .arm(deadline: nanos &+ UInt64(seconds * 1e9), token: token)
    }
}
