/** etcd lease calls. Lease IDs stay decimal strings, as etcd3 returns them. */
import type * as grpc from '@grpc/grpc-js';
import { EtcdLeaseInvalidError } from 'etcd3';
import { fromGrpcError } from '../errors.js';
import type { EtcdSide } from './connection.js';

/** Remaining and granted TTL in seconds; remaining <= 0 when the lease is gone. */
export async function leaseTimeToLive(side: EtcdSide, id: string): Promise<{ ttl: number; grantedTtl: number }> {
  try {
    const res = await side.call(`lease ${id} time-to-live`, (c) => c.leaseClient.leaseTimeToLive({ ID: id }));
    return { ttl: Number(res.TTL), grantedTtl: Number(res.grantedTTL) };
  } catch (err) {
    if ((err as { cause?: unknown }).cause instanceof EtcdLeaseInvalidError || /lease not found/.test(String(err))) {
      return { ttl: -1, grantedTtl: 0 };
    }
    throw err;
  }
}

/** Grants a lease; etcd may raise a TTL below its minimum, so the granted TTL is returned. */
export async function leaseGrant(side: EtcdSide, ttlSeconds: number): Promise<{ id: string; ttl: number }> {
  const res = await side.call('lease grant', (c) => c.leaseClient.leaseGrant({ TTL: ttlSeconds, ID: 0 }));
  return { id: res.ID, ttl: Number(res.TTL) };
}

export async function leaseRevoke(side: EtcdSide, id: string): Promise<void> {
  try {
    await side.call(`lease ${id} revoke`, (c) => c.leaseClient.leaseRevoke({ ID: id }));
  } catch (err) {
    if (/lease not found/.test(String(err))) return;
    throw err;
  }
}

/** One keep-alive round trip; returns the new remaining TTL (0 when the lease is gone). */
export async function leaseKeepAliveOnce(side: EtcdSide, id: string): Promise<number> {
  const { client, metadata, endpoint } = await side.rawClient('Lease');
  try {
    return await new Promise<number>((resolve, reject) => {
      const call = (client as unknown as { leaseKeepAlive(md: grpc.Metadata, opts: grpc.CallOptions): grpc.ClientDuplexStream<object, { TTL: string }> }).leaseKeepAlive(metadata, {
        deadline: Date.now() + 10_000,
      });
      call.on('data', (res: { TTL: string }) => {
        resolve(Number(res.TTL));
        call.end();
      });
      call.on('error', (err) => reject(fromGrpcError(err, `${side.name} etcd (${endpoint}) lease ${id} keep-alive`)));
      call.write({ ID: id });
    });
  } finally {
    side.dropRawClient(client);
  }
}
