/**
 * The only place that opens connections to etcd. Range and Txn, the calls that carry the
 * data, go over a raw grpc-js channel with etcd-sync's own protobuf codec (codec.ts).
 * Lease calls go through the etcd3 client with its own retries and circuit breaker
 * switched off, so that etcd-sync's retry loop (which reads `retryable` on typed errors)
 * is the one that decides. Streams (watch, lease keep-alive) use raw grpc-js clients on
 * etcd3's proto, because etcd3's Watcher loses events on reconnect.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { noop } from 'cockatiel';
import { Etcd3 } from 'etcd3';
import { AuthError, UnreachableError, fromGrpcError } from '../errors.js';

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
/** How long a stream token is reused: far below etcd's shortest usual token TTL (--auth-token-ttl, 300 s). */
const STREAM_TOKEN_REUSE_MS = 10_000;

const require = createRequire(import.meta.url);
const rpcProtoPath = path.join(path.dirname(require.resolve('etcd3/package.json')), 'proto', 'rpc.proto');

type RawClientCtor = new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => grpc.Client;
interface EtcdServices {
  Watch: RawClientCtor;
  Lease: RawClientCtor;
  Auth: RawClientCtor;
}
let services: EtcdServices | undefined;
function etcdServices(): EtcdServices {
  if (services === undefined) {
    const definition = protoLoader.loadSync(rpcProtoPath, {
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    const loaded = grpc.loadPackageDefinition(definition) as unknown as { etcdserverpb: EtcdServices };
    services = loaded.etcdserverpb;
  }
  return services;
}

function hostOf(endpoint: string): string {
  return endpoint.replace(/^https?:\/\//, '').replace(/\/+$/, '');
}

/** One side of the pair: an etcd3 client plus raw stream clients, with errors typed by side. */
export class EtcdSide {
  readonly name: string;
  readonly endpoints: string[];
  readonly client: Etcd3;
  private readonly credentials: grpc.ChannelCredentials;
  private readonly channelOptions: grpc.ChannelOptions;
  private readonly auth: EtcdSideConfig['auth'];
  private readonly callTimeoutMs: number;
  private nextEndpoint = 0;
  private readonly rawClients: grpc.Client[] = [];
  /** The channel Range and Txn go over, on one endpoint until that endpoint fails. */
  private kvChannel: { client: grpc.Client; endpoint: string } | undefined;
  private kvEndpoint = 0;
  private token: Promise<string> | undefined;
  /** A recent token per endpoint for new streams: a replay opens many at once, and each authenticate costs etcd a bcrypt. */
  private readonly streamTokens = new Map<string, { token: Promise<string>; at: number }>();

  constructor(config: EtcdSideConfig, options: ConnectionOptions = {}) {
    this.name = config.name;
    this.endpoints = config.endpoints;
    this.auth = config.auth;
    this.callTimeoutMs = options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    const secure = config.endpoints.some((e) => e.startsWith('https://'));
    this.credentials = secure
      ? grpc.credentials.createSsl(config.tls?.ca ?? null, config.tls?.key ?? null, config.tls?.cert ?? null)
      : grpc.credentials.createInsecure();
    this.channelOptions = {
      'grpc.max_receive_message_length': options.maxReceiveBytes ?? DEFAULT_MAX_RECEIVE_BYTES,
      'grpc.max_send_message_length': 64 * 1024 * 1024,
      // etcd's default keepalive enforcement allows a ping every 5 s; stay well above it.
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5_000,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 5_000,
    };
    this.client = new Etcd3({
      hosts: config.endpoints,
      ...(secure && config.tls
        ? {
            // grpc uses the system roots when rootCertificate is absent; etcd3's type insists on one.
            credentials: { rootCertificate: config.tls.ca as Buffer, privateKey: config.tls.key, certChain: config.tls.cert },
          }
        : {}),
      ...(config.auth ? { auth: { username: config.auth.username, password: config.auth.password } } : {}),
      grpcOptions: this.channelOptions,
      faultHandling: { host: () => noop, global: noop },
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + this.callTimeoutMs }),
    });
  }

  /** Runs a unary etcd call, turning failures into typed errors that name this side. */
  async call<T>(what: string, fn: (client: Etcd3) => Promise<T>): Promise<T> {
    try {
      return await fn(this.client);
    } catch (err) {
      throw fromGrpcError(err, `${this.name} etcd (${this.endpoints.join(',')}) ${what}`);
    }
  }

  /**
   * A KV call (`Range` or `Txn`) with a request encoded by codec.ts and a reply decoded by
   * `decode`. An unreachable endpoint makes the next call use the next endpoint; an expired
   * auth token is renewed once.
   */
  async kv<T>(what: string, method: 'Range' | 'Txn', request: Buffer, decode: (reply: Buffer) => T): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const channel = this.currentKvChannel();
      try {
        const metadata = new grpc.Metadata();
        if (this.auth) {
          this.token ??= this.authenticate(channel.endpoint);
          metadata.set('token', await this.token);
        }
        return await new Promise<T>((resolve, reject) => {
          channel.client.makeUnaryRequest(
            `/etcdserverpb.KV/${method}`,
            (message: Buffer) => message,
            decode,
            request,
            metadata,
            { deadline: Date.now() + this.callTimeoutMs },
            (err, reply) => (err ? reject(err) : resolve(reply as T)),
          );
        });
      } catch (err) {
        if (this.auth && attempt === 0 && /invalid auth token/i.test(String((err as Error)?.message))) {
          this.token = undefined;
          continue;
        }
        const typed = fromGrpcError(err, `${this.name} etcd (${channel.endpoint}) ${what}`);
        if (typed instanceof UnreachableError && this.kvChannel === channel) {
          this.kvChannel = undefined;
          this.kvEndpoint++;
          this.token = undefined;
          channel.client.close();
        }
        // A failed or refused authentication is not cached: the next call authenticates again.
        if (typed instanceof AuthError) this.token = undefined;
        throw typed;
      }
    }
  }

  private currentKvChannel(): { client: grpc.Client; endpoint: string } {
    if (this.kvChannel === undefined) {
      const endpoint = this.endpoints[this.kvEndpoint % this.endpoints.length] as string;
      this.kvChannel = { client: new grpc.Client(hostOf(endpoint), this.credentials, this.channelOptions), endpoint };
    }
    return this.kvChannel;
  }

  /** A raw grpc-js client on the next endpoint, and the metadata (auth token) to call it with. */
  async rawClient(service: 'Watch' | 'Lease'): Promise<{ client: grpc.Client; metadata: grpc.Metadata; endpoint: string }> {
    const endpoint = this.endpoints[this.nextEndpoint % this.endpoints.length] as string;
    this.nextEndpoint++;
    const Ctor = etcdServices()[service];
    // A private subchannel pool: closing one stream's channel must not drop another's connection.
    const client = new Ctor(hostOf(endpoint), this.credentials, { ...this.channelOptions, 'grpc.use_local_subchannel_pool': 1 });
    this.rawClients.push(client);
    const metadata = new grpc.Metadata();
    // A member without a raft leader cancels the stream instead of stalling it silently.
    metadata.set('hasleader', 'true');
    if (this.auth) {
      try {
        let cached = this.streamTokens.get(endpoint);
        if (cached === undefined || Date.now() - cached.at > STREAM_TOKEN_REUSE_MS) {
          cached = { token: this.authenticate(endpoint), at: Date.now() };
          this.streamTokens.set(endpoint, cached);
        }
        const token = cached.token;
        metadata.set('token', await token.catch((err: unknown) => {
          if (this.streamTokens.get(endpoint)?.token === token) this.streamTokens.delete(endpoint);
          throw err;
        }));
      } catch (err) {
        this.dropRawClient(client);
        throw fromGrpcError(err, `${this.name} etcd (${endpoint}) authenticate`);
      }
    }
    return { client, metadata, endpoint };
  }

  dropRawClient(client: grpc.Client): void {
    const i = this.rawClients.indexOf(client);
    if (i >= 0) this.rawClients.splice(i, 1);
    client.close();
  }

  private authenticate(endpoint: string): Promise<string> {
    const auth = this.auth;
    if (!auth) return Promise.resolve('');
    const client = new (etcdServices().Auth)(hostOf(endpoint), this.credentials, this.channelOptions);
    return new Promise<string>((resolve, reject) => {
      const call = client as unknown as {
        authenticate(
          req: { name: string; password: string },
          opts: grpc.CallOptions,
          cb: (err: Error | null, res?: { token: string }) => void,
        ): void;
      };
      call.authenticate({ name: auth.username, password: auth.password }, { deadline: Date.now() + this.callTimeoutMs }, (err, res) => {
        client.close();
        if (err) reject(err);
        else resolve(res?.token ?? '');
      });
    });
  }

  close(): void {
    this.kvChannel?.client.close();
    this.kvChannel = undefined;
    for (const client of this.rawClients.splice(0)) client.close();
    this.client.close();
  }
}
