/** Replicas of `etcd-sync run`: one writer, failover, fencing, a leader cut off, pause/resume, promote/unfence. */
import type { Etcd3 } from 'etcd3';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { EtcdServer } from './helpers/etcd.js';
import { usePair } from './helpers/pair.js';
import { type CliProcess, runCli, snapshot, waitInSync, httpPort } from './helpers/sync.js';
import { waitFor } from './helpers/wait.js';

const TTL = 3;

/** Holds for the whole window (a bounded observation, not a sleep before an assertion). */
async function holdsFor(condition: () => Promise<boolean>, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (!(await condition())) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

describe('high availability and control', () => {
  let primary: EtcdServer;
  let standby: EtcdServer;
  let p: Etcd3;
  let s: Etcd3;
  const pair = usePair();
  beforeAll(() => ({ primary, standby, p, s } = pair));
  let replicas: CliProcess[] = [];
  afterEach(async () => {
    for (const r of replicas) r.child.kill('SIGKILL');
    await Promise.all(replicas.map((r) => r.exited));
    replicas = [];
  });

  const replica = (identity: string): CliProcess => {
    const r = runCli(['run', ...primary.cliArgs('primary'), ...standby.cliArgs('standby'), '--identity', identity, '--lease-ttl', String(TTL)]);
    replicas.push(r);
    return r;
  };
  const leaders = (): CliProcess[] => replicas.filter((r) => r.output().includes('"msg":"acquired leadership"'));
  const port = (r: CliProcess): number => httpPort(r);
  const status = async (r: CliProcess): Promise<{ role: string; state: string; identity: string }> => (await fetch(`http://127.0.0.1:${port(r)}/status`)).json() as never;
  const control = async (...args: string[]): Promise<{ code: number | null; out: string }> => {
    const c = runCli(args);
    const { code } = await c.exited;
    return { code, out: c.output() };
  };
  const has = async (key: string): Promise<boolean> => (await snapshot(s)).has(key);

  it('three replicas: exactly one writer; kill -9 of the leader: another takes over within the TTL, nothing lost', async () => {
    const all = [replica('r0'), replica('r1'), replica('r2')];
    await waitFor(() => leaders().length === 1 && all.every((r) => r.output().includes('http listening')), { timeoutMs: 30_000, message: 'no leader' });
    await waitFor(async () => (await status(leaders()[0]!)).state === 'streaming', { timeoutMs: 30_000 });
    // A replica is `starting` until both etcds have answered it, then a follower.
    await waitFor(async () => (await Promise.all(all.map(status))).every((r) => r.state !== 'starting'), { timeoutMs: 30_000, message: 'a replica never left starting' });
    const roles = await Promise.all(all.map(status));
    expect(roles.map((r) => r.role).sort()).toEqual(['follower', 'follower', 'leader']);
    expect(roles.filter((r) => r.role === 'follower').map((r) => r.state)).toEqual(['follower', 'follower']);

    let stop = false;
    let n = 0;
    const writer = (async () => {
      while (!stop) await p.put(`/registry/configmaps/ha/k-${n++ % 200}`).value(`v${n}`).exec();
    })();
    await waitFor(() => n > 200, { timeoutMs: 20_000 });
    const first = leaders()[0]!;
    first.child.kill('SIGKILL');
    const killedAt = Date.now();
    await first.exited;
    await waitFor(() => replicas.some((r) => r !== first && r.output().includes('"msg":"acquired leadership"')), { timeoutMs: (TTL + 5) * 1000, message: 'no takeover' });
    const takeoverMs = Date.now() - killedAt;
    expect(takeoverMs).toBeLessThan((TTL + 2) * 1000);
    await waitFor(() => n > 600, { timeoutMs: 20_000 });
    stop = true;
    await writer;
    await waitInSync(p, s);
    const newLeader = replicas.filter((r) => r !== first && r.output().includes('"msg":"acquired leadership"'));
    expect(newLeader).toHaveLength(1);
  });

  it('fencing: a leader whose election key is gone cannot write, steps down, and the sync goes on', async () => {
    const r = replica('solo');
    await waitFor(async () => r.output().includes('http listening') && (await status(r)).state === 'streaming', { timeoutMs: 30_000 });
    await s.delete().key('/etcd-sync/leader').exec(); // as if its lease had expired on the server
    await p.put('/registry/configmaps/fence/after').value('x').exec();
    await r.waitForLog('"msg":"lost leadership"', 20_000);
    expect(r.output()).toContain('leadership lost: another replica may be leading');
    // It campaigns again, wins (nobody else runs), resyncs and applies the write.
    await waitFor(() => (r.output().match(/"msg":"acquired leadership"/g) ?? []).length === 2, { timeoutMs: 20_000 });
    await waitInSync(p, s);
  });

  it('a leader cut off from the standby stops writing before its lease can expire, and leads again once back', async () => {
    const r = replica('cut');
    await waitFor(async () => r.output().includes('http listening') && (await status(r)).state === 'streaming', { timeoutMs: 30_000 });
    const cutAt = Date.now();
    await standby.stop();
    await r.waitForLog('could not renew the leadership lease', (TTL + 5) * 1000);
    expect(Date.now() - cutAt).toBeLessThan(TTL * 1000 + 1500);
    expect((await status(r)).role).toBe('follower');
    await standby.launch();
    await p.put('/registry/configmaps/cut/after').value('x').exec();
    await waitFor(() => (r.output().match(/"msg":"acquired leadership"/g) ?? []).length === 2, { timeoutMs: 30_000 });
    await waitInSync(p, s);
  });

  it('pause writes nothing and keeps its place; resume picks up exactly', async () => {
    const r = replica('p0');
    await waitFor(async () => r.output().includes('http listening') && (await status(r)).state === 'streaming', { timeoutMs: 30_000 });
    expect((await control('pause', ...standby.cliArgs('standby'))).code).toBe(0);
    await waitFor(async () => (await status(r)).state === 'paused', { timeoutMs: 10_000 });
    await p.put('/registry/configmaps/pause/during').value('x').exec();
    await p.delete().key('/registry/configmaps/fence/after').exec();
    expect(await holdsFor(async () => !(await has('/registry/configmaps/pause/during')), 2_000)).toBe(true);
    const st = JSON.parse((await control('status', ...standby.cliArgs('standby'), ...primary.cliArgs('primary'), '--output', 'json')).out);
    expect(st).toMatchObject({ leader: 'p0', state: 'paused' });
    expect(st.lagRevisions).toBeGreaterThanOrEqual(2);
    expect((await control('resume', ...standby.cliArgs('standby'))).code).toBe(0);
    await waitInSync(p, s);
    await waitFor(async () => (await status(r)).state === 'streaming', { timeoutMs: 10_000 });
  });

  it('promote refuses an inconsistent standby, fences a consistent one (no replica writes), unfence lifts it', async () => {
    const r0 = replica('q0');
    const r1 = replica('q1');
    await waitFor(async () => leaders().length === 1 && (await status(leaders()[0]!)).state === 'streaming', { timeoutMs: 30_000 });
    await waitInSync(p, s);
    await s.put('/registry/secrets/apps/standby-only').value('x').exec();
    const refused = await control('promote', ...standby.cliArgs('standby'), ...primary.cliArgs('primary'));
    expect(refused.code).toBe(1);
    expect(refused.out).toMatch(/promote: refused: the final check at primary revision \d+ found the standby inconsistent \(missing 0, surplus 1, different 0\)/);
    await s.delete().key('/registry/secrets/apps/standby-only').exec();

    const promoted = await control('promote', ...standby.cliArgs('standby'), ...primary.cliArgs('primary'));
    expect(promoted.code).toBe(0);
    expect(promoted.out).toContain('final check: consistent');
    expect(promoted.out).toMatch(/promoted by \S+@\S+ at \S+: the standby is fenced/);
    expect(promoted.out).toMatch(/revision gap to the primary: \d+ revisions/);
    await waitFor(async () => (await Promise.all([r0, r1].map(status))).every((x) => x.state === 'fenced' && x.role === 'follower'), { timeoutMs: 15_000, message: 'replicas not fenced' });
    await p.put('/registry/configmaps/promote/after').value('x').exec();
    expect(await holdsFor(async () => !(await has('/registry/configmaps/promote/after')), 2_000)).toBe(true);
    expect(JSON.parse((await control('status', ...standby.cliArgs('standby'), '--output', 'json')).out).state).toBe('fenced');

    expect((await control('unfence', ...standby.cliArgs('standby'))).code).toBe(0);
    await waitFor(async () => has('/registry/configmaps/promote/after'), { timeoutMs: 30_000, message: 'no sync after unfence' });
    await waitInSync(p, s);
  });
});
