/** `etcd-sync check` through the real CLI: findings, output forms, exit codes, repair, prune, dry run. */
import { spawn } from 'node:child_process';
import type { Etcd3 } from 'etcd3';
import { beforeAll, describe, expect, it } from 'vitest';
import type { EtcdServer } from './helpers/etcd.js';
import { usePair } from './helpers/pair.js';
import { CLI, putMany, runCli, snapshot, startEngine } from './helpers/sync.js';
import { waitFor } from './helpers/wait.js';

async function check(args: string[]): Promise<{ code: number | null; stdout: string; output: string }> {
  const cli = runCli(['check', ...args]);
  const { code } = await cli.exited;
  return { code, stdout: cli.stdout(), output: cli.output() };
}

const binaryKey = Buffer.concat([Buffer.from('/registry/example.com/blobs/apps/'), Buffer.from([0xff, 0xfe])]);

describe('etcd-sync check', () => {
  let primary: EtcdServer;
  let standby: EtcdServer;
  let p: Etcd3;
  let s: Etcd3;
  const pair = usePair();
  beforeAll(async () => {
    ({ primary, standby, p, s } = pair);
    await putMany(p, [
      ['/registry/pods/apps/a', 'a'],
      ['/registry/pods/apps/b', 'b'],
      ['/registry/configmaps/default/c', 'c'],
      ['/registry/pods/kube-system/sys', 'primary-only system pod'],
      [binaryKey, 'binary'],
    ]);
    // Sync once and stop: the standby now holds a checkpoint, and check compares at it.
    const engine = startEngine(primary, standby);
    await waitFor(() => engine.engine.state === 'streaming', { timeoutMs: 30_000 });
    await engine.stop();
  });
  const both = (): string[] => [...primary.cliArgs('primary'), ...standby.cliArgs('standby')];

  it('consistent after a sync: exit 0, text says so', async () => {
    const r = await check(both());
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('etcd-sync check: CONSISTENT');
    expect(r.stdout).toContain("compared at the standby's checkpoint");
    expect(r.stdout).toContain('in scope: 4 keys in the primary');
    expect(r.stdout).toContain('listed 0 of 0 keys, 0 left out (--limit 100)');
  });

  it('reports missing, surplus and different keys, never excluded or out-of-prefix ones: JSON, text, --limit, base64 keys', async () => {
    await s.delete().key('/registry/pods/apps/a').exec(); // missing
    await s.delete().key(binaryKey).exec(); // missing, not UTF-8
    await s.put('/registry/pods/apps/b').value('changed on the standby').exec(); // different
    await s.put('/registry/secrets/apps/only-here').value('x').exec(); // surplus
    await s.put('/registry/pods/kube-system/standby-own').value('own').exec(); // excluded namespace
    await s.put('/registry/masterleases/10.9.9.9').value('own').exec(); // excluded prefix
    await s.put('compact_rev_key').value('own').exec(); // outside the prefix

    const json = await check([...both(), '--output', 'json']);
    expect(json.code).toBe(1);
    const report = JSON.parse(json.stdout);
    expect(report).toEqual({
      consistent: false,
      comparedAtRevision: expect.any(Number),
      primaryRevision: expect.any(Number),
      unappliedRevisions: expect.any(Number),
      standbyRevision: expect.any(Number),
      counts: { inScope: 4, missing: 2, surplus: 1, different: 1, unreplicable: 0 },
      missing: [`base64:${binaryKey.toString('base64')}`, '/registry/pods/apps/a'],
      surplus: ['/registry/secrets/apps/only-here'],
      different: ['/registry/pods/apps/b'],
      unreplicable: [],
    });
    const cp = JSON.parse((await snapshot(s, Buffer.from('/etcd-sync/checkpoint'))).get('/etcd-sync/checkpoint')!.value.toString());
    expect(report.comparedAtRevision).toBe(Number(cp.revision));
    // Written after the checkpoint (no sync runs): the primary is ahead by exactly those revisions.
    const primaryNow = Number((await p.kv.range({ key: Buffer.from('x') })).header.revision);
    expect(report).toMatchObject({ primaryRevision: primaryNow, unappliedRevisions: primaryNow - Number(cp.revision) });

    const text = await check([...both(), '--limit', '2']);
    expect(text.code).toBe(1);
    expect(text.stdout).toContain('etcd-sync check: INCONSISTENT');
    expect(text.stdout).toContain('missing: 2  surplus: 1  different: 1');
    expect(text.stdout).toMatch(/pods\/apps\s+missing 1  different 1/);
    expect(text.stdout).toMatch(/secrets\/apps\s+surplus 1/);
    expect(text.stdout).toMatch(/example\.com\/blobs\/apps\s+missing 1/);
    expect(text.stdout).toContain('listed 2 of 4 keys, 2 left out (--limit 2)');
    expect(text.stdout).not.toContain('kube-system');
    expect(text.stdout).not.toContain('masterleases');
  });

  it("--key-prefix /registry (kube-apiserver's own form) keeps the same scope: the standby's kube-system keys and keys beside the prefix are never planned for deletion", async () => {
    await s.put('/registry-other/x').value('beside the prefix').exec();
    await s.put('/registryfoo').value('beside the prefix').exec();
    const r = await check([...both(), '--key-prefix', '/registry', '--repair', '--prune', '--dry-run', '--output', 'json']);
    const plan = JSON.parse(r.stdout).plan as { put: string[]; delete: string[] };
    expect(plan.delete).toEqual(['/registry/secrets/apps/only-here']);
    expect(r.stdout).not.toContain('standby-own');
    expect(r.stdout).not.toContain('registry-other');
    await s.delete().key('/registry-other/x').exec();
    await s.delete().key('/registryfoo').exec();
  });

  it('--dry-run prints the plan and writes nothing', async () => {
    const before = await snapshot(s);
    const r = await check([...both(), '--repair', '--prune', '--dry-run']);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('dry run: would put 3 keys and delete 1; nothing written');
    expect(r.stdout).toContain('  put    /registry/pods/apps/a');
    expect(r.stdout).toContain('  delete /registry/secrets/apps/only-here');
    expect(await snapshot(s)).toEqual(before);
  });

  it('--prune without --yes and without a terminal: refused (exit 2), nothing written', async () => {
    const before = await snapshot(s);
    const r = await check([...both(), '--prune']);
    expect(r.code).toBe(2);
    expect(r.output.trim()).toBe('etcd-sync: --prune deletes keys: add --yes, or run from a terminal to confirm them');
    expect(await snapshot(s)).toEqual(before);
  });

  it('--repair puts missing and different keys, keeps surplus: state after repair decides the exit code', async () => {
    const r = await check([...both(), '--repair', '--output', 'json']);
    expect(r.code).toBe(1);
    const report = JSON.parse(r.stdout);
    expect(report.repaired).toEqual({ put: 3, deleted: 0 });
    expect(report.counts).toEqual({ inScope: 4, missing: 0, surplus: 1, different: 0, unreplicable: 0 });
    const after = await snapshot(s);
    expect(after.get('/registry/pods/apps/a')?.value.toString()).toBe('a');
    expect(after.get('/registry/pods/apps/b')?.value.toString()).toBe('b');
    expect(after.get(binaryKey.toString('latin1'))?.value.toString()).toBe('binary');
    expect(after.get('/registry/pods/kube-system/standby-own')?.value.toString()).toBe('own');
  });

  it('repair at the checkpoint writes the values as of the checkpoint, which the sync continues from', async () => {
    // No sync runs; the primary moves on after the checkpoint, and the standby loses the key.
    await p.put('/registry/pods/apps/b').value('b, changed on the primary after the checkpoint').exec();
    await s.delete().key('/registry/pods/apps/b').exec();
    const r = await check([...both(), '--repair', '--output', 'json']);
    expect(JSON.parse(r.stdout)).toMatchObject({ repaired: { put: 1, deleted: 0 }, missing: [], different: [], surplus: ['/registry/secrets/apps/only-here'] });
    expect((await snapshot(s)).get('/registry/pods/apps/b')?.value.toString()).toBe('b');
    // The sync picks up from the checkpoint: the later change arrives, and the pair is consistent.
    const engine = startEngine(primary, standby, { healDelayMs: -1 });
    await waitFor(async () => (await snapshot(s)).get('/registry/pods/apps/b')?.value.toString() === 'b, changed on the primary after the checkpoint', {
      timeoutMs: 30_000,
    });
    await engine.stop();
  });

  it('--prune --yes deletes the surplus keys: consistent, exit 0', async () => {
    const r = await check([...both(), '--prune', '--yes', '--output', 'json']);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report).toMatchObject({ consistent: true, repaired: { put: 0, deleted: 1 }, surplus: [] });
    const after = await snapshot(s);
    expect(after.has('/registry/secrets/apps/only-here')).toBe(false);
    expect(after.get('/registry/pods/kube-system/standby-own')?.value.toString()).toBe('own');
    expect(after.get('/registry/masterleases/10.9.9.9')?.value.toString()).toBe('own');
  });

  it('--prune at a terminal lists the surplus keys and asks: no keeps them, yes deletes them', async () => {
    await s.put('/registry/secrets/apps/ask-me').value('x').exec();
    const answer = async (reply: string): Promise<{ code: number | null; output: string }> => {
      // util-linux `script` gives the CLI a real terminal on stdin.
      const quoted = [process.execPath, CLI, 'check', ...both(), '--prune'].map((a) => `'${a}'`).join(' ');
      const child = spawn('script', ['-qec', quoted, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
      let output = '';
      child.stdout.on('data', (d: Buffer) => (output += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      await waitFor(() => output.includes('[y/N]'), { timeoutMs: 30_000, message: `no prompt in: ${output}` });
      child.stdin.write(`${reply}\n`);
      return { code: await exited, output };
    };
    const no = await answer('n');
    expect(no.output).toContain('surplus keys only the standby has (1):');
    expect(no.output).toContain('  /registry/secrets/apps/ask-me');
    expect(no.output).toContain('delete these 1 keys from the standby? [y/N]');
    expect(no.code).toBe(1);
    expect((await snapshot(s)).has('/registry/secrets/apps/ask-me')).toBe(true);
    const yes = await answer('y');
    expect(yes.code).toBe(0);
    expect(yes.output).toContain('repaired: 0 put, 1 deleted');
    expect((await snapshot(s)).has('/registry/secrets/apps/ask-me')).toBe(false);
  });

  it('could not check: unreachable side or bad flags, exit 2 with one line', async () => {
    const unreachable = await check(['--primary-endpoints', 'http://127.0.0.1:1', ...standby.cliArgs('standby')]);
    expect(unreachable.code).toBe(2);
    const lines = unreachable.output.trim().split('\n').filter((l) => !l.startsWith('{'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^etcd-sync: could not check: primary etcd \(http:\/\/127\.0\.0\.1:1\) .*unreachable/);
    const bad = await check([...both(), '--output', 'yaml']);
    expect(bad.code).toBe(2);
    expect(bad.output).toContain("argument 'yaml' is invalid");
  });
});
