// The sd-bus reader on real wire messages: a private dbus-daemon (no root needed), one client
// emitting signals of many shapes, including ones wpa_supplicant never sends, and one reading
// them with DBusMessageReader as WPADBusSource does.

import CSystemd
import Foundation
import Testing
@testable import SegguardDeviceAuth

#if canImport(Glibc)
import Glibc
#endif

/// A private bus for one test; `stop()` kills the daemon and removes its directory.
final class PrivateBus {
    let dir: String
    let pid: pid_t
    var address: String { "unix:path=\(dir)/bus.sock" }

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("sgbus-\(getpid())-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try """
            <busconfig><type>session</type><listen>unix:path=\(dir)/bus.sock</listen><auth>EXTERNAL</auth>
            <policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/></policy></busconfig>
            """.write(toFile: "\(dir)/bus.conf", atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/dbus-daemon")
        p.arguments = ["--config-file=\(dir)/bus.conf", "--nofork"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        pid = p.processIdentifier
        for _ in 0..<500 where !FileManager.default.fileExists(atPath: "\(dir)/bus.sock") { usleep(10_000) }
    }

    func connect() throws -> OpaquePointer {
        var b: OpaquePointer?
        guard sd_bus_new(&b) >= 0, sd_bus_set_address(b, address) >= 0, sd_bus_set_bus_client(b, 1) >= 0, sd_bus_start(b) >= 0, let b else {
            throw SDBusError("cannot connect to \(address)")
        }
        return b
    }

    func stop() {
        kill(pid, SIGKILL)
        try? FileManager.default.removeItem(atPath: dir)
    }
}

/// Collects the signals a match delivers, read with DBusMessageReader.
final class Received {
    var values: [Result<[DBusValue], SDBusError>] = []
}

@Suite("D-Bus message reader on a private bus", .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/dbus-daemon"), "needs dbus-daemon (scripts/install-deps.sh installs it)"))
struct DBusMessageReaderTests {
    /// Sends one signal built by `build` from one client and returns what the other read.
    func roundTrip(_ build: (OpaquePointer) -> Int32) throws -> Result<[DBusValue], SDBusError> {
        let bus = try PrivateBus()
        defer { bus.stop() }
        let sender = try bus.connect(), receiver = try bus.connect()
        defer {
            sd_bus_flush_close_unref(sender)
            sd_bus_flush_close_unref(receiver)
        }
        let box = Received()
        let r = sd_bus_add_match(receiver, nil, "type='signal',interface='fi.w1.wpa_supplicant1.Interface'", { m, userdata, _ in
            let box = Unmanaged<Received>.fromOpaque(userdata!).takeUnretainedValue()
            do { box.values.append(.success(try DBusMessageReader.readAll(m!))) } catch { box.values.append(.failure(error as! SDBusError)) }
            return 0
        }, Unmanaged.passUnretained(box).toOpaque())
        #expect(r >= 0)
        var m: OpaquePointer?
        #expect(sd_bus_message_new_signal(sender, &m, "/fi/w1/wpa_supplicant1/Interfaces/0", "fi.w1.wpa_supplicant1.Interface", "PropertiesChanged") >= 0)
        #expect(build(m!) >= 0)
        #expect(sd_bus_send(sender, m, nil) >= 0)
        #expect(sd_bus_flush(sender) >= 0)
        sd_bus_message_unref(m)
        let deadline = Date().addingTimeInterval(5)
        while box.values.isEmpty && Date() < deadline {
            while sd_bus_process(receiver, nil) > 0 {}
            _ = sd_bus_wait(receiver, 100_000)
        }
        return try #require(box.values.first)
    }

    static func s(_ m: OpaquePointer, _ v: String) -> Int32 { v.withCString { sd_bus_message_append_basic(m, CChar(UInt8(ascii: "s")), $0) } }
    static func open(_ m: OpaquePointer, _ t: Character, _ c: String) -> Int32 { sd_bus_message_open_container(m, CChar(t.asciiValue!), c) }

    @Test("a{sv} with strings, object paths, integers, booleans, arrays and nested variants")
    func dictionary() throws {
        let got = try roundTrip { m in
            var r = Self.open(m, "a", "{sv}")
            r = min(r, Self.open(m, "e", "sv")); r = min(r, Self.s(m, "State")); r = min(r, Self.open(m, "v", "s")); r = min(r, Self.s(m, "completed"))
            r = min(r, sd_bus_message_close_container(m)); r = min(r, sd_bus_message_close_container(m))
            r = min(r, Self.open(m, "e", "sv")); r = min(r, Self.s(m, "Weird")); r = min(r, Self.open(m, "v", "i"))
            var i: Int32 = -7
            r = min(r, sd_bus_message_append_basic(m, CChar(UInt8(ascii: "i")), &i))
            r = min(r, sd_bus_message_close_container(m)); r = min(r, sd_bus_message_close_container(m))
            r = min(r, Self.open(m, "e", "sv")); r = min(r, Self.s(m, "Paths")); r = min(r, Self.open(m, "v", "ao")); r = min(r, Self.open(m, "a", "o"))
            r = min(r, "/a/b".withCString { sd_bus_message_append_basic(m, CChar(UInt8(ascii: "o")), $0) })
            r = min(r, sd_bus_message_close_container(m)); r = min(r, sd_bus_message_close_container(m)); r = min(r, sd_bus_message_close_container(m))
            r = min(r, Self.open(m, "e", "sv")); r = min(r, Self.s(m, "Nested")); r = min(r, Self.open(m, "v", "v")); r = min(r, Self.open(m, "v", "b"))
            var b: Int32 = 1
            r = min(r, sd_bus_message_append_basic(m, CChar(UInt8(ascii: "b")), &b))
            r = min(r, sd_bus_message_close_container(m)); r = min(r, sd_bus_message_close_container(m)); r = min(r, sd_bus_message_close_container(m))
            return min(r, sd_bus_message_close_container(m))
        }
        let values = try got.get()
        #expect(values == [.dict([
            "State": .variant(.string("completed")),
            "Weird": .variant(.int(-7, type: "i")),
            "Paths": .variant(.array([.objectPath("/a/b")], element: "o")),
            "Nested": .variant(.variant(.bool(true))),
        ])])
        // What the model makes of the unexpected types: an error naming them, not a crash.
        var i = WPADBusInterface(path: "/fi/w1/wpa_supplicant1/Interfaces/0")
        guard case .dict(var props) = values[0] else { return }
        props["State"] = props["Weird"]
        #expect { try i.apply(properties: props) } throws: { "\($0)".contains("has type 'i', expected s (string)") }
    }

    @Test("integer, double, struct and a{uy} bodies read with their types")
    func otherShapes() throws {
        let got = try roundTrip { m in
            var u: UInt32 = 42, d: Double = 1.5, y: UInt8 = 9, t: UInt64 = 1 << 40
            var r = sd_bus_message_append_basic(m, CChar(UInt8(ascii: "u")), &u)
            r = min(r, sd_bus_message_append_basic(m, CChar(UInt8(ascii: "d")), &d))
            r = min(r, Self.open(m, "r", "st")); r = min(r, Self.s(m, "x")); r = min(r, sd_bus_message_append_basic(m, CChar(UInt8(ascii: "t")), &t)); r = min(r, sd_bus_message_close_container(m))
            r = min(r, Self.open(m, "a", "{uy}")); r = min(r, Self.open(m, "e", "uy"))
            r = min(r, sd_bus_message_append_basic(m, CChar(UInt8(ascii: "u")), &u)); r = min(r, sd_bus_message_append_basic(m, CChar(UInt8(ascii: "y")), &y))
            r = min(r, sd_bus_message_close_container(m))
            return min(r, sd_bus_message_close_container(m))
        }
        #expect(try got.get() == [.uint(42, type: "u"), .double(1.5), .structure([.string("x"), .uint(1 << 40, type: "t")]),
                                  .array([.structure([.uint(42, type: "u"), .uint(9, type: "y")])], element: "{uy}")])
    }
}
