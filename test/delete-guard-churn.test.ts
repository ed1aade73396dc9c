/**
 * The delete guard's default against ordinary churn: a minute of a Kubernetes-shaped workload
 * (Pods replaced as Deployments roll, Jobs and their Pods cleaned up, Events expiring with their
 * leases, Leases, Endpoints and ConfigMaps updated) under `run` with the default --delete-guard
 * never holds. The peak deletes in any minute are printed: the margin under the threshold.
 */
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EtcdServer } from './helpers/etcd.js';
import { parseMetrics } from './helpers/metrics.js';
import { usePair } from './helpers/pair.js';
import { type CliProcess, httpPort, putMany, runCli, waitInSync } from './helpers/sync.js';
import { waitFor } from './helpers/wait.js';

const NAMESPACES = 40;
/** Per namespace: what a platform's application namespace holds. */
const SHAPE = { deployments: 5, replicasets: 10, pods: 50, services: 5, endpointslices: 5, configmaps: 10, secrets: 10, serviceaccounts: 3, leases: 2 };
const CHURN_MS = 60_000;

describe('ordinary churn never trips the default delete guard', () => {
  let primary: EtcdServer;
  let standby: EtcdServer;
  let p: Etcd3;
  let s: Etcd3;
  const pair = usePair();
  let sync: CliProcess;
  let port = 0;
  beforeAll(async () => {
    ({ primary, standby, p, s } = pair);
    const seed: [string, string][] = [];
    for (let n = 0; n < NAMESPACES; n++) {
      seed.push([`/registry/namespaces/app-${n}`, 'Namespace']);
      for (const [resource, count] of Object.entries(SHAPE)) for (let i = 0; i < count; i++) seed.push([`/registry/${resource}/app-${n}/${resource}-${i}`, `${resource} ${i}`]);
    }
    for (let i = 0; i < 30; i++) seed.push([`/registry/minions/node-${i}`, 'Node'], [`/registry/leases/kube-node-lease/node-${i}`, 'Lease']);
    for (let i = 0; i < 200; i++) seed.push([`/registry/clusterroles/role-${i}`, 'ClusterRole']);
    await putMany(p, seed);
    sync = runCli(['run', ...primary.cliArgs('primary'), ...standby.cliArgs('standby'), '--identity', 'churn-0']);
    await sync.waitForLog('http listening');
    port = httpPort(sync);
    await waitFor(async () => ((await (await fetch(`http://127.0.0.1:${port}/status`)).json()) as { state: string }).state === 'streaming', { timeoutMs: 60_000, message: 'never streaming' });
  });
  afterAll(async () => {
    sync?.child.kill('SIGTERM');
    await sync?.exited;
  });

  it('a minute of Kubernetes-shaped churn: zero holds, the standby in step', async () => {
    const deletesAt: number[] = [];
    const started = Date.now();
    let tick = 0;
    let podSerial = 1000;
    let jobSerial = 0;
    let eventLease = p.lease(5, { autoKeepAlive: false });
    const pending: Promise<unknown>[] = [];
    const del = (key: string): void => {
      deletesAt.push(Date.now());
      pending.push(p.delete().key(key).exec());
    };
    while (Date.now() - started < CHURN_MS) {
      tick++;
      const n = tick % NAMESPACES;
      // Rolling Deployments: a Pod replaced every second across the cluster (3 % of the Pods a minute).
      if (tick % 5 === 0) {
        const pod = (tick / 5) % SHAPE.pods;
        del(`/registry/pods/app-${n}/pods-${pod}`);
        pending.push(p.put(`/registry/pods/app-${n}/pods-${pod}`).value(`Pod ${podSerial++}`).exec());
      }
      // Status churn: Leases, EndpointSlices, ConfigMaps and Deployments updated.
      pending.push(p.put(`/registry/leases/app-${n}/leases-${tick % SHAPE.leases}`).value(`renew ${tick}`).exec());
      pending.push(p.put(`/registry/endpointslices/app-${n}/endpointslices-${tick % SHAPE.endpointslices}`).value(`ready ${tick}`).exec());
      pending.push(p.put(`/registry/leases/kube-node-lease/node-${tick % 30}`).value(`renew ${tick}`).exec());
      if (tick % 5 === 0) pending.push(p.put(`/registry/deployments/app-${n}/deployments-${tick % SHAPE.deployments}`).value(`rollout ${tick}`).exec());
      // Events: 3 per tick, each with a 5 s lease (a fresh lease per second), expiring in bulk.
      if (tick % 5 === 0) eventLease = p.lease(5, { autoKeepAlive: false });
      for (let e = 0; e < 3; e++) pending.push(eventLease.put(`/registry/events/app-${n}/ev-${tick}-${e}`).value('Event').exec());
      // A CronJob's Job finishes every 5 s: the Job and its 2 Pods go, a new Job comes.
      if (tick % 25 === 0) {
        const ns = `app-${jobSerial % NAMESPACES}`;
        if (jobSerial > 0) {
          del(`/registry/jobs/${ns}/job-${jobSerial - 1}`);
          del(`/registry/pods/${ns}/job-${jobSerial - 1}-a`);
          del(`/registry/pods/${ns}/job-${jobSerial - 1}-b`);
        }
        pending.push(p.put(`/registry/jobs/${ns}/job-${jobSerial}`).value('Job').exec());
        pending.push(p.put(`/registry/pods/${ns}/job-${jobSerial}-a`).value('Pod').exec(), p.put(`/registry/pods/${ns}/job-${jobSerial}-b`).value('Pod').exec());
        jobSerial++;
      }
      await Promise.all(pending.splice(0));
      await new Promise((resolve) => setTimeout(resolve, 200 - ((Date.now() - started) % 200)));
    }
    // The most deletes counted in any minute (Events excluded, as the guard counts).
    let peak = 0;
    for (let i = 0, j = 0; j < deletesAt.length; j++) {
      while ((deletesAt[j] as number) - (deletesAt[i] as number) >= 60_000) i++;
      peak = Math.max(peak, j - i + 1);
    }
    const inScopeKeys = NAMESPACES * (1 + Object.values(SHAPE).reduce((a, b) => a + b, 0)) + 30 + 200;
    const threshold = Math.max(100, Math.ceil(inScopeKeys * 0.05));
    console.info(`churn: ${tick} ticks in ${CHURN_MS / 1000} s, ${deletesAt.length} counted deletes, peak ${peak} a minute = ${((peak / inScopeKeys) * 100).toFixed(1)} % of ${inScopeKeys} in-scope keys; threshold ${threshold}`);

    const metrics = parseMetrics(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text());
    expect(metrics.get('etcd_sync_state{state="held"}')).toBe(0);
    expect(metrics.get('etcd_sync_state{state="streaming"}')).toBe(1);
    expect(sync.output()).not.toContain('delete guard');
    // The workload was churn, not idle: hundreds of deletes, a few percent a minute.
    expect(peak).toBeGreaterThan(80);
    expect(peak).toBeLessThan(threshold);
    await waitInSync(p, s);
  }, 120_000);
});
