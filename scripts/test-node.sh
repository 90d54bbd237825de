#!/usr/bin/env bash
# Runs the unit suite (every vitest project of packages/ and apps/), and the
# smoke programs from packed tarballs when a tarball folder is given, on
# another Node.js major, installed by scripts/node-versions.mjs (idempotent).
#   scripts/test-node.sh <major> [<tarball-dir>]
set -euo pipefail
cd "$(dirname "$0")/.."
major="${1:?usage: scripts/test-node.sh <major> [<tarball-dir>]}"
bin="$(node scripts/node-versions.mjs --bin "$major")"
export PATH="$bin:$PATH"
echo "== Node $(node --version): unit suite"
node scripts/pnpm.mjs exec vitest run
if [ -n "${2:-}" ]; then
  echo "== Node $(node --version): smoke programs from the packed tarballs"
  bash scripts/release/smoke/run.sh "$2"
fi
