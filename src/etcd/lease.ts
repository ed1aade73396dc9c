/** etcd lease calls. Lease IDs stay decimal strings (int64, as etcd prints them). */
import type * as grpc from '@grpc/grpc-js';
import { UnreachableError, fromGrpcError } from '../errors.js';
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

/** How long a keep-alive waits for its answer before the stream is taken for dead. */
const KEEP_ALIVE_TIMEOUT_MS = 10_000;

interface Waiter {
  resolve(ttl: number): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

/**
 * One LeaseKeepAlive stream per side, shared by every keep-alive of that side, as etcd's own
 * client does: a stream per round trip cost a connection (a TLS handshake, with auth a token)
 * every few seconds per lease. etcd answers a stream's requests in order, one answer each
 * (TTL 0 for a lease it does not know), so answers are matched by lease ID, first come first
 * served. Any failure fails every waiting keep-alive and retires the stream; the next
 * keep-alive opens a new one.
 */
class KeepAliveStream {
  private readonly waiting = new Map<string, Waiter[]>();
  private retired = false;
  private readonly unregister: () => void;

  private constructor(
    private readonly side: EtcdSide,
    private readonly client: grpc.Client,
    private readonly call: grpc.ClientDuplexStream<Buffer, Map<number, bigint>>,
    private readonly where: string,
  ) {
    // LeaseKeepAliveResponse{header = 1, ID = 2, TTL = 3}.
    call.on('data', (res: Map<number, bigint>) => {
      const id = (res.get(2) ?? 0n).toString();
      const queue = this.waiting.get(id);
      const waiter = queue?.shift();
      if (queue?.length === 0) this.waiting.delete(id);
      if (waiter === undefined) return;
      clearTimeout(waiter.timer);
      waiter.resolve(Number(res.get(3) ?? 0n));
    });
    call.on('error', (err) => this.retire(fromGrpcError(err, where)));
    call.on('end', () => this.retire(new UnreachableError(`${where}: stream ended by the server`)));
    // An open call would outlive its channel's close(), and keep the process alive.
    this.unregister = side.onClose(() => this.retire(new UnreachableError(`${where}: connection closed`)));
  }

  static async open(side: EtcdSide): Promise<KeepAliveStream> {
    const { client, metadata, endpoint } = await side.streamClient();
    const call = client.makeBidiStreamRequest('/etcdserverpb.Lease/LeaseKeepAlive', passThrough, decodeInt64Fields, metadata, {});
    return new KeepAliveStream(side, client, call, `${side.name} etcd (${endpoint}) lease keep-alive`);
  }

  get usable(): boolean {
    return !this.retired;
  }

  keepAlive(id: string): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(
        () => this.retire(new UnreachableError(`${this.where}: no answer for lease ${id} within ${KEEP_ALIVE_TIMEOUT_MS} ms`)),
        KEEP_ALIVE_TIMEOUT_MS,
      );
      const queue = this.waiting.get(id) ?? [];
      queue.push({ resolve, reject, timer });
      this.waiting.set(id, queue);
      // LeaseKeepAliveRequest{ID = 1}.
      this.call.write(encodeInt64Fields([[1, BigInt(id)]]));
    });
  }

  private retire(err: Error): void {
    if (this.retired) return;
    this.retired = true;
    this.unregister();
    for (const queue of this.waiting.values()) {
      for (const waiter of queue) {
        clearTimeout(waiter.timer);
        waiter.reject(err);
      }
    }
    this.waiting.clear();
    this.call.cancel();
    this.side.dropStreamClient(this.client);
  }
}

const keepAliveStreams = new WeakMap<EtcdSide, Promise<KeepAliveStream>>();

/** One keep-alive round trip on the side's shared stream; returns the new remaining TTL (0 when the lease is gone). */
export async function leaseKeepAliveOnce(side: EtcdSide, id: string): Promise<number> {
  for (;;) {
    const current = keepAliveStreams.get(side);
    if (current === undefined) break;
    const stream = await current.catch(() => undefined);
    if (stream?.usable) return stream.keepAlive(id);
    // Retired or never opened: drop it, unless a concurrent keep-alive has replaced it already.
    if (keepAliveStreams.get(side) === current) keepAliveStreams.delete(side);
  }
  const opening = KeepAliveStream.open(side);
  keepAliveStreams.set(side, opening);
  return (await opening).keepAlive(id);
}
