#!/usr/bin/env python3
"""Checks that segguard-policy(5) names every key the policy loader accepts (the loader's
`allowed:` lists), so the manual page cannot fall behind the format."""
import os, re, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
loader = open(os.path.join(ROOT, "Sources/SegguardPolicy/PolicyLoader.swift"), encoding="utf-8").read()
page = open(os.path.join(ROOT, "Packaging/man/segguard-policy.5"), encoding="utf-8").read()
keys = set()
for group in re.findall(r"allowed: \[([^\]]*)\]", loader):
    keys.update(re.findall(r'"([a-z_0-9]+)"', group))
missing = sorted(k for k in keys if f"\\fB{k}\\fR" not in page)
if missing:
    print("check-manpages: segguard-policy.5 does not name these policy keys: " + ", ".join(missing), file=sys.stderr)
    sys.exit(1)
print(f"manpages: segguard-policy(5) names all {len(keys)} policy keys")
