/**
 * One bad thing never stops replication: a value the standby refuses even alone (at the initial
 * sync and while streaming) is skipped, named and counted, and healed by a later smaller value;
 * a full standby (NOSPACE alarm) is an outage that ends by itself once the operator frees it.
 */
import type { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EtcdServer } from './helpers/etcd.js';
import { parseMetrics } from './helpers/metrics.js';
import { usePair } from './helpers/pair.js';
import { type CliProcess, httpPort, putMany, runCli, snapshot, waitInSync } from './helpers/sync.js';
import { waitFor } from './helpers/wait.js';

/** etcd's default --max-request-bytes, on both sides here. */
const MAX_REQUEST_BYTES = 1.5 * 1024 * 1024;

/** Puts the largest value under `key` that the primary accepts: its request exactly at the limit. */
async function putLargest(p: Etcd3, key: string): Promise<number> {
  for (let size = MAX_REQUEST_BYTES - key.length - 8; size > MAX_REQUEST_BYTES - 1024; size--) {
    try {
      await p.put(key).value(Buffer.alloc(size, 'x')).exec();
      return size;
    } catch (err) {
      if (!/request is too large/.test(String(err))) throw err;
    }
  }
  throw new Error('the primary took no value near its limit');
}

function httpOf(cli: CliProcess): { get: (path: string) => Promise<{ status: number; body: string }>; metric: (name: string) => Promise<number | undefined> } {
  const get = async (path: string): Promise<{ status: number; body: string }> => {
    const res = await fetch(`http://127.0.0.1:${httpPort(cli)}${path}`);
    return { status: res.status, body: await res.text() };
  };
  return { get, metric: async (name) => parseMetrics((await get('/metrics')).body).get(name) };
}

describe('a value the standby refuses even alone', () => {
  let primary: EtcdServer;
  let standby: EtcdServer;
  let p: Etcd3;
  let s: Etcd3;
  const pair = usePair();
  beforeAll(() => ({ primary, standby, p, s } = pair));
  let sync: CliProcess | undefined;
  afterEach(async () => {
    sync?.child.kill('SIGTERM');
    await sync?.exited;
  });
  const check = async (): Promise<{ code: number | null; report: Record<string, unknown> }> => {
    const c = runCli(['check', ...primary.cliArgs('primary'), ...standby.cliArgs('standby'), '--output', 'json']);
    const { code } = await c.exited;
    return { code, report: JSON.parse(c.stdout()) as Record<string, unknown> };
  };

  it('at the initial sync and while streaming: skipped, named and counted, everything else replicated, run stays up; a smaller value heals it', async () => {
    const first = await putLargest(p, '/registry/configmaps/big/at-initial-sync');
    await putMany(p, [
      ['/registry/configmaps/apps/a', 'a'],
      ['/registry/configmaps/apps/b', 'b'],
    ]);
    sync = runCli(['run', ...primary.cliArgs('primary'), ...standby.cliArgs('standby')]);
    await sync.waitForLog('http listening');
    const { get, metric } = httpOf(sync);
    await waitFor(async () => JSON.parse((await get('/status')).body).state === 'streaming', { timeoutMs: 30_000, message: `never streaming:\n${sync.output().slice(-2000)}` });
    let standbyKeys = await snapshot(s);
    expect(standbyKeys.get('/registry/configmaps/apps/a')?.value.toString()).toBe('a');
    expect(standbyKeys.has('/registry/configmaps/big/at-initial-sync')).toBe(false);
    expect(sync.output()).toMatch(/"key":"\/registry\/configmaps\/big\/at-initial-sync","bytes":\d+,"err":"standby etcd .*request is too large.*","msg":"unreplicable key/);
    expect(await metric('etcd_sync_unreplicable_keys')).toBe(1);
    expect(JSON.parse((await get('/status')).body).unreplicable).toEqual([
      { key: '/registry/configmaps/big/at-initial-sync', bytes: first, reason: expect.stringContaining('request is too large'), since: expect.any(String) },
    ]);

    // While streaming: the big value, then an ordinary write behind it.
    const second = await putLargest(p, '/registry/configmaps/big/while-streaming');
    await p.put('/registry/configmaps/apps/c').value('after the big one').exec();
    await waitFor(async () => (await snapshot(s)).get('/registry/configmaps/apps/c')?.value.toString() === 'after the big one', { timeoutMs: 20_000, message: 'the write behind the big value never arrived' });
    expect(await metric('etcd_sync_unreplicable_keys')).toBe(2);
    const primaryRevision = Number((await p.kv.range({ key: Buffer.from('x') })).header.revision);
    await waitFor(async () => (await metric('etcd_sync_applied_revision')) === primaryRevision, { timeoutMs: 20_000, message: 'the checkpoint stopped at the big value' });
    expect((await get('/readyz')).status).toBe(200);

    const reported = await check();
    expect(reported.code).toBe(1);
    expect(reported.report).toMatchObject({
      consistent: false,
      missing: [],
      different: [],
      counts: { missing: 0, different: 0, unreplicable: 2 },
      unreplicable: [
        { key: '/registry/configmaps/big/at-initial-sync', bytes: first, reason: expect.stringContaining('request is too large') },
        { key: '/registry/configmaps/big/while-streaming', bytes: second, reason: expect.stringContaining('request is too large') },
      ],
    });

    // The cure comes from the primary: a value that fits heals the key, a delete too.
    await p.put('/registry/configmaps/big/at-initial-sync').value('small now').exec();
    await p.delete().key('/registry/configmaps/big/while-streaming').exec();
    await waitFor(async () => (await metric('etcd_sync_unreplicable_keys')) === 0, { timeoutMs: 20_000, message: 'not healed' });
    standbyKeys = await snapshot(s);
    expect(standbyKeys.get('/registry/configmaps/big/at-initial-sync')?.value.toString()).toBe('small now');
    expect([...standbyKeys.keys()].filter((k) => k.startsWith('/etcd-sync/unreplicable'))).toEqual([]);
    await waitInSync(p, s);
    expect((await check()).code).toBe(0);
    expect(sync.child.exitCode).toBe(null);
  });

  it('check --repair meets it as well: skipped and reported, the rest repaired', async () => {
    await putLargest(p, '/registry/configmaps/big/for-repair');
    await p.put('/registry/configmaps/apps/d').value('d').exec();
    // No sync runs: without its checkpoint, check compares latest with latest and sees both keys.
    await s.delete().key('/etcd-sync/checkpoint').exec();
    const c = runCli(['check', ...primary.cliArgs('primary'), ...standby.cliArgs('standby'), '--repair', '--output', 'json']);
    const { code } = await c.exited;
    expect(code).toBe(1);
    expect(JSON.parse(c.stdout())).toMatchObject({
      repaired: { put: 1, deleted: 0 },
      missing: [],
      unreplicable: [{ key: '/registry/configmaps/big/for-repair', reason: expect.stringContaining('request is too large') }],
    });
    expect((await snapshot(s)).get('/registry/configmaps/apps/d')?.value.toString()).toBe('d');
  });
});

describe('a full standby (NOSPACE alarm)', () => {
  let primary: EtcdServer;
  let standby: EtcdServer;
  let p: Etcd3;
  let s: Etcd3;
  /** The standby's flags: a 64 MiB quota first, a large one once the operator frees it. */
  const standbyFlags = ['--quota-backend-bytes=67108864'];
  beforeAll(async () => {
    [primary, standby] = await Promise.all([EtcdServer.start({ name: 'primary' }), EtcdServer.start({ name: 'standby-full', extraArgs: standbyFlags })]);
    p = primary.client();
    s = standby.client();
  });
  afterAll(async () => {
    p?.close();
    s?.close();
    await Promise.all([primary?.destroy(), standby?.destroy()]);
  });

  it('is an outage, not a crash: standby-unavailable and not ready while full; converges by itself once disarmed', async () => {
    const sync = runCli(['run', ...primary.cliArgs('primary'), ...standby.cliArgs('standby')]);
    try {
      await sync.waitForLog('http listening');
      const { get } = httpOf(sync);
      await waitFor(async () => JSON.parse((await get('/status')).body).state === 'streaming', { timeoutMs: 30_000 });
      // 96 MiB of values: more than the standby's quota.
      for (let i = 0; i < 96; i++) await p.put(`/registry/configmaps/fill/k${String(i).padStart(3, '0')}`).value(Buffer.alloc(1024 * 1024, i)).exec();
      await waitFor(async () => JSON.parse((await get('/status')).body).state === 'standby-unavailable', { timeoutMs: 60_000, message: `never standby-unavailable:\n${sync.output().slice(-2000)}` });
      const readyz = await get('/readyz');
      expect(readyz.status).toBe(503);
      expect(readyz.body).toMatch(/^not ready: standby-unavailable: standby etcd .* refuses writes: database space exceeded/);
      expect(JSON.parse((await get('/status')).body).standbyUnavailable).toMatchObject({ reason: expect.stringContaining('database space exceeded') });
      expect(parseMetrics((await get('/metrics')).body).get('etcd_sync_state{state="standby-unavailable"}')).toBe(1);
      expect(sync.child.exitCode).toBe(null);

      // The operator gives the standby room and disarms the alarm; etcd-sync does nothing.
      standbyFlags.push('--quota-backend-bytes=8589934592');
      await standby.restart();
      const alarms = await s.maintenance.alarm({ action: 'Get', memberID: 0, alarm: 'None' });
      expect(alarms.alarms.map((a) => String(a.alarm))).toContain('Nospace');
      for (const alarm of alarms.alarms) await s.maintenance.alarm({ action: 'Deactivate', memberID: alarm.memberID, alarm: alarm.alarm });
      await waitFor(async () => (await get('/readyz')).status === 200, { timeoutMs: 60_000, message: `not ready after the alarm was disarmed:\n${sync.output().slice(-2000)}` });
      await waitInSync(p, s);
      expect(sync.output()).toContain('"msg":"the standby takes writes again"');
    } finally {
      sync.child.kill('SIGTERM');
      await sync.exited;
    }
  });
});
