#!/usr/bin/env bash
# Builds everything and runs every test. As root the real-kernel tests (network namespaces,
# veth, the daemon end to end) run too; as another user they are skipped with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
# Every import declared in Package.swift (SwiftPM's own check sees target dependencies only).
python3 scripts/check-imports.py
swift build --build-tests --explicit-target-dependency-import-check error
SEGGUARD_BIN_DIR="$(swift build --show-bin-path)" swift test --skip-build "$@"
