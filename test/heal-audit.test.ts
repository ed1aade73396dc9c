/** Audits while the primary is written, self-healing behind a running sync, and the periodic check. */
import { WRITE_DEFAULTS } from '../src/cli/options/common.js';
import type { Etcd3 } from 'etcd3';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EtcdSide } from '../src/etcd/connection.js';
import { Scope, defaultScopeRules } from '../src/scope.js';
import { audit, repair, repairPlan } from '../src/sync/audit.js';
import { LeaseMapper, leaseKeyPrefix } from '../src/sync/leases.js';
import type { SyncOptions } from '../src/sync/engine.js';
import { StandbyWriter } from '../src/sync/writer.js';
import type { EtcdServer } from './helpers/etcd.js';
import { usePair } from './helpers/pair.js';
import { type RunningEngine, putMany, quietLog, snapshot, startEngine, waitInSync } from './helpers/sync.js';
import { waitFor } from './helpers/wait.js';
import { withRetry } from '../src/sync/retry.js';
import type { Compare } from '../src/etcd/kv.js';

describe('audits under writes, self-healing, periodic check', () => {
  let primary: EtcdServer;
  let standby: EtcdServer;
  let p: Etcd3;
  let s: Etcd3;
  let running: RunningEngine | undefined;
  const pair = usePair();
  beforeAll(() => ({ primary, standby, p, s } = pair));
  afterEach(async () => {
    await running?.stop();
    running = undefined;
  });

  /** Starts the engine and waits until it streams. */
  const startStreaming = async (options: Partial<SyncOptions>): Promise<RunningEngine> => {
    running = startEngine(primary, standby, options);
    await waitFor(() => running!.engine.state === 'streaming', { timeoutMs: 30_000 });
    return running;
  };

  const auditOnce = async (checkpointKey: string, settleMs = 1_000) => {
    const ps = new EtcdSide(primary.sideConfig('primary'));
    const ss = new EtcdSide(standby.sideConfig('standby'));
    try {
      return await audit(ps, ss, {
        scope: new Scope(defaultScopeRules()),
        checkpointKey: Buffer.from(checkpointKey),
        pageSize: WRITE_DEFAULTS.pageSize,
        maxTxnOps: WRITE_DEFAULTS.maxTxnOps,
        settleMs,
        retry: (what, fn) => withRetry(what, fn, { log: quietLog }),
      });
    } finally {
      ps.close();
      ss.close();
    }
  };

  /** Writes a new key (each key once) until stopped. */
  function startWriter(prefix: string): { stop(): Promise<number> } {
    let stopping = false;
    let n = 0;
    const done = (async () => {
      while (!stopping) await p.put(`${prefix}/k-${n++}`).value(`v${n}`).exec();
    })();
    return {
      async stop() {
        stopping = true;
        await done;
        return n;
      },
    };
  }

  it("compares at the standby's checkpoint: exact while the primary is being written", async () => {
    running = await startStreaming({ healDelayMs: -1 });
    const writer = startWriter('/registry/configmaps/pinned');
    try {
      for (let i = 0; i < 5; i++) {
        const report = await auditOnce('/etcd-sync/checkpoint');
        expect(report.mode).toBe('checkpoint');
        expect(report.findings).toEqual({ missing: [], surplus: [], different: [] });
        expect(report.consistent).toBe(true);
      }
    } finally {
      expect(await writer.stop()).toBeGreaterThan(10);
    }
  });

  it('without a usable checkpoint: latest against latest, in-flight findings dropped after settling', async () => {
    running = await startStreaming({ healDelayMs: -1 });
    const writer = startWriter('/registry/configmaps/settle');
    let report;
    try {
      report = await auditOnce('/no/such/checkpoint', 1_000);
    } finally {
      await writer.stop();
    }
    expect(report.mode).toBe('settled');
    expect(report.findings).toEqual({ missing: [], surplus: [], different: [] });
    // A real finding survives the settle re-check.
    await waitInSync(p, s);
    await s.put('/registry/configmaps/settle/k-0').value('tampered').exec();
    await running.stop();
    running = undefined;
    const tampered = await auditOnce('/no/such/checkpoint', 200);
    expect(tampered.findings.different.map(String)).toEqual(['/registry/configmaps/settle/k-0']);
  });

  it('keys deleted or changed on the standby behind a running sync come back, and are counted', async () => {
    await putMany(p, [
      ['/registry/deployments/apps/owner', 'owner'],
      ['/registry/replicasets/apps/dependent', 'dependent'],
    ]);
    running = await startStreaming({ healDelayMs: 100 });
    await waitInSync(p, s);
    // The standby's garbage collector deletes the dependent; someone edits the owner.
    await s.delete().key('/registry/replicasets/apps/dependent').exec();
    await s.put('/registry/deployments/apps/owner').value('edited on the standby').exec();
    await waitInSync(p, s, undefined, 20_000);
    const after = await snapshot(s);
    expect(after.get('/registry/replicasets/apps/dependent')?.value.toString()).toBe('dependent');
    expect(after.get('/registry/deployments/apps/owner')?.value.toString()).toBe('owner');
    expect(running.engine.healer?.heals).toBe(2);
    // A standby-only key is not a synced key: left alone.
    await s.put('/registry/secrets/apps/standby-only').value('mine').exec();
    await p.put('/registry/configmaps/apps/marker').value('m').exec();
    await waitFor(async () => (await snapshot(s)).has('/registry/configmaps/apps/marker'), { timeoutMs: 10_000 });
    expect((await snapshot(s)).get('/registry/secrets/apps/standby-only')?.value.toString()).toBe('mine');
    expect(running.engine.healer?.heals).toBe(2);
    await s.delete().key('/registry/secrets/apps/standby-only').exec();
  });

  it("etcd-sync's own writes, hot keys written concurrently, are never taken for foreign ones and healed", async () => {
    // Heal delay 0: the healer judges an event at once, often before the txn that made it has returned.
    running = await startStreaming({ healDelayMs: 0 });
    let stop = false;
    const writers = Array.from({ length: 4 }, async (_, w) => {
      for (let i = 0; !stop; i++) await p.put(`/registry/configmaps/hot/k-${(i * 4 + w) % 20}`).value(`w${w}-${i}`).exec();
    });
    await new Promise((r) => setTimeout(r, 3_000));
    stop = true;
    await Promise.all(writers);
    await waitInSync(p, s, undefined, 20_000);
    // Nobody but etcd-sync wrote the standby: a heal would have been a restore of a stale value.
    expect(running.engine.healer?.heals).toBe(0);
    // Nor was any of its writes held as a change to look at later (each would have had a timer and a later look).
    expect(running.engine.healer?.trackedKeys).toBe(0);
    // A late heal would still show: one more write through the stream, then equal again, and none.
    await p.put('/registry/configmaps/hot/marker').value('m').exec();
    await waitInSync(p, s, undefined, 5_000);
    expect(running.engine.healer?.heals).toBe(0);
  });

  it('a standby garbage collector deleting thousands of keys at once: all come back, a txn per 100 keys, not one per key', async () => {
    const count = 3_000;
    const key = (i: number): string => `/registry/replicasets/flood/rs-${String(i).padStart(5, '0')}`;
    await putMany(
      p,
      Array.from({ length: count }, (_, i) => [key(i), `rs-${i}`]),
    );
    let txns = 0;
    running = await startStreaming({ healDelayMs: 100, writerHooks: { onTxn: () => txns++ } });
    await waitInSync(p, s);
    const txnsBefore = txns;
    await s.delete().prefix('/registry/replicasets/flood/').exec();
    await waitFor(async () => (await snapshot(s, Buffer.from('/registry/replicasets/flood/'))).size === count, { timeoutMs: 30_000, message: 'the deleted keys did not all come back' });
    const restored = await snapshot(s, Buffer.from('/registry/replicasets/flood/'));
    expect([...restored].map(([k, e]) => [k, e.value.toString()])).toEqual(Array.from({ length: count }, (_, i) => [key(i), `rs-${i}`]));
    expect(running.engine.healer?.heals).toBe(count);
    // Restored 100 keys per step, one txn each: 30, and a few more where a step caught up with
    // the keys' timers. Key by key it was 3,000 txns (and 3 calls per key, all at once).
    expect(txns - txnsBefore).toBeGreaterThanOrEqual(count / 100);
    expect(txns - txnsBefore).toBeLessThanOrEqual((2 * count) / 100);
  });

  it('keys waiting for their heal delay are counted as pending, and only those', async () => {
    await putMany(p, [
      ['/registry/pods/pending/a', 'a'],
      ['/registry/pods/pending/b', 'b'],
    ]);
    // A delay longer than the test: the changes stay pending.
    running = await startStreaming({ healDelayMs: 600_000 });
    await waitInSync(p, s);
    expect(running.engine.healer?.pendingKeys).toBe(0);
    await s.delete().key('/registry/pods/pending/a').exec();
    await s.put('/registry/pods/pending/b').value('edited').exec();
    await s.put('/registry/pods/pending/b').value('edited again').exec();
    await waitFor(() => running!.engine.healer?.pendingKeys === 2, { timeoutMs: 10_000, message: 'the two changed keys are not pending' });
    // A write through the stream is etcd-sync's own: not pending.
    await p.put('/registry/pods/pending/c').value('c').exec();
    await waitFor(async () => (await snapshot(s)).has('/registry/pods/pending/c'), { timeoutMs: 10_000 });
    expect(running.engine.healer?.pendingKeys).toBe(2);
    expect(running.engine.healer?.heals).toBe(0);
  });

  it('a standby controller that keeps deleting a key does not make etcd-sync spin', async () => {
    await p.put('/registry/pods/apps/contested').value('from the primary').exec();
    running = await startStreaming({ healDelayMs: 100 });
    await waitFor(async () => (await snapshot(s)).has('/registry/pods/apps/contested'), { timeoutMs: 10_000 });
    // The "controller": deletes the key whenever it is there, for 3 s.
    const started = Date.now();
    let deletions = 0;
    while (Date.now() - started < 3_000) {
      const res = await s.delete().key('/registry/pods/apps/contested').exec();
      if (Number(res.deleted) > 0) deletions++;
      await new Promise((r) => setTimeout(r, 20)); // the controller's own resync pace
    }
    const heals = running.engine.healer?.heals ?? 0;
    // Delays 100, 200, 400, 800, 1600 ms: at most 5 restores in 3 s (a loop without backoff makes dozens).
    expect(heals).toBeGreaterThanOrEqual(2);
    expect(heals).toBeLessThanOrEqual(5);
    // The first deletion plus one per restore (the last restore may land after the window).
    expect(deletions).toBeGreaterThanOrEqual(heals);
    expect(deletions).toBeLessThanOrEqual(heals + 1);
  });

  it('the periodic check repairs missing keys and, with prune, deletes surplus ones; its report is kept', async () => {
    await p.put('/registry/pods/apps/periodic').value('p').exec();
    running = await startStreaming({ healDelayMs: -1, checkIntervalMs: 300, prune: true });
    await s.delete().key('/registry/pods/apps/periodic').exec();
    await s.put('/registry/secrets/apps/stray').value('s').exec();
    await waitFor(
      async () => {
        const now = await snapshot(s);
        return now.get('/registry/pods/apps/periodic')?.value.toString() === 'p' && !now.has('/registry/secrets/apps/stray');
      },
      { timeoutMs: 20_000, message: 'periodic check did not repair' },
    );
    await waitFor(() => running!.engine.lastCheck?.consistent === true, { timeoutMs: 10_000, message: 'no clean periodic check' });
  });

  it('the periodic check behind a fence (two compares, as the leader writes) repairs more keys than --max-txn-ops and than one read step', async () => {
    // Each repaired key carries a compare of its own; with the fence's two, a chunk of
    // --max-txn-ops keys would be a txn etcd refuses ("too many operations"). 2,500 keys: the
    // repair reads the primary 1,000 keys at a time.
    const keys = Array.from({ length: 2_500 }, (_, i) => `/registry/pods/fenced-repair/p-${String(i).padStart(4, '0')}`);
    await putMany(
      p,
      keys.map((k) => [k, `v-${k}`]),
    );
    const fence = {
      compares: (): Compare[] => [
        { key: Buffer.from('/etcd-sync/test-fence-a'), target: 'Create', result: 'Equal', version: 0n },
        { key: Buffer.from('/etcd-sync/test-fence-b'), target: 'Create', result: 'Equal', version: 0n },
      ],
      verify: async () => undefined,
    };
    running = await startStreaming({ healDelayMs: -1, checkIntervalMs: 300, writerHooks: { fence } });
    await s.delete().prefix('/registry/pods/fenced-repair/').exec();
    await waitFor(async () => (await snapshot(s, Buffer.from('/registry/pods/fenced-repair/'))).size === keys.length, {
      timeoutMs: 20_000,
      message: 'periodic check did not repair the 2,500 keys',
    });
    const repaired = await snapshot(s, Buffer.from('/registry/pods/fenced-repair/'));
    expect([...repaired].map(([k, e]) => [k, e.value.toString()])).toEqual(keys.map((k) => [k, `v-${k}`]));
    expect(running.engine.state).toBe('streaming');
  });

  it('repair leaves alone a standby key modified after the audit (it is newer)', async () => {
    await putMany(p, [
      ['/registry/pods/apps/guard-missing', 'm'],
      ['/registry/pods/apps/guard-changed', 'c'],
    ]);
    running = startEngine(primary, standby, { healDelayMs: -1 });
    await waitInSync(p, s);
    await running.stop();
    running = undefined;
    await s.delete().key('/registry/pods/apps/guard-missing').exec();
    await s.put('/registry/pods/apps/guard-changed').value('tampered').exec();
    const report = await auditOnce('/etcd-sync/checkpoint');
    expect(report.mode).toBe('checkpoint');
    expect(report.findings.missing.map(String)).toEqual(['/registry/pods/apps/guard-missing']);
    expect(report.findings.different.map(String)).toEqual(['/registry/pods/apps/guard-changed']);
    // Written after the audit: the repair must not overwrite it.
    await s.put('/registry/pods/apps/guard-changed').value('newer, after the audit').exec();
    const ps = new EtcdSide(primary.sideConfig('primary'));
    const ss = new EtcdSide(standby.sideConfig('standby'));
    const leases = new LeaseMapper(ps, ss, leaseKeyPrefix(Buffer.from('/etcd-sync/checkpoint')), quietLog);
    try {
      const writer = new StandbyWriter(ss, leases, quietLog, () => new AbortController().signal, WRITE_DEFAULTS.maxTxnOps);
      const repaired = await repair(ps, ss, writer, repairPlan(report, false), (what, fn) => withRetry(what, fn, { log: quietLog }), WRITE_DEFAULTS.maxTxnBytes);
      expect(repaired).toEqual({ put: 1, deleted: 0 });
    } finally {
      leases.stop();
      ps.close();
      ss.close();
    }
    const after = await snapshot(s);
    expect(after.get('/registry/pods/apps/guard-missing')?.value.toString()).toBe('m');
    expect(after.get('/registry/pods/apps/guard-changed')?.value.toString()).toBe('newer, after the audit');
  });
});
