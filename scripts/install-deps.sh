#!/usr/bin/env bash
# Installs the Debian packages segment-guard builds and tests with (Debian 12, as root).
# The Swift toolchain itself is expected on PATH (swift 6.x).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
packages=(
    pkg-config
    libnl-3-dev libnl-genl-3-dev libnl-route-3-dev   # netlink (rtnetlink, nl80211)
    libnftables-dev nftables                         # the network binding (libnftables JSON API; nft for admins)
    hostapd wpasupplicant openssl                    # real 802.1X EAP-TLS peers for the device-authentication work
    libsystemd-dev                                   # sd_notify / journald (service integration)
    iproute2 procps util-linux                       # ip netns / veth, sysctl, nsenter and setpriv for the real-kernel tests
    dbus-daemon dbus-bin                             # a private session bus for the desktop-notification test
    debootstrap systemd-container                    # Packaging/test-install-boot.sh: a Debian root booted under systemd-nspawn
    lintian binutils                                 # the install test lints both packages; build-deb.sh reads the binaries' glibc needs
    postgresql                                       # the collector's PostgreSQL store tests (a throwaway server on 127.0.0.1)
    prometheus                                       # promtool: the shipped alert rules are checked and unit-tested
    chromium                                         # the dashboard test loads the page in headless Chromium
    curl                                             # README demo and the install test talk to the collector
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ] || [ "${1:-}" = "--always" ]; then
    apt-get update
    apt-get install -y --no-install-recommends "${packages[@]}"
fi
command -v swift >/dev/null || { echo "swift is not on PATH: install the Swift 6 toolchain first" >&2; exit 1; }
