#!/usr/bin/env python3
"""Enrollment throughput of one collector, measured from outside.

Starts the shipped `segguard-collector` binary (release build by default) with enrollment on
(--enroll-ca-cert/--enroll-ca-key) and a SQLite store (or --store URL), makes --devices
one-time tokens with `segguard-collector tokens create`, prepares one signing request per
device with openssl before the clock starts (a device makes its key and request itself; that
is not the collector's work), then --concurrency clients enroll every device at once, each
over a new TLS connection as a thin client would (EST simpleenroll, HTTP Basic with the
token). Prints devices/s, latency p50/p99/max, errors, and the collector's CPU seconds.
The clients run on the same machine and share its CPUs.

  swift build -c release --product segguard-collector --product segguardctl
  python3 scripts/enroll-load.py --devices 2000 --concurrency 32
"""
import argparse, base64, os, socket, ssl, subprocess, sys, tempfile, threading, time, shutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_seconds(pid):
    stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--bin", default=os.path.join(ROOT, ".build/release"))
    ap.add_argument("--store", help="postgres://... (default: a new SQLite file)")
    args = ap.parse_args()
    if args.devices < 1 or args.concurrency < 1:
        sys.exit("enroll-load: --devices and --concurrency must be at least 1")
    work = tempfile.mkdtemp(prefix="sg-enroll-")
    collector = None
    try:
        ctl, coll = os.path.join(args.bin, "segguardctl"), os.path.join(args.bin, "segguard-collector")
        run = lambda *a: subprocess.run(a, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        run(ctl, "pki", "init-ca", "--dir", f"{work}/pki", "--organization", "Load City")
        run(ctl, "pki", "issue-server", "--dir", f"{work}/pki", "--name", "localhost", "--dns", "localhost", "--ip", "127.0.0.1")
        store = args.store or f"sqlite:{work}/collector.sqlite"
        run(coll, "tokens", "create", "--store", store, "--count", str(args.devices), "--group", "mynumber", "--expires", "2h",
            "-o", f"{work}/tokens.csv")
        tokens = [line.split(",")[0] for line in open(f"{work}/tokens.csv").read().splitlines()[1:]]
        # One key for every request (the collector checks each request's own signature; the
        # key's uniqueness is the device's business), one request per device id.
        run("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{work}/dev.key")
        t0 = time.monotonic()
        csrs = []
        for i in range(args.devices):
            der = subprocess.run(["openssl", "req", "-new", "-key", f"{work}/dev.key", "-subj", f"/CN=tc-{i:05d}", "-outform", "DER"],
                                 check=True, capture_output=True).stdout
            csrs.append(base64.b64encode(der))
        prep = time.monotonic() - t0
        port = free_port()
        collector = subprocess.Popen([coll, "--listen", f"127.0.0.1:{port}", "--store", store, "--cert", f"{work}/pki/server.pem",
                                      "--key", f"{work}/pki/server.key", "--client-ca", f"{work}/pki/ca.pem",
                                      "--enroll-ca-cert", f"{work}/pki/ca.pem", "--enroll-ca-key", f"{work}/pki/ca.key", "--log-level", "error"],
                                     stdout=subprocess.DEVNULL, stderr=open(f"{work}/collector.log", "w"))
        context = ssl.create_default_context(cafile=f"{work}/pki/ca.pem")
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or collector.poll() is not None:
                    sys.exit("enroll-load: the collector did not start: " + open(f"{work}/collector.log").read())
                time.sleep(0.1)

        latencies, errors, lock = [], [], threading.Lock()
        next_index = [0]

        def worker():
            while True:
                with lock:
                    i = next_index[0]
                    next_index[0] += 1
                if i >= args.devices:
                    return
                auth = base64.b64encode(f"tc-{i:05d}:{tokens[i]}".encode()).decode()
                body = csrs[i]
                start = time.monotonic()
                try:
                    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
                    conn = context.wrap_socket(raw, server_hostname="localhost")
                    request = (f"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/pkcs10\r\n"
                               f"Authorization: Basic {auth}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
                    conn.sendall(request)
                    reply = b""
                    while True:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        reply += chunk
                    conn.close()
                    status = reply.split(b" ", 2)[1] if reply.startswith(b"HTTP/") else b"?"
                    with lock:
                        if status == b"200":
                            latencies.append(time.monotonic() - start)
                        else:
                            errors.append(reply[:200])
                except OSError as e:
                    with lock:
                        errors.append(str(e).encode())

        cpu0 = cpu_seconds(collector.pid)
        t0 = time.monotonic()
        threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
        cpu = cpu_seconds(collector.pid) - cpu0
        latencies.sort()
        q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")
        print(f"enroll-load: {args.devices} devices, {args.concurrency} in flight, store {'sqlite' if not args.store else 'given'}, "
              f"{os.cpu_count()} CPUs (clients on the same machine); {args.devices} requests prepared in {prep:.1f} s")
        print(f"  enrolled {len(latencies)} in {wall:.2f} s = {len(latencies) / wall:.0f} devices/s; "
              f"latency p50 {q(0.5):.1f} ms, p99 {q(0.99):.1f} ms, max {q(1.0):.1f} ms; errors {len(errors)}")
        print(f"  collector CPU {cpu:.2f} s ({cpu / max(1, len(latencies)) * 1000:.2f} ms per enrollment)")
        for e in errors[:3]:
            print("  error:", e)
        if errors:
            sys.exit(1)
    finally:
        if collector and collector.poll() is None:
            collector.terminate()
            try:
                collector.wait(timeout=20)
            except subprocess.TimeoutExpired:
                collector.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
