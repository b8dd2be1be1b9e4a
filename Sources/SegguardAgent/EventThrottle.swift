// Events a local user can cause at will (a refused launch, a denied exec) are held back when
// they repeat or come too fast, so that no user can flood the journal, the why-denied list or
// the spool and push out what matters. Pure: the agent feeds it instants from its loop clock.
//
// Per uid, in windows of `window` seconds starting at that uid's first event: the first event
// of each (kind, uid, subject) passes, up to `perUser` of them; every further one is counted
// under its key (at most `maxKeys` keys per uid; the rest under one catch-all key). When the
// window ends, each counted key becomes one summary event ("and N more like this").

import FoundationEssentials
import Glibc
import SegguardEnforce

/// Rate limit and aggregation of user-caused events.
struct EventThrottle<Sample> {
    /// What makes two events "the same": kind, user and what they are about (a profile, a path).
    struct Key: Hashable {
        var kind: EnforcementEvent.Kind
        var uid: UInt32
        var subject: String
    }

    /// Events held back under one key: how many, and the first of them (for the summary).
    struct Held {
        var count: Int
        var first: Sample
    }

    private struct User {
        var start: UInt64
        var passed = 0
        var seen: Set<Key> = []
        var held: [Key: Held] = [:]
    }

    let window: UInt64
    let perUser: Int
    let maxKeys: Int
    private var users: [UInt32: User] = [:]

    init(windowSeconds: Double = 60, perUser: Int = 20, maxKeys: Int = 50) {
        window = UInt64(windowSeconds * 1e9)
        self.perUser = perUser
        self.maxKeys = maxKeys
    }

    /// The subject every key of a uid beyond `maxKeys` is counted under.
    static var otherSubjects: String { "(other)" }

    /// True: record the event now. False: it is counted (call `due` when the window ends).
    mutating func admit(_ key: Key, sample: Sample, now: UInt64) -> Bool {
        var u = users[key.uid] ?? User(start: now)
        defer { users[key.uid] = u }
        if !u.seen.contains(key) && u.passed < perUser {
            u.seen.insert(key)
            u.passed += 1
            return true
        }
        var k = key
        if u.held[k] == nil && u.held.count >= maxKeys { k.subject = Self.otherSubjects }
        if u.held[k] == nil {
            u.held[k] = Held(count: 1, first: sample)
        } else {
            u.held[k]!.count += 1
        }
        return false
    }

    /// The held events of every uid whose window has ended, oldest key first; those uids start
    /// afresh at their next event.
    mutating func due(now: UInt64) -> [(Key, Held)] {
        var out: [(Key, Held)] = []
        for (uid, u) in users where now &- u.start >= window {
            out += u.held.sorted { ($0.key.kind.rawValue, $0.key.subject) < ($1.key.kind.rawValue, $1.key.subject) }.map { ($0.key, $0.value) }
            users[uid] = nil
        }
        return out
    }

    /// When the next window with held events ends (nil: nothing held).
    var nextDue: UInt64? {
        users.values.filter { !$0.held.isEmpty }.map { $0.start &+ window }.min()
    }

    /// Window length in seconds, for summaries.
    var windowSeconds: Int { Int(window / 1_000_000_000) }
}
