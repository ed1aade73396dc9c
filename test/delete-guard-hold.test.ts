/**
 * The delete guard against real etcd and the real CLI: a mass delete on the primary holds the
 * standby at the revision before it (exactly the primary's image there), says so everywhere, stays
 * held across a restart, refuses repairs, and ends as the operator decides: `resume
 * --accept-deletes` applies the deletes, `promote` promotes the image before them.
 */
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EtcdServer } from './helpers/etcd.js';
import { parseMetrics } from './helpers/metrics.js';
import { usePair } from './helpers/pair.js';
import { type CliProcess, httpPort, inScope, putMany, runCli, snapshot, waitInSync } from './helpers/sync.js';
import { waitFor } from './helpers/wait.js';

const NAMESPACES = 10;
const PER_NAMESPACE = 100;

describe('the delete guard holds the standby before a mass delete', () => {
  let primary: EtcdServer;
  let standby: EtcdServer;
  let p: Etcd3;
  let s: Etcd3;
  const pair = usePair();
  let sync: CliProcess;
  let port = 0;

  const start = async (): Promise<void> => {
    // The default guard (5%/1m: here the floor of 100 deletes a minute, 5 % of 1000 being 50).
    // A periodic check every second: while held it must not repair (it would put the keys written after the burst).
    sync = runCli(['run', ...primary.cliArgs('primary'), ...standby.cliArgs('standby'), '--identity', 'guard-0', '--heal-delay', '200ms', '--lease-ttl', '5', '--check-interval', '1s']);
    await sync.waitForLog('http listening');
    port = httpPort(sync);
  };
  const get = async (path: string): Promise<{ status: number; body: string }> => {
    const res = await fetch(`http://127.0.0.1:${port}${path}`);
    return { status: res.status, body: await res.text() };
  };
  const status = async (): Promise<Record<string, any>> => JSON.parse((await get('/status')).body) as Record<string, any>;
  const cli = async (...args: string[]): Promise<{ code: number | null; stdout: string; out: string }> => {
    const c = runCli(args);
    const { code } = await c.exited;
    return { code, stdout: c.stdout(), out: c.output() };
  };
  const revision = async (): Promise<bigint> => BigInt((await p.kv.range({ key: Buffer.from('x') })).header.revision);
  const streaming = async (): Promise<void> =>
    waitFor(async () => {
      const st = await status();
      return st.role === 'leader' && st.state === 'streaming' && st.ready.ready === true;
    }, { timeoutMs: 60_000, message: `never streaming:\n${sync.output().slice(-3000)}` });
  const held = async (): Promise<Record<string, any>> => {
    let st: Record<string, any> = {};
    await waitFor(async () => (st = await status()).state === 'held', { timeoutMs: 30_000, message: 'never held' });
    return st;
  };

  beforeAll(async () => {
    ({ primary, standby, p, s } = pair);
    const seed: [string, string][] = [];
    for (let n = 0; n < NAMESPACES; n++) for (let i = 0; i < PER_NAMESPACE; i++) seed.push([`/registry/configmaps/apps-${n}/cm-${i}`, `v-${n}-${i}`]);
    seed.push(['/registry/pods/kube-system/etcd-0', 'not replicated']);
    await putMany(p, seed);
    await start();
    await streaming();
    await waitInSync(p, s);
  });
  afterAll(async () => {
    sync?.child.kill('SIGTERM');
    await sync?.exited;
  });

  it('30 % deleted in one request: held at the revision before it, the exact image of the primary there, on every signal; still held after kill -9', async () => {
    // One txn deleting 3 namespaces' ConfigMaps: a single revision of 300 deletes.
    await p.kv.txn({
      compare: [],
      success: [0, 1, 2].map((n) => ({ request_delete_range: { key: Buffer.from(`/registry/configmaps/apps-${n}/`), range_end: Buffer.from(`/registry/configmaps/apps-${n}0`) } })),
      failure: [],
    });
    const burstRevision = await revision();
    const heldAt = burstRevision - 1n;
    await p.put('/registry/configmaps/apps-9/after-burst').value('written after the burst').exec();

    const st = await held();
    expect(st.held).toMatchObject({ revision: heldAt.toString(), reason: `300 deletes crossed --delete-guard 5%/1m (threshold 100 of 1000 in-scope keys) at primary revision ${burstRevision}`, compacted: false });
    await waitFor(async () => (await status()).held.pendingDeletes === 300, { timeoutMs: 10_000, message: 'the waiting deletes were not counted' });
    expect((await status()).held).toMatchObject({ pendingDeletes: 300, pendingPuts: 1, deletesByGroup: { 'configmaps/apps-0': 100, 'configmaps/apps-1': 100, 'configmaps/apps-2': 100 } });
    expect(await inScope(s)).toEqual(await inScope(p, undefined, heldAt));
    expect(Object.keys(await inScope(s))).toHaveLength(1000);
    const checkpoint = JSON.parse((await snapshot(s)).get('/etcd-sync/checkpoint')!.value.toString());
    expect(BigInt(checkpoint.revision)).toBe(heldAt);

    const ready = await get('/readyz');
    expect(ready.status).toBe(503);
    expect(ready.body).toMatch(new RegExp(`^not ready: held before a mass delete at primary revision ${heldAt} \\(300 deletes crossed --delete-guard 5%/1m .*\\); 300 deletes waiting: etcd-sync resume --accept-deletes, or promote\\n$`));
    const m = parseMetrics((await get('/metrics')).body);
    expect([m.get('etcd_sync_state{state="held"}'), m.get('etcd_sync_held_revision'), m.get('etcd_sync_held_pending_deletes')]).toEqual([1, Number(heldAt), 300]);
    // The lag stays true: the primary's revision moves on, the standby does not.
    await waitFor(async () => parseMetrics((await get('/metrics')).body).get('etcd_sync_lag_revisions') === 2, { timeoutMs: 15_000, message: 'the lag did not count the held revisions' });
    const logged = sync.output().split('\n').find((line) => line.includes('delete guard: holding the standby'));
    expect(JSON.parse(logged ?? '{}')).toMatchObject({ level: 'error', heldRevision: heldAt.toString(), burstRevision: burstRevision.toString(), deletes: 300, threshold: 100 });

    const text = await cli('status', ...standby.cliArgs('standby'));
    expect(text.code).toBe(1);
    expect(text.stdout).toContain(`state: held (NOT READY: held before a mass delete at primary revision ${heldAt}: 300 deletes crossed`);
    await waitFor(async () => (await cli('status', ...standby.cliArgs('standby'))).stdout.includes('waiting on the primary: 300 deletes (configmaps/apps-0 100, configmaps/apps-1 100, configmaps/apps-2 100)'), {
      timeoutMs: 15_000,
      intervalMs: 500,
      message: 'status never showed what waits',
    });

    // The self-healer keeps the held image: a key changed on the standby by hand goes back to its value at the held revision.
    await s.put('/registry/configmaps/apps-5/cm-5').value('edited on the standby').exec();
    await waitFor(async () => (await snapshot(s)).get('/registry/configmaps/apps-5/cm-5')?.value.toString() === 'v-5-5', { timeoutMs: 15_000, message: 'not healed while held' });

    // Repairs would apply the deletes through the back door: refused.
    const repair = await cli('check', ...primary.cliArgs('primary'), ...standby.cliArgs('standby'), '--repair', '--prune', '--yes');
    expect(repair.code).toBe(2);
    expect(repair.out).toMatch(/^etcd-sync: the standby holds before a mass delete on the primary \(300 deletes crossed .*\): a repair would apply the held deletes; etcd-sync resume --accept-deletes, or promote\n$/m);

    // Seconds of periodic checks while held: none ran a repair (the key written after the burst is still not on the standby).
    await waitFor(async () => (await status()).held.pendingPuts === 1, { timeoutMs: 10_000 });
    expect((await snapshot(s)).has('/registry/configmaps/apps-9/after-burst')).toBe(false);
    expect(sync.output()).not.toContain('periodic check repaired');
    // Killed and started again: still held, nothing applied.
    sync.child.kill('SIGKILL');
    await sync.exited;
    await start();
    const again = await held();
    expect(again.held).toMatchObject({ revision: heldAt.toString() });
    expect(await inScope(s)).toEqual(await inScope(p, undefined, heldAt));
  });

  it('resume alone refuses; resume --accept-deletes applies the held deletes and goes on streaming', async () => {
    const plain = await cli('resume', ...standby.cliArgs('standby'));
    expect(plain.code).toBe(1);
    expect(plain.stdout).toMatch(/^resume: refused: the standby is held before a mass delete at primary revision \d+ \(300 deletes crossed .*\); etcd-sync resume --accept-deletes applies the deletes, etcd-sync promote promotes the image before them\n$/);

    const accept = await cli('resume', ...standby.cliArgs('standby'), '--accept-deletes', '--reason', 'the namespaces were retired on purpose', '-o', 'json');
    expect(accept.code).toBe(0);
    expect(JSON.parse(accept.stdout)).toMatchObject({ command: 'resume', outcome: 'accepted-deletes', exitCode: 0, record: { what: 'accept-deletes', reason: 'the namespaces were retired on purpose' } });
    await streaming();
    await waitInSync(p, s);
    expect(Object.keys(await inScope(s))).toHaveLength(701);
    const st = await status();
    expect([st.held, (await snapshot(s)).has('/etcd-sync/control/held'), (await snapshot(s)).has('/etcd-sync/control/accept-deletes')]).toEqual([null, false, false]);
    expect(sync.output()).toContain('applying the held deletes: accepted by');
  });

  it('deletes spread over single requests trip it at the threshold; promote while held promotes the image before them', async () => {
    const before = await revision();
    // One delete per request: the 101st within the minute crosses the floor of 100.
    for (let i = 0; i < 150; i++) await p.delete().key(`/registry/configmaps/apps-3/cm-${i % PER_NAMESPACE}`).exec();
    for (let i = 0; i < 50; i++) await p.delete().key(`/registry/configmaps/apps-4/cm-${i}`).exec();
    const st = await held();
    const heldAt = BigInt(st.held.revision);
    // 100 deletes of apps-3 were applied (its other 50 requests deleted nothing), the next one was not.
    expect(heldAt).toBe(before + 100n);
    const image = await inScope(p, undefined, heldAt);
    expect(await inScope(s)).toEqual(image);
    expect(Object.keys(await inScope(s))).toHaveLength(601);
    // The primary compacts past the held revision (Kubernetes does every 5 minutes): said loudly, the image intact.
    await p.kv.compact({ revision: String(await revision()), physical: true });
    await waitFor(async () => (await status()).held.compacted === true, { timeoutMs: 20_000, message: 'the compaction past the held revision went unnoticed' });
    const loud = sync.output().split('\n').find((line) => line.includes('delete guard: the primary compacted past the held revision'));
    expect(JSON.parse(loud ?? '{}')).toMatchObject({ level: 'error', heldRevision: heldAt.toString() });
    expect(await inScope(s)).toEqual(image);

    const promote = await cli('promote', ...standby.cliArgs('standby'), ...primary.cliArgs('primary'), '--reason', 'drill: promote the image before the burst');
    expect(promote.code).toBe(0);
    expect(promote.stdout).toContain('the standby holds before a mass delete on the primary: 101 deletes crossed --delete-guard 5%/1m');
    expect(promote.stdout).toContain(`data-loss point: every primary write after revision ${heldAt} is not on this standby (the held deletes and whatever followed them): 50 revisions (primary now at ${await revision()})`);
    expect(promote.stdout).toContain('promoted by ');
    await waitFor(async () => (await status()).state === 'fenced', { timeoutMs: 15_000, message: 'not fenced' });
    expect(await inScope(s)).toEqual(image);
  });
});
