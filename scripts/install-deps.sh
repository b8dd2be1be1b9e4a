#!/usr/bin/env bash
# Installs the Debian packages segment-guard builds and tests with (Debian 12, as root).
# The Swift toolchain itself is expected on PATH (swift 6.x).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# What for: --demo (build and run scripts/demo.sh), --vdi (scripts/demo-vdi.sh), --tests (the
# whole test suite, which includes both demos'), --packaging (build the .debs and their install-and-boot test); no
# group: all of them. --always installs even when everything seems present (CI).
demo=(
    pkg-config
    libnl-3-dev libnl-genl-3-dev libnl-route-3-dev   # netlink (rtnetlink, nl80211)
    libnftables-dev nftables                         # the network binding (libnftables JSON API; nft for admins)
    libsystemd-dev                                   # sd_notify / journald (service integration)
    libyaml-dev                                      # the policy and state-file reader (libyaml's parser)
    iproute2 procps util-linux                       # ip netns / veth, sysctl, nsenter and setpriv
)
tests=(
    hostapd wpasupplicant openssl                    # real 802.1X EAP-TLS peers for the device-authentication work
    dbus-daemon dbus-bin                             # a private session bus for the desktop-notification test
    postgresql                                       # the collector's PostgreSQL store tests (a throwaway server on 127.0.0.1)
    prometheus                                       # promtool: the shipped alert rules are checked and unit-tested
    chromium                                         # the dashboard test loads the page in headless Chromium
    curl                                             # README demo, the enrollment and install tests talk to the collector
)
# scripts/demo-vdi.sh (run by scripts/test.sh as root): a real RDP server and client on real
# X displays, the screenshot tools people try.
vdi=(
    xvfb x11-apps x11-utils                          # displays (Xvfb), xclock and xwd, xwininfo
    freerdp2-x11 freerdp2-shadow-x11                 # the RDP client (xfreerdp) and server (freerdp-shadow-cli)
    scrot maim gnome-screenshot ffmpeg imagemagick   # capture tools (ffmpeg's x11grab, ImageMagick's import)
    curl python3 iproute2 util-linux openssl         # the collector's admin API, connection probes, namespaces, the server's pin
)
packaging=(
    debootstrap systemd-container                    # Packaging/test-install-boot.sh: a Debian root booted under systemd-nspawn
    lintian binutils man-db                          # lint both packages; the binaries' glibc needs; the manual pages render
    openssl python3                                  # the install test reads certificates; build-deb.sh generates the manual pages
)
packages=()
always=""
groups=()
for arg in "$@"; do
    case "$arg" in
        --always) always=1 ;;
        --demo|--vdi|--tests|--packaging) groups+=("${arg#--}") ;;
        *) echo "usage: scripts/install-deps.sh [--demo] [--vdi] [--tests] [--packaging] [--always]" >&2; exit 2 ;;
    esac
done
[ "${#groups[@]}" -gt 0 ] || groups=(demo tests packaging)
for g in "${groups[@]}"; do
    case "$g" in
        demo) packages+=("${demo[@]}") ;;
        vdi) packages+=("${demo[@]}" "${vdi[@]}") ;;
        tests) packages+=("${demo[@]}" "${tests[@]}" "${vdi[@]}") ;;
        packaging) packages+=("${demo[@]}" "${packaging[@]}") ;;
    esac
done
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ] || [ -n "$always" ]; then
    apt-get update
    apt-get install -y --no-install-recommends "${packages[@]}"
fi
command -v swift >/dev/null || { echo "swift is not on PATH: install the Swift 6 toolchain first" >&2; exit 1; }
