#!/usr/bin/env python3
"""Every `import` of every target is declared in Package.swift: a target's own modules, its
target dependencies and the products it names (SwiftPM's explicit import check sees only
target dependencies, not the products of packages). System modules (Foundation, Glibc, …)
and a product's own submodules that the package documents as part of it are allowed.

The agent's modules (every target the `segguardd` executable is built from) import
FoundationEssentials, never Foundation: Foundation links ICU (34 MB of data, ~30 MB of code)
into the binary. Packaging/build-deb.sh checks the linked binary as well.

usage: scripts/check-imports.py   (from the repository; runs `swift package dump-package`)"""
import json, os, re, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEM = {"Foundation", "FoundationEssentials", "Glibc", "Musl", "Darwin", "Dispatch", "Synchronization", "Testing", "XCTest",
          "_Concurrency", "Observation", "os"}
# Modules that come with a product the target names (re-exported or part of the same library).
PRODUCT_MODULES = {
    "Crypto": {"Crypto"}, "X509": {"X509"}, "SwiftASN1": {"SwiftASN1"},
    "NIOCore": {"NIOCore"}, "NIOPosix": {"NIOPosix"}, "NIOHTTP1": {"NIOHTTP1"}, "NIOTLS": {"NIOTLS"}, "NIOSSL": {"NIOSSL"},
}

pkg = json.loads(subprocess.run(["swift", "package", "dump-package"], cwd=ROOT, check=True, capture_output=True, text=True).stdout)
problems = []
# The agent: the targets segguardd is built from (this package's own, transitively).
by_name = {t["name"]: t for t in pkg["targets"]}
agent, todo = set(), ["segguardd"]
while todo:
    name = todo.pop()
    if name in agent or name not in by_name:
        continue
    agent.add(name)
    for d in by_name[name].get("dependencies", []):
        todo.append((d.get("byName") or d.get("target") or [None])[0])
for t in pkg["targets"]:
    if t["type"] == "system":
        continue
    declared = {t["name"].replace("-", "_")}
    for d in t.get("dependencies", []):
        if "byName" in d:
            declared.add(d["byName"][0])
        elif "target" in d:
            declared.add(d["target"][0])
        elif "product" in d:
            declared.add(d["product"][0])
    folder = os.path.join(ROOT, "Tests" if t["type"] == "test" else "Sources", t.get("path") or t["name"])
    for dirpath, _, files in os.walk(folder):
        for f in files:
            if not f.endswith(".swift"):
                continue
            path = os.path.join(dirpath, f)
            in_string = False  # inside a multi-line string literal (""" … """): text, not Swift
            for n, line in enumerate(open(path, encoding="utf-8"), 1):
                if line.count('"""') % 2 == 1:
                    in_string = not in_string
                    continue
                if in_string:
                    continue
                m = re.match(r"^\s*(?:@\w+(?:\([^)]*\))?\s+)*import\s+(?:(?:struct|class|enum|func|protocol|typealias|var|let)\s+)?([A-Za-z_][A-Za-z0-9_]*)", line)
                if not m:
                    continue
                module = m.group(1)
                if module == "Foundation" and t["name"] in agent:
                    problems.append(f"{os.path.relpath(path, ROOT)}:{n}: target {t['name']} is part of segguardd: import FoundationEssentials (and SegguardEssentials), not Foundation")
                    continue
                if module in SYSTEM or module in declared:
                    continue
                problems.append(f"{os.path.relpath(path, ROOT)}:{n}: target {t['name']} imports {module}, which Package.swift does not list for it")
for p in problems:
    print(p)
if problems:
    print(f"{len(problems)} import problem(s)", file=sys.stderr)
    sys.exit(1)
print(f"imports: every import of {len([t for t in pkg['targets'] if t['type'] != 'system'])} targets is declared; "
      f"the {len([a for a in agent if by_name[a]['type'] != 'system'])} targets of segguardd use FoundationEssentials only")
