#!/usr/bin/env bash
# The README's second command (and CI's): install test needs, type-check, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --test
echo "==> tsc --noEmit"
bun run typecheck
echo "==> bun test"
bun run test
