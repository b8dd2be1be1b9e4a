// What the collector benchmark's load generator (segguard-loadgen, a child process) reports to
// `segguard-bench collector`, and the few things both sides share.

import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// What one run of the load generator measured (JSON between the processes).
public struct LoadReport: Codable, Sendable {
    public var path: String
    public var connections: Int
    public var agents: Int
    /// The measured window, seconds.
    public var seconds: Double
    /// The whole run (warm-up + measured + the last answers), seconds.
    public var elapsedTotal: Double
    /// 2xx answers completed inside the measured window.
    public var ok: Int
    /// 2xx answers of the whole run (warm-up and the in-flight tail included).
    public var okTotal: Int
    /// Non-2xx answers by status (whole run).
    public var statuses: [String: Int]
    /// Transport errors on a request in flight, and connections lost (whole run).
    public var errors: Int
    public var connectionsLost: Int
    public var p50ms: Double
    public var p99ms: Double
    public var maxms: Double
    /// CPU seconds during the measured window: load generator, collector, PostgreSQL.
    public var loadCPU: Double
    public var serverCPU: Double?
    public var postgresCPU: Double?
    /// Busy CPU seconds of the whole machine in the window (to see other processes' share).
    public var machineCPU: Double?

    public init(path: String, connections: Int, agents: Int, seconds: Double, elapsedTotal: Double, ok: Int, okTotal: Int, statuses: [String: Int],
                errors: Int, connectionsLost: Int, p50ms: Double, p99ms: Double, maxms: Double, loadCPU: Double, serverCPU: Double?, postgresCPU: Double?,
                machineCPU: Double?) {
        (self.path, self.connections, self.agents, self.seconds, self.elapsedTotal) = (path, connections, agents, seconds, elapsedTotal)
        (self.ok, self.okTotal, self.statuses, self.errors, self.connectionsLost) = (ok, okTotal, statuses, errors, connectionsLost)
        (self.p50ms, self.p99ms, self.maxms) = (p50ms, p99ms, maxms)
        (self.loadCPU, self.serverCPU, self.postgresCPU, self.machineCPU) = (loadCPU, serverCPU, postgresCPU, machineCPU)
    }

    public var rate: Double { seconds > 0 ? Double(ok) / seconds : 0 }

    public func line(label: String) -> String {
        let non2xx = statuses.values.reduce(0, +)
        var s = "  \(label) POST \(path.padding(toLength: 18, withPad: " ", startingAt: 0)) "
            + String(format: "%9.1f req/s  p50 %6.2f ms  p99 %6.2f ms  max %7.2f ms  errors %d  non-2xx %d", rate, p50ms, p99ms, maxms, errors, non2xx)
        if non2xx > 0 { s += " " + statuses.sorted { $0.key < $1.key }.map { "\($0.key)x\($0.value)" }.joined(separator: ",") }
        if connectionsLost > 0 { s += "  connections lost \(connectionsLost)" }
        func perRequest(_ cpu: Double) -> String { ok > 0 ? String(format: "%.0f", cpu / Double(ok) * 1e6) : "-" }
        s += "\n      CPU per 2xx answer: load generator \(perRequest(loadCPU)) us"
        if let serverCPU { s += ", collector \(perRequest(serverCPU)) us" + String(format: " (%.0f %% of a core)", serverCPU / seconds * 100) }
        if let postgresCPU { s += ", PostgreSQL \(perRequest(postgresCPU)) us" + String(format: " (%.0f %% of a core)", postgresCPU / seconds * 100) }
        s += String(format: "; load generator %.0f %% of a core", loadCPU / seconds * 100)
        if let machineCPU {
            let others = machineCPU - loadCPU - (serverCPU ?? 0) - (postgresCPU ?? 0)
            s += String(format: "\n      machine: %.0f %% of %d CPUs busy; other processes %.0f %% of a core", machineCPU / seconds / Double(ProcessInfo.processInfo.activeProcessorCount) * 100,
                        ProcessInfo.processInfo.activeProcessorCount, max(0, others) / seconds * 100)
        }
        return s
    }
}

/// File names shared by the parent and the load generator.
public enum LoadFiles {
    public static func agentID(_ i: Int) -> String { String(format: "bench-agent-%05d", i) }
    public static func device(_ dir: String, _ i: Int) -> (cert: String, key: String) {
        ("\(dir)/devices/\(agentID(i)).pem", "\(dir)/devices/\(agentID(i)).key")
    }
}

/// User + system CPU seconds of this process (all threads).
public func processCPUSeconds() -> Double {
    var ru = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &ru)
    return Double(ru.ru_utime.tv_sec) + Double(ru.ru_utime.tv_usec) / 1e6 + Double(ru.ru_stime.tv_sec) + Double(ru.ru_stime.tv_usec) / 1e6
}


/// Undoes, in the load generator, the signal block its parent set (the mask survives exec).
public func unblockTerminationSignals() {
    var set = sigset_t()
    sigemptyset(&set)
    sigaddset(&set, SIGINT)
    sigaddset(&set, SIGTERM)
    pthread_sigmask(SIG_UNBLOCK, &set, nil)
    signal(SIGINT, SIG_DFL)
    signal(SIGTERM, SIG_DFL)
}
