#!/usr/bin/env bash
# Builds the agent .deb (segment-guard-agent) with dpkg-deb from a release build with the
# Swift runtime linked statically (thin clients have no Swift toolchain).
# Usage: Packaging/build-deb.sh [OUTDIR]   (default: out/)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-out}"
version="$(sed -n 's/^public let segguardVersion = "\(.*\)"$/\1/p' Sources/SegguardWire/Control.swift)"
arch="$(dpkg --print-architecture)"
scratch=".build-deb"

for product in segguardd segguardctl segguard-launch; do
    swift build -c release --static-swift-stdlib --scratch-path "$scratch" --product "$product"
done
bin="$(swift build -c release --static-swift-stdlib --scratch-path "$scratch" --show-bin-path)"

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
pkg="$root/segment-guard-agent"
install -d -m 0755 "$pkg/DEBIAN" "$pkg/usr/sbin" "$pkg/usr/bin" "$pkg/etc/segguard" \
    "$pkg/lib/systemd/system" "$pkg/usr/share/doc/segment-guard-agent/examples"
install -m 0755 -s "$bin/segguardd" "$pkg/usr/sbin/segguardd"
install -m 0755 -s "$bin/segguardctl" "$pkg/usr/bin/segguardctl"
install -m 0755 -s "$bin/segguard-launch" "$pkg/usr/bin/segguard-launch"
install -m 0644 Packaging/segguardd.service Packaging/segguard-baseline.service "$pkg/lib/systemd/system/"
install -m 0644 Packaging/debian/policy.yaml "$pkg/etc/segguard/policy.yaml"
install -m 0644 Config/*.yaml "$pkg/usr/share/doc/segment-guard-agent/examples/"
install -m 0644 docs/admin-guide.md docs/architecture.md docs/threat-model.md "$pkg/usr/share/doc/segment-guard-agent/"
gzip -9n -c CHANGELOG.md > "$pkg/usr/share/doc/segment-guard-agent/changelog.gz"
install -m 0644 Packaging/debian/copyright "$pkg/usr/share/doc/segment-guard-agent/copyright"
for s in postinst prerm postrm; do install -m 0755 "Packaging/debian/agent.$s" "$pkg/DEBIAN/$s"; done
echo "/etc/segguard/policy.yaml" > "$pkg/DEBIAN/conffiles"
size="$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" Packaging/debian/agent.control > "$pkg/DEBIAN/control"

mkdir -p "$out"
deb="$out/segment-guard-agent_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$pkg" "$deb" >/dev/null
echo "$deb"
