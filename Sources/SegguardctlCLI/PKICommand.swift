// `segguardctl pki`: a test or small-site PKI for the collector's mutual TLS. A CA, the collector's server
// certificate and one client certificate per device, as PEM files in one directory:
//
//   DIR/ca.pem, DIR/ca.key                 init-ca
//   DIR/server.pem, DIR/server.key         issue-server
//   DIR/devices/AGENT_ID.pem, .key         issue-device
//
// Keys are written with mode 0600 and never replaced without --force.

import ArgumentParser
import FoundationEssentials
import SegguardEssentials
import Glibc
import SegguardPKI

/// Creates a CA, the collector's server certificate and device certificates.
struct PKICommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pki",
        abstract: "Create a test or small-site PKI for the collector's mutual TLS",
        subcommands: [InitCA.self, IssueServer.self, IssueDevice.self, Revoke.self])
}

extension PKICommand {
    /// A failure printed as one line on stderr, exit status 1.
    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ d: String) { description = d }
    }

    /// Creates `path` (and its parents) if it does not exist; fails if it is not a directory.
    static func makeDirectory(_ path: String) throws {
        do {
            try makeDirectories(path)
        } catch {
            throw Failure("\(path): cannot create the directory: \(error.reason)")
        }
    }

    static func path(_ dir: String, _ name: String) -> String {
        PathName.join(dir, name)
    }

    static func checkDays(_ days: Int) throws {
        guard (1...PKI.maxValidDays).contains(days) else {
            throw ValidationError("--days must be between 1 and \(PKI.maxValidDays) (got \(days))")
        }
    }

    /// Runs a PKI step, turning its error into one line.
    static func attempt<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as PKIError {
            throw Failure(error.message)
        }
    }

    /// Loads DIR/ca.pem and DIR/ca.key, with a hint when they are missing.
    static func loadCA(dir: String) throws -> IssuedCertificate {
        let certificatePath = path(dir, "ca.pem")
        let keyPath = path(dir, "ca.key")
        if !FileManager.default.fileExists(atPath: certificatePath) && !FileManager.default.fileExists(atPath: keyPath) {
            throw Failure("\(dir): no CA there (no ca.pem, no ca.key); create one with 'segguardctl pki init-ca --dir \(dir)'")
        }
        return try attempt { try PKI.load(certificatePath: certificatePath, keyPath: keyPath) }
    }

    /// Writes the pair and prints the two paths.
    static func write(_ issued: IssuedCertificate, certificatePath: String, keyPath: String, force: Bool) throws {
        try attempt { try PKI.write(issued, certificatePath: certificatePath, keyPath: keyPath, overwrite: force) }
        print("wrote \(certificatePath)")
        print("wrote \(keyPath) (mode 0600)")
    }

    struct InitCA: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "init-ca",
            abstract: "Create a self-signed CA (P-256): DIR/ca.pem and DIR/ca.key.")

        @Option(name: .long, help: ArgumentHelp("Directory for the PKI files; created if missing.", valueName: "dir"))
        var dir: String

        @Option(name: .long, help: "Common name (CN) of the CA.")
        var name: String = "segment-guard test CA"

        @Option(name: .long, help: "Organization (O) of the CA; device certificates copy it.")
        var organization: String?

        @Option(name: .long, help: "Validity in days.")
        var days: Int = 3650

        @Flag(name: .long, help: "Replace an existing CA key. Certificates issued by the old CA stop validating.")
        var force = false

        func validate() throws {
            try PKICommand.checkDays(days)
        }

        func run() throws {
            try PKICommand.makeDirectory(dir)
            let ca = try PKICommand.attempt { try PKI.makeCA(commonName: name, organization: organization, validDays: days) }
            try PKICommand.write(ca, certificatePath: PKICommand.path(dir, "ca.pem"), keyPath: PKICommand.path(dir, "ca.key"), force: force)
        }
    }

    struct IssueServer: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "issue-server",
            abstract: "Issue the collector's TLS server certificate: DIR/server.pem and DIR/server.key.",
            discussion: "Needs DIR/ca.pem and DIR/ca.key. Give every name and address agents connect to with --dns and --ip.")

        @Option(name: .long, help: ArgumentHelp("Directory holding ca.pem and ca.key.", valueName: "dir"))
        var dir: String

        @Option(name: .long, help: "Common name (CN) of the server certificate.")
        var name: String

        @Option(name: .customLong("dns"), help: ArgumentHelp("A DNS name for the subjectAltName (repeatable).", valueName: "name"))
        var dnsNames: [String] = []

        @Option(name: .customLong("ip"), help: ArgumentHelp("An IPv4 or IPv6 address for the subjectAltName (repeatable).", valueName: "addr"))
        var ipAddresses: [String] = []

        @Option(name: .long, help: "Validity in days (at most the CA's).")
        var days: Int = 825

        @Flag(name: .long, help: "Replace an existing server key.")
        var force = false

        func validate() throws {
            try PKICommand.checkDays(days)
            guard !dnsNames.isEmpty || !ipAddresses.isEmpty else {
                throw ValidationError("give at least one --dns NAME or --ip ADDR for the certificate's subjectAltName")
            }
            for address in ipAddresses {
                do { _ = try PKI.ipAddressBytes(address) } catch let error as PKIError { throw ValidationError("--ip: \(error.message)") }
            }
        }

        func run() throws {
            let ca = try PKICommand.loadCA(dir: dir)
            let server = try PKICommand.attempt {
                try PKI.issueServer(ca: ca, commonName: name, dnsNames: dnsNames, ipAddresses: ipAddresses, validDays: days)
            }
            try PKICommand.write(
                server, certificatePath: PKICommand.path(dir, "server.pem"), keyPath: PKICommand.path(dir, "server.key"), force: force)
        }
    }

    struct IssueDevice: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "issue-device",
            abstract: "Issue a device client certificate: DIR/devices/AGENT_ID.pem and .key.",
            discussion: "Needs DIR/ca.pem and DIR/ca.key. The subject is CN=AGENT_ID, OU=GROUP (and O of the CA, if any).")

        @Option(name: .long, help: ArgumentHelp("Directory holding ca.pem and ca.key.", valueName: "dir"))
        var dir: String

        @Option(name: .customLong("id"), help: ArgumentHelp("Agent id: 1-64 of A-Z a-z 0-9 . _ -, not starting with '.' or '-'.", valueName: "agent-id"))
        var agentID: String

        @Option(name: .long, help: ArgumentHelp("Group: same rules as the agent id.", valueName: "group"))
        var group: String

        @Option(name: .long, help: "Validity in days (at most the CA's).")
        var days: Int = 825

        @Flag(name: .long, help: "Replace an existing key for this device.")
        var force = false

        func validate() throws {
            try PKICommand.checkDays(days)
            do {
                try PKI.validateName(agentID, what: "--id: agent id")
                try PKI.validateName(group, what: "--group: group")
            } catch let error as PKIError {
                throw ValidationError(error.message)
            }
        }

        func run() throws {
            let ca = try PKICommand.loadCA(dir: dir)
            let device = try PKICommand.attempt { try PKI.issueDevice(ca: ca, agentID: agentID, group: group, validDays: days) }
            let devices = PKICommand.path(dir, "devices")
            try PKICommand.makeDirectory(devices)
            try PKICommand.write(
                device, certificatePath: PKICommand.path(devices, "\(agentID).pem"), keyPath: PKICommand.path(devices, "\(agentID).key"),
                force: force)
        }
    }
}
