// Reads any sd-bus message body into DBusValue, whatever its signature: what a peer sends is
// checked against the API afterwards in Swift (WPADBusInterface), never trusted to match.

import CSystemd

#if canImport(Glibc)
import Glibc
#endif

/// An sd-bus call that failed, with its negative errno.
struct SDBusError: Error, CustomStringConvertible {
    var description: String
    init(_ call: String, _ r: Int32) {
        description = "\(call): \(String(cString: strerror(-r))) (errno \(-r))"
    }
    init(_ text: String) { description = text }
}

enum DBusMessageReader {
    /// Every remaining value of the message (or of the container entered).
    static func readAll(_ m: OpaquePointer) throws -> [DBusValue] {
        var values: [DBusValue] = []
        while let v = try read(m) { values.append(v) }
        return values
    }

    /// The next value, or nil at the end of the message or container.
    static func read(_ m: OpaquePointer, depth: Int = 0) throws -> DBusValue? {
        guard depth < 32 else { throw SDBusError("D-Bus value nested more than 32 deep") }
        var type: CChar = 0
        var contentsPtr: UnsafePointer<CChar>?
        let r = sd_bus_message_peek_type(m, &type, &contentsPtr)
        if r < 0 { throw SDBusError("sd_bus_message_peek_type", r) }
        if r == 0 { return nil }
        let contents = contentsPtr.map { String(cString: $0) } ?? ""
        let t = Character(UnicodeScalar(UInt8(bitPattern: type)))
        switch t {
        case "s", "o", "g":
            var p: UnsafePointer<CChar>?
            try check(sd_bus_message_read_basic(m, type, &p), "read string")
            let s = p.map { String(cString: $0) } ?? ""
            return t == "s" ? .string(s) : t == "o" ? .objectPath(s) : .signature(s)
        case "b":
            return .bool(try basic(m, type, Int32(0)) != 0)
        case "y": return .uint(UInt64(try basic(m, type, UInt8(0))), type: t)
        case "n": return .int(Int64(try basic(m, type, Int16(0))), type: t)
        case "q": return .uint(UInt64(try basic(m, type, UInt16(0))), type: t)
        case "i", "h": return .int(Int64(try basic(m, type, Int32(0))), type: t)
        case "u": return .uint(UInt64(try basic(m, type, UInt32(0))), type: t)
        case "x": return .int(try basic(m, type, Int64(0)), type: t)
        case "t": return .uint(try basic(m, type, UInt64(0)), type: t)
        case "d": return .double(try basic(m, type, Double(0)))
        case "v":
            try check(sd_bus_message_enter_container(m, type, contents), "enter variant")
            guard let inner = try read(m, depth: depth + 1) else { throw SDBusError("empty variant") }
            try check(sd_bus_message_exit_container(m), "exit variant")
            return .variant(inner)
        case "r":
            try check(sd_bus_message_enter_container(m, type, contents), "enter struct")
            var fields: [DBusValue] = []
            while let f = try read(m, depth: depth + 1) { fields.append(f) }
            try check(sd_bus_message_exit_container(m), "exit struct")
            return .structure(fields)
        case "a":
            try check(sd_bus_message_enter_container(m, type, contents), "enter array")
            defer { _ = sd_bus_message_exit_container(m) }
            if contents.hasPrefix("{s") {
                let entry = String(contents.dropFirst().dropLast())
                var dict: [String: DBusValue] = [:]
                while true {
                    let e = sd_bus_message_enter_container(m, CChar(UInt8(ascii: "e")), entry)
                    if e < 0 { throw SDBusError("enter dict entry", e) }
                    if e == 0 { break }
                    guard case .string(let key)? = try read(m, depth: depth + 1), let value = try read(m, depth: depth + 1) else {
                        throw SDBusError("malformed dict entry")
                    }
                    dict[key] = value
                    try check(sd_bus_message_exit_container(m), "exit dict entry")
                }
                return .dict(dict)
            }
            if contents.hasPrefix("{") {
                // Dictionaries with non-string keys: entries as (key, value) structures.
                let entry = String(contents.dropFirst().dropLast())
                var items: [DBusValue] = []
                while true {
                    let e = sd_bus_message_enter_container(m, CChar(UInt8(ascii: "e")), entry)
                    if e < 0 { throw SDBusError("enter dict entry", e) }
                    if e == 0 { break }
                    items.append(.structure(try readAll(m)))
                    try check(sd_bus_message_exit_container(m), "exit dict entry")
                }
                return .array(items, element: contents)
            }
            var items: [DBusValue] = []
            while let item = try read(m, depth: depth + 1) { items.append(item) }
            return .array(items, element: contents)
        default:
            throw SDBusError("unsupported D-Bus type '\(t)'")
        }
    }

    /// One fixed-size basic value; `initial` gives its Swift type (sd-bus writes int for 'b').
    static func basic<T: BitwiseCopyable>(_ m: OpaquePointer, _ type: CChar, _ initial: T) throws -> T {
        var v = initial
        let r = withUnsafeMutableBytes(of: &v) { sd_bus_message_read_basic(m, type, $0.baseAddress) }
        try check(r, "read '\(Character(UnicodeScalar(UInt8(bitPattern: type))))'")
        return v
    }

    static func check(_ r: Int32, _ what: String) throws {
        if r < 0 { throw SDBusError(what, r) }
    }
}
