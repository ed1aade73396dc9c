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
  /** A key of that name exists but none of them decrypts it to a stored object. */
  | { status: 'unreadable'; provider: CipherType; keyName: string }
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

/** The providers kube-apiserver uses for this etcd key's resource; all of them when no entry names it. */
export function providersFor(config: EncryptionConfig, etcdKey: Buffer, keyPrefix: Buffer): Provider[] {
  const parsed = parseKubernetesKey(etcdKey, keyPrefix.length);
  if (parsed) {
    // `secrets`, `services/specs` (core: `secrets`, `services`) or `example.com/widgets` → `widgets.example.com`
    const [first = '', second = ''] = parsed.resource.split('/');
    const group = first.includes('.') ? first : '';
    const name = group ? `${second}.${group}` : first;
    const entry = config.resources.find((e) => e.resources.some((r) => r === name || r === '*.*' || r === (group ? `*.${group}` : '*.')));
    if (entry) return entry.providers;
  }
  return config.resources.flatMap((e) => e.providers);
}

export function verifyValue(etcdKey: Buffer, value: Buffer, providers: readonly Provider[]): Verdict {
  const rest = value.subarray(ENCRYPTED_PREFIX.length).toString('latin1');
  const [type = '', version = '', name = ''] = rest.split(':', 3);
  if (type === 'kms') return { status: 'kms', provider: 'kms', keyName: name };
  if (type !== 'aescbc' && type !== 'aesgcm' && type !== 'secretbox') return { status: 'unknown-key', provider: type, keyName: name };
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
