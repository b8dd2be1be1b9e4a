#!/usr/bin/env bash
# Idle memory of a segguardd binary (root): started in a private network namespace with an office
# port (Config/demo-veth.yaml's), then, as a second configuration, also reporting to a collector
# (SQLite spool, HTTPS client) with capture blocking on a tmpfs it owns; after SETTLE seconds
# (default 20; segguardd releases its start-up pages after 10) prints VmRSS, Pss (smaps_rollup),
# RssAnon/RssFile and the thread count of each.
# Usage: scripts/measure-rss.sh SEGGUARDD [SEGGUARD-COLLECTOR [SEGGUARDCTL]]
#   e.g. the release build Packaging/build-deb.sh makes (ordered, see scripts/profile-order.sh):
#   scripts/measure-rss.sh .build-deb/release/segguardd "$(swift build --show-bin-path)/segguard-collector"
# The environment is passed on; MALLOC_ARENA_MAX is 2 unless set, as segguardd.service sets it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "measure-rss.sh needs root (network namespace, nftables)" >&2; exit 1; }
daemon="$(readlink -f "${1:?usage: scripts/measure-rss.sh SEGGUARDD [SEGGUARD-COLLECTOR [SEGGUARDCTL]]}")"
collector="${2:-}"; ctl="${3:-$(dirname "${2:-$1}")/segguardctl}"
settle="${SETTLE:-20}"
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
ns="sgrss-$$"; dir="$(mktemp -d /tmp/segguard-rss.XXXXXX)"
cgroup="$(awk '$3 == "cgroup2" {print $2; exit}' /proc/self/mounts)/segguard-rss-$$"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    umount "$dir/watched" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rmdir "$cgroup" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
ip netns add "$ns"; ip -n "$ns" link set lo up
ip -n "$ns" link add sgdemo0 index 7201 type veth peer name switch0 index 7202
ip -n "$ns" addr add 192.0.2.10/24 dev sgdemo0
ip -n "$ns" link set sgdemo0 up; ip -n "$ns" link set switch0 up
ip -n "$ns" route add default via 192.0.2.1 dev sgdemo0

measure() {  # measure LABEL PID
    local pid=$2
    sleep "$settle"
    local rss pss anon file threads
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"); anon=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status")
    file=$(awk '/^RssFile:/ {print $2}' "/proc/$pid/status"); threads=$(awk '/^Threads:/ {print $2}' "/proc/$pid/status")
    pss=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup")
    printf '%-34s VmRSS %6.1f MB  Pss %6.1f MB  (anon %5.1f, file %5.1f)  threads %s\n' "$1" \
        "$(echo "$rss/1024" | bc -l)" "$(echo "$pss/1024" | bc -l)" "$(echo "$anon/1024" | bc -l)" "$(echo "$file/1024" | bc -l)" "$threads"
}

# 1. The decision, the binding and the control socket only.
"$daemon" --netns "/run/netns/$ns" --policy Config/demo-veth.yaml --socket "$dir/a.sock" --baseline-file "$dir/a/baseline.nft" \
    --session-cgroup "$cgroup" --log-level warning 2>"$dir/a.log" & pids+=($!)
measure "policy only" "${pids[-1]}"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

[ -n "$collector" ] || exit 0
# 2. Reporting to a collector (in the namespace, on loopback) and capture blocking on a tmpfs.
"$ctl" pki init-ca --dir "$dir/pki" >/dev/null
"$ctl" pki issue-server --dir "$dir/pki" --name localhost --ip 127.0.0.1 >/dev/null
"$ctl" pki issue-device --dir "$dir/pki" --id rss-agent --group mynumber >/dev/null
ip netns exec "$ns" "$collector" --listen 127.0.0.1:8443 --store "sqlite:$dir/collector.sqlite" --cert "$dir/pki/server.pem" \
    --key "$dir/pki/server.key" --client-ca "$dir/pki/ca.pem" --log-level warning 2>"$dir/collector.log" & pids+=($!)
mkdir -p "$dir/watched"; mount -t tmpfs -o size=1m segguard-rss "$dir/watched"
{ cat Config/demo-veth.yaml; printf 'capture:\n  mode: enforce\n  watch: ["%s"]\n  block:\n    names: [scrot, maim, xwd]\n' "$dir/watched"; } > "$dir/policy.yaml"
sleep 2
"$daemon" --netns "/run/netns/$ns" --policy "$dir/policy.yaml" --socket "$dir/b.sock" --baseline-file "$dir/b/baseline.nft" \
    --session-cgroup "$cgroup" --log-level warning --spool "$dir/spool.sqlite" --bundle-dir "$dir/b" --collector https://127.0.0.1:8443 \
    --collector-ca "$dir/pki/ca.pem" --client-cert "$dir/pki/devices/rss-agent.pem" --client-key "$dir/pki/devices/rss-agent.key" 2>"$dir/b.log" & pids+=($!)
measure "reporting + capture blocking" "${pids[-1]}"
"$ctl" status --socket "$dir/b.sock" | grep -E "reporting|capture" | sed 's/^/  /'
