// Real 802.1X peers for tests and the benchmark: a test PKI made with openssl (a CA with a
// CRL, a second CA for a foreign device certificate), hostapd (driver=wired, internal EAP
// server) as the authenticator, wpa_supplicant -Dwired as the thin client's supplicant, and a
// private dbus-daemon for wpa_supplicant's D-Bus API. Owns the directory it makes and the
// processes it starts; `cleanup()` kills them and removes the directory.

import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// An 802.1X lab in a directory of its own. The supplicant's identity is "tc-0042".
public final class EAPLab: Sendable {
    public let path: String
    public var controlDirectory: String { "\(path)/wpa-ctrl" }
    public var busAddress: String { "unix:path=\(path)/bus.sock" }
    public static let identity = "tc-0042"

    /// Programs the lab needs; tests skip with this list when one is missing.
    public static let programs = ["/usr/sbin/hostapd", "/usr/sbin/wpa_supplicant", "/usr/bin/openssl", "/usr/bin/dbus-daemon"]
    public static var available: Bool { programs.allSatisfy { FileManager.default.isExecutableFile(atPath: $0) } }

    public init() throws {
        // Under /run, not /tmp: segguardd reads the supplicant's certificate only from a path
        // only root can change (a world-writable /tmp on the way is refused).
        path = "/run/segguard-eap-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: "\(path)/demoCA", withIntermediateDirectories: true)
        do {
            try makePKI()
            try writeConfigs()
        } catch {
            cleanup()
            throw error
        }
    }

    private func shell(_ script: String) throws {
        // Output to a file and stdin from /dev/null: no pipe of ours stays open in a daemon.
        try runCommand(["sh", "-c", "cd '\(path)' && { \(script) ; } </dev/null >>'\(path)/setup.log' 2>&1"])
    }

    private func makePKI() throws {
        try """
            [ ca ]
            default_ca = CA_default
            [ CA_default ]
            database = \(path)/demoCA/index.txt
            crlnumber = \(path)/demoCA/crlnumber
            default_md = sha256
            default_crl_days = 2

            """.write(toFile: "\(path)/ca.cnf", atomically: true, encoding: .utf8)
        try shell("""
            : > demoCA/index.txt && echo 01 > demoCA/crlnumber &&
            openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=segguard-test-ca &&
            openssl req -x509 -newkey rsa:2048 -nodes -keyout otherca.key -out otherca.pem -days 2 -subj /CN=someone-elses-ca &&
            for pair in server:ca client:ca rogue:otherca; do
              n=${pair%%:*}; c=${pair##*:}
              openssl req -newkey rsa:2048 -nodes -keyout $n.key -out $n.csr -subj /CN=$n || exit 1
              openssl x509 -req -in $n.csr -CA $c.pem -CAkey $c.key -CAcreateserial -out $n.pem -days 2 || exit 1
            done &&
            printf 'subjectAltName=DNS:rogue-server.example\n' > rogue-server.ext &&
            openssl req -newkey rsa:2048 -nodes -keyout rogue-server.key -out rogue-server.csr -subj /CN=rogue-server &&
            openssl x509 -req -in rogue-server.csr -CA otherca.pem -CAkey otherca.key -CAcreateserial -extfile rogue-server.ext -out rogue-server.pem -days 2 &&
            printf 'basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n' > other-device.ext &&
            openssl req -newkey rsa:2048 -nodes -keyout other-device.key -out other-device.csr -subj /CN=tc-0999 &&
            openssl x509 -req -in other-device.csr -CA ca.pem -CAkey ca.key -CAcreateserial -extfile other-device.ext -out other-device.pem -days 2 &&
            openssl x509 -req -in client.csr -CA otherca.pem -CAkey otherca.key -CAcreateserial -out client-otherca.pem -days 2
            """)
        try publishCRL()
    }

    /// SHA-256 of a lab certificate's DER ("server", "rogue-server", "ca", …), lower-case hex,
    /// as wpa_supplicant reports it in CTRL-EVENT-EAP-PEER-CERT hash=.
    public func certificateSHA256(_ name: String) throws -> String {
        let out = try runCommand(["openssl", "x509", "-in", "\(path)/\(name).pem", "-noout", "-fingerprint", "-sha256"])
        guard let eq = out.firstIndex(of: "=") else { throw CommandError(description: "openssl fingerprint: \(out)") }
        return out[out.index(after: eq)...].filter { $0 != ":" && !$0.isWhitespace }.lowercased()
    }

    /// The running supplicant's pid (from its pid file), or nil.
    public var supplicantPID: pid_t? {
        (try? String(contentsOfFile: "\(path)/wpa_supplicant.pid", encoding: .utf8)).flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// Writes the CA's CRL next to its certificate (hostapd reads both from ca-crl.pem).
    private func publishCRL() throws {
        try shell("openssl ca -config ca.cnf -gencrl -keyfile ca.key -cert ca.pem -out crl.pem && cat ca.pem crl.pem > ca-crl.pem.new && mv ca-crl.pem.new ca-crl.pem")
    }

    /// Revokes the device certificate; hostapd refuses it at the next (re-)authentication that
    /// starts more than a second later (crl_reload_interval=1).
    public func revokeDeviceCertificate() throws {
        try shell("openssl ca -config ca.cnf -revoke client.pem -keyfile ca.key -cert ca.pem")
        try publishCRL()
    }

    /// Replaces the lab's PKI with another one (PEM texts): the CA both sides trust, the
    /// authenticator's server certificate and key, this device's certificate and key
    /// ("client"), and the CA's CRL hostapd checks (`ca-crl.pem` = CA + CRL). Call before
    /// starting the daemons; `publish(crl:)` replaces the CRL later.
    public func install(caPEM: String, crlPEM: String, serverCertificatePEM: String, serverKeyPEM: String,
                        deviceCertificatePEM: String, deviceKeyPEM: String) throws {
        for (name, text, mode) in [("ca.pem", caPEM, 0o644), ("server.pem", serverCertificatePEM, 0o644), ("server.key", serverKeyPEM, 0o600),
                                   ("client.pem", deviceCertificatePEM, 0o644), ("client.key", deviceKeyPEM, 0o600)] {
            try text.write(toFile: "\(path)/\(name)", atomically: true, encoding: .utf8)
            chmod("\(path)/\(name)", mode_t(mode))
        }
        try publish(crl: crlPEM)
    }

    /// Writes `ca-crl.pem` (the lab CA followed by `crlPEM`) atomically; hostapd reloads it
    /// at the next authentication more than `crl_reload_interval` (1 s) later.
    public func publish(crl crlPEM: String) throws {
        let ca = try String(contentsOfFile: "\(path)/ca.pem", encoding: .utf8)
        try (ca + crlPEM).write(toFile: "\(path)/ca-crl.pem", atomically: true, encoding: .utf8)
    }

    private func writeConfigs() throws {
        try "* TLS\n".write(toFile: "\(path)/eap_users", atomically: true, encoding: .utf8)
        for cert in ["client", "rogue", "other-device"] {
            try """
                ctrl_interface=\(controlDirectory)
                ap_scan=0
                network={
                  key_mgmt=IEEE8021X
                  eap=TLS
                  identity="\(Self.identity)"
                  ca_cert="\(path)/ca.pem"
                  client_cert="\(path)/\(cert).pem"
                  private_key="\(path)/\(cert).key"
                  eapol_flags=0
                }

                """.write(toFile: "\(path)/wpa-\(cert).conf", atomically: true, encoding: .utf8)
        }
        // The device certificate, but no ca_cert: the supplicant accepts any server (the
        // misconfiguration a rogue authenticator exploits). cert_in_cb=1 (wpa_supplicant's
        // default, written out) makes CTRL-EVENT-EAP-PEER-CERT carry hash=; with 0 it has none.
        try """
            ctrl_interface=\(controlDirectory)
            ap_scan=0
            cert_in_cb=1
            network={
              key_mgmt=IEEE8021X
              eap=TLS
              identity="\(Self.identity)"
              client_cert="\(path)/client.pem"
              private_key="\(path)/client.key"
              eapol_flags=0
            }

            """.write(toFile: "\(path)/wpa-client-noca.conf", atomically: true, encoding: .utf8)
        try """
            <!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
            <busconfig>
              <type>system</type>
              <listen>\(busAddress)</listen>
              <auth>EXTERNAL</auth>
              <policy context="default">
                <allow user="root"/>
                <allow own="*"/>
                <allow send_destination="*"/>
                <allow receive_sender="*"/>
              </policy>
            </busconfig>

            """.write(toFile: "\(path)/bus.conf", atomically: true, encoding: .utf8)
    }

    /// hostapd as the switch port on `interface`, authenticating with the lab's CA and CRL.
    public func startAuthenticator(in namespace: TestNamespace, interface: String) throws {
        try startAuthenticator(in: namespace, interface: interface, serverCertificate: "server")
    }

    /// hostapd presenting the lab certificate `serverCertificate`: "server" (the lab CA's) or
    /// "rogue-server" (another CA's, CN=rogue-server, DNS:rogue-server.example).
    public func startAuthenticator(in namespace: TestNamespace, interface: String, serverCertificate: String) throws {
        try """
            interface=\(interface)
            driver=wired
            ieee8021x=1
            eap_server=1
            eap_user_file=\(path)/eap_users
            ca_cert=\(path)/ca-crl.pem
            server_cert=\(path)/\(serverCertificate).pem
            private_key=\(path)/\(serverCertificate).key
            check_crl=1
            crl_reload_interval=1
            ctrl_interface=\(path)/hostapd-ctrl

            """.write(toFile: "\(path)/hostapd.conf", atomically: true, encoding: .utf8)
        try startDaemon(namespace, ["/usr/sbin/hostapd", "-B", "-P", "\(path)/hostapd.pid", "\(path)/hostapd.conf"], log: "hostapd.log")
        try waitFor("\(path)/hostapd-ctrl/\(interface)")
        authenticatorInterface.withLock { $0 = interface }
    }

    private let authenticatorInterface = Mutex("")

    /// wpa_supplicant -Dwired on `interface` with the device certificate (`.client`) or one
    /// from another CA (`.rogue`); `dbus` also registers it on the lab's private bus (-u).
    public func startSupplicant(in namespace: TestNamespace, interface: String, certificate: Certificate = .client, dbus: Bool = false) throws {
        var argv = ["/usr/sbin/wpa_supplicant", "-B", "-P", "\(path)/wpa_supplicant.pid", "-Dwired", "-f", "\(path)/wpa_supplicant.log", "-i\(interface)",
                    "-c", "\(path)/wpa-\(certificate.rawValue).conf"]
        if dbus { argv.insert("-u", at: 1) }
        try startDaemon(namespace, argv, log: "wpa_supplicant.log", environment: dbus ? "DBUS_SYSTEM_BUS_ADDRESS='\(busAddress)' " : "")
        try waitFor("\(controlDirectory)/\(interface)")
    }

    /// Which certificate the supplicant presents: this device's (`client`, the one segguardd
    /// is given with --client-cert), one from another CA (`rogue`), or another thin client's
    /// (`otherDevice`: the office CA's, clientAuth, so the authenticator accepts it).
    public enum Certificate: String, Sendable { case client, rogue, otherDevice = "other-device" }

    /// wpa_supplicant -Dwired on `interface` with the lab configuration `config` ("client",
    /// "rogue", "client-noca"). `cleanSignals`: started with no signal blocked (the test
    /// runner's children inherit a mask blocking SIGTERM), so that SIGTERM stops it.
    public func startSupplicant(in namespace: TestNamespace, interface: String, config: String, cleanSignals: Bool) throws {
        let argv = ["/usr/sbin/wpa_supplicant", "-B", "-P", "\(path)/wpa_supplicant.pid", "-Dwired", "-f", "\(path)/wpa_supplicant.log", "-i\(interface)",
                    "-c", "\(path)/wpa-\(config).conf"]
        if cleanSignals {
            let quoted = argv.map { "'\($0)'" }.joined(separator: " ")
            let closeAll = #"for f in /proc/$$/fd/*; do n=${f##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done"#
            try spawnWithCleanSignals(["/bin/bash", "-c", "\(closeAll); exec ip netns exec '\(namespace.name)' \(quoted) >>'\(path)/wpa_supplicant.log' 2>&1 </dev/null"])
        } else {
            try startDaemon(namespace, argv, log: "wpa_supplicant.log")
        }
        try waitFor("\(controlDirectory)/\(interface)")
    }

    /// Runs argv to its end with an empty signal mask and default dispositions (posix_spawn).
    private func spawnWithCleanSignals(_ argv: [String]) throws {
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t(), all = sigset_t()
        sigemptyset(&empty)
        sigfillset(&all)
        sigdelset(&all, SIGKILL)
        sigdelset(&all, SIGSTOP)
        posix_spawnattr_setsigmask(&attr, &empty)
        posix_spawnattr_setsigdefault(&attr, &all)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var cargs = argv.map { strdup($0) } + [nil]
        defer { cargs.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], nil, &attr, &cargs, environ)
        guard rc == 0 else { throw CommandError(description: "posix_spawn \(argv[0]): errno \(rc)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        guard status == 0 else { throw CommandError(description: "\(argv.joined(separator: " ")) exited with status \(status); see \(path)/wpa_supplicant.log") }
    }

    /// Stops the supplicant cleanly, through its control socket (TERMINATE): it tells its
    /// monitors (CTRL-EVENT-TERMINATING) and removes its socket. Not with SIGTERM: the test
    /// runner's children inherit a signal mask that blocks it.
    public func stopSupplicant(_ interface: String) {
        _ = try? supplicantRequest(interface, "TERMINATE")
        stop("wpa_supplicant", signal: SIGKILL, grace: 3)
    }

    /// Kills the supplicant as a crash would: no event, its socket file stays.
    public func killSupplicant() { stop("wpa_supplicant", signal: SIGKILL) }

    /// Stops hostapd (TERMINATE on its control socket, SIGKILL if it lingers) and removes its
    /// socket file, so that the next start waits for a fresh one.
    public func stopAuthenticator() {
        let interface = authenticatorInterface.withLock { $0 }
        _ = try? controlRequest("\(path)/hostapd-ctrl/\(interface)", "TERMINATE")
        stop("hostapd", signal: SIGKILL, grace: 3)
        try? FileManager.default.removeItem(atPath: "\(path)/hostapd-ctrl/\(interface)")
    }

    /// Starts the private system bus for wpa_supplicant -u.
    public func startBus() throws {
        let closeAll = #"for f in /proc/$$/fd/*; do n=${f##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done"#
        try runCommand(["bash", "-c", "\(closeAll); exec dbus-daemon --config-file='\(path)/bus.conf' --fork --print-pid >'\(path)/dbus-daemon.pid' 2>>'\(path)/dbus-daemon.log' </dev/null"])
        try waitFor("\(path)/bus.sock")
    }

    /// Makes the authenticator re-authenticate the supplicant now (hostapd EAPOL_REAUTH), as a
    /// switch does at its re-authentication period or on an administrator's request.
    public func reauthenticate() throws {
        let interface = authenticatorInterface.withLock { $0 }
        let socket = "\(path)/hostapd-ctrl/\(interface)"
        let stations = try controlRequest(socket, "STA-FIRST")
        guard let mac = stations.split(separator: "\n").first, mac.count == 17 else {
            throw CommandError(description: "hostapd knows no station to re-authenticate (STA-FIRST: \(stations.prefix(80)))")
        }
        let reply = try controlRequest(socket, "EAPOL_REAUTH \(mac)")
        guard reply.hasPrefix("OK") else { throw CommandError(description: "hostapd EAPOL_REAUTH answered \(reply)") }
    }

    /// Sends a command to the supplicant's control socket (e.g. "SET_NETWORK 0 client_cert …").
    public func supplicantRequest(_ interface: String, _ command: String) throws -> String {
        try controlRequest("\(controlDirectory)/\(interface)", command)
    }

    /// One request on a wpa_supplicant/hostapd control socket, 2 s timeout.
    public func controlRequest(_ socketPath: String, _ command: String) throws -> String {
        let local = "\(path)/req-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw CommandError(description: "socket: errno \(errno)") }
        defer {
            close(fd)
            unlink(local)
        }
        func address(_ p: String) -> sockaddr_un {
            var a = sockaddr_un()
            a.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &a.sun_path) { $0.copyBytes(from: Array(p.utf8).prefix($0.count - 1)) }
            return a
        }
        var me = address(local), peer = address(socketPath)
        let size = socklen_t(MemoryLayout<sockaddr_un>.size)
        guard withUnsafePointer(to: &me, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, size) } }) == 0,
              withUnsafePointer(to: &peer, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, size) } }) == 0
        else { throw CommandError(description: "control socket \(socketPath): errno \(errno)") }
        _ = command.withCString { send(fd, $0, strlen($0), 0) }
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, 2000) == 1 else { throw CommandError(description: "\(command): no reply from \(socketPath) within 2 s") }
        var buf = [UInt8](repeating: 0, count: 8192)
        let n = recv(fd, &buf, buf.count, 0)
        guard n >= 0 else { throw CommandError(description: "recv: errno \(errno)") }
        return String(decoding: buf[0..<n], as: UTF8.self)
    }

    /// Starts a program that daemonizes (-B). Every descriptor above 2 is closed first:
    /// Foundation's Process learns that a child exited when the child's end of a socketpair
    /// closes, and a daemon that inherited it would keep runCommand waiting for ever.
    private func startDaemon(_ ns: TestNamespace, _ argv: [String], log: String, environment: String = "") throws {
        let quoted = argv.map { "'\($0)'" }.joined(separator: " ")
        let closeAll = #"for f in /proc/$$/fd/*; do n=${f##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done"#
        try runCommand(["bash", "-c", "\(closeAll); \(environment)exec ip netns exec '\(ns.name)' \(quoted) >>'\(path)/\(log)' 2>&1 </dev/null"])
    }

    private func waitFor(_ file: String, seconds: Double = 5) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while !FileManager.default.fileExists(atPath: file) {
            guard Date() < deadline else { throw CommandError(description: "\(file) did not appear within \(seconds) s; see \(path)/*.log") }
            usleep(10_000)
        }
    }

    /// Sends `sig` after `grace` seconds unless the process is gone by then, and waits for it.
    private func stop(_ name: String, signal sig: Int32, grace: Double = 0) {
        let pidFile = "\(path)/\(name).pid"
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8), let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)) else { return }
        if grace == 0 { kill(pid, sig) }
        // Wait for it to be gone. The daemon's parent is PID 1, which may not reap it (a
        // container's init): a zombie counts as gone.
        func alive() -> Bool {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return false }
            return !stat[stat.index(after: close)...].hasPrefix(" Z")
        }
        for _ in 0..<Int(max(grace, 3) * 100) where alive() { usleep(10_000) }
        if alive() { kill(pid, SIGKILL) }
        try? FileManager.default.removeItem(atPath: pidFile)
    }

    /// The log of a program of the lab ("hostapd", "wpa_supplicant", "setup"), for failure messages.
    public func log(_ name: String) -> String {
        (try? String(contentsOfFile: "\(path)/\(name).log", encoding: .utf8)) ?? ""
    }

    public func cleanup() {
        stop("wpa_supplicant", signal: SIGKILL)
        stop("hostapd", signal: SIGKILL)
        stop("dbus-daemon", signal: SIGKILL)
        try? FileManager.default.removeItem(atPath: path)
    }
}
