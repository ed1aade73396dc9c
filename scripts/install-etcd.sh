#!/usr/bin/env bash
# Puts an etcd server into .tools/etcd-<version>/ (git-ignored) from Debian's packages, without
# changing the machine's apt configuration: a temporary sources list that reuses the Debian
# mirror already configured on this machine, `apt-get download`, `dpkg -x`.
#   scripts/install-etcd.sh [3.5|3.4]      3.5 (default) comes from trixie, 3.4 from bookworm
# Prints the path of the etcd binary. ETCD_BIN, when set, names an etcd of your own: it is printed as is.
set -euo pipefail
if [ -n "${ETCD_BIN:-}" ]; then echo "$ETCD_BIN"; exit 0; fi
root=$(cd "$(dirname "$0")/.." && pwd)
version=${1:-3.5}
case "$version" in
  3.5) suite=trixie ;;
  3.4) suite=bookworm ;;
  *) echo "install-etcd: unknown etcd version '$version' (3.5 or 3.4)" >&2; exit 2 ;;
esac
dest="$root/.tools/etcd-$version"
bin="$dest/usr/bin/etcd"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi

need() {
  echo "etcd-sync: etcd $version is needed for this and could not be installed automatically: $1." >&2
  echo "  Install an etcd $version server yourself and set ETCD_BIN=/path/to/etcd (and ETCDCTL_BIN for the benchmark)." >&2
  exit 3
}
command -v apt-get >/dev/null && command -v dpkg >/dev/null || need "apt-get and dpkg are not available"

# The Debian mirror this machine already uses (deb822 .sources or one-line .list).
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  mirror=$(awk '/^URIs:/{for(i=2;i<=NF;i++) if ($i ~ /\/debian\/?$/) {print $i; exit}}' "$f")
  [ -n "$mirror" ] && break
done
if [ -z "$mirror" ]; then
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '$1=="deb"{for(i=2;i<=NF;i++) if ($i ~ /^(https?|file):.*\/debian\/?$/) {print $i; exit}}')
fi
[ -n "$mirror" ] || need "no Debian mirror found in /etc/apt/sources.list*"

keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$keyring" ] || need "no Debian archive keyring at $keyring"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/debs"
echo "deb [signed-by=$keyring] $mirror $suite main" > "$tmp/sources.list"
apt_opts=(-q -o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" -o APT::Sandbox::User=root)
echo "install-etcd: fetching etcd-server $version from Debian $suite ($mirror)" >&2
apt-get "${apt_opts[@]}" update >&2 || need "apt-get update of $suite failed"
(cd "$tmp/debs" && apt-get "${apt_opts[@]}" download etcd-server etcd-client >&2) || need "apt-get download etcd-server etcd-client failed"
mkdir -p "$dest.partial"
for deb in "$tmp"/debs/*.deb; do dpkg -x "$deb" "$dest.partial"; done
[ -x "$dest.partial/usr/bin/etcd" ] || need "the package had no usr/bin/etcd"
rm -rf "$dest"
mv "$dest.partial" "$dest"
"$bin" --version | sed -n 1p >&2  # sed reads it all: head could SIGPIPE etcd under pipefail
echo "$bin"
