/** Lease keep-alives share one LeaseKeepAlive stream per side, survive an etcd restart, and end with the side. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UnreachableError } from '../src/errors.js';
import { EtcdSide } from '../src/etcd/connection.js';
import { leaseGrant, leaseKeepAliveOnce, leaseRevoke } from '../src/etcd/lease.js';
import { EtcdServer } from './helpers/etcd.js';
import { parseMetrics } from './helpers/metrics.js';
import { waitFor } from './helpers/wait.js';

/** etcd's own count of LeaseKeepAlive streams, from its /metrics: `started` or `handled` (ended). */
async function keepAliveStreams(server: EtcdServer, counter: 'started' | 'handled'): Promise<number> {
  const metrics = parseMetrics(await (await fetch(`${server.endpoint}/metrics`)).text());
  let total = 0;
  for (const [name, value] of metrics) {
    if (name.startsWith(`grpc_server_${counter}_total{`) && name.includes('grpc_method="LeaseKeepAlive"')) total += value;
  }
  return total;
}

describe('lease keep-alive stream', () => {
  let server: EtcdServer;
  let side: EtcdSide;
  beforeAll(async () => {
    server = await EtcdServer.start({ name: 'leases' });
    side = new EtcdSide(server.sideConfig('standby'));
  });
  afterAll(async () => {
    side.close();
    await server.destroy();
  });

  it('answers concurrent keep-alives of several leases, each with its own TTL, over one stream', async () => {
    const [a, b, gone] = await Promise.all([leaseGrant(side, 60), leaseGrant(side, 90), leaseGrant(side, 60)]);
    await leaseRevoke(side, gone.id);
    const startedBefore = await keepAliveStreams(server, 'started');
    const ids = Array.from({ length: 60 }, (_, i) => [a.id, b.id, gone.id, '12345'][i % 4] as string);
    const ttls = await Promise.all(ids.map((id) => leaseKeepAliveOnce(side, id)));
    expect(ttls).toEqual(ids.map((id) => (id === a.id ? 60 : id === b.id ? 90 : 0)));
    expect(await leaseKeepAliveOnce(side, b.id)).toBe(90);
    expect(await keepAliveStreams(server, 'started')).toBe(startedBefore + 1);
  });

  it('opens a new stream after etcd restarts', async () => {
    const lease = await leaseGrant(side, 60);
    expect(await leaseKeepAliveOnce(side, lease.id)).toBe(60);
    await server.restart();
    // The first keep-alive after the restart may meet the broken stream; one soon after succeeds.
    let ttl = -1;
    const failures: unknown[] = [];
    await waitFor(
      async () => {
        ttl = await leaseKeepAliveOnce(side, lease.id).catch((err: unknown) => (failures.push(err), -1));
        return ttl >= 0;
      },
      { timeoutMs: 30_000 },
    );
    for (const err of failures) expect(err).toBeInstanceOf(UnreachableError);
    expect(ttl).toBe(60);
    const started = await keepAliveStreams(server, 'started');
    expect(await Promise.all([lease.id, lease.id, lease.id].map((id) => leaseKeepAliveOnce(side, id)))).toEqual([60, 60, 60]);
    expect(await keepAliveStreams(server, 'started')).toBe(started);
  });

  it('ends its stream when the side closes, and keeps no stream open after', async () => {
    const own = new EtcdSide(server.sideConfig('standby'));
    const lease = await leaseGrant(own, 60);
    expect(await leaseKeepAliveOnce(own, lease.id)).toBe(60);
    const handled = await keepAliveStreams(server, 'handled');
    own.close();
    await waitFor(async () => (await keepAliveStreams(server, 'handled')) === handled + 1, { timeoutMs: 10_000 });
    await expect(leaseKeepAliveOnce(own, lease.id)).rejects.toThrow(/standby etcd: connection closed/);
  });
});
