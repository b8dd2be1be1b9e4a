#!/usr/bin/env python3
"""Checks that a release segguardd has its steady-state functions laid out together.

Usage: scripts/check-order.py SEGGUARDD ORDER-FILE   (SEGGUARDD with its symbol table)
       scripts/check-order.py --self-test   (scripts/test.sh: a C program linked both ways)

ORDER-FILE (Packaging/segguardd.order, from scripts/profile-order.sh) names the functions the
daemon runs once it is up; build-deb.sh links them first. Exit 1 when most of them are not in
one run of the program's code (the ordering did not take effect: a flag lost, every function
not in its own section). A file that names many functions the program no longer has is stale:
a warning, since the program then only keeps more of its code resident.
"""
import subprocess
import sys


def self_test() -> int:
    """Links a program of 600 functions with gold, with and without an ordering of 60 of them
    spread through it (as build-deb.sh does), and checks that only the ordered one passes."""
    import os
    import shutil
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        step = "v = v * 3 + x; " * 30  # ~0.5 KB of code per function at -O0
        body = "".join(f"int f{i}(int x) {{ volatile int v = {i}; {step}return v; }}\n" for i in range(600))
        calls = " + ".join(f"f{i}(argc)" for i in range(600))
        with open(f"{d}/p.c", "w") as f:
            f.write(body + f"int main(int argc, char **argv) {{ (void)argv; return {calls}; }}\n")
        hot = [f"f{i}" for i in range(0, 600, 10)]
        with open(f"{d}/p.order", "w") as f:
            f.write("# test\n" + "".join(n + "\n" for n in hot))
        with open(f"{d}/p.sections", "w") as f:
            f.write("".join(f".text.{n}\n" for n in hot))
        compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("clang")
        if not compiler:
            print("self-test: no C compiler (cc, clang or $CC)", file=sys.stderr)
            return 2
        results = {}
        for name, extra in (("plain", []), ("ordered", [f"-Wl,--section-ordering-file={d}/p.sections"])):
            build = subprocess.run([compiler, "-O0", "-ffunction-sections", "-fuse-ld=gold", "-o", f"{d}/{name}", f"{d}/p.c"] + extra,
                                   capture_output=True, text=True)
            if build.returncode != 0:
                print(f"self-test: cc: {build.stderr.strip()}", file=sys.stderr)
                return 2
            results[name] = subprocess.run([sys.executable, os.path.abspath(__file__), f"{d}/{name}", f"{d}/p.order"],
                                           capture_output=True, text=True).returncode
        if results != {"plain": 1, "ordered": 0}:
            print(f"self-test: expected the plain link refused (1) and the ordered one accepted (0), got {results}", file=sys.stderr)
            return 1
    print("check-order.py: self-test passed (a scattered layout refused, an ordered one accepted)")
    return 0


def main() -> int:
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
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
