// The agent's trusted-server probes over SegguardProbe's prober: wiring only.

import FoundationEssentials
import SegguardEssentials
import Glibc
import Logging
import SegguardAgent
import SegguardPolicy
import SegguardProbe

/// `TrustedServerProbing` for the agent: one TLS handshake per probe, on the prober's own
/// event-loop thread (inside the watched network namespace), never on the agent's loop.
final class TrustedServerProbes: TrustedServerProbing {
    let prober: TrustedServerProber
    let timeout: Double

    init(networkNamespace: String?, timeout: Double, logger: Logger) throws {
        prober = try TrustedServerProber(networkNamespace: networkNamespace, logger: logger)
        self.timeout = timeout
    }

    func probe(_ server: TrustedServerRule, interfaceIndex: Int32, interfaceName: String, completion: @escaping @Sendable (TrustedServerResult) -> Void) {
        let target = TrustedServer(host: server.address.description, port: server.port, serverName: server.serverName, spkiSHA256: server.spkiSHA256)
        let endpoint = server.endpoint
        prober.probe(target, interfaceIndex: interfaceIndex, interfaceName: interfaceName, timeout: timeout) { outcome in
            switch outcome {
            case let .proven(spki, millis):
                completion(TrustedServerResult(server: endpoint, proven: true, detail: "key SHA-256 \(spki.prefix(16))… via \(interfaceName) in \(format("%.1f", millis)) ms"))
            case let .refused(reason):
                completion(TrustedServerResult(server: endpoint, proven: false, detail: reason))
            }
        }
    }
}
