#!/usr/bin/env bash
# `npm run bench [-- --keys N --stream M]`: installs what is missing, builds, runs bench/bench.ts.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/ensure-deps.sh
npx tsc -p tsconfig.scripts.json
ETCD_BIN=$(bash scripts/install-etcd.sh "${ETCD_VERSION:-3.5}")
export ETCD_BIN
exec node dist/bench/bench.js "$@"
