/**
 * The lag probe's writer: each write one Txn of one put (as the apiserver writes an object),
 * sent as gRPC over node:http2 directly, encoded with etcd-sync's codec. Why not a gRPC client:
 * on these 2 cores the probe shares the CPU with both etcds and the replicator it measures, and
 * a grpc-js unary call costs about twice as much: 0.56–0.72 cores at 2,000 puts/s against
 * 0.31–0.37 this way (3 paired rounds of 8 s on one etcd, measured ad hoc). With etcd3's put,
 * the probe took 1.0–1.06 cores at 4,000 writes/s and its floor fell behind (p50 0.2–3.2 s).
 * Plain http only (the bench's etcds); no auth, no compression.
 */
import http2 from 'node:http2';
import { decodeTxnResponse, encodeTxnRequest } from '../src/etcd/codec.js';

export class RawPutter {
  private readonly session: http2.ClientHttp2Session;

  constructor(readonly endpoint: string) {
    if (!endpoint.startsWith('http://')) throw new Error(`raw put: ${endpoint}: only http:// endpoints`);
    this.session = http2.connect(endpoint);
    // A broken session fails each of its requests, which is where the caller hears of it.
    this.session.on('error', () => undefined);
  }

  /** Puts `value` at `key`; resolves to the revision the primary applied it at. */
  put(key: Buffer, value: Buffer): Promise<bigint> {
    const message = encodeTxnRequest([], [{ type: 'put', key, value }]);
    const frame = Buffer.allocUnsafe(5 + message.length);
    frame[0] = 0; // not compressed
    frame.writeUInt32BE(message.length, 1);
    message.copy(frame, 5);
    return new Promise((resolve, reject) => {
      const where = `raw put of ${key.toString('latin1')} to ${this.endpoint}`;
      let status: string | undefined;
      let statusMessage = '';
      const noteStatus = (headers: http2.IncomingHttpHeaders): void => {
        const s = headers['grpc-status'];
        if (typeof s === 'string') {
          status = s;
          const raw = String(headers['grpc-message'] ?? '');
          try {
            statusMessage = decodeURIComponent(raw);
          } catch {
            statusMessage = raw; // not percent-encoded as gRPC asks: shown as sent
          }
        }
      };
      const chunks: Buffer[] = [];
      const request = this.session.request({ ':method': 'POST', ':path': '/etcdserverpb.KV/Txn', 'content-type': 'application/grpc', te: 'trailers' });
      request.on('response', noteStatus); // a trailers-only reply (an error) carries its status here
      request.on('trailers', noteStatus);
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('error', (err: Error) => reject(new Error(`${where}: ${err.message}`)));
      request.on('end', () => {
        if (status !== '0') return reject(new Error(`${where}: gRPC status ${status ?? 'missing'}${statusMessage ? `: ${statusMessage}` : ''}`));
        const reply = Buffer.concat(chunks);
        if (reply.length < 5 || reply.length !== 5 + reply.readUInt32BE(1)) return reject(new Error(`${where}: a reply of ${reply.length} bytes is not one gRPC message`));
        resolve(decodeTxnResponse(reply.subarray(5)).header.revision);
      });
      request.end(frame);
    });
  }

  close(): void {
    this.session.close();
  }
}
