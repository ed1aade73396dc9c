import { readFileSync } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import type { Etcd3 } from 'etcd3';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { EtcdServer } from './helpers/etcd.js';
import { usePair } from './helpers/pair.js';
import { type RunningEngine, differences, inScope, putMany, snapshot, startEngine } from './helpers/sync.js';
import { waitFor } from './helpers/wait.js';

const storedPod = readFileSync('test/fixtures/k8s-objects/storage-pod.bin');
const storedJob = readFileSync('test/fixtures/k8s-objects/storage-job.bin');

describe('sync engine against real etcd', () => {
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

  it('copies the in-scope keyspace, skips excluded namespaces and prefixes, then streams mixed writes', async () => {
    const binaryKey = Buffer.concat([Buffer.from('/registry/example.com/blobs/apps/'), Buffer.from([0xff, 0x00, 0xfe, 0x80])]);
    const binaryValue = Buffer.from(Array.from({ length: 4096 }, (_, i) => i % 256));
    const bigValue = Buffer.alloc(1_400_000, 7); // under etcd's 1.5 MiB request limit
    const seed: [string | Buffer, string | Buffer][] = [
      ['/registry/pods/default/web-0', storedPod],
      ['/registry/jobs/apps/backup', storedJob],
      ['/registry/namespaces/apps', 'ns-apps'],
      ['/registry/namespaces/kube-system', 'primary-ns-kube-system'],
      ['/registry/pods/kube-system/etcd-0', 'primary-system-pod'],
      ['/registry/services/specs/kube-system/kube-dns', 'primary-dns'],
      ['/registry/services/specs/apps/api', 'svc-api'],
      ['/registry/services/endpoints/apps/api', 'ep-api'],
      ['/registry/example.com/widgets/kube-public/w', 'primary-widget'],
      ['/registry/example.com/widgets/apps/w', 'widget'],
      ['/registry/clusterroles/kube-system', 'cluster-scoped-named-like-a-namespace'],
      ['/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com', 'crd'],
      ['/registry/masterleases/10.0.0.1', 'primary-masterlease'],
      ['/registry/leases/kube-node-lease/node-1', 'heartbeat'],
      ['compact_rev_key', 'primary-compact'],
      ['/other/app/key', 'outside'],
      [binaryKey, binaryValue],
      ['/registry/configmaps/apps/big', bigValue],
    ];
    for (let i = 0; i < 2000; i++) seed.push([`/registry/configmaps/ns-${i % 7}/cm-${i}`, `value-${i}`]);
    await putMany(p, seed);
    // The standby has its own system namespaces, a stale copy and a key of its own.
    await putMany(s, [
      ['/registry/pods/kube-system/etcd-0', 'standby-system-pod'],
      ['/registry/namespaces/kube-system', 'standby-ns-kube-system'],
      ['/registry/masterleases/10.1.0.1', 'standby-masterlease'],
      ['compact_rev_key', 'standby-compact'],
      ['/registry/jobs/apps/backup', 'stale'],
      ['/registry/secrets/apps/standby-only', 'surplus'],
    ]);
    const standbyRevBefore = BigInt((await s.kv.range({ key: Buffer.from('x') })).header.revision);

    // Thousands of random deletes within seconds: a mass delete by the guard's measure, not the subject here.
    running = startEngine(primary, standby, { deleteGuard: undefined });
    await waitFor(() => running!.engine.state === 'streaming', { timeoutMs: 60_000, message: 'initial sync did not finish' });

    const primaryScope = await inScope(p);
    const standbyScope = await inScope(s);
    // Equal, except the surplus key, which is logged and counted but not deleted without --prune.
    expect(standbyScope).toEqual({ ...primaryScope, '/registry/secrets/apps/standby-only': Buffer.from('surplus').toString('hex') });
    expect(running.engine.lastDiff).toMatchObject({ missing: 2009, different: 1, equal: 0, surplus: 1, put: 2010, deleted: 0 });
    expect((await snapshot(s)).get(binaryKey.toString('latin1'))?.value.equals(binaryValue)).toBe(true);
    expect((await snapshot(s)).get('/registry/configmaps/apps/big')?.value.equals(bigValue)).toBe(true);

    // Untouched: excluded namespaces, excluded prefixes, keys outside the prefix.
    const all = await snapshot(s);
    const text = (k: string): string | undefined => all.get(k)?.value.toString();
    expect(text('/registry/pods/kube-system/etcd-0')).toBe('standby-system-pod');
    expect(text('/registry/namespaces/kube-system')).toBe('standby-ns-kube-system');
    expect(text('/registry/masterleases/10.1.0.1')).toBe('standby-masterlease');
    expect(text('compact_rev_key')).toBe('standby-compact');
    for (const k of [
      '/registry/services/specs/kube-system/kube-dns',
      '/registry/example.com/widgets/kube-public/w',
      '/registry/masterleases/10.0.0.1',
      '/registry/leases/kube-node-lease/node-1',
      '/other/app/key',
    ]) {
      expect(all.has(k), k).toBe(false);
    }
    expect(text('/registry/clusterroles/kube-system')).toBe('cluster-scoped-named-like-a-namespace');

    // Batched: 2010 keys in at most a few dozen txns (127 data ops each), never one put per key.
    const standbyRevAfter = BigInt((await s.kv.range({ key: Buffer.from('x') })).header.revision);
    expect(standbyRevAfter - standbyRevBefore).toBeLessThanOrEqual(30n);

    // Streaming: thousands of single-key revisions, mixed puts and deletes, some excluded.
    let rng = 42;
    const rand = (n: number): number => {
      rng = (rng * 1103515245 + 12345) % 2147483648;
      return rng % n;
    };
    const ops: Promise<unknown>[] = [];
    for (let i = 0; i < 3000; i++) {
      const r = rand(10);
      const key = `/registry/configmaps/ns-${rand(7)}/cm-${rand(2500)}`;
      if (r < 3) ops.push(p.delete().key(key).exec());
      else if (r < 4) ops.push(p.put(`/registry/pods/kube-system/p-${i}`).value(`sys-${i}`).exec());
      else ops.push(p.put(key).value(`stream-${i}`).exec());
      if (ops.length >= 50) await Promise.all(ops.splice(0));
    }
    await Promise.all(ops);
    await p.put('compact_rev_key').value('primary-compact-2').exec();
    // The largest value etcd's default 1.5 MiB request limit lets the primary accept, binary.
    const nearLimit = Buffer.alloc(1.5 * 1024 * 1024 - 100, 0xab);
    nearLimit[0] = 0;
    await p.put('/registry/configmaps/apps/near-limit').value(nearLimit).exec();
    await waitFor(async () => {
      const a = await inScope(p);
      a['/registry/secrets/apps/standby-only'] = Buffer.from('surplus').toString('hex');
      return isDeepStrictEqual(a, await inScope(s));
    }, { timeoutMs: 60_000, message: 'standby did not catch up with streamed writes' }).catch(async (err: Error) => {
      throw new Error(`${err.message}; differing keys (the surplus key is expected):\n${(await differences(p, s)).slice(0, 8).join('\n')}`);
    });
    expect(text('/registry/pods/kube-system/etcd-0')).toBe('standby-system-pod');
    const after = await snapshot(s);
    expect([...after.keys()].filter((k) => k.startsWith('/registry/pods/kube-system/p-'))).toEqual([]);
    expect(after.get('compact_rev_key')?.value.toString()).toBe('standby-compact');
    expect(after.get('/registry/configmaps/apps/near-limit')?.value.equals(nearLimit)).toBe(true);

    // The checkpoint reaches the primary's revision (progress notifications cover the out-of-prefix write).
    const primaryRev = BigInt((await p.kv.range({ key: Buffer.from('x') })).header.revision);
    await waitFor(async () => {
      const cp = (await snapshot(s, Buffer.from('/etcd-sync/checkpoint'))).get('/etcd-sync/checkpoint');
      return cp !== undefined && BigInt(JSON.parse(cp.value.toString()).revision) === primaryRev;
    }, { timeoutMs: 20_000, message: 'checkpoint did not reach the primary revision' });
  });

  it('copies a leased key with a standby lease that expires there', async () => {
    const lease = p.lease(3, { autoKeepAlive: false });
    await lease.put('/registry/events/apps/e1').value('event').exec();
    running = startEngine(primary, standby, { deleteGuard: undefined });
    await waitFor(async () => (await snapshot(s)).has('/registry/events/apps/e1'), { timeoutMs: 30_000, message: 'leased key not copied' });
    const copy = (await snapshot(s)).get('/registry/events/apps/e1');
    expect(copy?.lease).not.toBe('0');
    const ttl = await s.leaseClient.leaseTimeToLive({ ID: copy!.lease });
    expect(Number(ttl.TTL)).toBeGreaterThan(0);
    expect(Number(ttl.TTL)).toBeLessThanOrEqual(3);
    // The primary's lease runs out: the copy goes too, and stays gone.
    await waitFor(async () => !(await snapshot(s)).has('/registry/events/apps/e1'), { timeoutMs: 20_000, message: 'copy outlived its lease' });
    await waitFor(async () => !(await snapshot(p)).has('/registry/events/apps/e1'), { timeoutMs: 20_000, message: 'primary lease did not expire' });
    expect((await snapshot(s)).has('/registry/events/apps/e1')).toBe(false);

    // A lease kept alive on the primary keeps its copy alive beyond its first TTL.
    const live = p.lease(2);
    await live.put('/registry/events/apps/e2').value('kept').exec();
    await waitFor(async () => (await snapshot(s)).has('/registry/events/apps/e2'), { timeoutMs: 20_000, message: 'kept-alive key not copied' });
    const firstSeen = Date.now();
    await waitFor(() => Date.now() - firstSeen > 5_000, { timeoutMs: 10_000 });
    expect((await snapshot(s)).has('/registry/events/apps/e2')).toBe(true);
    await live.revoke();
    await waitFor(async () => !(await snapshot(s)).has('/registry/events/apps/e2'), { timeoutMs: 20_000, message: 'revoked lease copy stayed' });
  });
});
