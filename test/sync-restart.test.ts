/** Restarts of the real CLI process: kill -9 mid initial sync and mid stream, SIGTERM, compaction while stopped. */
import type { Etcd3 } from 'etcd3';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { EtcdServer } from './helpers/etcd.js';
import { usePair } from './helpers/pair.js';
import { type CliProcess, inScope, putMany, runCli, snapshot, waitInSync } from './helpers/sync.js';
import { waitFor } from './helpers/wait.js';

describe('restarts of etcd-sync run', () => {
  let primary: EtcdServer;
  let standby: EtcdServer;
  let p: Etcd3;
  let s: Etcd3;
  let cli: CliProcess | undefined;
  const start = (...extra: string[]): CliProcess =>
    (cli = runCli(['run', ...primary.cliArgs('primary'), ...standby.cliArgs('standby'), ...extra]));

  const pair = usePair();
  beforeAll(() => ({ primary, standby, p, s } = pair));
  afterEach(() => {
    cli?.child.kill('SIGKILL');
    cli = undefined;
  });

  const countStandby = async (): Promise<number> => Object.keys(await inScope(s)).length;

  it('kill -9 in the middle of the initial sync, deletes while down, restart: equal', async () => {
    const value = 'x'.repeat(1024);
    const seed: [string, string][] = [];
    for (let i = 0; i < 40_000; i++) seed.push([`/registry/configmaps/ns-${i % 10}/cm-${String(i).padStart(6, '0')}`, `${i}-${value}`]);
    await putMany(p, seed);
    // One txn in flight and small pages make the copy long enough to interrupt.
    const first = start('--write-concurrency', '1', '--page-size', '100', '--max-txn-ops', '16');
    await waitFor(async () => (await countStandby()) > 2_000, { timeoutMs: 60_000, message: 'initial sync did not start writing' });
    first.child.kill('SIGKILL');
    await first.exited;
    const copied = await countStandby();
    expect(copied).toBeGreaterThan(2_000);
    expect(copied).toBeLessThan(40_000);

    // While etcd-sync is down: delete keys it had already copied, change and add others.
    const copiedKeys = Object.keys(await inScope(s)).slice(0, 300);
    for (const k of copiedKeys) await p.delete().key(k).exec();
    await putMany(p, [
      ['/registry/configmaps/ns-1/cm-000001', 'changed while down'],
      ['/registry/configmaps/new/while-down', 'added while down'],
    ]);

    const second = start();
    const seen: string[] = [];
    for (const line of ['replaying primary history since checkpoint', 'full diff started', 'initial sync done']) second.onLog(line, () => seen.push(line));
    await second.waitForLog('initial sync done');
    expect(seen).toEqual(['replaying primary history since checkpoint', 'full diff started', 'initial sync done']);
    const logged = (msg: string): { revision?: string } => JSON.parse(second.output().split('\n').find((l) => l.includes(`"msg":"${msg}"`)) ?? '{}') as { revision?: string };
    expect(logged('full diff started').revision).toMatch(/^[1-9]\d*$/);
    expect(logged('full diff started').revision).toBe(logged('initial sync done').revision);
    await waitInSync(p, s);
    const standbyKeys = await inScope(s);
    for (const k of copiedKeys) expect(standbyKeys[k], k).toBeUndefined();
    expect(Buffer.from(standbyKeys['/registry/configmaps/ns-1/cm-000001'] ?? '', 'hex').toString()).toBe('changed while down');
    second.child.kill('SIGTERM');
    expect(await second.exited).toEqual({ code: 0, signal: null });
  });

  it('kill -9 while streaming under writes, restart: equal, deletes included; SIGTERM exits 0 quickly', async () => {
    const first = start();
    await first.waitForLog('streaming from revision');
    let stop = false;
    let written = 0;
    const writer = (async () => {
      for (let i = 0; !stop; i++) {
        const key = `/registry/secrets/stream/s-${i % 500}`;
        if (i % 4 === 3) await p.delete().key(key).exec();
        else await p.put(key).value(`v${i}`).exec();
        written++;
      }
    })();
    await waitFor(() => written > 500, { timeoutMs: 30_000 });
    first.child.kill('SIGKILL');
    await first.exited;
    await waitFor(() => written > 1500, { timeoutMs: 30_000 });
    const second = start();
    await second.waitForLog('streaming from revision');
    await waitFor(() => written > 2500, { timeoutMs: 30_000 });
    stop = true;
    await writer;
    await waitInSync(p, s);

    const began = Date.now();
    second.child.kill('SIGTERM');
    expect(await second.exited).toEqual({ code: 0, signal: null });
    expect(Date.now() - began).toBeLessThan(5_000);
    // The final checkpoint is the primary's revision: nothing to replay on the next start.
    const rev = BigInt((await p.kv.range({ key: Buffer.from('x') })).header.revision);
    const cp = (await snapshot(s, Buffer.from('/etcd-sync/checkpoint'))).get('/etcd-sync/checkpoint');
    expect(BigInt(JSON.parse(cp!.value.toString()).revision)).toBe(rev);
  });

  it('primary compacted past the checkpoint while stopped: automatic resync, surplus kept without --prune, equal with --prune', async () => {
    const first = start();
    await first.waitForLog('streaming from revision');
    await putMany(p, [
      ['/registry/pods/apps/a', 'a'],
      ['/registry/pods/apps/b', 'b'],
    ]);
    await waitInSync(p, s);
    first.child.kill('SIGTERM');
    expect((await first.exited).code).toBe(0);

    await p.delete().key('/registry/pods/apps/a').exec();
    await p.put('/registry/pods/apps/b').value('b2').exec();
    await p.put('/registry/pods/apps/c').value('c').exec();
    const rev = (await p.kv.range({ key: Buffer.from('x') })).header.revision;
    await p.kv.compact({ revision: rev, physical: true });

    const second = start();
    await second.waitForLog('initial sync done');
    expect(second.output()).toContain('resync: checkpoint compacted on the primary');
    const withoutPrune = await inScope(s);
    const expected = await inScope(p);
    // The delete fell into the compacted gap: the key stays, reported as surplus.
    expect(withoutPrune).toEqual({ ...expected, '/registry/pods/apps/a': Buffer.from('a').toString('hex') });
    expect(second.output()).toContain('"key":"/registry/pods/apps/a"');
    second.child.kill('SIGTERM');
    await second.exited;

    await p.put('/registry/pods/apps/d').value('d').exec();
    const rev2 = (await p.kv.range({ key: Buffer.from('x') })).header.revision;
    await p.kv.compact({ revision: rev2, physical: true });
    const third = start('--prune');
    await third.waitForLog('initial sync done');
    expect(await inScope(s)).toEqual(await inScope(p));
    third.child.kill('SIGTERM');
    expect((await third.exited).code).toBe(0);
  });
});
