/**
 * Least privilege, with etcd's own auth: a primary user who may read the synced prefix only, and
 * a standby user who may read and write the prefix and etcd-sync's own keys only. run, check,
 * status and encryption verify work with them; a missing grant is named in the error.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type Etcd3, Range } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EtcdServer } from './helpers/etcd.js';
import { usePair } from './helpers/pair.js';
import { putMany, runCli, waitInSync, waitStreaming } from './helpers/sync.js';
import { waitFor } from './helpers/wait.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'etcd-sync-least-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('least privilege', () => {
  let primary: EtcdServer;
  let standby: EtcdServer;
  let p: Etcd3;
  let s: Etcd3;
  const pair = usePair({ rootPassword: 'root-pw' });
  beforeAll(async () => {
    ({ primary, standby, p, s } = pair);
    await (await p.role('sync-reader').create()).grant({ permission: 'Read', range: Range.prefix('/registry/') });
    await (await p.user('sync').create('reader-pw')).addRole('sync-reader');
    await (await p.role('wrong-prefix').create()).grant({ permission: 'Read', range: Range.prefix('/other/') });
    await (await p.user('lost').create('lost-pw')).addRole('wrong-prefix');
    const writer = await s.role('sync-writer').create();
    await writer.grant([
      { permission: 'Readwrite', range: Range.prefix('/registry/') },
      { permission: 'Readwrite', range: Range.prefix('/etcd-sync/') },
    ]);
    await (await s.user('sync').create('writer-pw')).addRole('sync-writer');
    await putMany(p, [
      ['/registry/configmaps/apps/a', 'a'],
      ['/registry/secrets/apps/b', 'b'],
      ['compact_rev_key', 'outside the prefix: not readable by sync'],
    ]);
  });
  const primaryArgs = (user = 'sync', password = 'reader-pw'): string[] => ['--primary-endpoints', primary.endpoint, '--primary-user', user, '--primary-password', password];
  const standbyArgs = (): string[] => ['--standby-endpoints', standby.endpoint, '--standby-user', 'sync', '--standby-password', 'writer-pw'];
  const exitOf = async (args: string[]): Promise<{ code: number | null; output: string; stdout: string }> => {
    const c = runCli(args);
    const { code } = await c.exited;
    return { code, output: c.output(), stdout: c.stdout() };
  };

  it('run, check, status and encryption verify work with read on the prefix (primary) and readwrite on the prefix and /etcd-sync/ (standby)', async () => {
    const sync = runCli(['run', ...primaryArgs(), ...standbyArgs()]);
    try {
      await waitStreaming(sync);
      await p.put('/registry/configmaps/apps/c').value('streamed').exec();
      await waitInSync(p, s);
      expect(sync.output()).not.toContain('permission denied');
      const check = await exitOf(['check', ...primaryArgs(), ...standbyArgs()]);
      expect(check.code).toBe(0);
      expect(check.stdout).toContain('etcd-sync check: CONSISTENT');
      await waitFor(async () => (await exitOf(['status', ...primaryArgs(), ...standbyArgs()])).code === 0, { timeoutMs: 15_000, message: 'status never exit 0' });
      const config = path.join(dir, 'identity.yaml');
      writeFileSync(config, 'apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - identity: {}\n');
      const verify = await exitOf(['encryption', 'verify', '--config', config, '--endpoints', primary.endpoint, '--user', 'sync', '--password', 'reader-pw']);
      expect(verify.code).toBe(0);
    } finally {
      sync.child.kill('SIGTERM');
      await sync.exited;
    }
  });

  it('a missing grant is named: the side, the operation and the key or prefix to grant', async () => {
    const r = await exitOf(['check', ...primaryArgs('lost', 'lost-pw'), ...standbyArgs()]);
    expect(r.code).toBe(2);
    expect(r.output.trim()).toBe(
      `etcd-sync: primary etcd (${primary.endpoint}) status: permission denied: etcdserver: permission denied (the user needs read on the key "/registry/")`,
    );
  });
});
