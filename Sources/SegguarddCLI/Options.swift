// segguardd's command line: every option, its default and its help text. What they set up is
// in main.swift.

import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import Logging
import SegguardControl
import SegguardEnforce
import SegguardEssentials
import SegguardWire

/// The segment-guard daemon.
struct Segguardd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "segguardd",
        abstract: "Decides whether this thin client is on the authorized My Number segment, from netlink events.",
        version: segguardVersion)

    @Option(name: .long, help: "Policy file (YAML).")
    var policy: String = "/etc/segguard/policy.yaml"

    @Option(name: .long, help: "Control socket path.")
    var socket: String = ControlClient.defaultPath

    @Option(name: .long, help: "Group (besides root) allowed to query the control socket.")
    var adminGroup: String = "segguard"

    @Option(name: .long, help: "Run in this network namespace (path such as /run/netns/NAME): watch it, bind its nftables, keep the host's mounts (cgroups).")
    var netns: String?

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Option(name: .long, help: "nftables table (family inet) the network binding owns.")
    var nftTable: String = "segguard"

    @Option(name: .long, help: "The baseline table (nft text): loaded before the policy at start, by the boot unit before the network is up and by the service unit after a stop.")
    var baselineFile: String = "/var/lib/segguard/baseline.nft"

    @Option(name: .long, help: "cgroup v2 directory for VDI sessions (default: the service's delegated cgroup's sessions/, else <cgroup2 mount>/segguard).")
    var sessionCgroup: String?

    @Option(name: .long, help: "The launcher: only a launch request from this executable, run without loader variables and untraced, becomes a My Number session.")
    var launcherPath: String = "/usr/bin/segguard-launch"

    @Option(name: .long, help: "Where 802.1X state for device_auth rules comes from: control (wpa_supplicant's control sockets) or dbus (its D-Bus API, where NetworkManager runs it).")
    var deviceAuthSource: DeviceAuthSourceKind = .control

    @Option(name: .long, help: "wpa_supplicant control interface directory (--device-auth-source control).")
    var wpaControlDir: String = "/run/wpa_supplicant"

    @Option(name: .long, help: "D-Bus address of the bus wpa_supplicant is on (--device-auth-source dbus; default: the system bus).")
    var wpaDbusAddress: String?

    @Option(name: .long, help: "Collector to report to (https://HOST:PORT); without it nothing is reported.")
    var collector: String?

    @Option(name: .long, help: "CA certificate (PEM) that issued the collector's server certificate.")
    var collectorCa: String = "/etc/segguard/collector-ca.pem"

    @Option(name: .customLong("client-cert"), help: "This thin client's device certificate (PEM; its CN is the agent id). Default: /etc/segguard/pki/device.pem (where segguardctl enroll writes it and renewal can replace it) when it exists, else /etc/segguard/device.pem.")
    var clientCertOption: String?

    @Option(name: .customLong("client-key"), help: "The device certificate's key (PEM). Default: beside the default certificate (pki/device.key or device.key).")
    var clientKeyOption: String?

    /// The enrolled device's files when they exist, else the ones `pki issue-device` users put
    /// in /etc/segguard (renewal cannot replace those: the unit lets segguardd write only
    /// /etc/segguard/pki).
    var clientCert: String {
        clientCertOption ?? (Self.exists("/etc/segguard/pki/device.pem") ? "/etc/segguard/pki/device.pem" : "/etc/segguard/device.pem")
    }
    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }
    var clientKey: String {
        clientKeyOption ?? (clientCertOption == nil && Self.exists("/etc/segguard/pki/device.pem") ? "/etc/segguard/pki/device.key" : "/etc/segguard/device.key")
    }

    @Option(name: .long, help: "Renew the device certificate at the collector (EST) this many days before it ends; 0: never. The files are replaced in place (keep them in /etc/segguard/pki, writable by the service).")
    var renewBeforeDays: Int = 30

    @Option(name: .long, help: "Durable event spool (SQLite); events wait here until the collector acknowledged them.")
    var spool: String = "/var/lib/segguard/spool.sqlite"

    @Option(name: .long, help: "Admin policy-signing public key (base64 Ed25519): fetch, verify and apply the group's signed policy bundles.")
    var policyPublicKey: String?

    @Option(name: .long, help: "Where the applied bundle and its policy are kept (bundle.json, bundle-policy.yaml).")
    var bundleDir: String = "/var/lib/segguard"

    @Option(name: .long, help: "Control-socket connections one user (not root, not in the admin group) may hold at once.")
    var maxConnectionsPerUser: Int = 4

    @Option(name: .long, help: "My Number sessions one user (not root) may run at once.")
    var maxSessionsPerUser: Int = 4

    @Option(name: .long, help: ArgumentHelp("Test only: delay every hash of capture blocking by this many ms (proves the fail-mode bound).", visibility: .hidden))
    var captureTestHashDelayMs: Int = 0

    @Option(name: .long, help: ArgumentHelp("Benchmarks: write the pipeline timings of every binding change to this file at stop (JSON lines).", visibility: .hidden))
    var timingsFile: String?

    @Option(name: .long, help: ArgumentHelp("dpkg's info directory, whose *.md5sums define trusted executables (trusted-only capture mode).", visibility: .hidden))
    var dpkgInfoDir: String = "/var/lib/dpkg/info"

    func validate() throws {
        if let collector {
            for url in collector.split(separator: ",").map({ $0.trimmed() }) where !url.lowercased().hasPrefix("https://") {
                throw ValidationError("--collector \(url): must be https:// (mutual TLS with the device certificate)")
            }
        }
        guard (0...3650).contains(renewBeforeDays) else { throw ValidationError("--renew-before-days: \(renewBeforeDays) is not between 0 and 3650") }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level: \"\(logLevel)\" is not one of trace, debug, info, notice, warning, error, critical")
        }
        guard (1...1024).contains(maxConnectionsPerUser) else { throw ValidationError("--max-connections-per-user: \(maxConnectionsPerUser) is out of range 1...1024") }
        guard (1...1024).contains(maxSessionsPerUser) else { throw ValidationError("--max-sessions-per-user: \(maxSessionsPerUser) is out of range 1...1024") }
        guard NftablesRuleset.isValidTableName(nftTable) else {
            throw ValidationError("--nft-table: \"\(nftTable)\" is not a table name segguardd uses: 1 to 64 ASCII letters, digits, '_' or '-', starting with a letter")
        }
    }
}

/// Where segguardd reads 802.1X state from.
enum DeviceAuthSourceKind: String, ExpressibleByArgument, CaseIterable {
    case control, dbus
}
