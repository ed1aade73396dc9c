/** Secrets stay secret: no password from a URL in any output, merged keys written 0600 and never through a symlink, inputs that are not config files refused. */
import { randomBytes } from 'node:crypto';
import { lstatSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { configYaml } from './helpers/encrypt.js';
import { runCli } from './helpers/sync.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'etcd-sync-secrets-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function exitOf(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; output: string }> {
  const cli = runCli(args, env);
  const { code } = await cli.exited;
  return { code, output: cli.output() };
}

describe('secrets', () => {
  it('an endpoint URL with user info is refused, exit 2, and the password appears in no output', async () => {
    const password = 's3cret-in-the-url';
    for (const args of [
      ['run', '--primary-endpoints', `http://admin:${password}@127.0.0.1:2379`, '--standby-endpoints', 'http://127.0.0.1:2380'],
      ['check', '--primary-endpoints', 'http://127.0.0.1:2379', '--standby-endpoints', `https://root:${password}@127.0.0.1:2380`],
      ['status', '--standby-endpoints', `http://root:${password}@[::1`],
    ]) {
      const r = await exitOf(args);
      expect(r.code).toBe(2);
      expect(r.output).not.toContain(password);
      expect(r.output.trim().split('\n')).toHaveLength(1);
    }
    const r = await exitOf(['run', '--primary-endpoints', `http://admin:${password}@127.0.0.1:2379`, '--standby-endpoints', 'http://127.0.0.1:2380']);
    expect(r.output).toBe(
      "etcd-sync: --primary-endpoints: 'http://***@127.0.0.1:2379' carries credentials: give them as --primary-user and --primary-password (or their ETCD_SYNC_* variables), not in the URL\n",
    );
  });

  it('encryption merge --output-file: the merged keys are 0600, also over an existing 0644 file; a symlink at the path is replaced, its target untouched', async () => {
    const primary = path.join(dir, 'primary.yaml');
    const standby = path.join(dir, 'standby.yaml');
    writeFileSync(primary, configYaml([{ type: 'aescbc', keys: [['key1', randomBytes(32)]] }]));
    writeFileSync(standby, configYaml([{ type: 'aescbc', keys: [['key1', randomBytes(32)]] }]));

    const out = path.join(dir, 'merged.yaml');
    writeFileSync(out, 'old', { mode: 0o644 });
    expect((await exitOf(['encryption', 'merge', '--primary', primary, '--standby', standby, '--output-file', out])).code).toBe(0);
    expect(statSync(out).mode & 0o777).toBe(0o600);
    expect(readFileSync(out, 'utf8')).toContain('kind: EncryptionConfiguration');

    const victim = path.join(dir, 'victim.txt');
    writeFileSync(victim, 'do not overwrite', { mode: 0o644 });
    const link = path.join(dir, 'link.yaml');
    symlinkSync(victim, link);
    expect((await exitOf(['encryption', 'merge', '--primary', primary, '--standby', standby, '--output-file', link])).code).toBe(0);
    expect(readFileSync(victim, 'utf8')).toBe('do not overwrite');
    expect(lstatSync(link).isSymbolicLink()).toBe(false);
    expect(statSync(link).mode & 0o777).toBe(0o600);
  });

  it('inputs that are not config files are refused in one line, exit 2; required inputs come from their variables too', async () => {
    const standby = path.join(dir, 'standby.yaml');
    const zero = await exitOf(['encryption', 'merge', '--primary', '/dev/zero', '--standby', standby]);
    expect(zero).toEqual({ code: 2, output: 'etcd-sync: --primary /dev/zero is not a regular file\n' });
    const big = path.join(dir, 'big.yaml');
    writeFileSync(big, `# ${'x'.repeat(2 * 1024 * 1024)}\n`);
    const tooBig = await exitOf(['encryption', 'merge', '--primary', big, '--standby', standby]);
    expect(tooBig.code).toBe(2);
    expect(tooBig.output).toMatch(/^etcd-sync: --primary .*big\.yaml is \d+ bytes: an EncryptionConfiguration is at most 1048576 \(1 MiB\)\n$/);
    // ETCD_SYNC_PRIMARY / ETCD_SYNC_STANDBY stand for the flags.
    const viaEnv = await exitOf(['encryption', 'merge'], { ETCD_SYNC_PRIMARY: standby, ETCD_SYNC_STANDBY: standby });
    expect(viaEnv.code).toBe(0);
    expect(viaEnv.output).toContain('kind: EncryptionConfiguration');
    const missing = await exitOf(['encryption', 'verify', '--endpoints', 'http://127.0.0.1:1']);
    expect(missing).toEqual({ code: 2, output: 'etcd-sync: missing --config (or ETCD_SYNC_CONFIG)\n' });
  });
});
