// The low floor: the poll loop the agent runs on, the atomic file writer, the syscall helper.

import Foundation
import SegguardSystem
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("PollLoop")
struct PollLoopTests {
    @Test("jobs run in the order posted, on the loop's named thread; sync waits for them")
    func order() {
        let loop = PollLoop(name: "sg-test-order")
        loop.start()
        defer { loop.stop() }
        let seen = Mutex<[Int]>([])
        let names = Mutex<Set<String>>([])
        for i in 0..<1000 {
            loop.post {
                seen.withLock { $0.append(i) }
                _ = names.withLock { $0.insert(currentThreadName()) }
            }
        }
        #expect(loop.sync())
        #expect(seen.withLock { $0 } == Array(0..<1000))
        #expect(names.withLock { $0 } == ["sg-test-order"])
    }

    @Test("timers fire by the loop's clock, in deadline order; a cancelled one never fires")
    func timers() {
        let now = Mutex<UInt64>(1_000)
        let loop = PollLoop(name: "sg-test-timer", clock: { now.withLock { $0 } })
        let fired = Mutex<[String]>([])
        loop.start {}
        defer { loop.stop() }
        loop.sync {
            loop.schedule(at: 3_000) { fired.withLock { $0.append("c") } }
            loop.schedule(at: 2_000) { fired.withLock { $0.append("b") } }
            let id = loop.schedule(at: 2_500) { fired.withLock { $0.append("x") } }
            loop.cancel(id)
        }
        loop.sync()
        #expect(fired.withLock { $0 }.isEmpty)
        now.withLock { $0 = 2_000 }
        loop.sync()
        loop.sync()
        #expect(fired.withLock { $0 } == ["b"])
        now.withLock { $0 = 10_000 }
        loop.sync()
        loop.sync()
        #expect(fired.withLock { $0 } == ["b", "c"])
    }

    @Test("a flood of jobs is run in slices: a readable descriptor is served between slices")
    func slices() throws {
        let loop = PollLoop(name: "sg-test-slice")
        var p: [Int32] = [0, 0]
        #expect(pipe(&p) == 0)
        defer { close(p[0]); close(p[1]) }
        let order = Mutex<[String]>([])
        let readEnd = p[0]
        loop.start {
            loop.watch(readEnd) {
                var b: UInt8 = 0
                _ = read(readEnd, &b, 1)
                order.withLock { $0.append("fd") }
            }
        }
        defer { loop.stop() }
        let hold = Gate()
        loop.post { hold.wait() }
        let total = PollLoop.jobsPerPass * 3
        for i in 0..<total { loop.post { order.withLock { $0.append("job\(i)") } } }
        #expect(write(p[1], "x", 1) == 1)
        hold.open()
        loop.sync()
        let seen = order.withLock { $0 }
        let fd = try #require(seen.firstIndex(of: "fd"))
        #expect(fd < total, "the descriptor was served before the whole flood ran (at \(fd))")
        #expect(seen.filter { $0 != "fd" } == (0..<total).map { "job\($0)" })
    }

    @Test("stop runs the jobs already accepted; nothing is accepted after")
    func stop() {
        let loop = PollLoop(name: "sg-test-stop")
        loop.start()
        let ran = Mutex(0)
        let hold = Gate()
        loop.post { hold.wait() }
        for _ in 0..<10 { loop.post { ran.withLock { $0 += 1 } } }
        loop.stop()
        hold.open()
        let deadline = Date().addingTimeInterval(5)
        while loop.post({}) && Date() < deadline { usleep(1000) }
        #expect(!loop.post {})
        // The accepted jobs run on the loop's thread after stop() returns: wait for them (a
        // loaded CI machine ran this check before that thread was scheduled).
        let drained = Date().addingTimeInterval(10)
        while ran.withLock({ $0 }) < 10 && Date() < drained { usleep(1000) }
        #expect(ran.withLock { $0 } == 10)
        #expect(!loop.sync(timeout: 0.1))
    }
}

@Suite("AtomicFile and systemCall")
struct AtomicFileTests {
    @Test("replaces a file with its mode, leaves no temporary file, refuses to write through a planted link")
    func replace() throws {
        let dir = NSTemporaryDirectory() + "sg-atomic-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/key"
        try "old".write(toFile: path, atomically: false, encoding: .utf8)
        try AtomicFile.write(Data("new".utf8), to: path, mode: 0o600)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "new")
        #expect((try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) == 0o600)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["key"])

        let e = try #require(throws: SystemError.self) { try AtomicFile.write(Data("x".utf8), to: dir + "/missing/key") }
        #expect(e.call.hasPrefix("open \(dir)/missing/.key.tmp-\(getpid())-"))
        #expect(e.errno == ENOENT)
        #expect(e.description.hasSuffix(": No such file or directory (errno 2)"))
    }

    @Test("systemCall names the call and errno; negative-errno calls are read the same way")
    func errors() {
        let e = #expect(throws: SystemError.self) { try systemCall("open /nonexistent") { open("/nonexistent", O_RDONLY) } }
        #expect(e?.call == "open /nonexistent" && e?.errno == ENOENT)
        let n = #expect(throws: SystemError.self) { try systemCallNegativeErrno("shim") { Int32(-EACCES) } }
        #expect(n?.errno == EACCES)
        #expect((try? systemCall("getpid") { getpid() }) == getpid())
    }
}
