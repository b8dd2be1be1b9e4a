#!/usr/bin/env python3
"""Checks that a release segguardd has its steady-state functions laid out together.

Usage: scripts/check-order.py SEGGUARDD ORDER-FILE   (SEGGUARDD with its symbol table)

ORDER-FILE (Packaging/segguardd.order, from scripts/profile-order.sh) names the functions the
daemon runs once it is up; build-deb.sh links them first. Exit 1 when most of them are not in
one run of the program's code (the ordering did not take effect: a flag lost, every function
not in its own section). A file that names many functions the program no longer has is stale:
a warning, since the program then only keeps more of its code resident.
"""
import subprocess
import sys


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    binary, order_path = sys.argv[1], sys.argv[2]
    try:
        wanted = [l.strip() for l in open(order_path, encoding="utf-8") if l.strip() and not l.startswith("#")]
    except OSError as e:
        print(f"{order_path}: {e.strerror}", file=sys.stderr)
        return 2
    if not wanted:
        print(f"{order_path}: names no function", file=sys.stderr)
        return 1
    listing = subprocess.run(["nm", "-S", "--defined-only", binary], capture_output=True, text=True, errors="replace")
    if listing.returncode != 0:
        print(f"{binary}: nm: {listing.stderr.strip()}", file=sys.stderr)
        return 2
    text = {}
    for line in listing.stdout.splitlines():
        p = line.split()
        if len(p) == 4 and p[2] in "tTwW":
            text.setdefault(p[3], (int(p[0], 16), int(p[1], 16)))
    if not text:
        print(f"{binary}: no symbol table (check the build before it is stripped)", file=sys.stderr)
        return 2
    found = sorted(text[n] for n in set(wanted) if n in text)
    coverage = len(found) / len(set(wanted))
    if coverage < 0.8:
        print(f"warning: {binary} has only {len(found)} of the {len(set(wanted))} functions {order_path} names: "
              "it is stale, run scripts/profile-order.sh", file=sys.stderr)
    if not found:
        print(f"{binary}: none of the functions in {order_path}", file=sys.stderr)
        return 1
    total = sum(size for _, size in found)
    window = int(total * 1.5) + 65536
    # The densest run of `window` bytes: how many of the functions lie in it.
    best, j = 0, 0
    for i in range(len(found)):
        while found[i][0] - found[j][0] > window:
            j += 1
        best = max(best, i - j + 1)
    span = max(a + s for a, s in found) - found[0][0]
    share = best / len(found)
    print(f"{binary}: {best} of {len(found)} steady-state functions ({total / 1e6:.1f} MB) lie together "
          f"in {window / 1e6:.1f} MB ({share:.0%}; all of them span {span / 1e6:.1f} MB)")
    if share < 0.7:
        print(f"{binary}: the functions {order_path} names are not laid out together: the section ordering "
              "did not take effect (-function-sections, --section-ordering-file)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
