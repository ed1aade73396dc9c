#!/usr/bin/env bash
# `npm run bench [-- --keys N --stream M]` runs bench/bench.ts; `npm run bench:node24 [-- ...]` the same
# on Node 24, the container image's runtime (bench, clients and etcd-sync alike; fetched into .tools/);
# `npm run profile [-- --keys N --what sync|catchup|check|stream]` runs bench/profile.ts;
# `npm run bench:check-memory [-- --keys N]` runs bench/check-memory.ts;
# `npm run bench:stream-memory [-- --keys N --value-bytes B]` runs bench/stream-memory.ts. All
# install what is missing and build first.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
script=bench
case "${1:-}" in
  profile | check-memory | stream-memory) script=$1; shift ;;
  node24) shift; PATH="$(bash scripts/install-node24.sh):$PATH"; export PATH ;;
esac
bash scripts/ensure-deps.sh
npx tsc -p tsconfig.scripts.json
ETCD_BIN=$(bash scripts/install-etcd.sh "${ETCD_VERSION:-3.5}")
export ETCD_BIN
exec node "dist/bench/$script.js" "$@"
