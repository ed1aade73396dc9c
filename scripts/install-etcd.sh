#!/usr/bin/env bash
# Puts an etcd server into .tools/etcd-<version>/ (git-ignored) from Debian's packages (see
# lib/debian-package.sh: nothing installed system-wide).
#   scripts/install-etcd.sh [3.5|3.4]      3.5 (default) comes from trixie, 3.4 from bookworm
# Prints the path of the etcd binary. ETCD_BIN, when set, names an etcd of your own: it is printed as is.
set -euo pipefail
if [ -n "${ETCD_BIN:-}" ]; then echo "$ETCD_BIN"; exit 0; fi
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/debian-package.sh
. "$root/scripts/lib/debian-package.sh"
version=${1:-3.5}
case "$version" in
  3.5) suite=trixie ;;
  3.4) suite=bookworm ;;
  *) echo "install-etcd: unknown etcd version '$version' (3.5 or 3.4)" >&2; exit 2 ;;
esac
dest="$root/.tools/etcd-$version"
bin="$dest/usr/bin/etcd"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
debian_unpack "etcd $version" "$suite" "$dest" \
  "Install an etcd $version server yourself and set ETCD_BIN=/path/to/etcd (and ETCDCTL_BIN for the benchmark)." \
  etcd-server etcd-client
[ -x "$bin" ] || debian_need "etcd $version" "the package had no usr/bin/etcd" "Set ETCD_BIN=/path/to/etcd."
"$bin" --version | sed -n 1p >&2  # sed reads it all: head could SIGPIPE etcd under pipefail
echo "$bin"
