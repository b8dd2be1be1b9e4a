// StartupPages.release on this test process itself (no root needed): its own executable's
// read-only pages are unmapped, and everything goes on working.

import Foundation
import SegguardSystem
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A table of relocated pointers (type metadata) in the executable's data: it must survive.
private let relocated: [any Sendable.Type] = [Int.self, String.self, StartupPagesTests.self]
private let constant = "a constant string from the read-only data of the executable"

/// RssFile of this process, in KB, from /proc/self/status.
private func residentFileKB() -> Int {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    let line = status.split(separator: "\n").first { $0.hasPrefix("RssFile:") } ?? ""
    return Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
}

@Suite("StartupPages")
struct StartupPagesTests {
    @Test("the executable's read-only pages are released: the resident file pages drop by about what release reports; code, constants and relocated data work afterwards")
    func release() {
        _ = constant.count  // make sure something of the executable is resident
        let before = residentFileKB()
        let released = StartupPages.release()
        let after = residentFileKB()
        #expect(released > 1_000_000, "this test executable has megabytes of code resident: \(released)")
        #expect(after < before, "RssFile \(before) KB → \(after) KB")
        #expect(before - after >= released / 1024 / 2, "most of what was released left the resident set: \(before) → \(after) KB, released \(released / 1024) KB")
        // Code runs again (faulted back in from the page cache), constants and relocated data read right.
        #expect(constant.hasPrefix("a constant string"))
        #expect(relocated[0] == Int.self && relocated[1] == String.self && "\(relocated[2])" == "StartupPagesTests")
        #expect([3, 1, 2].sorted() == [1, 2, 3])
        // A second release finds little: only what ran since.
        #expect(StartupPages.release() < released)
    }
}
