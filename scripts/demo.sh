#!/usr/bin/env bash
# Live demo (root): installs what is needed, builds, then runs segguardd in the foreground in a
# private network namespace while a scenario plays beside it: a cable (veth) is plugged and
# unplugged, a phone tether (a second uplink with a default route) appears and goes away.
# Watch the decision change in the daemon's log. Ctrl-C ends it and removes the namespace.
# DEMO_ROUNDS=N stops after N rounds (default: until Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo.sh needs root (network namespaces)" >&2; exit 1; }
scripts/install-deps.sh --demo
swift build --product segguardd
swift build --product segguardctl
bin="$(swift build --show-bin-path)"

ns="sgdemo-$$"
sock="/run/segguard-demo-$$.sock"
cleanup() {
    [ -n "${scenario:-}" ] && kill "$scenario" 2>/dev/null || true
    [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -f "$sock"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

ip netns add "$ns"
ip -n "$ns" link set lo up
# The office port: sgdemo0 (matches the demo policy); its peer is the "switch".
ip -n "$ns" link add sgdemo0 index 5001 type veth peer name switch0 index 5002
ip -n "$ns" addr add 192.0.2.10/24 dev sgdemo0
ip -n "$ns" link set sgdemo0 up

say() { printf '\n\033[1m[scenario] %s\033[0m\n' "$*" >&2; }
play() {
    sleep 2
    local round=0
    while :; do
        round=$((round + 1))
        say "cable plugged in (switch0 up)"; ip -n "$ns" link set switch0 up
        ip -n "$ns" route replace default via 192.0.2.1 dev sgdemo0; sleep 3
        say "segguardctl status:"; "$bin/segguardctl" status --socket "$sock" >&2 || true; sleep 2
        say "cable pulled (switch0 down)"; ip -n "$ns" link set switch0 down; sleep 3
        say "cable back"; ip -n "$ns" link set switch0 up; sleep 3
        say "phone tethering appears: usbdemo0 with its own default route"
        ip -n "$ns" link add usbdemo0 index 5003 type veth peer name phone0 index 5004
        ip -n "$ns" link set phone0 up; ip -n "$ns" link set usbdemo0 up
        ip -n "$ns" addr add 198.51.100.2/24 dev usbdemo0
        ip -n "$ns" route add default via 198.51.100.1 dev usbdemo0 metric 600; sleep 3
        say "segguardctl why:"; "$bin/segguardctl" why --socket "$sock" >&2 || true; sleep 2
        say "tethering off"; ip -n "$ns" link del usbdemo0; sleep 3
        if [ -n "${DEMO_ROUNDS:-}" ] && [ "$round" -ge "$DEMO_ROUNDS" ]; then
            say "done after $round round(s)"; kill -TERM "$daemon"; return
        fi
    done
}

"$bin/segguardd" --policy Config/demo-veth.yaml --netns "/run/netns/$ns" --socket "$sock" &
daemon=$!
play &
scenario=$!
wait "$daemon" || true
