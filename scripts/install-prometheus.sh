#!/usr/bin/env bash
# Puts Prometheus (the server and promtool) into .tools/prometheus/ (git-ignored) from Debian
# bookworm's `prometheus` package (2.42; see lib/debian-package.sh: nothing installed
# system-wide). The tests use promtool to unit-test the alert rules and lint a live /metrics, and
# the server to evaluate the dashboard's queries against a running pair.
# Prints the folder holding both binaries. PROMETHEUS_BIN_DIR, when set, names one of your own.
set -euo pipefail
if [ -n "${PROMETHEUS_BIN_DIR:-}" ]; then echo "$PROMETHEUS_BIN_DIR"; exit 0; fi
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/debian-package.sh
. "$root/scripts/lib/debian-package.sh"
dest="$root/.tools/prometheus"
if [ -x "$dest/usr/bin/promtool" ] && [ -x "$dest/usr/bin/prometheus" ]; then echo "$dest/usr/bin"; exit 0; fi
debian_unpack "Prometheus (promtool)" bookworm "$dest" \
  "Install Prometheus 2.x yourself and set PROMETHEUS_BIN_DIR to the folder with prometheus and promtool." \
  prometheus
[ -x "$dest/usr/bin/promtool" ] || debian_need "promtool" "the package had no usr/bin/promtool" "Set PROMETHEUS_BIN_DIR."
"$dest/usr/bin/promtool" --version 2>&1 | sed -n 1p >&2
echo "$dest/usr/bin"
