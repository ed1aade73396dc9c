#!/usr/bin/env bash
# `npm test`: installs what is missing (npm deps, etcd, Prometheus's promtool), builds,
# type-checks, runs the suite.
# ETCD_VERSION=3.4 runs it against etcd 3.4; ETCD_BIN=/path/to/etcd uses a given binary.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/ensure-deps.sh
npx tsc -p tsconfig.check.json
ETCD_BIN=$(bash scripts/install-etcd.sh "${ETCD_VERSION:-3.5}")
export ETCD_BIN
PROMETHEUS_BIN_DIR=$(bash scripts/install-prometheus.sh)
export PROMETHEUS_BIN_DIR
echo "etcd-sync tests: node $(node --version), $("$ETCD_BIN" --version | sed -n 1p)" >&2
exec npx vitest run "$@"
