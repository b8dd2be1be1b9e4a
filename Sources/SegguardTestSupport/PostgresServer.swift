// A throwaway PostgreSQL server for tests and benchmarks: initdb into a temporary directory,
// listening on 127.0.0.1 at a free port and on a socket in that directory, trust
// authentication, stopped and deleted by `stop()`. As root it runs as the `postgres` user
// (the server refuses to run as root).

import Foundation

/// A PostgreSQL server of its own for one test run.
public final class PostgresServer: Sendable {
    public let directory: String
    public let port: Int
    let binDirectory: String
    let runAs: String?

    /// The server binaries of Debian's postgresql package, if installed.
    public static func binaries() -> String? {
        let base = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []).compactMap(Int.init).sorted()
        for v in versions.reversed() where FileManager.default.isExecutableFile(atPath: "\(base)/\(v)/bin/pg_ctl") { return "\(base)/\(v)/bin" }
        return nil
    }

    /// Starts a new server; throws with the server's log when it does not come up.
    public init() throws {
        guard let bin = Self.binaries() else { throw CommandError(description: "PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)") }
        binDirectory = bin
        runAs = getuid() == 0 ? "postgres" : nil
        Self.stopOrphans(bin: bin, runAs: runAs)
        let dir = "/tmp/sg-pg-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        directory = dir
        port = Self.freePort()
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        if let user = runAs { _ = try runCommand(["chown", user, dir]) }
        do {
            _ = try run(["\(bin)/initdb", "-D", "\(dir)/data", "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            // The server must not inherit this process's pipes (runCommand reads them to the
            // end): close every descriptor above 2 and send its output to the log.
            let closeAll = #"for f in /proc/$$/fd/*; do n=${f##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done"#
            let user = runAs.map { "runuser -u \($0) -- " } ?? ""
            _ = try runCommand(["bash", "-c", "\(closeAll); exec \(user)'\(bin)/pg_ctl' -D '\(dir)/data' -l '\(dir)/server.log' -w -t 60 start "
                + "-o '-p \(port) -k \(dir) -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100' >>'\(dir)/pg_ctl.log' 2>&1 </dev/null"])
        } catch {
            let log = (try? String(contentsOfFile: "\(dir)/server.log", encoding: .utf8)) ?? ""
            try? FileManager.default.removeItem(atPath: dir)
            throw CommandError(description: "PostgreSQL did not start: \(error)\n\(log)")
        }
    }

    /// postgres://postgres@127.0.0.1:PORT/DATABASE
    public func url(database: String = "postgres") -> String { "postgres://postgres@127.0.0.1:\(port)/\(database)" }

    /// Creates a database (one per test, so tests never see each other's rows).
    public func createDatabase(_ name: String) throws {
        _ = try run(["\(binDirectory)/psql", "-h", "127.0.0.1", "-p", "\(port)", "-U", "postgres", "-d", "postgres", "-c", "CREATE DATABASE \"\(name)\""])
    }

    public func stop() {
        _ = try? run(["\(binDirectory)/pg_ctl", "-D", "\(directory)/data", "-m", "immediate", "-w", "stop"])
        try? FileManager.default.removeItem(atPath: directory)
    }

    func run(_ argv: [String]) throws -> String {
        var args = argv
        if args[0].hasSuffix("/psql"), !FileManager.default.isExecutableFile(atPath: args[0]) { args[0] = "psql" }
        if let user = runAs { return try runCommand(["runuser", "-u", user, "--"] + args) }
        return try runCommand(args)
    }

    /// Servers left by a test process that died without stopping them (a crash or SIGKILL
    /// skips `atexit`): their directory names the owner's pid; when it is gone, the server is
    /// stopped and its directory removed. Servers of live processes are not touched.
    static func stopOrphans(bin: String, runAs: String?) {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/tmp")) ?? []
        for name in entries where name.hasPrefix("sg-pg-") {
            let parts = name.dropFirst("sg-pg-".count).split(separator: "-")
            guard parts.count == 2, let owner = Int32(parts[0]), UInt32(parts[1]) != nil, owner != getpid() else { continue }
            guard kill(owner, 0) != 0, errno == ESRCH else { continue }
            let dir = "/tmp/\(name)"
            if FileManager.default.fileExists(atPath: "\(dir)/data/postmaster.pid") {
                let stop = ["\(bin)/pg_ctl", "-D", "\(dir)/data", "-m", "immediate", "-w", "stop"]
                _ = try? runCommand(runAs.map { ["runuser", "-u", $0, "--"] + stop } ?? stop)
            }
            try? FileManager.default.removeItem(atPath: dir)
        }
    }

    /// A port nobody listens on now (bind to 0, read it back, close).
    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}
