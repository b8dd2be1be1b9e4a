// The admin's tools that work on the collector's store directly (on the collector host or
// anywhere the store is reachable): enrollment tokens, device groups, revocation, the CRL.
// Running replicas see the change within one stale sweep (a few seconds).

import ArgumentParser
import Foundation
import SegguardCollector
import SegguardPKI
import SegguardReport

/// Opens and migrates a store named as `--store` names it; exit 1 with the reason otherwise.
func openStore(_ store: String) async throws -> any CollectorStore {
    do {
        let backend: any CollectorStore
        if store.hasPrefix("sqlite:") {
            let path = String(store.dropFirst("sqlite:".count))
            try? FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            backend = try await SQLiteStore(path: path)
        } else if store.hasPrefix("postgres://") || store.hasPrefix("postgresql://") {
            backend = PostgresStore(configuration: try PostgresStore.configuration(url: store))
        } else {
            throw CollectorError("expected sqlite:PATH or postgres://USER@HOST:PORT/DATABASE")
        }
        try await backend.migrate()
        return backend
    } catch {
        FileHandle.standardError.write(Data("segguard-collector: store \(store): \(error)\n".utf8))
        throw ExitCode(1)
    }
}

/// Runs `body` on the opened store and closes it, also when `body` throws.
func withStore<T>(_ url: String, _ body: (any CollectorStore) async throws -> T) async throws -> T {
    let backend = try await openStore(url)
    do {
        let result = try await body(backend)
        try? await backend.close()
        return result
    } catch {
        try? await backend.close()
        throw error
    }
}

/// Who runs a tool, for the operator-actions record: `--by`, else the login name.
func actor(_ by: String?) -> String {
    if let by, !by.isEmpty { return by }
    return "cli:" + (ProcessInfo.processInfo.environment["SUDO_USER"] ?? ProcessInfo.processInfo.environment["USER"] ?? "root")
}

struct StoreOption: ParsableArguments {
    @Option(name: .long, help: "The collector's store: sqlite:PATH or postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE.")
    var store: String = "sqlite:/var/lib/segguard-collector/collector.sqlite"
    @Option(name: .long, help: "Who does this, for the operator-actions record (default: cli:$SUDO_USER or $USER).")
    var by: String?
}

func fail(_ message: String, code: Int32 = 1) -> ExitCode {
    FileHandle.standardError.write(Data("segguard-collector: \(message)\n".utf8))
    return ExitCode(code)
}

struct TokensCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tokens", abstract: "Enrollment tokens for the imaging tool.",
                                                    subcommands: [Create.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make enrollment tokens of a group; prints CSV (token,group,expires_at,uses) once: only their hashes are kept.")
        @OptionGroup var store: StoreOption
        @Option(name: .long, help: "How many tokens.") var count: Int = 1
        @Option(name: .long, help: "The group devices enrolled with these tokens join.") var group: String
        @Option(name: .long, help: "How long the tokens are good: 7d, 12h, 30m.") var expires: String = "7d"
        @Option(name: .long, help: "Enrollments each token allows (1: one-time).") var uses: Int = 1
        @Option(name: [.short, .customLong("output")], help: "Write the CSV to this file (mode 0600) instead of standard output.") var output: String?

        func run() async throws {
            let hours: Double
            let texts: [String], rows: [EnrollmentToken]
            do {
                hours = try EnrollmentTokens.hours(expires)
                (texts, rows) = try EnrollmentTokens.create(count: count, group: group, hours: hours, uses: uses, by: actor(store.by))
            } catch {
                throw fail("\(error)", code: 2)
            }
            var csv = "token,group,expires_at,uses\n"
            for t in texts { csv += "\(t),\(group),\(RFC3339.format(rows[0].expiresAt)),\(uses)\n" }
            if let output {
                // Written before the tokens are stored: a token never exists without its copy.
                let fd = open(output, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
                guard fd >= 0 else { throw fail("--output \(output): cannot create it: \(String(cString: strerror(errno))) (it must not exist)") }
                let ok = csv.utf8CString.withUnsafeBufferPointer { b in write(fd, b.baseAddress, b.count - 1) == b.count - 1 } && fsync(fd) == 0
                close(fd)
                guard ok else {
                    unlink(output)
                    throw fail("--output \(output): cannot write it")
                }
            }
            do {
                try await withStore(store.store) { backend in try await backend.createTokens(rows, recording: AdminAction(
                    time: rows[0].createdAt, by: actor(store.by), action: "enrollment-tokens", target: "group \(group)",
                    detail: "\(rows.count) token(s), \(uses) use(s) each, valid until \(RFC3339.format(rows[0].expiresAt))")) }
            } catch {
                if let output { unlink(output) }
                throw fail("tokens not stored: \(error)")
            }
            if output == nil { print(csv, terminator: "") }
            FileHandle.standardError.write(Data("\(count) token(s) for group \(group), valid until \(RFC3339.format(rows[0].expiresAt))\n".utf8))
        }
    }
}

struct DevicesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "devices", abstract: "Enrolled devices and their groups.",
                                                    subcommands: [List.self, SetGroup.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List enrolled devices: id, group, certificate serial and end, how enrolled.")
        @OptionGroup var store: StoreOption
        func run() async throws {
            let (revoked, devices) = try await withStore(store.store) { backend in
                (Set(try await backend.revocations().map(\.serial)), try await backend.devices())
            }
            print("agent_id\tgroup\tserial\tnot_after\tenrolled_by\tstate")
            for d in devices {
                let state = revoked.contains(d.serial) ? "revoked" : d.notAfter <= Date() ? "expired" : "valid"
                print("\(d.agentID)\t\(d.group)\t\(d.serial)\t\(RFC3339.format(d.notAfter))\t\(d.enrolledBy)\t\(state)")
            }
        }
    }

    struct SetGroup: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-group", abstract: "Move a device to another group: its next policy fetch gets that group's bundle (no new certificate).")
        @OptionGroup var store: StoreOption
        @Argument(help: "The device's agent id.") var device: String
        @Argument(help: "The new group.") var group: String
        func run() async throws {
            do {
                try PKI.validateName(device, what: "agent id")
                try PKI.validateName(group, what: "group")
            } catch {
                throw fail("\(error)", code: 2)
            }
            let (previous, moved) = try await withStore(store.store) { backend -> (String?, Bool) in
                let previous = try await backend.device(id: device)?.group
                let action = AdminAction(time: Date(), by: actor(store.by), action: "set-group", target: "agent \(device)",
                                         detail: "\(previous ?? "(certificate OU)") -> \(group)")
                return (previous, try await backend.setGroup(agentID: device, group: group, now: action.time, recording: action))
            }
            guard moved else { throw fail("no device \"\(device)\" has enrolled or reported") }
            print("\(device): group \(previous ?? "(certificate OU)") -> \(group)")
        }
    }
}

struct RevokeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke", abstract: "Revoke a device's certificate: refused by every replica within one sweep, listed in the CRL.")
    @OptionGroup var store: StoreOption
    @Argument(help: "The device's agent id.") var device: String
    @Option(name: .long, help: "Why (stolen, lost, retired).") var reason: String
    @Option(name: .long, help: "The certificate serial (hex); default: the device's current certificate.") var serial: String?
    func run() async throws {
        guard !reason.trimmingCharacters(in: .whitespaces).isEmpty else { throw fail("--reason: say why (stolen, lost, retired)", code: 2) }
        let (targets, new) = try await withStore(store.store) { backend -> ([String], Bool) in
            // Without --serial: every certificate the store knows the device by (its device
            // row's current and previous, the one its latest heartbeat came with).
            var targets: [String] = []
            if let serial {
                guard let n = PKI.normalizedSerial(serial) else { throw fail("--serial \"\(serial)\": not a certificate serial in hex", code: 2) }
                targets = [n]
            } else {
                let row = try await backend.device(id: device)
                let agent = try await backend.agent(id: device)
                for s in [row?.serial, row?.previousSerial, agent?.certificateSerial] {
                    if let s, let n = PKI.normalizedSerial(s), !targets.contains(n) { targets.append(n) }
                }
            }
            guard !targets.isEmpty else { throw fail("no certificate known for \"\(device)\"; give --serial") }
            var new = false
            for target in targets {
                let r = Revocation(serial: target, agentID: device, reason: reason, time: Date(), by: actor(store.by))
                if try await backend.revoke(r, recording: AdminAction(time: r.time, by: r.by, action: "revoke", target: "agent \(device)",
                                                                     detail: "serial \(target): \(r.reason)")) { new = true }
            }
            return (targets, new)
        }
        let named = targets.count == 1 ? "certificate \(targets[0])" : "certificates \(targets.joined(separator: ", "))"
        print(new ? "\(device): \(named) revoked" : "\(device): \(named) revoked already")
    }
}

struct CRLCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crl", abstract: "Write the CRL of revoked device certificates, signed with the device CA (for the RADIUS server).")
    @OptionGroup var store: StoreOption
    @Option(name: .long, help: "The device CA certificate (PEM).") var caCert: String
    @Option(name: .long, help: "The device CA key (PEM).") var caKey: String
    @Option(name: .long, help: "Hours until the CRL's next update (renew it before).") var validHours: Int = 24
    @Flag(name: .long, help: "Write PEM (X509 CRL) instead of DER.") var pem = false
    @Option(name: [.short, .customLong("output")], help: "Write the CRL to this file (replaced atomically).") var output: String
    func run() async throws {
        guard (1...24 * 365).contains(validHours) else { throw fail("--valid-hours: \(validHours) is not between 1 and 8760", code: 2) }
        let ca: IssuedCertificate
        do { ca = try PKI.load(certificatePath: caCert, keyPath: caKey) } catch { throw fail("\(error)", code: 2) }
        let entries = try await withStore(store.store) { try await $0.revocations() }.map { RevokedEntry(serialHex: $0.serial, time: $0.time) }
        let now = Date()
        let der = try RevocationList.make(ca: ca, entries: entries, number: Int(now.timeIntervalSince1970 * 1000), thisUpdate: now,
                                          nextUpdate: now.addingTimeInterval(Double(validHours) * 3600))
        let bytes = pem ? Data(RevocationList.pem(der).utf8) : Data(der)
        let temp = output + ".tmp"
        guard FileManager.default.createFile(atPath: temp, contents: bytes, attributes: [.posixPermissions: 0o644]), rename(temp, output) == 0 else {
            throw fail("--output \(output): cannot write it")
        }
        print("\(output): \(entries.count) revoked certificate(s), next update \(RFC3339.format(now.addingTimeInterval(Double(validHours) * 3600)))")
    }
}
