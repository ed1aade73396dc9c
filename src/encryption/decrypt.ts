/**
 * Decrypts an etcd value the way kube-apiserver reads it: the provider by the value's prefix,
 * the key by `name:` prefix, every key of that name in order, moving on when one fails. Pure.
 */
import { type CipherGCMTypes, createDecipheriv } from 'node:crypto';
import nacl from 'tweetnacl';
import { parseKubernetesKey } from '../scope.js';
import type { CipherType, EncryptionConfig, EncryptionKey, Provider } from './config.js';

export const ENCRYPTED_PREFIX = Buffer.from('k8s:enc:');

export type Verdict =
  | { status: 'readable'; provider: CipherType; keyName: string }
  /**
   * A key of that name exists but none of them decrypts it to a stored object; or (provider
   * `identity`) no `resources` entry names the value's resource, so it is read as it is.
   */
  | { status: 'unreadable'; provider: CipherType | 'identity'; keyName: string }
  /** No configured key (or provider) has the name the value was written with. */
  | { status: 'unknown-key'; provider: string; keyName: string }
  /** kms values need the KMS plugin: not verifiable offline. */
  | { status: 'kms'; provider: 'kms'; keyName: string };

/** A stored Kubernetes object: protobuf behind `k8s\0`, JSON, or CBOR (self-described tag d9 d9 f7). */
export function isStoredObject(plain: Uint8Array): boolean {
  const b = Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength);
  if (b.length >= 4 && b.subarray(0, 4).equals(Buffer.from('k8s\0', 'latin1'))) return true;
  if (b.length >= 3 && b[0] === 0xd9 && b[1] === 0xd9 && b[2] === 0xf7) return true;
  const text = b.subarray(0, 64).toString('utf8').trimStart();
  if (text.startsWith('{')) {
    try {
      JSON.parse(b.toString('utf8'));
      return true;
    } catch {
      return false;
    }
  }
  return false;
}

function decrypt(type: CipherType, key: Buffer, data: Buffer, etcdKey: Buffer): Uint8Array | undefined {
  try {
    if (type === 'aescbc') {
      if (data.length < 32 || data.length % 16 !== 0) return undefined;
      const decipher = createDecipheriv(`aes-${key.length * 8}-cbc`, key, data.subarray(0, 16));
      return Buffer.concat([decipher.update(data.subarray(16)), decipher.final()]);
    }
    if (type === 'aesgcm') {
      if (data.length < 12 + 16) return undefined;
      const decipher = createDecipheriv(`aes-${key.length * 8}-gcm` as CipherGCMTypes, key, data.subarray(0, 12));
      decipher.setAAD(etcdKey);
      decipher.setAuthTag(data.subarray(data.length - 16));
      return Buffer.concat([decipher.update(data.subarray(12, data.length - 16)), decipher.final()]);
    }
    if (data.length < 24 + nacl.secretbox.overheadLength) return undefined;
    return nacl.secretbox.open(data.subarray(24), data.subarray(0, 24), key) ?? undefined;
  } catch {
    return undefined;
  }
}

/**
 * Built-in resources whose etcd keys name them otherwise than their API resource, or without
 * their API group (kubernetes/kubernetes pkg/kubeapiserver/default_storage_factory_builder.go and
 * the registries' storage prefixes): etcd's first path segment → [group, resource].
 */
const BUILT_IN_RESOURCES: Readonly<Record<string, readonly [string, string]>> = {
  minions: ['', 'nodes'],
  controllers: ['', 'replicationcontrollers'],
  'services/specs': ['', 'services'],
  'services/endpoints': ['', 'endpoints'],
  deployments: ['apps', 'deployments'],
  replicasets: ['apps', 'replicasets'],
  statefulsets: ['apps', 'statefulsets'],
  daemonsets: ['apps', 'daemonsets'],
  controllerrevisions: ['apps', 'controllerrevisions'],
  jobs: ['batch', 'jobs'],
  cronjobs: ['batch', 'cronjobs'],
  horizontalpodautoscalers: ['autoscaling', 'horizontalpodautoscalers'],
  poddisruptionbudgets: ['policy', 'poddisruptionbudgets'],
  roles: ['rbac.authorization.k8s.io', 'roles'],
  rolebindings: ['rbac.authorization.k8s.io', 'rolebindings'],
  clusterroles: ['rbac.authorization.k8s.io', 'clusterroles'],
  clusterrolebindings: ['rbac.authorization.k8s.io', 'clusterrolebindings'],
  networkpolicies: ['networking.k8s.io', 'networkpolicies'],
  ingress: ['networking.k8s.io', 'ingresses'],
  ingressclasses: ['networking.k8s.io', 'ingressclasses'],
  storageclasses: ['storage.k8s.io', 'storageclasses'],
  volumeattachments: ['storage.k8s.io', 'volumeattachments'],
  csinodes: ['storage.k8s.io', 'csinodes'],
  csidrivers: ['storage.k8s.io', 'csidrivers'],
  csistoragecapacities: ['storage.k8s.io', 'csistoragecapacities'],
  priorityclasses: ['scheduling.k8s.io', 'priorityclasses'],
  leases: ['coordination.k8s.io', 'leases'],
  certificatesigningrequests: ['certificates.k8s.io', 'certificatesigningrequests'],
  validatingwebhookconfigurations: ['admissionregistration.k8s.io', 'validatingwebhookconfigurations'],
  mutatingwebhookconfigurations: ['admissionregistration.k8s.io', 'mutatingwebhookconfigurations'],
  endpointslices: ['discovery.k8s.io', 'endpointslices'],
  runtimeclasses: ['node.k8s.io', 'runtimeclasses'],
  flowschemas: ['flowcontrol.apiserver.k8s.io', 'flowschemas'],
  prioritylevelconfigurations: ['flowcontrol.apiserver.k8s.io', 'prioritylevelconfigurations'],
};

/** An etcd key's API group and resource: `/registry/deployments/...` → apps, deployments; `/registry/example.com/widgets/...` → example.com, widgets. */
export function groupResourceOf(etcdKey: Buffer, keyPrefix: Buffer): { group: string; resource: string } | undefined {
  const parsed = parseKubernetesKey(etcdKey, keyPrefix.length);
  if (!parsed) return undefined;
  const builtIn = BUILT_IN_RESOURCES[parsed.resource];
  if (builtIn) return { group: builtIn[0], resource: builtIn[1] };
  const [first = '', second = ''] = parsed.resource.split('/');
  return first.includes('.') ? { group: first, resource: second } : { group: '', resource: first };
}

/**
 * The providers kube-apiserver reads this etcd key's resource with: those of the first
 * `resources` entry naming it — `resource` (core) or `resource.group`, `*.group` (`*.` for the
 * core group) or `*.*`, entries in order, earlier ones first — and none (the identity
 * transformer: an encrypted value is unreadable) when no entry names it (kubernetes/apiserver
 * pkg/server/options/encryptionconfig; the EncryptionConfiguration reference). All providers for
 * a key whose resource cannot be told.
 */
export function providersFor(config: EncryptionConfig, etcdKey: Buffer, keyPrefix: Buffer): Provider[] {
  const gr = groupResourceOf(etcdKey, keyPrefix);
  if (!gr) return config.resources.flatMap((e) => e.providers);
  const name = gr.group ? `${gr.resource}.${gr.group}` : gr.resource;
  const groupWildcard = `*.${gr.group}`;
  const entry = config.resources.find((e) => e.resources.some((r) => r === name || r === groupWildcard || r === '*.*'));
  return entry ? entry.providers : [];
}

export function verifyValue(etcdKey: Buffer, value: Buffer, providers: readonly Provider[]): Verdict {
  const rest = value.subarray(ENCRYPTED_PREFIX.length).toString('latin1');
  const [type = '', version = '', name = ''] = rest.split(':', 3);
  if (type === 'kms') return { status: 'kms', provider: 'kms', keyName: name };
  if (type !== 'aescbc' && type !== 'aesgcm' && type !== 'secretbox') return { status: 'unknown-key', provider: type, keyName: name };
  // No entry names the resource: kube-apiserver reads it with the identity transformer.
  if (providers.length === 0) return { status: 'unreadable', provider: 'identity', keyName: name };
  const prefix = `k8s:enc:${type}:${version}:`;
  const candidates: EncryptionKey[] = providers
    .filter((p): p is Extract<Provider, { keys: EncryptionKey[] }> => p.type === type)
    .flatMap((p) => p.keys)
    .filter((k) => value.subarray(0, prefix.length + k.name.length + 1).toString('latin1') === `${prefix}${k.name}:`);
  if (candidates.length === 0) return { status: 'unknown-key', provider: type, keyName: name };
  for (const key of candidates) {
    const plain = decrypt(type, key.bytes, value.subarray(prefix.length + key.name.length + 1), etcdKey);
    // aescbc has no integrity check: a wrong key "succeeds" now and then; the plaintext tells.
    if (plain && isStoredObject(plain)) return { status: 'readable', provider: type, keyName: key.name };
  }
  return { status: 'unreadable', provider: type, keyName: (candidates[0] as EncryptionKey).name };
}
