// RFC 3339 dates without a formatter.
//
// Dates are `2026-11-26T05:00:00.123Z` (RFC 3339, UTC, milliseconds). Formatting and parsing
// them by hand is ~20x cheaper than through a FormatStyle, and a heartbeat carries two.

import FoundationEssentials
import Glibc

/// RFC 3339 timestamps as the report API writes them.
public enum RFC3339 {
    /// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM|+HHMM|-HHMM)`; nil for anything else
    /// (out-of-range fields included).
    public static func parse(_ s: String) -> Date? {
        var s = s
        return s.withUTF8 { parse(bytes: $0) }
    }

    static func parse(bytes b: UnsafeBufferPointer<UInt8>) -> Date? {
        var i = 0
        func digits(_ n: Int) -> Int? {
            guard i + n <= b.count else { return nil }
            var v = 0
            for k in 0..<n {
                let c = b[i + k]
                guard c >= 0x30, c <= 0x39 else { return nil }
                v = v * 10 + Int(c - 0x30)
            }
            i += n
            return v
        }
        func expect(_ c: UInt8) -> Bool {
            guard i < b.count, b[i] == c else { return false }
            i += 1
            return true
        }
        guard let year = digits(4), expect(0x2D), let month = digits(2), expect(0x2D), let day = digits(2) else { return nil }
        guard i < b.count, b[i] == 0x54 || b[i] == 0x74 else { return nil }  // T or t
        i += 1
        guard let hour = digits(2), expect(0x3A), let minute = digits(2), expect(0x3A), let second = digits(2) else { return nil }
        guard (1...12).contains(month), day >= 1, day <= daysIn(month: month, year: year), hour < 24, minute < 60, second < 60 else { return nil }
        var fraction = 0, fractionDigits = 0
        if i < b.count, b[i] == 0x2E {
            i += 1
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39, fractionDigits < 10 {
                fraction = fraction * 10 + Int(b[i] - 0x30)
                fractionDigits += 1
                i += 1
            }
            guard fractionDigits >= 1, fractionDigits <= 9 else { return nil }
        }
        guard i < b.count else { return nil }
        var offset = 0
        switch b[i] {
        case 0x5A, 0x7A:  // Z or z
            i += 1
        case 0x2B, 0x2D:  // + or -
            let sign = b[i] == 0x2D ? -1 : 1
            i += 1
            guard let oh = digits(2) else { return nil }
            _ = expect(0x3A)
            guard let om = digits(2), oh < 24, om < 60 else { return nil }
            offset = sign * (oh * 3600 + om * 60)
        default:
            return nil
        }
        guard i == b.count else { return nil }
        let seconds = daysFromCivil(year: year, month: month, day: day) * 86_400 + hour * 3600 + minute * 60 + second - offset
        // Years 0000-9999 in UTC (what `format` can write back).
        guard seconds >= -62_167_219_200, seconds <= 253_402_300_799 else { return nil }
        if fractionDigits <= 3 {
            // Whole milliseconds: exactly the Date that Date(millis:) makes of them.
            var ms = fraction
            for _ in fractionDigits..<3 { ms *= 10 }
            return Date(timeIntervalSince1970: Double(seconds * 1000 + ms) / 1000)
        }
        var scale = 1.0
        for _ in 0..<fractionDigits { scale *= 10 }
        return Date(timeIntervalSince1970: Double(seconds) + Double(fraction) / scale)
    }

    /// `2026-11-26T05:00:00.123Z`: UTC, milliseconds (truncated). The time is first rounded to
    /// the microsecond, so a Date made from whole milliseconds (whose Double is a hair below
    /// them) keeps its last millisecond, where Date.ISO8601FormatStyle would drop it.
    public static func format(_ date: Date) -> String {
        let us = (date.timeIntervalSince1970 * 1_000_000).rounded()
        let ms = Int64((us / 1000).rounded(.down))
        let days = ms >= 0 ? ms / 86_400_000 : (ms - 86_399_999) / 86_400_000
        let inDay = ms - days * 86_400_000
        let (y, m, d) = civilFromDays(Int(days))
        let h = Int(inDay / 3_600_000), mi = Int(inDay / 60_000 % 60), sec = Int(inDay / 1000 % 60), milli = Int(inDay % 1000)
        var out = [UInt8]()
        out.reserveCapacity(24)
        func put(_ v: Int, _ width: Int) {
            var digits = [UInt8](repeating: 0x30, count: width)
            var v = v
            for k in stride(from: width - 1, through: 0, by: -1) {
                digits[k] = UInt8(0x30 + v % 10)
                v /= 10
            }
            out.append(contentsOf: digits)
        }
        put(y, 4); out.append(0x2D); put(m, 2); out.append(0x2D); put(d, 2); out.append(0x54)
        put(h, 2); out.append(0x3A); put(mi, 2); out.append(0x3A); put(sec, 2); out.append(0x2E); put(milli, 3); out.append(0x5A)
        return String(decoding: out, as: UTF8.self)
    }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civilFromDays(_ z: Int) -> (Int, Int, Int) {
        let z = z + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }
}
