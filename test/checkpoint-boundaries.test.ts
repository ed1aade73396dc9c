/**
 * The checkpoint invariant, checked at every boundary: after each standby transaction that moved
 * the checkpoint, the standby's in-scope keys equal the primary's at the checkpoint's revision.
 * A mixed multi-key workload (puts and deletes, 1-6 keys a revision, an excluded namespace among
 * them) streams through `run`; then every standby revision is compared with the primary's history.
 */
import type { Etcd3 } from 'etcd3';
import { beforeAll, describe, expect, it } from 'vitest';
import { Scope, defaultScopeRules } from '../src/scope.js';
import type { EtcdServer } from './helpers/etcd.js';
import { usePair } from './helpers/pair.js';
import { runCli, waitInSync, waitStreaming } from './helpers/sync.js';

/** In-scope keys and values of `client` at `revision`. */
async function stateAt(client: Etcd3, revision: string, scope: Scope): Promise<Map<string, string>> {
  const res = await client.kv.range({ key: Buffer.from('/registry/'), range_end: Buffer.from('/registry0'), revision });
  const out = new Map<string, string>();
  for (const kv of res.kvs) if (scope.inScope(kv.key)) out.set(kv.key.toString(), kv.value.toString());
  return out;
}

describe('checkpoint boundaries', () => {
  let primary: EtcdServer;
  let standby: EtcdServer;
  let p: Etcd3;
  let s: Etcd3;
  const pair = usePair();
  beforeAll(() => ({ primary, standby, p, s } = pair));

  it('every standby transaction leaves the standby equal to the primary at its checkpoint (mixed multi-key revisions)', async () => {
    const sync = runCli(['run', ...primary.cliArgs('primary'), ...standby.cliArgs('standby')]);
    try {
      await waitStreaming(sync);
      const startRevision = (await s.kv.range({ key: Buffer.from('x') })).header.revision;
      // A seeded pseudo-random workload: the same on every run.
      let seed = 42;
      const random = (n: number): number => {
        seed = (seed * 1103515245 + 12345) % 2 ** 31;
        return seed % n;
      };
      const namespaces = ['apps', 'web', 'kube-system'];
      const writes: Promise<unknown>[] = [];
      for (let i = 0; i < 300; i++) {
        const ops = new Map<string, { request_put?: { key: Buffer; value: Buffer }; request_delete_range?: { key: Buffer } }>();
        for (let j = 1 + random(6); j > 0; j--) {
          const key = `/registry/configmaps/${namespaces[random(3)]}/k${random(15)}`;
          ops.set(key, random(4) === 0 ? { request_delete_range: { key: Buffer.from(key) } } : { request_put: { key: Buffer.from(key), value: Buffer.from(`v${i}-${'x'.repeat(random(1200))}`) } });
        }
        writes.push(p.kv.txn({ compare: [], success: [...ops.values()], failure: [] } as never));
        // Bursts of 1-4 revisions: some arrive alone, some coalesced into one standby txn.
        if (writes.length >= 1 + random(4)) await Promise.all(writes.splice(0));
      }
      await Promise.all(writes);
      await waitInSync(p, s);

      // Every checkpoint write the standby holds, with the standby revision it was written at.
      const history = await s.kv.range({ key: Buffer.from('/etcd-sync/checkpoint'), revision: '0' });
      expect(history.kvs).toHaveLength(1);
      const endRevision = BigInt(history.header.revision);
      const scope = new Scope(defaultScopeRules());
      let boundaries = 0;
      let lastCheckpoint = '';
      for (let rev = BigInt(startRevision) + 1n; rev <= endRevision; rev++) {
        const at = await s.kv.range({ key: Buffer.from('/etcd-sync/checkpoint'), revision: rev.toString() });
        const cp = at.kvs[0] ? (JSON.parse(at.kvs[0].value.toString()) as { revision: string }).revision : '';
        if (!cp || Number(at.kvs[0]?.mod_revision) !== Number(rev)) continue; // this standby revision did not write the checkpoint
        const [onStandby, onPrimary] = await Promise.all([stateAt(s, rev.toString(), scope), stateAt(p, cp, scope)]);
        const differing = [...new Set([...onStandby.keys(), ...onPrimary.keys()])].filter((k) => onStandby.get(k) !== onPrimary.get(k));
        expect(differing, `standby revision ${rev} (checkpoint ${cp}) differs from the primary at ${cp}`).toEqual([]);
        boundaries++;
        lastCheckpoint = cp;
      }
      expect(boundaries).toBeGreaterThan(10);
      expect(Number(lastCheckpoint)).toBeGreaterThan(0);
    } finally {
      sync.child.kill('SIGTERM');
      await sync.exited;
    }
  });
});
