/**
 * Merges the standby's encryption keys into the primary's configuration so that each
 * kube-apiserver can read what the other wrote. Pure.
 *
 * Per `resources` entry: the primary's providers and keys first (the first key of the first
 * provider encrypts, so the primary keeps writing with its key), then the standby's keys in the
 * provider of the same type, renamed when the name is taken, an identical secret not added twice;
 * identity and kms providers kept in order. Entries only the standby has come last.
 */
import { stringify } from 'yaml';
import { ConfigError } from '../errors.js';
import type { EncryptionConfig, EncryptionKey, Provider, ResourceEntry } from './config.js';

export interface Rename {
  resources: string[];
  type: string;
  from: string;
  to: string;
}

export interface MergeResult {
  config: EncryptionConfig;
  renames: Rename[];
}

function sameResources(a: ResourceEntry, b: ResourceEntry): boolean {
  const x = [...a.resources].sort();
  const y = [...b.resources].sort();
  return x.length === y.length && x.every((r, i) => r === y[i]);
}

function cloneProvider(p: Provider): Provider {
  return p.type === 'identity' || p.type === 'kms' ? { ...p } : { type: p.type, keys: p.keys.map((k) => ({ ...k })) };
}

/** `key1` → `key2`, `key2`…; a name without a number gets one. */
function freeName(name: string, taken: Set<string>): string {
  const base = name.replace(/\d+$/, '');
  for (let n = 2; ; n++) {
    const candidate = `${base}${n}`;
    if (!taken.has(candidate)) return candidate;
  }
}

function mergeEntry(primary: ResourceEntry, standby: ResourceEntry, renames: Rename[]): ResourceEntry {
  const providers = primary.providers.map(cloneProvider);
  for (const theirs of standby.providers) {
    if (theirs.type === 'identity') {
      if (!providers.some((p) => p.type === 'identity')) providers.push({ type: 'identity' });
      continue;
    }
    if (theirs.type === 'kms') {
      const ours = providers.find((p): p is Extract<Provider, { type: 'kms' }> => p.type === 'kms' && p.name === theirs.name);
      if (!ours) providers.push(cloneProvider(theirs));
      else if (JSON.stringify(ours.spec) !== JSON.stringify(theirs.spec)) {
        throw new ConfigError(`kms provider '${theirs.name}' for ${primary.resources.join(',')} has different settings in the primary and the standby file`);
      }
      continue;
    }
    const sameType = providers.filter((p): p is Extract<Provider, { keys: EncryptionKey[] }> => p.type === theirs.type);
    const existing = sameType.flatMap((p) => p.keys);
    const taken = new Set(existing.map((k) => k.name));
    const added: EncryptionKey[] = [];
    for (const key of theirs.keys) {
      if (existing.some((k) => k.bytes.equals(key.bytes)) || added.some((k) => k.bytes.equals(key.bytes))) continue;
      let name = key.name;
      if (taken.has(name)) {
        name = freeName(name, taken);
        renames.push({ resources: primary.resources, type: theirs.type, from: key.name, to: name });
      }
      taken.add(name);
      added.push({ ...key, name });
    }
    const target = sameType[0];
    if (target) target.keys.push(...added);
    else if (added.length > 0) providers.push({ type: theirs.type, keys: added });
  }
  return { resources: [...primary.resources], providers };
}

export function mergeConfigs(primary: EncryptionConfig, standby: EncryptionConfig): MergeResult {
  const renames: Rename[] = [];
  const used = new Set<ResourceEntry>();
  const resources = primary.resources.map((entry) => {
    const match = standby.resources.find((s) => !used.has(s) && sameResources(entry, s));
    if (!match) return { resources: [...entry.resources], providers: entry.providers.map(cloneProvider) };
    used.add(match);
    return mergeEntry(entry, match, renames);
  });
  for (const entry of standby.resources) {
    if (!used.has(entry)) resources.push({ resources: [...entry.resources], providers: entry.providers.map(cloneProvider) });
  }
  return { config: { apiVersion: 'apiserver.config.k8s.io/v1', kind: 'EncryptionConfiguration', resources }, renames };
}

function providerYaml(p: Provider): Record<string, unknown> {
  if (p.type === 'identity') return { identity: {} };
  if (p.type === 'kms') return { kms: p.spec };
  return { [p.type]: { keys: p.keys.map((k) => ({ name: k.name, secret: k.secret })) } };
}

/** Deterministic YAML, with a comment saying what was merged and renamed. */
export function mergedYaml(result: MergeResult, primaryFile: string, standbyFile: string): string {
  const header = [
    `# Merged by etcd-sync encryption merge: ${primaryFile} (primary, encrypts) + ${standbyFile} (standby).`,
    '# Copy this file to every control-plane node of both clusters, then restart kube-apiserver.',
    ...(result.renames.length === 0
      ? ['# No standby key was renamed.']
      : result.renames.map((r) => `# Renamed standby key: ${r.resources.join(',')} ${r.type} ${r.from} -> ${r.to}`)),
  ];
  const doc = {
    apiVersion: result.config.apiVersion,
    kind: result.config.kind,
    resources: result.config.resources.map((e) => ({ resources: e.resources, providers: e.providers.map(providerYaml) })),
  };
  return `${header.join('\n')}\n${stringify(doc, { lineWidth: 0 })}`;
}
