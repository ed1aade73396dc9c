#!/usr/bin/env bash
# `npm run bench [-- --keys N --stream M]` runs bench/bench.ts; `npm run profile [-- --keys N --what sync|catchup|check]`
# runs bench/profile.ts. Both install what is missing and build first.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
script=bench
if [ "${1:-}" = profile ]; then script=profile; shift; fi
bash scripts/ensure-deps.sh
npx tsc -p tsconfig.scripts.json
ETCD_BIN=$(bash scripts/install-etcd.sh "${ETCD_VERSION:-3.5}")
export ETCD_BIN
exec node "dist/bench/$script.js" "$@"
