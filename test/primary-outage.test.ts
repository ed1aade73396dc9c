/**
 * What the operator reads while the primary is gone, cut off or paused: /readyz, /status, the
 * metrics and `etcd-sync status` must say so while it lasts, and the pair must converge exactly
 * once the primary is back. The silent partition is a TCP proxy that stops forwarding without
 * closing its sockets (packets dropped, no reset).
 */
import type { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { EtcdServer } from './helpers/etcd.js';
import { parseMetrics } from './helpers/metrics.js';
import { usePair } from './helpers/pair.js';
import { Proxy } from './helpers/proxy.js';
import { type CliProcess, putMany, runCli, waitInSync, httpPort } from './helpers/sync.js';
import { waitFor } from './helpers/wait.js';

/** --primary-timeout of the runs here: short, so the tests are (the default is 15 s; OUTAGE_TIMEOUT_S=15 measures detection with it). */
const TIMEOUT_S = Number(process.env.OUTAGE_TIMEOUT_S ?? 3);

describe('the primary silent, killed or paused: every signal says so', () => {
  let primary: EtcdServer;
  let standby: EtcdServer;
  let p: Etcd3;
  let s: Etcd3;
  let proxy: Proxy;
  const pair = usePair();
  beforeAll(async () => {
    ({ primary, standby, p, s } = pair);
    proxy = await Proxy.start(primary.endpoint);
  });
  afterAll(async () => {
    await proxy?.close();
  });
  let running: CliProcess | undefined;
  afterEach(async () => {
    // SIGTERM: the leader hands its lease back, so the next test's replica leads at once.
    running?.child.kill('SIGTERM');
    await running?.exited;
    // A test that failed with the primary down leaves it down for the next: not so.
    if (primary.process === undefined) await primary.launch();
    running = undefined;
    proxy.mode = 'forward';
  });

  /** `run` against the primary through the proxy; resolves once it streams and is ready. */
  const start = async (): Promise<{ get: (path: string) => Promise<{ status: number; body: string }>; metric: (name: string) => Promise<number | undefined> }> => {
    running = runCli(['run', '--primary-endpoints', proxy.endpoint, ...standby.cliArgs('standby'), '--primary-timeout', `${TIMEOUT_S}s`, '--identity', 'outage-0']);
    const cli = running;
    await cli.waitForLog('http listening');
    const port = httpPort(cli);
    const get = async (path: string): Promise<{ status: number; body: string }> => {
      const res = await fetch(`http://127.0.0.1:${port}${path}`);
      return { status: res.status, body: await res.text() };
    };
    const metric = async (name: string): Promise<number | undefined> => parseMetrics((await get('/metrics')).body).get(name);
    // One /status read: ready as the leader that streams (a follower is ready too, for a moment before it campaigns).
    await waitFor(async () => {
      const st = JSON.parse((await get('/status')).body) as { role: string; state: string; ready: { ready: boolean } };
      return st.role === 'leader' && st.state === 'streaming' && st.ready.ready;
    }, {
      timeoutMs: 30_000,
      message: `never a ready leader:\n${cli.output().slice(-2000)}`,
    });
    return { get, metric };
  };
  const status = async (...extra: string[]): Promise<{ code: number | null; json: Record<string, unknown> }> => {
    const c = runCli(['status', ...standby.cliArgs('standby'), '--output', 'json', ...extra]);
    const { code } = await c.exited;
    return { code, json: JSON.parse(c.stdout()) as Record<string, unknown> };
  };
  const primaryRevision = async (): Promise<number> => Number((await p.kv.range({ key: Buffer.from('x') })).header.revision);

  it('a black-holed primary: not ready, primary_up 0, lag_seconds growing and status exit 1 while it lasts; back: ready, lag 0, nothing lost', async () => {
    await putMany(p, [['/registry/configmaps/outage/before', 'before']]);
    const { get, metric } = await start();
    await waitInSync(p, s);
    expect(await metric('etcd_sync_primary_up')).toBe(1);
    // The leader publishes its view within a few seconds of a change.
    await waitFor(async () => (await status()).code === 0, { timeoutMs: 10_000, message: 'status never exit 0 with a streaming leader' });

    proxy.mode = 'freeze';
    const cutAt = Date.now();
    // Written while the standby cannot hear of them: the data at risk.
    await putMany(p, [
      ['/registry/configmaps/outage/during-1', 'x'],
      ['/registry/configmaps/outage/during-2', 'y'],
    ]);
    await p.delete().key('/registry/configmaps/outage/before').exec();
    await waitFor(async () => (await get('/readyz')).body.startsWith('not ready: primary unreachable'), {
      timeoutMs: (TIMEOUT_S + 10) * 1000,
      intervalMs: 100,
      message: 'still ready with the primary black-holed',
    });
    const detectedMs = Date.now() - cutAt;
    console.info(`black-holed primary: /readyz 503 after ${detectedMs} ms (--primary-timeout ${TIMEOUT_S}s)`);
    expect((await get('/readyz')).body).toMatch(/^not ready: primary unreachable \(silent for \d+ s\)\n$/);
    expect((await get('/healthz')).status).toBe(200);
    expect(await metric('etcd_sync_primary_up')).toBe(0);
    const firstLag = (await metric('etcd_sync_lag_seconds')) ?? 0;
    expect(firstLag).toBeGreaterThanOrEqual(TIMEOUT_S);
    await waitFor(async () => ((await metric('etcd_sync_lag_seconds')) ?? 0) >= firstLag + 1, { timeoutMs: 10_000, message: 'lag_seconds does not grow during the outage' });
    const st = await get('/status');
    expect(JSON.parse(st.body)).toMatchObject({ role: 'leader', primaryReachable: false, ready: { ready: false } });
    // `status` through the same black hole, and from the leader's published view alone.
    const own = await status('--primary-endpoints', proxy.endpoint, '--primary-timeout', '1s');
    expect(own.code).toBe(1);
    expect(own.json).toMatchObject({ primaryReachable: false, ready: false, reason: 'the primary does not answer' });
    await waitFor(async () => (await status()).json.primaryReachable === false, { timeoutMs: 10_000, message: "the leader's published view still has the primary reachable" });
    const published = await status();
    expect(published.code).toBe(1);
    expect(published.json).toMatchObject({ primaryReachable: false, ready: false, leader: 'outage-0' });

    proxy.mode = 'forward';
    await waitFor(async () => (await get('/readyz')).status === 200, { timeoutMs: 40_000, message: 'not ready again after the path healed' });
    await waitInSync(p, s);
    await waitFor(async () => (await metric('etcd_sync_lag_revisions')) === 0 && (await metric('etcd_sync_lag_seconds')) === 0, { timeoutMs: 20_000, message: 'lag did not return to 0' });
    expect(await metric('etcd_sync_primary_up')).toBe(1);
    expect(await metric('etcd_sync_applied_revision')).toBe(await primaryRevision());
    // The recovery says how long the outage lasted (the partition held the primary silent past --primary-timeout).
    const recovered = running?.output().split('\n').find((line) => line.includes('"msg":"primary reachable again"'));
    expect(JSON.parse(recovered ?? '{}').outageSeconds).toBeGreaterThanOrEqual(TIMEOUT_S);
    await waitFor(async () => (await status()).code === 0, { timeoutMs: 10_000, message: 'status not back to exit 0' });
  });

  it('a killed primary: the same signals; restarted: converges', async () => {
    const { get, metric } = await start();
    await waitInSync(p, s);
    const downAt = Date.now();
    await primary.stop('SIGKILL');
    await waitFor(async () => (await get('/readyz')).body.startsWith('not ready: primary unreachable'), { timeoutMs: (TIMEOUT_S + 10) * 1000, intervalMs: 100 }).catch(async () => {
      throw new Error(`still ready with the primary killed: ${(await get("/status")).body}\n${running?.output().slice(-3000)}`);
    });
    console.info(`killed primary: /readyz 503 after ${Date.now() - downAt} ms (--primary-timeout ${TIMEOUT_S}s): ${(await get('/readyz')).body.trim()}`);
    expect(await metric('etcd_sync_primary_up'), running?.output().slice(-4000)).toBe(0);
    const firstLag = (await metric('etcd_sync_lag_seconds')) ?? 0;
    await waitFor(async () => ((await metric('etcd_sync_lag_seconds')) ?? 0) > firstLag, { timeoutMs: 10_000, message: 'lag_seconds does not grow while the primary is down' });
    expect((await status('--primary-endpoints', primary.endpoint, '--primary-timeout', '1s')).code).toBe(1);

    await primary.launch();
    await putMany(p, [['/registry/configmaps/outage/after-restart', 'z']]);
    await waitFor(async () => (await get('/readyz')).status === 200, { timeoutMs: 40_000, message: 'not ready after the primary came back' });
    await waitInSync(p, s);
    await waitFor(async () => (await metric('etcd_sync_lag_revisions')) === 0, { timeoutMs: 20_000 });
  });

  it('paused while the primary is written: the lag counts in /status, the metrics and status; check names the three revisions', async () => {
    const { get, metric } = await start();
    await waitInSync(p, s);
    const pause = runCli(['pause', ...standby.cliArgs('standby'), '--reason', 'risky migration on the primary']);
    expect((await pause.exited).code).toBe(0);
    await waitFor(async () => JSON.parse((await get('/status')).body).state === 'paused', { timeoutMs: 10_000 });
    const checkpoint = JSON.parse((await s.get('/etcd-sync/checkpoint').string()) ?? '{}') as { revision: string };
    await putMany(
      p,
      Array.from({ length: 7 }, (_, i): [string, string] => [`/registry/configmaps/paused/k${i}`, `v${i}`]),
    );
    const now = await primaryRevision();
    const behind = now - Number(checkpoint.revision);
    expect(behind).toBeGreaterThan(0);
    await waitFor(async () => JSON.parse((await get('/status')).body).lagRevisions === behind, { timeoutMs: 10_000 }).catch(async () => {
      throw new Error(`/status lag did not count while paused (want ${behind}): ${(await get('/status')).body}`);
    });
    const st = JSON.parse((await get('/status')).body);
    expect(st).toMatchObject({ state: 'paused', primaryRevision: now, lagRevisions: behind, primaryReachable: true, ready: { ready: false } });
    expect(st.paused).toMatchObject({ what: 'pause', reason: 'risky migration on the primary', by: expect.stringMatching(/@/) });
    expect(await metric('etcd_sync_lag_revisions')).toBe(behind);
    expect(await metric('etcd_sync_state{state="paused"}')).toBe(1);
    expect((await get('/readyz')).body).toMatch(/^not ready: paused by \S+@\S+ at \S+: risky migration on the primary\n$/);
    const viaCli = await status('--primary-endpoints', primary.endpoint);
    expect(viaCli.code).toBe(1);
    expect(viaCli.json).toMatchObject({ state: 'paused', lagRevisions: behind, primaryRevision: now, checkpointRevision: Number(checkpoint.revision) });

    const check = runCli(['check', ...primary.cliArgs('primary'), ...standby.cliArgs('standby'), '--output', 'json']);
    await check.exited;
    expect(JSON.parse(check.stdout())).toMatchObject({ consistent: true, comparedAtRevision: Number(checkpoint.revision), primaryRevision: now, unappliedRevisions: behind });
    const text = runCli(['check', ...primary.cliArgs('primary'), ...standby.cliArgs('standby')]);
    await text.exited;
    // The standby's own revision moves between the two runs (the leader publishes its status): not compared.
    expect(text.stdout().split('\n')[0]).toMatch(
      new RegExp(`^etcd-sync check: CONSISTENT as of primary revision ${checkpoint.revision}; primary now at ${now}: ${behind} revisions not applied \\(standby revision \\d+, compared at the standby's checkpoint\\)$`),
    );

    expect((await runCli(['resume', ...standby.cliArgs('standby')]).exited).code).toBe(0);
    await waitFor(async () => (await get('/readyz')).status === 200, { timeoutMs: 30_000 });
    await waitInSync(p, s);
    await waitFor(async () => (await metric('etcd_sync_lag_revisions')) === 0, { timeoutMs: 20_000 });
  });
});
