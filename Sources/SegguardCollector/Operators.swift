// Named operator accounts for the dashboard, /metrics, the admin API and the export. The
// accounts file (`--operators-file`) holds one account per line, `name:scrypt$N$r$p$SALT$HASH`
// (scrypt from swift-crypto's BoringSSL: memory-hard, N = 2^15, r = 8, p = 1 by default; salt
// and hash base64), made by `segguard-collector hash-password`. Requests authenticate with HTTP
// Basic over the collector's TLS; a verified (name, password) pair is remembered for five
// minutes as a SHA-256, so the dashboard's refresh does not pay scrypt each time. Every
// operator action is logged with the operator's name.

import Crypto
import Foundation
import Synchronization
import _CryptoExtras

/// One operator: a name and a scrypt hash of the password.
public struct OperatorAccount: Sendable, Equatable {
    public let name: String
    let rounds: Int, blockSize: Int, parallelism: Int
    let salt: [UInt8]
    let hash: [UInt8]

    /// `scrypt$N$r$p$SALT$HASH` of `password` with a fresh salt (N = 2^logN).
    public static func hash(password: String, logN: Int = 15) throws -> String {
        var salt = [UInt8](repeating: 0, count: 16)
        var rng = SystemRandomNumberGenerator()
        for i in salt.indices { salt[i] = UInt8.random(in: 0...255, using: &rng) }
        let key = try KDF.Scrypt.deriveKey(from: Array(password.utf8), salt: salt, outputByteCount: 32, rounds: 1 << logN, blockSize: 8, parallelism: 1)
        let hash = key.withUnsafeBytes { Data($0).base64EncodedString() }
        return "scrypt$\(1 << logN)$8$1$\(Data(salt).base64EncodedString())$\(hash)"
    }

    /// Whether `password` is this operator's (every byte compared).
    func verify(_ password: String) -> Bool {
        guard let key = try? KDF.Scrypt.deriveKey(from: Array(password.utf8), salt: salt, outputByteCount: hash.count, rounds: rounds,
                                                 blockSize: blockSize, parallelism: parallelism) else { return false }
        let got = key.withUnsafeBytes { Array($0) }
        return got.count == hash.count && zip(got, hash).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }
}

/// The operators file, read at start.
public final class OperatorAccounts: Sendable {
    public let accounts: [String: OperatorAccount]
    /// SHA-256 of "name:password" verified recently -> when.
    let verified = Mutex<[Data: Date]>([:])
    static let remember: TimeInterval = 300

    public init(accounts: [OperatorAccount]) {
        self.accounts = Dictionary(accounts.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
    }

    /// Reads `path`: `name:scrypt$…` lines, `#` comments and blank lines; each problem names
    /// its line.
    public static func load(path: String) throws -> OperatorAccounts {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch { throw CollectorError("--operators-file \(path): \(error.localizedDescription)") }
        var out: [OperatorAccount] = []
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            func fail(_ why: String) -> CollectorError { CollectorError("--operators-file \(path) line \(n + 1): \(why)") }
            guard let colon = line.firstIndex(of: ":") else { throw fail("expected NAME:scrypt$N$r$p$SALT$HASH") }
            let name = String(line[..<colon])
            guard !name.isEmpty, name.count <= 64, name.allSatisfy({ $0.isLetter || $0.isNumber || "._-@".contains($0) }) else {
                throw fail("operator name \"\(name)\": 1 to 64 letters, digits, . _ - @")
            }
            let parts = line[line.index(after: colon)...].split(separator: "$", omittingEmptySubsequences: false)
            guard parts.count == 6, parts[0] == "scrypt", let rounds = Int(parts[1]), let r = Int(parts[2]), let p = Int(parts[3]),
                  rounds >= 1 << 10, rounds <= 1 << 20, rounds & (rounds - 1) == 0, (1...32).contains(r), (1...16).contains(p),
                  let salt = Data(base64Encoded: String(parts[4])), salt.count >= 8,
                  let hash = Data(base64Encoded: String(parts[5])), hash.count >= 16 else {
                throw fail("the hash is not scrypt$N$r$p$SALT$HASH (make one with `segguard-collector hash-password`)")
            }
            guard !out.contains(where: { $0.name == name }) else { throw fail("operator \"\(name)\" given twice") }
            out.append(OperatorAccount(name: name, rounds: rounds, blockSize: r, parallelism: p, salt: Array(salt), hash: Array(hash)))
        }
        guard !out.isEmpty else { throw CollectorError("--operators-file \(path): no operator account in the file") }
        return OperatorAccounts(accounts: out)
    }

    /// Password checks running now. scrypt costs 32 MiB and tens of milliseconds of a core by
    /// design; anyone who reaches the listener can send wrong passwords, so at most one check
    /// runs at a time (on one thread of the collector's two) and the others are answered
    /// "busy" at once instead of piling up memory and threads.
    let checking = Mutex(0)
    static let maxConcurrentChecks = 1

    enum Outcome: Equatable {
        case signedIn(String)
        case refused
        /// Another password check is running: try again in a moment (429).
        case busy
    }

    /// The operator named in an `Authorization: Basic …` value when the password is right.
    func authenticate(basic header: String) -> String? {
        if case .signedIn(let name) = check(basic: header) { return name }
        return nil
    }

    func check(basic header: String) -> Outcome {
        guard header.hasPrefix("Basic "), let decoded = Data(base64Encoded: String(header.dropFirst(6))),
              let text = String(data: decoded, encoding: .utf8), let colon = text.firstIndex(of: ":") else { return .refused }
        let name = String(text[..<colon]), password = String(text[text.index(after: colon)...])
        guard let account = accounts[name] else { return .refused }
        let key = Data(SHA256.hash(data: Data(text.utf8)))
        let now = Date()
        if let at = verified.withLock({ $0[key] }), now.timeIntervalSince(at) < Self.remember { return .signedIn(name) }
        guard checking.withLock({ n -> Bool in
            guard n < Self.maxConcurrentChecks else { return false }
            n += 1
            return true
        }) else { return .busy }
        defer { checking.withLock { $0 -= 1 } }
        guard account.verify(password) else { return .refused }
        verified.withLock { v in
            if v.count > 1000 { v = v.filter { now.timeIntervalSince($0.value) < Self.remember } }
            v[key] = now
        }
        return .signedIn(name)
    }
}
