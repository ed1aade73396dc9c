import { describe, expect, it } from 'vitest';
import { type KeyValue, type WriteOp, nestOps, txnCapacity } from '../src/etcd/kv.js';
import type { WatchEvent } from '../src/etcd/watch.js';
import { type Finding, mergeJoin } from '../src/diff/merge-join.js';
import { OpChunker, headOfWholeRevisions, takeEventBatch } from '../src/sync/batch.js';

const ev = (rev: number, key: string, type: 'put' | 'delete' = 'put', value = `v${rev}`): WatchEvent => ({
  type,
  key: Buffer.from(key),
  value: Buffer.from(type === 'put' ? value : ''),
  modRevision: BigInt(rev),
  lease: '0',
});
const toOp = (e: WatchEvent): WriteOp | undefined =>
  e.key.toString().startsWith('/skip') ? undefined : e.type === 'delete' ? { type: 'delete', key: e.key } : { type: 'put', key: e.key, value: e.value };
const show = (ops: WriteOp[]): string[] => ops.map((o) => `${o.type} ${o.key.toString()}${o.type === 'put' ? `=${o.value.toString()}` : ''}`);

describe('takeEventBatch', () => {
  const limits = { maxOps: 3, maxBytes: 1_000_000 };
  it('coalesces writes to one key, last write wins, checkpoint is the last revision', () => {
    const b = takeEventBatch([ev(5, '/a'), ev(6, '/b'), ev(7, '/a', 'delete'), ev(8, '/b', 'put', 'B')], limits, toOp);
    expect(show(b.ops)).toEqual(['delete /a', 'put /b=B']);
    expect(b).toMatchObject({ consumed: 4, throughRevision: 8n });
  });
  it('stops before the revision that would exceed maxOps', () => {
    const b = takeEventBatch([ev(1, '/a'), ev(2, '/b'), ev(3, '/c'), ev(4, '/d'), ev(5, '/e')], limits, toOp);
    expect(show(b.ops)).toEqual(['put /a=v1', 'put /b=v2', 'put /c=v3']);
    expect(b).toMatchObject({ consumed: 3, throughRevision: 3n });
  });
  it('repeated keys do not count twice against maxOps', () => {
    const b = takeEventBatch([ev(1, '/a'), ev(2, '/a'), ev(3, '/a'), ev(4, '/b'), ev(5, '/c'), ev(6, '/d')], limits, toOp);
    expect(b).toMatchObject({ consumed: 5, throughRevision: 5n });
  });
  it('keeps a multi-key revision whole when it can, and splits one larger than a txn checkpointing the revision before', () => {
    const whole = takeEventBatch([ev(1, '/a'), ev(2, '/b'), ev(2, '/c'), ev(2, '/d')], limits, toOp);
    expect(whole).toMatchObject({ consumed: 1, throughRevision: 1n });
    const big = [ev(2, '/b'), ev(2, '/c'), ev(2, '/d'), ev(2, '/e'), ev(3, '/f')];
    const first = takeEventBatch(big, limits, toOp);
    expect(show(first.ops)).toEqual(['put /b=v2', 'put /c=v2', 'put /d=v2']);
    expect(first).toMatchObject({ consumed: 3, throughRevision: 1n });
    const rest = takeEventBatch(big.slice(first.consumed), limits, toOp);
    expect(show(rest.ops)).toEqual(['put /e=v2', 'put /f=v3']);
    expect(rest).toMatchObject({ consumed: 2, throughRevision: 3n });
  });
  it('out-of-scope events are consumed and advance the checkpoint without ops', () => {
    const b = takeEventBatch([ev(1, '/skip/x'), ev(2, '/a'), ev(3, '/skip/y')], limits, toOp);
    expect(show(b.ops)).toEqual(['put /a=v2']);
    expect(b).toMatchObject({ consumed: 3, throughRevision: 3n });
  });
  it('respects maxBytes', () => {
    const big = 'x'.repeat(600);
    const b = takeEventBatch([ev(1, '/a', 'put', big), ev(2, '/b', 'put', big)], { maxOps: 100, maxBytes: 1000 }, toOp);
    expect(b).toMatchObject({ consumed: 1, throughRevision: 1n });
    const single = takeEventBatch([ev(1, '/a', 'put', 'y'.repeat(5000))], { maxOps: 100, maxBytes: 1000 }, toOp);
    expect(single).toMatchObject({ consumed: 1, throughRevision: 1n });
  });
});

describe('OpChunker', () => {
  it('chunks by op count and bytes', () => {
    const chunker = new OpChunker({ maxOps: 2, maxBytes: 100 });
    const put = (k: string, size = 1): WriteOp => ({ type: 'put', key: Buffer.from(k), value: Buffer.alloc(size) });
    expect(chunker.add(put('/a'))).toBeUndefined();
    expect(chunker.add(put('/b'))).toBeUndefined();
    expect(show(chunker.add(put('/c')) ?? []).map((s) => s.split('=')[0])).toEqual(['put /a', 'put /b']);
    expect(show(chunker.add(put('/d', 90)) ?? []).map((s) => s.split('=')[0])).toEqual(['put /c']);
    expect(chunker.flush()?.length).toBe(1);
    expect(chunker.flush()).toBeUndefined();
  });
});

describe('mergeJoin', () => {
  const kv = (key: string | Buffer, value: string): KeyValue => ({ key: Buffer.from(key as never), value: Buffer.from(value), modRevision: 1n, lease: '0' });
  async function* pages(...ps: KeyValue[][]): AsyncGenerator<KeyValue[]> {
    yield* ps;
  }
  const run = async (p: KeyValue[][], s: KeyValue[][]): Promise<string[]> => {
    const out: string[] = [];
    for await (const batch of mergeJoin(pages(...p), pages(...s), (a, b) => a.value.equals(b.value))) for (const f of batch) out.push(describe(f));
    return out;
  };
  const describe = (f: Finding): string =>
    `${f.kind} ${('primary' in f ? f.primary : f.standby).key.toString('latin1')}`;

  it('classifies keys across page boundaries in key order', async () => {
    const result = await run(
      [[kv('/a', '1'), kv('/b', '2')], [kv('/d', '4'), kv('/e', '5')]],
      [[kv('/b', '2')], [kv('/c', '3'), kv('/d', 'x')], [kv('/f', '6')]],
    );
    expect(result).toEqual(['missing /a', 'equal /b', 'surplus /c', 'different /d', 'missing /e', 'surplus /f']);
  });
  it('empty sides', async () => {
    expect(await run([], [])).toEqual([]);
    expect(await run([[kv('/a', '1')]], [])).toEqual(['missing /a']);
    expect(await run([], [[kv('/a', '1')]])).toEqual(['surplus /a']);
  });
  it('orders binary keys bytewise, as etcd does', async () => {
    const hi = Buffer.from([0x2f, 0xff]);
    const lo = Buffer.from([0x2f, 0x01]);
    expect(await run([[kv(lo, 'x'), kv(hi, 'y')]], [[kv(hi, 'y')]])).toEqual([`missing ${lo.toString('latin1')}`, `equal ${hi.toString('latin1')}`]);
  });
  it('matches a map-based reference on random keyspaces cut into random pages (empty pages included)', async () => {
    // A seeded generator: the same cases on every run.
    let seed = 42;
    const random = (n: number): number => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed % n;
    };
    const split = (kvs: KeyValue[]): KeyValue[][] => {
      const out: KeyValue[][] = [];
      for (let i = 0; i < kvs.length; ) {
        const size = random(4); // 0 to 3 keys: empty pages too
        out.push(kvs.slice(i, i + size));
        i += size;
      }
      return out;
    };
    for (let round = 0; round < 200; round++) {
      const primary = new Map<string, string>();
      const standby = new Map<string, string>();
      for (let i = 0; i < 30; i++) {
        const key = `/k${String(random(40)).padStart(2, '0')}`;
        const where = random(3);
        if (where !== 1) primary.set(key, String(random(2)));
        if (where !== 0) standby.set(key, String(random(2)));
      }
      const sorted = (m: Map<string, string>): KeyValue[] => [...m.keys()].sort().map((k) => kv(k, m.get(k) as string));
      const expected = [...new Set([...primary.keys(), ...standby.keys()])].sort().map((k) => {
        const a = primary.get(k);
        const b = standby.get(k);
        return `${a === undefined ? 'surplus' : b === undefined ? 'missing' : a === b ? 'equal' : 'different'} ${k}`;
      });
      expect(await run(split(sorted(primary)), split(sorted(standby)))).toEqual(expected);
    }
  });
});

describe('headOfWholeRevisions', () => {
  const ev = (rev: number, key: string): WatchEvent => ({ type: 'put', key: Buffer.from(key), value: Buffer.alloc(0), modRevision: BigInt(rev), lease: '0' });
  const events = [ev(1, 'a'), ev(2, 'b'), ev(2, 'c'), ev(2, 'd'), ev(3, 'e')];
  const revs = (es: readonly WatchEvent[]): string => es.map((e) => `${e.modRevision}${e.key}`).join(' ');
  it.each([
    [10, '1a 2b 2c 2d 3e'],
    [5, '1a 2b 2c 2d 3e'],
    [1, '1a'],
    [2, '1a 2b 2c 2d'],
    [3, '1a 2b 2c 2d'],
    [4, '1a 2b 2c 2d'],
  ])('at least %i events, never ending inside a revision', (count, expected) => {
    expect(revs(headOfWholeRevisions(events, count))).toBe(expected);
  });
});


describe('txnCapacity and nestOps: etcd counts --max-txn-ops per level of nesting', () => {
  const ops = (n: number): WriteOp[] => Array.from({ length: n }, (_, i) => ({ type: 'delete', key: Buffer.from(`/k${i}`) }));
  const shape = (nested: ReturnType<typeof nestOps>): (number | string)[] => nested.map((op) => (op.type === 'txn' ? op.success.length : op.type));

  it.each([
    [2, 2],
    [3, 3],
    [4, 4],
    [5, 6],
    [8, 16],
    [24, 144],
    [128, 4096],
    [129, 4160],
  ])('--max-txn-ops %i holds %i ops', (maxTxnOps, capacity) => {
    expect(txnCapacity(maxTxnOps)).toBe(capacity);
  });

  it.each([
    ['fits flat', 128, 128, 2, Array.from({ length: 128 }, () => 'delete')],
    ['one over: nested by half the limit', 129, 128, 2, [64, 64, 1]],
    ['the capacity', 4096, 128, 2, Array.from({ length: 64 }, () => 64)],
    ['odd limit', 6, 5, 0, [2, 2, 2]],
  ])('%s: %i ops under %i with %i compares', (_name, n, maxTxnOps, compares, expected) => {
    expect(shape(nestOps(ops(n), maxTxnOps, compares))).toEqual(expected);
  });

  it('refuses more than the capacity, and compares that leave no room for nesting', () => {
    expect(() => nestOps(ops(4097), 128)).toThrow('a txn of 4097 ops and 0 compares exceeds what --max-txn-ops 128 allows (4096 ops)');
    expect(() => nestOps(ops(200), 128, 100)).toThrow('a txn of 200 ops and 100 compares exceeds');
  });

  it('for every limit up to 200 and every size up to the capacity: ops kept in order, each level within the limit', () => {
    for (let maxTxnOps = 2; maxTxnOps <= 200; maxTxnOps++) {
      const capacity = txnCapacity(maxTxnOps);
      for (const n of [1, maxTxnOps, maxTxnOps + 1, capacity - 1, capacity]) {
        if (n < 1 || n > capacity) continue;
        const input = ops(n);
        const nested = nestOps(input, maxTxnOps, 2);
        const flat = nested.flatMap((op) => (op.type === 'txn' ? op.success : [op]));
        expect(flat).toEqual(input);
        const inner = Math.max(0, ...nested.map((op) => (op.type === 'txn' ? op.success.length : 0)));
        // etcd's rule: the outer level's ops or compares, plus the largest nested txn's ops.
        expect(Math.max(nested.length, 2) + inner).toBeLessThanOrEqual(maxTxnOps);
      }
    }
  });
});
