/**
 * ScanPlan and nextBound: the requests of a scan must return every key of the range exactly
 * once, in order, whatever the keyspace; and etcd's count per request (every key between a
 * request's start and its range_end, etcd-io/etcd#16510) must stay about a page. A simulated
 * etcd range over a sorted key list counts those visits.
 */
import { describe, expect, it } from 'vitest';
import { type KeyValue, PageSizer, ScanPlan, nextBound } from '../src/etcd/kv.js';
import { prefixEnd } from '../src/scope.js';

const cmp = (a: Buffer, b: Buffer): number => Buffer.compare(a, b);

/** Index of the first key >= k. */
function lowerBound(keys: readonly Buffer[], k: Buffer): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (cmp(keys[mid] as Buffer, k) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

const isOpenEnd = (end: Buffer): boolean => end.length === 1 && end[0] === 0;

/** Scans `keys` (sorted, distinct) over [start, end) as scanPages does; returns what it read and what etcd counted. */
function simulate(keys: readonly Buffer[], start: Buffer, end: Buffer, limit: number): { read: Buffer[]; requests: number; visits: number } {
  const plan = new ScanPlan(end);
  const read: Buffer[] = [];
  let requests = 0;
  let visits = 0;
  let request: { from: Buffer; bound: Buffer } | undefined = { from: start, bound: plan.bound };
  while (request !== undefined) {
    requests++;
    if (requests > 100_000) throw new Error('scan does not end');
    const lo = lowerBound(keys, request.from);
    const hi = isOpenEnd(request.bound) ? keys.length : lowerBound(keys, request.bound);
    // etcd counts every key of the range, however few it returns.
    visits += Math.max(0, hi - lo);
    const page = keys.slice(lo, Math.min(hi, lo + limit)).map((key) => ({ key }));
    read.push(...page.map((kv) => kv.key));
    request = plan.next(page, hi - lo > limit, limit * 1.5);
  }
  return { read, requests, visits };
}

/** A deterministic PRNG (mulberry32), so that a failure can be replayed. */
function rng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sortedUnique = (keys: Buffer[]): Buffer[] => {
  const sorted = keys.sort(cmp);
  return sorted.filter((k, i) => i === 0 || !k.equals(sorted[i - 1] as Buffer));
};

/**
 * Measured with the planner as it is (1.51M visits in 266 requests; 1.09M in 908), plus a
 * margin: what the bounds save against unbounded pages (10M and 5M visits in 100 requests),
 * and the requests they add (mostly empty ones, crossing gaps between dense stretches). Before
 * a step past a prefix's last key carried into the prefix, it took 335 and 1007 requests.
 */
const VISITS_KUBERNETES = 2_000_000;
const REQUESTS_KUBERNETES = 300;
const VISITS_BENCH = 1_400_000;
const REQUESTS_BENCH = 950;

const PREFIX = Buffer.from('/registry/');
const END = prefixEnd(PREFIX);

/** Kubernetes-shaped: a few large resources, many small ones, namespaced and cluster-scoped names. */
function kubernetesKeys(n: number): Buffer[] {
  const random = rng(7);
  const resources = ['configmaps', 'secrets', 'pods', 'events', 'leases', 'serviceaccounts', 'apiextensions.k8s.io/customresourcedefinitions', 'namespaces'];
  const weights = [40, 20, 20, 15, 2, 1, 1, 1];
  const total = weights.reduce((a, b) => a + b, 0);
  const keys: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    let pick = random() * total;
    let r = 0;
    while (pick >= (weights[r] as number)) pick -= weights[r++] as number;
    const resource = resources[r] as string;
    const ns = `ns-${Math.floor(random() * 300)}`;
    const name = `${resource.slice(0, 3)}-${Math.floor(random() * 1e9).toString(36)}`;
    keys.push(Buffer.from(r >= 6 ? `/registry/${resource}/${name}` : `/registry/${resource}/${ns}/${name}`));
  }
  return sortedUnique(keys);
}

describe('nextBound', () => {
  const sample = { first: Buffer.from('/registry/a/0000'), last: Buffer.from('/registry/a/0999'), keys: 1000 };

  it('is after `from` and not after the end, for any start', () => {
    const random = rng(11);
    for (let i = 0; i < 2000; i++) {
      const from = Buffer.from(Array.from({ length: 1 + Math.floor(random() * 30) }, () => (random() < 0.2 ? 0xff : Math.floor(random() * 256))));
      const end = random() < 0.2 ? Buffer.from([0]) : Buffer.concat([from, Buffer.from([Math.floor(random() * 256)])]);
      const bound = nextBound(from, end, sample, 1 + random() * 5000, random() < 0.5 ? 1 : 16 ** Math.floor(random() * 30));
      if (bound === end) continue;
      expect(cmp(bound, from), `${from.toString('hex')} -> ${bound.toString('hex')}`).toBeGreaterThan(0);
      if (!isOpenEnd(end)) expect(cmp(bound, end)).toBeLessThan(0);
    }
  });

  it('is the end without a sample of two keys', () => {
    expect(nextBound(Buffer.from('/registry/b'), END, undefined, 100)).toBe(END);
    expect(nextBound(Buffer.from('/registry/b'), END, { ...sample, keys: 1 }, 100)).toBe(END);
  });

  it('lands about `targetKeys` keys further at the density of the sample', () => {
    // Keys /registry/a/0000 ... /registry/a/9999, the sample their first thousand.
    const keys = Array.from({ length: 10_000 }, (_, i) => Buffer.from(`/registry/a/${String(i).padStart(4, '0')}`));
    const from = Buffer.from('/registry/a/1000');
    const bound = nextBound(from, END, sample, 500);
    expect(lowerBound(keys, bound) - lowerBound(keys, from)).toBe(500);
  });
});

describe('ScanPlan', () => {
  it('reads a Kubernetes-shaped keyspace exactly, counting a fifth of what unbounded pages count', () => {
    const keys = kubernetesKeys(200_000);
    const limit = 2000;
    const { read, requests, visits } = simulate(keys, PREFIX, END, limit);
    expect(read.length).toBe(keys.length);
    expect(read.every((k, i) => k.equals(keys[i] as Buffer))).toBe(true);
    // Unbounded pages would count N²/2P = 10M keys (the first request counts all N once).
    expect(visits).toBeLessThan(VISITS_KUBERNETES);
    expect(requests).toBeLessThan(REQUESTS_KUBERNETES);
  });

  it('reads the bench keyspace exactly (100 namespaces of sequential names)', () => {
    const keys = sortedUnique(Array.from({ length: 100_000 }, (_, i) => Buffer.from(`/registry/configmaps/ns-${i % 100}/cm-${String(i).padStart(8, '0')}`)));
    const { read, requests, visits } = simulate(keys, PREFIX, END, 1000);
    expect(read.length).toBe(keys.length);
    expect(read.every((k, i) => k.equals(keys[i] as Buffer))).toBe(true);
    // Unbounded: 5M. Every namespace is exactly a page here, so each page ends in a gap to cross.
    expect(visits).toBeLessThan(VISITS_BENCH);
    expect(requests).toBeLessThan(REQUESTS_BENCH);
  });

  it('reads random binary keyspaces exactly: 0xff and 0x00 bytes, keys that prefix others, sparse and dense stretches', () => {
    for (let seed = 1; seed <= 150; seed++) {
      const random = rng(seed);
      const keys: Buffer[] = [];
      const clusters = 1 + Math.floor(random() * 6);
      for (let c = 0; c < clusters; c++) {
        const base = Buffer.from(Array.from({ length: Math.floor(random() * 6) }, () => (random() < 0.3 ? 0xff : random() < 0.3 ? 0 : Math.floor(random() * 256))));
        const count = Math.floor(random() ** 2 * 3000);
        for (let i = 0; i < count; i++) {
          const tail = Buffer.from(Array.from({ length: Math.floor(random() * 20) }, () => (random() < 0.2 ? 0xff : random() < 0.2 ? 0 : Math.floor(random() * 256))));
          keys.push(Buffer.concat([Buffer.from([0x2f]), base, tail]));
        }
      }
      const all = sortedUnique(keys);
      const start = Buffer.from([0x2f]);
      const end = random() < 0.5 ? prefixEnd(start) : Buffer.from([0]);
      const limit = 1 + Math.floor(random() * 300);
      const { read, visits } = simulate(all, start, end, limit);
      expect(read.length, `seed ${seed}`).toBe(all.length);
      expect(read.every((k, i) => k.equals(all[i] as Buffer)), `seed ${seed}`).toBe(true);
      // Adversarial shapes (clusters inside clusters) may cost as much as unbounded pages; never much more.
      expect(visits, `seed ${seed}`).toBeLessThanOrEqual(1.2 * ((all.length * all.length) / (2 * limit) + all.length));
    }
  });
});

describe('PageSizer', () => {
  const page = (keys: number, valueBytes: number): KeyValue[] =>
    Array.from({ length: keys }, (_, i) => ({ key: Buffer.from(`/k/${String(i).padStart(7, '0')}`), value: Buffer.alloc(valueBytes), modRevision: 1n, lease: '0' }));
  const MiB = 1024 * 1024;

  it('starts at 1000 keys, then aims at the byte budget, growing at most 2x a page', () => {
    const sizer = new PageSizer(8 * MiB, 50_000);
    expect(sizer.size).toBe(1000);
    const sizes = [];
    for (let i = 0; i < 5; i++) {
      sizer.observe(page(sizer.size, 1014)); // 1 KiB per key with the 10-byte keys
      sizes.push(sizer.size);
    }
    expect(sizes).toEqual([2000, 4000, 8000, 8192, 8192]);
  });

  it('after small values, a page is at most twice the last, and never over maxKeys', () => {
    const sizer = new PageSizer(8 * MiB, 50_000);
    for (let i = 0; i < 10; i++) sizer.observe(page(sizer.size, 20));
    expect(sizer.size).toBe(50_000);
    // Large values after the small ones: shrinks at once.
    sizer.observe(page(100, 100 * 1024 - 10));
    expect(sizer.size).toBe(81);
  });

  it('remembers large values for a while: half the estimate per page', () => {
    const sizer = new PageSizer(8 * MiB, 50_000);
    sizer.observe(page(10, 1024 * 1024 - 10)); // 1 MiB per key: 8 keys a page
    expect(sizer.size).toBe(8);
    const sizes = [];
    for (let i = 0; i < 6; i++) {
      sizer.observe(page(sizer.size, 100));
      sizes.push(sizer.size);
    }
    // The estimate halves per page (512, 256, 128 ... KiB), and the size at most doubles.
    expect(sizes).toEqual([16, 32, 64, 128, 256, 512]);
  });

  it('ignores pages of fewer than two keys, and halves on a reply too large', () => {
    const sizer = new PageSizer(8 * MiB, 50_000);
    sizer.observe(page(1, 10 * MiB));
    sizer.observe([]);
    expect(sizer.size).toBe(1000);
    expect(sizer.halve()).toBe(true);
    expect(sizer.size).toBe(500);
    const one = new PageSizer(8 * MiB, 1);
    expect(one.halve()).toBe(false);
  });
});
