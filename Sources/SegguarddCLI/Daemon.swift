// segguardd: wiring only. Options (Options.swift) -> the kernel sources -> the agent
// (SegguardAgent, where every decision, enforcement and report is made) -> one service that
// runs it beside the control socket and the reporter, and on SIGTERM/SIGINT stops them in
// order: control socket, agent (802.1X, netlink, capture), reporter (spool flushed).

import ArgumentParser
import CSegguardShims
import FoundationEssentials
import SegguardEssentials
import Glibc
import Logging
import NIOCore
import SegguardAgent
import SegguardCapture
import SegguardControl
import SegguardDeviceAuth
import SegguardEnforce
import SegguardNetlink
import SegguardPolicy
import SegguardReporter
import SegguardService
import SegguardSystem
import SegguardWire
import ServiceLifecycle
import Synchronization
import UnixSignals

extension Segguardd {
    func run() throws {
        // NIO's shared event loops and blocking pool (the reporter's HTTPS client, the SQLite
        // spool) default to one thread per core; one of each carries the agent's few requests a
        // minute, with less memory (each thread's stack and malloc arena) on a small thin client.
        NIOSingletons.groupLoopCountSuggestion = 1
        NIOSingletons.blockingPoolThreadCountSuggestion = 1
        let procConnector = try enterNamespace()  // before any thread exists: all of them inherit it
        JournalLogHandler.bootstrap(level: Logger.Level(rawValue: logLevel) ?? .info)
        let logger = Logger(label: "segguardd")
        // Fail closed before anything that can fail: the last good policy's baseline.
        let binding = try loadBaseline(logger)
        // A bundle applied earlier (verified again now) takes precedence over the local file.
        var policyFile = policy
        var bundle: AppliedBundle?
        if collector != nil, let key = policyPublicKey {
            do {
                if let (saved, file) = try AppliedBundle.restore(keyPath: key, certificatePath: clientCert, directory: bundleDir) { (bundle, policyFile) = (saved, file) }
            } catch {
                logger.error("the saved policy bundle does not verify; using the local policy file", metadata: ["error": "\(error)", "file": "\(policy)"])
            }
        }
        let loaded: LoadedPolicy
        do {
            loaded = try Agent.loadPolicy(file: policyFile)
        } catch {
            writeStandardError("segguardd: \(error)\n")
            logger.critical("the policy is refused; the baseline of the last good policy stays in force", metadata: ["file": "\(policyFile)"])
            throw ExitCode(2)
        }
        var configuration = AgentConfiguration(policyFile: policyFile, bundlePolicyFile: bundleDir + "/bundle-policy.yaml", baselineFile: baselineFile,
                                               hostname: hostName())
        configuration.watchdogInterval = ServiceNotifier().watchdogInterval
        configuration.procConnector = procConnector
        configuration.timingsFile = timingsFile
        configuration.maxSessionsPerUser = maxSessionsPerUser
        configuration.deviceCertificateFile = clientCert
        let hangSwitch = PathName.directory(socket) + "/fault-hang-netlink-loop"
        let agent = Agent(policy: loaded, configuration: configuration, sources: try sources(binding: binding, logger),
                          observer: Notifier(hangSwitch: hangSwitch, logger: logger), logger: logger)
        logger.notice("policy loaded", metadata: ["policy": "\(loaded.policy.name)", "file": "\(policyFile)", "sites": "\(loaded.policy.sites.count)"])
        let restored = bundle
        try runBlocking {
            let reporter = await reporter(agent: agent, loaded: loaded, bundle: restored, logger: logger)
            let server: ControlServer
            do {
                // Bound (and listening) before the agent can decide: READY=1 never precedes the socket.
                server = try ControlServer(path: socket, adminGroup: adminGroupID(logger), adminGroupName: adminGroup,
                                      limits: ControlServer.Limits(perUser: maxConnectionsPerUser), logger: logger)
                try agent.start()
            } catch {
                logger.critical("segguardd cannot start", metadata: ["error": "\(error)"])
                agent.stop()
                await reporter?.stop()
                throw ExitCode(1)
            }
            reporter?.start()
            server.start { request, peer in agent.reply(to: request, peer: peer) }
            let service = DaemonService(agent: agent, server: server, reporter: reporter, logger: logger)
            try await ServiceGroup(services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger).run()
        }
    }

    /// The nftables binding, with the baseline file (written by the last run for its last good
    /// policy: drop-all under enforce) loaded before the policy is even read, so that neither
    /// a refused policy nor any other failure at start leaves an earlier run's allow in force.
    func loadBaseline(_ logger: Logger) throws -> NftablesBinding {
        let binding: NftablesBinding
        do {
            binding = try NftablesBinding(table: nftTable, watchChanges: true)
        } catch {
            logger.critical("cannot set up enforcement", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
        guard let text = FileManager.default.contents(atPath: baselineFile) else {
            logger.notice("no baseline file yet (first start): the table is made from the policy", metadata: ["file": "\(baselineFile)"])
            return binding
        }
        do {
            try binding.apply(text)
        } catch {
            logger.critical("cannot load the baseline file", metadata: ["file": "\(baselineFile)", "error": "\(error)"])
        }
        return binding
    }

    /// The kernel sources the agent reads and drives.
    func sources(binding: NftablesBinding, _ logger: Logger) throws -> AgentSources {
        var tracker: SessionTracker?
        if let base = sessionCgroup ?? SessionTracker.defaultBase() {
            do {
                let t = try SessionTracker(base: base, launcher: launcherPath)
                tracker = t
                logger.notice("VDI sessions are cgroups under \(base)", metadata: ["nftables_match": "\(t.socketMatch?.description ?? "none (cannot be named)")"])
                if let scope = try? String(contentsOfFile: "/proc/sys/kernel/yama/ptrace_scope", encoding: .utf8),
                   let n = Int(scope.trimmed()), n < 2 {
                    logger.warning("""
                        kernel.yama.ptrace_scope is \(n): a user can attach a debugger to their own launched VDI client and run other code \
                        in its session; set it to 2 on the thin client image
                        """)
                }
                if !SessionTracker.inInitialCgroupNamespace() {
                    logger.warning("""
                        segguardd runs in a cgroup namespace: the sessions' level is counted from its root, as kernels with nft_socket's \
                        cgroup namespace fix (2024) do; on an older kernel no process would reach the gateways while bind_to_sessions is on
                        """)
                }
            } catch { logger.error("no session tracking: My Number launches will be refused", metadata: ["error": "\(error)"]) }
        } else {
            logger.error("no cgroup v2 mount: My Number launches will be refused")
        }
        try? FileManager.default.createDirectory(atPath: PathName.directory(baselineFile), withIntermediateDirectories: true)
        let deviceAuth: any DeviceAuthSource = switch deviceAuthSource {
        case .control: WPAControlSource(directory: wpaControlDir, localDirectory: PathName.directory(socket), logger: logger)
        case .dbus: WPADBusSource(address: wpaDbusAddress, logger: logger)
        }
        let (delay, dpkg) = (captureTestHashDelayMs, dpkgInfoDir)
        // vm.memfd_noexec's value before a protecting session raised it, kept beside the baseline.
        let memfdSaved = PathName.directory(baselineFile) + "/memfd_noexec.saved"
        let prober: TrustedServerProbes?
        do {
            prober = try TrustedServerProbes(networkNamespace: netns, timeout: 3, logger: logger)
        } catch {
            prober = nil
            logger.error("no trusted-server probes: rules with trusted_server will not authorize", metadata: ["error": "\(error)"])
        }
        return AgentSources(network: NetworkWatcher(logger: logger), deviceAuth: deviceAuth, binding: binding, sessions: tracker, execGate: { rule, onRecord in
            try CaptureBlocker(rule: rule, dpkg: DpkgIndex(infoDirectory: dpkg), logger: logger, hashDelayMs: delay,
                               memfdNoexec: MemfdNoexec(savedFile: memfdSaved), onRecord: onRecord)
        }, prober: prober)
    }

    /// Reporting to the collector (with --collector): spool opened first, so no event is lost.
    func reporter(agent: Agent, loaded: LoadedPolicy, bundle: AppliedBundle?, logger: Logger) async -> Reporter? {
        guard let collector else { return nil }
        do {
            var config = ReporterConfiguration(collectorURL: collector, caPath: collectorCa, certificatePath: clientCert, keyPath: clientKey,
                                               policyPublicKeyPath: policyPublicKey, bundleStatePath: bundleDir + "/bundle.json")
            config.renewBeforeSeconds = renewBeforeDays > 0 ? Double(renewBeforeDays) * 86_400 : nil
            let start = Reporter.Start(version: segguardVersion, policyName: loaded.policy.name, policyFile: loaded.file, policySHA256: loaded.sha256)
            let reporter = try await Reporter.open(configuration: config, spoolPath: spool, rule: loaded.policy.report, logger: logger, applied: bundle,
                                                   start: start, heartbeat: { await agent.heartbeat() }, applyBundle: { try await agent.apply(bundle: $0) })
            agent.attach(reporting: reporter)
            reporter.onCertificateRenewed { agent.deviceCertificateRenewed() }
            logger.notice("reporting to the collector", metadata: ["collector": "\(collector)", "agent": "\(reporter.identity.agentID)", "group": "\(reporter.identity.group)"])
            return reporter
        } catch {
            logger.critical("cannot report to the collector", metadata: ["error": "\(error)"])
            return nil
        }
    }

    /// The admin group's id; without it only root may query the control socket.
    func adminGroupID(_ logger: Logger) -> UInt32? {
        guard let gid = groupID(named: adminGroup) else {
            logger.info("admin group not found: only root may query the control socket", metadata: ["group": "\(adminGroup)"])
            return nil
        }
        return gid
    }

    /// --netns: enter the namespace now (setns acts on the calling thread; threads made later
    /// inherit it). The process connector speaks only in the initial network namespace, so
    /// its socket is opened before.
    func enterNamespace() throws -> Int32 {
        guard let netns else { return -1 }
        let connector = sg_proc_connector_open()
        do { try enterNetworkNamespace(netns) } catch {
            writeStandardError("segguardd: --netns \(netns): \(error)\n")
            throw ExitCode(2)
        }
        return connector
    }
}

extension Reporter: AgentReporting {}

/// Runs the agent until SIGTERM/SIGINT (or a source fails), reloads on SIGHUP, and stops
/// the control socket, the agent and the reporter in that order.
struct DaemonService: Service {
    let agent: Agent, server: ControlServer, reporter: Reporter?, logger: Logger

    func run() async throws {
        let hup = await UnixSignalsSequence(trapping: .sighup)
        let reloads = Task { [agent] in for await _ in hup { agent.reload() } }
        defer { reloads.cancel() }
        // Once started, the pages only start-up used are unmapped (StartupPages): the resident
        // size is then what the daemon uses.
        let settled = Task { [logger] in
            try await Task.sleep(for: .seconds(StartupPages.settleSeconds))
            let bytes = StartupPages.release()
            logger.info("start-up pages released", metadata: ["bytes": "\(bytes)"])
        }
        defer { settled.cancel() }
        do {
            try await withTaskCancellationOrGracefulShutdownHandler {
                try await agent.waitUntilStopped()
            } onCancelOrGracefulShutdown: { [logger, server, agent] in
                logger.notice("stopping")
                server.stop()
                agent.stop()
            }
        } catch {
            logger.critical("segguardd stops so that the service manager restarts it", metadata: ["error": "\(error)"])
            server.stop()
            agent.stop()
            await reporter?.stop()
            throw ExitCode(1)
        }
        await reporter?.stop()
    }
}

/// The agent's notifications to systemd, with the install test's fault injection: while the
/// file `<socket directory>/fault-hang-netlink-loop` exists, the agent's loop (where netlink
/// is read) hangs in its next watchdog ping, so the service manager must restart segguardd.
struct Notifier: AgentObserver {
    let hangSwitch: String, logger: Logger
    let systemd = ServiceNotifier()
    func ready(status: String) { systemd.ready(status: status) }
    func status(_ text: String) { systemd.status(text) }
    func reloading() { systemd.reloading() }
    func reloaded(status: String) { systemd.reloaded(status: status) }
    func stopping() { systemd.stopping() }
    func watchdog() {
        if access(hangSwitch, F_OK) == 0 {
            logger.critical("fault injection: the agent's loop hangs now", metadata: ["switch": "\(hangSwitch)"])
            while true { sleep(3600) }
        }
        systemd.watchdog()
    }
}

/// segguardd's entry point (the daemon personality of the agent's multi-call binary).
public func segguarddMain() {
    Segguardd.main()
}
