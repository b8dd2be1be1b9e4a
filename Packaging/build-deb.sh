#!/usr/bin/env bash
# Builds the agent .deb (segment-guard-agent) and the collector .deb
# (segment-guard-collector) with dpkg-deb from a release build with the Swift runtime linked
# statically (thin clients have no Swift toolchain). Prints the collector's path, then the
# agent's (last line).
# Usage: Packaging/build-deb.sh [OUTDIR]   (default: out/)
# SEGGUARD_DEB_CONFIG=debug builds unoptimized binaries. SEGGUARD_DEB_CONFIG=prebuilt packs
# the binaries scripts/test.sh already built (.build/debug, linked against the toolchain's
# Swift runtime, which the install test then mounts read-only into its container; or those in
# SEGGUARD_DEB_BIN_DIR): CI's
# install test checks the packaging, units and maintainer scripts, and a second full build of
# the collector's dependencies would take longer than the rest of CI. Ship release builds.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-out}"
version="$(sed -n 's/^public let segguardVersion = "\(.*\)"$/\1/p' Sources/SegguardWire/Control.swift)"
arch="$(dpkg --print-architecture)"
scratch=".build-deb"
config="${SEGGUARD_DEB_CONFIG:-release}"
case "$config" in release|debug|prebuilt) ;; *) echo "SEGGUARD_DEB_CONFIG must be release, debug or prebuilt, not '$config'" >&2; exit 2 ;; esac

# segguardd is the agent's multi-call binary: segguardctl and segguard-launch are links to it
# (Sources/segguardd/main.swift), so the agent package carries the Swift runtime once.
if [ "$config" = prebuilt ]; then
    # SEGGUARD_DEB_BIN_DIR: pack the binaries of another build (e.g. a release build's folder).
    bin="${SEGGUARD_DEB_BIN_DIR:-$(swift build --show-bin-path)}"
    for product in segguardd segguard-collector; do
        [ -x "$bin/$product" ] || { echo "SEGGUARD_DEB_CONFIG=prebuilt: $bin/$product is not built (run scripts/test.sh first)" >&2; exit 2; }
    done
else
    flags=()
    if [ "$config" = release ]; then
        # The functions segguardd runs once it is up (Packaging/segguardd.order, recorded by
        # scripts/profile-order.sh) are laid out first and together: every function in its own
        # section (Swift and C), gold's --section-ordering-file. The kernel maps code in 64 KB
        # runs (fault-around), so scattered hot functions would keep most of the 26 MB of code
        # resident. No symbol is exported (the Swift runtime's static link exports every symbol
        # of the package's objects, 43,000 names, 4.6 MB, that nothing looks up).
        mkdir -p "$scratch"
        grep -v '^#' Packaging/segguardd.order | sed 's/^/.text./' > "$scratch/segguardd.sections"
        flags=(-Xswiftc -Xfrontend -Xswiftc -function-sections -Xcc -ffunction-sections
               -Xlinker "--section-ordering-file=$PWD/$scratch/segguardd.sections"
               -Xlinker "--version-script=$PWD/Packaging/exports.map")
    fi
    # SwiftPM does not recompile Swift objects when only -Xfrontend flags change (the
    # objects of a build without -function-sections were kept): remove them when the flags differ.
    stamp="$scratch/.segguard-build-flags"
    if [ -d "$scratch" ] && [ "$(cat "$stamp" 2>/dev/null)" != "$config ${flags[*]}" ]; then
        find "$scratch" -name '*.swift.o' -delete
    fi
    for product in segguardd segguard-collector; do
        swift build -c "$config" --static-swift-stdlib --scratch-path "$scratch" --product "$product" "${flags[@]}" >&2
    done
    printf '%s' "$config ${flags[*]}" > "$stamp"
    bin="$(swift build -c "$config" --static-swift-stdlib --scratch-path "$scratch" --show-bin-path "${flags[@]}")"
    if [ "$config" = release ]; then
        python3 scripts/check-order.py "$bin/segguardd" Packaging/segguardd.order >&2
    fi
fi

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT

# libc6: the newest GLIBC_ symbol version the binaries use (the control files get it).
libc="$(for b in segguardd segguard-collector; do readelf --dyn-syms -W "$bin/$b"; done \
    | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)"
[ -n "$libc" ] || { echo "cannot read the glibc versions the binaries need (readelf, binutils)" >&2; exit 2; }

# Every shared library a binary needs comes from a package its control file depends on
# (dpkg -S on this build machine; the toolchain's Swift runtime of a prebuilt debug build is
# mounted by the install test instead).
needs() {  # needs BINARY CONTROL
    local so path owner
    for so in $(readelf -dW "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        # (awk reads to the end: an early exit would kill ldconfig with SIGPIPE under pipefail)
        path="$(ldconfig -p | awk -v so="$so" '$1 == so && /x86-64|x32|AArch64|64bit/ && !p {p = $NF} END {print p}')"
        [ -n "$path" ] || path="$(ldconfig -p | awk -v so="$so" '$1 == so && !p {p = $NF} END {print p}')"
        if [ -z "$path" ]; then
            case "$config:$so" in prebuilt:libswift*|prebuilt:libFoundation*|prebuilt:lib_Foundation*|prebuilt:libdispatch*|prebuilt:libBlocksRuntime*|prebuilt:libswift_*) continue ;; esac
            echo "$(basename "$1") needs $so, which no installed library provides" >&2; exit 2
        fi
        owner="$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | sed -n '1s/:.*//p')" || true
        [ -n "$owner" ] || owner="$(dpkg -S "$path" 2>/dev/null | sed -n '1s/:.*//p')" || true
        [ -n "$owner" ] || { echo "$(basename "$1") needs $so ($path), which no Debian package owns" >&2; exit 2; }
        grep -qxF "$owner" <<<"$(sed -n 's/^Depends: //p' "$2" | tr ',' '\n' | sed 's/^ *//; s/[ (].*//')" \
            || { echo "$(basename "$1") needs $so from $owner, but $2 does not depend on $owner" >&2; exit 2; }
    done
}
needs "$bin/segguardd" Packaging/debian/agent.control
needs "$bin/segguard-collector" Packaging/debian/collector.control
# The agent's modules use FoundationEssentials, never Foundation: Foundation's ICU (34 MB of
# data, ~30 MB of code) would more than double the agent's size (scripts/check-imports.py
# checks the imports; this checks what the binary really uses, a dependency's included).
# (Each listing is read whole before grep: grep -q's early exit would fail the pipeline.)
dynamic="$(readelf -dW "$bin/segguardd")"
if grep -q 'NEEDED.*\[libswiftCore\.so\]' <<<"$dynamic"; then
    # Linked against the toolchain's runtime (a debug build): Foundation's libraries are named
    # by autolinking anyway; no symbol may come from them.
    rt="$(awk -F'[][]' '/R(UN)?PATH/ {split($2, d, ":"); print d[1]}' <<<"$dynamic")"
    nm -D --undefined-only "$bin/segguardd" | awk '{print $2}' | sort -u > "$root/used"
    for lib in libFoundation.so libFoundationInternationalization.so lib_FoundationICU.so; do
        [ -f "$rt/$lib" ] || continue
        nm -D --defined-only "$rt/$lib" | awk '{print $3}' | sort -u > "$root/defined"
        n="$(comm -12 "$root/used" "$root/defined" | wc -l)"
        [ "$n" = 0 ] || { echo "segguardd uses $n symbols of $lib (Foundation, not FoundationEssentials): $(comm -12 "$root/used" "$root/defined" | sed -n 1p)" >&2; exit 2; }
    done
elif [ "$(grep -ac 'icudt[0-9][0-9]*l' "$bin/segguardd")" != 0 ]; then  # ICU's data (names icudtNNl…), stripped or not
    echo "segguardd links Foundation's ICU: a module of the agent uses Foundation (not FoundationEssentials); see the link map (-Xlinker -Map)" >&2; exit 2
fi

# /usr/share/doc/PKG: the Debian changelog (what dpkg tools read) and the project's own.
doc() {  # doc PKG DIR
    gzip -9n -c CHANGELOG.md > "$2/CHANGELOG.md.gz"
    printf '%s (%s) unstable; urgency=medium\n\n  * Release %s. The changes are in\n    /usr/share/doc/%s/CHANGELOG.md.gz.\n\n -- segment-guard team <segment-guard@example.invalid>  %s\n' \
        "$1" "$version" "$version" "$1" "$(date -u -R -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")" \
        | gzip -9n > "$2/changelog.gz"
    install -m 0644 Packaging/debian/copyright "$2/copyright"
    if [ -f "Packaging/debian/$3.lintian-overrides" ]; then  # the collector needs none
        install -d -m 0755 "$(dirname "$2")/../lintian/overrides"
        install -m 0644 "Packaging/debian/$3.lintian-overrides" "$(dirname "$2")/../lintian/overrides/$1"
    fi
}
# Manual pages generated from the argument parsers (Packaging/gen-man.py; prose from
# Packaging/man/*.in), the policy format's written by hand; shell completions from the parsers.
builddate="$(date -u -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}" +%Y-%m-%d)"
# Both run the program as the package installs it (PKGROOT/usr/{s,}bin/PROGRAM: for the agent's
# commands, the multi-call binary by the name of the link).
installed() { if [ -e "$1/usr/sbin/$2" ]; then echo "$1/usr/sbin/$2"; else echo "$1/usr/bin/$2"; fi; }
manpage() {  # manpage PKGROOT PROGRAM SECTION
    install -d -m 0755 "$1/usr/share/man/man$3"
    "$(installed "$1" "$2")" --experimental-dump-help > "$root/$2.json"
    python3 Packaging/gen-man.py --section "$3" --date "$builddate" --version "$version" "$root/$2.json" "Packaging/man/$2.$3.in" \
        | gzip -9n > "$1/usr/share/man/man$3/$2.$3.gz"
    chmod 0644 "$1/usr/share/man/man$3/$2.$3.gz"
}
completions() {  # completions PKGROOT PROGRAM
    install -d -m 0755 "$1/usr/share/bash-completion/completions" "$1/usr/share/zsh/vendor-completions"
    # Sourced by bash-completion, not run: no #! line (lintian bash-completion-with-hashbang).
    "$(installed "$1" "$2")" --generate-completion-script bash | sed "1{/^#!/d}" > "$1/usr/share/bash-completion/completions/$2"
    "$(installed "$1" "$2")" --generate-completion-script zsh > "$1/usr/share/zsh/vendor-completions/_$2"
    chmod 0644 "$1/usr/share/bash-completion/completions/$2" "$1/usr/share/zsh/vendor-completions/_$2"
}
pkg="$root/segment-guard-agent"
install -d -m 0755 "$pkg/DEBIAN" "$pkg/usr/sbin" "$pkg/usr/bin" "$pkg/etc/segguard" \
    "$pkg/lib/systemd/system" "$pkg/usr/share/doc/segment-guard-agent/examples"
install -m 0755 -s "$bin/segguardd" "$pkg/usr/sbin/segguardd"
ln -s ../sbin/segguardd "$pkg/usr/bin/segguardctl"
ln -s ../sbin/segguardd "$pkg/usr/bin/segguard-launch"
install -m 0644 Packaging/segguardd.service Packaging/segguard-baseline.service "$pkg/lib/systemd/system/"
install -m 0644 Packaging/debian/policy.yaml "$pkg/etc/segguard/policy.yaml"
# Every desktop session runs segguard-launch --watch: the user's notices (grace countdown,
# session ended, capture tool refused) as desktop notifications.
install -d -m 0755 "$pkg/etc/xdg/autostart"
install -m 0644 Packaging/segguard-notify.desktop "$pkg/etc/xdg/autostart/segguard-notify.desktop"
install -m 0644 Config/*.yaml "$pkg/usr/share/doc/segment-guard-agent/examples/"
install -m 0644 docs/admin-guide.md docs/architecture.md docs/threat-model.md "$pkg/usr/share/doc/segment-guard-agent/"
doc segment-guard-agent "$pkg/usr/share/doc/segment-guard-agent" agent
manpage "$pkg" segguardd 8
manpage "$pkg" segguardctl 8
manpage "$pkg" segguard-launch 1
install -d -m 0755 "$pkg/usr/share/man/man5"
gzip -9n -c Packaging/man/segguard-policy.5 > "$pkg/usr/share/man/man5/segguard-policy.5.gz"
chmod 0644 "$pkg/usr/share/man/man5/segguard-policy.5.gz"
for p in segguardd segguardctl segguard-launch; do completions "$pkg" "$p"; done
for s in postinst prerm postrm; do install -m 0755 "Packaging/debian/agent.$s" "$pkg/DEBIAN/$s"; done
printf '/etc/segguard/policy.yaml\n/etc/xdg/autostart/segguard-notify.desktop\n' > "$pkg/DEBIAN/conffiles"
# DEBIAN/md5sums (as dh_md5sums writes it): dpkg --verify checks the installed files, and
# capture blocking's trusted-only mode trusts the package's own programs by it.
md5sums() {  # md5sums PKGROOT
    (cd "$1" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort \
        | while IFS= read -r f; do case "$f" in etc/*) ;; *) md5sum "$f" ;; esac; done) > "$1/DEBIAN/md5sums"
    chmod 0644 "$1/DEBIAN/md5sums"
}
md5sums "$pkg"
size="$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" -e "s/@LIBC@/$libc/" Packaging/debian/agent.control > "$pkg/DEBIAN/control"

mkdir -p "$out"

# The collector.
cpkg="$root/segment-guard-collector"
install -d -m 0755 "$cpkg/DEBIAN" "$cpkg/usr/bin" "$cpkg/lib/systemd/system" "$cpkg/usr/share/doc/segment-guard-collector"
install -m 0755 -s "$bin/segguard-collector" "$cpkg/usr/bin/segguard-collector"
install -m 0644 Packaging/segguard-collector.service "$cpkg/lib/systemd/system/"
# Prometheus alert rules (with their promtool unit tests) and a Grafana dashboard.
install -d -m 0755 "$cpkg/usr/share/segment-guard-collector/monitoring"
install -m 0644 Packaging/monitoring/segguard-alerts.yml Packaging/monitoring/segguard-alerts.test.yml \
    Packaging/monitoring/segguard-grafana-dashboard.json "$cpkg/usr/share/segment-guard-collector/monitoring/"
install -m 0644 docs/admin-guide.md docs/architecture.md docs/threat-model.md docs/guideline-evidence.md "$cpkg/usr/share/doc/segment-guard-collector/"
doc segment-guard-collector "$cpkg/usr/share/doc/segment-guard-collector" collector
manpage "$cpkg" segguard-collector 8
completions "$cpkg" segguard-collector
for s in postinst prerm postrm; do install -m 0755 "Packaging/debian/collector.$s" "$cpkg/DEBIAN/$s"; done
md5sums "$cpkg"
csize="$(du -sk --exclude=DEBIAN "$cpkg" | cut -f1)"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$csize/" -e "s/@LIBC@/$libc/" Packaging/debian/collector.control > "$cpkg/DEBIAN/control"
cdeb="$out/segment-guard-collector_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$cpkg" "$cdeb" >/dev/null
echo "$cdeb"

deb="$out/segment-guard-agent_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$pkg" "$deb" >/dev/null
echo "$deb"
