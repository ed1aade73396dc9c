import http from 'node:http';
/** mTLS and user/password on both sides, and every bad-input case of `run`, through the real CLI. */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { parse } from 'yaml';
import path from 'node:path';
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { type EtcdServer, freePort } from './helpers/etcd.js';
import { usePair } from './helpers/pair.js';
import { makeTls } from './helpers/tls.js';
import { packageVersion, putMany, runCli, waitInSync } from './helpers/sync.js';

async function exitOf(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; output: string }> {
  const cli = runCli(args, env);
  const { code } = await cli.exited;
  return { code, output: cli.output() };
}

describe('TLS, auth and bad input', () => {
  const tls = makeTls();
  afterAll(() => rmSync(tls.dir, { recursive: true, force: true }));
  let primary: EtcdServer;
  let standby: EtcdServer;
  let p: Etcd3;
  let s: Etcd3;
  const pair = usePair({ tls, rootPassword: 'secret-pw' });
  beforeAll(() => ({ primary, standby, p, s } = pair));

  it('syncs over mTLS with user/password auth on both sides, flags from the environment too; proxy variables are not used', async () => {
    await putMany(p, [
      ['/registry/secrets/apps/db', 'encrypted-bytes'],
      ['/registry/pods/apps/web', 'pod'],
    ]);
    // Primary from flags, standby entirely from ETCD_SYNC_* variables.
    const env: Record<string, string> = {
      ETCD_SYNC_STANDBY_ENDPOINTS: standby.endpoint,
      ETCD_SYNC_STANDBY_CACERT: tls.ca,
      ETCD_SYNC_STANDBY_CERT: tls.clientCert,
      ETCD_SYNC_STANDBY_KEY: tls.clientKey,
      ETCD_SYNC_STANDBY_USER: 'root',
      ETCD_SYNC_STANDBY_PASSWORD: 'secret-pw',
      // etcd-sync connects to the endpoints directly: through this proxy nothing would arrive.
      grpc_proxy: `http://127.0.0.1:${await freePort()}`,
      https_proxy: `http://127.0.0.1:${await freePort()}`,
      http_proxy: `http://127.0.0.1:${await freePort()}`,
    };
    const cli = runCli(['run', ...primary.cliArgs('primary'), '--log-level', 'debug'], env);
    try {
      await cli.waitForLog('streaming from revision');
      await p.put('/registry/pods/apps/streamed').value('over tls').exec();
      await p.delete().key('/registry/pods/apps/web').exec();
      await waitInSync(p, s);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n--- etcd-sync output ---\n${cli.output().slice(-3000)}`);
    } finally {
      cli.child.kill('SIGTERM');
    }
    const exit = await Promise.race([cli.exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 15_000))]);
    if (exit === 'hung') {
      cli.child.kill('SIGKILL');
      throw new Error(`etcd-sync did not exit within 15 s of SIGTERM\n--- etcd-sync output ---\n${cli.output().slice(-3000)}`);
    }
    expect(exit.code).toBe(0);
  });

  const base = (): string[] => ['run', ...primary.cliArgs('primary'), ...standby.cliArgs('standby')];
  const replace = (args: string[], flag: string, value: string): string[] => {
    const i = args.indexOf(flag);
    const out = [...args];
    out[i + 1] = value;
    return out;
  };
  /** The error is one line naming what was wrong; never a stack trace. (JSON lines are the structured log.) */
  const expectOneLine = (output: string, ...parts: string[]): void => {
    const lines = output
      .trim()
      .split('\n')
      .filter((line) => !line.startsWith('{"level"'));
    expect(lines, output).toHaveLength(1);
    for (const part of parts) expect(lines[0]).toContain(part);
    expect(output).not.toMatch(/\n\s+at /);
  };

  it("deploy/primary-client-cert.sh: the Secret it prints holds a certificate the primary's etcd accepts", async () => {
    const out = execFileSync('bash', ['deploy/primary-client-cert.sh', '--ca-dir', tls.dir, '--cn', 'etcd-sync', '--days', '2'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const secret = parse(out) as { kind: string; metadata: { name: string; namespace: string }; data: Record<string, string> };
    expect([secret.kind, secret.metadata.name, secret.metadata.namespace, Object.keys(secret.data).sort()]).toEqual(['Secret', 'etcd-sync-primary-etcd', 'etcd-sync', ['ca.crt', 'tls.crt', 'tls.key']]);
    const dir = mkdtempSync(path.join(tls.dir, 'secret-'));
    for (const [name, value] of Object.entries(secret.data)) writeFileSync(path.join(dir, name), Buffer.from(value, 'base64'));
    const subject = execFileSync('openssl', ['x509', '-in', path.join(dir, 'tls.crt'), '-noout', '-subject'], { encoding: 'utf8' });
    expect(subject.trim()).toMatch(/^subject=\s*CN\s*=\s*etcd-sync$/);
    // The mounted files as the Deployment passes them: `status` reads the primary through them.
    await p.put('/registry/pods/apps/cert-check').value('x').exec();
    const status = await exitOf([
      'status',
      ...standby.cliArgs('standby'),
      '--primary-endpoints',
      primary.endpoint,
      '--primary-cacert',
      path.join(dir, 'ca.crt'),
      '--primary-cert',
      path.join(dir, 'tls.crt'),
      '--primary-key',
      path.join(dir, 'tls.key'),
      '--primary-user',
      'root',
      '--primary-password',
      'secret-pw',
      '--output',
      'json',
    ]);
    expect(JSON.parse(status.output.split('\n').find((l) => l.startsWith('{"')) ?? '{}').primaryRevision).toBeGreaterThan(0);
    // And a CA folder without the key: one line, exit 2.
    const missing = spawnSync('bash', ['deploy/primary-client-cert.sh', '--ca-dir', dir], { encoding: 'utf8' });
    expect([missing.status, missing.stdout, missing.stderr]).toEqual([2, '', `primary-client-cert: cannot read ${dir}/ca.key (the primary etcd's CA; run as root on a primary control-plane node, or give --ca-dir)\n`]);
  });

  it('unreadable certificate file: exit 2, one line naming the flag and the file', async () => {
    const missing = path.join(tls.dir, 'nope.crt');
    const r = await exitOf(replace(base(), '--primary-cacert', missing));
    expect(r.code).toBe(2);
    expectOneLine(r.output, '--primary-cacert', missing, 'no such file');
    const notPem = path.join(tls.dir, 'garbage.pem');
    writeFileSync(notPem, 'not a certificate');
    const r2 = await exitOf(replace(base(), '--standby-key', notPem));
    expect(r2.code).toBe(2);
    expectOneLine(r2.output, '--standby-key', 'not a PEM file');
    const unreadable = path.join(tls.dir, 'unreadable.pem');
    writeFileSync(unreadable, '-----BEGIN CERTIFICATE-----');
    chmodSync(unreadable, 0);
    if (process.getuid?.() !== 0) {
      const r3 = await exitOf(replace(base(), '--standby-cert', unreadable));
      expect(r3.code).toBe(2);
      expectOneLine(r3.output, '--standby-cert', 'permission denied');
    }
  });

  it('TLS failure (server not signed by the given CA): exit 2, one line naming the endpoint', async () => {
    const other = makeTls('other-ca');
    onTestFinished(() => rmSync(other.dir, { recursive: true, force: true }));
    const r = await exitOf(replace(base(), '--primary-cacert', other.ca));
    expect(r.code).toBe(2);
    expectOneLine(r.output, 'primary etcd', primary.endpoint, 'TLS handshake failed');
  });

  it('a client key that does not fit its certificate, or the two swapped: exit 2, one line naming the side and the flags', async () => {
    const other = makeTls('other-pair');
    onTestFinished(() => rmSync(other.dir, { recursive: true, force: true }));
    const mismatch = await exitOf(['check', ...replace(base(), '--primary-key', other.clientKey).slice(1)]);
    expect(mismatch.code).toBe(2);
    expect(mismatch.output).toBe("etcd-sync: --primary-key is not the key of --primary-cert: the primary side's client certificate and key do not belong together\n");
    const swapped = await exitOf(['check', ...replace(replace(base(), '--standby-cert', tls.clientKey), '--standby-key', tls.clientCert).slice(1)]);
    expect(swapped.code).toBe(2);
    expect(swapped.output).toBe("etcd-sync: --standby-cert is not a certificate (the standby side's --standby-cert and --standby-key swapped?)\n");
  });

  it('http:// to a TLS etcd, and an endpoint that is not etcd: named as such, exit 2', async () => {
    const plain = primary.endpoint.replace('https://', 'http://');
    const wrongScheme = await exitOf(['check', '--primary-endpoints', plain, ...standby.cliArgs('standby')]);
    expect(wrongScheme.code).toBe(2);
    expectOneLine(wrongScheme.output, `primary etcd (${plain})`, 'the endpoint speaks TLS: use https://');
    const port = await freePort();
    const web = http.createServer((_req, res) => res.end('a web server')).listen(port, '127.0.0.1');
    onTestFinished(() => void web.close());
    const notEtcd = await exitOf(['check', '--primary-endpoints', `http://127.0.0.1:${port}`, ...standby.cliArgs('standby')]);
    expect(notEtcd.code).toBe(2);
    expectOneLine(notEtcd.output, `primary etcd (http://127.0.0.1:${port})`, 'not an etcd gRPC endpoint');
  });

  it('wrong password: exit 2, one line naming the endpoint and the cause', async () => {
    const r = await exitOf(replace(base(), '--standby-password', 'wrong'));
    expect(r.code).toBe(2);
    expectOneLine(r.output, 'standby etcd', standby.endpoint, 'authentication failed');
  });

  it('the same etcd on both sides: refused, exit 2, before anything is written into it', async () => {
    const revision = async (): Promise<string> => (await p.kv.range({ key: Buffer.from('x') })).header.revision;
    const before = await revision();
    const args = ['run', ...primary.cliArgs('primary'), ...primary.cliArgs('standby')];
    const r = await exitOf(args);
    expect(r.code).toBe(2);
    expect(r.output).toContain('primary and standby are the same etcd cluster');
    expect(await revision()).toBe(before);
  });

  it('--version prints the package version, exit 0', async () => {
    const version = packageVersion();
    expect(version).toMatch(/^\d+\.\d+\.\d+/);
    for (const flag of ['--version', '-V']) {
      const r = await exitOf([flag]);
      expect(r).toMatchObject({ code: 0, output: `${version}\n` });
    }
  });

  it('unknown flag, missing endpoints, bad values: usage, exit 2', async () => {
    const unknown = await exitOf([...base(), '--no-such-flag']);
    expect(unknown.code).toBe(2);
    expect(unknown.output).toContain("unknown option '--no-such-flag'");
    expect(unknown.output).toContain('--help');
    const none = await exitOf(['run']);
    expect(none.code).toBe(2);
    expect(none.output).toContain('missing --primary-endpoints (or ETCD_SYNC_PRIMARY_ENDPOINTS)');
    const cases: [string[], string][] = [
      [[...base(), '--max-txn-ops', 'many'], '--max-txn-ops must be a positive integer'],
      [[...base(), '--max-txn-ops', '2'], '--max-txn-ops must be at least 3 (a write carries up to 3 compares), not 2'],
      [replace(base(), '--primary-endpoints', 'localhost:2379'), "'localhost:2379' must start with http:// or https://"],
      [[...base(), '--exclude-namespace', 'Bad_Name'], "--exclude-namespace: 'Bad_Name' is not a valid namespace name"],
      [[...base(), '--checkpoint-key', '/registry/etcd-sync'], "--checkpoint-key /registry/etcd-sync: etcd-sync's keys beside it (/registry/etcd-sync) must be outside --key-prefix /registry/"],
      [base().filter((a, i, all) => a !== '--primary-key' && all[i - 1] !== '--primary-key'), '--primary-cert and --primary-key go together'],
    ];
    for (const [args, message] of cases) {
      const r = await exitOf(args);
      expect(r.code, message).toBe(2);
      expect(r.output, message).toContain(message);
    }
    const badEnv = await exitOf(base(), { ETCD_SYNC_PRUNE: 'maybe' });
    expect(badEnv.code).toBe(2);
    expectOneLine(badEnv.output, 'ETCD_SYNC_PRUNE must be true or false');
  });
});
