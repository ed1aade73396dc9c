#!/usr/bin/env bash
# Installs npm dependencies when they are missing or older than the lock file, and builds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "etcd-sync: installing npm dependencies" >&2
  # npm install, not npm ci: npm 11 writes a lock without rollup's optional platform packages
  # and then its own `npm ci` refuses that lock. install keeps the locked versions.
  npm install --no-audit --no-fund >&2
fi
npx tsc -p tsconfig.json >&2
