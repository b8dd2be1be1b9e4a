#!/usr/bin/env bash
# Builds everything and runs every test. As root the real-kernel tests (network namespaces,
# veth, the daemon end to end) run too; as another user they are skipped with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
# Every import declared in Package.swift (SwiftPM's own check sees target dependencies only).
python3 scripts/check-imports.py
# The release layout's check (build-deb.sh) refuses scattered hot functions, accepts ordered ones.
python3 scripts/check-order.py --self-test
build_start=$(date +%s)
swift build --build-tests --explicit-target-dependency-import-check error
echo "build: $(( $(date +%s) - build_start )) s"
# The .deb's copyright file names every package the build resolved (they are all embedded).
python3 scripts/check-copyright.py
# segguard-policy(5) names every key the policy loader accepts.
python3 scripts/check-manpages.py
export SEGGUARD_BIN_DIR="$(swift build --show-bin-path)"
if [ $# -gt 0 ]; then
  swift test --skip-build "$@"
else
  # Two runs: the real-kernel tests block their threads (waits on processes, sockets,
  # sleeps) and, beside the async tests, took every thread of the Swift concurrency pool
  # (as many as cores): on a 2-core CI machine an in-process collector's test then waited
  # minutes for a thread and its SQLite transaction held the write lock meanwhile.
  swift test --skip-build --skip SegguardPrivilegedTests
  swift test --skip-build --filter SegguardPrivilegedTests
  # The promise end to end with the real programs: xfreerdp to an RDP server, the real capture
  # tools, a collector (needs root: namespaces, nftables, fanotify).
  if [ "$(id -u)" = 0 ]; then
    scripts/demo-vdi.sh --check
  else
    echo "scripts/demo-vdi.sh skipped: needs root (network and mount namespaces, nftables, fanotify, cgroups)"
  fi
fi
