/**
 * A restart after a long gap replays the primary's history over parallel watches of
 * consecutive revision windows and applies them in order. Small windows here make a few
 * hundred revisions span many windows, with the cases that decide a window's end: a revision
 * larger than a txn, windows with no watched key at all, and a gap ending in such revisions.
 */
import type { Etcd3 } from 'etcd3';
import { beforeAll, describe, expect, it } from 'vitest';
import type { EtcdServer } from './helpers/etcd.js';
import { usePair } from './helpers/pair.js';
import { inScope, putMany, startEngine, waitInSync } from './helpers/sync.js';
import { waitFor } from './helpers/wait.js';

describe('replay of a long gap over windows; pipelined streaming', () => {
  let primary: EtcdServer;
  let standby: EtcdServer;
  let p: Etcd3;
  let s: Etcd3;
  const pair = usePair();
  beforeAll(() => ({ primary, standby, p, s } = pair));

  const revision = async (client: Etcd3): Promise<bigint> => BigInt((await client.kv.range({ key: Buffer.from('x') })).header.revision);
  const checkpoint = async (): Promise<bigint> => {
    const res = await s.kv.range({ key: Buffer.from('/etcd-sync/checkpoint') });
    return res.kvs[0] ? BigInt(JSON.parse(res.kvs[0].value.toString()).revision) : 0n;
  };
  // --max-txn-ops 24: a txn holds 12 nested txns of 12 ops (144), less than the 300-key revision below.
  // The delete-range of 300 keys is the replay's subject here, not a mass delete to hold (the guard: delete-guard-hold.test.ts).
  const options = { replayWindowRevisions: 40, replayWindows: 4, checkIntervalMs: 0, maxTxnOps: 24, deleteGuard: undefined };

  it('applies puts, deletes, a delete-range and multi-key revisions in order; the deletes arrive without --prune', async () => {
    const seed: [string, string][] = [];
    for (let i = 0; i < 300; i++) seed.push([`/registry/configmaps/bulk/cm-${String(i).padStart(3, '0')}`, `seed-${i}`]);
    for (let i = 0; i < 50; i++) seed.push([`/registry/secrets/app/s-${i}`, `seed-${i}`]);
    await putMany(p, seed);
    let running = startEngine(primary, standby, options);
    await waitFor(() => running.engine.state === 'streaming', { timeoutMs: 30_000 });
    await waitInSync(p, s);
    await running.stop();

    // While stopped, about 340 revisions of history:
    const from = await revision(p);
    for (let i = 0; i < 200; i++) {
      const key = `/registry/secrets/app/s-${i % 50}`;
      // Each key is rewritten four times; the last write of s-0..s-24 is a delete.
      if (i >= 150 && i % 50 < 25) await p.delete().key(key).exec();
      else await p.put(key).value(`v${i}`).exec();
      // Out-of-prefix and excluded writes in between: revisions without a watched event.
      if (i % 10 === 0) await p.put(`/other/noise-${i}`).value('x').exec();
      if (i % 10 === 5) await p.put('/registry/configmaps/kube-system/noise').value(`k${i}`).exec();
    }
    // One revision of 300 delete events (larger than a txn), then one of 60 puts.
    await p.delete().prefix('/registry/configmaps/bulk/').exec();
    await putMany(p, Array.from({ length: 60 }, (_, i): [string, string] => [`/registry/pods/multi/p-${i}`, `multi-${i}`]));
    await p.put('/registry/configmaps/bulk/cm-000').value('re-created').exec();
    // The gap ends with more than a window of revisions outside the prefix.
    for (let i = 0; i < 100; i++) await p.put(`/other/tail-${i}`).value('x').exec();
    const until = await revision(p);
    expect(until - from).toBeGreaterThan(300n);

    running = startEngine(primary, standby, options);
    await waitFor(() => running.engine.state === 'streaming', { timeoutMs: 60_000 });
    // Every window was fetched over its own watch.
    expect(running.engine.replayWindowsFetched).toBe(Number((until - from + 39n) / 40n));
    await waitInSync(p, s);
    const standbyKeys = await inScope(s);
    // Deleted on the primary while stopped, and no --prune: only the replay can remove them.
    expect(Object.keys(standbyKeys).filter((k) => k.startsWith('/registry/configmaps/bulk/'))).toEqual(['/registry/configmaps/bulk/cm-000']);
    expect(Object.keys(standbyKeys).filter((k) => k.startsWith('/registry/secrets/app/')).length).toBe(25);
    expect(Buffer.from(standbyKeys['/registry/secrets/app/s-30'] ?? '', 'hex').toString()).toBe('v180');
    // The replay alone made the standby equal to the primary at the pinned revision: the
    // full diff after it found nothing to write (a lost or reordered event would show here).
    expect(running.engine.lastDiff).toMatchObject({ missing: 0, different: 0, surplus: 0, put: 0, deleted: 0 });
    expect(running.engine.eventsApplied).toEqual({ put: 175 + 60 + 1, delete: 300 + 25 });
    expect(await checkpoint()).toBeGreaterThanOrEqual(until);
    // The standby's own kube-system copy was never written by the replay.
    expect((await s.get('/registry/configmaps/kube-system/noise').string()) ?? null).toBeNull();
    await running.stop();
  });

  it('streams with several txns in flight and the standby is, at every checkpoint, exactly the primary at that revision', async () => {
    // Small txns and a few hot keys: every txn rewrites keys the txns before and after it
    // also write, so a txn applied out of order would leave a state the primary never had.
    const running = startEngine(primary, standby, { maxTxnOps: 6, streamTxnsInFlight: 4, checkIntervalMs: 0, healDelayMs: -1, deleteGuard: undefined });
    await waitFor(() => running.engine.state === 'streaming', { timeoutMs: 30_000 });
    let stop = false;
    const writers = [0, 1, 2, 3].map(async (w) => {
      for (let i = 0; !stop; i++) {
        const key = `/registry/leases/hot/k-${(i * 7 + w) % 12}`;
        if (i % 9 === 8) await p.delete().key(key).exec();
        else await p.put(key).value(`w${w}-${i}`).exec();
      }
    });
    const prefix = Buffer.from('/registry/leases/hot/');
    const samples: string[] = [];
    try {
      for (let sample = 0; sample < 25; sample++) {
        // The standby's hot keys and its checkpoint in one read-only txn: one consistent snapshot.
        const res = (await s.kv.txn({
          compare: [],
          success: [{ request_range: { key: prefix, range_end: Buffer.from('/registry/leases/hot0') } }, { request_range: { key: Buffer.from('/etcd-sync/checkpoint') } }],
          failure: [],
        } as never)) as unknown as { responses: { response_range: { kvs: { key: Buffer; value: Buffer }[] } }[] };
        const [hot, cp] = res.responses.map((r) => r.response_range.kvs);
        const at = String(JSON.parse((cp?.[0]?.value ?? Buffer.from('{"revision":"0"}')).toString()).revision);
        const primaryThen = await p.kv.range({ key: prefix, range_end: Buffer.from('/registry/leases/hot0'), revision: at });
        const show = (kvs: { key: Buffer; value: Buffer }[]): string => kvs.map((kv) => `${kv.key}=${kv.value}`).join(',');
        expect(show(hot ?? []), `standby at checkpoint ${at}`).toBe(show(primaryThen.kvs));
        samples.push(at);
      }
    } finally {
      stop = true;
      await Promise.all(writers);
    }
    expect(new Set(samples).size).toBeGreaterThan(5); // the checkpoint moved under the writers
    await waitInSync(p, s);
    await running.stop();
  });
});

