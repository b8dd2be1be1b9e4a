// The one way segment-guard starts a thread of its own: with a kernel-visible name, so that
// `ps -L`, `top -H`, /proc/PID/task/*/comm and a debugger show which loop is which.

import CSegguardShims
import FoundationEssentials
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Starts `body` on a new thread named `name` (at most 15 bytes: the kernel's TASK_COMM_LEN),
/// with `stackSize` bytes of stack (nil: the system's default).
public func startThread(name: String, stackSize: Int? = nil, _ body: @escaping @Sendable () -> Void) {
    precondition(!name.isEmpty && name.utf8.count <= 15, "thread name '\(name)' must have 1 to 15 bytes")
    final class Start: @unchecked Sendable {  // handed to the new thread once, never shared
        let name: String
        let body: @Sendable () -> Void
        init(name: String, body: @escaping @Sendable () -> Void) { (self.name, self.body) = (name, body) }
    }
    var attributes = pthread_attr_t()
    pthread_attr_init(&attributes)
    defer { pthread_attr_destroy(&attributes) }
    pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
    if let stackSize { pthread_attr_setstacksize(&attributes, max(stackSize, Int(PTHREAD_STACK_MIN))) }
    let start = Unmanaged.passRetained(Start(name: name, body: body)).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(&thread, &attributes, { raw in
        let start = Unmanaged<Start>.fromOpaque(raw!).takeRetainedValue()
        _ = sg_set_thread_name(start.name)
        start.body()
        return nil
    }, start)
    precondition(rc == 0, "cannot start thread '\(name)': \(String(cString: strerror(rc)))")
}

/// The calling thread's id (what the kernel names as a task's pid in its notifications).
public func currentThreadID() -> Int32 { sg_gettid() }

/// The calling thread's kernel name (tests, logs).
public func currentThreadName() -> String {
    var buf = [CChar](repeating: 0, count: 16)
    guard sg_thread_name(&buf, buf.count) == 0 else { return "" }
    return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Runs `body` on Swift's concurrency pool and blocks the calling thread until it is done: for
/// a synchronous command (one that set up its threads' namespace first) with async work.
public func runBlocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let result = Mutex<Result<T, any Error>?>(nil)
    let done = Gate()
    Task {
        do {
            let value = try await body()
            result.withLock { $0 = .success(value) }
        } catch {
            result.withLock { $0 = .failure(error) }
        }
        done.open()
    }
    done.wait()
    return try result.withLock { $0! }.get()
}

/// gethostname(2) (Foundation's hostName may resolve names, which can block); "unknown" when
/// there is none.
public func hostName() -> String {
    var buf = [CChar](repeating: 0, count: 256)
    guard gethostname(&buf, buf.count - 1) == 0 else { return "unknown" }
    let name = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return name.isEmpty ? "unknown" : name
}
