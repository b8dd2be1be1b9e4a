// The strict reader every request body goes through (ReportCoding.decodeStrict).
//
// Why not JSONDecoder: the collector decodes one heartbeat per request, thousands a second.
// JSONDecoder's generic containers cost ~50 us per heartbeat alone and three times that on a
// busy collector (its metadata caches are shared by every thread), more than the rest of the
// request together. This reader walks the bytes once, straight into the message's fields:
// no intermediate tree, no generic containers, a few microseconds per heartbeat.
//
// What it refuses, each with the path of the problem: a field the message does not know, a
// field given twice, a missing field, a wrong type, a fraction or exponent where an integer
// belongs, an integer out of range, a date that is not RFC 3339, invalid UTF-8, an
// unescaped control character, a bad escape, anything after the top-level value. When the
// body is not JSON at all, the message says so first (as JSONDecoder would): on any error the
// body is parsed once more with JSONDecoder, and a syntax error wins over a field error.
//
// A property test compares it with JSONDecoder and JSONSerialization on random valid and
// mutated bodies (ReportCodingTests).

import FoundationEssentials
import SegguardEssentials
import Glibc

/// A message type that `ReportCoding.decodeStrict` reads with `StrictJSONReader`.
public protocol StrictDecodable: Decodable {
    /// Reads the message from the reader, which stands at its first byte.
    init(reading r: inout StrictJSONReader) throws(ReportDecodingError)
}

/// A pull reader over a JSON body, for the message types' `init(reading:)`.
public struct StrictJSONReader {
    let bytes: UnsafeBufferPointer<UInt8>
    var i = 0
    /// Keys and indexes from the top to the value being read (for error messages).
    var path: [PathComponent] = []

    enum PathComponent {
        case key(String)
        case index(Int)
    }

    init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    /// Reads a whole body: one message, nothing after it but whitespace.
    static func read<T: StrictDecodable>(_ type: T.Type, from data: Data) throws(ReportDecodingError) -> T {
        let result: Result<T, ReportDecodingError> = data.withUnsafeBytes { raw in
            var r = StrictJSONReader(bytes: raw.bindMemory(to: UInt8.self))
            do throws(ReportDecodingError) {
                let value = try T(reading: &r)
                r.skipWhitespace()
                guard r.i == r.bytes.count else { throw r.syntax("unexpected data after the top-level value") }
                return .success(value)
            } catch {
                return .failure(error)
            }
        }
        switch result {
        case .success(let v): return v
        case .failure(let e):
            // Not JSON at all: say that, whatever field the reader had reached (the body read
            // once more as any JSON value, on the error path only).
            if !e.description.hasPrefix("body: not valid JSON"), let syntax = Self.syntaxError(data) { throw syntax }
            throw e
        }
    }

    /// Why `data` is not JSON (where the first mistake is), or nil when it is (or nests deeper
    /// than 64 levels, or repeats a key: not syntax, the field error stands).
    static func syntaxError(_ data: Data) -> ReportDecodingError? {
        if data.isEmpty { return ReportDecodingError("body: not valid JSON (the body is empty)") }
        let error: ReportDecodingError? = data.withUnsafeBytes { raw in
            var r = StrictJSONReader(bytes: raw.bindMemory(to: UInt8.self))
            do throws(ReportDecodingError) {
                _ = try r.value(depth: 0, limit: 64)
                r.skipWhitespace()
                guard r.i == r.bytes.count else { throw r.syntax("unexpected data after the top-level value") }
                return nil
            } catch {
                return error
            }
        }
        return error.flatMap { $0.description.hasPrefix("body: not valid JSON") ? $0 : nil }
    }

    // MARK: Errors

    var pathText: String {
        var s = ""
        for c in path {
            switch c {
            case .key(let k): s += s.isEmpty ? k : ".\(k)"
            case .index(let n): s += "[\(n)]"
            }
        }
        return s.isEmpty ? "body" : s
    }

    func error(_ what: String) -> ReportDecodingError { ReportDecodingError("\(pathText): \(what)") }

    func syntax(_ what: String) -> ReportDecodingError {
        ReportDecodingError("body: not valid JSON (\(what) at byte \(i))")
    }

    // MARK: Structure

    mutating func skipWhitespace() {
        while i < bytes.count {
            switch bytes[i] {
            case 0x20, 0x09, 0x0A, 0x0D: i += 1
            default: return
            }
        }
    }

    /// The next byte after whitespace, not consumed.
    mutating func peek() throws(ReportDecodingError) -> UInt8 {
        skipWhitespace()
        guard i < bytes.count else { throw syntax("unexpected end of the body") }
        return bytes[i]
    }

    /// What the value at the reader is, for "expected a string, found ..." style messages.
    mutating func found() -> String {
        guard let b = try? peek() else { return "the end of the body" }
        switch b {
        case UInt8(ascii: "\""): return "a string"
        case UInt8(ascii: "{"): return "an object"
        case UInt8(ascii: "["): return "an array"
        case UInt8(ascii: "t"), UInt8(ascii: "f"): return "true or false"
        case UInt8(ascii: "n"): return "null"
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return "a number"
        default: return "something that is not JSON"
        }
    }

    mutating func expected(_ what: String) -> ReportDecodingError {
        let f = found()
        if f == "something that is not JSON" { return syntax("unexpected character") }
        return error(f == "null" ? "expected \(what), found null" : "expected \(what)")
    }

    /// Reads an object: `field` is called with each key while the reader stands at its
    /// value, and must read it (or throw). Unknown keys are the callee's to refuse (`unknown`);
    /// a key given twice is refused here. Returns the keys seen (a list: message objects have
    /// a handful of keys, a linear search beats hashing them).
    /// `trackKeys: false` leaves duplicate detection to the caller (a map of any size, where a
    /// list would make a body of many keys quadratic).
    public mutating func object(trackKeys: Bool = true, _ field: (inout StrictJSONReader, String) throws(ReportDecodingError) -> Void) throws(ReportDecodingError) -> [String] {
        guard try peek() == UInt8(ascii: "{") else { throw expected("an object") }
        i += 1
        var seen: [String] = []
        if try peek() == UInt8(ascii: "}") {
            i += 1
            return seen
        }
        while true {
            guard try peek() == UInt8(ascii: "\"") else { throw syntax("expected a field name") }
            let key = try rawString()
            guard try peek() == UInt8(ascii: ":") else { throw syntax("expected ':' after a field name") }
            i += 1
            path.append(.key(key))
            if trackKeys {
                guard !seen.contains(key) else { throw error("given twice") }
                seen.append(key)
            }
            try field(&self, key)
            path.removeLast()
            switch try peek() {
            case UInt8(ascii: ","): i += 1
            case UInt8(ascii: "}"):
                i += 1
                return seen
            default: throw syntax("expected ',' or '}' in an object")
            }
        }
    }

    /// The error for a key the message does not know (the reader stands at its value).
    public func unknown() -> ReportDecodingError { error("unknown field") }

    /// Throws "X: missing" for the first of `required` not in `seen`.
    public mutating func require(_ required: [String], in seen: [String]) throws(ReportDecodingError) {
        for k in required where !seen.contains(k) {
            path.append(.key(k))
            throw error("missing")
        }
    }

    /// Reads an array, calling `element` with the reader at each element.
    public mutating func array<T>(_ element: (inout StrictJSONReader) throws(ReportDecodingError) -> T) throws(ReportDecodingError) -> [T] {
        guard try peek() == UInt8(ascii: "[") else { throw expected("an array") }
        i += 1
        var out: [T] = []
        if try peek() == UInt8(ascii: "]") {
            i += 1
            return out
        }
        while true {
            path.append(.index(out.count))
            out.append(try element(&self))
            path.removeLast()
            switch try peek() {
            case UInt8(ascii: ","): i += 1
            case UInt8(ascii: "]"):
                i += 1
                return out
            default: throw syntax("expected ',' or ']' in an array")
            }
        }
    }

    // MARK: Scalars

    /// True when the value is null (and consumes it).
    public mutating func null() throws(ReportDecodingError) -> Bool {
        guard try peek() == UInt8(ascii: "n") else { return false }
        try literal("null")
        return true
    }

    mutating func literal(_ word: StaticString) throws(ReportDecodingError) {
        let n = word.utf8CodeUnitCount
        guard i + n <= bytes.count else { throw syntax("unexpected end of the body") }
        let w = word.utf8Start
        for k in 0..<n where bytes[i + k] != w[k] { throw syntax("unexpected character") }
        i += n
    }

    public mutating func bool() throws(ReportDecodingError) -> Bool {
        switch try peek() {
        case UInt8(ascii: "t"):
            try literal("true")
            return true
        case UInt8(ascii: "f"):
            try literal("false")
            return false
        default: throw expected("true or false")
        }
    }

    public mutating func int64() throws(ReportDecodingError) -> Int64 {
        let b = try peek()
        guard b == UInt8(ascii: "-") || (b >= 0x30 && b <= 0x39) else { throw expected("an integer") }
        let start = i
        var negative = false
        if b == UInt8(ascii: "-") {
            negative = true
            i += 1
        }
        let digitsStart = i
        var value: Int64 = 0
        var overflow = false
        while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 {
            let d = Int64(bytes[i] - 0x30)
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (s, o2) = negative ? m.subtractingReportingOverflow(d) : m.addingReportingOverflow(d)
            overflow = overflow || o1 || o2
            value = s
            i += 1
        }
        let digits = i - digitsStart
        guard digits > 0 else { throw syntax("a '-' without digits") }
        guard !(digits > 1 && bytes[digitsStart] == 0x30) else { throw syntax("a number with a leading zero") }
        if i < bytes.count, bytes[i] == UInt8(ascii: ".") || bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
            // A valid JSON number, but not an integer: skip it for the syntax check's sake.
            i = start
            _ = try skipNumber()
            throw error("expected an integer")
        }
        guard !overflow else { throw error("\(String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)) is out of range") }
        return value
    }

    public mutating func int() throws(ReportDecodingError) -> Int {
        let v = try int64()
        guard let n = Int(exactly: v) else { throw error("\(v) is out of range") }
        return n
    }

    /// Consumes a JSON number (any form) and returns its text.
    mutating func skipNumber() throws(ReportDecodingError) -> Int {
        let start = i
        if i < bytes.count, bytes[i] == UInt8(ascii: "-") { i += 1 }
        func digits(_ r: inout StrictJSONReader) -> Int {
            let s = r.i
            while r.i < r.bytes.count, r.bytes[r.i] >= 0x30, r.bytes[r.i] <= 0x39 { r.i += 1 }
            return r.i - s
        }
        guard digits(&self) > 0 else { throw syntax("a malformed number") }
        if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
            i += 1
            guard digits(&self) > 0 else { throw syntax("a malformed number") }
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
            i += 1
            if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
            guard digits(&self) > 0 else { throw syntax("a malformed number") }
        }
        return i - start
    }

    public mutating func string() throws(ReportDecodingError) -> String {
        guard try peek() == UInt8(ascii: "\"") else { throw expected("a string") }
        return try rawString()
    }

    /// A string at the reader (which stands at its opening quote), escapes resolved, UTF-8 checked.
    mutating func rawString() throws(ReportDecodingError) -> String {
        i += 1
        let start = i
        // Fast path: no escapes.
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: "\"") {
                let s = String(validating: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
                i += 1
                guard let s else { throw error("not valid UTF-8") }
                return s
            }
            if b == UInt8(ascii: "\\") { break }
            if b < 0x20 { throw syntax("a control character in a string") }
            i += 1
        }
        var out = Array(UnsafeBufferPointer(rebasing: bytes[start..<i]))
        while i < bytes.count {
            let b = bytes[i]
            switch b {
            case UInt8(ascii: "\""):
                i += 1
                guard let s = String(validating: out, as: UTF8.self) else { throw error("not valid UTF-8") }
                return s
            case UInt8(ascii: "\\"):
                i += 1
                guard i < bytes.count else { throw syntax("unexpected end of the body") }
                let e = bytes[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800...0xDBFF).contains(scalar) {
                        guard i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") else {
                            throw error("a lone surrogate in a \\u escape")
                        }
                        i += 2
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw error("a lone surrogate in a \\u escape") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(scalar) {
                        throw error("a lone surrogate in a \\u escape")
                    }
                    guard let u = Unicode.Scalar(scalar) else { throw error("an invalid \\u escape") }
                    out.append(contentsOf: Array(String(Character(u)).utf8))
                default: throw syntax("an invalid escape")
                }
            default:
                if b < 0x20 { throw syntax("a control character in a string") }
                out.append(b)
                i += 1
            }
        }
        throw syntax("an unterminated string")
    }

    mutating func hex4() throws(ReportDecodingError) -> UInt32 {
        guard i + 4 <= bytes.count else { throw syntax("unexpected end of the body") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            guard let d = Character(Unicode.Scalar(bytes[i])).hexDigitValue else { throw syntax("an invalid \\u escape") }
            v = v << 4 | UInt32(d)
            i += 1
        }
        return v
    }

    public mutating func date() throws(ReportDecodingError) -> Date {
        let s = try string()
        guard let d = RFC3339.parse(s) else { throw error("\"\(s)\" is not an RFC 3339 date (2026-11-26T05:00:00.000Z)") }
        return d
    }

    /// A string, or nil for null.
    public mutating func optionalString() throws(ReportDecodingError) -> String? { try null() ? nil : string() }
    public mutating func optionalInt64() throws(ReportDecodingError) -> Int64? { try null() ? nil : int64() }

    /// An object of strings (`details`).
    public mutating func stringMap() throws(ReportDecodingError) -> [String: String] {
        var out: [String: String] = [:]
        _ = try object(trackKeys: false) { (r, key) throws(ReportDecodingError) in
            guard out.updateValue(try r.string(), forKey: key) == nil else { throw r.error("given twice") }
        }
        return out
    }
}

extension StrictJSONReader {
    /// Nesting deeper than this in an `ext` value is refused (a stack-exhaustion guard).
    static let maxDepth = 32

    /// Any JSON value, checked as strictly as the rest of the body.
    public mutating func value() throws(ReportDecodingError) -> JSONValue { try value(depth: 0, limit: Self.maxDepth) }

    /// Nesting deeper than `limit` is refused (recursion: the stack must not run out).
    mutating func value(depth: Int, limit: Int) throws(ReportDecodingError) -> JSONValue {
        guard depth < limit else { throw error("nested deeper than \(limit) levels") }
        switch try peek() {
        case UInt8(ascii: "{"):
            var out: [String: JSONValue] = [:]
            _ = try object(trackKeys: false) { (r, key) throws(ReportDecodingError) in
                guard out.updateValue(try r.value(depth: depth + 1, limit: limit), forKey: key) == nil else { throw r.error("given twice") }
            }
            return .object(out)
        case UInt8(ascii: "["):
            return .array(try array { (r: inout StrictJSONReader) throws(ReportDecodingError) in try r.value(depth: depth + 1, limit: limit) })
        case UInt8(ascii: "\""): return .string(try rawString())
        case UInt8(ascii: "t"), UInt8(ascii: "f"): return .bool(try bool())
        case UInt8(ascii: "n"):
            try literal("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            let start = i
            let n = try skipNumber()
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<(start + n)]), as: UTF8.self)
            return .number(Double(text) ?? 0)
        default: throw syntax("unexpected character")
        }
    }

    /// A message's `ext` object: members a reader does not know are kept, never refused.
    public mutating func extensions() throws(ReportDecodingError) -> [String: JSONValue]? {
        if try null() { return nil }
        guard case .object(let o) = try value() else { throw error("expected an object") }
        return o
    }
}
