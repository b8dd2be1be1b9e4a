// The D-Bus source of 802.1X state, for systems where NetworkManager (or systemd's
// wpa_supplicant.service with -u) runs wpa_supplicant. Owns: one sd-bus connection to the
// system bus (or the address given), its signal matches, and the thread that processes it.
// Event-driven: PropertiesChanged, EAP, Certification, InterfaceAdded/Removed and
// NameOwnerChanged signals drive every update; properties are read (Get) only when an interface
// or its network appears. Every signal is checked against the unique name that owns
// fi.w1.wpa_supplicant1 (WPADBusSenderCheck): any local user can send a signal that looks like
// wpa_supplicant's, unicast to us.

import CSegguardShims
import CSystemd
import FoundationEssentials
import Logging
import SegguardPolicy
import SegguardSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Watches wpa_supplicant's D-Bus API (`fi.w1.wpa_supplicant1`) and reports the 802.1X state
/// per interface name.
public final class WPADBusSource: DeviceAuthSource {
    static let service = "fi.w1.wpa_supplicant1"
    static let rootPath = "/fi/w1/wpa_supplicant1"
    static let interfaceIface = "fi.w1.wpa_supplicant1.Interface"
    static let networkIface = "fi.w1.wpa_supplicant1.Network"

    /// The bus address, or nil for the system bus (`DBUS_SYSTEM_BUS_ADDRESS` or the default).
    public let address: String?
    let logger: Logger
    let stopSignal = StopSignal()
    /// Interfaces `reauthenticate` was asked for, served on the bus thread; `wake` tells it.
    let requests = Mutex<Set<String>>([])
    let wake: Int32 = sg_eventfd()
    let rejectedCount = Atomic<UInt64>(0)

    public init(address: String? = nil, logger: Logger = Logger(label: "segguard.deviceauth.dbus")) {
        self.address = address
        self.logger = logger
    }

    deinit { close(wake) }

    /// Signals ignored because they did not come from wpa_supplicant's current owner of
    /// `fi.w1.wpa_supplicant1` (or, for NameOwnerChanged, from the bus driver) since start.
    public var rejectedSignals: UInt64 { rejectedCount.load(ordering: .relaxed) }

    public func start(onChange: @escaping @Sendable ([String: DeviceAuthState]) -> Void) {
        stopSignal.arm()
        startThread(name: "sg-wpa-dbus") { [self] in
            let loop = Loop(source: self, onChange: onChange)
            loop.run()
        }
    }

    public func stop() { stopSignal.stop() }

    /// Restarts 802.1X authentication on `interface`: the bus thread sends the interface
    /// object `EAPLogoff` then `EAPLogon` (wpa_supplicant's D-Bus API has no EAPOL-Start of its
    /// own; logon after logoff sends one). The port is reported unauthorized from then until the
    /// next EAP completion. Returns at once; a request while the bus is down waits for it.
    public func reauthenticate(interface: String) {
        requests.withLock { _ = $0.insert(interface) }
        var one: UInt64 = 1
        _ = write(wake, &one, 8)
    }

    /// The bus thread's state; every sd-bus object is used on that thread only.
    final class Loop {
        unowned let source: WPADBusSource
        let onChange: @Sendable ([String: DeviceAuthState]) -> Void
        var bus: OpaquePointer?
        var interfaces: [String: WPADBusInterface] = [:]
        /// The supplicants' client certificates, read again only when their files change.
        var certificates = CertificateKeyCache()
        var reported: [String: DeviceAuthState] = [:]
        /// Who may speak for wpa_supplicant on this connection.
        var senders = WPADBusSenderCheck(service: WPADBusSource.service)
        /// The highest success count reported per interface name: a supplicant restart or a
        /// reconnect does not make the count go back (a fresh success always has a higher one).
        var successFloor: [String: UInt64] = [:]
        /// EAPLogoff/EAPLogon calls awaiting their reply, by cookie: (interface object, method).
        var pending: [UInt64: (path: String, method: String)] = [:]

        init(source: WPADBusSource, onChange: @escaping @Sendable ([String: DeviceAuthState]) -> Void) {
            self.source = source
            self.onChange = onChange
        }

        var isRunning: Bool { source.stopSignal.isRunning }

        func run() {
            var backoff = 0.5
            while isRunning {
                do {
                    try connect()
                    backoff = 0.5
                    try process()
                } catch {
                    source.logger.warning("wpa_supplicant D-Bus connection lost; 802.1X state dropped until it is back",
                                          metadata: ["error": "\(error)", "retry_seconds": "\(backoff)"])
                }
                disconnect()
                guard isRunning else { break }
                // Only while the bus itself is gone: wait for the stop eventfd or the retry.
                var pfd = pollfd(fd: source.stopSignal.fd, events: Int16(POLLIN), revents: 0)
                _ = poll(&pfd, 1, Int32(backoff * 1000))
                backoff = min(backoff * 2, 10)
            }
            disconnect()
        }

        func connect() throws {
            var b: OpaquePointer?
            if let address = source.address {
                try check(sd_bus_new(&b), "sd_bus_new")
                bus = b
                try check(sd_bus_set_address(b, address), "sd_bus_set_address \(address)")
                try check(sd_bus_set_bus_client(b, 1), "sd_bus_set_bus_client")
                try check(sd_bus_start(b), "sd_bus_start \(address)")
            } else {
                try check(sd_bus_open_system(&b), "sd_bus_open_system")
                bus = b
            }
            let me = Unmanaged.passUnretained(self).toOpaque()
            let matches = [
                "type='signal',sender='\(WPADBusSource.service)',interface='org.freedesktop.DBus.Properties',member='PropertiesChanged'",
                "type='signal',sender='\(WPADBusSource.service)',interface='\(WPADBusSource.interfaceIface)',member='EAP'",
                "type='signal',sender='\(WPADBusSource.service)',interface='\(WPADBusSource.interfaceIface)',member='Certification'",
                "type='signal',sender='\(WPADBusSource.service)',interface='\(WPADBusSource.service)'",
                "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='\(WPADBusSource.service)'",
            ]
            for match in matches {
                try check(sd_bus_add_match(b, nil, match, { m, userdata, _ in
                    guard let m, let userdata else { return 0 }
                    Unmanaged<Loop>.fromOpaque(userdata).takeUnretainedValue().handle(m)
                    return 0
                }, me), "sd_bus_add_match")
            }
            // After the matches: a change of owner from here on arrives as NameOwnerChanged.
            senders = WPADBusSenderCheck(service: WPADBusSource.service)
            senders.learnOwner(try nameOwner())
            if let owner = senders.owner {
                source.logger.info("wpa_supplicant is on the bus", metadata: ["owner": "\(owner)"])
                enumerate()
            } else {
                source.logger.info("wpa_supplicant is not on the bus yet; waiting for it")
            }
        }

        func disconnect() {
            if let b = bus { sd_bus_flush_close_unref(b) }
            bus = nil
            interfaces = [:]
            pending = [:]
            report()
        }

        /// Processes messages until the bus fails or the source stops.
        func process() throws {
            guard let b = bus else { return }
            while isRunning {
                while true {
                    let r = sd_bus_process(b, nil)
                    if r < 0 { throw SDBusError("sd_bus_process", r) }
                    if r == 0 { break }
                }
                let events = sd_bus_get_events(b)
                if events < 0 { throw SDBusError("sd_bus_get_events", events) }
                var fds = [pollfd(fd: sd_bus_get_fd(b), events: Int16(events), revents: 0),
                           pollfd(fd: source.stopSignal.fd, events: Int16(POLLIN), revents: 0),
                           pollfd(fd: source.wake, events: Int16(POLLIN), revents: 0)]
                var usec: UInt64 = 0
                _ = sd_bus_get_timeout(b, &usec)
                let timeout: Int32 = usec == UInt64.max ? -1 : Int32(clamping: (usec + 999) / 1000)
                let n = poll(&fds, 3, timeout)
                if n < 0 && errno != EINTR { throw SDBusError("poll", -errno) }
                if n > 0 && fds[2].revents != 0 {
                    var count: UInt64 = 0
                    _ = read(source.wake, &count, 8)
                    try serveRequests()
                }
            }
        }

        /// Sends EAPLogoff + EAPLogon for every interface `reauthenticate` was asked for.
        func serveRequests() throws {
            let names = source.requests.withLock { r -> Set<String> in
                defer { r = [] }
                return r
            }
            for name in names.sorted() {
                guard let path = interfaces.first(where: { $0.value.ifname == name })?.key else {
                    source.logger.info("802.1X re-authentication not requested: wpa_supplicant has no interface of that name on the bus",
                                       metadata: ["interface": "\(name)"])
                    continue
                }
                // In this order on one connection: the supplicant handles them in order.
                try callAsync(path: path, method: "EAPLogoff")
                try callAsync(path: path, method: "EAPLogon")
                interfaces[path]?.applyLogoff()
                source.logger.info("802.1X re-authentication requested (EAPLogoff, EAPLogon)", metadata: ["interface": "\(name)", "object": "\(path)"])
            }
            report()
        }

        /// A method call on an interface object whose reply is handled by `replied` (errors logged).
        func callAsync(path: String, method: String) throws {
            guard let b = bus else { throw SDBusError("not connected") }
            var call: OpaquePointer?
            try check(sd_bus_message_new_method_call(b, &call, WPADBusSource.service, path, WPADBusSource.interfaceIface, method), "new method call \(method)")
            defer { sd_bus_message_unref(call) }
            let me = Unmanaged.passUnretained(self).toOpaque()
            try check(sd_bus_call_async(b, nil, call, { m, userdata, _ in
                guard let m, let userdata else { return 0 }
                Unmanaged<Loop>.fromOpaque(userdata).takeUnretainedValue().replied(m)
                return 0
            }, me, 5_000_000), "\(method) on \(path)")
            var cookie: UInt64 = 0
            if sd_bus_message_get_cookie(call, &cookie) >= 0 { pending[cookie] = (path, method) }
        }

        func replied(_ m: OpaquePointer) {
            var cookie: UInt64 = 0
            guard sd_bus_message_get_reply_cookie(m, &cookie) >= 0, let call = pending.removeValue(forKey: cookie) else { return }
            guard sd_bus_message_is_method_error(m, nil) > 0 else { return }
            // The port stays reported unauthorized until the next EAP completion either way.
            let e = sd_bus_message_get_error(m)
            source.logger.warning("wpa_supplicant refused the 802.1X re-authentication request",
                                  metadata: ["object": "\(call.path)", "method": "\(call.method)",
                                             "error": "\(e?.pointee.name.map { String(cString: $0) } ?? "?"): \(e?.pointee.message.map { String(cString: $0) } ?? "")"])
        }

        /// Reads every interface the supplicant has (at connect and when its name gets an owner).
        func enumerate() {
            interfaces = [:]
            guard senders.owner != nil else {
                report()
                return
            }
            do {
                let value = try getProperty(path: WPADBusSource.rootPath, interface: WPADBusSource.service, name: "Interfaces")
                guard case .array(let items, _) = value.unwrapped else {
                    throw WPADBusError("wpa_supplicant property Interfaces has type '\(value.unwrapped.signature)', expected ao")
                }
                for case .objectPath(let path) in items { load(path) }
            } catch let e as SDBusCallError where e.name == "org.freedesktop.DBus.Error.ServiceUnknown" || e.name == "org.freedesktop.DBus.Error.NameHasNoOwner" {
                source.logger.info("wpa_supplicant is not on the bus yet; waiting for it")
            } catch {
                source.logger.warning("cannot list wpa_supplicant interfaces", metadata: ["error": "\(error)"])
            }
            report()
        }

        /// Reads one interface's properties and its current network.
        func load(_ path: String) {
            var i = WPADBusInterface(path: path)
            do {
                var props: [String: DBusValue] = [:]
                for name in ["Ifname", "State", "CurrentAuthMode", "CurrentNetwork"] {
                    props[name] = try getProperty(path: path, interface: WPADBusSource.interfaceIface, name: name)
                }
                try i.apply(properties: props)
                i.successes = i.ifname.flatMap { successFloor[$0] } ?? 0
                interfaces[path] = i
                loadNetwork(path)
                source.logger.info("watching wpa_supplicant over D-Bus", metadata: ["interface": "\(i.ifname ?? "?")", "object": "\(path)"])
            } catch {
                source.logger.warning("cannot read wpa_supplicant interface", metadata: ["object": "\(path)", "error": "\(error)"])
            }
        }

        func loadNetwork(_ path: String) {
            guard let network = interfaces[path]?.currentNetwork, network != "/" else { return }
            do {
                let value = try getProperty(path: network, interface: WPADBusSource.networkIface, name: "Properties")
                try interfaces[path]?.apply(networkProperties: value)
                if let i = interfaces[path] {
                    interfaces[path]?.clientKey = certificates.finding(clientCert: i.clientCert, privateKey: i.privateKey, engine: i.engine)
                }
            } catch {
                source.logger.warning("cannot read wpa_supplicant network", metadata: ["object": "\(network)", "error": "\(error)"])
            }
        }

        /// One signal from the bus: first who sent it, then what it says.
        func handle(_ m: OpaquePointer) {
            let member = sd_bus_message_get_member(m).map { String(cString: $0) } ?? ""
            let iface = sd_bus_message_get_interface(m).map { String(cString: $0) } ?? ""
            let path = sd_bus_message_get_path(m).map { String(cString: $0) } ?? ""
            let sender = sd_bus_message_get_sender(m).map { String(cString: $0) }
            let parsed = Result { try DBusMessageReader.readAll(m) }
            switch senders.check(sender: sender, path: path, interface: iface, member: member, args: (try? parsed.get()) ?? []) {
            case .reject(let first, let full):
                source.rejectedCount.add(1, ordering: .relaxed)
                if first {
                    source.logger.warning("D-Bus signal not from wpa_supplicant ignored (its sender does not own \(WPADBusSource.service)); further ones from this sender are counted, not logged",
                                          metadata: ["sender": "\(sender ?? "none")", "sender_uid": "\(senderUID(sender))", "owner": "\(senders.owner ?? "none")",
                                                     "member": "\(iface).\(member)", "object": "\(path)",
                                                     "destination": "\(sd_bus_message_get_destination(m).map { String(cString: $0) } ?? "broadcast")"])
                }
                if full {
                    source.logger.warning("D-Bus signals not from wpa_supplicant keep coming from more senders; they are ignored and counted, no longer logged",
                                          metadata: ["ignored": "\(senders.rejected)"])
                }
                return
            case .otherName:
                return
            case .ownerChanged(let owner):
                // The bus driver's word: the supplicant (re)started or exited.
                if let owner {
                    source.logger.info("wpa_supplicant is on the bus", metadata: ["owner": "\(owner)"])
                    enumerate()
                } else {
                    source.logger.warning("wpa_supplicant left the bus; 802.1X state dropped")
                    interfaces = [:]
                    report()
                }
                return
            case .accept:
                break
            }
            do {
                let args = try parsed.get()
                switch (iface, member) {
                case ("org.freedesktop.DBus.Properties", "PropertiesChanged"):
                    guard args.count >= 2, case .string(let changedIface) = args[0] else {
                        throw WPADBusError("PropertiesChanged of \(path) has arguments (\(args.map(\.signature).joined(separator: ","))), expected (s,a{sv},as)")
                    }
                    guard changedIface == WPADBusSource.interfaceIface, interfaces[path] != nil else { return }
                    guard case .dict(let changed) = args[1] else {
                        throw WPADBusError("PropertiesChanged of \(path) carries '\(args[1].signature)', expected a{sv}")
                    }
                    let oldNetwork = interfaces[path]?.currentNetwork
                    try interfaces[path]?.apply(properties: changed)
                    if interfaces[path]?.currentNetwork != oldNetwork { loadNetwork(path) }
                    report()
                case (WPADBusSource.interfaceIface, "EAP"):
                    guard interfaces[path] != nil else { return }
                    try interfaces[path]?.applyEAP(args)
                    // Each success: the network's certificate files read again (they may have
                    // changed since the network was loaded).
                    if args.count == 2, case .string("completion") = args[0], case .string("success") = args[1] { loadNetwork(path) }
                    report()
                case (WPADBusSource.interfaceIface, "Certification"):
                    guard interfaces[path] != nil else { return }
                    try interfaces[path]?.applyCertification(args)
                case (WPADBusSource.service, "InterfaceAdded"):
                    if case .objectPath(let p)? = args.first {
                        load(p)
                        report()
                    }
                case (WPADBusSource.service, "InterfaceRemoved"):
                    if case .objectPath(let p)? = args.first {
                        interfaces[p] = nil
                        report()
                    }
                default:
                    break
                }
            } catch {
                // A malformed signal changes nothing: the last good state stays.
                source.logger.warning("unexpected D-Bus signal from wpa_supplicant ignored",
                                      metadata: ["member": "\(iface).\(member)", "object": "\(path)", "error": "\(error)"])
            }
        }

        /// The uid of a connection (GetConnectionUnixUser), for the log; "unknown" if it is gone.
        func senderUID(_ sender: String?) -> String {
            guard let sender, let reply = try? call(destination: WPADBusSenderCheck.busDriver, path: WPADBusSenderCheck.busDriverPath,
                                                    interface: WPADBusSenderCheck.busDriver, member: "GetConnectionUnixUser", args: [sender], timeoutUSec: 500_000),
                  case .uint(let uid, _)? = reply.first else { return "unknown" }
            return "\(uid)"
        }

        /// GetNameOwner of fi.w1.wpa_supplicant1: its unique name, nil when it has no owner.
        func nameOwner() throws -> String? {
            do {
                let reply = try call(destination: WPADBusSenderCheck.busDriver, path: WPADBusSenderCheck.busDriverPath,
                                     interface: WPADBusSenderCheck.busDriver, member: "GetNameOwner", args: [WPADBusSource.service])
                guard case .string(let owner)? = reply.first, owner.hasPrefix(":") else {
                    throw WPADBusError("GetNameOwner(\(WPADBusSource.service)) answered (\(reply.map(\.signature).joined(separator: ","))), expected a unique name")
                }
                return owner
            } catch let e as SDBusCallError where e.name == "org.freedesktop.DBus.Error.NameHasNoOwner" {
                return nil
            }
        }

        /// Publishes the map when it changed.
        func report() {
            var next: [String: DeviceAuthState] = [:]
            let now = Date().timeIntervalSince1970
            for i in interfaces.values {
                guard let name = i.ifname else { continue }
                next[name] = DeviceAuthState.continuing(i.deviceAuth, from: reported[name], now: now)
                successFloor[name] = max(successFloor[name] ?? 0, i.successes)
            }
            if next != reported {
                reported = next
                onChange(next)
            }
        }

        /// org.freedesktop.DBus.Properties.Get on the supplicant, 2 s timeout.
        func getProperty(path: String, interface: String, name: String) throws -> DBusValue {
            let reply = try call(destination: WPADBusSource.service, path: path, interface: "org.freedesktop.DBus.Properties",
                                 member: "Get", args: [interface, name])
            guard let value = reply.first else {
                throw WPADBusError("Get \(interface).\(name) on \(path) returned nothing")
            }
            return value
        }

        /// A method call with string arguments; the reply's values.
        func call(destination: String, path: String, interface: String, member: String, args: [String],
                  timeoutUSec: UInt64 = 2_000_000) throws -> [DBusValue] {
            guard let b = bus else { throw SDBusError("not connected") }
            var call: OpaquePointer?
            try check(sd_bus_message_new_method_call(b, &call, destination, path, interface, member), "new method call")
            defer { sd_bus_message_unref(call) }
            for arg in args {
                try check(arg.withCString { sd_bus_message_append_basic(call, CChar(UInt8(ascii: "s")), $0) }, "append")
            }
            var error = sd_bus_error()
            var reply: OpaquePointer?
            let r = sd_bus_call(b, call, timeoutUSec, &error, &reply)
            defer {
                sd_bus_error_free(&error)
                sd_bus_message_unref(reply)
            }
            let what = member == "Get" && args.count == 2 ? "Get \(args[0]).\(args[1]) on \(path)" : "\(interface).\(member) on \(path)"
            if r < 0 {
                throw SDBusCallError(name: error.name.map { String(cString: $0) } ?? "errno \(-r)",
                                     message: error.message.map { String(cString: $0) } ?? String(cString: strerror(-r)),
                                     call: what)
            }
            guard let reply else { throw WPADBusError("\(what) returned no message") }
            return try DBusMessageReader.readAll(reply)
        }

        func check(_ r: Int32, _ what: String) throws {
            if r < 0 { throw SDBusError(what, r) }
        }
    }
}

/// A D-Bus method call answered with an error.
struct SDBusCallError: Error, CustomStringConvertible {
    var name: String
    var message: String
    var call: String
    var description: String { "\(call): \(name): \(message)" }
}
