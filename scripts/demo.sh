#!/usr/bin/env bash
# `npm run demo`: installs what is missing (npm deps, etcd), builds, runs scripts/demo.ts.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/ensure-deps.sh
npx tsc -p tsconfig.scripts.json
ETCD_BIN=$(bash scripts/install-etcd.sh "${ETCD_VERSION:-3.5}")
export ETCD_BIN
exec node dist/scripts/demo.js "$@"
