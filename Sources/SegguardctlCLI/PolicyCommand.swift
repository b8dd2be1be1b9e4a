// `segguardctl policy`: the admin's side of signed policy bundles. keygen makes the Ed25519
// signing key (keep the private half off the collector); sign validates a policy file and
// signs it for a group with a version; verify checks a bundle as an agent would; push uploads
// it to the collector with the admin token.

import ArgumentParser
import AsyncHTTPClient
import FoundationEssentials
import SegguardEssentials
import Glibc
import NIOCore
import NIOSSL
import SegguardPolicy
import SegguardReport
import SegguardSystem

struct PolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy", abstract: "Sign policy bundles and push them to a group of agents through the collector.",
        subcommands: [Keygen.self, Sign.self, Verify.self, Push.self])

    struct Keygen: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an Ed25519 policy-signing key pair (base64 files).")
        @Option(name: .long, help: "Private key file to create (mode 0600; keep it off the collector and the clients).")
        var privateKey: String
        @Option(name: .long, help: "Public key file to create (pin it on the agents: segguardd --policy-public-key).")
        var publicKey: String

        func run() throws {
            guard !FileManager.default.fileExists(atPath: privateKey) else { throw CLIError("--private-key \(privateKey): exists; refusing to overwrite a signing key") }
            let key = PolicySigning.generateKey()
            try AtomicFile.write(Data((key.rawRepresentation.base64EncodedString() + "\n").utf8), to: privateKey, mode: 0o600)
            try AtomicFile.write(Data((key.publicKey.rawRepresentation.base64EncodedString() + "\n").utf8), to: publicKey, mode: 0o644)
            print("wrote \(privateKey) (private) and \(publicKey) (public, key id \(PolicySigning.keyID(key.publicKey)))")
        }
    }

    struct Sign: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Validate a policy file and sign it as a bundle for a group.")
        @Option(name: .long, help: "The private signing key file.")
        var key: String
        @Option(name: .long, help: "The group of agents (the OU of their device certificates).")
        var group: String
        @Option(name: .long, help: "Bundle version: above every version pushed to this group before (agents refuse a rollback).")
        var version: Int64
        @Option(name: .long, help: "Free text kept with the bundle.")
        var comment: String?
        @Option(name: .long, help: ArgumentHelp("Days the bundle stays valid (1-3650): agents refuse it afterwards and report the bundle in force as expired. Needs agents 0.9 or later.", valueName: "days"))
        var validDays: Int?
        @Option(name: [.short, .long], help: "Bundle file to write.")
        var output: String
        @Argument(help: "The policy file (YAML).")
        var policy: String

        func run() throws {
            guard version >= 1 else { throw CLIError("--version: must be at least 1") }
            if let d = validDays, !(1...3650).contains(d) { throw CLIError("--valid-days: \(d) is not between 1 and 3650") }
            let now = Date()
            let notAfter = validDays.map { now.addingTimeInterval(Double($0) * 86_400) }
            let text: String
            do { text = try readTextFile(policy) } catch { throw CLIError("\(error)") }
            do { _ = try PolicyLoader.load(text: text, file: policy) } catch { throw CLIError("not signed, the policy is invalid:\n\(error)") }
            let keyText: String
            do { keyText = try readTextFile(key) } catch { throw CLIError("--key \(error)") }
            let signingKey = try PolicySigning.privateKey(base64: keyText)
            let bundle = try PolicySigning.sign(PolicyBundlePayload(group: group, version: version, policyYAML: text, createdAt: now, comment: comment,
                                                                    notAfter: notAfter), with: signingKey)
            try AtomicFile.write(try ReportCoding.encoder().encode(bundle), to: output, mode: 0o644)
            print("signed \(policy) for group '\(group)' version \(version) with key \(bundle.keyID)\(notAfter.map { ", valid until \(RFC3339.format($0))" } ?? ""): \(output)")
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check a bundle's signature and policy as an agent would.")
        @Option(name: .long, help: "The public signing key file.")
        var publicKey: String
        @Argument(help: "The bundle file.")
        var bundle: String

        func run() throws {
            let b = try ReportCoding.decodeStrict(SignedPolicyBundle.self, from: Data(try readFile(bundle)))
            let payload = try PolicySigning.verify(b, key: try PolicySigningKey(base64: try readTextFile(publicKey)), now: Date())
            do { _ = try PolicyLoader.load(text: payload.policyYAML, file: bundle) } catch { throw CLIError("signature good, but the policy is invalid:\n\(error)") }
            print("good signature (key \(b.keyID)): group '\(payload.group)' version \(payload.version), policy sha256 \(payload.policySHA256)"
                  + (payload.notAfter.map { ", valid until \(RFC3339.format($0))" } ?? ", no end of validity"))
        }
    }

    struct Push: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Upload a signed bundle to the collector for its group (admin token required).")
        @Option(name: .long, help: "The collector (https://HOST:PORT).")
        var collector: String
        @Option(name: .long, help: "CA certificate that issued the collector's server certificate.")
        var ca: String
        @Option(name: .long, help: "File holding the admin bearer token.")
        var tokenFile: String
        @Argument(help: "The bundle file.")
        var bundle: String

        func run() async throws {
            let data: Data
            do { data = Data(try readFile(bundle)) } catch { throw CLIError("\(error)") }
            let payload = try ReportCoding.decodeStrict(SignedPolicyBundle.self, from: data).unverifiedPayload()
            let token = try readTextFile(tokenFile).trimmed()
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
            let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
            do {
                try await push(client, data: data, payload: payload, token: token)
                try? await client.shutdown()
            } catch {
                try? await client.shutdown()
                throw error
            }
        }

        func push(_ client: HTTPClient, data: Data, payload: PolicyBundlePayload, token: String) async throws {
            var request = HTTPClientRequest(url: "\(collector)/api/v1/admin/policy/\(payload.group)")
            request.method = .PUT
            request.headers.add(name: "Content-Type", value: "application/json")
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            request.body = .bytes(ByteBuffer(bytes: data))
            let response = try await client.execute(request, timeout: .seconds(30))
            let body = String(buffer: try await response.body.collect(upTo: 1 << 20))
            guard response.status == .created else {
                let message = (try? ReportCoding.decoder().decode(ErrorReply.self, from: Data(body.utf8)))?.error ?? body
                throw CLIError("collector refused the bundle (\(response.status.code)): \(message)")
            }
            print("pushed group '\(payload.group)' version \(payload.version) to \(collector)")
        }
    }
}
