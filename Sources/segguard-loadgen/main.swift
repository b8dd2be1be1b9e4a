// segguard-loadgen: the load generator of `segguard-bench collector`, run by it as a child
// process. Mutual-TLS keep-alive connections written directly on SwiftNIO, closed loop (one
// request in flight per worker), "measure-start"/"measure-end" on stdout around the measured
// window, then one JSON LoadReport. Why a separate, thin process: see CollectorBench.swift.

import ArgumentParser
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS
import SegguardLoadReport
import SegguardSystem

struct CollectorLoad: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "segguard-loadgen", abstract: "The load generator of `segguard-bench collector` (run by it).")

    @Option var host = "127.0.0.1"
    @Option var port: Int
    @Option var path: String
    @Option(help: "Directory with ca.pem and devices/<agent>.pem|.key.") var pki: String
    @Option var agents: Int
    @Option var connections: Int
    @Option var seconds: Double
    @Option var warmup: Double
    @Option(help: "File with the request body (JSON).") var body: String

    func run() throws {
        // The parent blocks SIGINT/SIGTERM (it waits for them) and the mask survives exec.
        unblockTerminationSignals()
        let group = MultiThreadedEventLoopGroup.singleton
        let bodyBytes = try Data(contentsOf: URL(fileURLWithPath: body))
        let roots = try NIOSSLCertificate.fromPEMFile(pki + "/ca.pem")
        var contexts: [NIOSSLContext] = []
        for i in 0..<agents {
            let paths = LoadFiles.device(pki, i)
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .certificates(roots)
            tls.certificateChain = try NIOSSLCertificate.fromPEMFile(paths.cert).map { .certificate($0) }
            tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: paths.key, format: .pem))
            contexts.append(try NIOSSLContext(configuration: tls))
        }
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "\(host):\(port)")
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: "\(bodyBytes.count)")
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: path, headers: headers)
        let buffer = ByteBuffer(bytes: bodyBytes)

        // Connect (TCP + TLS handshake) every connection before the clock starts, a wave of
        // `connections` at a time.
        var workers: [LoadWorker] = []
        for _ in 0..<connections { workers.append(LoadWorker(loop: group.next(), head: head, body: buffer)) }
        let assignments: [(worker: Int, agent: Int)] = agents >= connections
            ? (0..<agents).map { ($0 % connections, $0) }
            : (0..<connections).map { ($0, $0 % agents) }
        for wave in stride(from: 0, to: assignments.count, by: connections) {
            let futures = assignments[wave..<min(wave + connections, assignments.count)].map { a in
                workers[a.worker].connect(context: contexts[a.agent], host: host, port: port)
            }
            try EventLoopFuture.andAllSucceed(futures, on: group.next()).wait()
        }

        let out = FileHandle.standardOutput
        let start = monotonicNanos()
        let warmupEnd = start + UInt64(warmup * 1e9)
        let deadline = warmupEnd + UInt64(seconds * 1e9)
        for w in workers { w.loop.execute { w.start(warmupEnd: warmupEnd, deadline: deadline) } }
        Self.sleep(until: warmupEnd)
        let cpu0 = processCPUSeconds()
        try? out.write(contentsOf: Data("measure-start\n".utf8))
        Self.sleep(until: deadline)
        let cpu1 = processCPUSeconds()
        try? out.write(contentsOf: Data("measure-end\n".utf8))
        var total = LoadStats()
        for w in workers {
            let s = try w.done.futureResult.wait()
            total.ok += s.ok
            total.okTotal += s.okTotal
            total.errors += s.errors
            total.connectionsLost += s.connectionsLost
            for (k, v) in s.statuses { total.statuses[k, default: 0] += v }
            total.latencies += s.latencies
        }
        let elapsed = Double(monotonicNanos() - start) / 1e9
        let sorted = total.latencies.sorted()
        func pct(_ p: Double) -> Double {
            sorted.isEmpty ? 0 : Double(sorted[min(sorted.count - 1, Int(p / 100 * Double(sorted.count - 1)))]) / 1000
        }
        let report = LoadReport(
            path: path, connections: connections, agents: agents, seconds: seconds, elapsedTotal: elapsed, ok: total.ok, okTotal: total.okTotal,
            statuses: Dictionary(uniqueKeysWithValues: total.statuses.map { ("\($0.key)", $0.value) }), errors: total.errors,
            connectionsLost: total.connectionsLost, p50ms: pct(50), p99ms: pct(99), maxms: Double(sorted.last ?? 0) / 1000,
            loadCPU: cpu1 - cpu0, serverCPU: nil, postgresCPU: nil, machineCPU: nil)
        try out.write(contentsOf: try JSONEncoder().encode(report) + Data("\n".utf8))
    }

    static func sleep(until nanos: UInt64) {
        let now = monotonicNanos()
        if nanos > now { Thread.sleep(forTimeInterval: Double(nanos - now) / 1e9) }
    }
}

/// Counters of one worker (merged at the end).
struct LoadStats: Sendable {
    var ok = 0
    var okTotal = 0
    var errors = 0
    var connectionsLost = 0
    var statuses: [UInt: Int] = [:]
    var latencies: [UInt32] = []   // microseconds, 2xx answers in the measured window
}

/// One closed-loop worker: one request in flight, sent on its connections in turn. Confined
/// to its event loop (every method runs there), hence @unchecked Sendable.
final class LoadWorker: @unchecked Sendable {
    let loop: any EventLoop
    let head: HTTPRequestHead
    let body: ByteBuffer
    let done: EventLoopPromise<LoadStats>
    private var connections: [LoadConnection] = []
    private var next = 0
    private var sentAt: UInt64 = 0
    private var warmupEnd: UInt64 = 0
    private var deadline: UInt64 = 0
    private var stats = LoadStats()
    private var started = false
    private var finished = false

    init(loop: any EventLoop, head: HTTPRequestHead, body: ByteBuffer) {
        self.loop = loop
        self.head = head
        self.body = body
        done = loop.makePromise(of: LoadStats.self)
    }

    /// A keep-alive connection presenting `context`'s certificate; succeeds after the TLS handshake.
    func connect(context: NIOSSLContext, host: String, port: Int) -> EventLoopFuture<Void> {
        let ready = loop.makePromise(of: Void.self)
        let connected = ClientBootstrap(group: loop)
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(try NIOSSLClientHandler(context: context, serverHostname: nil))
                    try sync.addHTTPClientHandlers()
                    try sync.addHandler(LoadConnection(worker: self, ready: ready))
                }
            }
            .connect(host: host, port: port)
        connected.whenFailure { ready.fail($0) }
        return connected.flatMap { _ in ready.futureResult }
    }

    func add(_ c: LoadConnection) { connections.append(c) }

    func start(warmupEnd: UInt64, deadline: UInt64) {
        self.warmupEnd = warmupEnd
        self.deadline = deadline
        started = true
        sendNext()
    }

    private func sendNext() {
        guard !finished else { return }
        let now = monotonicNanos()
        if now >= deadline || connections.isEmpty {
            finish()
            return
        }
        let c = connections[next % connections.count]
        next &+= 1
        sentAt = now
        c.send(head, body)
    }

    func completed(status: UInt) {
        let now = monotonicNanos()
        if (200..<300).contains(status) {
            stats.okTotal += 1
            if now >= warmupEnd && now <= deadline {
                stats.ok += 1
                stats.latencies.append(UInt32(min((now - sentAt) / 1000, UInt64(UInt32.max))))
            }
        } else {
            stats.statuses[status, default: 0] += 1
        }
        sendNext()
    }

    func lost(_ c: LoadConnection, inFlight: Bool) {
        guard !finished else { return }
        connections.removeAll { $0 === c }
        stats.connectionsLost += 1
        if inFlight {
            stats.errors += 1
            sendNext()
        } else if started && connections.isEmpty {
            finish()
        }
    }

    private func finish() {
        finished = true
        for c in connections { c.close() }
        connections = []
        done.succeed(stats)
    }
}

/// The handler at the end of one connection's pipeline.
final class LoadConnection: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    let worker: LoadWorker
    private var ready: EventLoopPromise<Void>?
    private var context: ChannelHandlerContext?
    private var status: UInt = 0
    private var inFlight = false
    private var gone = false

    init(worker: LoadWorker, ready: EventLoopPromise<Void>) {
        self.worker = worker
        self.ready = ready
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? TLSUserEvent, case .handshakeCompleted = e, let ready {
            self.ready = nil
            worker.add(self)
            ready.succeed()
        }
        context.fireUserInboundEventTriggered(event)
    }

    func send(_ head: HTTPRequestHead, _ body: ByteBuffer) {
        guard let context else {
            inFlight = true
            lose()
            return
        }
        inFlight = true
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): status = h.status.code
        case .body: break
        case .end:
            inFlight = false
            worker.completed(status: status)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let ready {
            self.ready = nil
            ready.fail(error)
        }
        lose()
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let ready {
            self.ready = nil
            ready.fail(ChannelError.inputClosed)
        }
        lose()
        context.fireChannelInactive()
    }

    func close() {
        gone = true
        context?.close(promise: nil)
    }

    private func lose() {
        guard !gone else { return }
        gone = true
        let wasInFlight = inFlight
        inFlight = false
        worker.lost(self, inFlight: wasInFlight)
    }
}

// `segguard-loadgen fleet ...`: the open-loop fleet (FleetLoad.swift); otherwise the closed loop.
if CommandLine.arguments.count > 1 && CommandLine.arguments[1] == "fleet" {
    FleetLoad.main(Array(CommandLine.arguments.dropFirst(2)))
} else if CommandLine.arguments.count > 1 && CommandLine.arguments[1] == "make-pki" {
    MakeFleetPKI.main(Array(CommandLine.arguments.dropFirst(2)))
} else {
    CollectorLoad.main()
}
