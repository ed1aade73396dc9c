/**
 * The lag probe's writer: each write one Txn of one put (as the apiserver writes an object),
 * sent over etcd-sync's own unary transport (src/etcd/unary.ts: gRPC over node:http2 directly).
 * Why not a grpc-js client: on these 2 cores the probe shares the CPU with both etcds and the
 * replicator it measures, and a grpc-js unary call costs about twice as much: 0.56–0.72 cores at
 * 2,000 puts/s against 0.31–0.37 over node:http2 (3 paired rounds of 8 s on one etcd, measured ad
 * hoc). With etcd3's put, the probe took 1.0–1.06 cores at 4,000 writes/s and its floor fell
 * behind (p50 0.2–3.2 s). Plain http only (the bench's etcds); no auth.
 */
import { decodeTxnResponse, encodeTxnRequest } from '../src/etcd/codec.js';
import { UnaryConnection } from '../src/etcd/unary.js';

const CALL_TIMEOUT_MS = 30_000;

export class RawPutter {
  private readonly connection: UnaryConnection;

  constructor(readonly endpoint: string) {
    if (!endpoint.startsWith('http://')) throw new Error(`raw put: ${endpoint}: only http:// endpoints`);
    // Replies of a few dozen bytes: HTTP/2's default window is plenty.
    this.connection = new UnaryConnection(endpoint, { maxReceiveBytes: 1024 * 1024, receiveWindowBytes: 65_535, keepaliveMs: 10_000, keepaliveTimeoutMs: 5_000 });
  }

  /** Puts `value` at `key`; resolves to the revision the primary applied it at. */
  async put(key: Buffer, value: Buffer): Promise<bigint> {
    try {
      const reply = await this.connection.call('/etcdserverpb.KV/Txn', encodeTxnRequest([], [{ type: 'put', key, value }]), {}, CALL_TIMEOUT_MS);
      return decodeTxnResponse(reply).header.revision;
    } catch (err) {
      throw new Error(`raw put of ${key.toString('latin1')} to ${this.endpoint}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  close(): void {
    this.connection.close();
  }
}
