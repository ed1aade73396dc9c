/**
 * Which keys etcd-sync copies. Pure: every other module asks this one.
 *
 * Kubernetes stores objects under `<prefix><resource>/<namespace>/<name>` (namespaced) or
 * `<prefix><resource>/<name>` (cluster-scoped). Names never contain `/`, so the number of
 * segments after the resource tells the two apart. Resources of API groups carry the group
 * (`example.com/widgets`); built-in prefixes never contain a dot, groups always do. A few
 * built-ins use two segments (`services/specs`, `services/endpoints`).
 */

export const DEFAULT_KEY_PREFIX = '/registry/';
export const DEFAULT_EXCLUDE_NAMESPACES: readonly string[] = ['kube-system', 'kube-public', 'kube-node-lease'];
export const DEFAULT_EXCLUDE_PREFIXES: readonly string[] = ['/registry/masterleases/', '/registry/peerserverleases/'];

/** Built-in resources stored under two path segments. */
const TWO_SEGMENT_RESOURCES = new Set(['services/specs', 'services/endpoints']);

export interface ScopeRules {
  /** Only keys under this prefix are ever written. Default `/registry/`. */
  keyPrefix: Buffer;
  /** Keys of these namespaces, and their Namespace objects, are never copied. */
  excludeNamespaces: ReadonlySet<string>;
  /** Whole prefixes never copied (keys that belong to one cluster only). */
  excludePrefixes: readonly Buffer[];
}

export interface ParsedKey {
  /** `pods`, `services/specs`, `example.com/widgets`. */
  resource: string;
  /** Absent for cluster-scoped objects. */
  namespace?: string;
  name: string;
}

export type ScopeDecision = 'in-scope' | 'outside-prefix' | 'excluded-prefix' | 'excluded-namespace';

/**
 * Parses the part of a key after the prefix. Returns undefined for layouts that are not a
 * Kubernetes object key (then no namespace can be told, and the key is copied as is).
 */
export function parseKubernetesKey(rest: string): ParsedKey | undefined {
  // Runs for every key of every scan: slash positions instead of split/slice/join.
  const segments: string[] = [];
  let start = 0;
  for (;;) {
    const slash = rest.indexOf('/', start);
    const end = slash < 0 ? rest.length : slash;
    if (end === start) return undefined; // an empty segment
    segments.push(rest.slice(start, end));
    if (slash < 0) break;
    if (segments.length === 4) return undefined; // at most resource (2) + namespace + name
    start = slash + 1;
  }
  const first = segments[0] as string;
  const second = segments[1];
  const twoSegments = first.includes('.') || (second !== undefined && TWO_SEGMENT_RESOURCES.has(`${first}/${second}`));
  const resource = twoSegments ? `${first}/${second ?? ''}` : first;
  const tail = segments.length - (twoSegments ? 2 : 1);
  const at = twoSegments ? 2 : 1;
  if (tail === 1) return { resource, name: segments[at] as string };
  if (tail === 2) return { resource, namespace: segments[at] as string, name: segments[at + 1] as string };
  return undefined;
}

export function startsWith(key: Buffer, prefix: Buffer): boolean {
  return key.length >= prefix.length && key.compare(prefix, 0, prefix.length, 0, prefix.length) === 0;
}

/** The smallest key greater than every key with this prefix (etcd's range_end for a prefix). */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if ((end[i] as number) < 0xff) {
      end[i] = (end[i] as number) + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]); // prefix of only 0xff bytes: to the end of the keyspace
}

export class Scope {
  readonly keyPrefix: Buffer;
  readonly rangeEnd: Buffer;
  private readonly excludeNamespaces: ReadonlySet<string>;
  private readonly excludePrefixes: readonly Buffer[];

  constructor(rules: ScopeRules) {
    this.keyPrefix = rules.keyPrefix;
    this.rangeEnd = prefixEnd(rules.keyPrefix);
    this.excludeNamespaces = rules.excludeNamespaces;
    this.excludePrefixes = rules.excludePrefixes;
  }

  decide(key: Buffer): ScopeDecision {
    if (!startsWith(key, this.keyPrefix)) return 'outside-prefix';
    for (const prefix of this.excludePrefixes) {
      if (startsWith(key, prefix)) return 'excluded-prefix';
    }
    if (this.excludeNamespaces.size === 0) return 'in-scope';
    // latin1 maps bytes 1:1, so binary keys cannot confuse the split.
    const parsed = parseKubernetesKey(key.toString('latin1', this.keyPrefix.length));
    if (parsed === undefined) return 'in-scope';
    if (parsed.namespace !== undefined && this.excludeNamespaces.has(parsed.namespace)) return 'excluded-namespace';
    if (parsed.resource === 'namespaces' && parsed.namespace === undefined && this.excludeNamespaces.has(parsed.name)) {
      return 'excluded-namespace';
    }
    return 'in-scope';
  }

  inScope(key: Buffer): boolean {
    return this.decide(key) === 'in-scope';
  }
}

export function defaultScopeRules(): ScopeRules {
  return {
    keyPrefix: Buffer.from(DEFAULT_KEY_PREFIX),
    excludeNamespaces: new Set(DEFAULT_EXCLUDE_NAMESPACES),
    excludePrefixes: DEFAULT_EXCLUDE_PREFIXES.map((p) => Buffer.from(p)),
  };
}
