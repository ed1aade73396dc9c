/**
 * Histories that move under a running sync: the primary compacting the full diff's revision, the
 * primary restored from an older backup (same cluster, then rebuilt as a new one), the standby
 * restored from an older backup, and a standby whose --max-txn-ops is small.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EtcdServer } from './helpers/etcd.js';
import { parseMetrics } from './helpers/metrics.js';
import { usePair } from './helpers/pair.js';
import { type CliProcess, httpPort, putMany, runCli, snapshot, waitInSync, waitStreaming } from './helpers/sync.js';
import { waitFor } from './helpers/wait.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'etcd-sync-snapshots-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('histories that move under a running sync', () => {
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
    sync = undefined;
  });
  const run = (...extra: string[]): CliProcess => {
    sync = runCli(['run', ...primary.cliArgs('primary'), ...standby.cliArgs('standby'), '--prune', ...extra]);
    return sync;
  };


  it('the full diff revision compacted mid-diff: the diff starts again at a newer revision, no exit, exact equality', async () => {
    await putMany(
      p,
      Array.from({ length: 20_000 }, (_, i): [string, string] => [`/registry/configmaps/load-${i % 50}/k${i}`, `v${i}`]),
    );
    const cli = run('--page-size', '10');
    // The moment the diff pins its revision: one write more, and the primary compacts past it.
    cli.onLog('"msg":"full diff started"', () => {
      void (async () => {
        const put = await p.put('/registry/configmaps/load-0/compactor').value('x').exec();
        await p.kv.compact({ revision: put.header.revision, physical: true });
      })();
    });
    await waitStreaming(cli);
    expect(cli.output()).toContain('resync: the full diff revision was compacted on the primary; again at a newer revision');
    const metrics = parseMetrics(await (await fetch(`http://127.0.0.1:${httpPort(cli)}/metrics`)).text());
    expect(metrics.get('etcd_sync_resyncs_total{reason="compacted"}')).toBeGreaterThanOrEqual(1);
    await waitInSync(p, s);
    expect(cli.child.exitCode).toBe(null);
  });

  it('the primary restored from an older backup, then rebuilt as a new cluster: logged, the standby follows the primary as it is now', async () => {
    const cli = run();
    await waitStreaming(cli);
    await putMany(p, [
      ['/registry/configmaps/backup/kept', 'in the backup'],
      ['/registry/configmaps/backup/changed', 'before'],
    ]);
    const file = path.join(tmp, 'primary.db');
    primary.snapshotTo(file);
    // After the backup: gone with the restore.
    await p.put('/registry/configmaps/backup/changed').value('after the backup').exec();
    for (let i = 0; i < 20; i++) await p.put(`/registry/configmaps/backup/after-${i}`).value('x').exec();
    await waitInSync(p, s);

    await primary.restoreFrom(file);
    await p.put('/registry/configmaps/backup/new-history').value('after the restore').exec();
    await waitFor(async () => cli.output().includes('resync: the primary went back in time'), { timeoutMs: 60_000, message: `no resync:\n${cli.output().slice(-2000)}` });
    await waitInSync(p, s);
    const standbyKeys = await snapshot(s);
    expect(standbyKeys.get('/registry/configmaps/backup/changed')?.value.toString()).toBe('before');
    expect(standbyKeys.has('/registry/configmaps/backup/after-0')).toBe(false);
    expect(standbyKeys.get('/registry/configmaps/backup/new-history')?.value.toString()).toBe('after the restore');

    await primary.restoreFrom(file, { newCluster: true });
    await p.put('/registry/configmaps/backup/rebuilt').value('a new cluster').exec();
    await waitFor(async () => cli.output().includes('resync: the primary is another etcd cluster now'), { timeoutMs: 60_000, message: `no resync:\n${cli.output().slice(-2000)}` });
    await waitInSync(p, s);
    expect((await snapshot(s)).has('/registry/configmaps/backup/new-history')).toBe(false);
    expect(cli.child.exitCode).toBe(null);
  });

  it('the standby restored from an older backup while run keeps running: deletes made since arrive, exact equality without --prune', async () => {
    sync = runCli(['run', ...primary.cliArgs('primary'), ...standby.cliArgs('standby')]);
    const cli = sync;
    await waitStreaming(cli);
    await putMany(
      p,
      Array.from({ length: 25 }, (_, i): [string, string] => [`/registry/configmaps/standby-backup/k${i}`, 'x']),
    );
    await waitInSync(p, s);
    const file = path.join(tmp, 'standby.db');
    standby.snapshotTo(file);
    for (let i = 0; i < 25; i++) await p.delete().key(`/registry/configmaps/standby-backup/k${i}`).exec();
    await waitInSync(p, s);

    await standby.restoreFrom(file);
    expect((await snapshot(s)).has('/registry/configmaps/standby-backup/k0')).toBe(true);
    // The next write finds the standby's checkpoint older than what etcd-sync had applied.
    await p.put('/registry/configmaps/standby-backup/after-restore').value('y').exec();
    await waitFor(async () => cli.output().includes('resync: standby checkpoint went back from'), { timeoutMs: 60_000, message: `not noticed:\n${cli.output().slice(-2000)}` });
    await waitInSync(p, s);
    expect(cli.child.exitCode).toBe(null);
  });
});

describe('a standby with a small --max-txn-ops', () => {
  let primary: EtcdServer;
  let standby: EtcdServer;
  let p: Etcd3;
  let s: Etcd3;
  beforeAll(async () => {
    [primary, standby] = await Promise.all([EtcdServer.start({ name: 'primary' }), EtcdServer.start({ name: 'standby-16', extraArgs: ['--max-txn-ops=16'] })]);
    p = primary.client();
    s = standby.client();
  });
  afterAll(async () => {
    p?.close();
    s?.close();
    await Promise.all([primary?.destroy(), standby?.destroy()]);
  });

  it('50 keys deleted at once on the standby are healed; check --repair with findings works', async () => {
    const keys = Array.from({ length: 200 }, (_, i) => `/registry/configmaps/small/k${String(i).padStart(3, '0')}`);
    await putMany(p, keys.map((k): [string, string] => [k, k]));
    const sync = runCli(['run', ...primary.cliArgs('primary'), ...standby.cliArgs('standby'), '--max-txn-ops', '16']);
    try {
      await sync.waitForLog('"msg":"initial sync done"');
      await waitInSync(p, s);
      await s.kv.deleteRange({ key: Buffer.from(keys[0]!), range_end: Buffer.from(keys[50]!) }); // one request, 50 keys
      await waitFor(async () => (await snapshot(s)).has(keys[0]!) && (await snapshot(s)).has(keys[49]!), { timeoutMs: 30_000, message: `not healed:\n${sync.output().slice(-2000)}` });
      await waitInSync(p, s);
      expect(sync.output()).not.toContain('too many operations');
    } finally {
      sync.child.kill('SIGTERM');
      await sync.exited;
    }
    await s.kv.deleteRange({ key: Buffer.from(keys[100]!), range_end: Buffer.from(keys[150]!) });
    await s.put(keys[160]!).value('changed on the standby').exec();
    const repair = runCli(['check', ...primary.cliArgs('primary'), ...standby.cliArgs('standby'), '--max-txn-ops', '16', '--repair', '--output', 'json']);
    const { code } = await repair.exited;
    expect(repair.output()).not.toContain('too many operations');
    expect(code).toBe(0);
    expect(JSON.parse(repair.stdout())).toMatchObject({ consistent: true, repaired: { put: 51, deleted: 0 } });
    await waitInSync(p, s);
  });
});
