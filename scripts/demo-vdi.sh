#!/usr/bin/env bash
# A day at the counter with real programs (root): the My Number VDI is a real RDP server
# (FreeRDP's shadow server sharing an Xvfb desktop) in a gateway network namespace; the thin
# client is a second namespace with its own Xvfb display, segguardd, a collector on SQLite, and
# segguard-launch starting the real xfreerdp with the mynumber profile. The scenario:
#   1. the session: launched as uid 1000, the profile's arguments in force, the RDP session up;
#   2. scrot, maim, xwd, ffmpeg (x11grab), import and gnome-screenshot each refused at exec, no
#      image written, each an event at segguardd and at the collector;
#   3. the cable is out for a second: gateway blocked, the session kept (same RDP connection);
#   4. a second uplink (a phone tether) appears: gateway traffic dropped at once, the client
#      ended after the grace, the termination at the collector;
#   5. the tether goes: a new launch works; the LGWAN profile never reaches the My Number
#      gateway (not a session) and reaches the LGWAN server, also with the tether.
# Every step is checked; the script exits 1 if any check failed. Screenshots of the thin
# client's display, taken from outside its session by this script, go to out/demo-vdi/.
# Usage: scripts/demo-vdi.sh [--check]   (--check: no pauses, for CI; scripts/test.sh runs it)
# The capture tools are marked the way the tests mark things: segguardd watches a tmpfs this
# script owns, bind-mounted over each tool's real path in a private mount namespace (byte
# copies of the installed tools, at their installed paths); the host's / is never marked, and
# with `capture.scope: sessions` the process watcher acts only while the demo's session runs.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo-vdi.sh needs root (network and mount namespaces, nftables, fanotify, cgroups)" >&2; exit 1; }
pause=2
[ "${1:-}" = "--check" ] && pause=0
[ $# -le 1 ] && { [ $# -eq 0 ] || [ "$1" = "--check" ]; } || { echo "usage: scripts/demo-vdi.sh [--check]" >&2; exit 2; }

scripts/install-deps.sh --vdi >/dev/null   # installs only what is missing
for tool in openssl Xvfb xfreerdp freerdp-shadow-cli xclock xwininfo scrot maim xwd ffmpeg import gnome-screenshot convert curl setpriv nsenter unshare python3; do
    command -v "$tool" >/dev/null || { echo "demo-vdi.sh: $tool is missing: scripts/install-deps.sh --vdi" >&2; exit 1; }
done
if [ -z "${SEGGUARD_BIN_DIR:-}" ]; then
    echo "building segguardd, segguardctl, segguard-launch, segguard-collector (the first build takes 10 to 15 minutes)"
    for p in segguardd segguardctl segguard-launch segguard-collector; do swift build --product "$p" >/dev/null 2>&1 || swift build --product "$p"; done
fi
bin="${SEGGUARD_BIN_DIR:-$(swift build --show-bin-path)}"
out="out/demo-vdi"
mkdir -p "$out"
rm -f "$out"/*.png

tag="$$"
tc="sgvdi-tc-$tag"          # the thin client's network namespace
gw="sgvdi-gw-$tag"          # the VDI side (and the switch and the phone)
run="$(mktemp -d /tmp/segguard-vdi.XXXXXX)"
chmod 0755 "$run"
# Three X displays nobody uses (no lock file, no socket), from 60 up.
free_display() {
    local n=$1
    while [ -e "/tmp/.X$n-lock" ] || [ -e "/tmp/.X11-unix/X$n" ]; do n=$((n + 1)); done
    echo "$n"
}
vdisplay=$(free_display 60); ldisplay=$(free_display $((vdisplay + 1))); cdisplay=$(free_display $((ldisplay + 1)))
cgroup_root="$(awk '$3 == "cgroup2" {print $2; exit}' /proc/self/mounts)"
[ -n "$cgroup_root" ] || { echo "demo-vdi.sh: no cgroup2 mount" >&2; exit 1; }
cgroup="$cgroup_root/segguard-vdi-$tag"
user=1000
pids=()
failed=0

cleanup() {
    set +e
    if [ -d "$cgroup" ]; then
        for s in "$cgroup"/session-*; do [ -d "$s" ] && echo 1 > "$s/cgroup.kill"; done
    fi
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.5
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
    for s in "$cgroup"/*/; do [ -d "$s" ] && rmdir "$s"; done 2>/dev/null
    rmdir "$cgroup" 2>/dev/null
    ip netns del "$tc" 2>/dev/null
    ip netns del "$gw" 2>/dev/null
    rm -f "/tmp/.X11-unix/X$vdisplay" "/tmp/.X11-unix/X$ldisplay" "/tmp/.X11-unix/X$cdisplay" "/tmp/.X$vdisplay-lock" "/tmp/.X$ldisplay-lock" "/tmp/.X$cdisplay-lock"
    [ -n "${SEGGUARD_VDI_KEEP:-}" ] || rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; sleep "$pause"; }
ok() { printf '  \033[32mok\033[0m   %s\n' "$1"; }
bad() { printf '  \033[31mFAIL\033[0m %s\n' "$1"; failed=$((failed + 1)); }
check() {  # check "what" command...
    local what="$1"; shift
    if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi
}
wait_for() {  # wait_for SECONDS command...: until it succeeds
    local end=$(( $(date +%s%N) + $1 * 1000000000 )); shift
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s%N)" -lt "$end" ] || return 1
        sleep 0.1
    done
}
bg() { "$@" & pids+=($!); disown; }
not() { ! "$@"; }

# ---------------------------------------------------------------------------------------------
step "The VDI side: two RDP servers (FreeRDP shadow servers) in namespace $gw"
ip netns add "$tc"; ip -n "$tc" link set lo up
ip netns add "$gw"; ip -n "$gw" link set lo up
# The office port (cable): sgo0 on the thin client, its switch port gwo0.
ip -n "$tc" link add sgo0 index 7101 type veth peer name gwo0 index 7102 netns "$gw"
ip -n "$tc" addr add 10.66.1.2/24 dev sgo0
ip -n "$gw" addr add 10.66.1.1/24 dev gwo0
ip -n "$gw" addr add 10.66.9.1/32 dev lo     # the My Number VDI
ip -n "$gw" addr add 10.66.8.1/32 dev lo     # an LGWAN VDI
ip -n "$tc" link set sgo0 up; ip -n "$gw" link set gwo0 up
ip -n "$tc" route add default via 10.66.1.1 dev sgo0
bg Xvfb ":$vdisplay" -screen 0 1024x768x24 -nolisten tcp
bg Xvfb ":$ldisplay" -screen 0 1024x768x24 -nolisten tcp
bg Xvfb ":$cdisplay" -screen 0 1280x800x24 -nolisten tcp -ac   # the thin client's display (any local user)
wait_for 10 test -S "/tmp/.X11-unix/X$cdisplay" -a -S "/tmp/.X11-unix/X$vdisplay" -a -S "/tmp/.X11-unix/X$ldisplay" \
    || { echo "demo-vdi.sh: Xvfb did not start on :$vdisplay, :$ldisplay, :$cdisplay" >&2; exit 1; }
bg env DISPLAY=":$vdisplay" xclock -geometry 500x500+250+120 -update 1          # the My Number desktop: an analog clock
bg env DISPLAY=":$ldisplay" xclock -digital -geometry 400x60+300+300 -update 1  # the LGWAN desktop: a digital one
mkdir -p "$run/vdi-home" "$run/lgwan-home"
vdi_server() { bg ip netns exec "$gw" env HOME="$run/vdi-home" DISPLAY=":$vdisplay" freerdp-shadow-cli /bind-address:10.66.9.1 /port:3389 -auth >> "$run/vdi-server.log" 2>&1; vdi_pid=${pids[-1]}; }
vdi_server
bg ip netns exec "$gw" env HOME="$run/lgwan-home" DISPLAY=":$ldisplay" freerdp-shadow-cli /bind-address:10.66.8.1 /port:3389 -auth > "$run/lgwan-server.log" 2>&1
listening() { ip netns exec "$gw" ss -Hltn "src $1 and sport = :3389" | grep -q LISTEN; }
check "the My Number VDI listens on 10.66.9.1:3389" wait_for 20 listening 10.66.9.1
check "the LGWAN VDI listens on 10.66.8.1:3389" wait_for 20 listening 10.66.8.1
# The profile pins the My Number server's certificate and refuses any other without asking
# (xfreerdp's /cert:deny,fingerprint:…): /cert:tofu accepts whatever answers the first
# connection, even for another name, and a pin alone still asks the user about another
# certificate "(Y/T/N)" (both seen with xfreerdp 2.11).
fingerprint() { openssl x509 -in "$1/.config/freerdp/shadow/shadow.crt" -noout -fingerprint -sha256 | sed 's/.*=//' | tr 'A-F' 'a-f'; }
pin="/cert:deny,fingerprint:sha256:$(fingerprint "$run/vdi-home")"
lgwan_pin="/cert:deny,fingerprint:sha256:$(fingerprint "$run/lgwan-home")"
echo "  My Number server certificate: ${pin#/cert:deny,fingerprint:}"

# ---------------------------------------------------------------------------------------------
step "The thin client: namespace $tc, display :$cdisplay, a collector (SQLite), segguardd"
# The collector and its test PKI (the device certificate's CN is the agent id, OU its group).
"$bin/segguardctl" pki init-ca --dir "$run/pki" >/dev/null
"$bin/segguardctl" pki issue-server --dir "$run/pki" --name localhost --ip 127.0.0.1 >/dev/null
"$bin/segguardctl" pki issue-device --dir "$run/pki" --id tc-counter-01 --group mynumber >/dev/null
head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$run/admin-token"; chmod 0600 "$run/admin-token"
bg ip netns exec "$tc" "$bin/segguard-collector" --listen 127.0.0.1:8443 --store "sqlite:$run/collector.sqlite" --cert "$run/pki/server.pem" \
    --key "$run/pki/server.key" --client-ca "$run/pki/ca.pem" --admin-token-file "$run/admin-token" > "$run/collector.log" 2>&1
api() { ip netns exec "$tc" curl -sf --cacert "$run/pki/ca.pem" -H "Authorization: Bearer $(cat "$run/admin-token")" "https://127.0.0.1:8443$1"; }
check "the collector answers" wait_for 30 api /healthz

# The capture tools, at their installed paths, as files of a tmpfs this script owns (in a
# private mount namespace held by a sleeping process; segguardd and the user run inside it).
bg unshare --mount --propagation private sleep infinity
holder=$!
own_mounts() { [ "$(readlink "/proc/$holder/ns/mnt")" != "$(readlink /proc/$$/ns/mnt)" ]; }
wait_for 5 own_mounts || { echo "demo-vdi.sh: no private mount namespace (unshare)" >&2; exit 1; }
inmnt() { nsenter --mount="/proc/$holder/ns/mnt" "$@"; }
tools="$run/tools"
mkdir -p "$tools"
inmnt mount -t tmpfs -o size=256m,mode=0755 segguard-vdi-tools "$tools"
declare -A real=()
for t in scrot maim xwd ffmpeg import gnome-screenshot; do
    real[$t]="$(readlink -f "$(command -v "$t")")"
    inmnt cp -p "${real[$t]}" "$tools/$(basename "${real[$t]}")"
    inmnt mount --bind "$tools/$(basename "${real[$t]}")" "${real[$t]}"
done
echo "  the tools run from: ${real[*]}"
copies_in_place() {
    local t
    for t in "${!real[@]}"; do
        inmnt stat -f -c %T "${real[$t]}" | grep -qx tmpfs || return 1                  # the copy is what runs there
        stat -f -c %T "${real[$t]}" | grep -qvx tmpfs || return 1                        # the host's own is untouched
        cmp -s "/proc/$holder/root${real[$t]}" "${real[$t]}" || return 1                # and byte for byte the installed tool
    done
}
check "in the client's mount namespace each tool's installed path is its copy on the tmpfs (same bytes)" copies_in_place

cat > "$run/policy.yaml" <<EOF
schema_version: 1
name: "demo-vdi: counter"
sites:
  - name: city-hall
    wired:
      - interfaces: ["sgo*"]
        link_kinds: [veth]
        identity: interface-only   # the lab's office port (no gateway check)
uplinks:
  other_uplinks: deny
vdi:
  gateways:
    - address: 10.66.9.1
      ports: [3389]
      protocol: tcp
enforcement:
  launch_gate: enforce
  session_termination: enforce
  network_binding: enforce
  grace_seconds: 8
  kill_timeout_seconds: 2
  bind_to_sessions: true
report:
  heartbeat_seconds: 5
helpdesk:
  name: "情報政策課 ヘルプデスク"
  contact: "内線 2345"
profiles:
  - name: mynumber
    segment: mynumber
    command: ["/usr/bin/xfreerdp", "/v:10.66.9.1:3389", "$pin"]
    enforce_arguments: ["-clipboard", "-drives", "-home-drive"]
    options: {clipboard: false, drives: false, printing: false, screen_capture: false}
    capture: blocklist
  # The same gateway address, pinned to another certificate: what the client does when the
  # server it reaches is not the one pinned (a man in the middle on the office network).
  - name: mynumber-elsewhere
    segment: mynumber
    command: ["/usr/bin/xfreerdp", "/v:10.66.9.1:3389", "$lgwan_pin"]
    enforce_arguments: ["-clipboard", "-drives", "-home-drive"]
  - name: lgwan
    segment: lgwan
capture:
  mode: enforce
  scope: sessions            # only while a My Number session runs (the demo leaves the host's tools alone otherwise)
  watch: ["$tools"]
  block:
    names: [scrot, maim, xwd, ffmpeg, import, import-im6.q16, import-im6.q16hdri, magick, gnome-screenshot]
EOF
"$bin/segguardctl" check-policy "$run/policy.yaml" | sed 's/^/  /'
sock="$run/control.sock"
inmnt_bg() { bg nsenter --mount="/proc/$holder/ns/mnt" "$@"; }
inmnt_bg "$bin/segguardd" --netns "/run/netns/$tc" --policy "$run/policy.yaml" --socket "$sock" --session-cgroup "$cgroup" \
    --baseline-file "$run/state/baseline.nft" --launcher-path "$bin/segguard-launch" --spool "$run/spool.sqlite" --bundle-dir "$run/state" \
    --collector https://127.0.0.1:8443 --collector-ca "$run/pki/ca.pem" --client-cert "$run/pki/devices/tc-counter-01.pem" \
    --client-key "$run/pki/devices/tc-counter-01.key" > "$run/segguardd.log" 2>&1
daemon=$!
ctl() { "$bin/segguardctl" "$@" --socket "$sock"; }
status_says() { ctl status 2>/dev/null | grep -Eq "$1"; }
check "segguardd decides authorized-wired via the office port" wait_for 20 status_says 'authorized-wired'
check "... and reports to the collector (heartbeats ok)" wait_for 30 status_says '[1-9][0-9]* heartbeats ok'


# The clerk: uid 1000, a home of their own, the thin client's display, Japanese locale.
home="$run/home"; mkdir -p "$home"; chown "$user:$user" "$home"
shots="$run/shots"; mkdir -p "$shots"; chown "$user:$user" "$shots"
as_user() {  # in the client's network and mount namespaces, as the clerk, on their display
    nsenter --mount="/proc/$holder/ns/mnt" --net="/run/netns/$tc" setpriv --reuid="$user" --regid="$user" --clear-groups \
        env -i HOME="$home" DISPLAY=":$cdisplay" LANG=ja_JP.UTF-8 PATH=/usr/bin:/bin "$@"
}
# The same in the background, its pid the program's own (every step execs): cleanup ends it.
as_user_bg() { ( exec nsenter --mount="/proc/$holder/ns/mnt" --net="/run/netns/$tc" setpriv --reuid="$user" --regid="$user" --clear-groups \
    env -i HOME="$home" DISPLAY=":$cdisplay" LANG=ja_JP.UTF-8 PATH=/usr/bin:/bin "$@" ) & pids+=($!); disown; }
# The harness's own view of the display, as root from outside the client's namespaces, with
# ImageMagick's convert (x:root): the demo's list names import, not convert (a general tool:
# see docs/threat-model.md, "any X client can read the screen"). Prints the mean grey level.
screenshot() {
    DISPLAY=":$cdisplay" convert x:root "$out/$1.png" 2>/dev/null && convert "$out/$1.png" -colorspace gray -format '%[fx:mean]' info: || echo "-1"
}
# shows NAME MIN MAX: the screenshot NAME's mean grey is within [MIN, MAX) (a failed one is -1).
shows() { local m; m="$(screenshot "$1")"; python3 -c "import sys; sys.exit(0 if $2 <= float('$m') < $3 else 1)"; }
# xfreerdp's window is named "FreeRDP: HOST" (":PORT" only when not 3389).
rdp_window() { DISPLAY=":$cdisplay" xwininfo -root -tree | grep -q "\"FreeRDP: $1\""; }
# No such window, the display itself answering.
no_rdp_window() { local tree; tree="$(DISPLAY=":$cdisplay" xwininfo -root -tree)" || return 1; ! grep -q "\"FreeRDP: $1\"" <<< "$tree"; }

# ---------------------------------------------------------------------------------------------
step "1. segguard-launch --profile mynumber starts xfreerdp; the RDP session comes up"
launch_mynumber() { as_user_bg "$bin/segguard-launch" --socket "$sock" --profile mynumber --no-notify > "$run/launch-$1.log" 2>&1; }
launch_mynumber 1
session_pid=""
has_session() { ctl sessions 2>/dev/null | grep -q '^session .* pid '; }
no_session() { ctl sessions 2>/dev/null | grep -qx 'no tracked sessions'; }
wait_for 20 has_session || true
session_pid="$(ctl sessions 2>/dev/null | sed -n 's/^session .* pid \([0-9]*\) .*/\1/p' | head -1)"
check "a tracked My Number session (pid ${session_pid:-none})" test -n "$session_pid"
cmdline="$(tr '\0' ' ' < "/proc/${session_pid:-0}/cmdline" 2>/dev/null || true)"
echo "  /proc/${session_pid:-?}/cmdline: $cmdline"
check "the session's process is xfreerdp with the profile's server and enforced arguments" \
    grep -qF "/usr/bin/xfreerdp /v:10.66.9.1:3389 $pin -clipboard -drives -home-drive" <<< "$cmdline"
check "... running as the clerk (uid $user)" awk -v u="$user" '/^Uid:/ {exit $2 != u}' "/proc/${session_pid:-0}/status"
rdp_peer() { ip netns exec "$gw" ss -Htn state established "( sport = :3389 )" | grep -q "$1"; }
check "the RDP connection is established from the office port (10.66.1.2 -> 10.66.9.1:3389)" wait_for 30 rdp_peer '10.66.9.1:3389 *10.66.1.2:'

check "the RDP window is on the clerk's display" wait_for 30 rdp_window 10.66.9.1
check "the display shows the remote desktop (not an empty black screen)" wait_for 20 shows 1-session 0.05 1.01
echo "  screenshot (harness, outside the session): $out/1-session.png, mean grey $(screenshot 1-session)"
# The clerk answers "Y" to whatever the client asks: a server whose certificate is not the
# pinned one is refused without a question, and no second window appears.
set +e
printf 'Y\nY\n' | as_user timeout 30 "$bin/segguard-launch" --socket "$sock" --profile mynumber-elsewhere --no-notify > "$run/elsewhere.log" 2>&1
rc=$?
set -e
echo "  a server with another certificate: exit $rc, $(grep -Eo 'automatically denying|ERRCONNECT_[A-Z_]+' "$run/elsewhere.log" | head -2 | tr '\n' ' ')"
check "a server with another certificate is refused without asking (exit $rc)" sh -c "[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q 'automatically denying' '$run/elsewhere.log' && ! grep -q 'Do you trust' '$run/elsewhere.log'"

# ---------------------------------------------------------------------------------------------
step "2. While the session runs, the capture tools are refused at exec"
declare -A argv=(
    [scrot]="scrot $shots/scrot.png"
    [maim]="maim $shots/maim.png"
    [xwd]="xwd -root -out $shots/xwd.xwd"
    [ffmpeg]="ffmpeg -loglevel error -f x11grab -video_size 320x240 -i :$cdisplay -frames:v 1 $shots/ffmpeg.png"
    [import]="import -window root $shots/import.png"
    [gnome-screenshot]="gnome-screenshot -f $shots/gnome-screenshot.png"
)
for t in scrot maim xwd ffmpeg import gnome-screenshot; do
    set +e
    msg="$(as_user timeout 20 ${argv[$t]} 2>&1)"; rc=$?
    set -e
    echo "  \$ ${argv[$t]}  -> exit $rc: $(echo "$msg" | head -1)"
    if [ "$rc" -eq 126 ] && grep -q "failed to run command .*: Operation not permitted" <<< "$msg"; then ok "$t refused at exec (${real[$t]})"; else bad "$t refused at exec (${real[$t]})"; fi
done
check "no tool wrote an image file" test -z "$(ls -A "$shots")"
denied="$(ctl why-denied 2>/dev/null || true)"
for t in scrot maim xwd ffmpeg import gnome-screenshot; do
    check "segguardd's why-denied names ${real[$t]}" grep -q "${real[$t]}" <<< "$denied"
done
# Every string in the collector's events for this agent, one per line (JSON escapes '/').
events() {
    api "/api/v1/admin/events?agent=tc-counter-01&limit=1000" | python3 -c '
import json, sys
def walk(v):
    if isinstance(v, dict): [walk(x) for x in v.values()]
    elif isinstance(v, list): [walk(x) for x in v]
    elif isinstance(v, str): print(v.replace("\n", " "))
walk(json.load(sys.stdin))'
}
collector_has() { events | grep -qF -- "$1"; }
check "the collector has exec-denied events" wait_for 30 collector_has 'exec-denied'
for t in scrot maim xwd ffmpeg import gnome-screenshot; do
    check "... one of them names ${real[$t]}" wait_for 30 collector_has "${real[$t]}"
done


# ---------------------------------------------------------------------------------------------
step "3. The cable is out for 1 s (a roam, a re-plug): gateway blocked, the session kept"
rdp_conn() { ip netns exec "$gw" ss -Htn state established "( sport = :3389 )" | awk '$3 ~ /^10\.66\.9\.1:/ {print $4}' | sort | head -1; }
before="$(rdp_conn)"
ip -n "$gw" link set gwo0 down
check "segguardd: unauthorized while the cable is out" wait_for 5 status_says 'unauthorized'
sleep 1
ip -n "$gw" link set gwo0 up
check "segguardd: authorized-wired again within the grace" wait_for 5 status_says 'authorized-wired'
sleep 9   # past the grace (8 s)
check "the client is still running after the grace" test -d "/proc/${session_pid:-0}"
after="$(rdp_conn)"
echo "  RDP connection (client side) before: ${before:-none}, after: ${after:-none}"
check "... on the same RDP connection (xfreerdp rode out the 1 s of dropped packets)" test -n "$before" -a "$before" = "$after"
check "... and its window is still up" rdp_window 10.66.9.1

# ---------------------------------------------------------------------------------------------
step "4. A phone tether appears (a second uplink): gateway blocked at once, the client ended after the grace"
# connect.py: exit 0 connected, 3 no answer within 1 s (the table drops), 2 anything else.
cat > "$run/connect.py" <<'PY'
import socket, sys
try:
    socket.create_connection(("10.66.9.1", 3389), timeout=1)
except socket.timeout:
    sys.exit(3)
except OSError as e:
    print(e, file=sys.stderr)
    sys.exit(2)
PY
probe() {  # probe [outside]: a connection to the My Number gateway from the sessions' cgroup (or from outside every session)
    mkdir -p "$cgroup/probe"
    if [ "${1:-}" = outside ]; then
        ip netns exec "$tc" python3 "$run/connect.py"
    else
        nsenter --net="/run/netns/$tc" sh -c "echo \$\$ > '$cgroup/probe/cgroup.procs' && exec python3 '$run/connect.py'"
    fi
}
dropped() { local rc=0; probe "$@" 2>/dev/null || rc=$?; [ "$rc" = 3 ]; }
check "before: the gateway is reachable from the sessions' cgroup" probe
check "before: a process outside every session gets no answer from it (bound to sessions)" dropped outside
ip -n "$tc" link add usbvdi0 index 7103 type veth peer name phone0 index 7104 netns "$gw"
ip -n "$gw" addr add 198.51.100.1/24 dev phone0; ip -n "$gw" link set phone0 up
ip -n "$tc" addr add 198.51.100.2/24 dev usbvdi0; ip -n "$tc" link set usbvdi0 up
ip -n "$tc" route add default via 198.51.100.1 dev usbvdi0 metric 600
tether_at=$(date +%s%N)
check "segguardd: unauthorized (a second uplink)" wait_for 5 status_says 'unauthorized'
check "... the client is still there, in the grace" test -n "$session_pid" -a -d "/proc/${session_pid:-0}"
check "the gateway gets no answer at once (while the client still runs, in the grace)" dropped
check "the client is gone after the grace (8 s)" wait_for 20 not test -d "/proc/${session_pid:-0}"
echo "  ended $(( ($(date +%s%N) - tether_at) / 1000000 )) ms after the tether appeared"
check "its window is gone" wait_for 10 no_rdp_window 10.66.9.1
check "the display is empty (black) after the session ended" shows 3-ended 0 0.01
echo "  screenshot: $out/3-ended.png, mean grey $(screenshot 3-ended)"
set +e
as_user "$bin/segguard-launch" --socket "$sock" --profile mynumber --no-notify > "$run/refused.log" 2>&1; rc=$?
set -e
sed 's/^/  | /' "$run/refused.log" | head -4
check "a launch is refused now (exit 1), in Japanese, with the help desk" sh -c "[ $rc = 1 ] && grep -q '仮想デスクトップを開始できません' '$run/refused.log' && grep -q 'お問い合わせ: 情報政策課 ヘルプデスク（内線 2345）' '$run/refused.log'"
check "the collector has the session's end (sessions-ended)" wait_for 30 collector_has 'sessions-ended'
check "xfreerdp did not come back on its own (no session, no window)" sh -c "'$bin/segguardctl' sessions --socket '$sock' | grep -qx 'no tracked sessions'"
check "... no window either" no_rdp_window 10.66.9.1

# ---------------------------------------------------------------------------------------------
step "5. The tether goes: a new launch works; the LGWAN profile reaches the LGWAN server, never the My Number gateway"
ip -n "$tc" link del usbvdi0
check "segguardd: authorized-wired again" wait_for 10 status_says 'authorized-wired'
sleep 2
check "no client reconnected by itself in the meantime" no_session
# The server still holds the ended client's connection, half-open: the client's reset is a
# packet to the gateway that no session's socket sends, dropped like every other. The shadow
# server serves one desktop to all its clients and stalls on it until its own timeout (a real
# VDI server keeps that session as disconnected): the demo starts it again.
held="$(rdp_conn)"
echo "  the server's side of the ended connection: ${held:-gone}"
if [ -n "$held" ]; then
    kill "$vdi_pid"; wait_for 10 not listening 10.66.9.1 || kill -9 "$vdi_pid"
    vdi_server
    check "the test server started again (same certificate)" wait_for 20 listening 10.66.9.1
fi
launch_mynumber 2
check "a new My Number session" wait_for 20 has_session
check "... and its RDP window" wait_for 30 rdp_window 10.66.9.1
check "the display shows the remote desktop again" wait_for 20 shows 4-relaunched 0.05 1.01
# End it (as the clerk would: close the client).
for p in $(ctl sessions 2>/dev/null | sed -n 's/^session .* pid \([0-9]*\) .*/\1/p'); do kill "$p" 2>/dev/null || true; done
wait_for 10 no_session || true
# On the office network, the LGWAN profile pointed at the My Number gateway: not a session, so
# the table drops it (bind_to_sessions) and segguardd reports the clerk's attempt.
set +e
as_user timeout 40 "$bin/segguard-launch" --socket "$sock" --profile lgwan --no-notify -- /usr/bin/xfreerdp /v:10.66.9.1:3389 "$pin" > "$run/lgwan-to-mynumber.log" 2>&1
rc=$?
set -e
echo "  LGWAN profile -> the My Number gateway: exit $rc, $(grep -Eo 'ERRCONNECT_[A-Z_]+' "$run/lgwan-to-mynumber.log" | head -1)"
check "the LGWAN profile cannot reach the My Number gateway (the table lets only sessions through)" \
    sh -c "[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q 'ERRCONNECT_CONNECT_FAILED' '$run/lgwan-to-mynumber.log' && ! grep -q 'segguard-launch: refused' '$run/lgwan-to-mynumber.log'"
check "... no window for it" no_rdp_window 10.66.9.1
denied_has() { ctl why-denied 2>/dev/null | grep -q "$1"; }
check "... segguardd reported the clerk's refused connection (gateway-refused, uid $user)" wait_for 10 denied_has "a process of uid $user sent to 10.66.9.1 tcp/3389"
check "... at the collector too" wait_for 30 collector_has "a process of uid $user sent to 10.66.9.1 tcp/3389"
# With a tether beside the office network the LGWAN profile still starts (LGWAN is allowed anywhere).
ip -n "$tc" link add usbvdi0 index 7105 type veth peer name phone1 index 7106 netns "$gw"
ip -n "$gw" addr add 198.51.100.1/24 dev phone1; ip -n "$gw" link set phone1 up
ip -n "$tc" addr add 198.51.100.2/24 dev usbvdi0; ip -n "$tc" link set usbvdi0 up
ip -n "$tc" route add default via 198.51.100.1 dev usbvdi0 metric 600
check "segguardd: unauthorized (the tether again)" wait_for 5 status_says 'unauthorized'
as_user_bg "$bin/segguard-launch" --socket "$sock" --profile lgwan --no-notify -- /usr/bin/xfreerdp /v:10.66.8.1:3389 "$lgwan_pin" > "$run/lgwan.log" 2>&1
check "the LGWAN profile starts xfreerdp to the LGWAN server (off the My Number segment too)" wait_for 30 rdp_window 10.66.8.1
check "... not a My Number session (not tracked)" no_session
check "the display shows the LGWAN desktop (a small window: a digital clock)" wait_for 20 shows 5-lgwan 0.01 1.01

echo
if [ "$failed" -eq 0 ]; then
    printf '\033[32mdemo-vdi: every check passed\033[0m (screenshots in %s)\n' "$out"
else
    printf '\033[31mdemo-vdi: %d check(s) failed\033[0m (logs: %s; SEGGUARD_VDI_KEEP=1 keeps them)\n' "$failed" "$run"
    for f in segguardd.log collector.log vdi-server.log launch-1.log; do echo "---- $f"; tail -15 "$run/$f" 2>/dev/null; done
    exit 1
fi
