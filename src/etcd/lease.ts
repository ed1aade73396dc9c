/** etcd lease calls. Lease IDs stay decimal strings (int64, as etcd prints them). */
import type * as grpc from '@grpc/grpc-js';
import { fromGrpcError } from '../errors.js';
import { decodeInt64Fields, encodeInt64Fields, passThrough } from './codec.js';
import type { EtcdSide } from './connection.js';


/** Remaining and granted TTL in seconds; remaining <= 0 when the lease is gone. */
export async function leaseTimeToLive(side: EtcdSide, id: string): Promise<{ ttl: number; grantedTtl: number }> {
  try {
    // LeaseTimeToLiveRequest{ID = 1} -> LeaseTimeToLiveResponse{ID = 2, TTL = 3, grantedTTL = 4}.
    const res = await side.unary(`lease ${id} time-to-live`, 'Lease/LeaseTimeToLive', encodeInt64Fields([[1, BigInt(id)]]), decodeInt64Fields);
    return { ttl: Number(res.get(3) ?? 0n), grantedTtl: Number(res.get(4) ?? 0n) };
  } catch (err) {
    if (/lease not found/.test(String(err))) return { ttl: -1, grantedTtl: 0 };
    throw err;
  }
}

/** Grants a lease; etcd may raise a TTL below its minimum, so the granted TTL is returned. */
export async function leaseGrant(side: EtcdSide, ttlSeconds: number): Promise<{ id: string; ttl: number }> {
  // LeaseGrantRequest{TTL = 1, ID = 2 (0: etcd picks)} -> LeaseGrantResponse{ID = 2, TTL = 3}.
  const res = await side.unary('lease grant', 'Lease/LeaseGrant', encodeInt64Fields([[1, BigInt(ttlSeconds)]]), decodeInt64Fields);
  return { id: (res.get(2) ?? 0n).toString(), ttl: Number(res.get(3) ?? 0n) };
}

export async function leaseRevoke(side: EtcdSide, id: string): Promise<void> {
  try {
    // LeaseRevokeRequest{ID = 1}.
    await side.unary(`lease ${id} revoke`, 'Lease/LeaseRevoke', encodeInt64Fields([[1, BigInt(id)]]), passThrough);
  } catch (err) {
    if (/lease not found/.test(String(err))) return;
    throw err;
  }
}

/** One keep-alive round trip; returns the new remaining TTL (0 when the lease is gone). */
export async function leaseKeepAliveOnce(side: EtcdSide, id: string): Promise<number> {
  const { client, metadata, endpoint } = await side.streamClient();
  try {
    return await new Promise<number>((resolve, reject) => {
      // LeaseKeepAliveRequest{ID = 1} -> LeaseKeepAliveResponse{ID = 2, TTL = 3}.
      const call: grpc.ClientDuplexStream<Buffer, Map<number, bigint>> = client.makeBidiStreamRequest(
        '/etcdserverpb.Lease/LeaseKeepAlive',
        passThrough,
        decodeInt64Fields,
        metadata,
        { deadline: Date.now() + 10_000 },
      );
      call.on('data', (res: Map<number, bigint>) => {
        resolve(Number(res.get(3) ?? 0n));
        call.end();
      });
      call.on('error', (err) => reject(fromGrpcError(err, `${side.name} etcd (${endpoint}) lease ${id} keep-alive`)));
      call.write(encodeInt64Fields([[1, BigInt(id)]]));
    });
  } finally {
    side.dropStreamClient(client);
  }
}
