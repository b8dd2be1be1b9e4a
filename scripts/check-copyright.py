#!/usr/bin/env python3
"""Checks that Packaging/debian/copyright names every resolved Swift package (the binaries
embed them all: static Swift) and the C libraries they compile in, each with a licence that
has its own License paragraph. Run after `swift build` (reads .build/workspace-state.json and the build manifest)."""
import json, os, re, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
text = open(os.path.join(ROOT, "Packaging/debian/copyright"), encoding="utf-8").read()
state = os.path.join(ROOT, ".build/workspace-state.json")
if not os.path.exists(state):
    sys.exit("check-copyright: .build/workspace-state.json is missing: run swift build first")
resolved = sorted(d["packageRef"]["identity"] for d in json.load(open(state))["object"]["dependencies"])
embedded_c = ["boringssl", "sqlite", "llhttp", "zlib", "swift-runtime", "icu"]
# Resolved but compiled into nothing: a package a dependency declares for a trait nobody
# enables (the build manifest must compile none of its modules, or it needs its stanza).
NOT_BUILT = {"yams": ("swift-configuration's YAML trait", ["Yams", "CYaml"])}
# What the last build compiled: its llbuild manifest (.build/debug.yaml, .build/release.yaml).
manifests = "".join(open(os.path.join(ROOT, ".build", m), encoding="utf-8").read()
                    for m in ("debug.yaml", "release.yaml") if os.path.exists(os.path.join(ROOT, ".build", m)))
built = {m for (_, mods) in NOT_BUILT.values() for m in mods if f"/{m}.build/" in manifests}
unbuilt = []
for name, (why, modules) in NOT_BUILT.items():
    if name in resolved and not built & set(modules):
        resolved.remove(name)
        unbuilt.append(f"{name} (resolved for {why}, not built)")
stanzas = {}
for block in text.split("\n\n"):
    files = re.search(r"^Files: embedded/([^/\s]+)/\*$", block, re.M)
    lic = re.search(r"^License: (.+)$", block, re.M)
    if files:
        stanzas[files.group(1)] = lic.group(1).strip() if lic else None
paragraphs = set(re.findall(r"^License: (.+)\n ", text, re.M))
problems = []
for name in resolved + embedded_c:
    if name not in stanzas:
        problems.append(f"{name}: no 'Files: embedded/{name}/*' stanza")
    elif not stanzas[name]:
        problems.append(f"{name}: its stanza has no License")
for name, lic in stanzas.items():
    if lic and lic not in paragraphs:
        problems.append(f"{name}: licence '{lic}' has no License paragraph with its text")
stale = sorted(set(stanzas) - set(resolved) - set(embedded_c))
if stale:
    problems.append("listed but not resolved any more: " + ", ".join(stale))
if problems:
    print("check-copyright: Packaging/debian/copyright is out of date:\n  " + "\n  ".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"copyright: {len(resolved)} Swift packages and {len(embedded_c)} embedded components listed, each with its licence"
      + (f"; not embedded: {', '.join(unbuilt)}" if unbuilt else ""))
