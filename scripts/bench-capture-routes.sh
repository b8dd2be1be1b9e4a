#!/bin/bash
# How soon the process watcher ends a listed tool that fanotify cannot see: the dynamic loader
# run directly (ld.so ./tool) and a copy run from a memfd. As uid 65534 inside segguardd's
# private mount namespace (a tmpfs only it watches), N attempts of each route: a python driver
# forks, the child execs the route, the parent waits; the time from fork to the child's death
# by SIGKILL bounds from above how long the tool ran. For scale, the same routes with an
# unlisted program that exits at once (/usr/bin/true): the time an exec through the route takes
# at all. Usage: scripts/bench-capture-routes.sh [N] [BIN_DIR]
set -euo pipefail
N=${1:-200}
BIN=${2:-$(cd "$(dirname "$0")/.." && pwd)/.build/release}
[ "$(id -u)" = 0 ] || { echo "bench-capture-routes: needs root" >&2; exit 1; }
[ -x "$BIN/segguardd" ] || { echo "bench-capture-routes: build first: swift build -c release --product segguardd" >&2; exit 1; }
LD=""
for l in /lib64/ld-linux-x86-64.so.2 /lib/ld-linux-aarch64.so.1; do [ -e "$l" ] && { LD=$l; break; }; done
[ -n "$LD" ] || { echo "no dynamic loader found" >&2; exit 1; }
WORK=$(mktemp -d /tmp/sgbench-routes.XXXXXX)
chmod 755 "$WORK"
NS="sgbroute-$$"
PID=""
cleanup() {
  [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$NS"
TOOLS="$WORK/tools"
mkdir -p "$TOOLS"
NAME="sgroute-grab-$$"
cat > "$WORK/policy.yaml" <<EOF
schema_version: 1
name: bench-capture-routes
sites: [{name: hq, wired: [{interfaces: ["none*"]}]}]
vdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}
capture:
  mode: enforce
  watch: ["$TOOLS"]
  block:
    names: [$NAME]
EOF
cat > "$WORK/driver.py" <<'EOF'
import os, sys, time, signal
route, target, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
ld = os.environ["LD"]
name = os.path.basename(target)
data = open(target, "rb").read()
times, killed = [], 0
for _ in range(n):
    t0 = time.monotonic_ns()
    pid = os.fork()
    if pid == 0:
        try:
            if route == "loader":
                os.execv(ld, [ld, target, "5"])
            else:
                fd = os.memfd_create(name, 0)
                os.write(fd, data)
                os.execv("/proc/self/fd/%d" % fd, [name, "5"])
        finally:
            os._exit(127)
    _, st = os.waitpid(pid, 0)
    times.append((time.monotonic_ns() - t0) / 1e6)
    if os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGKILL:
        killed += 1
times.sort()
p = lambda q: times[min(len(times) - 1, int(q * len(times)))]
print("  %-7s %-22s %4d runs, %4d ended by SIGKILL: fork to end p50 %6.2f ms, p99 %6.2f ms, max %6.2f ms"
      % (route, os.path.basename(target)[:22], n, killed, p(0.5), p(0.99), times[-1]))
EOF
unshare --mount --propagation private /bin/sh -c 'mount -t tmpfs -o mode=0755 sgroutes "$0" && cp /usr/bin/sleep "$0/'"$NAME"'" && cp /usr/bin/true "$0/plain-true" && exec "$@"' "$TOOLS" \
  "$BIN/segguardd" --policy "$WORK/policy.yaml" --netns "/run/netns/$NS" --socket "$WORK/control.sock" \
  --nft-table sgbenchroute --baseline-file "$WORK/baseline.json" --log-level error 2>"$WORK/daemon.log" &
PID=$!
for _ in $(seq 100); do [ -S "$WORK/control.sock" ] && break; sleep 0.05; done
[ -S "$WORK/control.sock" ] || { cat "$WORK/daemon.log"; exit 1; }
chmod 644 "$WORK/driver.py"
run() { nsenter -t "$PID" -m -- env LD="$LD" setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 "$WORK/driver.py" "$@"; }
echo "segguardd ($BIN) ends a listed tool run around fanotify, uid 65534, $N runs each:"
run loader "$TOOLS/$NAME" "$N"
run memfd "$TOOLS/$NAME" "$N"
echo "for scale, the same routes with an unlisted program that exits at once:"
run loader "$TOOLS/plain-true" "$N"
run memfd "$TOOLS/plain-true" "$N"
