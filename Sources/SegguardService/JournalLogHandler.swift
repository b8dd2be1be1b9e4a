// A swift-log backend that writes to the systemd journal with structured fields
// (sd_journal_sendv), so `journalctl -o json` shows DECISION=, REASON=, INTERFACE=, … next to
// MESSAGE=. Used when stderr is connected to the journal (JOURNAL_STREAM matches it);
// otherwise the daemon logs to stderr as before.

import CSystemd
import FoundationEssentials
import Glibc
import Logging

/// Logs to journald with one field per metadata key (upper-cased, `SEGGUARD_` prefixed when
/// not a well-known key).
public struct JournalLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    let label: String
    let identifier: String

    public init(label: String, identifier: String = "segguardd") {
        self.label = label
        self.identifier = identifier
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// True when this process's stderr is the journal stream systemd connected (JOURNAL_STREAM
    /// is "device:inode" of it), i.e. running as a service with StandardError=journal.
    public static var stderrIsJournal: Bool {
        guard let value = ProcessInfo.processInfo.environment["JOURNAL_STREAM"] else { return false }
        let parts = value.split(separator: ":")
        guard parts.count == 2, let dev = UInt64(parts[0]), let ino = UInt64(parts[1]) else { return false }
        var st = stat()
        guard fstat(2, &st) == 0 else { return false }
        return UInt64(st.st_dev) == dev && UInt64(st.st_ino) == ino
    }

    /// syslog priority of a swift-log level.
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    /// Journal field name for a metadata key: `decision` → `DECISION`; anything not A-Z0-9_
    /// becomes `_`; a leading digit or underscore gets a `SEGGUARD_` prefix (journald rejects
    /// field names starting with `_` from clients).
    static func fieldName(_ key: String) -> String {
        var name = String(key.uppercased().map { ($0.isASCII && ($0.isLetter || $0.isNumber)) ? $0 : "_" }.prefix(60))
        if name.isEmpty || name.first == "_" || name.first!.isNumber { name = "SEGGUARD_" + name }
        return name
    }

    /// The fields of one entry, in order: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, LOGGER, then metadata.
    static func fields(level: Logger.Level, message: String, metadata: Logger.Metadata, identifier: String, label: String, source: String) -> [String] {
        var f = ["MESSAGE=\(message)", "PRIORITY=\(priority(level))", "SYSLOG_IDENTIFIER=\(identifier)", "SEGGUARD_LOGGER=\(label)", "SEGGUARD_SOURCE=\(source)"]
        for (k, v) in metadata.sorted(by: { $0.key < $1.key }) {
            f.append("\(fieldName(k))=\(v)")
        }
        return f
    }

    public func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        let fields = JournalLogHandler.fields(
            level: event.level, message: "\(event.message)", metadata: merged, identifier: identifier, label: label, source: event.source)
        var cstrings = fields.map { Array($0.utf8) }
        var iov = [iovec]()
        iov.reserveCapacity(cstrings.count)
        for i in cstrings.indices {
            cstrings[i].withUnsafeMutableBytes { raw in
                iov.append(iovec(iov_base: raw.baseAddress, iov_len: raw.count))
            }
        }
        // The buffers outlive the call: `cstrings` is alive until the end of this function.
        withExtendedLifetime(cstrings) {
            _ = sd_journal_sendv(iov, Int32(iov.count))
        }
    }
}

/// The pure parts of `JournalLogHandler`, for tests.
public enum JournalLogHandlerFieldName {
    public static func of(_ key: String) -> String { JournalLogHandler.fieldName(key) }

    public static func fields(level: Logger.Level, message: String, metadata: Logger.Metadata) -> [String] {
        JournalLogHandler.fields(level: level, message: message, metadata: metadata, identifier: "segguardd", label: "segguardd", source: "test")
    }
}

extension JournalLogHandler {
    /// Bootstraps swift-log once per process: structured journal fields when stderr is the
    /// journal stream (under systemd), plain lines on stderr otherwise.
    public static func bootstrap(level: Logger.Level) {
        let toJournal = stderrIsJournal
        LoggingSystem.bootstrap { label in
            if toJournal {
                var h = JournalLogHandler(label: label)
                h.logLevel = level
                return h
            }
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
    }
}
