/**
 * The lag probe's writer: each write one Txn of one put (as the apiserver writes an object),
 * sent as a bare gRPC call over node:http2. Measurement tooling only, not etcd-sync's transport
 * (that is grpc-js, src/etcd/connection.ts): on these 2 cores the probe shares the CPU with both
 * etcds and the replicator it measures, and a grpc-js unary call costs it about twice as much
 * (bench/HISTORY.md, "the lag probe's writer"). Plain http only (the bench's etcds); no auth.
 */
import http2 from 'node:http2';
import { decodeTxnResponse, encodeTxnRequest } from '../src/etcd/codec.js';

const CALL_TIMEOUT_MS = 30_000;

export class RawPutter {
  private session: http2.ClientHttp2Session | undefined;

  constructor(readonly endpoint: string) {
    if (!endpoint.startsWith('http://')) throw new Error(`raw put: ${endpoint}: only http:// endpoints`);
  }

  /** Puts `value` at `key`; resolves to the revision the primary applied it at. */
  async put(key: Buffer, value: Buffer): Promise<bigint> {
    try {
      return decodeTxnResponse(await this.call(encodeTxnRequest([], [{ type: 'put', key, value }]))).header.revision;
    } catch (err) {
      throw new Error(`raw put of ${key.toString('latin1')} to ${this.endpoint}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private call(message: Buffer): Promise<Buffer> {
    if (this.session === undefined || this.session.destroyed || this.session.closed) {
      const session = http2.connect(this.endpoint);
      session.on('error', () => undefined); // fails the calls on it, which say so
      session.on('close', () => {
        if (this.session === session) this.session = undefined;
      });
      this.session = session;
    }
    const stream = this.session.request({ ':method': 'POST', ':path': '/etcdserverpb.KV/Txn', 'content-type': 'application/grpc', te: 'trailers' });
    stream.setTimeout(CALL_TIMEOUT_MS, () => stream.close(http2.constants.NGHTTP2_CANCEL));
    return new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let status = '';
      let statusMessage = '';
      const noteStatus = (h: http2.IncomingHttpHeaders): void => {
        if (h['grpc-status'] !== undefined) {
          status = String(h['grpc-status']);
          statusMessage = decodeURIComponent(String(h['grpc-message'] ?? ''));
        }
      };
      stream.on('response', noteStatus);
      stream.on('trailers', noteStatus);
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('error', reject);
      stream.on('close', () => {
        const reply = Buffer.concat(chunks);
        if (status !== '0') return reject(new Error(`gRPC status ${status || 'none'}: ${statusMessage}`));
        resolve(reply.subarray(5, 5 + reply.readUInt32BE(1)));
      });
      const prefix = Buffer.alloc(5);
      prefix.writeUInt32BE(message.length, 1);
      stream.end(Buffer.concat([prefix, message]));
    });
  }

  close(): void {
    this.session?.close();
    this.session = undefined;
  }
}
