// StopSignal: a stop wakes a waiting loop; a readable descriptor wakes it with .readable.

import Foundation
import SegguardSystem
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("StopSignal")
struct StopSignalTests {
    @Test("a readable descriptor wakes the wait; stop() ends it from another thread")
    func wakes() throws {
        let stop = StopSignal()
        stop.arm()
        var p: [Int32] = [0, 0]
        #expect(pipe(&p) == 0)
        defer { close(p[0]); close(p[1]) }
        #expect(write(p[1], "x", 1) == 1)
        #expect(stop.wait(for: p[0]) == .readable)
        var byte: UInt8 = 0
        #expect(read(p[0], &byte, 1) == 1)
        let readEnd = p[0]
        let done = DispatchSemaphore(value: 0)
        let result = Mutex<StopSignal.Wake?>(nil)
        Thread {
            let wake = stop.wait(for: readEnd)  // not under the lock the test thread reads
            result.withLock { $0 = wake }
            done.signal()
        }.start()
        usleep(50_000)
        #expect(result.withLock { $0 } == nil)
        stop.stop()
        #expect(done.wait(timeout: .now() + 5) == .success)
        #expect(result.withLock { $0 } == .stopped)
        #expect(!stop.isRunning)
    }
}
