/**
 * `npm run demo`: two local etcd servers, a Kubernetes-shaped keyspace on the primary, the
 * real `etcd-sync run`, a few changes on the primary, and what the standby looks like after.
 */
import { readFileSync } from 'node:fs';
import { EtcdServer, startPair } from '../test/helpers/etcd.js';
import { inScope, putMany, runCli, snapshot, waitInSync } from '../test/helpers/sync.js';

const say = (line = ''): void => {
  process.stdout.write(`${line}\n`);
};

async function main(): Promise<void> {
  say('etcd-sync demo: starting a primary and a standby etcd on loopback ports');
  const { primary, standby } = await startPair();
  const servers: EtcdServer[] = [primary, standby];
  const p = primary.client();
  const s = standby.client();
  let sync: ReturnType<typeof runCli> | undefined;
  try {
    const pod = readFileSync('test/fixtures/k8s-objects/storage-pod.bin');
    const seed: [string, string | Buffer][] = [
      ['/registry/namespaces/apps', 'Namespace apps'],
      ['/registry/namespaces/kube-system', 'primary: Namespace kube-system'],
      ['/registry/pods/apps/web-0', pod],
      ['/registry/deployments/apps/web', 'Deployment apps/web'],
      ['/registry/services/specs/apps/web', 'Service apps/web'],
      ['/registry/example.com/widgets/apps/w1', '{"kind":"Widget"}'],
      ['/registry/clusterroles/admin', 'ClusterRole admin'],
      ['/registry/pods/kube-system/kube-apiserver', "primary: the primary's own apiserver Pod"],
      ['/registry/masterleases/10.0.0.1', "primary: the primary's apiserver endpoint"],
      ['compact_rev_key', "primary: the primary's compaction bookkeeping"],
    ];
    for (let i = 0; i < 1000; i++) seed.push([`/registry/configmaps/apps/cm-${i}`, `ConfigMap ${i}`]);
    await putMany(p, seed);
    await putMany(s, [
      ['/registry/namespaces/kube-system', 'standby: its own Namespace kube-system'],
      ['/registry/pods/kube-system/kube-apiserver', "standby: the standby's own apiserver Pod"],
    ]);
    say(`seeded the primary with ${seed.length} keys (${Object.keys(await inScope(p)).length} in scope)`);

    say('\n$ etcd-sync run --primary-endpoints ... --standby-endpoints ...');
    sync = runCli(['run', '--primary-endpoints', primary.endpoint, '--standby-endpoints', standby.endpoint]);
    await sync.waitForLog('streaming from revision');
    const diff = /"scanned":(\d+).*"put":(\d+).*"durationMs":(\d+)/.exec(sync.output());
    say(`initial sync done: ${diff?.[1]} keys compared, ${diff?.[2]} written in ${diff?.[3]} ms; now streaming`);
    await waitInSync(p, s);

    say('\nchanging the primary: a new Deployment, a ConfigMap deleted, a Pod updated, a kube-system Pod added');
    await p.put('/registry/deployments/apps/api').value('Deployment apps/api').exec();
    await p.delete().key('/registry/configmaps/apps/cm-7').exec();
    await p.put('/registry/pods/apps/web-0').value('updated Pod apps/web-0').exec();
    await p.put('/registry/pods/kube-system/coredns').value('primary: kube-system Pod').exec();
    await waitInSync(p, s, undefined, 30_000);

    const standbyAll = await snapshot(s);
    const show = (key: string): string => standbyAll.get(key)?.value.toString().slice(0, 48) ?? '(absent)';
    say('standby caught up; in-scope keys are equal on both sides:');
    for (const key of ['/registry/deployments/apps/api', '/registry/configmaps/apps/cm-7', '/registry/pods/apps/web-0']) {
      say(`  ${key.padEnd(44)} ${show(key)}`);
    }
    say('excluded namespaces, excluded prefixes and keys outside /registry/ are untouched on the standby:');
    for (const key of [
      '/registry/namespaces/kube-system',
      '/registry/pods/kube-system/kube-apiserver',
      '/registry/pods/kube-system/coredns',
      '/registry/masterleases/10.0.0.1',
      'compact_rev_key',
    ]) {
      say(`  ${key.padEnd(44)} ${show(key)}`);
    }
    const checkpoint = standbyAll.get('/etcd-sync/checkpoint')?.value.toString();
    say(`checkpoint on the standby: ${checkpoint}`);

    sync.child.kill('SIGTERM');
    const { code } = await sync.exited;
    say(`\nSIGTERM: etcd-sync exited with code ${code}`);
    sync = undefined;
  } finally {
    sync?.child.kill('SIGKILL');
    p.close();
    s.close();
    await Promise.all(servers.map((server) => server.destroy()));
    say('stopped both etcd servers and removed their data');
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
