#!/usr/bin/env bash
# Side by side, one run (root): carrier lost -> the new nftables table seen by `nft monitor`,
# for a shell peer, a tight libnftables peer and the release segguardd (the shared harness,
# ../shared/bench/side-by-side-flap.py, or $SIDE_BY_SIDE), then segguardd's own breakdown of
# the same changes by stage, from its --timings-file (written at stop).
#
#   scripts/bench-side-by-side.sh [FLAPS_PER_ROUND] [ROUNDS]      (default 100 3)
#
# Needs a release build (swift build -c release --product segguardd) and python3-nftables.
set -euo pipefail
cd "$(dirname "$0")/.."
harness=${SIDE_BY_SIDE:-../shared/bench/side-by-side-flap.py}
bin=$(swift build -c release --show-bin-path)
[ -x "$bin/segguardd" ] || { echo "no release segguardd in $bin: swift build -c release --product segguardd" >&2; exit 1; }
[ -f "$harness" ] || { echo "no harness at $harness (set SIDE_BY_SIDE)" >&2; exit 1; }
out=$(mktemp -d /tmp/sg-sbs-XXXXXX)
trap 'rm -rf "$out"' EXIT
# The harness starts "SEGGUARDD --policy … --log-level warning": this wrapper adds the timings file.
cat > "$out/segguardd" <<WRAP
#!/bin/sh
exec "$bin/segguardd" "\$@" --timings-file "$out/timings-\$\$.jsonl"
WRAP
chmod +x "$out/segguardd"
python3 "$harness" "$out/segguardd" "${1:-100}" "${2:-3}"
python3 - "$out" <<'PY'
import glob, json, sys
rows = [json.loads(l) for f in sorted(glob.glob(sys.argv[1] + "/timings-*.jsonl")) for l in open(f) if l.strip()]
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]
for label, want in (("carrier lost (drop table)", False), ("carrier back (allow table)", True)):
    sel = [r for r in rows if r["authorized"] == want]
    if not sel:
        continue
    print(f"segguardd stages, {label}, n={len(sel)}, microseconds from the agent loop's wakeup for the netlink message:")
    for k, name in (("snapshot_us", "snapshot built"), ("decided_us", "decided"), ("handed_to_kernel_us", "handed to libnftables"), ("committed_us", "kernel committed")):
        xs = [r[k] for r in sel]
        print(f"  {name:22s} p50 {pct(xs,50):8.1f}   p90 {pct(xs,90):8.1f}   p99 {pct(xs,99):8.1f}   max {max(xs):8.1f}")
PY
