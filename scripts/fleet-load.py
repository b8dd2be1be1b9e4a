#!/usr/bin/env python3
"""Capacity of one collector replica, measured from outside under the shipped unit's limits.

Starts the shipped `segguard-collector` binary with the open-files limit of
Packaging/segguard-collector.service (LimitNOFILE, applied with prlimit: the unit's only
resource limit; where the machine's hard limit is lower and cannot be raised, that one, said
in the output), then `segguard-loadgen fleet` (in --generators processes, each holding its
share of the connections): N agents, each with its own device
certificate and keep-alive mutual-TLS connection, heartbeats every --interval s ± 10 %.
Optionally restarts the collector mid-run (--storm-at): every agent reconnects at once.

Prints: heartbeat latency p50/p99/max and errors in the steady window (after the first
interval, when every agent has connected, until the storm) and after the storm; the
collector's RSS (idle, steady, peak, after the agents left), CPU and open descriptors.

  swift build -c release --product segguard-collector --product segguard-loadgen
  .build/release/segguard-loadgen make-pki --dir /var/tmp/sg-fleet-pki --agents 20000
  python3 scripts/fleet-load.py --agents 20000 --seconds 150 --storm-at 100
"""
import argparse, os, re, signal, socket, subprocess, sys, tempfile, time, shutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def unit_nofile():
    text = open(os.path.join(ROOT, "Packaging/segguard-collector.service")).read()
    m = re.search(r"^LimitNOFILE=(\d+)", text, re.M)
    return int(m.group(1)) if m else 1024


def hard_nofile():
    import resource
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def proc_stats(pid):
    try:
        status = open(f"/proc/{pid}/status").read()
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
        hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
        stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return rss, hwm, cpu, fds
    except (OSError, AttributeError):
        return None


def machine_busy():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(f) - f[3] - f[4], sum(f)  # busy, total jiffies


def wait_port(port, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def pct(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * (len(values) - 1)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=20000)
    ap.add_argument("--seconds", type=float, default=150)
    ap.add_argument("--interval", type=float, default=30)
    ap.add_argument("--storm-at", type=float, default=0, help="restart the collector this many seconds in (0: no storm)")
    ap.add_argument("--pki", default="/var/tmp/sg-fleet-pki")
    ap.add_argument("--bin", default=os.path.join(ROOT, ".build/release"))
    ap.add_argument("--port", type=int, default=18943)
    ap.add_argument("--store", default="", help="collector --store (default: sqlite in a temporary directory)")
    ap.add_argument("--threads", type=int, default=1, help="threads per load generator")
    ap.add_argument("--generators", type=int, default=2, help="load generator processes")
    ap.add_argument("--collector-args", default="", help="extra collector options")
    ap.add_argument("--ramp", type=float, default=0, help="first heartbeats spread over this many seconds (default: one interval)")
    ap.add_argument("--eager", action="store_true", help="reconnect at once after a lost connection (default: at the next heartbeat, as segguardd does)")
    a = ap.parse_args()

    nofile = unit_nofile()
    unit = nofile
    if hard_nofile() < nofile:
        nofile = hard_nofile()
        print(f"NOTE: this machine's hard open-files limit is {nofile} (no CAP_SYS_RESOURCE to raise it): the collector runs with "
              f"{nofile}, below the unit's {unit}", flush=True)
    work = tempfile.mkdtemp(prefix="sg-fleet-")
    store = a.store or f"sqlite:{work}/collector.sqlite"
    body = ('{"agent_version":"0.9.0","decision":{"authorized":true,"interfaces":["eth0"],"reason":"mynumber via eth0",'
            '"segment":"mynumber","since":"2026-12-01T08:00:00.000Z"},"hostname":"tc-fleet","interfaces":[{"name":"eth0","up":true,'
            '"wireless":false},{"bssid":"02:00:00:00:00:01","name":"wlan0","ssid":"office","up":true,"wireless":true}],'
            f'"interval_s":{int(a.interval)},"policy":{{"name":"office","sha256":"{"a" * 64}"}},"sent_at":"2026-12-01T08:00:05.000Z",'
            '"spool":{"dropped":0,"pending":0}}')
    open(f"{work}/heartbeat.json", "w").write(body)
    log = open(f"{work}/collector.log", "w")

    def start_collector():
        cmd = ["prlimit", f"--nofile={nofile}:{nofile}", "--", f"{a.bin}/segguard-collector", "--listen", f"127.0.0.1:{a.port}",
               "--store", store, "--cert", f"{a.pki}/server.pem", "--key", f"{a.pki}/server.key", "--client-ca", f"{a.pki}/ca.pem",
               "--heartbeat-seconds", str(int(a.interval)), "--log-level", "warning"] + a.collector_args.split()
        p = subprocess.Popen(cmd, stdout=log, stderr=log)
        if not wait_port(a.port):
            sys.exit("collector did not listen; log: " + open(f"{work}/collector.log").read()[-2000:])
        return p

    collector = start_collector()
    limits = open(f"/proc/{collector.pid}/limits").read()
    nofile_line = [l for l in limits.splitlines() if l.startswith("Max open files")][0]
    time.sleep(1)
    idle = proc_stats(collector.pid)
    print(f"collector pid {collector.pid}, store {store}; {' '.join(nofile_line.split())} (LimitNOFILE={nofile} from the unit); idle RSS {idle[0] / 1024:.1f} MB", flush=True)

    gens = []
    share = (a.agents + a.generators - 1) // a.generators
    for g in range(a.generators):
        first, n = g * share, min(share, a.agents - g * share)
        if n <= 0:
            break
        p = subprocess.Popen(["prlimit", f"--nofile={min(hard_nofile(), n + 1024)}", "--", f"{a.bin}/segguard-loadgen", "fleet",
                              "--port", str(a.port), "--pki", a.pki, "--agents", str(n), "--first", str(first), "--interval", str(a.interval),
                              "--seconds", str(a.seconds), "--body", f"{work}/heartbeat.json", "--out", f"{work}/requests-{g}.csv",
                              "--threads", str(a.threads), "--ramp", str(a.ramp or a.interval)] + (["--eager-reconnect"] if a.eager else []),
                             stdout=subprocess.PIPE, text=True, bufsize=1)
        os.set_blocking(p.stdout.fileno(), False)
        gens.append(p)
    loaded = set()
    connected = {}
    all_connected_t = None
    started = None
    samples = []  # (t, rss KB, cpu s, fds)
    restart_t = None
    connected_back_t = None
    cpu_base = 0.0
    cpu_offset = 0.0
    peak = 0
    try:
        while any(g.poll() is None for g in gens):
            time.sleep(1)
            for k, gen in enumerate(gens):
                for line in iter(gen.stdout.readline, ""):
                    line = line.rstrip()
                    if not line:
                        break
                    print(f"  loadgen {k}: " + line, flush=True)
                    if "agents loaded" in line:
                        loaded.add(k)
                        if len(loaded) == len(gens):
                            started = time.time()
                            cpu_base = proc_stats(collector.pid)[2]
                    m = re.search(r"t=(\d+)s connected=(\d+)", line)
                    if m:
                        connected[k] = int(m.group(2))
                        if all_connected_t is None and restart_t is None and sum(connected.values()) >= a.agents:
                            all_connected_t = time.time() - started
                        if restart_t is not None and connected_back_t is None and sum(connected.values()) >= a.agents:
                            connected_back_t = time.time() - started
            if started is None:
                continue
            t = time.time() - started
            st = proc_stats(collector.pid)
            if st:
                peak = max(peak, st[1])
                samples.append((t, st[0], st[2] - cpu_base + cpu_offset, st[3], machine_busy()))
            if a.storm_at and restart_t is None and t >= a.storm_at:
                cpu_offset = samples[-1][2] if samples else 0
                restart_t = time.time() - started
                collector.send_signal(signal.SIGTERM)
                code = collector.wait(30)
                stopped = time.time() - started - restart_t
                collector = start_collector()
                cpu_base = proc_stats(collector.pid)[2]
                print(f"  storm: SIGTERM at t={restart_t:.1f}s, stopped in {stopped:.1f} s (exit {code}), listening again "
                      f"{time.time() - started - restart_t:.1f} s after the SIGTERM; every agent reconnects at once", flush=True)
        for k, gen in enumerate(gens):
            for line in (gen.stdout.read() or "").splitlines():
                print(f"  loadgen {k}: " + line)
        time.sleep(20)  # the collector looks at its connection count every 15 s
        after = proc_stats(collector.pid)
    finally:
        for gen in gens:
            if gen.poll() is None:
                gen.kill()
        crashed = collector.poll()
        collector.send_signal(signal.SIGTERM)
        try:
            collector.wait(30)
        except subprocess.TimeoutExpired:
            collector.kill()

    rows = []
    for k in range(len(gens)):
        for line in open(f"{work}/requests-{k}.csv").read().splitlines()[1:]:
            t, lat, status, rec = line.split(",")
            rows.append((int(t) / 1000, int(lat) / 1000, int(status), rec == "1"))

    def window(lo, hi, label):
        rs = [r for r in rows if lo <= r[0] < hi]
        ok = [r[1] for r in rs if 200 <= r[2] < 300]
        bad = [r for r in rs if not 200 <= r[2] < 300]
        kinds = {}
        for r in bad:
            k = {0: "timeout/lost", -1: "connect failed"}.get(r[2], str(r[2]))
            kinds[k] = kinds.get(k, 0) + 1
        rate = len(ok) / (hi - lo) if hi > lo else 0
        print(f"  {label:<28} {lo:6.0f}-{hi:<6.0f}s  {len(ok):7d} ok ({rate:6.1f}/s)  p50 {pct(ok, 50):7.2f} ms  p99 {pct(ok, 99):8.2f} ms  "
              f"max {max(ok) if ok else 0:8.2f} ms  errors {len(bad)} {kinds if kinds else ''}")
        return pct(ok, 99), len(bad)

    end = a.seconds
    steady_end = restart_t if restart_t else end
    print()
    print(f"collector capacity: {a.agents} agents, heartbeats every {a.interval:g} s ± 10 %, one keep-alive mTLS connection each, "
          f"{os.cpu_count()} CPUs shared with {len(gens)} load generator processes; collector open-files limit {nofile} (the unit's: {unit})")
    # Steady: once every agent has connected (its handshake queue drained) and 5 s more.
    ramp = max(a.ramp, a.interval, (all_connected_t or 0) + 5)
    if all_connected_t:
        print(f"  all {a.agents} agents connected {all_connected_t:.0f} s in (first heartbeats spread over {a.ramp or a.interval:g} s)")
    window(0, ramp, "ramp (agents connecting)")
    p99, errors = window(ramp, steady_end, "steady")
    if restart_t:
        window(restart_t, end, "from the SIGTERM (storm)")
        print(f"  reconnected: all {a.agents} agents connected again {connected_back_t - restart_t:.0f} s after the SIGTERM"
              if connected_back_t else "  reconnected: NOT all agents connected again before the end")
    steady = [s for s in samples if ramp <= s[0] < steady_end]
    if steady:
        rss = max(s[1] for s in steady)
        cpu = (steady[-1][2] - steady[0][2]) / max(1e-9, steady[-1][0] - steady[0][0])
        print(f"  collector RSS: idle {idle[0] / 1024:.0f} MB, steady {rss / 1024:.0f} MB "
              f"({(rss - idle[0]) / max(1, a.agents):.1f} KB per agent connection), peak {peak / 1024:.0f} MB; "
              f"after the agents left: {after[0] / 1024 if after else float('nan'):.0f} MB")
        busy = (steady[-1][4][0] - steady[0][4][0]) / max(1, steady[-1][4][1] - steady[0][4][1])
        print(f"  collector CPU in the steady window: {cpu * 100:.0f} % of a core; the machine {busy * 100:.0f} % busy (collector + load generators); "
              f"open descriptors at most {max(s[3] for s in samples)}")
    print(f"  collector exit status during the run: {'running (no crash)' if crashed is None else crashed}")
    print(f"  verdict: p99 {p99:.1f} ms (goal <= 100), errors in the steady window {errors} (goal 0)")
    # Where the slow answers come from: per second of sending, in the steady window.
    slow = {}
    for t, lat, status, _ in rows:
        sent = int(t - lat / 1000)
        if ramp <= sent < steady_end and lat > 100:
            n, worst = slow.get(sent, (0, 0))
            slow[sent] = (n + 1, max(worst, lat))
    if slow:
        top = sorted(slow.items(), key=lambda kv: -kv[1][0])[:8]
        print("  seconds with most answers > 100 ms (sent at t: count, worst ms): "
              + ", ".join(f"{t}s: {n}, {w:.0f}" for t, (n, w) in sorted(top)))
    if os.environ.get("SG_FLEET_KEEP"):
        print("kept: " + work)
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
