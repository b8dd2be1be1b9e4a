// What a thin-client user is told, as codes: the reason of a refusal or an ending, not its
// technical wording (that stays in the reason, `segguardctl why-denied` and the logs). The
// words, in Japanese and English, are in SegguardMessages; the help desk the user may call
// is the policy's (`helpdesk:`).

/// Why something the user sees happened, in terms the user can act on.
public enum UserNotice: String, Sendable, Codable, CaseIterable {
    /// The VDI was not started: this thin client is not on the office network.
    case launchOffSegment = "launch.off-segment"
    /// The VDI was not started: another connection (tethering, a mobile router) is up beside the office network.
    case launchSecondUplink = "launch.second-uplink"
    /// The VDI was not started: this user account may not start this profile.
    case launchNotAllowed = "launch.not-allowed"
    /// The VDI was not started: no such profile, or it starts nothing.
    case launchBadProfile = "launch.bad-profile"
    /// The VDI was not started: this user has as many sessions as allowed.
    case launchTooManySessions = "launch.too-many-sessions"
    /// The VDI was not started: the thin client cannot enforce the rules (segment-guard
    /// unreachable, sessions cannot be tracked).
    case launchUnavailable = "launch.unavailable"
    /// The office network was lost: the session ends in N seconds unless it returns.
    case sessionEndingSoon = "session.ending-soon"
    /// The office network came back within the grace: the session goes on (after a
    /// `sessionEndingSoon`, so that the user is not left waiting for a close that never comes).
    case sessionKept = "session.kept"
    /// The session was ended: the office network did not return in time.
    case sessionEnded = "session.ended"
    /// A screen-capture tool was refused.
    case toolBlocked = "capture.tool-blocked"
}

/// Whom a user calls (`helpdesk:` in the policy): shown under every message.
public struct HelpDesk: Sendable, Equatable, Codable {
    /// E.g. "情報政策課 ヘルプデスク".
    public var name: String
    /// E.g. "内線 2345".
    public var contact: String
    public init(name: String, contact: String) {
        self.name = name
        self.contact = contact
    }
}
