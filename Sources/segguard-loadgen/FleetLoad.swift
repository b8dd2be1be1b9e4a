// `segguard-loadgen fleet`: a fleet of agents as the collector meets it in production, open
// loop. Each simulated agent has its own device certificate and its own keep-alive TLS
// connection, sends a heartbeat every `interval` seconds ± `jitter` (the first at a random
// point of the first interval, so the fleet connects over one interval as after a rollout),
// waits at most `timeout` seconds for the answer, and reconnects when its connection is lost:
// lazily at its next heartbeat (what segguardd's HTTP client does), or at once with
// `--eager-reconnect` (every agent back within `--reconnect-spread` seconds: the reconnect
// storm after a collector restart). Every request is written to `--out` as CSV
// (`t_ms,latency_us,status,reconnected`; status 0 = timeout or connection lost with the request
// in flight, -1 = connect/TLS failure); progress lines on stdout every 5 s.

import ArgumentParser
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS
import SegguardLoadReport
import SegguardPKI
import SegguardSystem

/// `segguard-loadgen make-pki`: a CA, a server certificate for 127.0.0.1 and one device
/// certificate per agent (group `fleet`), in the layout `fleet` reads; devices already there
/// are kept (a 20,000-agent PKI is made once).
struct MakeFleetPKI: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "make-pki", abstract: "The fleet's CA, server and device certificates.")
    @Option var dir: String
    @Option var agents: Int

    func run() throws {
        try FileManager.default.createDirectory(atPath: dir + "/devices", withIntermediateDirectories: true)
        let t0 = monotonicNanos()
        let ca: IssuedCertificate
        if FileManager.default.fileExists(atPath: dir + "/ca.key") {
            ca = try PKI.load(certificatePath: dir + "/ca.pem", keyPath: dir + "/ca.key")
        } else {
            ca = try PKI.makeCA(commonName: "segguard fleet CA", organization: "Fleet")
            try PKI.write(ca, certificatePath: dir + "/ca.pem", keyPath: dir + "/ca.key")
            try PKI.write(try PKI.issueServer(ca: ca, commonName: "localhost", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"]),
                          certificatePath: dir + "/server.pem", keyPath: dir + "/server.key")
        }
        var made = 0
        for i in 0..<agents {
            let paths = LoadFiles.device(dir, i)
            if FileManager.default.fileExists(atPath: paths.key) { continue }
            try PKI.write(try PKI.issueDevice(ca: ca, agentID: LoadFiles.agentID(i), group: "fleet"), certificatePath: paths.cert, keyPath: paths.key)
            made += 1
        }
        say(String(format: "make-pki: %d device certificates issued (%d kept) in %.1f s", made, agents - made, Double(monotonicNanos() - t0) / 1e9))
    }
}

struct FleetLoad: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet", abstract: "Open-loop fleet: one keep-alive mTLS connection and jittered heartbeats per agent.")

    @Option var host = "127.0.0.1"
    @Option var port: Int
    @Option(help: "Directory with ca.pem and devices/<agent>.pem|.key.") var pki: String
    @Option var agents: Int
    @Option(help: "Index of the first agent's certificate (several generators share one PKI).") var first = 0
    @Option(help: "Heartbeat interval, seconds.") var interval = 30.0
    @Option(help: "Each interval drawn from interval × (1 ± jitter).") var jitter = 0.1
    @Option(help: "How long to run, seconds.") var seconds: Double
    @Option(help: "Seconds an agent waits for an answer.") var timeout = 20.0
    @Option(help: "File with the heartbeat body (JSON).") var body: String
    @Option(help: "CSV of every request.") var out: String
    @Option(help: "Event-loop threads.") var threads = 1
    @Flag(help: "Reconnect as soon as a connection is lost (the storm), not at the next heartbeat.") var eagerReconnect = false
    @Option(help: "With --eager-reconnect: reconnects spread over this many seconds (0: all at once).") var reconnectSpread = 0.0
    @Option(help: "First heartbeats spread over this many seconds (default: one interval), as a rollout connects the fleet.") var ramp: Double?
    @Option(help: "TLS handshakes in flight at most per generator (the simulated agents are separate machines: this one's CPU must not be what limits them).")
    var maxConnecting = 256

    func run() throws {
        unblockTerminationSignals()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let bodyBytes = try Data(contentsOf: URL(fileURLWithPath: body))
        let roots = try NIOSSLCertificate.fromPEMFile(pki + "/ca.pem")
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "\(host):\(port)")
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: "\(bodyBytes.count)")
        let plan = FleetPlan(host: host, port: port, head: HTTPRequestHead(version: .http1_1, method: .POST, uri: "/api/v1/heartbeat", headers: headers),
                             body: ByteBuffer(bytes: bodyBytes), interval: interval, jitter: jitter, timeout: timeout,
                             eagerReconnect: eagerReconnect, reconnectSpread: reconnectSpread, start: monotonicNanos())
        let gates = (0..<threads).map { _ in ConnectGate(limit: max(1, maxConnecting / threads)) }
        var loops: [any EventLoop] = []
        var recorders: [FleetRecorder] = []
        for _ in 0..<threads {
            loops.append(group.next())
            recorders.append(FleetRecorder())
        }
        var fleet: [FleetAgent] = []
        let t0 = monotonicNanos()
        for i in first..<(first + agents) {
            let paths = LoadFiles.device(pki, i)
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .certificates(roots)
            tls.certificateChain = try NIOSSLCertificate.fromPEMFile(paths.cert).map { .certificate($0) }
            tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: paths.key, format: .pem))
            let k = i % threads
            fleet.append(FleetAgent(loop: loops[k], context: try NIOSSLContext(configuration: tls), plan: plan, recorder: recorders[k], gate: gates[k]))
        }
        say(String(format: "fleet: %d agents loaded in %.1f s; heartbeats every %g s ± %g %%; running %g s", agents,
                     Double(monotonicNanos() - t0) / 1e9, interval, jitter * 100, seconds))
        let start = monotonicNanos()
        let spread = ramp ?? interval
        for a in fleet { a.loop.execute { a.begin(firstIn: Double.random(in: 0..<max(0.001, spread))) } }
        let end = start + UInt64(seconds * 1e9)
        while monotonicNanos() < end {
            Thread.sleep(forTimeInterval: min(5, Double(end - monotonicNanos()) / 1e9))
            var s = FleetRecorder.Snapshot()
            for (k, r) in recorders.enumerated() { s.add(try loops[k].submit { r.snapshot() }.wait()) }
            say(String(format: "t=%.0fs connected=%d ok=%d non2xx=%d timeouts=%d connect_failures=%d reconnects=%d",
                         Double(monotonicNanos() - start) / 1e9, s.connected, s.ok, s.non2xx, s.timeouts, s.connectFailures, s.reconnects))
            }
        for a in fleet { a.loop.execute { a.stop() } }
        var lines = ["t_ms,latency_us,status,reconnected"]
        for (k, r) in recorders.enumerated() {
            lines += try loops[k].submit { r.records.map { "\($0.tMs),\($0.latencyUs),\($0.status),\($0.reconnected ? 1 : 0)" } }.wait()
        }
        try (lines.joined(separator: "\n") + "\n").write(toFile: out, atomically: true, encoding: .utf8)
        say("fleet: done, \(lines.count - 1) requests written to \(out)")
        try? group.syncShutdownGracefully()
    }
}

/// A line on stdout, written at once (the parent reads it as it comes).
func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

/// What every agent of the fleet does (shared, immutable).
struct FleetPlan: Sendable {
    let host: String
    let port: Int
    let head: HTTPRequestHead
    let body: ByteBuffer
    let interval: Double
    let jitter: Double
    let timeout: Double
    let eagerReconnect: Bool
    let reconnectSpread: Double
    let start: UInt64
}

/// The requests of one event loop's agents (confined to that loop).
final class FleetRecorder: @unchecked Sendable {
    struct Record {
        var tMs: UInt32
        var latencyUs: UInt32
        var status: Int16
        var reconnected: Bool
    }
    struct Snapshot {
        var connected = 0, ok = 0, non2xx = 0, timeouts = 0, connectFailures = 0, reconnects = 0
        mutating func add(_ o: Snapshot) {
            connected += o.connected; ok += o.ok; non2xx += o.non2xx; timeouts += o.timeouts
            connectFailures += o.connectFailures; reconnects += o.reconnects
        }
    }
    var records: [Record] = []
    var counts = Snapshot()

    func snapshot() -> Snapshot { counts }
}

/// Handshakes in flight on one event loop, and the agents waiting for a turn (confined to
/// that loop).
final class ConnectGate: @unchecked Sendable {
    let limit: Int
    var active = 0
    var waiting: [() -> Void] = []
    init(limit: Int) { self.limit = limit }

    func enter(_ start: @escaping () -> Void) {
        if active < limit {
            active += 1
            start()
        } else {
            waiting.append(start)
        }
    }

    func leave() {
        if waiting.isEmpty {
            active -= 1
        } else {
            waiting.removeFirst()()
        }
    }
}

/// One simulated agent, confined to its event loop.
final class FleetAgent: @unchecked Sendable {
    let loop: any EventLoop
    let context: NIOSSLContext
    let plan: FleetPlan
    let recorder: FleetRecorder
    let gate: ConnectGate
    private var holdsGate = false
    private var channel: (any Channel)?
    private var handler: FleetHandler?
    private var connecting = false
    private var everConnected = false
    private var sentAt: UInt64 = 0
    private var inFlight = false
    private var requestReconnected = false
    private var wantSend = false
    private var stopped = false
    private var failures = 0
    private var timeoutTask: Scheduled<Void>?

    init(loop: any EventLoop, context: NIOSSLContext, plan: FleetPlan, recorder: FleetRecorder, gate: ConnectGate) {
        self.loop = loop
        self.context = context
        self.plan = plan
        self.recorder = recorder
        self.gate = gate
    }

    private func releaseGate() {
        if holdsGate {
            holdsGate = false
            gate.leave()
        }
    }

    func begin(firstIn seconds: Double) { scheduleBeat(in: seconds) }

    func stop() {
        stopped = true
        timeoutTask?.cancel()
        channel?.close(promise: nil)
    }

    private func scheduleBeat(in seconds: Double) {
        loop.scheduleTask(in: .nanoseconds(Int64(seconds * 1e9))) { [self] in
            guard !stopped else { return }
            beat()
            scheduleBeat(in: plan.interval * (1 + Double.random(in: -plan.jitter...plan.jitter)))
        }
    }

    /// A heartbeat is due: sent on the open connection, or after connecting.
    private func beat() {
        guard !inFlight else { return }  // the previous one is still waiting (counted by its timeout)
        sentAt = monotonicNanos()
        inFlight = true
        requestReconnected = channel == nil && everConnected
        timeoutTask = loop.scheduleTask(in: .nanoseconds(Int64(plan.timeout * 1e9))) { [self] in
            guard inFlight else { return }
            finish(status: 0)
            recorder.counts.timeouts += 1
            channel?.close(promise: nil)
        }
        if let handler, channel != nil {
            handler.send(plan.head, plan.body)
        } else {
            wantSend = true
            connect()
        }
    }

    private func connect() {
        guard !connecting, !stopped else { return }
        connecting = true
        gate.enter { [self] in
            holdsGate = true
            guard !stopped else { return releaseGate() }
            dial()
        }
    }

    private func dial() {
        let handler = FleetHandler(agent: self)
        ClientBootstrap(group: loop)
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(5))
            .channelInitializer { [context] channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(try NIOSSLClientHandler(context: context, serverHostname: nil))
                    try sync.addHTTPClientHandlers()
                    try sync.addHandler(handler)
                }
            }
            .connect(host: plan.host, port: plan.port)
            .whenFailure { [self] _ in connectFailed() }
    }

    /// TLS handshake done.
    func connected(_ channel: any Channel, _ handler: FleetHandler) {
        connecting = false
        releaseGate()
        if everConnected { recorder.counts.reconnects += 1 }
        everConnected = true
        failures = 0
        self.channel = channel
        self.handler = handler
        recorder.counts.connected += 1
        if wantSend, inFlight {
            wantSend = false
            handler.send(plan.head, plan.body)
        }
    }

    private func connectFailed() {
        connecting = false
        releaseGate()
        recorder.counts.connectFailures += 1
        recorder.records.append(.init(tMs: elapsedMs(), latencyUs: 0, status: -1, reconnected: everConnected))
        failures += 1
        if inFlight {
            // The heartbeat waiting for this connection fails; the next one tries again.
            finish(status: 0)
        }
        if plan.eagerReconnect && everConnected && !stopped {
            let backoff = min(0.2 * pow(2, Double(min(failures, 5))), 5) * Double.random(in: 0.5...1)
            loop.scheduleTask(in: .nanoseconds(Int64(backoff * 1e9))) { [self] in connect() }
        }
    }

    func answered(status: UInt) {
        guard inFlight else { return }
        finish(status: Int16(clamping: status))
        if (200..<300).contains(status) { recorder.counts.ok += 1 } else { recorder.counts.non2xx += 1 }
    }

    /// The connection closed (idle timeout, collector restart, error).
    func lost(_ handler: FleetHandler) {
        guard self.handler === handler || connecting else { return }
        if self.handler === handler {
            self.handler = nil
            channel = nil
            recorder.counts.connected -= 1
        } else {
            // Closed before the handshake finished.
            connectFailed()
            return
        }
        if inFlight {
            finish(status: 0)
        }
        if plan.eagerReconnect && !stopped {
            let delay = plan.reconnectSpread > 0 ? Double.random(in: 0..<plan.reconnectSpread) : 0
            loop.scheduleTask(in: .nanoseconds(Int64(delay * 1e9))) { [self] in connect() }
        }
    }

    private func finish(status: Int16) {
        inFlight = false
        wantSend = false
        timeoutTask?.cancel()
        timeoutTask = nil
        let latency = UInt32(min((monotonicNanos() - sentAt) / 1000, UInt64(UInt32.max)))
        recorder.records.append(.init(tMs: elapsedMs(), latencyUs: latency, status: status, reconnected: requestReconnected))
    }

    private func elapsedMs() -> UInt32 { UInt32((monotonicNanos() - plan.start) / 1_000_000) }
}

/// The end of one agent connection's pipeline.
final class FleetHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart
    let agent: FleetAgent
    private var context: ChannelHandlerContext?
    private var status: UInt = 0
    private var announced = false

    init(agent: FleetAgent) { self.agent = agent }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? TLSUserEvent, case .handshakeCompleted = e, !announced {
            announced = true
            agent.connected(context.channel, self)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func send(_ head: HTTPRequestHead, _ body: ByteBuffer) {
        guard let context else { return }
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): status = h.status.code
        case .body: break
        case .end: agent.answered(status: status)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }

    func channelInactive(context: ChannelHandlerContext) {
        agent.lost(self)
        self.context = nil
        context.fireChannelInactive()
    }
}
