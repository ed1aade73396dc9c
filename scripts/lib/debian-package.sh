# Sourced by the install-*.sh scripts: unpacks Debian packages into a folder of the project
# (.tools/, git-ignored) without changing the machine's apt configuration: a temporary sources
# list that reuses the Debian mirror already configured on this machine, `apt-get download`,
# `dpkg -x`. Nothing is installed system-wide; no maintainer script runs.
#   debian_unpack <what> <suite> <dest> <package>...
# Exits 3 with a line saying what to install by hand when it cannot.

debian_need() {
  echo "etcd-sync: $1 is needed for this and could not be installed automatically: $2." >&2
  echo "  $3" >&2
  exit 3
}

debian_unpack() {
  local what=$1 suite=$2 dest=$3 hint=$4
  shift 4
  command -v apt-get >/dev/null && command -v dpkg >/dev/null || debian_need "$what" "apt-get and dpkg are not available" "$hint"
  # The Debian mirror this machine already uses (deb822 .sources or one-line .list).
  local mirror="" f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    mirror=$(awk '/^URIs:/{for(i=2;i<=NF;i++) if ($i ~ /\/debian\/?$/) {print $i; exit}}' "$f")
    [ -n "$mirror" ] && break
  done
  if [ -z "$mirror" ]; then
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '$1=="deb"{for(i=2;i<=NF;i++) if ($i ~ /^(https?|file):.*\/debian\/?$/) {print $i; exit}}')
  fi
  [ -n "$mirror" ] || debian_need "$what" "no Debian mirror found in /etc/apt/sources.list*" "$hint"
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  [ -f "$keyring" ] || debian_need "$what" "no Debian archive keyring at $keyring" "$hint"

  local tmp
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: tmp is local
  trap "rm -rf '$tmp'" EXIT
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/debs"
  echo "deb [signed-by=$keyring] $mirror $suite main" > "$tmp/sources.list"
  local apt_opts=(-q -o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" -o APT::Sandbox::User=root)
  echo "etcd-sync: fetching $* for $what from Debian $suite ($mirror)" >&2
  apt-get "${apt_opts[@]}" update >&2 || debian_need "$what" "apt-get update of $suite failed" "$hint"
  (cd "$tmp/debs" && apt-get "${apt_opts[@]}" download "$@" >&2) || debian_need "$what" "apt-get download $* failed" "$hint"
  rm -rf "$dest.partial"
  mkdir -p "$dest.partial"
  local deb
  for deb in "$tmp"/debs/*.deb; do dpkg -x "$deb" "$dest.partial"; done
  rm -rf "$dest"
  mv "$dest.partial" "$dest"
}
