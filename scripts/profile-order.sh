#!/usr/bin/env bash
# Regenerates Packaging/segguardd.order: the functions segguardd runs once it is up (heartbeats
# and event delivery over mutual TLS, the spool, carrier flaps and the binding they change,
# execs checked by capture blocking, a tool refused, control-socket queries), recorded with
# valgrind's callgrind from 20 s after start-up. build-deb.sh links the release binary with
# these functions first (gold's --section-ordering-file), so that what the daemon keeps using
# lies in a few hundred contiguous pages instead of being spread over its 26 MB of code, each
# page of which the kernel maps with its neighbours (fault-around).
# Run as root (network namespace, nftables, fanotify) before a release, after changes to what
# the daemon does in its steady state; about 4 minutes.
# Usage: scripts/profile-order.sh SEGGUARDD SEGGUARD-COLLECTOR [OUT]
#   SEGGUARDD: a release build with its symbol table (not stripped), e.g.
#     swift build -c release --static-swift-stdlib --scratch-path .build-deb --product segguardd
#     scripts/profile-order.sh .build-deb/release/segguardd "$(swift build --show-bin-path)/segguard-collector"
#   OUT: default Packaging/segguardd.order
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "profile-order.sh needs root (network namespace, nftables, fanotify)" >&2; exit 1; }
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null || { echo "profile-order.sh needs valgrind (apt-get install valgrind)" >&2; exit 1; }
usage="usage: scripts/profile-order.sh SEGGUARDD SEGGUARD-COLLECTOR [OUT]"
daemon="$(readlink -f "${1:?$usage}")"; collector="$(readlink -f "${2:?$usage}")"; out="${3:-Packaging/segguardd.order}"
# (grep -c reads all of nm's output: grep -q's early exit would fail the pipeline)
[ "$(nm "$daemon" 2>/dev/null | grep -c ' segguardd_main$' || true)" != 0 ] || { echo "$daemon: no symbol table with segguardd_main (a stripped binary?)" >&2; exit 2; }
ns="sgorder-$$"; dir="$(mktemp -d /tmp/segguard-order.XXXXXX)"
cgroup="$(awk '$3 == "cgroup2" {print $2; exit}' /proc/self/mounts)/segguard-order-$$"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    umount "$dir/watched" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rmdir "$cgroup" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
# valgrind cannot read the DWARF of the toolchain's clang: the symbol table is enough.
mkdir -p "$dir/bin"; objcopy --strip-debug "$daemon" "$dir/bin/segguardd"
ln -s segguardd "$dir/bin/segguardctl"
ctl="$dir/bin/segguardctl"
ip netns add "$ns"; ip -n "$ns" link set lo up
ip -n "$ns" link add sgdemo0 index 7301 type veth peer name switch0 index 7302
ip -n "$ns" addr add 192.0.2.10/24 dev sgdemo0
ip -n "$ns" link set sgdemo0 up; ip -n "$ns" link set switch0 up
ip -n "$ns" route add default via 192.0.2.1 dev sgdemo0
"$ctl" pki init-ca --dir "$dir/pki" >/dev/null
"$ctl" pki issue-server --dir "$dir/pki" --name localhost --ip 127.0.0.1 >/dev/null
"$ctl" pki issue-device --dir "$dir/pki" --id order-agent --group mynumber >/dev/null
ip netns exec "$ns" "$collector" --listen 127.0.0.1:8443 --store "sqlite:$dir/collector.sqlite" --cert "$dir/pki/server.pem" \
    --key "$dir/pki/server.key" --client-ca "$dir/pki/ca.pem" --log-level warning 2>"$dir/collector.log" & pids+=($!)
mkdir -p "$dir/watched"; mount -t tmpfs -o size=1m,exec segguard-order "$dir/watched"
cp /bin/true "$dir/watched/allowed"; cp /bin/true "$dir/watched/scrot"
{ cat Config/demo-veth.yaml; printf 'capture:\n  mode: enforce\n  watch: ["%s"]\n  block:\n    names: [scrot, maim, xwd]\n' "$dir/watched"; } > "$dir/policy.yaml"
sleep 2
# Instrumentation off until the steady state: start-up code is released after 10 s anyway.
valgrind --tool=callgrind --instr-atstart=no --demangle=no --compress-strings=no --compress-pos=no \
    --callgrind-out-file="$dir/callgrind.out" "$dir/bin/segguardd" --netns "/run/netns/$ns" --policy "$dir/policy.yaml" \
    --socket "$dir/d.sock" --baseline-file "$dir/d/baseline.nft" --session-cgroup "$cgroup" --log-level warning \
    --spool "$dir/spool.sqlite" --bundle-dir "$dir/d" --collector https://127.0.0.1:8443 --collector-ca "$dir/pki/ca.pem" \
    --client-cert "$dir/pki/devices/order-agent.pem" --client-key "$dir/pki/devices/order-agent.key" 2>"$dir/d.log" & pids+=($!)
vpid=${pids[-1]}
for _ in $(seq 1 120); do [ -S "$dir/d.sock" ] && break; sleep 1; done
[ -S "$dir/d.sock" ] || { echo "segguardd did not start under valgrind:" >&2; tail -20 "$dir/d.log" >&2; exit 1; }
sleep 20
callgrind_control --instr=on "$vpid" >/dev/null
echo "recording the steady state (4 rounds of 30 s)" >&2
for _ in 1 2 3 4; do
    sleep 10
    ip -n "$ns" link set switch0 down; sleep 2; ip -n "$ns" link set switch0 up; sleep 3
    for _ in 1 2 3; do /bin/true; "$dir/watched/allowed"; "$dir/watched/scrot" 2>/dev/null || true; done
    "$ctl" status --socket "$dir/d.sock" >/dev/null || true
    sleep 15
done
"$ctl" status --socket "$dir/d.sock" | grep -q "heartbeats ok" || { echo "no heartbeat reached the collector:" >&2; tail -20 "$dir/d.log" >&2; exit 1; }
callgrind_control --dump "$vpid" >/dev/null
sleep 3
kill "$vpid"; wait "$vpid" 2>/dev/null || true
# Every function of segguardd with a cost record in a dump (callgrind marks recursion as NAME'N).
python3 - "$dir" "$out" <<'EOF'
import glob, sys
names = set()
for path in glob.glob(sys.argv[1] + "/callgrind.out*"):
    ob = None
    for line in open(path, errors="replace"):
        if line.startswith("ob="): ob = line[3:].strip()
        elif line.startswith("fn=") and ob and ob.endswith("/bin/segguardd"):
            name = line[3:].strip().split("'")[0]
            if not name.startswith("0x"): names.add(name)
if len(names) < 500: sys.exit(f"only {len(names)} functions recorded: the workload did not run (see above)")
with open(sys.argv[2], "w") as f:
    f.write("# Functions segguardd runs in its steady state, hot first in the release binary.\n")
    f.write("# Generated by scripts/profile-order.sh; build-deb.sh reads it. Do not edit by hand.\n")
    for n in sorted(names): f.write(n + "\n")
print(f"{sys.argv[2]}: {len(names)} functions", file=sys.stderr)
EOF
