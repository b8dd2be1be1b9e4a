// The one way segment-guard makes a system call that reports failure through errno: EINTR is
// retried, a failure becomes a `SystemError` naming the call (and its object) with errno, and
// EBADF/EFAULT — a descriptor or pointer this process got wrong — stop the process, because
// carrying on with a confused descriptor table could act on the wrong file or socket.

import CSegguardShims
import FoundationEssentials

#if canImport(Glibc)
import Glibc
#endif

/// A failed system call: what was called (with its object) and errno.
public struct SystemError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The call and its object, e.g. "open /run/segguard/control.sock".
    public var call: String
    public var errno: Int32

    public init(call: String, errno: Int32) { (self.call, self.errno) = (call, errno) }

    public var description: String { "\(call): \(String(cString: strerror(errno))) (errno \(errno))" }
}

/// Runs `body`, a call returning -1 with errno set on failure, until it is not interrupted.
///
/// - Returns: the call's result (never -1).
/// - Throws: `SystemError` naming `call` with errno.
/// - Traps on EBADF and EFAULT: those are bugs of this process, not conditions to handle.
@discardableResult
public func systemCall<Result: FixedWidthInteger>(_ call: @autoclosure () -> String, _ body: () -> Result) throws(SystemError) -> Result {
    while true {
        let result = body()
        if result != -1 { return result }
        let code = Glibc.errno
        if code == EINTR { continue }
        if code == EBADF || code == EFAULT {
            fatalError("\(call()): \(String(cString: strerror(code))) (errno \(code)): a descriptor or buffer of segguard is wrong")
        }
        throw SystemError(call: call(), errno: code)
    }
}

/// Like `systemCall`, for the shims and kernel interfaces that return `-errno` instead of
/// setting errno (`sg_enter_netns`, `sg_pidfd_open`, …).
@discardableResult
public func systemCallNegativeErrno<Result: FixedWidthInteger & SignedInteger>(_ call: @autoclosure () -> String, _ body: () -> Result) throws(SystemError) -> Result {
    try systemCall(call()) {
        let r = body()
        guard r < 0 else { return r }
        Glibc.errno = Int32(truncatingIfNeeded: -r)
        return -1
    }
}

/// Writes all of `bytes` to `fd` (retrying short writes and EINTR).
public func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, call: @autoclosure () -> String) throws(SystemError) {
    var offset = 0
    while offset < bytes.count {
        let n = try systemCall(call()) { Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset) }
        offset += n
    }
}

/// Writes all of `data` to `fd`.
public func writeAll(_ fd: Int32, _ data: some ContiguousBytes, call: @autoclosure () -> String) throws(SystemError) {
    let result: Result<Void, SystemError> = data.withUnsafeBytes { raw in
        do throws(SystemError) {
            try writeAll(fd, raw, call: call())
            return .success(())
        } catch {
            return .failure(error)
        }
    }
    try result.get()
}

/// The contents of a small kernel or config file (proc, sysfs, cgroup), read with one open and
/// plain reads; nil when it cannot be opened or read.
public func readSmallFile(_ path: String, limit: Int = 1 << 20) -> [UInt8]? {
    guard let fd = try? systemCall("open \(path)", { open(path, O_RDONLY | O_CLOEXEC) }) else { return nil }
    defer { close(fd) }
    var out = [UInt8]()
    var chunk = [UInt8](repeating: 0, count: 4096)
    while out.count < limit {
        guard let n = try? systemCall("read \(path)", { chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) } }) else { return nil }
        if n == 0 { break }
        out += chunk[0..<n]
    }
    return out
}

/// `readSmallFile` as UTF-8 text (invalid sequences replaced).
public func readSmallTextFile(_ path: String, limit: Int = 1 << 20) -> String? {
    readSmallFile(path, limit: limit).map { String(decoding: $0, as: UTF8.self) }
}

/// Moves the calling thread into the network namespace at `path` (e.g. `/run/netns/NAME`):
/// sockets it (and threads it starts later) opens belong to that namespace.
public func enterNetworkNamespace(_ path: String) throws(SystemError) {
    let fd = try systemCall("open \(path)") { open(path, O_RDONLY | O_CLOEXEC) }
    defer { close(fd) }
    try systemCallNegativeErrno("setns \(path)") { sg_enter_netns(fd) }
}
