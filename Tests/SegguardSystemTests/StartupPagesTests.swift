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
        // What it advises is read-only mappings of this executable only: never a writable
        // one (relocated data, RELRO), never another file's.
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        let maps = ((try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8)) ?? "").split(separator: "\n").compactMap { line -> (UInt, UInt, String, String)? in
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 6, let dash = f[0].firstIndex(of: "-"), let a = UInt(f[0][..<dash], radix: 16),
                  let b = UInt(f[0][f[0].index(after: dash)...], radix: 16) else { return nil }
            return (a, b, String(f[1]), f[5...].joined(separator: " "))
        }
        let segments = StartupPages.readOnlySegments()
        #expect(!segments.isEmpty)
        for r in segments {
            let covering = maps.filter { $0.0 < r.end && r.start < $0.1 }
            #expect(!covering.isEmpty && covering.allSatisfy { $0.3 == exe && !$0.2.contains("w") }, "\(r): \(covering)")
        }
        // A second release finds little: only what ran since.
        #expect(StartupPages.release() < released)
    }
}
