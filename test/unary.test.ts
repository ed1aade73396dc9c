/**
 * etcd-sync's unary gRPC calls over node:http2 (src/etcd/unary.ts): against a real etcd for what
 * etcd does, and against a small HTTP/2 server for the protocol cases etcd cannot be made to show.
 */
import http2 from 'node:http2';
import net from 'node:net';
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { decodeRangeResponse, decodeStringField, encodeInt64Fields, encodeRangeRequest, encodeStringFields, passThrough } from '../src/etcd/codec.js';
import { EtcdSide } from '../src/etcd/connection.js';
import { readHeader, rangePage, scanPages } from '../src/etcd/kv.js';
import { GrpcCallError, UnaryConnection, type UnaryConnectionOptions, grpcTimeout } from '../src/etcd/unary.js';
import { CompactedError, EtcdRequestError, TooLargeError, UnreachableError } from '../src/errors.js';
import { EtcdServer, freePort } from './helpers/etcd.js';
import { waitFor } from './helpers/wait.js';

const OPTIONS: UnaryConnectionOptions = { maxReceiveBytes: 1024 * 1024, receiveWindowBytes: 4 * 1024 * 1024, keepaliveMs: 10_000, keepaliveTimeoutMs: 5_000 };
const retry = <T>(_what: string, fn: () => Promise<T>): Promise<T> => fn();

/** etcd's current revision, read over `connection` with a count-only Range (`headers`: the auth token, if any). */
const revisionOver = async (connection: UnaryConnection, headers: Record<string, string> = {}): Promise<bigint> =>
  decodeRangeResponse(await connection.call('/etcdserverpb.KV/Range', encodeRangeRequest({ key: Buffer.from([0]), countOnly: true }), headers, 5_000)).header.revision;

/** A TCP proxy to `target` that forwards, resets new connections, or freezes (keeps them open, forwards nothing). */
class Proxy {
  mode: 'forward' | 'reset' | 'freeze' = 'forward';
  accepted = 0;
  /** Connections the client side closed. */
  closedByClient = 0;
  private readonly sockets = new Set<net.Socket>();
  private constructor(
    private readonly server: net.Server,
    readonly endpoint: string,
  ) {}

  static async start(target: string): Promise<Proxy> {
    const { hostname, port } = new URL(target);
    const listenPort = await freePort();
    const server = net.createServer();
    const proxy = new Proxy(server, `http://127.0.0.1:${listenPort}`);
    server.on('connection', (client) => {
      proxy.accepted++;
      if (proxy.mode === 'reset') return client.resetAndDestroy();
      const upstream = net.connect(Number(port), hostname);
      proxy.sockets.add(client).add(upstream);
      for (const [from, to] of [
        [client, upstream],
        [upstream, client],
      ] as const) {
        from.on('data', (chunk) => {
          if (proxy.mode !== 'freeze') to.write(chunk);
        });
        from.on('error', () => to.destroy());
      }
      client.on('close', () => {
        proxy.closedByClient++;
        upstream.destroy();
      });
      upstream.on('close', () => client.destroy());
    });
    await new Promise<void>((resolve) => server.listen(listenPort, '127.0.0.1', resolve));
    return proxy;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

describe('unary calls against etcd', () => {
  let etcd: EtcdServer;
  let client: Etcd3;
  const value = (i: number): Buffer => Buffer.alloc(20 * 1024, `value-${i}-`);

  beforeAll(async () => {
    etcd = await EtcdServer.start({ name: 'unary' });
    client = etcd.client();
    // 4 MB of replies: many HTTP/2 frames a page.
    for (let i = 0; i < 200; i += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, j) => client.put(`/big/${String(i + j).padStart(3, '0')}`).value(value(i + j))));
    }
  });
  afterAll(async () => {
    client?.close();
    await etcd?.destroy();
  });

  it('a reply over the receive limit fails before it is received; a scan halves its pages until each fits, every byte exact', async () => {
    const side = new EtcdSide(etcd.sideConfig('primary'), { maxReceiveBytes: 1024 * 1024 });
    onTestFinished(() => side.close());
    const range = { key: Buffer.from('/big/'), rangeEnd: Buffer.from('/big0') };
    const tooLarge = rangePage(side, { ...range, limit: 200 });
    await expect(tooLarge).rejects.toBeInstanceOf(TooLargeError);
    await expect(tooLarge).rejects.toThrow(
      new RegExp(`^primary etcd \\(${etcd.endpoint}\\) range at revision latest: reply too large: Received message larger than max \\(\\d+ vs 1048576\\)$`),
    );
    const pages: number[] = [];
    const keys: string[] = [];
    for await (const page of scanPages(side, { ...range, pageSize: 200, pageBytes: 8 * 1024 * 1024 }, retry)) {
      pages.push(page.length);
      for (const kv of page) {
        keys.push(kv.key.toString());
        expect(kv.value.equals(value(Number(kv.key.toString().slice(5))))).toBe(true);
      }
    }
    expect(keys).toEqual(Array.from({ length: 200 }, (_, i) => `/big/${String(i).padStart(3, '0')}`));
    expect(Math.max(...pages)).toBeLessThanOrEqual(51); // 51 x 20 KiB fits in 1 MiB, 52 does not
  });

  it("etcd's errors arrive typed, with etcd's message", async () => {
    const side = new EtcdSide(etcd.sideConfig('primary'));
    onTestFinished(() => side.close());
    const revoke = side.unary('lease 123 revoke', 'Lease/LeaseRevoke', encodeInt64Fields([[1, 123n]]), passThrough);
    await expect(revoke).rejects.toBeInstanceOf(EtcdRequestError);
    await expect(revoke).rejects.toThrow(`primary etcd (${etcd.endpoint}) lease 123 revoke: etcdserver: requested lease not found`);

    await client.put('/compact/me').value('1');
    const before = (await readHeader(side)).revision;
    await client.put('/compact/me').value('2');
    await client.put('/compact/me').value('3');
    await client.kv.compact({ revision: String(before + 2n), physical: true });
    const compacted = rangePage(side, { key: Buffer.from('/compact/'), rangeEnd: Buffer.from('/compact0'), limit: 10, revision: before });
    await expect(compacted).rejects.toBeInstanceOf(CompactedError);
    await expect(compacted).rejects.toThrow(`primary etcd (${etcd.endpoint}) range at revision ${before}: required revision has been compacted`);
  });

  it('an unreachable endpoint fails the call, retryable, naming the endpoint and the cause; the next call goes to the next endpoint', async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    const side = new EtcdSide({ name: 'primary', endpoints: [dead, etcd.endpoint] });
    onTestFinished(() => side.close());
    const first = readHeader(side);
    await expect(first).rejects.toBeInstanceOf(UnreachableError);
    await expect(first).rejects.toThrow(`primary etcd (${dead}) status: unreachable: connect ECONNREFUSED ${dead.slice('http://'.length)}`);
    expect((await readHeader(side)).revision).toBe(BigInt((await client.get('/none').exec()).header.revision));
  });

  it('a server that never answers: the call fails at its deadline, retryable', async () => {
    const sockets: net.Socket[] = [];
    const silent = net.createServer((socket) => void sockets.push(socket));
    const port = await freePort();
    await new Promise<void>((resolve) => silent.listen(port, '127.0.0.1', resolve));
    const side = new EtcdSide({ name: 'standby', endpoints: [`http://127.0.0.1:${port}`] }, { callTimeoutMs: 300 });
    onTestFinished(async () => {
      side.close();
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    });
    const call = readHeader(side);
    await expect(call).rejects.toBeInstanceOf(UnreachableError);
    await expect(call).rejects.toThrow(`standby etcd (http://127.0.0.1:${port}) status: unreachable: Deadline exceeded after 0.3s`);
  });

  it('a connection reset fails the call, retryable; the next call connects again', async () => {
    const proxy = await Proxy.start(etcd.endpoint);
    const side = new EtcdSide({ name: 'primary', endpoints: [proxy.endpoint] });
    onTestFinished(async () => {
      side.close();
      await proxy.close();
    });
    proxy.mode = 'reset';
    await expect(readHeader(side)).rejects.toBeInstanceOf(UnreachableError);
    proxy.mode = 'forward';
    expect((await readHeader(side)).clusterId).toBe((await client.get('/none').exec()).header.cluster_id);
    expect(proxy.accepted).toBe(2);
  });

  /** A connection to etcd through a Proxy of its own; both closed when the test ends. */
  const proxiedConnection = async (options: UnaryConnectionOptions): Promise<{ proxy: Proxy; connection: UnaryConnection }> => {
    const proxy = await Proxy.start(etcd.endpoint);
    const connection = new UnaryConnection(proxy.endpoint, options);
    onTestFinished(async () => {
      connection.close();
      await proxy.close();
    });
    return { proxy, connection };
  };

  it('a connection that carried its most calls is replaced by a new one, its own calls finishing on it', async () => {
    const { proxy, connection } = await proxiedConnection({ ...OPTIONS, maxCallsPerConnection: 2 });
    const status = (): Promise<bigint> => revisionOver(connection);
    // Made while the connections connect: 2 + 2 + 1 calls.
    const revisions = await Promise.all([status(), status(), status(), status(), status()]);
    expect(new Set(revisions).size).toBe(1);
    expect(proxy.accepted).toBe(3);
    // Made on a connected connection: the second of these opens a fourth.
    expect(await status()).toBe(revisions[0]);
    expect(await status()).toBe(revisions[0]);
    expect(proxy.accepted).toBe(4);
    await waitFor(() => proxy.closedByClient === 3, { timeoutMs: 10_000, message: 'the full connections were not closed' });
  });

  it('a connection that stops answering is closed by its keep-alive ping; the next call opens a new one', async () => {
    const { proxy, connection } = await proxiedConnection({ ...OPTIONS, keepaliveMs: 100, keepaliveTimeoutMs: 200 });
    const status = (): Promise<bigint> => revisionOver(connection);
    expect(await status()).toBeGreaterThan(0n);
    expect(await status()).toBeGreaterThan(0n);
    expect(proxy.accepted).toBe(1);
    proxy.mode = 'freeze';
    await waitFor(() => proxy.closedByClient === 1, { timeoutMs: 10_000, message: 'the frozen connection was not closed' });
    proxy.mode = 'forward';
    expect(await status()).toBeGreaterThan(0n);
    expect(proxy.accepted).toBe(2);
  });
});

describe('auth tokens over unary calls', () => {
  let etcd: EtcdServer;
  beforeAll(async () => {
    etcd = await EtcdServer.start({ name: 'unary-auth', rootPassword: 'pw', extraArgs: ['--auth-token-ttl=1'] });
  });
  afterAll(async () => {
    await etcd?.destroy();
  });

  it('a token etcd let expire is asked for again, once, and the call goes through', async () => {
    const side = new EtcdSide(etcd.sideConfig('standby'));
    const other = new UnaryConnection(etcd.endpoint, OPTIONS);
    onTestFinished(() => {
      side.close();
      other.close();
    });
    const first = await readHeader(side); // authenticates
    // A token asked for after the side's: once etcd has dropped it, it has dropped the side's too.
    const token = decodeStringField(
      await other.call('/etcdserverpb.Auth/Authenticate', encodeStringFields([[1, 'root'], [2, 'pw']]), {}, 5_000),
      2,
    );
    const status = (): Promise<bigint> => revisionOver(other, { token });
    await status();
    // Each use renews a simple token's TTL: look less often than it lasts.
    await waitFor(async () => (await status().then(() => '', (err: Error) => err.message)) === '16 UNAUTHENTICATED: etcdserver: invalid auth token', {
      timeoutMs: 20_000,
      intervalMs: 2_500,
      message: 'etcd did not let the token expire',
    });
    expect((await readHeader(side)).revision).toBe(first.revision);
  });
});

describe('the gRPC protocol of a unary call', () => {
  let server: http2.Http2Server;
  let endpoint: string;
  /** What the server does with the next call. */
  let answer: (stream: http2.ServerHttp2Stream, request: Buffer, headers: http2.IncomingHttpHeaders) => void;
  let connection: UnaryConnection;

  beforeAll(async () => {
    server = http2.createServer();
    server.on('stream', (stream, headers) => {
      stream.on('error', () => undefined); // a reset of its own, in one case
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => answer(stream, Buffer.concat(chunks), headers));
    });
    const port = await freePort();
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    endpoint = `http://127.0.0.1:${port}`;
    connection = new UnaryConnection(endpoint, { ...OPTIONS, maxReceiveBytes: 1000 });
  });
  afterAll(async () => {
    connection?.close();
    await new Promise((resolve) => server?.close(resolve));
  });

  const framed = (message: Buffer, compressed = 0): Buffer => {
    const header = Buffer.alloc(5);
    header[0] = compressed;
    header.writeUInt32BE(message.length, 1);
    return Buffer.concat([header, message]);
  };
  const ok = (stream: http2.ServerHttp2Stream, ...parts: Buffer[]): void => {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
    for (const part of parts.slice(0, -1)) stream.write(part);
    stream.end(parts[parts.length - 1]);
  };

  it('sends one length-prefixed message with the gRPC headers, and returns the reply exact, however it is split', async () => {
    let seen: { request: Buffer; headers: http2.IncomingHttpHeaders } | undefined;
    const reply = Buffer.from(Array.from({ length: 600 }, (_, i) => i % 251));
    const splits: ((b: Buffer) => Buffer[])[] = [
      (b) => [b],
      (b) => [...b].map((byte) => Buffer.from([byte])), // the prefix itself over five writes
      (b) => [b.subarray(0, 3), b.subarray(3, 300), b.subarray(300)],
    ];
    for (const split of splits) {
      answer = (stream, request, headers) => {
        seen = { request, headers };
        ok(stream, ...split(framed(reply)));
      };
      const got = await connection.call('/etcdserverpb.KV/Range', Buffer.from('request'), { token: 't0k3n' }, 300);
      expect(got.equals(reply)).toBe(true);
    }
    expect(seen?.request.equals(framed(Buffer.from('request')))).toBe(true);
    expect(seen?.headers).toMatchObject({
      ':method': 'POST',
      ':path': '/etcdserverpb.KV/Range',
      'content-type': 'application/grpc',
      te: 'trailers',
      'grpc-timeout': '300m',
      token: 't0k3n',
    });
    answer = (stream) => ok(stream, framed(Buffer.alloc(0)));
    expect((await connection.call('/x.Y/Z', Buffer.alloc(0), {}, 1000)).length).toBe(0);
  });

  it.each<[string, (stream: http2.ServerHttp2Stream) => void, number, string]>([
    [
      'an error as trailers only, its message percent-decoded',
      (s) => s.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '5', 'grpc-message': 'etcdserver:%20not%20found%3A%20100%25' }, { endStream: true }),
      5,
      '5 NOT_FOUND: etcdserver: not found: 100%',
    ],
    ['an HTTP error without a gRPC status', (s) => s.respond({ ':status': 503 }, { endStream: true }), 14, '14 UNAVAILABLE: HTTP status 503'],
    ['status OK without a message', (s) => ok(s, Buffer.alloc(0)), 13, '13 INTERNAL: the reply ended before its message did'],
    ['a message cut short', (s) => ok(s, framed(Buffer.alloc(10)).subarray(0, 12)), 13, '13 INTERNAL: the reply ended before its message did'],
    ['two messages', (s) => ok(s, framed(Buffer.from('a')), framed(Buffer.from('b'))), 13, '13 INTERNAL: a unary reply with more than one message'],
    ['a compressed message', (s) => ok(s, framed(Buffer.from('a'), 1)), 13, '13 INTERNAL: compressed reply, but no compression was offered'],
    ['a message over the receive limit', (s) => ok(s, framed(Buffer.alloc(1001))), 8, '8 RESOURCE_EXHAUSTED: Received message larger than max (1001 vs 1000)'],
    ['not a gRPC reply', (s) => s.respond({ ':status': 200, 'content-type': 'text/html', 'grpc-status': '0' }, { endStream: true }), 2, '2 UNKNOWN: not a gRPC reply (content-type text/html)'],
    ['a stream refused', (s) => s.close(http2.constants.NGHTTP2_REFUSED_STREAM), 14, '14 UNAVAILABLE: Stream closed with error code NGHTTP2_REFUSED_STREAM'],
    ['a stream reset for inadequate security', (s) => s.close(http2.constants.NGHTTP2_INADEQUATE_SECURITY), 7, '7 PERMISSION_DENIED: Stream closed with error code NGHTTP2_INADEQUATE_SECURITY'],
    [
      'a reply without a gRPC status',
      (s) => {
        s.respond({ ':status': 200, 'content-type': 'application/grpc' });
        s.end(framed(Buffer.from('a')));
      },
      13,
      '13 INTERNAL: the reply ended without a gRPC status',
    ],
  ])('%s', async (_name, reply, code, message) => {
    answer = reply;
    const call = connection.call('/x.Y/Z', Buffer.from('q'), {}, 5_000);
    await expect(call).rejects.toBeInstanceOf(GrpcCallError);
    await expect(call).rejects.toMatchObject({ code, message });
  });

  it('grpc-timeout: milliseconds up to 8 digits, then seconds', () => {
    expect([1, 300.2, 30_000, 99_999_999, 100_000_000, 1e12].map(grpcTimeout)).toEqual(['1m', '301m', '30000m', '99999999m', '100000S', '99999999S']);
  });
});
