// swift-tools-version:6.0
import PackageDescription

let strict: [SwiftSetting] = [.enableUpcomingFeature("ExistentialAny")]

let package = Package(
    name: "segment-guard",
    products: [
        .executable(name: "segguardd", targets: ["segguardd"]),
        .executable(name: "segguardctl", targets: ["segguardctl"]),
        .executable(name: "segguard-bench", targets: ["segguard-bench"]),
        .executable(name: "segguard-launch", targets: ["segguard-launch"]),
        .executable(name: "segguard-collector", targets: ["segguard-collector"]),
        .executable(name: "segguard-loadgen", targets: ["segguard-loadgen"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        // Reporting and the collector.
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/vapor/sqlite-nio.git", from: "1.13.2"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.1"),
    ],
    targets: [
        // C libraries, through pkg-config.
        .systemLibrary(name: "CLibNL", pkgConfig: "libnl-genl-3.0", providers: [.apt(["libnl-3-dev", "libnl-genl-3-dev", "libnl-route-3-dev"])]),
        .systemLibrary(name: "CNftables", pkgConfig: "libnftables", providers: [.apt(["libnftables-dev"])]),
        .systemLibrary(name: "CYAML", pkgConfig: "yaml-0.1", providers: [.apt(["libyaml-dev"])]),
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        // Thin C wrappers for what Swift cannot import (macros, variadic, inline helpers).
        .target(name: "CSegguardShims", dependencies: ["CLibNL", "CSystemd"]),

        // The low floor: syscall helper, atomic file, monotonic clock, named threads, the poll
        // loop the agent runs on, the stop signal of the other loops, peer credentials.
        // What the agent would otherwise take from Foundation's ICU-backed half (it imports
        // FoundationEssentials only): trimming, printf numbers, hex, paths, stderr, any JSON value.
        .target(name: "SegguardEssentials", swiftSettings: strict),
        .target(name: "SegguardSystem", dependencies: ["SegguardEssentials", "CSegguardShims"], swiftSettings: strict),
        // Pure Swift: the policy model, its parser/validator and the network snapshot model.
        .target(name: "SegguardPolicy", dependencies: ["SegguardEssentials", "CYAML"], swiftSettings: strict),
        // Pure Swift: (snapshot, policy) -> decision.
        .target(name: "SegguardDecision", dependencies: ["SegguardEssentials", "SegguardPolicy"], swiftSettings: strict),
        // rtnetlink + nl80211 -> NetworkSnapshot, behind the NetworkSource protocol.
        .target(
            name: "SegguardNetlink",
            dependencies: ["SegguardPolicy", "SegguardSystem", "CLibNL", "CSegguardShims", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict),
        // Binding the decision: nftables table, VDI session tracking and termination, the launch
        // gate's rules, the grace period; kernel parts behind NetworkBinding and SessionControl.
        .target(
            name: "SegguardEnforce",
            dependencies: ["SegguardEssentials", "SegguardPolicy", "SegguardDecision", "SegguardSystem", "CNftables", "CLibNL", "CSegguardShims", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict),
        // systemd integration: sd_notify (ready, status, reload, watchdog) and a journald log handler.
        .target(name: "SegguardService", dependencies: ["CSystemd", "SegguardSystem", .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        // 802.1X device authentication from wpa_supplicant (control interface, D-Bus).
        .target(
            name: "SegguardDeviceAuth",
            dependencies: ["SegguardEssentials", "SegguardPolicy", "SegguardSystem", "CSegguardShims", "CSystemd", .product(name: "Crypto", package: "swift-crypto"),
                           .product(name: "X509", package: "swift-certificates"), .product(name: "SwiftASN1", package: "swift-asn1"),
                           .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict),
        // Screen-capture blocking: fanotify exec permission events, blocklist/trusted-only decision.
        .target(
            name: "SegguardCapture",
            dependencies: ["SegguardEssentials", "SegguardPolicy", "SegguardSystem", "CSegguardShims", .product(name: "Crypto", package: "swift-crypto"), .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict),
        // The words a thin-client user reads (Japanese, English), keyed by UserNotice; pure Swift.
        .target(name: "SegguardMessages", dependencies: ["SegguardPolicy"], swiftSettings: strict),
        // Versioned Codable types spoken on the control socket (DTOs, mapped from the agent's records).
        .target(name: "SegguardWire", dependencies: ["SegguardEssentials", "SegguardPolicy", "SegguardDecision"], swiftSettings: strict),
        // The local control socket: server (daemon side) and client (segguardctl side).
        .target(
            name: "SegguardControl",
            dependencies: ["SegguardEssentials", "SegguardWire", "SegguardSystem", "CSegguardShims", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict),
        // Agent <-> collector: heartbeat, event batch and signed policy bundle types (pure).
        .target(name: "SegguardReport", dependencies: ["SegguardEssentials", .product(name: "Crypto", package: "swift-crypto")], swiftSettings: strict),
        // THE agent: one owner of state on one executor; inputs -> decision -> enforcement -> events, status, heartbeats.
        .target(
            name: "SegguardAgent",
            dependencies: [
                "SegguardEssentials",
                "SegguardPolicy", "SegguardDecision", "SegguardNetlink", "SegguardEnforce", "SegguardDeviceAuth", "SegguardCapture",
                "SegguardWire", "SegguardReport", "SegguardSystem", .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        // Test and small-site PKI: a CA, the collector's server certificate, device certificates.
        .target(
            name: "SegguardPKI",
            dependencies: [
                "SegguardEssentials",
                "SegguardSystem",
                .product(name: "X509", package: "swift-certificates"), .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict),
        // The agent side of reporting: durable spool, heartbeats, event delivery, policy bundles.
        .target(
            name: "SegguardReporter",
            dependencies: [
                "SegguardEssentials",
                "SegguardReport", "SegguardPolicy", "SegguardPKI", "SegguardSystem", "SegguardWire",
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        // The collector: HTTP API (mutual TLS), stores (SQLite, PostgreSQL), dashboard, metrics.
        .target(
            name: "SegguardCollector",
            dependencies: [
                "SegguardReport", "SegguardPKI", "SegguardPolicy",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),

        // The trusted-server probe: TLS through one interface, the server's key pinned (SPKI SHA-256).
        .target(
            name: "SegguardProbe",
            dependencies: [
                "SegguardEssentials",
                "SegguardSystem",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),

        // Network-namespace helpers shared by privileged tests and the benchmarks.
        .target(name: "SegguardTestSupport", dependencies: ["SegguardNetlink", "SegguardPolicy", "SegguardSystem", "CLibNL", "CSegguardShims"], swiftSettings: strict),
        // A fake of every kernel source the agent reads or drives (unit tests without root).
        .target(
            name: "SegguardTestFakes",
            dependencies: ["SegguardAgent", "SegguardNetlink", "SegguardEnforce", "SegguardDeviceAuth", "SegguardCapture", "SegguardPolicy", "SegguardDecision", "SegguardSystem", "SegguardWire"],
            swiftSettings: strict),

        .executableTarget(
            name: "segguard-collector",
            dependencies: [
                "SegguardCollector", "SegguardReport", "SegguardService", "SegguardWire", "SegguardPKI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        // The agent's commands as libraries (segguardd's options and wiring, segguardctl,
        // segguard-launch), so that one binary can carry all three.
        .target(
            name: "SegguarddCLI",
            dependencies: [
                "SegguardEssentials",
                "SegguardAgent", "SegguardPolicy", "SegguardNetlink", "SegguardWire", "SegguardControl", "SegguardEnforce", "SegguardService",
                "SegguardDeviceAuth", "SegguardCapture", "SegguardReport", "SegguardReporter", "SegguardPKI", "SegguardSystem", "CSegguardShims",
                "SegguardProbe",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict),
        .target(
            name: "SegguardctlCLI",
            dependencies: [
                "SegguardEssentials",
                "SegguardPolicy", "SegguardDecision", "SegguardWire", "SegguardControl", "SegguardPKI", "SegguardReport", "SegguardSystem",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict),
        .target(
            name: "SegguardLaunchCLI",
            dependencies: ["SegguardEssentials", "SegguardWire", "SegguardControl", "SegguardMessages", "SegguardPolicy", "SegguardSystem", "CSegguardShims",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict),
        // The agent's multi-call binary: segguardd, or segguardctl / segguard-launch by the name it
        // is run as (the .deb links those names to it). The other two are also built on their own.
        .executableTarget(name: "segguardd", dependencies: ["SegguarddCLI", "SegguardctlCLI", "SegguardLaunchCLI"], swiftSettings: strict),
        .executableTarget(name: "segguardctl", dependencies: ["SegguardctlCLI"], swiftSettings: strict),
        .executableTarget(name: "segguard-launch", dependencies: ["SegguardLaunchCLI"], swiftSettings: strict),
        .executableTarget(
            name: "segguard-bench",
            dependencies: [
                "SegguardAgent", "SegguardPolicy", "SegguardDecision", "SegguardNetlink", "SegguardTestSupport", "SegguardEnforce", "SegguardDeviceAuth",
                "SegguardSystem", "SegguardReport", "SegguardPKI", "SegguardCollector", "SegguardLoadReport", "SegguardWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        // The load generator `segguard-bench collector` runs as a child process.
        .target(name: "SegguardLoadReport", dependencies: ["SegguardSystem"], swiftSettings: strict),
        .executableTarget(
            name: "segguard-loadgen",
            dependencies: [
                "SegguardLoadReport", "SegguardSystem", "SegguardPKI",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict),

        .testTarget(name: "SegguardPolicyTests", dependencies: ["SegguardPolicy", "SegguardMessages"]),
        .testTarget(name: "SegguardDecisionTests", dependencies: ["SegguardDecision", "SegguardPolicy"]),
        .testTarget(name: "SegguardDeviceAuthTests", dependencies: ["SegguardDeviceAuth", "SegguardPolicy", "SegguardDecision", "SegguardPKI", "CSystemd",
                                                                   .product(name: "X509", package: "swift-certificates"), .product(name: "SwiftASN1", package: "swift-asn1"),
                                                                   .product(name: "Crypto", package: "swift-crypto")]),
        .testTarget(name: "SegguardSystemTests", dependencies: ["SegguardSystem"]),
        .testTarget(name: "SegguardReportTests", dependencies: ["SegguardReport", "SegguardTestSupport"]),
        .testTarget(
            name: "SegguardPKITests",
            dependencies: ["SegguardPKI", .product(name: "X509", package: "swift-certificates"), .product(name: "SwiftASN1", package: "swift-asn1")]),
        .testTarget(
            name: "SegguardCollectorTests",
            dependencies: [
                "SegguardCollector", "SegguardReport", "SegguardReporter", "SegguardPKI", "SegguardPolicy", "SegguardTestSupport", "SegguardSystem",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]),
        .testTarget(name: "SegguardCaptureTests", dependencies: ["SegguardCapture", "SegguardPolicy"]),
        .testTarget(name: "SegguardServiceTests", dependencies: ["SegguardService", .product(name: "Logging", package: "swift-log")]),
        .testTarget(
            name: "SegguardEnforceTests",
            dependencies: ["SegguardEnforce", "SegguardPolicy", "SegguardDecision", "SegguardSystem", "SegguardWire", "SegguardTestFakes",
                           .product(name: "Logging", package: "swift-log")]),
        .testTarget(
            name: "SegguardAgentTests",
            dependencies: [
                "SegguardAgent", "SegguardTestFakes", "SegguardPolicy", "SegguardDecision", "SegguardEnforce", "SegguardCapture", "SegguardDeviceAuth",
                "SegguardNetlink", "SegguardWire", "SegguardReport", "SegguardSystem", "SegguardPKI", .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(name: "SegguardProbeTests", dependencies: ["SegguardProbe"]),
        .testTarget(name: "SegguardNetlinkTests", dependencies: ["SegguardNetlink", "SegguardPolicy", "CLibNL", "CSegguardShims"]),
        .testTarget(
            name: "SegguardPrivilegedTests",
            dependencies: ["SegguardNetlink", "SegguardDecision", "SegguardPolicy", "SegguardTestSupport", "SegguardControl", "SegguardWire", "SegguardEnforce", "SegguardDeviceAuth",
                           "SegguardReporter", "SegguardReport", "SegguardPKI", "SegguardCollector", "SegguardSystem", "SegguardProbe",
                           .product(name: "Logging", package: "swift-log")]),
    ]
)
