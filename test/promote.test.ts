/**
 * `etcd-sync promote` cannot be fooled, and the fence holds against every etcd-sync writer: a
 * primary still being written, a paused sync, the standby given as the primary, a dry run, a
 * lost primary (--force), and `check --repair --prune` after the failover.
 */
import { createHash } from 'node:crypto';
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EtcdServer } from './helpers/etcd.js';
import { usePair } from './helpers/pair.js';
import { type CliProcess, putMany, runCli, snapshot, waitInSync, httpPort } from './helpers/sync.js';
import { waitFor } from './helpers/wait.js';

describe('promote and the fence', () => {
  let primary: EtcdServer;
  let standby: EtcdServer;
  let p: Etcd3;
  let s: Etcd3;
  const pair = usePair();
  let sync: CliProcess;
  let port = 0;
  beforeAll(async () => {
    ({ primary, standby, p, s } = pair);
    await putMany(p, [
      ['/registry/configmaps/apps/a', 'a'],
      ['/registry/secrets/apps/b', 'b'],
    ]);
    sync = runCli(['run', ...primary.cliArgs('primary'), ...standby.cliArgs('standby'), '--identity', 'promote-0']);
    await sync.waitForLog('http listening');
    port = httpPort(sync);
    await waitFor(async () => (await syncStatus()).state === 'streaming', { timeoutMs: 30_000, message: 'never streaming' });
    await waitInSync(p, s);
  });
  afterAll(async () => {
    sync?.child.kill('SIGTERM');
    await sync?.exited;
  });
  const syncStatus = async (): Promise<{ state: string; role: string }> => (await fetch(`http://127.0.0.1:${port}/status`)).json() as never;
  const cli = async (...args: string[]): Promise<{ code: number | null; out: string }> => {
    const c = runCli(args);
    const { code } = await c.exited;
    return { code, out: c.output() };
  };
  const promote = (...args: string[]): Promise<{ code: number | null; out: string }> => cli('promote', ...standby.cliArgs('standby'), ...args);
  const fenced = async (): Promise<boolean> => (await snapshot(s)).has('/etcd-sync/control/fenced');
  /**
   * Standby keys with a checksum of each value: what "changed nothing" is compared on. The
   * status the leader publishes every few seconds is left out, and while a sync runs its
   * checkpoint too (progress notifications move it).
   */
  const checksums = async (skip = ['/etcd-sync/status']): Promise<Record<string, string>> =>
    Object.fromEntries(
      [...(await snapshot(s)).entries()].filter(([k]) => !skip.some((prefix) => k.startsWith(prefix))).map(([k, e]) => [k, createHash('sha256').update(e.value).digest('hex')]),
    );
  const revision = async (): Promise<number> => Number((await p.kv.range({ key: Buffer.from('x') })).header.revision);

  it('refuses the standby given as the primary (exit 2), and a dry run writes nothing', async () => {
    const self = await promote('--primary-endpoints', standby.endpoint);
    expect(self.code).toBe(2);
    expect(self.out).toMatch(/^etcd-sync: primary and standby are the same etcd cluster \(cluster ID [0-9a-f]+\): check --primary-endpoints\n$/);
    expect(await fenced()).toBe(false);

    const live = ['/etcd-sync/status', '/etcd-sync/checkpoint'];
    const before = await checksums(live);
    const dry = await promote(...primary.cliArgs('primary'), '--dry-run', '--wait', '5s');
    expect(dry.code).toBe(0);
    expect(dry.out).toContain(`revision gap to the primary: 0 revisions (the standby holds primary revision ${await revision()}; nothing is lost)`);
    expect(dry.out).toContain('dry run: promote would fence this etcd now; nothing written');
    expect(await checksums(live)).toEqual(before);
    expect(await fenced()).toBe(false);
  });

  it('refuses while the primary is still being written, and while the sync is paused behind it', async () => {
    let writing = true;
    let n = 0;
    const writer = (async () => {
      while (writing) {
        await p.put(`/registry/configmaps/busy/k${n++ % 20}`).value(String(n)).exec();
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const busy = await promote(...primary.cliArgs('primary'), '--wait', '3s', '--reason', 'drill');
    writing = false;
    await writer;
    expect(busy.code).toBe(1);
    expect(busy.out).toMatch(/^promote: refused: the primary is still being written \(revision \d+ → \d+ in 3 s\): stop the primary's apiservers first, then promote again\n$/);
    expect(await fenced()).toBe(false);
    await waitInSync(p, s);

    expect((await cli('pause', ...standby.cliArgs('standby'), '--reason', 'hold')).code).toBe(0);
    await waitFor(async () => (await syncStatus()).state === 'paused', { timeoutMs: 10_000 });
    await p.put('/registry/configmaps/paused/x').value('1').exec();
    await p.put('/registry/configmaps/paused/y').value('2').exec();
    const behind = await promote(...primary.cliArgs('primary'), '--wait', '2s');
    expect(behind.code).toBe(1);
    expect(behind.out).toMatch(
      new RegExp(`^promote: refused: the standby has not applied the primary's revision ${await revision()}: 2 revisions not applied \\(standby at \\d+\\) after waiting 2 s: is etcd-sync running and not paused\\? \\(etcd-sync status\\)\\n$`),
    );
    // The same refusal as one JSON object on stdout (--output json), the exit code unchanged.
    const json = runCli(['promote', ...standby.cliArgs('standby'), ...primary.cliArgs('primary'), '--wait', '1s', '-o', 'json']);
    expect((await json.exited).code).toBe(1);
    expect(JSON.parse(json.stdout())).toEqual({
      command: 'promote',
      outcome: 'refused',
      exitCode: 1,
      messages: [expect.stringMatching(/^promote: refused: the standby has not applied the primary's revision \d+: 2 revisions not applied/)],
    });
    expect(await fenced()).toBe(false);
    const resumed = runCli(['resume', ...standby.cliArgs('standby'), '--output=json']);
    expect((await resumed.exited).code).toBe(0);
    expect(JSON.parse(resumed.stdout())).toMatchObject({ command: 'resume', outcome: 'resumed', exitCode: 0, record: { what: 'resume', reason: '' } });
    await waitInSync(p, s);
  });

  it('--output json: a failure is one JSON object on stdout with the documented exit code, nothing on stderr', async () => {
    const same = runCli(['promote', ...standby.cliArgs('standby'), '--primary-endpoints', standby.endpoint, '-o', 'json']);
    expect((await same.exited).code).toBe(2);
    expect(JSON.parse(same.stdout())).toEqual({ error: expect.stringMatching(/^primary and standby are the same etcd cluster \(cluster ID [0-9a-f]+\): check --primary-endpoints$/), exitCode: 2 });
    expect(same.output()).toBe(same.stdout());
    const usage = runCli(['status', ...standby.cliArgs('standby'), '--output', 'json', '--no-such-flag']);
    expect((await usage.exited).code).toBe(2);
    expect(JSON.parse(usage.stdout())).toEqual({ error: "unknown option '--no-such-flag'", exitCode: 2 });
    const env = runCli(['pause', '--standby-endpoints', 'http://127.0.0.1:1', '--log-level', 'fatal'], { ETCD_SYNC_OUTPUT: 'json' });
    expect((await env.exited).code).toBe(2);
    expect(JSON.parse(env.stdout())).toEqual({ error: expect.stringMatching(/^could not pause: standby etcd \(http:\/\/127\.0\.0\.1:1\) .*unreachable/), exitCode: 2 });
  });

  it('accepts once the primary is still and applied (gap 0); afterwards check --repair --prune refuses and changes nothing', async () => {
    const promoted = await promote(...primary.cliArgs('primary'), '--reason', 'planned switchover');
    expect(promoted.code).toBe(0);
    const at = await revision();
    expect(promoted.out).toContain(`final check: consistent at primary revision ${at} (primary now at ${at})`);
    expect(promoted.out).toContain(`revision gap to the primary: 0 revisions (the standby holds primary revision ${at}; nothing is lost)`);
    expect(promoted.out).toMatch(/promoted by \S+@\S+ at \S+: planned switchover: the standby is fenced/);
    expect(await fenced()).toBe(true);
    await waitFor(async () => (await syncStatus()).state === 'fenced', { timeoutMs: 10_000, message: 'the replica did not see the fence' });
    expect(sync.output()).toContain('the standby is fenced (promoted) by');
    const readyz = await fetch(`http://127.0.0.1:${port}/readyz`);
    expect(readyz.status).toBe(503);
    expect(await readyz.text()).toMatch(/^not ready: fenced \(promoted\) by \S+@\S+ at \S+: planned switchover\n$/);

    // Life after the failover: the promoted standby is written, the old primary diverges.
    await s.put('/registry/configmaps/apps/a').value('written on the promoted standby').exec();
    await s.put('/registry/configmaps/apps/new-after-failover').value('created after failover').exec();
    await p.put('/registry/configmaps/apps/old-primary-only').value('x').exec();
    const before = await checksums();
    const repair = await cli('check', ...primary.cliArgs('primary'), ...standby.cliArgs('standby'), '--repair', '--prune', '--yes');
    expect(repair.code).toBe(2);
    expect(repair.out).toMatch(/^etcd-sync: the standby is fenced \(promoted\) by \S+@\S+ at \S+: planned switchover: check does not write into it \(etcd-sync unfence lifts the fence\)\n$/);
    expect(await checksums()).toEqual(before);

    const st = await cli('status', ...standby.cliArgs('standby'), '--output', 'json');
    expect(st.code).toBe(1);
    expect(JSON.parse(st.out)).toMatchObject({ state: 'fenced', ready: false, fenced: { what: 'promote', reason: 'planned switchover' }, lastAction: { what: 'promote' } });
  });

  it('--force with the primary lost prints the data-loss point; unfence says when there is nothing to lift', async () => {
    // The drill is over: the object created on the promoted standby goes (a resync without --prune keeps it).
    await s.delete().key('/registry/configmaps/apps/new-after-failover').exec();
    const unfence = await cli('unfence', ...standby.cliArgs('standby'), '--reason', 'drill over');
    expect(unfence.code).toBe(0);
    expect(unfence.out).toMatch(/^unfenced by \S+@\S+ at \S+: drill over \(was fenced by .*: planned switchover\)/);
    const again = await cli('unfence', ...standby.cliArgs('standby'));
    expect(again).toEqual({ code: 0, out: 'unfence: nothing to do: this etcd is not fenced\n' });
    await waitFor(async () => (await syncStatus()).state === 'streaming', { timeoutMs: 30_000, message: 'not streaming after unfence' });
    await waitInSync(p, s);

    const checkpoint = JSON.parse((await s.get('/etcd-sync/checkpoint').string()) ?? '{}') as { revision: string; at: string };
    const refused = await promote('--primary-endpoints', 'http://127.0.0.1:1', '--primary-timeout', '1s');
    expect(refused.code).toBe(1);
    expect(refused.out).toMatch(/^promote: refused: the primary cannot be reached \(.*\); if it is lost, promote with --force/);
    const forced = await promote('--primary-endpoints', 'http://127.0.0.1:1', '--primary-timeout', '1s', '--force', '--reason', 'site A lost');
    expect(forced.code).toBe(0);
    const now = JSON.parse((await s.get('/etcd-sync/checkpoint').string()) ?? '{}') as { revision: string; at: string };
    expect(forced.out).toContain(`unplanned promote (--force): the standby holds primary revision ${now.revision}, as the primary was at ${now.at} (`);
    expect(forced.out).toContain(`data-loss point: every primary write after revision ${now.revision} is lost`);
    expect(Number(now.revision)).toBeGreaterThanOrEqual(Number(checkpoint.revision));
    expect(await fenced()).toBe(true);
  });
});
