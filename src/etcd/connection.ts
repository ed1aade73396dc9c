/**
 * The only place that opens connections to etcd. Every call carries etcd-sync's own protobuf
 * codec (codec.ts): unary calls (KV, Lease, Auth) over one HTTP/2 connection per side
 * (unary.ts), and streams (watch, lease keep-alive) each on a grpc-js channel of its own. No
 * client library sits in between: etcd-sync's retry loop, which reads `retryable` on typed
 * errors, is the one that decides, and a watch resumes from the revision etcd-sync applied.
 */
import * as grpc from '@grpc/grpc-js';
import { decodeStringField, encodeStringFields } from './codec.js';
import { UnaryConnection, type UnaryConnectionOptions } from './unary.js';
import { UnreachableError, fromGrpcError } from '../errors.js';

export interface EtcdTls {
  /** PEM CA bundle to verify the server. */
  ca?: Buffer;
  /** PEM client certificate and key for mTLS; both or neither. */
  cert?: Buffer;
  key?: Buffer;
}

export interface EtcdSideConfig {
  /** `primary` or `standby`: used in every error and log line. */
  name: string;
  /** `http://host:port` or `https://host:port`, not mixed. */
  endpoints: string[];
  tls?: EtcdTls;
  auth?: { username: string; password: string };
}

export interface ConnectionOptions {
  /** Deadline of a unary call. Default 30 s. */
  callTimeoutMs?: number;
  /** gRPC receive limit; etcd-sync pages by count, so one page may be large. Default 256 MiB. */
  maxReceiveBytes?: number;
}

export const DEFAULT_CALL_TIMEOUT_MS = 30_000;
export const DEFAULT_MAX_RECEIVE_BYTES = 256 * 1024 * 1024;
/**
 * HTTP/2 receive window of a connection and of each call on it, unary or stream. HTTP/2's
 * default is 64 KiB: a 4 MiB range page then arrives in 64 window updates, each waiting for the
 * event loop. In paired rounds of a 100k-key initial sync (over grpc-js then), 4 MiB (a page)
 * beat 64 KiB in 3 of 3 (2.6–3.2 s against 3.5–3.9 s), 16 MiB in 6 of 6 and 64 MiB in 2 of 3.
 */
const RECEIVE_WINDOW_BYTES = 4 * 1024 * 1024;
/** etcd's default keepalive enforcement allows a ping every 5 s; stay well above it. */
const KEEPALIVE_MS = 10_000;
const KEEPALIVE_TIMEOUT_MS = 5_000;
/** How long a stream token is reused: far below etcd's shortest usual token TTL (--auth-token-ttl, 300 s). */
const STREAM_TOKEN_REUSE_MS = 10_000;

/** The unary calls etcd-sync makes, as `<service>/<method>` of etcd's rpc.proto. */
export type UnaryMethod = 'KV/Range' | 'KV/Txn' | 'Lease/LeaseGrant' | 'Lease/LeaseRevoke' | 'Lease/LeaseTimeToLive';

function hostOf(endpoint: string): string {
  return endpoint.replace(/^https?:\/\//, '').replace(/\/+$/, '');
}

/** One side of the pair: a channel for unary calls plus one per stream, with errors typed by side. */
export class EtcdSide {
  readonly name: string;
  readonly endpoints: string[];
  private readonly credentials: grpc.ChannelCredentials;
  private readonly channelOptions: grpc.ChannelOptions;
  private readonly unaryOptions: UnaryConnectionOptions;
  private readonly auth: EtcdSideConfig['auth'];
  private readonly callTimeoutMs: number;
  private nextEndpoint = 0;
  private readonly streamClients: grpc.Client[] = [];
  /** The connection unary calls go over, to one endpoint until that endpoint fails. */
  private unaryConnection: UnaryConnection | undefined;
  private unaryEndpoint = 0;
  /** Connections that authenticate for the stream channels' endpoints. */
  private readonly authConnections = new Map<string, UnaryConnection>();
  /** The auth token per endpoint and when it was asked for: each authenticate costs etcd a bcrypt. */
  private readonly tokens = new Map<string, { token: Promise<string>; at: number }>();
  private readonly closeHooks = new Set<() => void>();
  private closed = false;

  constructor(config: EtcdSideConfig, options: ConnectionOptions = {}) {
    this.name = config.name;
    this.endpoints = config.endpoints;
    this.auth = config.auth;
    this.callTimeoutMs = options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    const secure = config.endpoints.some((e) => e.startsWith('https://'));
    this.credentials = secure
      ? grpc.credentials.createSsl(config.tls?.ca ?? null, config.tls?.key ?? null, config.tls?.cert ?? null)
      : grpc.credentials.createInsecure();
    const maxReceiveBytes = options.maxReceiveBytes ?? DEFAULT_MAX_RECEIVE_BYTES;
    this.unaryOptions = {
      ...(secure && config.tls ? { tls: config.tls } : {}),
      maxReceiveBytes,
      receiveWindowBytes: RECEIVE_WINDOW_BYTES,
      keepaliveMs: KEEPALIVE_MS,
      keepaliveTimeoutMs: KEEPALIVE_TIMEOUT_MS,
    };
    this.channelOptions = {
      'grpc.max_receive_message_length': maxReceiveBytes,
      'grpc.max_send_message_length': 64 * 1024 * 1024,
      'grpc.keepalive_time_ms': KEEPALIVE_MS,
      'grpc.keepalive_timeout_ms': KEEPALIVE_TIMEOUT_MS,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 5_000,
      'grpc-node.flow_control_window': RECEIVE_WINDOW_BYTES,
      // Straight to the endpoints, as the unary calls go: grpc-js would otherwise route the
      // streams through grpc_proxy/https_proxy/http_proxy from the environment.
      'grpc.enable_http_proxy': 0,
    };
  }

  /**
   * A unary call with a request encoded by codec.ts and a reply decoded by `decode`. An
   * unreachable endpoint makes the next call use the next endpoint; an expired auth token is
   * renewed once.
   */
  async unary<T>(what: string, method: UnaryMethod, request: Buffer, decode: (reply: Buffer) => T): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const connection = this.currentUnaryConnection();
      try {
        const headers: Record<string, string> = {};
        if (this.auth) headers.token = await this.tokenFor(connection.endpoint, Infinity);
        return decode(await connection.call(`/etcdserverpb.${method}`, request, headers, this.callTimeoutMs));
      } catch (err) {
        if (this.auth && attempt === 0 && /invalid auth token/i.test(String((err as Error)?.message))) {
          this.tokens.delete(connection.endpoint);
          continue;
        }
        const typed = fromGrpcError(err, `${this.name} etcd (${connection.endpoint}) ${what}`);
        if (typed instanceof UnreachableError && this.unaryConnection === connection) {
          this.unaryConnection = undefined;
          this.unaryEndpoint++;
          connection.close();
        }
        throw typed;
      }
    }
  }

  private currentUnaryConnection(): UnaryConnection {
    if (this.unaryConnection === undefined) {
      const endpoint = this.endpoints[this.unaryEndpoint % this.endpoints.length] as string;
      this.unaryConnection = new UnaryConnection(endpoint, this.unaryOptions);
    }
    return this.unaryConnection;
  }

  /** A grpc-js channel of its own for a stream, on the next endpoint, and the metadata (auth token) to open it with. */
  async streamClient(): Promise<{ client: grpc.Client; metadata: grpc.Metadata; endpoint: string }> {
    if (this.closed) throw new UnreachableError(`${this.name} etcd: connection closed`);
    const endpoint = this.endpoints[this.nextEndpoint % this.endpoints.length] as string;
    this.nextEndpoint++;
    // A private subchannel pool: closing one stream's channel must not drop another's connection.
    const client = new grpc.Client(hostOf(endpoint), this.credentials, { ...this.channelOptions, 'grpc.use_local_subchannel_pool': 1 });
    this.streamClients.push(client);
    const metadata = new grpc.Metadata();
    // A member without a raft leader cancels the stream instead of stalling it silently.
    metadata.set('hasleader', 'true');
    if (this.auth) {
      try {
        // A stream cannot renew its token once opened, nor retry its open the way a unary call
        // does: it gets a token fresh enough to be valid.
        metadata.set('token', await this.tokenFor(endpoint, STREAM_TOKEN_REUSE_MS));
      } catch (err) {
        this.dropStreamClient(client);
        throw fromGrpcError(err, `${this.name} etcd (${endpoint}) authenticate`);
      }
    }
    return { client, metadata, endpoint };
  }

  dropStreamClient(client: grpc.Client): void {
    const i = this.streamClients.indexOf(client);
    if (i >= 0) this.streamClients.splice(i, 1);
    client.close();
  }

  /**
   * The endpoint's token, asked for again when older than `maxAgeMs`. A failed or refused
   * authentication is not kept: the next call authenticates again.
   */
  private tokenFor(endpoint: string, maxAgeMs: number): Promise<string> {
    const cached = this.tokens.get(endpoint);
    if (cached !== undefined && Date.now() - cached.at <= maxAgeMs) return cached.token;
    const token = this.authenticate(endpoint);
    const entry = { token, at: Date.now() };
    this.tokens.set(endpoint, entry);
    token.catch(() => {
      if (this.tokens.get(endpoint) === entry) this.tokens.delete(endpoint);
    });
    return token;
  }

  private async authenticate(endpoint: string): Promise<string> {
    const auth = this.auth;
    if (!auth) return '';
    // AuthenticateRequest{name = 1, password = 2} -> AuthenticateResponse{token = 2}.
    const request = encodeStringFields([
      [1, auth.username],
      [2, auth.password],
    ]);
    let connection = this.unaryConnection?.endpoint === endpoint ? this.unaryConnection : this.authConnections.get(endpoint);
    if (connection === undefined) {
      connection = new UnaryConnection(endpoint, this.unaryOptions);
      this.authConnections.set(endpoint, connection);
    }
    try {
      return decodeStringField(await connection.call('/etcdserverpb.Auth/Authenticate', request, {}, this.callTimeoutMs), 2);
    } catch (err) {
      // A failed authentication does not keep its connection: the next one starts afresh.
      if (this.authConnections.get(endpoint) === connection) {
        this.authConnections.delete(endpoint);
        connection.close();
      }
      throw err;
    }
  }

  /** Runs `hook` on close(), before the channels close; returns its removal. */
  onClose(hook: () => void): () => void {
    this.closeHooks.add(hook);
    return () => this.closeHooks.delete(hook);
  }

  close(): void {
    this.closed = true;
    for (const hook of [...this.closeHooks]) hook();
    this.closeHooks.clear();
    this.unaryConnection?.close();
    this.unaryConnection = undefined;
    for (const connection of this.authConnections.values()) connection.close();
    this.authConnections.clear();
    for (const client of this.streamClients.splice(0)) client.close();
  }
}
