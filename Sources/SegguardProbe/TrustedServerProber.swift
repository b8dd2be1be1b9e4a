// The trusted-server probe: a TCP connection bound to one interface (SO_BINDTOIFINDEX, so the
// routing table cannot send it out another way), a TLS handshake whose only check is the pin of
// the server's key (a custom verification callback: an unpinned key fails the handshake
// itself), no application data, closed right after the handshake. Everything runs on one
// SwiftNIO event loop; callers never block on it.

import FoundationEssentials
import SegguardEssentials
import Dispatch
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SegguardSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Runs trusted-server probes on a SwiftNIO event loop.
///
/// Sockets belong to the network namespace of the thread that creates them, and the prober
/// creates each socket on its event loop's thread. With `networkNamespace`, the prober starts an
/// event loop thread of its own and moves that thread into the namespace (setns), so every probe
/// goes out of that namespace whatever thread calls ``probe(_:interfaceIndex:interfaceName:timeout:completion:)``.
/// With a caller's `EventLoopGroup`, probes go out of the namespace its threads are in.
///
/// Each probe is a full handshake (no session resumption, so the pin is checked every time).
/// The result says why a probe failed; no call throws. Thread-safe; the agent calls it from its
/// poll-loop thread with the completion variant and is called back on the event loop thread.
public final class TrustedServerProber: Sendable {
    private let group: any EventLoopGroup
    private let ownsGroup: Bool
    private let sslContext: NIOSSLContext
    private let logger: Logger
    /// Set (under the lock) before the own group shuts down; no probe is submitted after it.
    private let isShutDown = Mutex(false)
    /// The namespace the prober's own event loop thread entered, if any.
    public let networkNamespace: String?

    /// A prober with an event loop thread of its own, inside the network namespace at
    /// `networkNamespace` (e.g. `/run/netns/NAME` or `/proc/PID/ns/net`) if given.
    /// Call ``shutdown()`` when done. Needs CAP_SYS_ADMIN for the namespace.
    /// - Throws: ``TrustedServerError`` when the namespace cannot be entered or TLS cannot be set up.
    public convenience init(networkNamespace: String? = nil, logger: Logger = Logger(label: "segguard.probe")) throws(TrustedServerError) {
        let context = try Self.makeContext()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        if let path = networkNamespace {
            do {
                try group.next().submit { () throws -> Void in
                    do { try enterNetworkNamespace(path) } catch { throw TrustedServerError("cannot enter the network namespace \(path): \(error)") }
                }.wait()
            } catch {
                try? group.syncShutdownGracefully()
                throw (error as? TrustedServerError) ?? TrustedServerError("cannot enter the network namespace \(path): \(error)")
            }
        }
        self.init(group: group, ownsGroup: true, context: context, networkNamespace: networkNamespace, logger: logger)
    }

    /// A prober on the caller's event loops (the caller shuts them down; ``shutdown()`` then
    /// only stops accepting probes). Probes go out of the namespace those threads are in.
    /// - Throws: ``TrustedServerError`` when TLS cannot be set up.
    public convenience init(eventLoopGroup: any EventLoopGroup, logger: Logger = Logger(label: "segguard.probe")) throws(TrustedServerError) {
        self.init(group: eventLoopGroup, ownsGroup: false, context: try Self.makeContext(), networkNamespace: nil, logger: logger)
    }

    private init(group: any EventLoopGroup, ownsGroup: Bool, context: NIOSSLContext, networkNamespace: String?, logger: Logger) {
        self.group = group
        self.ownsGroup = ownsGroup
        self.sslContext = context
        self.networkNamespace = networkNamespace
        self.logger = logger
    }

    /// The client TLS context every probe uses.
    private static func makeContext() throws(TrustedServerError) -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        // Not `.none`: that would switch the custom callback off. The callback replaces chain
        // and name verification entirely; the pin is the only check.
        configuration.certificateVerification = .noHostnameVerification
        configuration.minimumTLSVersion = .tlsv12
        configuration.trustRoots = .certificates([])
        // The connection is closed right after the handshake; do not wait long for the
        // server's close_notify.
        configuration.shutdownTimeout = .seconds(1)
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw TrustedServerError("cannot set up TLS for the trusted-server probe: \(error)")
        }
    }

    /// Probes `server` through the interface `interfaceIndex` and calls `completion` exactly once
    /// with the outcome, on the prober's event loop thread (never inline, never blocking the caller).
    ///
    /// - Parameters:
    ///   - server: The server and its pins (checked here as by ``TrustedServer/validated()``; a bad
    ///     entry is refused with the reason).
    ///   - interfaceIndex: The ifindex the socket is bound to (SO_BINDTOIFINDEX): the connection
    ///     leaves through this interface or not at all, whatever the routing table prefers.
    ///   - interfaceName: The interface's name, for the reason text only.
    ///   - timeout: Seconds for connect and handshake together; after it the probe is refused.
    ///   - completion: Called once with ``ProbeOutcome/proven(spki:millis:)`` or ``ProbeOutcome/refused(reason:)``.
    public func probe(
        _ server: TrustedServer, interfaceIndex: Int32, interfaceName: String, timeout: Double,
        completion: @escaping @Sendable (ProbeOutcome) -> Void
    ) {
        let start = DispatchTime.now().uptimeNanoseconds
        // A bad entry is refused with its reason, still from the loop (never inline).
        let attempt: Attempt?
        let invalid: ProbeOutcome?
        do {
            let checked = try server.validated()
            let address = try SocketAddress(ipAddress: checked.host, port: Int(checked.port))
            attempt = Attempt(
                server: checked, address: address, interfaceIndex: interfaceIndex, interfaceName: interfaceName,
                timeout: timeout.isFinite && timeout > 0 ? timeout : 0.001, start: start, completion: completion, logger: logger)
            invalid = nil
        } catch {
            attempt = nil
            invalid = .refused(reason: "\(error)")
        }
        let context = sslContext
        let submitted = isShutDown.withLock { down -> Bool in
            guard !down else { return false }
            let loop = group.next()
            loop.execute {
                if let attempt { attempt.run(on: loop, context: context) } else if let invalid { completion(invalid) }
            }
            return true
        }
        if !submitted {
            // The loops are shut down (own group) or may be (caller's): answer from a new thread.
            startThread(name: "sg-probe-done") { completion(.refused(reason: "the trusted-server prober was shut down")) }
        }
    }

    /// `probe(_:interfaceIndex:interfaceName:timeout:completion:)` for async callers.
    public func probe(_ server: TrustedServer, interfaceIndex: Int32, interfaceName: String, timeout: Double) async -> ProbeOutcome {
        await withCheckedContinuation { continuation in
            probe(server, interfaceIndex: interfaceIndex, interfaceName: interfaceName, timeout: timeout) { continuation.resume(returning: $0) }
        }
    }

    /// Stops accepting probes; later probes are refused at once. With its own event loop, closes
    /// the connections of probes in flight (they are refused) and ends the thread, waiting for it.
    /// Idempotent. Must not be called from a completion (it runs on the event loop thread).
    public func shutdown() {
        let first = isShutDown.withLock { down -> Bool in
            defer { down = true }
            return !down
        }
        guard first, ownsGroup else { return }
        do { try group.syncShutdownGracefully() } catch { logger.warning("trusted-server prober: event loop shutdown: \(error)") }
    }

    deinit {
        if ownsGroup && !isShutDown.withLock({ $0 }) { group.shutdownGracefully { _ in } }
    }
}

/// SO_BINDTOIFINDEX (Linux 5.7+; not every Glibc module map exports it).
private let soBindToIfindex: Int32 = 62

/// One probe, from submission to its outcome. Used only on its event loop's thread (the
/// channel initializer, handlers, verification callback and deadline all run there).
private final class Attempt: @unchecked Sendable {
    enum Stage { case socket, connecting, handshaking }

    let server: TrustedServer
    let address: SocketAddress
    let interfaceIndex: Int32
    let interfaceName: String
    let timeout: Double
    let start: UInt64
    let completion: @Sendable (ProbeOutcome) -> Void
    let logger: Logger

    var stage = Stage.socket
    var finished = false
    var channel: (any Channel)?
    var deadline: Scheduled<Void>?
    /// The server's key hash when the verification callback saw an unpinned key.
    var unpinned: String?
    /// The leaf's key hash when it was pinned.
    var pinned: String?

    init(server: TrustedServer, address: SocketAddress, interfaceIndex: Int32, interfaceName: String, timeout: Double, start: UInt64,
         completion: @escaping @Sendable (ProbeOutcome) -> Void, logger: Logger) {
        self.server = server
        self.address = address
        self.interfaceIndex = interfaceIndex
        self.interfaceName = interfaceName
        self.timeout = timeout
        self.start = start
        self.completion = completion
        self.logger = logger
    }

    var via: String { "\(server.endpoint) via \(interfaceName)" }
    var seconds: String {
        let t = timeout
        return t == t.rounded() ? "\(Int(t)) s" : format("%.3g s", t)
    }

    func run(on loop: any EventLoop, context: NIOSSLContext) {
        deadline = loop.scheduleTask(in: .nanoseconds(Int64(timeout * 1e9))) { [self] in
            switch stage {
            case .socket, .connecting: finish(.refused(reason: "connect to \(via) timed out after \(seconds)"))
            case .handshaking: finish(.refused(reason: "TLS handshake with \(via) did not finish within \(seconds) (TCP connected; no TLS answer)"))
            }
        }
        let option = ChannelOptions.Types.SocketOption(level: .socket, name: NIOBSDSocket.Option(rawValue: soBindToIfindex))
        // Created here, on the loop thread: the socket is in this thread's network namespace.
        let bootstrap = ClientBootstrap(group: loop)
            .channelOption(option, value: SocketOptionValue(interfaceIndex))
            // The probe's own deadline above speaks first.
            .connectTimeout(.nanoseconds(Int64(timeout * 1e9) + 1_000_000_000))
            .channelInitializer { [self] channel in
                // Options are applied by now (SO_BINDTOIFINDEX failed otherwise).
                stage = .connecting
                self.channel = channel
                if finished { return channel.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel) }
                do {
                    let tls = try NIOSSLClientHandler(context: context, serverHostname: server.serverName) { [self] certificates, promise in
                        promise.succeed(verify(certificates))
                    }
                    try channel.pipeline.syncOperations.addHandlers(tls, HandshakeWatcher(attempt: self))
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
        bootstrap.connect(to: address).whenComplete { [self] result in
            switch result {
            case .success:
                if stage == .connecting { stage = .handshaking }
            case .failure(let error):
                failed(error)
            }
        }
    }

    /// The pin check: the leaf (first certificate) key's SHA-256 must be pinned.
    func verify(_ certificates: [NIOSSLCertificate]) -> NIOSSLVerificationResult {
        guard let leaf = certificates.first, let hash = try? TrustedServer.spkiSHA256(of: leaf) else {
            unpinned = "(no usable server certificate)"
            return .failed
        }
        if server.spkiSHA256.contains(hash) {
            pinned = hash
            return .certificateVerified
        }
        unpinned = hash
        return .failed
    }

    func handshakeCompleted() {
        guard let hash = pinned else {
            // Cannot happen: the handshake does not complete unless verify() accepted the key.
            finish(.refused(reason: "TLS handshake with \(via) completed without the key check"))
            return
        }
        let millis = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
        finish(.proven(spki: hash, millis: millis))
    }

    func failed(_ error: any Error) {
        guard !finished else { return }
        if let hash = unpinned {
            let pins = server.spkiSHA256.joined(separator: ", ")
            finish(.refused(reason: "the server's key SHA-256 \(hash) at \(via) is not pinned (pinned: \(pins))"))
            return
        }
        let io = error as? IOError
        // ENODEV from SO_BINDTOIFINDEX (NIO may apply it as late as the connect).
        if io?.errnoCode == ENODEV && stage != .handshaking {
            finish(.refused(reason: "cannot probe \(server.endpoint): interface \(interfaceName) (index \(interfaceIndex)) does not exist"))
            return
        }
        switch stage {
        case .socket:
            finish(.refused(reason: "cannot open a socket bound to \(interfaceName) (index \(interfaceIndex)) for \(server.endpoint): \(describe(error))"))
        case .connecting:
            if let channelError = error as? ChannelError, case .connectTimeout = channelError {
                finish(.refused(reason: "connect to \(via) timed out after \(seconds)"))
            } else if io?.errnoCode == ECONNREFUSED {
                finish(.refused(reason: "connect to \(via) was refused (nothing listens on port \(server.port) there)"))
            } else {
                finish(.refused(reason: "connect to \(via) failed: \(describe(error))"))
            }
        case .handshaking:
            finish(.refused(reason: "TLS handshake with \(via) failed: \(describe(error))"))
        }
    }

    func closedDuringHandshake() {
        finish(.refused(reason: "TLS handshake with \(via) failed: the server closed the connection"))
    }

    func describe(_ error: any Error) -> String {
        if let io = error as? IOError { return String(cString: strerror(io.errnoCode)) }
        return "\(error)"
    }

    func finish(_ outcome: ProbeOutcome) {
        guard !finished else { return }
        finished = true
        deadline?.cancel()
        deadline = nil
        // No application data: close right after the handshake (or whatever ended the probe).
        channel?.close(promise: nil)
        channel = nil
        switch outcome {
        case .proven(let spki, let millis): logger.debug("trusted server \(via): proven, key \(spki), \(millis) ms")
        case .refused(let reason): logger.debug("trusted server: refused: \(reason)")
        }
        completion(outcome)
    }
}

/// Reports the end of the TLS handshake (or of the connection before it) to its attempt.
private final class HandshakeWatcher: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    let attempt: Attempt

    init(attempt: Attempt) { self.attempt = attempt }

    func channelActive(context: ChannelHandlerContext) {
        attempt.stage = .handshaking
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tls = event as? TLSUserEvent, case .handshakeCompleted = tls {
            attempt.handshakeCompleted()
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        attempt.failed(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if attempt.stage == .handshaking { attempt.closedDuringHandshake() }
        context.fireChannelInactive()
    }
}
