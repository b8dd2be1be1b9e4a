#!/usr/bin/env bash
# Install-and-boot test under a real systemd: builds the agent .deb, installs it with dpkg in
# a minimal Debian 12 root (debootstrap, cached under /var/cache/segguard-test so reruns skip
# it), boots the root with systemd-nspawn (systemd as PID 1) and drives it with nsenter.
# Needs root, debootstrap and systemd-container. Prints one line per check and
# "N passed, N failed" at the end; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "test-install-boot.sh needs root" >&2; exit 2; }

cache=/var/cache/segguard-test/bookworm-minbase-man-yaml
work="$(mktemp -d /var/tmp/segguard-boot.XXXXXX)"
machine="sgboot-$$"
nspawn_pid=""
passed=0; failed=0
check() {  # check "what" command...
    local what="$1"; shift
    if "$@" >/dev/null 2>&1; then echo "ok   $what"; passed=$((passed + 1)); else echo "FAIL $what"; failed=$((failed + 1)); fi
}
cleanup() {
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        kill -TERM "$nspawn_pid" 2>/dev/null; sleep 2; kill -KILL "$nspawn_pid" 2>/dev/null
    fi
    wait 2>/dev/null
    rm -rf "$work"
}
[ -n "${KEEP:-}" ] || trap cleanup EXIT

# 1. The minimal root (mirror taken from this machine's own apt sources). Built once into a
#    private temporary directory and renamed into place under a lock, so concurrent runs
#    neither collide nor build it twice.
mkdir -p "$(dirname "$cache")"
exec 9>"$(dirname "$cache")/.lock"
flock 9
if [ ! -x "$cache/usr/lib/systemd/systemd" ]; then
    mirror="$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null)"
    [ -n "$mirror" ] || mirror="$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)"
    tmp="$(mktemp -d "$cache.tmp.XXXXXX")"
    if ! debootstrap --variant=minbase \
        --include=systemd,systemd-sysv,dbus,libnl-3-200,libnl-genl-3-200,libnl-route-3-200,libnftables1,libyaml-0-2,nftables,libstdc++6,iproute2,man-db \
        bookworm "$tmp" "$mirror" >"$work/debootstrap.log" 2>&1; then
        tail -20 "$work/debootstrap.log"; umount -R "$tmp/proc" "$tmp/sys" 2>/dev/null; rm -rf "$tmp"; exit 1
    fi
    rm -rf "$cache"
    mv "$tmp" "$cache"
fi
flock -u 9
root="$work/root"
cp -a "$cache" "$root"
# mktemp made the cached root 0700: as "/" of the container it would shut out every
# non-root service user (the collector runs as segguard-collector).
chmod 0755 "$root"
echo "$machine" > "$root/etc/hostname"

# 2. The package, installed with dpkg inside the root (no systemd running yet: enable only).
# SEGGUARD_DEB_CONFIG=prebuilt (CI): the binaries need the toolchain's Swift runtime, which
# every container below gets read-only at the same path (their RUNPATH).
rt_bind=()
if [ "${SEGGUARD_DEB_CONFIG:-release}" = prebuilt ]; then
    rt="$(readelf -d "$(swift build --show-bin-path)/segguardd" | sed -n 's/.*runpath: \[\([^:]*\).*/\1/p')"
    [ -d "$rt" ] && rt_bind=("--bind-ro=$rt")
    echo "     (prebuilt binaries; Swift runtime ${rt:-?} mounted read-only into the container)"
fi
debs="$(Packaging/build-deb.sh "$work/out")"
deb="$(echo "$debs" | tail -1)"
cdeb="$(echo "$debs" | grep segment-guard-collector_ | tail -1)"
check "the .deb builds ($(basename "$deb"))" test -f "$deb"
check "the collector .deb builds ($(basename "$cdeb"))" test -f "$cdeb"
check "dpkg-deb --info reads it" dpkg-deb --info "$deb"
if command -v lintian >/dev/null; then
    # Errors and warnings fail the check (overrides: Packaging/debian/*.lintian-overrides). Prebuilt test
    # binaries carry the toolchain's RUNPATH, which release builds (static runtime) do not.
    suppress=""
    [ "${SEGGUARD_DEB_CONFIG:-release}" = prebuilt ] && suppress="--suppress-tags custom-library-search-path"
    lint="$(lintian --tag-display-limit 0 $suppress "$deb" "$cdeb" 2>&1 | grep -v 'running with root privileges')"
    check "lintian reports no errors and no warnings for either package (beyond the documented overrides)" sh -c "! echo '$lint' | grep -qE '^(E|W):'"
    echo "$lint" | grep -E '^[EW]:' | sed 's/^/     | /'
else
    echo "     (lintian not installed: skipped)"
fi
cp "$deb" "$root/var/tmp/agent.deb"
cp "$cdeb" "$root/var/tmp/collector.deb"
check "dpkg -i installs it in the root" systemd-nspawn -q -D "$root" "${rt_bind[@]}" --register=no --keep-unit -- dpkg -i /var/tmp/agent.deb
check "dpkg -i installs the collector in the root" systemd-nspawn -q -D "$root" "${rt_bind[@]}" --register=no --keep-unit -- dpkg -i /var/tmp/collector.deb
# The collector on the same machine (its loopback), with a test PKI made by segguardctl pki.
systemd-nspawn -q -D "$root" "${rt_bind[@]}" --register=no --keep-unit -- sh -c '
  set -e
  segguardctl pki init-ca --dir /etc/segguard-collector --name "boot test CA"
  segguardctl pki issue-server --dir /etc/segguard-collector --name localhost --ip 127.0.0.1
  segguardctl pki issue-device --dir /etc/segguard-collector --id boot-agent --group mynumber
  cp /etc/segguard-collector/devices/boot-agent.pem /etc/segguard/device.pem
  cp /etc/segguard-collector/devices/boot-agent.key /etc/segguard/device.key
  cp /etc/segguard-collector/ca.pem /etc/segguard/collector-ca.pem
  chgrp segguard-collector /etc/segguard-collector/server.key /etc/segguard-collector/ca.key && chmod 0640 /etc/segguard-collector/server.key /etc/segguard-collector/ca.key
  echo SEGGUARDD_OPTS=\"--collector https://127.0.0.1:8443 --collector-ca /etc/segguard/collector-ca.pem --client-cert /etc/segguard/device.pem --client-key /etc/segguard/device.key\" > /etc/default/segguardd
  echo SEGGUARD_COLLECTOR_OPTS=\"--cert /etc/segguard-collector/server.pem --key /etc/segguard-collector/server.key --client-ca /etc/segguard-collector/ca.pem --enroll-ca-cert /etc/segguard-collector/ca.pem --enroll-ca-key /etc/segguard-collector/ca.key\" > /etc/default/segguard-collector
' >"$work/pki.log" 2>&1 || { echo "FAIL provisioning the test PKI"; cat "$work/pki.log"; }
check "segguard-collector.service is enabled" test -L "$root/etc/systemd/system/multi-user.target.wants/segguard-collector.service"
check "policy is a conffile" grep -qx /etc/segguard/policy.yaml "$root/var/lib/dpkg/info/segment-guard-agent.conffiles"
check "segguardd.service is enabled" test -L "$root/etc/systemd/system/multi-user.target.wants/segguardd.service"
check "segguardd --version runs in the root" systemd-nspawn -q -D "$root" "${rt_bind[@]}" --register=no --keep-unit -- /usr/sbin/segguardd --version
# A watchdog short enough to test, and a policy the container's own interface satisfies.
mkdir -p "$root/etc/systemd/system/segguardd.service.d"
printf '[Service]\nWatchdogSec=3s\n' > "$root/etc/systemd/system/segguardd.service.d/test.conf"
cat > "$root/etc/segguard/policy.yaml" <<'POLICY'
schema_version: 1
name: boot-test
sites:
  - name: lab
    wired:
      - interfaces: ["host0"]
        link_kinds: [veth]
enforcement: {launch_gate: enforce, session_termination: enforce, network_binding: enforce, grace_seconds: 0}
vdi:
  gateways: [{address: 192.0.2.10, ports: [443]}]
profiles:
  - {name: mynumber, segment: mynumber, command: ["/bin/sleep", "3600"]}
  - {name: strict, segment: mynumber, command: ["/bin/sleep", "3600"], capture: trusted-only}
# Capture blocking on a directory of the container's own /run (a tmpfs of the container's),
# never the host's: every filesystem mounted below a watched path is marked too, and nspawn
# bind-mounts host files under /run/host.
capture:
  watch: ["/run/captest"]
  block: {names: [scrot]}
POLICY

# The container's /usr/bin copied onto a tmpfs of its own before segguardd starts, so that the
# trusted-only check below can watch it (a mark on the root's own filesystem would be the host's).
cat > "$root/etc/systemd/system/sgtest-usrbin.service" <<'UNIT'
[Unit]
Description=test: /usr/bin on a tmpfs of the container's (capture blocking may watch it)
DefaultDependencies=no
After=local-fs.target
Before=segguardd.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'mkdir -p /run/captest && cp -a /usr/bin /run/usrbin.copy && mount -t tmpfs -o mode=0755 sgusrbin /usr/bin && /run/usrbin.copy/cp -a /run/usrbin.copy/. /usr/bin/ && rm -rf /run/usrbin.copy'
[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/sgtest-usrbin.service "$root/etc/systemd/system/multi-user.target.wants/sgtest-usrbin.service"

# 3. Boot it (systemd as PID 1, its own network with a veth host0).
# nspawn's own seccomp filter refuses fanotify_init in containers unless asked (capture blocking).
systemd-nspawn -q -D "$root" "${rt_bind[@]}" --boot --register=no --keep-unit --machine="$machine" --network-veth \
    --system-call-filter="fanotify_init fanotify_mark" \
    >"$work/console.log" 2>&1 &
nspawn_pid=$!
pid1=""
for _ in $(seq 100); do
    for c in $(pgrep -P "$nspawn_pid"); do
        [ "$(cat /proc/$c/comm 2>/dev/null)" = systemd ] && pid1=$c
        for g in $(pgrep -P "$c"); do [ "$(cat /proc/$g/comm 2>/dev/null)" = systemd ] && pid1=$g; done
    done
    [ -n "$pid1" ] && break
    sleep 0.2
done
[ -n "$pid1" ] || { echo "FAIL the container did not boot"; tail -30 "$work/console.log"; exit 1; }
in_ct() { nsenter -t "$pid1" -a -- "$@"; }
for _ in $(seq 150); do
    state="$(in_ct systemctl is-system-running 2>/dev/null)"
    case "$state" in running|degraded) break ;; esac
    sleep 0.2
done
echo "     (container system state: $state)"
# Carrier on host0: bring up the host's end of the container's veth (nothing configures it).
peer_index="$(in_ct cat /sys/class/net/host0/iflink 2>/dev/null)"
host_end="$(ip -o link show | awk -F': ' -v i="$peer_index" '$1 == i { print $2 }' | cut -d@ -f1)"
[ -n "$host_end" ] && ip link set dev "$host_end" up
in_ct ip link set dev host0 up
accepts() { nsenter -t "$pid1" -a -- nft list table inet segguard 2>/dev/null | grep -q 'oifname "host0".* accept'; }
wait_for() { for _ in $(seq 50); do "$@" && return 0; sleep 0.2; done; return 1; }

check "segguardd is active" in_ct systemctl is-active segguardd
verify="$(in_ct systemd-analyze verify segguardd.service segguard-baseline.service segguard-collector.service 2>&1)"
check "systemd-analyze verify is clean for every unit" test -z "$verify"
[ -z "$verify" ] || echo "$verify" | sed 's/^/     | /'
check "it became active through READY (Type=notify)" sh -c "nsenter -t $pid1 -a -- systemctl show -p Type --value segguardd | grep -qx notify"
# Startup order: the first decision (and the table) came before systemd saw READY=1.
active_at="$(in_ct systemctl show -p ActiveEnterTimestampMonotonic --value segguardd)"
decided_at="$(in_ct journalctl -u segguardd -o json --no-pager | grep '"initial segment decision"' | head -1 | sed -n 's/.*"__MONOTONIC_TIMESTAMP":"\([0-9]*\)".*/\1/p')"
echo "     (initial decision at ${decided_at:-?} us, active at ${active_at:-?} us, monotonic)"
# journald stamps entries when it reads them (the decision's entry may be read after PID 1
# handled READY=1), so the order of the entries says it: the decision, then systemd's "Started".
first="$(in_ct journalctl -u segguardd -o cat --no-pager | grep -m1 -E 'initial segment decision|^Started ')"
check "active only after the first decision (READY after the netlink dump: the decision's journal entry comes before systemd's Started)" sh -c "echo '$first' | grep -q 'initial segment decision'"
check "the hardened unit is in force (capability bounding set)" sh -c "nsenter -t $pid1 -a -- systemctl show -p CapabilityBoundingSet --value segguardd | grep -q cap_net_admin"
check "segguard-collector is active (Type=notify, as its own user)" wait_for sh -c "nsenter -t $pid1 -a -- systemctl is-active segguard-collector && nsenter -t $pid1 -a -- systemctl show -p User --value segguard-collector | grep -qx segguard-collector"
reported=""
for _ in $(seq 40); do
    in_ct segguardctl status 2>/dev/null | grep -Eq 'reporting: boot-agent \(group mynumber\) to https://127.0.0.1:8443: [1-9][0-9]* heartbeats ok' && { reported=1; break; }
    sleep 0.5
done
check "the agent reports to the collector (segguardctl status: heartbeats ok)" test -n "$reported"
[ -n "$reported" ] || { in_ct segguardctl status | grep -A1 reporting; in_ct journalctl -u segguard-collector --no-pager | tail -5; } | sed 's/^/     | /'
check "segguardd wrote the boot-time baseline file" test -s "$root/var/lib/segguard/baseline.nft"
status="$(in_ct systemctl show -p StatusText --value segguardd)"
echo "     (StatusText: $status)"
check "STATUS= shows the decision" sh -c "echo '$status' | grep -Eq '^(authorized-wired via host0|unauthorized: )'"
check "authorized via host0: the table lets the gateway out through host0 only" wait_for accepts
# Bound to sessions: the sessions' parent is in the service's delegated subtree, and the
# accept names it; a launched client is in a session cgroup under it; a restart keeps it.
journal() { nsenter -t "$pid1" -a -- journalctl -u segguardd -o cat --no-pager; }
check "session cgroups are in the service's delegated subtree (Delegate=yes)" sh -c "nsenter -t $pid1 -a -- journalctl -u segguardd -o cat --no-pager | grep -q 'VDI sessions are cgroups under /sys/fs/cgroup/.*segguardd.service/sessions'"
check "the accept rule is bound to them (socket cgroupv2 level …/segguardd.service/sessions)" sh -c "nsenter -t $pid1 -a -- nft list table inet segguard | grep -q 'socket cgroupv2 level [0-9]* \".*segguardd.service/sessions\" counter.* accept'"
[ "$failed" = 0 ] || { journal | grep -E 'VDI sessions|cannot be named' | tail -3; in_ct nft list table inet segguard | grep accept; } | sed 's/^/     | /'
in_ct segguard-launch --no-notify --profile mynumber >/dev/null 2>&1 &
session_pid=""
for _ in $(seq 50); do
    session_pid="$(in_ct segguardctl sessions 2>/dev/null | sed -n 's/^session .* pid \([0-9]*\) .*/\1/p' | head -1)"
    [ -n "$session_pid" ] && break
    sleep 0.2
done
check "a launched client is a tracked session" test -n "$session_pid"
check "... in a session cgroup under the delegated subtree" sh -c "nsenter -t $pid1 -a -- cat /proc/${session_pid:-0}/cgroup | grep -q '^0::/.*segguardd.service/sessions/session-'"
in_ct systemctl restart segguardd
check "a restart of segguardd does not end the session (KillMode=process)" in_ct test -d "/proc/${session_pid:-0}"
check "... and the new run adopts it" wait_for sh -c "nsenter -t $pid1 -a -- segguardctl sessions | grep -q 'pid ${session_pid:-0} '"
check "... and opens host0 again" wait_for accepts
tampered="$(nsenter -t "$pid1" -a -- journalctl -u segguardd -o cat --no-pager | grep -c 'binding-tampered')"
check "its own transactions are not taken for foreign ones in the container's pid namespace (binding-tampered events: $tampered)" test "$tampered" = 0
in_ct sh -c "kill ${session_pid:-0}" 2>/dev/null  # the shell's kill: the minimal root has no /bin/kill
check "journal has structured DECISION= fields" sh -c "nsenter -t $pid1 -a -- journalctl -u segguardd -o json --no-pager | grep -q '\"DECISION\"'"
check "the nftables table is in place" in_ct nft list table inet segguard
in_ct sh -c 'mkdir -p /run/captest && cp /usr/bin/true /run/captest/scrot && cp /usr/bin/true /run/captest/editor'
check "capture blocking under the hardened unit denies a listed tool" sh -c "! nsenter -t $pid1 -a -- /run/captest/scrot"
check "capture blocking lets other programs run" in_ct /run/captest/editor
check "the exec denial is a journal event" sh -c "nsenter -t $pid1 -a -- journalctl -u segguardd -o json --no-pager | grep -q 'exec-denied'"

# Trusted-only with the .deb's own programs: dpkg knows them by the package's md5sums, so
# segguardctl runs during a trusted-only session while an unpackaged copy beside it does not.
for page in segguardd segguardctl segguard-launch segguard-policy segguard-collector; do
    check "man $page renders in the booted system (no warnings)" sh -c "nsenter -t $pid1 -a -- env MANWIDTH=80 man --warnings $page 2>&1 >/dev/null | grep -q . && exit 1; nsenter -t $pid1 -a -- env MANWIDTH=80 man $page 2>/dev/null | grep -q SEGGUARD"
done
check "man segguardctl documents enroll (generated from the parser)" sh -c "nsenter -t $pid1 -a -- env MANWIDTH=200 man segguardctl 2>/dev/null | grep -q -- '--token-file'"
check "bash and zsh completions are installed" test -s "$root/usr/share/bash-completion/completions/segguardctl" -a -s "$root/usr/share/zsh/vendor-completions/_segguard-collector"
check "segguardctl and segguard-launch are links to the one agent binary (multi-call)" sh -c "test \"\$(readlink '$root/usr/bin/segguardctl')\" = ../sbin/segguardd -a \"\$(readlink '$root/usr/bin/segguard-launch')\" = ../sbin/segguardd -a -f '$root/usr/sbin/segguardd' -a ! -L '$root/usr/sbin/segguardd'"
check "... with no setuid bit and no file capabilities (they would hold under every name)" sh -c "test \"\$(stat -c %A '$root/usr/sbin/segguardd')\" = -rwxr-xr-x && python3 -c \"import os, sys; sys.exit('security.capability' in os.listxattr('$root/usr/sbin/segguardd'))\""
check "postinst made the segguard admin group" in_ct getent group segguard
check "the .deb ships md5sums and dpkg --verify passes" sh -c "test -s '$root/var/lib/dpkg/info/segment-guard-agent.md5sums' && nsenter -t $pid1 -a -- dpkg --verify segment-guard-agent"
released=""
for _ in $(seq 75); do  # the unit started it at most a few seconds ago (restart above)
    j="$(nsenter -t "$pid1" -a -- journalctl -u segguardd -o json --no-pager)"
    grep 'start-up pages released' <<<"$j" | grep -Eq '"BYTES":"[1-9][0-9]*"' && { released=1; break; }
    sleep 0.2
done
check "10 s after its start segguardd released its start-up pages (journal, BYTES > 0) under the hardened unit" test -n "$released"
sgd="$(in_ct systemctl show -p MainPID --value segguardd)"
check "segguardd runs with at most two malloc arenas (MALLOC_ARENA_MAX=2 from the unit)" \
    sh -c "nsenter -t $pid1 -a -- cat /proc/$sgd/environ | tr '\\0' '\\n' | grep -qx MALLOC_ARENA_MAX=2"
if [ -n "$sgd" ] && [ "$sgd" != 0 ] && [ "$(in_ct nsenter -t "$sgd" -m -- findmnt -n -o FSTYPE --target /usr/bin 2>/dev/null)" = tmpfs ]; then
    sed -i 's|^  watch: \["/run/captest"\]$|  watch: ["/run/captest", "/usr/bin"]|' "$root/etc/segguard/policy.yaml"
    in_ct systemctl reload segguardd
    wait_for sh -c "nsenter -t $pid1 -a -- segguardctl status | grep -q 'watching /run/captest, /usr/bin'"
    in_ct cp /usr/bin/true /usr/bin/sgtest-copy
    in_ct segguard-launch --no-notify --profile strict >/dev/null 2>&1 &
    strict=""
    wait_for sh -c "nsenter -t $pid1 -a -- segguardctl status | grep -q 'trusted-only'" && strict=1
    check "a trusted-only session runs (segguardctl status says trusted-only)" test -n "$strict"
    # The first exec under trusted-only hashes segguardctl, i.e. the whole multi-call segguardd
    # (unstripped in this prebuilt test package, over 100 MB); on a loaded
    # 2-core CI machine that can take longer than decision_timeout_ms (250 ms), and the
    # documented answer is then a denial while the hashing finishes for the next exec.
    in_ct segguardctl status >/dev/null 2>&1 || sleep 2
    check "... segguardctl from the .deb runs under it (checked against the package's md5sums)" in_ct segguardctl status
    check "... an unpackaged copy in /usr/bin is denied" sh -c "! nsenter -t $pid1 -a -- /usr/bin/sgtest-copy"
    check "... and that denial names trusted-only" sh -c "nsenter -t $pid1 -a -- journalctl -u segguardd -o json --no-pager | grep -q 'sgtest-copy is not part of an installed package'"
    for p in $(in_ct segguardctl sessions 2>/dev/null | sed -n 's/^session .* pid \([0-9]*\) .*/\1/p'); do in_ct sh -c "kill $p" 2>/dev/null; done
    wait_for sh -c "! nsenter -t $pid1 -a -- segguardctl status | grep -q 'trusted-only'"
    sed -i 's|^  watch: \["/run/captest", "/usr/bin"\]$|  watch: ["/run/captest"]|' "$root/etc/segguard/policy.yaml"
    in_ct systemctl reload segguardd
    wait_for sh -c "nsenter -t $pid1 -a -- segguardctl status | grep -q 'watching /run/captest;'"
else
    check "the container's /usr/bin is a tmpfs for segguardd (sgtest-usrbin.service), so trusted-only can be checked" false
fi

# Reload: a changed policy applies, a broken one is refused and the old one kept.
sed -i 's/^name: boot-test$/name: boot-test-2/' "$root/etc/segguard/policy.yaml"
in_ct systemctl reload segguardd
sleep 1
check "reload applies a changed policy" sh -c "nsenter -t $pid1 -a -- segguardctl status | grep -q 'policy:    boot-test-2'"
echo "broken: [" >> "$root/etc/segguard/policy.yaml"
in_ct systemctl reload segguardd
sleep 1
check "a broken policy is refused, the old one kept" sh -c "nsenter -t $pid1 -a -- segguardctl status | grep -q 'last reload REFUSED' && nsenter -t $pid1 -a -- segguardctl status | grep -q 'policy:    boot-test-2'"
check "segguardd is still active after the refused reload" in_ct systemctl is-active segguardd
sed -i '$d' "$root/etc/segguard/policy.yaml"

# Upgrade over the admin's policy: a newer package whose shipped policy changed too. The
# admin's file stays (unattended: --force-confold, as apt -o Dpkg::Options::=--force-confold
# does); the new default lands beside it as policy.yaml.dpkg-dist.
upg="$work/upgrade"
dpkg-deb -R "$deb" "$upg"
sed -i 's/^Version: \(.*\)$/Version: \1+upgrade1/' "$upg/DEBIAN/control"
echo "# changed in the upgrade" >> "$upg/etc/segguard/policy.yaml"
dpkg-deb -b "$upg" "$root/var/tmp/agent-upgrade.deb" >/dev/null
check "an upgrade to a newer version installs (dpkg -i --force-confdef --force-confold)" in_ct dpkg -i --force-confdef --force-confold /var/tmp/agent-upgrade.deb
check "the upgrade kept the admin's modified policy (conffile)" grep -qx 'name: boot-test-2' "$root/etc/segguard/policy.yaml"
check "the new default policy is beside it (policy.yaml.dpkg-dist)" grep -q 'changed in the upgrade' "$root/etc/segguard/policy.yaml.dpkg-dist"
check "segguardd is active after the upgrade (restarted by postinst)" in_ct systemctl is-active segguardd

# Watchdog: hang the netlink loop; systemd must restart the service.
before="$(in_ct systemctl show -p NRestarts --value segguardd)"
in_ct touch /run/segguard/fault-hang-netlink-loop
restarted=""
for _ in $(seq 60); do
    now="$(in_ct systemctl show -p NRestarts --value segguardd)"
    if [ "$now" -gt "$before" ] 2>/dev/null && in_ct systemctl is-active segguardd >/dev/null 2>&1; then restarted=1; break; fi
    sleep 0.5
done
check "a hung event loop is restarted by the watchdog (NRestarts $before -> ${now:-?})" test -n "$restarted"

# Starting with an invalid policy: a non-zero exit with the problem and its place in the
# journal, and no active daemon; mended, it starts again.
cp "$root/etc/segguard/policy.yaml" "$work/good-policy.yaml"
printf 'schema_version: 1\nname: broken\nsites: 5\nvdi: {gateways: [{address: 192.0.2.10}]}\n' > "$root/etc/segguard/policy.yaml"
check "a start with an invalid policy fails (systemctl restart exits non-zero)" sh -c "! nsenter -t $pid1 -a -- systemctl restart segguardd"
check "... the daemon is not active (no half-started daemon)" sh -c "! nsenter -t $pid1 -a -- systemctl is-active segguardd"
check "... its exit status is 2" sh -c "nsenter -t $pid1 -a -- systemctl show -p ExecMainStatus --value segguardd | grep -qx 2"
check "... the journal names the problem and its place" sh -c "nsenter -t $pid1 -a -- journalctl -u segguardd -o cat --no-pager | grep -q 'policy.yaml:3:8: sites: expected a list'"
check "... the gateway is closed: the table has no accept (baseline loaded before the policy, and by ExecStopPost)" sh -c "nsenter -t $pid1 -a -- nft list table inet segguard && ! nsenter -t $pid1 -a -- nft list table inet segguard | grep -q 'accept comment'"
cp "$work/good-policy.yaml" "$root/etc/segguard/policy.yaml"
in_ct systemctl reset-failed segguardd >/dev/null 2>&1
check "with the policy mended it starts again" in_ct systemctl restart segguardd
check "... and opens host0 again" wait_for accepts

# SIGKILL (nothing the daemon can do): the unit's ExecStopPost loads the baseline. Restart=no
# for the moment, so that the check is not racing the restart that reopens host0.
# (Written inside the container: its /run is a tmpfs the host's "$root/run" does not show.)
in_ct sh -c "mkdir -p /run/systemd/system/segguardd.service.d && printf '[Service]\nRestart=no\n' > /run/systemd/system/segguardd.service.d/no-restart.conf"
in_ct systemctl daemon-reload
in_ct systemctl kill -s KILL segguardd
# Until the unit is inactive or failed (not just "not active": while deactivating,
# ExecStopPost may still be running).
wait_for sh -c "nsenter -t $pid1 -a -- systemctl show -p ActiveState --value segguardd | grep -Eqx 'inactive|failed'"
check "after SIGKILL (systemctl kill -s KILL) the gateway is closed: ExecStopPost loaded the baseline" sh -c "nsenter -t $pid1 -a -- nft list table inet segguard && ! nsenter -t $pid1 -a -- nft list table inet segguard | grep -q 'accept comment'"
[ "$failed" = 0 ] || { in_ct systemctl show -p ActiveState,SubState,Result,NRestarts,ExecMainStatus segguardd; in_ct journalctl -u segguardd --no-pager -n 15; in_ct nft list table inet segguard | grep accept; } 2>&1 | sed 's/^/     | /'
in_ct rm -f /run/systemd/system/segguardd.service.d/no-restart.conf
in_ct systemctl daemon-reload
in_ct systemctl reset-failed segguardd >/dev/null 2>&1
in_ct systemctl start segguardd
check "started again after the SIGKILL, it reopens host0" wait_for accepts

# The fleet chapter on the installed packages: the legacy certificate revoked, the device
# enrolled with a token the collector's own user made on its store, segguardd on the
# enrolled files by default, renewing them in place under the unit's sandbox
# (ReadWritePaths=-/etc/segguard/pki; --renew-before-days longer than the validity: due at once).
store=sqlite:/var/lib/segguard-collector/collector.sqlite
in_ct runuser -u segguard-collector -- segguard-collector tokens create --store "$store" --count 1 --group mynumber --expires 1h >"$work/tokens.csv" 2>"$work/tokens.log"
token="$(sed -n 2p "$work/tokens.csv" | cut -d, -f1)"
check "segguard-collector tokens create (the collector's user, its store)" test -n "$token"
[ -n "$token" ] || sed 's/^/     | /' "$work/tokens.log"
check "segguard-collector revoke retires the legacy certificate" in_ct runuser -u segguard-collector -- segguard-collector revoke --store "$store" boot-agent --reason "moved to enrollment"
in_ct sh -c "umask 077; echo '$token' > /run/sg-token"
check "segguardctl enroll writes /etc/segguard/pki/device.pem and device.key" in_ct segguardctl enroll --collector https://127.0.0.1:8443 --collector-ca /etc/segguard/collector-ca.pem --token-file /run/sg-token --device-id boot-agent
check "the enrolled key is mode 0600" sh -c "stat -c %a '$root/etc/segguard/pki/device.key' | grep -qx 600"
enrolled_serial="$(openssl x509 -in "$root/etc/segguard/pki/device.pem" -noout -serial 2>/dev/null)"
in_ct sh -c 'echo SEGGUARDD_OPTS=\"--collector https://127.0.0.1:8443 --collector-ca /etc/segguard/collector-ca.pem --renew-before-days 3650\" > /etc/default/segguardd'
in_ct systemctl restart segguardd
renewed() { s="$(openssl x509 -in "$root/etc/segguard/pki/device.pem" -noout -serial 2>/dev/null)"; [ -n "$s" ] && [ "$s" != "$enrolled_serial" ] && nsenter -t "$pid1" -a -- journalctl -u segguardd -o cat --no-pager | grep -q 'device certificate renewed'; }
check "segguardd (default paths: the enrolled files) renews its certificate in place under the unit's sandbox" wait_for renewed
[ "$failed" = 0 ] || { in_ct journalctl -u segguardd -o cat --no-pager | grep -iE 'certif|renew' | tail -5; } | sed 's/^/     | /'
reported=""
for _ in $(seq 40); do
    in_ct segguardctl status 2>/dev/null | grep -Eq 'reporting: boot-agent \(group mynumber\) to https://127.0.0.1:8443: [1-9][0-9]* heartbeats ok' && { reported=1; break; }
    sleep 0.5
done
check "it reports with the renewed certificate (heartbeats ok)" test -n "$reported"
devices() { nsenter -t "$pid1" -a -- runuser -u segguard-collector -- segguard-collector devices list --store "$store"; }
check "the collector lists the device valid on the renewed certificate" sh -c "nsenter -t $pid1 -a -- runuser -u segguard-collector -- segguard-collector devices list --store '$store' | grep -E '^boot-agent	mynumber	' | grep -q 'valid'"
[ "$failed" = 0 ] || devices 2>&1 | sed 's/^/     | /'
in_ct rm -rf /etc/segguard/pki /run/sg-token

check "systemctl stop is clean" in_ct systemctl stop segguardd
check "stopped with result success" sh -c "nsenter -t $pid1 -a -- systemctl show -p Result --value segguardd | grep -qx success"
check "after systemctl stop the gateway is closed on every interface (drop-all table, no accept)" sh -c "nsenter -t $pid1 -a -- nft list table inet segguard | grep -q drop && ! nsenter -t $pid1 -a -- nft list table inet segguard | grep -q 'accept comment'"
# What the next boot does before the network: the baseline unit loads the drop-all table.
in_ct nft delete table inet segguard
check "the baseline unit loads the drop-all table" sh -c "nsenter -t $pid1 -a -- systemctl restart segguard-baseline && nsenter -t $pid1 -a -- nft list table inet segguard | grep -q 'drop'"
[ "$failed" = 0 ] || { in_ct nft list ruleset 2>&1 | head; head -c 600 "$root/var/lib/segguard/baseline.nft"; echo; } | sed 's/^/     | /'
check "dpkg --purge removes the collector" in_ct dpkg --purge segment-guard-collector
in_ct rm -f /etc/segguard/device.pem /etc/segguard/device.key /etc/segguard/collector-ca.pem /etc/default/segguardd
check "dpkg --purge removes the package" in_ct dpkg --purge segment-guard-agent
check "purge removed the state" sh -c "! test -e '$root/var/lib/segguard' && ! test -e '$root/etc/segguard'"
check "purge removed the (empty) segguard group" sh -c "! nsenter -t $pid1 -a -- getent group segguard"

[ -n "${KEEP:-}" ] && { echo "kept: pid1=$pid1 root=$root nspawn=$nspawn_pid"; exit 0; }
in_ct systemctl poweroff >/dev/null 2>&1 || true
for _ in $(seq 50); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
