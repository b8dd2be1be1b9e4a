// The launch gate's verdict on one request. Pure: the decision and policy in force, the
// requester's credentials and a group lookup in; a verdict out. The agent then tracks the
// session (SessionControl) and records the events.

import SegguardDecision
import SegguardPolicy
import SegguardSystem

/// What the gate says to one `segguard-launch` request.
public enum LaunchVerdict: Sendable, Equatable {
    /// Refused; the reason names the rule, the profile or the decision (for logs and admins);
    /// the notice says it in the user's terms.
    case refuse(String, UserNotice)
    /// Allowed: exec `command`.
    /// - `track`: the launcher must be held in a session cgroup before it is answered (where
    ///   sessions cannot be tracked, the caller refuses: fail closed).
    /// - `wouldRefuse`: audit mode's would-be refusal, recorded as an event.
    case allow(profile: LaunchProfile, command: [String], reason: String, track: Bool, wouldRefuse: String?)
}

/// The launch gate's rules, in the order they are checked.
public enum LaunchGate {
    /// Longest profile name accepted (names are logged and reported).
    public static let maxProfileNameLength = 64

    /// Letters, digits, `-` and `_`, 1 to `maxProfileNameLength` of them: nothing that could
    /// forge a log line or a path.
    public static func isProfileName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= maxProfileNameLength
            && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }
    }

    /// - Parameters:
    ///   - decision: the decision in force (fail-closed until the first snapshot is decided).
    ///   - gid: resolves a group name; nil for an unknown group.
    public static func evaluate(profileName: String, command: [String], requester: PeerCredentials, decision: Decision, policy: Policy,
                                gid: (String) -> UInt32?) -> LaunchVerdict {
        guard isProfileName(profileName) else {
            let shown = String(profileName.prefix(maxProfileNameLength).map { $0.isASCII && !$0.isNewline ? $0 : "?" })
            return .refuse("'\(shown)' is not a profile name (letters, digits, - and _, at most \(maxProfileNameLength))", .launchBadProfile)
        }
        guard let profile = policy.profile(named: profileName) else {
            let names = policy.profiles.map(\.name)
            return .refuse("unknown profile '\(profileName)' (profiles in the policy: \(names.isEmpty ? "none" : names.joined(separator: ", ")))", .launchBadProfile)
        }
        if !profile.allowedGroups.isEmpty {
            let gids = profile.allowedGroups.compactMap(gid)
            let member = requester.uid == 0 || gids.contains(requester.gid) || gids.contains { requester.groups.contains($0) }
            guard member else {
                return .refuse("uid \(requester.uid) is not in a group allowed to launch profile '\(profile.name)' (\(profile.allowedGroups.joined(separator: ", ")))",
                               .launchNotAllowed)
            }
        }
        let base = profile.command.isEmpty ? command : profile.command
        guard !base.isEmpty else { return .refuse("profile '\(profile.name)' has no command and none was given after --", .launchBadProfile) }
        var reason = "profile '\(profile.name)' (\(profile.segment.rawValue)) may start: \(decision.reason)"
        var wouldRefuse: String?
        if profile.needsAuthorizedSegment && !decision.isAuthorized {
            let why = "profile '\(profile.name)' needs the My Number segment: \(decision.reason)"
            switch policy.enforcement.launchGate {
            case .enforce: return .refuse(why, offSegmentNotice(decision))
            case .audit:
                wouldRefuse = why
                reason = "audit mode: \(why)"
            case .off: reason = "launch gate off: \(why)"
            }
        }
        let track = profile.needsAuthorizedSegment && policy.enforcement.sessionTermination != .off
        return .allow(profile: profile, command: base + profile.enforceArguments, reason: reason, track: track, wouldRefuse: wouldRefuse)
    }

    /// Off the segment, in the user's terms: a second uplink beside the office network is
    /// something to unplug; anything else means "connect to the office network".
    public static func offSegmentNotice(_ decision: Decision) -> UserNotice {
        decision.findings.contains { $0.status == .conflictingUplink } ? .launchSecondUplink : .launchOffSegment
    }
}
