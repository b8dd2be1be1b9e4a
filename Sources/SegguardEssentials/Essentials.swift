// What the agent's modules would otherwise take from Foundation's ICU-backed half: trimming,
// printf-style numbers, hex, path components, stderr, sleeping, any JSON value. The agent
// imports FoundationEssentials only (scripts/check-imports.py); Foundation itself would link
// ICU's 34 MB of data and about 30 MB of code into segguardd (Packaging/build-deb.sh checks
// the binary). Everything here is C-locale and independent of the user's language settings.

import FoundationEssentials
import Glibc

extension StringProtocol {
    /// Without leading and trailing characters for which `drop` holds (default: whitespace and
    /// newlines, Unicode's White_Space, as Foundation's `.whitespacesAndNewlines`).
    public func trimmed(where drop: (Character) -> Bool = \.isWhitespace) -> String {
        guard let first = firstIndex(where: { !drop($0) }), let last = lastIndex(where: { !drop($0) }) else { return "" }
        return String(self[first...last])
    }
}

extension StringProtocol {
    /// Padded with spaces on the right to `width` characters (never cut).
    public func padded(to width: Int) -> String {
        String(self) + String(repeating: " ", count: Swift.max(0, width - count))
    }
}

/// printf-style formatting in the C locale (`format("%.1f", 2.25)` is "2.2"): the C library's
/// vsnprintf. `%@` is not supported (pass strings through interpolation).
public func format(_ format: String, _ arguments: any CVarArg...) -> String {
    withVaList(arguments) { list in
        var buffer = [CChar](repeating: 0, count: 128)
        let needed = Int(vsnprintf(&buffer, buffer.count, format, list))
        guard needed >= buffer.count else { return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        return withVaList(arguments) { again in
            var large = [CChar](repeating: 0, count: needed + 1)
            _ = vsnprintf(&large, large.count, format, again)
            return String(decoding: large.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }
}

/// Lower-case hex digits of `bytes`, two per byte.
public func hexString<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(bytes.underestimatedCount * 2)
    for b in bytes {
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 0x0f)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// Path components, as the shell's dirname and basename see them (no file system access).
public enum PathName {
    /// The directory part of `path` ("" for a bare name, "/" for a file in /).
    public static func directory(_ path: String) -> String {
        var p = Substring(path)
        while p.count > 1, p.hasSuffix("/") { p = p.dropLast() }
        guard let slash = p.lastIndex(of: "/") else { return "" }
        if slash == p.startIndex { return "/" }
        var d = p[..<slash]
        while d.count > 1, d.hasSuffix("/") { d = d.dropLast() }
        return String(d)
    }

    /// The last component of `path` (trailing slashes ignored).
    public static func last(_ path: String) -> String {
        var p = Substring(path)
        while p.count > 1, p.hasSuffix("/") { p = p.dropLast() }
        guard let slash = p.lastIndex(of: "/") else { return String(p) }
        return p == "/" ? "/" : String(p[p.index(after: slash)...])
    }

    /// `path` with every symbolic link resolved (realpath(3)); `path` itself when that fails.
    public static func resolved(_ path: String) -> String {
        guard let real = realpath(path, nil) else { return path }
        defer { free(real) }
        return String(cString: real)
    }

    /// `directory` and `name` joined with one slash.
    public static func join(_ directory: String, _ name: String) -> String {
        directory.isEmpty ? name : directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }
}

/// Writes `text` to standard error (write(2), all of it; errors ignored).
public func writeStandardError(_ text: String) {
    var bytes = Array(text.utf8)[...]
    while !bytes.isEmpty {
        let n = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return }
        bytes = bytes.dropFirst(n)
    }
}

/// Sleeps the calling thread for `seconds` (nanosleep, resumed after signals).
public func sleepThread(seconds: Double) {
    guard seconds > 0 else { return }
    var request = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - seconds.rounded(.towardZero)) * 1e9))
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
}

/// Any JSON value: the members of a report message's `ext` object (which a reader that does
/// not know them keeps or ignores, never refuses), and documents without a fixed shape such as
/// `nft --json` listings.
public enum JSONValue: Codable, Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        // Each kind is tried in turn; only "not this kind" moves on, so that an error inside a
        // value (a lone surrogate in a string) is the one reported.
        if c.decodeNil() { self = .null; return }
        do { self = .bool(try c.decode(Bool.self)); return } catch DecodingError.typeMismatch {}
        do { self = .number(try c.decode(Double.self)); return } catch DecodingError.typeMismatch {}
        do { self = .string(try c.decode(String.self)); return } catch DecodingError.typeMismatch {}
        do { self = .array(try c.decode([JSONValue].self)); return } catch DecodingError.typeMismatch {}
        self = .object(try c.decode([String: JSONValue].self))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let n): try c.encode(n)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// Parses `data`; nil when it is not JSON.
    public static func parse(_ data: Data) -> JSONValue? {
        try? JSONDecoder().decode(JSONValue.self, from: data)
    }

    public subscript(key: String) -> JSONValue? {
        if case let .object(o) = self { return o[key] }
        return nil
    }

    public var array: [JSONValue]? { if case let .array(a) = self { return a } else { return nil } }
    public var object: [String: JSONValue]? { if case let .object(o) = self { return o } else { return nil } }
    public var string: String? { if case let .string(s) = self { return s } else { return nil } }

    /// A whole non-negative number (exact up to 2^53, as JSON numbers are).
    public var uint64: UInt64? {
        if case let .number(d) = self, d >= 0, d < 1.8e19, d == d.rounded() { return UInt64(d) }
        return nil
    }
}

/// Why a file or directory operation failed: the path and the system's words ("No such file or
/// directory (errno 2)"), or "it is not UTF-8 text".
public struct FileError: Error, CustomStringConvertible, Sendable, Equatable {
    public var path: String
    public var reason: String
    /// The errno of a failed system call (nil: "not UTF-8", "not a directory").
    public var code: Int32?
    public init(path: String, reason: String, code: Int32? = nil) { (self.path, self.reason, self.code) = (path, reason, code) }
    static func system(_ path: String) -> FileError {
        let code = errno
        return FileError(path: path, reason: "\(String(cString: strerror(code))) (errno \(code))", code: code)
    }
    /// "PATH: REASON".
    public var description: String { "\(path): \(reason)" }
}

/// The bytes of the file at `path` (open and read, retried on EINTR).
public func readFile(_ path: String) throws(FileError) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw FileError.system(path) }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            throw FileError.system(path)
        }
        if n == 0 { return bytes }
        bytes.append(contentsOf: chunk[0..<n])
    }
}

/// The UTF-8 text of the file at `path`.
public func readTextFile(_ path: String) throws(FileError) -> String {
    guard let text = String(validating: try readFile(path), as: UTF8.self) else { throw FileError(path: path, reason: "it is not UTF-8 text") }
    return text
}

/// Creates `path` and its missing parents with `mode` (mkdir -p); an existing directory is fine.
public func makeDirectories(_ path: String, mode: mode_t = 0o755) throws(FileError) {
    var st = stat()
    if stat(path, &st) == 0 {
        guard st.st_mode & S_IFMT == S_IFDIR else { throw FileError(path: path, reason: "it exists and is not a directory") }
        return
    }
    let parent = PathName.directory(path)
    if !parent.isEmpty && parent != path { try makeDirectories(parent, mode: mode) }
    if mkdir(path, mode) != 0 && errno != EEXIST { throw FileError.system(path) }
}

/// A number as people write it: "3" for 3.0, "2.5" for 2.5 (Swift's shortest exact form).
public func decimal(_ value: Double) -> String {
    value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : "\(value)"
}
