#!/usr/bin/env bash
# Issues etcd-sync's client certificate for the PRIMARY etcd and prints it as the Secret the
# standby's Deployment mounts (etcd-sync-primary-etcd: ca.crt, tls.crt, tls.key).
# Run it on a control-plane node of the primary (it needs the etcd CA's key, usually root-only):
#   sudo deploy/primary-client-cert.sh > etcd-sync-primary-etcd.yaml
#   kubectl --context <standby> apply -f etcd-sync-primary-etcd.yaml && rm etcd-sync-primary-etcd.yaml
# The certificate's common name is the etcd user when etcd authenticates by certificate: grant
# that user read on the synced prefix (docs/operations.md, "Install on the standby").
#   --ca-dir DIR    the primary etcd's CA (ca.crt, ca.key)      default /etc/kubernetes/pki/etcd
#   --cn NAME       the certificate's common name (etcd user)    default etcd-sync
#   --days N        validity                                      default 365
#   --namespace NS  the Secret's namespace on the standby         default etcd-sync
set -euo pipefail
ca_dir=/etc/kubernetes/pki/etcd cn=etcd-sync days=365 namespace=etcd-sync
usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --ca-dir) ca_dir=${2:?--ca-dir needs a folder}; shift 2 ;;
    --cn) cn=${2:?--cn needs a name}; shift 2 ;;
    --days) days=${2:?--days needs a number}; shift 2 ;;
    --namespace) namespace=${2:?--namespace needs a name}; shift 2 ;;
    -h|--help) usage ;;
    *) echo "primary-client-cert: unknown argument '$1' (--help lists them)" >&2; exit 2 ;;
  esac
done
for f in ca.crt ca.key; do
  [ -r "$ca_dir/$f" ] || { echo "primary-client-cert: cannot read $ca_dir/$f (the primary etcd's CA; run as root on a primary control-plane node, or give --ca-dir)" >&2; exit 2; }
done
command -v openssl >/dev/null || { echo "primary-client-cert: openssl is needed" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077
printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' > "$work/ext"
openssl req -newkey rsa:2048 -nodes -subj "/CN=$cn" -keyout "$work/tls.key" -out "$work/tls.csr" 2>/dev/null
openssl x509 -req -in "$work/tls.csr" -CA "$ca_dir/ca.crt" -CAkey "$ca_dir/ca.key" -CAserial "$work/ca.srl" -CAcreateserial \
  -days "$days" -sha256 -extfile "$work/ext" -out "$work/tls.crt" 2>/dev/null
b64() { base64 < "$1" | tr -d '\n'; }
cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: etcd-sync-primary-etcd
  namespace: $namespace
  labels: { app.kubernetes.io/name: etcd-sync }
type: Opaque
data:
  ca.crt: $(b64 "$ca_dir/ca.crt")
  tls.crt: $(b64 "$work/tls.crt")
  tls.key: $(b64 "$work/tls.key")
YAML
echo "primary-client-cert: issued CN=$cn for $days days, signed by $ca_dir/ca.crt" >&2
