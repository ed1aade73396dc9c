/**
 * gRPC unary calls (Range, Txn, Lease, Authenticate) over node:http2, without grpc-js.
 *
 * Why not grpc-js for these: it copies every request into a new buffer to put the 5-byte
 * message prefix in front, and keeps a reply's HTTP/2 chunks until it joins them. An initial
 * sync moves its data through both directions once, so those copies (and the garbage they make)
 * were a measured share of etcd-sync's CPU: over the diff of a 100k-key initial sync, 8 paired
 * syncs, etcd-sync's CPU 0.83x and the diff's time 0.94x with calls made this way (README,
 * "Benchmark"). The streams (watch, lease keep-alive) stay on grpc-js.
 *
 * A gRPC unary call (grpc/PROTOCOL-HTTP2.md) is a POST to /<package>.<service>/<method> with
 * content-type application/grpc and te: trailers, whose body is one length-prefixed message; the
 * reply is one length-prefixed message and the status comes in the trailers, or in the headers
 * alone when the call failed before a reply ("trailers-only").
 */
import http2 from 'node:http2';
import { GrpcStatus } from '../errors.js';

const { CANCELLED, DEADLINE_EXCEEDED, INTERNAL, PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAUTHENTICATED, UNAVAILABLE, UNIMPLEMENTED, UNKNOWN } = GrpcStatus;
/** Each status code's name, for messages as grpc-js words them. */
const STATUS_NAMES = new Map<number, string>(Object.entries(GrpcStatus).map(([name, code]) => [code, name]));

/**
 * A call that did not return a reply, shaped as grpc-js reports one (numeric `code`, `details`,
 * and "<code> <NAME>: <details>" as the message), so that fromGrpcError types it the same way.
 */
export class GrpcCallError extends Error {
  constructor(
    readonly code: number,
    readonly details: string,
  ) {
    super(`${code} ${STATUS_NAMES.get(code) ?? 'UNKNOWN'}: ${details}`);
    this.name = 'GrpcCallError';
  }
}

export interface UnaryConnectionOptions {
  /** Used when the endpoint is https://: the CA to verify the server with (else the system's), and a client certificate. */
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer };
  /** A reply whose message is larger fails with RESOURCE_EXHAUSTED before it is received. */
  maxReceiveBytes: number;
  /** HTTP/2 receive window of the connection and of each call. */
  receiveWindowBytes: number;
  /** A ping every this often while the connection is open; one not answered within keepaliveTimeoutMs closes it. */
  keepaliveMs: number;
  keepaliveTimeoutMs: number;
  /** Calls a connection carries before the next call opens a new one. Default MAX_CALLS_PER_CONNECTION. */
  maxCallsPerConnection?: number;
}

/**
 * A client's HTTP/2 stream IDs are the odd numbers below 2^31: a connection carries at most
 * 2^30 calls, which streaming at ~340 txns/s uses up in about 36 days. Well before that, the
 * next call opens a new connection (the old one finishes its calls and closes).
 */
export const MAX_CALLS_PER_CONNECTION = 1_000_000_000;

/** grpc-timeout: at most 8 digits, so long deadlines go in seconds. */
export function grpcTimeout(ms: number): string {
  const whole = Math.max(1, Math.ceil(ms));
  return whole < 100_000_000 ? `${whole}m` : `${Math.min(99_999_999, Math.ceil(whole / 1000))}S`;
}

/** The gRPC status of a reply that carried none (grpc/doc/http-grpc-status-mapping.md). */
function statusOfHttp(status: number): number {
  if (status === 400) return INTERNAL;
  if (status === 401) return UNAUTHENTICATED;
  if (status === 403) return PERMISSION_DENIED;
  if (status === 404) return UNIMPLEMENTED;
  if (status === 429 || status === 502 || status === 503 || status === 504) return UNAVAILABLE;
  return UNKNOWN;
}

/** The gRPC status of a call the server reset, as grpc-js gives it, except that any reset but a cancel is worth a retry. */
function statusOfReset(code: number): number {
  if (code === http2.constants.NGHTTP2_CANCEL) return CANCELLED;
  if (code === http2.constants.NGHTTP2_INADEQUATE_SECURITY) return PERMISSION_DENIED;
  return UNAVAILABLE;
}

function decodeStatusMessage(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw; // not percent-encoded as gRPC asks: shown as sent
  }
}

/** One HTTP/2 connection to one endpoint, opened by the first call and again by the first call after it broke. */
export class UnaryConnection {
  private session: http2.ClientHttp2Session | undefined;
  /** The current session's pings. */
  private keepalive: NodeJS.Timeout | undefined;
  private activeCalls = 0;
  /** Calls the current session has carried. */
  private sessionCalls = 0;
  /** The connection's last error (refused, TLS, reset): a call that fails with it says so. */
  private lastError = '';
  private closed = false;

  constructor(
    readonly endpoint: string,
    private readonly options: UnaryConnectionOptions,
  ) {}

  /** Sends `message` to `path` (`/etcdserverpb.KV/Range`); resolves to the reply's message. */
  call(path: string, message: Buffer, headers: Record<string, string>, timeoutMs: number): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      if (this.closed) return reject(new GrpcCallError(UNAVAILABLE, 'connection closed'));
      let session: http2.ClientHttp2Session;
      let stream: http2.ClientHttp2Stream;
      try {
        session = this.open();
        stream = session.request({
          ':method': 'POST',
          ':path': path,
          'content-type': 'application/grpc',
          te: 'trailers',
          'grpc-timeout': grpcTimeout(timeoutMs),
          ...headers,
        });
      } catch (err) {
        return reject(new GrpcCallError(UNAVAILABLE, this.describe(err)));
      }
      this.activeCalls++;
      session.ref();

      let settled = false;
      const finish = (err: GrpcCallError | undefined, reply?: Buffer): void => {
        if (settled) return;
        settled = true;
        clearTimeout(deadline);
        if (--this.activeCalls === 0) session.unref();
        if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
        if (err) reject(err);
        else resolve(reply as Buffer);
      };
      const deadline = setTimeout(() => finish(new GrpcCallError(DEADLINE_EXCEEDED, `Deadline exceeded after ${timeoutMs / 1000}s`)), timeoutMs);

      let httpStatus: number | undefined;
      let contentType = '';
      let grpcStatus: number | undefined;
      let grpcMessage = '';
      const noteStatus = (h: http2.IncomingHttpHeaders): void => {
        const status = h['grpc-status'];
        if (typeof status === 'string') {
          grpcStatus = Number(status);
          grpcMessage = decodeStatusMessage(String(h['grpc-message'] ?? ''));
        }
      };
      stream.on('response', (h) => {
        httpStatus = Number(h[':status']);
        contentType = String(h['content-type'] ?? '');
        noteStatus(h);
      });
      stream.on('trailers', noteStatus);

      // The reply's message: its 5-byte prefix, then its bytes copied into one buffer as they
      // arrive, so that a page is held once rather than as chunks and then joined.
      const prefix = Buffer.alloc(5);
      let prefixBytes = 0;
      let reply: Buffer | undefined;
      let replyBytes = 0;
      stream.on('data', (chunk: Buffer) => {
        let offset = 0;
        while (offset < chunk.length && !settled) {
          if (reply === undefined) {
            const n = Math.min(5 - prefixBytes, chunk.length - offset);
            chunk.copy(prefix, prefixBytes, offset, offset + n);
            prefixBytes += n;
            offset += n;
            if (prefixBytes < 5) return;
            if (prefix[0] !== 0) return finish(new GrpcCallError(INTERNAL, 'compressed reply, but no compression was offered'));
            const length = prefix.readUInt32BE(1);
            if (length > this.options.maxReceiveBytes) {
              return finish(new GrpcCallError(RESOURCE_EXHAUSTED, `Received message larger than max (${length} vs ${this.options.maxReceiveBytes})`));
            }
            if (length <= chunk.length - offset) {
              // The whole message is in this chunk: used in place.
              reply = chunk.subarray(offset, offset + length);
              replyBytes = length;
              offset += length;
            } else {
              reply = Buffer.allocUnsafe(length);
              replyBytes = 0;
            }
            continue;
          }
          if (replyBytes === reply.length) return finish(new GrpcCallError(INTERNAL, 'a unary reply with more than one message'));
          const n = Math.min(reply.length - replyBytes, chunk.length - offset);
          chunk.copy(reply, replyBytes, offset, offset + n);
          replyBytes += n;
          offset += n;
        }
      });
      stream.on('error', (err) => {
        // A reset by the server, or the connection's failure.
        const reset = (err as { code?: unknown }).code === 'ERR_HTTP2_STREAM_ERROR';
        finish(new GrpcCallError(reset ? statusOfReset(stream.rstCode ?? 0) : UNAVAILABLE, this.describe(err)));
      });
      stream.on('close', () => {
        if (settled) return;
        if (grpcStatus === undefined) {
          if (httpStatus !== undefined && httpStatus !== 200) return finish(new GrpcCallError(statusOfHttp(httpStatus), `HTTP status ${httpStatus}`));
          const code = stream.rstCode ?? http2.constants.NGHTTP2_NO_ERROR;
          if (code === http2.constants.NGHTTP2_NO_ERROR) return finish(new GrpcCallError(INTERNAL, 'the reply ended without a gRPC status'));
          return finish(new GrpcCallError(statusOfReset(code), this.describe(new Error(`stream reset (HTTP/2 code ${code})`))));
        }
        if (grpcStatus !== 0) return finish(new GrpcCallError(grpcStatus, grpcMessage));
        if (!contentType.startsWith('application/grpc')) return finish(new GrpcCallError(UNKNOWN, `not a gRPC reply (content-type ${contentType || 'none'})`));
        if (reply === undefined || replyBytes !== reply.length) return finish(new GrpcCallError(INTERNAL, 'the reply ended before its message did'));
        finish(undefined, reply);
      });

      const header = Buffer.allocUnsafe(5);
      header[0] = 0; // not compressed
      header.writeUInt32BE(message.length, 1);
      // Two writes rather than one joined buffer: the message is not copied again.
      stream.write(header);
      stream.end(message);
    });
  }

  /** Closes the connection once its calls are done; later calls fail. */
  close(): void {
    this.closed = true;
    clearInterval(this.keepalive);
    this.session?.close();
    this.session = undefined;
  }

  private open(): http2.ClientHttp2Session {
    const current = this.session;
    if (current !== undefined && !current.closed && !current.destroyed) {
      if (++this.sessionCalls <= (this.options.maxCallsPerConnection ?? MAX_CALLS_PER_CONNECTION)) return current;
      // Its calls finish on it; node sends those made while connecting only once connected.
      if (current.connecting) current.once('connect', () => current.close());
      else current.close();
    }
    const { tls, receiveWindowBytes, keepaliveMs, keepaliveTimeoutMs } = this.options;
    const secure = this.endpoint.startsWith('https://');
    const session = http2.connect(this.endpoint, {
      ...(secure && tls?.ca ? { ca: tls.ca } : {}),
      ...(secure && tls?.cert ? { cert: tls.cert } : {}),
      ...(secure && tls?.key ? { key: tls.key } : {}),
      settings: { initialWindowSize: receiveWindowBytes, enablePush: false },
      // node's default (10 MB) counts the data queued to be sent: txns of up to --max-txn-bytes
      // in flight must not make node refuse the next call.
      maxSessionMemory: 64,
    });
    this.session = session;
    this.sessionCalls = 1;
    this.lastError = '';
    session.unref();
    session.on('connect', () => session.setLocalWindowSize(receiveWindowBytes));
    // Its calls fail with it (and say so through lastError); the next call opens a new session.
    session.on('error', (err: Error) => (this.lastError = err.message));
    session.on('goaway', (code: number) => {
      if (code !== http2.constants.NGHTTP2_NO_ERROR) this.lastError = `GOAWAY (HTTP/2 code ${code})`;
    });
    clearInterval(this.keepalive);
    const keepalive = setInterval(() => {
      if (session.destroyed) return;
      const timeout = setTimeout(() => session.destroy(new Error(`keepalive ping not answered within ${keepaliveTimeoutMs} ms`)), keepaliveTimeoutMs);
      timeout.unref();
      try {
        // Not sent while connecting or closing (the callback then says so at once).
        if (!session.ping(() => clearTimeout(timeout))) clearTimeout(timeout);
      } catch {
        clearTimeout(timeout); // destroyed in between: its calls have failed already
      }
    }, keepaliveMs);
    keepalive.unref();
    this.keepalive = keepalive;
    session.on('close', () => {
      clearInterval(keepalive);
      if (this.session === session) this.session = undefined;
    });
    return session;
  }

  private describe(err: unknown): string {
    // node cancels the calls of a connection that failed with "The pending stream has been
    // canceled (caused by: ...)": the cause is what an operator can act on.
    const cause = (err as { code?: unknown; cause?: unknown })?.code === 'ERR_HTTP2_STREAM_CANCEL' ? (err as { cause?: unknown }).cause : undefined;
    if (cause instanceof Error) err = cause;
    const message = err instanceof Error ? err.message : String(err);
    return this.lastError && !message.includes(this.lastError) ? `${message}; last error: ${this.lastError}` : message;
  }
}
