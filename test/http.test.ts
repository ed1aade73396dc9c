/** The Pod's HTTP surface of a real `etcd-sync run`: /healthz, /readyz, /metrics, /status, /check. */
import type { Etcd3 } from 'etcd3';
import { beforeAll, describe, expect, it } from 'vitest';
import type { EtcdServer } from './helpers/etcd.js';
import { parseMetrics } from './helpers/metrics.js';
import { usePair } from './helpers/pair.js';
import { readFileSync } from 'node:fs';
import { IMAGE_NODE_FLAGS, IMAGE_NODE_OPTIONS } from '../bench/load.js';
import { packageVersion, putMany, runCli, snapshot, httpPort } from './helpers/sync.js';
import { waitFor } from './helpers/wait.js';

describe('HTTP surface of run', () => {
  let primary: EtcdServer;
  let standby: EtcdServer;
  let p: Etcd3;
  let s: Etcd3;
  const pair = usePair();
  beforeAll(() => ({ primary, standby, p, s } = pair));

  it('healthz, readyz flipping with the initial sync, metrics, status and check', async () => {
    await putMany(p, [
      ['/registry/pods/apps/a', 'a'],
      ['/registry/pods/apps/b', 'b'],
    ]);
    await primary.stop(); // unreachable at start: alive, not ready
    const cli = runCli(['run', ...primary.cliArgs('primary'), ...standby.cliArgs('standby'), '--identity', 'sync-0', '--ready-max-lag', '0']);
    try {
      await cli.waitForLog('http listening');
      const port = httpPort(cli);
      const get = async (path: string): Promise<{ status: number; body: string }> => {
        const res = await fetch(`http://127.0.0.1:${port}${path}`);
        return { status: res.status, body: await res.text() };
      };
      expect(await get('/healthz')).toEqual({ status: 200, body: 'ok\n' });
      await cli.waitForLog('connect to primary failed, retrying');
      expect(await get('/readyz')).toEqual({ status: 503, body: 'not ready: primary unreachable (never answered)\n' });

      await primary.launch();
      // Ready as the leader that streams (a replica is ready as a follower too, for a moment before it campaigns).
      await waitFor(
        async () => {
          const st = JSON.parse((await get('/status')).body) as { role: string; state: string; ready: { ready: boolean } };
          return st.role === 'leader' && st.state === 'streaming' && st.ready.ready && (await get('/readyz')).status === 200;
        },
        { timeoutMs: 30_000, message: 'never ready' },
      );
      await p.put('/registry/pods/apps/c').value('c').exec();
      await p.delete().key('/registry/pods/apps/a').exec();
      await waitFor(async () => (await snapshot(s)).has('/registry/pods/apps/c') && !(await snapshot(s)).has('/registry/pods/apps/a'), { timeoutMs: 20_000 });

      const rev = Number((await p.kv.range({ key: Buffer.from('x') })).header.revision);
      await waitFor(async () => parseMetrics((await get('/metrics')).body).get('etcd_sync_applied_revision') === rev, { timeoutMs: 20_000, message: 'applied revision never reached the primary' });
      const metrics = parseMetrics((await get('/metrics')).body);
      expect(metrics.get('etcd_sync_primary_revision')).toBe(rev);
      expect(metrics.get('etcd_sync_lag_revisions')).toBe(0);
      expect(metrics.get('etcd_sync_lag_seconds')).toBe(0);
      expect(metrics.get('etcd_sync_events_applied_total{type="put"}')).toBe(1);
      expect(metrics.get('etcd_sync_events_applied_total{type="delete"}')).toBe(1);
      expect(metrics.get('etcd_sync_leader')).toBe(1);
      const version = packageVersion();
      expect(metrics.get(`etcd_sync_build_info{version="${version}"}`)).toBe(1);
      const starting = cli.output().split('\n').find((line) => line.includes('"msg":"starting"'));
      expect(JSON.parse(starting ?? '{}')).toMatchObject({ level: 'info', version, identity: 'sync-0', msg: 'starting' });
      expect(metrics.get('etcd_sync_state{state="streaming"}')).toBe(1);
      expect(metrics.get('etcd_sync_state{state="initial-sync"}')).toBe(0);
      // The initial diff's txn, then the streamed put and delete (one txn when coalesced, or two).
      expect(metrics.get('etcd_sync_txn_duration_seconds_count')).toBeGreaterThanOrEqual(2);
      expect(metrics.get('etcd_sync_watch_restarts_total')).toBe(0);
      expect(metrics.get('etcd_sync_self_heals_total')).toBe(0);
      expect(metrics.get('etcd_sync_self_heal_pending_keys')).toBe(0);
      expect(metrics.get('etcd_sync_unreadable_encrypted_values')).toBe(0);
      // No check has run: no finding, no timestamp (a 0 would read as "consistent" or 1970).
      expect([...metrics.keys()].filter((k) => /check_keys|last_check/.test(k))).toEqual([]);
      expect(metrics.has('process_cpu_user_seconds_total')).toBe(true);
      expect((await get('/metrics')).body).toContain('identity="sync-0"');

      const status = JSON.parse((await get('/status')).body);
      expect(status).toEqual({
        identity: 'sync-0',
        role: 'leader',
        state: 'streaming',
        ready: { ready: true, reason: 'streaming, lag 0 revisions' },
        appliedRevision: rev,
        primaryRevision: rev,
        lagRevisions: 0,
        lagSeconds: 0,
        primaryReachable: true,
        lastPrimaryContact: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
        // The initial sync of the 2 keys seeded before the start: all of them, done.
        progress: {
          phase: 'initial-sync',
          revision: expect.stringMatching(/^\d+$/),
          keysDone: 2,
          keysTotal: 2,
          percent: 100,
          keysPerSecond: expect.any(Number),
          etaSeconds: 0,
          written: 2,
          bytesWritten: expect.any(Number),
          running: false,
          startedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
          finishedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
        },
        held: null,
        paused: null,
        fenced: null,
        unreplicable: [],
        standbyUnavailable: null,
        lastCheck: null,
      });
      expect(metrics.get('etcd_sync_primary_up')).toBe(1);
      expect(Math.abs((metrics.get('etcd_sync_primary_last_contact_timestamp_seconds') ?? 0) - Date.now() / 1000)).toBeLessThan(30);

      // /check answers like `etcd-sync check --output json`.
      await s.put('/registry/secrets/apps/only-standby').value('x').exec();
      const fromHttp = JSON.parse((await get('/check')).body);
      const fromCli = runCli(['check', ...primary.cliArgs('primary'), ...standby.cliArgs('standby'), '--output', 'json']);
      await fromCli.exited;
      const cliReport = JSON.parse(fromCli.stdout());
      expect(fromHttp).toEqual({ ...cliReport, primaryRevision: fromHttp.primaryRevision, standbyRevision: fromHttp.standbyRevision });
      expect(fromHttp).toMatchObject({ consistent: false, counts: { inScope: 2, missing: 0, surplus: 1, different: 0 }, surplus: ['/registry/secrets/apps/only-standby'] });
      expect((await get('/nope')).status).toBe(404);
    } finally {
      cli.child.kill('SIGTERM');
      expect((await cli.exited).code).toBe(0);
    }
  });

  it('a busy --http-address is a clear error, exit 2', async () => {
    const first = runCli(['run', ...primary.cliArgs('primary'), ...standby.cliArgs('standby'), '--http-address', '127.0.0.1:0']);
    try {
      await first.waitForLog('http listening');
      const port = /"address":"[^"]*:(\d+)"/.exec(first.output())?.[1];
      const second = runCli(['run', ...primary.cliArgs('primary'), ...standby.cliArgs('standby'), '--http-address', `127.0.0.1:${port}`]);
      expect((await second.exited).code).toBe(2);
      expect(second.output()).toContain(`etcd-sync: --http-address 127.0.0.1:${port}: address already in use`);
    } finally {
      first.child.kill('SIGTERM');
      await first.exited;
    }
  });

  it("100 concurrent /check with the image's heap settings: one audit, bounded memory, alive; only GET and HEAD; --http-check off", async () => {
    await putMany(p, Array.from({ length: 3000 }, (_, i): [string, string] => [`/registry/configmaps/many-${i % 30}/k${i}`, 'x'.repeat(512)]));
    const cli = runCli(['run', ...primary.cliArgs('primary'), ...standby.cliArgs('standby'), '--check-interval', '0'], { NODE_OPTIONS: IMAGE_NODE_OPTIONS }, IMAGE_NODE_FLAGS);
    try {
      await cli.waitForLog('http listening');
      const base = `http://127.0.0.1:${httpPort(cli)}`;
      await waitFor(async () => ((await (await fetch(`${base}/status`)).json()) as { state: string }).state === 'streaming', { timeoutMs: 30_000 });
      const answers = await Promise.all(Array.from({ length: 100 }, async () => (await fetch(`${base}/check`)).json() as Promise<{ counts: { inScope: number } }>));
      expect(new Set(answers.map((a) => JSON.stringify(a))).size).toBe(1);
      expect(answers[0]?.counts.inScope).toBeGreaterThanOrEqual(3000);
      expect(cli.output().split('"msg":"/check: auditing both etcds"').length - 1).toBe(1);
      const peakKb = Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${cli.child.pid}/status`, 'utf8'))?.[1]);
      expect(peakKb / 1024).toBeLessThan(400);
      expect(cli.child.exitCode).toBe(null);
      for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
        const res = await fetch(`${base}/check`, { method });
        expect([res.status, res.headers.get('allow')]).toEqual([405, 'GET, HEAD']);
      }
      expect((await fetch(`${base}/healthz`, { method: 'HEAD' })).status).toBe(200);
    } finally {
      cli.child.kill('SIGTERM');
      await cli.exited;
    }
    const off = runCli(['run', ...primary.cliArgs('primary'), ...standby.cliArgs('standby'), '--http-check', 'off']);
    try {
      await off.waitForLog('http listening');
      expect((await fetch(`http://127.0.0.1:${httpPort(off)}/check`)).status).toBe(404);
    } finally {
      off.child.kill('SIGTERM');
      await off.exited;
    }
  });
});
