/**
 * kube-apiserver's EncryptionConfiguration (apiserver.config.k8s.io/v1, and the legacy
 * `kind: EncryptionConfig`, `apiVersion: v1`): parsed and validated. Pure.
 */
import { parse } from 'yaml';
import { ConfigError } from '../errors.js';

export type CipherType = 'aescbc' | 'aesgcm' | 'secretbox';
export const CIPHER_TYPES: readonly CipherType[] = ['aescbc', 'aesgcm', 'secretbox'];

export interface EncryptionKey {
  name: string;
  /** base64 as written in the file. */
  secret: string;
  /** Decoded secret. */
  bytes: Buffer;
}

export type Provider =
  | { type: CipherType; keys: EncryptionKey[] }
  | { type: 'identity' }
  | { type: 'kms'; name: string; spec: Record<string, unknown> };

export interface ResourceEntry {
  resources: string[];
  providers: Provider[];
}

export interface EncryptionConfig {
  apiVersion: string;
  kind: string;
  resources: ResourceEntry[];
}

const KEY_LENGTHS: Record<CipherType, readonly number[]> = { aescbc: [16, 24, 32], aesgcm: [16, 24, 32], secretbox: [32] };

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function decodeSecret(where: string, secret: unknown, type: CipherType): Buffer {
  if (typeof secret !== 'string' || secret.length === 0) throw new ConfigError(`${where}.secret: missing`);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(secret) || secret.length % 4 !== 0) throw new ConfigError(`${where}.secret: not valid base64`);
  const bytes = Buffer.from(secret, 'base64');
  if (!KEY_LENGTHS[type].includes(bytes.length)) {
    throw new ConfigError(`${where}.secret: ${type} keys must be ${KEY_LENGTHS[type].join(', ')} bytes, this one is ${bytes.length}`);
  }
  return bytes;
}

function parseProvider(where: string, raw: unknown): Provider {
  if (!isRecord(raw)) throw new ConfigError(`${where}: must be a mapping with one provider`);
  const types = Object.keys(raw);
  if (types.length !== 1) throw new ConfigError(`${where}: must name exactly one provider, got ${types.join(', ') || 'none'}`);
  const type = types[0] as string;
  const body = raw[type];
  if (type === 'identity') return { type: 'identity' };
  if (type === 'kms') {
    if (!isRecord(body) || typeof body.name !== 'string' || body.name.length === 0) throw new ConfigError(`${where}.kms.name: missing`);
    return { type: 'kms', name: body.name, spec: body };
  }
  if (!(CIPHER_TYPES as readonly string[]).includes(type)) {
    throw new ConfigError(`${where}: unknown provider '${type}' (expected aescbc, aesgcm, secretbox, identity or kms)`);
  }
  const cipher = type as CipherType;
  if (!isRecord(body) || !Array.isArray(body.keys) || body.keys.length === 0) throw new ConfigError(`${where}.${cipher}.keys: needs at least one key`);
  const keys = body.keys.map((k: unknown, i: number): EncryptionKey => {
    const at = `${where}.${cipher}.keys[${i}]`;
    if (!isRecord(k) || typeof k.name !== 'string' || k.name.length === 0) throw new ConfigError(`${at}.name: missing`);
    return { name: k.name, secret: String(k.secret ?? ''), bytes: decodeSecret(at, k.secret, cipher) };
  });
  return { type: cipher, keys };
}

/** Parses and validates one file's text; every error names the file and the place in it. */
export function parseEncryptionConfig(text: string, file: string): EncryptionConfig {
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (err) {
    throw new ConfigError(`${file}: not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  if (!isRecord(doc)) throw new ConfigError(`${file}: not an EncryptionConfiguration`);
  const modern = doc.kind === 'EncryptionConfiguration' && doc.apiVersion === 'apiserver.config.k8s.io/v1';
  const legacy = doc.kind === 'EncryptionConfig' && doc.apiVersion === 'v1';
  if (!modern && !legacy) {
    throw new ConfigError(`${file}: expected kind EncryptionConfiguration (apiserver.config.k8s.io/v1) or EncryptionConfig (v1), got ${String(doc.kind)} (${String(doc.apiVersion)})`);
  }
  if (!Array.isArray(doc.resources) || doc.resources.length === 0) throw new ConfigError(`${file}: resources: needs at least one entry`);
  const kmsNames = new Map<string, { at: string; spec: string }>();
  const resources = doc.resources.map((entry: unknown, r: number): ResourceEntry => {
    const where = `${file}: resources[${r}]`;
    if (!isRecord(entry) || !Array.isArray(entry.resources) || entry.resources.length === 0) throw new ConfigError(`${where}.resources: needs at least one resource`);
    if (!Array.isArray(entry.providers) || entry.providers.length === 0) throw new ConfigError(`${where}.providers: needs at least one provider`);
    const providers = entry.providers.map((p: unknown, i: number) => parseProvider(`${where}.providers[${i}]`, p));
    providers.forEach((provider: Provider, i: number) => {
      const at = `${where}.providers[${i}]`;
      if (provider.type === 'kms') {
        // One plugin may serve several resource entries, with the same settings; anything else clashes.
        const seen = kmsNames.get(provider.name);
        const spec = JSON.stringify(provider.spec);
        if (seen && (seen.at.startsWith(`${where}.`) || seen.spec !== spec)) {
          throw new ConfigError(`${at}.kms.name: '${provider.name}' clashes with ${seen.at}`);
        }
        kmsNames.set(provider.name, { at, spec });
      }
      if (provider.type === 'aescbc' || provider.type === 'aesgcm' || provider.type === 'secretbox') {
        // Within one provider a name must be unique; across providers reads try each key of the name in order.
        const keyNames = new Map<string, string>();
        provider.keys.forEach((key, k) => {
          const seen = keyNames.get(key.name);
          if (seen) throw new ConfigError(`${at}.${provider.type}.keys[${k}].name: '${key.name}' is used twice (also ${seen})`);
          keyNames.set(key.name, `${at}.${provider.type}.keys[${k}]`);
        });
      }
    });
    return { resources: entry.resources.map(String), providers };
  });
  return { apiVersion: String(doc.apiVersion), kind: String(doc.kind), resources };
}
