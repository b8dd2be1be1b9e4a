// StartupPages.release on this test process itself (no root needed): the read-only pages of its
// executable and libraries are unmapped, and everything goes on working.

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
    @Test("the read-only pages of the executable and its libraries are released: the resident file pages drop by about what release reports; code, constants, relocated data and library calls work afterwards")
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
        // Library code runs again too (libc, libm, the Swift runtime's C++).
        #expect(strlen("abc") == 3 && Int(sqrt(16.0)) == 4 && getpid() > 0)
        // What it advises is read-only file mappings of this executable and its libraries:
        // never a writable one (relocated data, RELRO), never the vDSO or anonymous memory.
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        // (read to the end: /proc files have no size, and the libraries come after the executable)
        let mapsText = String(decoding: FileHandle(forReadingAtPath: "/proc/self/maps")?.readDataToEndOfFile() ?? Data(), as: UTF8.self)
        let maps = mapsText.split(separator: "\n").compactMap { line -> (UInt, UInt, String, String)? in
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 6, let dash = f[0].firstIndex(of: "-"), let a = UInt(f[0][..<dash], radix: 16),
                  let b = UInt(f[0][f[0].index(after: dash)...], radix: 16) else { return nil }
            return (a, b, String(f[1]), f[5...].joined(separator: " "))
        }
        let segments = StartupPages.readOnlySegments()
        var files = Set<String>()
        for r in segments {
            let covering = maps.filter { $0.0 < r.end && r.start < $0.1 }
            #expect(!covering.isEmpty && covering.allSatisfy { $0.3.hasPrefix("/") && !$0.2.contains("w") }, "\(r): \(covering)")
            covering.forEach { files.insert($0.3) }
        }
        #expect(files.contains(exe), "the executable's own segments: \(files)")
        #expect(files.contains { $0.hasSuffix("/libc.so.6") }, "libc's segments: \(files)")
        #expect(!files.contains { $0.contains("vdso") })
        // Without the libraries: the executable's segments only.
        let own = StartupPages.readOnlySegments(libraries: false)
        #expect(!own.isEmpty && own.count < segments.count)
        for r in own {
            #expect(maps.filter { $0.0 < r.end && r.start < $0.1 }.allSatisfy { $0.3 == exe }, "\(r)")
        }
        // A second release finds little: only what ran since.
        #expect(StartupPages.release() < released)
    }
}
