// The launcher side of a profile's config files: rewriting an INI-style client settings file.

import FoundationEssentials
import SegguardEssentials
import Glibc
import SegguardPolicy

/// Keys to set in one INI-style client configuration file: the policy's own type.
public typealias ConfigFileEdit = LaunchProfile.ConfigFile

extension LaunchProfile.ConfigFile {
    /// The text with each key of `set` given its value inside `section` (added if missing).
    public func rewrite(_ text: String) -> String {
        // Any line ending (LF, CRLF — one Character in Swift) splits; the result is written with LF.
        var lines = text.isEmpty ? [] : text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).map(String.init)
        if lines.last == "" { lines.removeLast() }
        var remaining = set
        var current: String? = nil
        var inTarget = section == nil
        var lastTargetLine = section == nil ? -1 : nil as Int?
        var drop: [Int] = []
        for i in lines.indices {
            let t = lines[i].trimmed()
            if t.hasPrefix("[") && t.hasSuffix("]") {
                current = String(t.dropFirst().dropLast())
                inTarget = current == section
                if inTarget { lastTargetLine = i }
                continue
            }
            guard inTarget, let eq = t.firstIndex(of: "=") else { if inTarget { lastTargetLine = i }; continue }
            let key = t[..<eq].trimmed()
            if let v = remaining.removeValue(forKey: key) {
                lines[i] = "\(key)=\(v)"
            } else if set[key] != nil {
                // A later duplicate would win in last-wins parsers: drop it.
                drop.append(i)
            }
            lastTargetLine = i
        }
        for i in drop.reversed() {
            lines.remove(at: i)
            if let l = lastTargetLine, l >= i { lastTargetLine = l - 1 }
        }
        let additions = remaining.keys.sorted().map { "\($0)=\(remaining[$0]!)" }
        if !additions.isEmpty {
            if let at = lastTargetLine {
                lines.insert(contentsOf: additions, at: at + 1)
            } else if let section {
                lines += ["[\(section)]"] + additions
            } else {
                lines = additions + lines
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
