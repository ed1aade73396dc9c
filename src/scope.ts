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
const TWO_SEGMENT_RESOURCES: readonly (readonly [string, string])[] = [
  ['services', 'specs'],
  ['services', 'endpoints'],
];

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

/** Whether key[start, end) holds exactly the bytes of `word`. */
function spanEquals(key: Buffer, start: number, end: number, word: Buffer): boolean {
  // A loop, not Buffer.compare with offsets: that native call cost ~160 ns, several per key.
  if (end - start !== word.length) return false;
  for (let i = 0; i < word.length; i++) if (key[start + i] !== word[i]) return false;
  return true;
}

export function startsWith(key: Buffer, prefix: Buffer): boolean {
  return key.length >= prefix.length && spanEquals(key, 0, prefix.length, prefix);
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

const SLASH = 0x2f;
const DOT = 0x2e;
const bytesOf = (s: string): Buffer => Buffer.from(s, 'latin1');
const NAMESPACES = bytesOf('namespaces');
const TWO_SEGMENT_RESOURCE_BYTES = TWO_SEGMENT_RESOURCES.map(([first, second]) => [bytesOf(first), bytesOf(second)] as const);

/** An object key's segments after the prefix: segment i is key[starts[i], ends[i]). */
interface KeyLayout {
  starts: number[];
  ends: number[];
  count: number;
  /** How many of the first segments name the resource: 2 for `services/specs`, `example.com/widgets`. */
  resourceSegments: 1 | 2;
}

/**
 * Reads the layout of key[from..], or undefined for layouts that are not a Kubernetes object key
 * (then no namespace can be told, and the key is copied as is). One pass over the bytes, no
 * strings: Scope.decide runs it for every key of every scan and every streamed event.
 */
function readLayout(key: Buffer, from: number): KeyLayout | undefined {
  const starts = [from, 0, 0, 0];
  const ends = [0, 0, 0, 0];
  let count = 1;
  let dotInFirst = false;
  for (let i = from; i < key.length; i++) {
    const b = key[i] as number;
    if (b === SLASH) {
      // An empty segment, or a fifth: at most resource (2) + namespace + name.
      if (i === starts[count - 1] || count === 4) return undefined;
      ends[count - 1] = i;
      starts[count++] = i + 1;
    } else if (b === DOT && count === 1) dotInFirst = true;
  }
  if (key.length === starts[count - 1]) return undefined;
  ends[count - 1] = key.length;
  const s0 = starts[0] as number;
  const e0 = ends[0] as number;
  const twoSegments =
    dotInFirst ||
    (count >= 2 && TWO_SEGMENT_RESOURCE_BYTES.some(([first, second]) => spanEquals(key, s0, e0, first) && spanEquals(key, starts[1] as number, ends[1] as number, second)));
  const resourceSegments = twoSegments ? 2 : 1;
  const tail = count - resourceSegments;
  return tail === 1 || tail === 2 ? { starts, ends, count, resourceSegments } : undefined;
}

/** The object a key names, read from key[from..] (from: the key prefix's length); latin1 text. */
export function parseKubernetesKey(key: Buffer, from = 0): ParsedKey | undefined {
  const layout = readLayout(key, from);
  if (layout === undefined) return undefined;
  const { starts, ends, count, resourceSegments: r } = layout;
  // latin1 maps bytes 1:1, so binary keys cannot confuse the text.
  const text = (i: number): string => key.toString('latin1', starts[i], ends[i]);
  const resource = r === 2 ? `${text(0)}/${text(1)}` : text(0);
  if (count - r === 1) return { resource, name: text(r) };
  return { resource, namespace: text(r), name: text(r + 1) };
}

/**
 * The prefix as a directory: `/registry` means `/registry/` (kube-apiserver's --etcd-prefix is
 * given without the slash and its keys are `<prefix>/<resource>/...`), so that `/registry-other/x`
 * and `/registryfoo` are never under it.
 */
export function normalizePrefix(prefix: Buffer): Buffer {
  return prefix.length > 0 && prefix[prefix.length - 1] === SLASH ? prefix : Buffer.concat([prefix, Buffer.from('/')]);
}

export class Scope {
  readonly keyPrefix: Buffer;
  readonly rangeEnd: Buffer;
  private readonly excludePrefixes: readonly Buffer[];
  /** The excluded namespaces as latin1 bytes, the way keys are read. */
  private readonly excludedNamespaceBytes: readonly Buffer[];

  constructor(rules: ScopeRules) {
    this.keyPrefix = normalizePrefix(rules.keyPrefix);
    this.rangeEnd = prefixEnd(this.keyPrefix);
    this.excludePrefixes = rules.excludePrefixes;
    // A name with characters beyond latin1 can match no key's latin1 reading; leave it out.
    this.excludedNamespaceBytes = [...rules.excludeNamespaces].filter((ns) => bytesOf(ns).toString('latin1') === ns).map(bytesOf);
  }

  decide(key: Buffer): ScopeDecision {
    if (!startsWith(key, this.keyPrefix)) return 'outside-prefix';
    for (const prefix of this.excludePrefixes) {
      if (startsWith(key, prefix)) return 'excluded-prefix';
    }
    if (this.excludedNamespaceBytes.length === 0) return 'in-scope';
    const span = this.namespaceSpan(key);
    if (span !== undefined && this.isExcluded(key, span[0], span[1])) return 'excluded-namespace';
    return 'in-scope';
  }

  inScope(key: Buffer): boolean {
    return this.decide(key) === 'in-scope';
  }

  /**
   * The bytes of the key that name a namespace: a namespaced object's namespace, or a Namespace
   * object's name. Read loosely, so that what follows cannot hide an excluded namespace: the
   * segment after the resource names a namespace whenever a `/` follows it, whatever comes after
   * (an empty name, `..`, more segments); a Namespace object's name whatever follows it.
   */
  private namespaceSpan(key: Buffer): [number, number] | undefined {
    const from = this.keyPrefix.length;
    const segments = segmentsOf(key, from, 4);
    const first = segments[0];
    if (first === undefined || first[0] === first[1]) return undefined;
    const second = segments[1];
    if (spanEquals(key, first[0], first[1], NAMESPACES)) return second;
    const dotInFirst = key.subarray(first[0], first[1]).includes(DOT);
    const twoSegments =
      dotInFirst || (second !== undefined && TWO_SEGMENT_RESOURCE_BYTES.some(([a, b]) => spanEquals(key, first[0], first[1], a) && spanEquals(key, second[0], second[1], b)));
    const r = twoSegments ? 2 : 1;
    const namespace = segments[r];
    // Namespaced only when something follows the namespace segment (a cluster-scoped object's name is last).
    return namespace !== undefined && namespace[1] < key.length ? namespace : undefined;
  }

  private isExcluded(key: Buffer, start: number, end: number): boolean {
    for (const ns of this.excludedNamespaceBytes) if (spanEquals(key, start, end, ns)) return true;
    return false;
  }
}

/** The first `most` `/`-separated segments of key[from..] as [start, end) (empty ones included). */
function segmentsOf(key: Buffer, from: number, most: number): [number, number][] {
  const out: [number, number][] = [];
  let start = from;
  for (let i = from; i <= key.length && out.length < most; i++) {
    if (i === key.length || key[i] === SLASH) {
      out.push([start, i]);
      start = i + 1;
    }
  }
  return out;
}

export function defaultScopeRules(): ScopeRules {
  return {
    keyPrefix: Buffer.from(DEFAULT_KEY_PREFIX),
    excludeNamespaces: new Set(DEFAULT_EXCLUDE_NAMESPACES),
    excludePrefixes: DEFAULT_EXCLUDE_PREFIXES.map((p) => Buffer.from(p)),
  };
}
