// The D-Bus source of 802.1X state, for systems where NetworkManager (or systemd's
// wpa_supplicant.service with -u) runs wpa_supplicant. Owns: one sd-bus connection to the
// system bus (or the address given), its signal matches, and the thread that processes it.
// Event-driven: PropertiesChanged, EAP, InterfaceAdded/Removed and NameOwnerChanged signals
// drive every update; properties are read (Get) only when an interface or its network appears.

import CSegguardShims
import CSystemd
import Foundation
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

    public init(address: String? = nil, logger: Logger = Logger(label: "segguard.deviceauth.dbus")) {
        self.address = address
        self.logger = logger
    }

    public func start(onChange: @escaping @Sendable ([String: DeviceAuthState]) -> Void) {
        stopSignal.arm()
        startThread(name: "sg-wpa-dbus") { [self] in
            let loop = Loop(source: self, onChange: onChange)
            loop.run()
        }
    }

    public func stop() { stopSignal.stop() }

    /// TODO(issue 17, in progress): send the re-authentication request to the supplicant.
    public func reauthenticate(interface: String) {}

    /// The bus thread's state; every sd-bus object is used on that thread only.
    final class Loop {
        unowned let source: WPADBusSource
        let onChange: @Sendable ([String: DeviceAuthState]) -> Void
        var bus: OpaquePointer?
        var interfaces: [String: WPADBusInterface] = [:]
        var reported: [String: DeviceAuthState] = [:]

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
            enumerate()
        }

        func disconnect() {
            if let b = bus { sd_bus_flush_close_unref(b) }
            bus = nil
            interfaces = [:]
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
                           pollfd(fd: source.stopSignal.fd, events: Int16(POLLIN), revents: 0)]
                var usec: UInt64 = 0
                _ = sd_bus_get_timeout(b, &usec)
                let timeout: Int32 = usec == UInt64.max ? -1 : Int32(clamping: (usec + 999) / 1000)
                let n = poll(&fds, 2, timeout)
                if n < 0 && errno != EINTR { throw SDBusError("poll", -errno) }
            }
        }

        /// Reads every interface the supplicant has (at connect and when its name gets an owner).
        func enumerate() {
            interfaces = [:]
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
            } catch {
                source.logger.warning("cannot read wpa_supplicant network", metadata: ["object": "\(network)", "error": "\(error)"])
            }
        }

        /// One signal from the bus.
        func handle(_ m: OpaquePointer) {
            let member = sd_bus_message_get_member(m).map { String(cString: $0) } ?? ""
            let iface = sd_bus_message_get_interface(m).map { String(cString: $0) } ?? ""
            let path = sd_bus_message_get_path(m).map { String(cString: $0) } ?? ""
            do {
                let args = try DBusMessageReader.readAll(m)
                switch (iface, member) {
                case ("org.freedesktop.DBus", "NameOwnerChanged"):
                    // (name, old owner, new owner): the supplicant (re)started or exited.
                    if args.count == 3, case .string(let newOwner) = args[2] {
                        if newOwner.isEmpty {
                            source.logger.warning("wpa_supplicant left the bus; 802.1X state dropped")
                            interfaces = [:]
                            report()
                        } else {
                            enumerate()
                        }
                    }
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
                    report()
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

        /// Publishes the map when it changed.
        func report() {
            var next: [String: DeviceAuthState] = [:]
            let now = Date().timeIntervalSince1970
            for i in interfaces.values {
                guard let name = i.ifname else { continue }
                next[name] = DeviceAuthState.continuing(i.deviceAuth, from: reported[name], now: now)
            }
            if next != reported {
                reported = next
                onChange(next)
            }
        }

        /// org.freedesktop.DBus.Properties.Get, 2 s timeout.
        func getProperty(path: String, interface: String, name: String) throws -> DBusValue {
            guard let b = bus else { throw SDBusError("not connected") }
            var call: OpaquePointer?
            try check(sd_bus_message_new_method_call(b, &call, WPADBusSource.service, path, "org.freedesktop.DBus.Properties", "Get"), "new method call")
            defer { sd_bus_message_unref(call) }
            try check(interface.withCString { sd_bus_message_append_basic(call, CChar(UInt8(ascii: "s")), $0) }, "append")
            try check(name.withCString { sd_bus_message_append_basic(call, CChar(UInt8(ascii: "s")), $0) }, "append")
            var error = sd_bus_error()
            var reply: OpaquePointer?
            let r = sd_bus_call(b, call, 2_000_000, &error, &reply)
            defer {
                sd_bus_error_free(&error)
                sd_bus_message_unref(reply)
            }
            if r < 0 {
                throw SDBusCallError(name: error.name.map { String(cString: $0) } ?? "errno \(-r)",
                                     message: error.message.map { String(cString: $0) } ?? String(cString: strerror(-r)),
                                     call: "Get \(interface).\(name) on \(path)")
            }
            guard let reply, let value = try DBusMessageReader.read(reply) else {
                throw WPADBusError("Get \(interface).\(name) on \(path) returned nothing")
            }
            return value
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
