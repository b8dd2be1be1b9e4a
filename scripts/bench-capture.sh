#!/bin/bash
# Per-exec cost of screen-capture blocking: N execs of a small binary on a watched tmpfs,
# alternating with the same binary on a second, unwatched tmpfs (same moment, same load: the
# difference of the medians is what the blocker adds), in four configurations:
#   no segguardd   - the daemon not running at all (the floor)
#   off            - capture: mode off (no fanotify mark): both should be equal
#   names          - blocklist by names only: answered from the path, no hashing
#   sha256 cached  - a SHA-256 list: the first exec hashes, the rest hit the cache
#   sha256 new     - a SHA-256 list, every exec a file never seen (cache miss: hash each time)
# Runs as root; segguardd lives in a private mount namespace holding the tmpfs, as in the tests,
# so nothing outside it is marked. Usage: scripts/bench-capture.sh [N] [BIN_DIR]
set -euo pipefail
N=${1:-2000}
BIN=${2:-$(cd "$(dirname "$0")/.." && pwd)/.build/release}
[ "$(id -u)" = 0 ] || { echo "bench-capture: needs root" >&2; exit 1; }
[ -x "$BIN/segguardd" ] && [ -x "$BIN/segguard-bench" ] && [ -x "$BIN/segguardctl" ] || { echo "bench-capture: build first: swift build -c release (segguardd, segguardctl, segguard-bench)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/sgbench-capture.XXXXXX)
NS="sgbcap-$$"
PID=""
cleanup() {
  [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$NS"
TOOLS="$WORK/tools"
PLAIN="$WORK/plain"
mkdir -p "$TOOLS" "$PLAIN"
HASH=$(sha256sum /usr/bin/echo | cut -c1-64)

policy() { # mode, block section
  cat > "$WORK/policy.yaml" <<EOF
schema_version: 1
name: bench-capture
sites: [{name: hq, wired: [{interfaces: ["none*"]}]}]
vdi: {gateways: [{address: 192.0.2.10, ports: [443]}]}
capture:
  mode: $1
  watch: ["$TOOLS"]
  block:
$2
EOF
}

start() {
  unshare --mount --propagation private /bin/sh -c 'mount -t tmpfs -o mode=0755 sgbench "$0" && mount -t tmpfs -o mode=0755 sgplain "$0/../plain" && exec "$@"' "$TOOLS" \
    "$BIN/segguardd" --policy "$WORK/policy.yaml" --netns "/run/netns/$NS" --socket "$WORK/control.sock" \
    --nft-table sgbenchcap --baseline-file "$WORK/baseline.json" --log-level error 2>"$WORK/daemon.log" &
  PID=$!
  for _ in $(seq 100); do [ -S "$WORK/control.sock" ] && break; sleep 0.05; done
  [ -S "$WORK/control.sock" ] || { cat "$WORK/daemon.log"; exit 1; }
}

stop() { kill -9 "$PID"; wait "$PID" 2>/dev/null || true; PID=""; rm -f "$WORK/control.sock"; }

# N execs inside the daemon's mount namespace, timed one by one by segguard-bench exec-loop.
run() { # label, setup script, exec-loop arguments
  nsenter -t "$PID" -m -- /bin/bash -c "$2; cp /usr/bin/true $PLAIN/t" >/dev/null
  nsenter -t "$PID" -m -- "$BIN/segguard-bench" exec-loop --count "$N" --baseline "$PLAIN/t" --label "$(printf '%-14s' "$1")" $3
}

results=()
measure() { # label, mode, block section, setup, exec-loop arguments
  policy "$2" "$3"
  start
  results+=("$(run "$1" "$4" "$5")")
  stop
}

# Without segguardd at all (same private mounts): the floor the other rows are compared with.
nodaemon() {
  unshare --mount --propagation private /bin/bash -c 'mount -t tmpfs -o mode=0755 sgbench "$0" && mount -t tmpfs -o mode=0755 sgplain "$0/../plain" && cp /usr/bin/true "$0/t" && cp /usr/bin/true "$0/../plain/t" && exec "$@"' "$TOOLS" \
    "$BIN/segguard-bench" exec-loop --count "$N" --baseline "$PLAIN/t" --label "$(printf '%-14s' "no segguardd")" "$TOOLS/t"
}
results+=("$(nodaemon)")

copies='for i in $(seq 0 '"$((N - 1))"'); do cp /usr/bin/true '"$TOOLS"'/t$i; done'
measure "off"           off     "    names: [scrot]"      "cp /usr/bin/true $TOOLS/t" "$TOOLS/t"
measure "names"         enforce "    names: [scrot]"      "cp /usr/bin/true $TOOLS/t" "$TOOLS/t"
measure "sha256 cached" enforce "    sha256: [\"$HASH\"]" "cp /usr/bin/true $TOOLS/t" "$TOOLS/t"
measure "sha256 new"    enforce "    sha256: [\"$HASH\"]" "$copies"                   "--numbered $TOOLS/t"
echo "posix_spawn + wait of /usr/bin/true ($(stat -c %s /usr/bin/true) bytes) on a watched tmpfs, $N execs each:"
printf '  %s\n' "${results[@]}"
