// Who may speak for wpa_supplicant on the bus. Any connection can send a signal with any path,
// interface and member, unicast to us or broadcast: on the system bus only the sender field is
// the bus's word (dbus-daemon overwrites it with the sending connection's unique name). A match
// rule with `sender='fi.w1.wpa_supplicant1'` does not help for unicast signals: dbus-daemon
// applies match rules to broadcasts only, and sd-bus, which cannot resolve a well-known name
// locally, lets any sender through. So every signal is checked here, against the unique name
// that owns `fi.w1.wpa_supplicant1` now, learnt from GetNameOwner and followed through the bus
// driver's own NameOwnerChanged. Pure: unit tests drive it without a bus.

/// Decides whether a D-Bus signal is wpa_supplicant's (or the bus driver's word about its name).
public struct WPADBusSenderCheck: Sendable, Equatable {
    /// The bus driver's name; dbus-daemon sends NameOwnerChanged with this sender, and no
    /// client can: the daemon replaces every client message's sender with its unique name.
    public static let busDriver = "org.freedesktop.DBus"
    public static let busDriverPath = "/org/freedesktop/DBus"
    /// Distinct rejected senders remembered (and logged) individually; more are only counted.
    public static let rememberedSenders = 64

    /// The well-known name watched.
    public let service: String
    /// The unique name (":1.42") that owns `service` now, nil when nobody does or not yet known.
    public private(set) var owner: String?
    /// Signals refused because their sender is not the owner (or, for NameOwnerChanged, the driver).
    public private(set) var rejected: UInt64 = 0
    /// Rejected senders seen so far (at most `rememberedSenders`).
    public private(set) var rejectedSenders: Set<String> = []

    public init(service: String, owner: String? = nil) {
        self.service = service
        self.owner = owner
    }

    public enum Verdict: Sendable, Equatable {
        /// A signal from the current owner: apply it.
        case accept
        /// The bus driver says `service` changed hands; `owner` is the new unique name or nil.
        case ownerChanged(owner: String?)
        /// The bus driver's NameOwnerChanged about another name: nothing to do.
        case otherName
        /// Not from the owner (or a NameOwnerChanged not from the driver): ignore it.
        /// `firstFromSender` is true the first time this sender is refused (log it then),
        /// `sendersFull` when the sender could not be remembered any more (log that once).
        case reject(firstFromSender: Bool, sendersFull: Bool)
    }

    /// The owner as GetNameOwner answered (nil: the name has no owner).
    public mutating func learnOwner(_ uniqueName: String?) {
        owner = uniqueName.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Checks one signal. `sender` is the message's sender field as the bus delivered it.
    public mutating func check(sender: String?, path: String, interface: String, member: String, args: [DBusValue]) -> Verdict {
        if interface == Self.busDriver && member == "NameOwnerChanged" {
            guard sender == Self.busDriver, path == Self.busDriverPath else { return refuse(sender) }
            guard args.count == 3, case .string(let name) = args[0], case .string = args[1], case .string(let newOwner) = args[2] else {
                // The driver's NameOwnerChanged always has (sss); anything else is not its word.
                return refuse(sender)
            }
            guard name == service else { return .otherName }
            owner = newOwner.isEmpty ? nil : newOwner
            return .ownerChanged(owner: owner)
        }
        if let owner, let sender, sender == owner { return .accept }
        return refuse(sender)
    }

    private mutating func refuse(_ sender: String?) -> Verdict {
        rejected &+= 1
        let key = sender ?? ""
        if rejectedSenders.contains(key) { return .reject(firstFromSender: false, sendersFull: false) }
        if rejectedSenders.count >= Self.rememberedSenders {
            defer { fullReported = true }
            return .reject(firstFromSender: false, sendersFull: !fullReported)
        }
        rejectedSenders.insert(key)
        return .reject(firstFromSender: true, sendersFull: false)
    }

    /// Whether the refusal that filled the remembered senders has been reported.
    private var fullReported = false
}
