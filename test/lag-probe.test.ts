// The bench's lag probe: which arrival delivers which write (pure), and its writer against a real etcd.
import { describe, expect, it } from 'vitest';
import { LAG_PREFIX, PROBE_KEYS, deliveries, lastWritesUnseen, measureLag } from '../bench/lag.js';
import { RawPutter } from '../bench/raw-put.js';
import { prefixEnd } from '../src/scope.js';
import { freePort } from './helpers/etcd.js';
import { usePair } from './helpers/pair.js';

/** [id, issuedAt, the primary's revision, seenAt]; undefined: no reply, or never arrived. */
type Write = [number, number, number | undefined, number | undefined];

/**
 * Writes 0 and PROBE_KEYS go to the same key. The ids between them, each the only write to its
 * key, are filled in as applied and seen at once.
 */
function probe(writes: Write[]) {
  const issued = Math.max(...writes.map(([id]) => id)) + 1;
  const issuedAt: number[] = [];
  const revisionOf: (number | undefined)[] = [];
  const seenAt: (number | undefined)[] = [];
  for (let id = 0; id < issued; id++) {
    issuedAt[id] = id;
    revisionOf[id] = 1000 + id;
    seenAt[id] = id + 1;
  }
  for (const [id, at, revision, seen] of writes) {
    issuedAt[id] = at;
    revisionOf[id] = revision;
    seenAt[id] = seen;
  }
  return { lag: deliveries(issued, issuedAt, revisionOf, seenAt).slice(0, issued), unseenLast: lastWritesUnseen(issued, revisionOf, seenAt) };
}

const A = 0;
const B = PROBE_KEYS; // same key as A, issued later

describe('lag probe deliveries', () => {
  it.each<{ case: string; writes: Write[]; lagA: number | undefined; lagB: number | undefined; unseenLast: boolean }>([
    {
      case: 'each write seen itself',
      writes: [[A, 0, 10, 5], [1, 1, 11, 7], [B, 2, 12, 9]],
      lagA: 5, lagB: 7, unseenLast: false,
    },
    {
      case: 'coalesced: only the later write to the key arrives, and delivers the earlier one',
      writes: [[A, 0, 10, undefined], [B, 2, 12, 30]],
      lagA: 30, lagB: 28, unseenLast: false,
    },
    {
      case: 'reordered: B applied before A, only A (the last by revision) arrives, delivering both',
      writes: [[A, 0, 12, 40], [B, 2, 10, undefined]],
      lagA: 40, lagB: 38, unseenLast: false,
    },
    {
      case: "reordered: only B arrives, the primary's last write A never does",
      writes: [[A, 0, 12, undefined], [B, 2, 10, 20]],
      lagA: undefined, lagB: 18, unseenLast: true,
    },
    {
      case: 'an earlier arrival of the later write counts for the earlier one',
      writes: [[A, 0, 10, 50], [B, 2, 12, 30]],
      lagA: 30, lagB: 28, unseenLast: false,
    },
    {
      case: 'a write without a reply counts only its own arrival',
      writes: [[A, 0, undefined, undefined], [B, 2, 12, 30]],
      lagA: undefined, lagB: 28, unseenLast: false,
    },
  ])('$case', ({ writes, lagA, lagB, unseenLast }) => {
    const result = probe(writes);
    expect(result.lag[A]).toBe(lagA);
    expect(result.lag[B]).toBe(lagB);
    expect(result.unseenLast).toBe(unseenLast);
  });
});

describe('lag probe against etcd', () => {
  const pair = usePair();

  it('RawPutter puts exactly the value, each put a revision of its own, and returns that revision', async () => {
    const putter = new RawPutter(pair.primary.endpoint);
    try {
      const key = Buffer.from('/registry/configmaps/raw/a');
      const first = await putter.put(key, Buffer.from('one'));
      const second = await putter.put(key, Buffer.from([0, 1, 255]));
      expect(second).toBe(first + 1n);
      const res = await pair.p.kv.range({ key });
      expect(res.kvs).toHaveLength(1);
      expect(res.kvs[0]?.value).toEqual(Buffer.from([0, 1, 255]));
      expect(BigInt(res.kvs[0]?.mod_revision ?? 0)).toBe(second);
      expect(BigInt(res.kvs[0]?.create_revision ?? 0)).toBe(first);
      expect(BigInt(res.header.revision)).toBe(second);
    } finally {
      putter.close();
    }
  });

  it("RawPutter rejects with etcd's status and message, and when nothing listens", async () => {
    const putter = new RawPutter(pair.primary.endpoint);
    try {
      await expect(putter.put(Buffer.alloc(0), Buffer.from('x'))).rejects.toThrow(
        `raw put of  to ${pair.primary.endpoint}: gRPC status 3: etcdserver: key is not provided`,
      );
    } finally {
      putter.close();
    }
    const nowhere = new RawPutter(`http://127.0.0.1:${await freePort()}`);
    try {
      await expect(nowhere.put(Buffer.from('k'), Buffer.from('v'))).rejects.toThrow(/^raw put of k to http:\/\/127\.0\.0\.1:\d+: .*ECONNREFUSED/);
    } finally {
      nowhere.close();
    }
    expect(() => new RawPutter('https://127.0.0.1:2379')).toThrow('raw put: https://127.0.0.1:2379: only http:// endpoints');
  });

  it('measureLag sees every write of a short floor run, and the primary holds each one', async () => {
    const result = await measureLag({ endpoint: pair.primary.endpoint, client: pair.p }, pair.p, { prefix: LAG_PREFIX, rate: 200, seconds: 1 });
    // Open loop on a 5 ms tick: the last tick falls short of the second's 200, by more when
    // the test files running beside this one delay the ticks.
    expect(result.writes).toBeGreaterThanOrEqual(100);
    expect(result.writes).toBeLessThanOrEqual(200);
    expect({ unseen: result.unseen, keysDiffering: result.keysDiffering }).toEqual({ unseen: 0, keysDiffering: 0 });
    expect(result.p50Ms).toBeGreaterThanOrEqual(0);
    expect(result.maxMs).toBeGreaterThanOrEqual(result.p99Ms);
    expect(result.replyP99Ms).toBeGreaterThan(0);
    expect(result.replyP99Ms).toBeLessThan(60_000);
    const res = await pair.p.kv.range({ key: Buffer.from(LAG_PREFIX), range_end: prefixEnd(Buffer.from(LAG_PREFIX)) });
    // Fewer writes than PROBE_KEYS: write i went to key k-i, once.
    const expected = Array.from({ length: result.writes }, (_, id): [string, string] => [`${LAG_PREFIX}k-${id}`, `${id}:`]).sort((x, y) => (x[0] < y[0] ? -1 : 1));
    expect(res.kvs.map((kv) => [kv.key.toString(), kv.value.toString('latin1', 0, kv.value.indexOf(':') + 1)])).toEqual(expected);
    expect(res.kvs.every((kv) => kv.value.length === 1024)).toBe(true);
    expect(result.samePrimary).toBeUndefined();
  });

  it('with alsoWatchPrimary, measureLag also times the same writes in a watch of the primary', async () => {
    // The destination is the standby, where nothing replicates: every write stays unseen there,
    // and the primary's watch alone sees them, which shows the two are timed apart. The drain
    // therefore runs its full time: 3 s for the primary's watch to show the last writes on a
    // machine busy with the other test files.
    const result = await measureLag({ endpoint: pair.primary.endpoint, client: pair.p }, pair.s, {
      prefix: `${LAG_PREFIX}same/`,
      rate: 200,
      seconds: 1,
      drainMs: 3000,
      alsoWatchPrimary: true,
      endStateWaitMs: 0,
    });
    expect(result.writes).toBeGreaterThanOrEqual(100);
    expect(result.unseen).toBe(result.writes);
    expect(result.keysDiffering).toBe(Math.min(result.writes, PROBE_KEYS));
    const same = result.samePrimary;
    expect(same).toBeDefined();
    expect(same?.unseen).toBe(0);
    expect(same?.p50Ms).toBeGreaterThanOrEqual(0);
    expect(same?.p99Ms).toBeGreaterThanOrEqual(same?.p50Ms ?? Number.NaN);
    expect(same?.maxMs).toBeGreaterThanOrEqual(same?.p99Ms ?? Number.NaN);
    expect(same?.maxMs).toBeLessThan(60_000);
  });
});
