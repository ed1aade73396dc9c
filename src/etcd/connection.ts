/**
 * The only place that opens connections to etcd. Every call goes over `@grpc/grpc-js` and
 * carries etcd-sync's own protobuf codec (codec.ts) as its serializer: unary calls (KV, Lease,
 * Auth) over one channel per endpoint, and streams (watch, lease keep-alive) each on a channel
 * of its own. etcd-sync's retry loop, which reads `retryable` on the typed errors, is the one
 * that decides about retries; a watch resumes from the revision etcd-sync applied.
 */
import * as grpc from '@grpc/grpc-js';
import { decodeStringField, encodeStringFields, passThrough } from './codec.js';
import type { EtcdSideConfig } from './types.js';
import { UnreachableError, WrongEndpointError, fromGrpcError } from '../errors.js';
import { diagnoseEndpoint } from './diagnose.js';

export type { EtcdSideConfig, EtcdTls } from './types.js';

/** Transport settings; the defaults are what `run` and every command use, tests change them. */
export interface ConnectionOptions {
  /** Deadline of a unary call. */
  callTimeoutMs: number;
  /** gRPC receive limit; etcd-sync pages by count, so one page may be large. */
  maxReceiveBytes: number;
  /**
   * A ping this often while calls are open (grpc-js pings no idle connection: etcd's default
   * enforcement takes pings without a stream for abuse and answers GOAWAY too_many_pings), and
   * the connection is closed when one is not answered within keepaliveTimeoutMs.
   */
  keepaliveMs: number;
  keepaliveTimeoutMs: number;
}

export const DEFAULT_CONNECTION_OPTIONS: Readonly<ConnectionOptions> = {
  callTimeoutMs: 30_000,
  maxReceiveBytes: 256 * 1024 * 1024,
  // etcd's default enforcement (--grpc-keepalive-min-time) allows a ping every 5 s: stay above it.
  keepaliveMs: 10_000,
  keepaliveTimeoutMs: 5_000,
};

/**
 * HTTP/2 receive window of a connection and of each call on it. HTTP/2's default is 64 KiB: a
 * 4 MiB range page then arrives in 64 window updates, each waiting for the event loop
 * (bench/HISTORY.md, "receive window").
 */
const RECEIVE_WINDOW_BYTES = 4 * 1024 * 1024;
/** How long a stream token is reused: far below etcd's shortest usual token TTL (--auth-token-ttl, 300 s). */
const STREAM_TOKEN_REUSE_MS = 10_000;

/** The unary calls etcd-sync makes, as `<service>/<method>` of etcd's rpc.proto. */
export type UnaryMethod = 'KV/Range' | 'KV/Txn' | 'Lease/LeaseGrant' | 'Lease/LeaseRevoke' | 'Lease/LeaseTimeToLive' | 'Auth/Authenticate';

function hostOf(endpoint: string): string {
  return endpoint.replace(/^https?:\/\//, '').replace(/\/+$/, '');
}

/** One side of the pair: a channel per endpoint for unary calls plus one per stream, with errors typed by side. */
export class EtcdSide {
  readonly name: string;
  readonly endpoints: string[];
  /** See EtcdSideConfig.probeKey. */
  readonly probeKey: Buffer;
  private readonly credentials: grpc.ChannelCredentials;
  private readonly channelOptions: grpc.ChannelOptions;
  private readonly auth: EtcdSideConfig['auth'];
  private readonly callTimeoutMs: number;
  private nextStreamEndpoint = 0;
  private readonly streamClients: grpc.Client[] = [];
  /** Unary calls go to this endpoint until a call finds it unreachable. */
  private unaryEndpoint = 0;
  /** Unary (and authentication) channels by endpoint. */
  private readonly unaryClients = new Map<string, grpc.Client>();
  /** The auth token per endpoint and when it was asked for: each authenticate costs etcd a bcrypt. */
  private readonly tokens = new Map<string, { token: Promise<string>; at: number }>();
  private readonly closeHooks = new Set<() => void>();
  private closed = false;

  constructor(config: EtcdSideConfig, options: Partial<ConnectionOptions> = {}) {
    const o: ConnectionOptions = { ...DEFAULT_CONNECTION_OPTIONS, ...options };
    this.name = config.name;
    this.endpoints = config.endpoints;
    this.probeKey = config.probeKey ?? Buffer.from([0]);
    this.auth = config.auth;
    this.callTimeoutMs = o.callTimeoutMs;
    const secure = config.endpoints.some((e) => e.startsWith('https://'));
    this.credentials = secure
      ? grpc.credentials.createSsl(config.tls?.ca ?? null, config.tls?.key ?? null, config.tls?.cert ?? null)
      : grpc.credentials.createInsecure();
    this.channelOptions = {
      'grpc.max_receive_message_length': o.maxReceiveBytes,
      'grpc.max_send_message_length': 64 * 1024 * 1024,
      'grpc.keepalive_time_ms': o.keepaliveMs,
      'grpc.keepalive_timeout_ms': o.keepaliveTimeoutMs,
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 5_000,
      'grpc-node.flow_control_window': RECEIVE_WINDOW_BYTES,
      // Straight to the endpoints: grpc-js would otherwise route calls through
      // grpc_proxy/https_proxy/http_proxy from the environment.
      'grpc.enable_http_proxy': 0,
      // A channel's own connection: closing one channel (a broken stream, an unreachable
      // endpoint) must neither drop another's connection nor hand a dead one to the next.
      'grpc.use_local_subchannel_pool': 1,
    };
  }

  /**
   * A unary call with a request encoded by codec.ts and a reply decoded by `decode`. An
   * unreachable endpoint makes the next call use the next endpoint; an expired auth token is
   * renewed once.
   */
  async unary<T>(what: string, method: UnaryMethod, request: Buffer, decode: (reply: Buffer) => T): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const endpoint = this.endpoints[this.unaryEndpoint % this.endpoints.length] as string;
      try {
        const metadata = new grpc.Metadata();
        if (this.auth) metadata.set('token', await this.tokenFor(endpoint, Infinity));
        return await this.call(endpoint, method, request, decode, metadata);
      } catch (err) {
        if (this.auth && attempt === 0 && /invalid auth token/i.test(String((err as Error)?.message))) {
          this.tokens.delete(endpoint);
          continue;
        }
        let typed = fromGrpcError(err, `${this.name} etcd (${endpoint}) ${what}`);
        if (typed instanceof UnreachableError && /Protocol error|Failed to connect/.test(typed.message)) typed = await this.diagnose(endpoint, typed);
        if ((typed instanceof UnreachableError || typed instanceof WrongEndpointError) && this.endpoints[this.unaryEndpoint % this.endpoints.length] === endpoint) {
          this.unaryEndpoint++;
          this.dropUnaryClient(endpoint);
        }
        throw typed;
      }
    }
  }

  private call<T>(endpoint: string, method: UnaryMethod, request: Buffer, decode: (reply: Buffer) => T, metadata: grpc.Metadata): Promise<T> {
    if (this.closed) return Promise.reject(new UnreachableError(`${this.name} etcd: connection closed`));
    let client = this.unaryClients.get(endpoint);
    if (client === undefined) {
      client = new grpc.Client(hostOf(endpoint), this.credentials, this.channelOptions);
      this.unaryClients.set(endpoint, client);
    }
    const deadline = Date.now() + this.callTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      (client as grpc.Client).makeUnaryRequest(`/etcdserverpb.${method}`, passThrough, decode, request, metadata, { deadline }, (err, reply) => {
        if (err) reject(err);
        else resolve(reply as T);
      });
    });
  }

  /** Names what answers at an endpoint gRPC could not talk to, when it is a configuration mistake. */
  private async diagnose(endpoint: string, err: UnreachableError): Promise<UnreachableError | WrongEndpointError> {
    const diagnosis = await diagnoseEndpoint(endpoint);
    const where = `${this.name} etcd (${endpoint})`;
    if (diagnosis === 'tls') return new WrongEndpointError(`${where}: the endpoint speaks TLS: use https:// (and the CA, certificate and key flags)`, { cause: err });
    if (diagnosis === 'not-etcd') return new WrongEndpointError(`${where}: not an etcd gRPC endpoint (it answers plain HTTP, not etcd's /version): check the host and port`, { cause: err });
    return err;
  }

  private dropUnaryClient(endpoint: string): void {
    this.unaryClients.get(endpoint)?.close();
    this.unaryClients.delete(endpoint);
  }

  /** A channel of its own for a stream, on the next endpoint, and the metadata (auth token) to open it with. */
  async streamClient(): Promise<{ client: grpc.Client; metadata: grpc.Metadata; endpoint: string }> {
    if (this.closed) throw new UnreachableError(`${this.name} etcd: connection closed`);
    const endpoint = this.endpoints[this.nextStreamEndpoint % this.endpoints.length] as string;
    this.nextStreamEndpoint++;
    const client = new grpc.Client(hostOf(endpoint), this.credentials, this.channelOptions);
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
    return decodeStringField(await this.call(endpoint, 'Auth/Authenticate', request, passThrough, new grpc.Metadata()), 2);
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
    for (const client of this.unaryClients.values()) client.close();
    this.unaryClients.clear();
    for (const client of this.streamClients.splice(0)) client.close();
  }
}
