// swift-tools-version:6.0
import PackageDescription

let strict: [SwiftSetting] = [.enableUpcomingFeature("ExistentialAny")]

let package = Package(
    name: "segment-guard",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "segguardd", targets: ["segguardd"]),
        .executable(name: "segguardctl", targets: ["segguardctl"]),
        .executable(name: "segguard-bench", targets: ["segguard-bench"]),
        .executable(name: "segguard-launch", targets: ["segguard-launch"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
    ],
    targets: [
        // C libraries, through pkg-config.
        .systemLibrary(name: "CLibNL", pkgConfig: "libnl-genl-3.0", providers: [.apt(["libnl-3-dev", "libnl-genl-3-dev", "libnl-route-3-dev"])]),
        .systemLibrary(name: "CNftables", pkgConfig: "libnftables", providers: [.apt(["libnftables-dev"])]),
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        // Thin C wrappers for what Swift cannot import (macros, variadic, inline helpers).
        .target(name: "CSegguardShims", dependencies: ["CLibNL", "CSystemd"]),

        // Pure Swift: the policy model, its parser/validator and the network snapshot model.
        .target(name: "SegguardPolicy", dependencies: [.product(name: "Yams", package: "Yams")], swiftSettings: strict),
        // Pure Swift: (snapshot, policy) -> decision.
        .target(name: "SegguardDecision", dependencies: ["SegguardPolicy"], swiftSettings: strict),
        // rtnetlink + nl80211 -> NetworkSnapshot.
        .target(
            name: "SegguardNetlink",
            dependencies: ["SegguardPolicy", "SegguardEventLoop", "CLibNL", "CSegguardShims", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict),
        // Binding the decision: nftables table, VDI session tracking and termination.
        .target(
            name: "SegguardEnforce",
            dependencies: ["SegguardPolicy", "SegguardDecision", "SegguardWire", "CNftables", "CSegguardShims", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict),
        // systemd integration: sd_notify (ready, status, reload, watchdog) and a journald log handler.
        .target(name: "SegguardService", dependencies: ["CSystemd", .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        // 802.1X device authentication from wpa_supplicant (control interface; D-Bus next).
        .target(name: "SegguardDeviceAuth", dependencies: ["SegguardPolicy", "SegguardEventLoop", "CSegguardShims", "CSystemd", .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        // The stop flag + eventfd every event-loop thread polls.
        .target(name: "SegguardEventLoop", dependencies: ["CSegguardShims"], swiftSettings: strict),
        // Screen-capture blocking: fanotify exec permission events, blocklist/trusted-only decision.
        .target(
            name: "SegguardCapture",
            dependencies: ["SegguardPolicy", "SegguardEventLoop", "CSegguardShims", .product(name: "Crypto", package: "swift-crypto"), .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict),
        // Versioned Codable types spoken on the control socket.
        .target(name: "SegguardWire", dependencies: ["SegguardPolicy", "SegguardDecision"], swiftSettings: strict),
        // The local control socket: server (daemon side) and client (segguardctl side).
        .target(
            name: "SegguardControl",
            dependencies: ["SegguardWire", "CSegguardShims", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict),
        // Network-namespace helpers shared by privileged tests and the benchmark.
        .target(name: "SegguardTestSupport", dependencies: ["SegguardNetlink", "SegguardPolicy", "CLibNL", "CSegguardShims"], swiftSettings: strict),

        .executableTarget(
            name: "segguardd",
            dependencies: [
                "SegguardPolicy", "SegguardDecision", "SegguardNetlink", "SegguardWire", "SegguardControl", "SegguardEnforce", "SegguardService", "SegguardDeviceAuth", "SegguardCapture", "CSegguardShims",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "segguardctl",
            dependencies: [
                "SegguardPolicy", "SegguardDecision", "SegguardWire", "SegguardControl",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "segguard-launch",
            dependencies: ["SegguardWire", "SegguardControl", "CSegguardShims", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict),
        .executableTarget(
            name: "segguard-bench",
            dependencies: [
                "SegguardPolicy", "SegguardDecision", "SegguardNetlink", "SegguardTestSupport", "SegguardEnforce", "SegguardWire", "SegguardDeviceAuth",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),

        .testTarget(name: "SegguardPolicyTests", dependencies: ["SegguardPolicy"]),
        .testTarget(name: "SegguardDecisionTests", dependencies: ["SegguardDecision", "SegguardPolicy"]),
        .testTarget(name: "SegguardDeviceAuthTests", dependencies: ["SegguardDeviceAuth", "SegguardPolicy", "SegguardDecision", "CSystemd"]),
        .testTarget(name: "SegguardEventLoopTests", dependencies: ["SegguardEventLoop"]),
        .testTarget(name: "SegguardCaptureTests", dependencies: ["SegguardCapture", "SegguardPolicy"]),
        .testTarget(name: "SegguardServiceTests", dependencies: ["SegguardService", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "SegguardEnforceTests", dependencies: ["SegguardEnforce", "SegguardPolicy", "SegguardDecision"]),
        .testTarget(name: "SegguardNetlinkTests", dependencies: ["SegguardNetlink", "CLibNL", "CSegguardShims"]),
        .testTarget(
            name: "SegguardPrivilegedTests",
            dependencies: ["SegguardNetlink", "SegguardDecision", "SegguardPolicy", "SegguardTestSupport", "SegguardControl", "SegguardWire", "SegguardEnforce"]),
    ]
)
