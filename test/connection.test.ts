/**
 * etcd-sync's calls to etcd over grpc-js (src/etcd/connection.ts), against a real etcd: the
 * receive limit, typed errors, an unreachable endpoint, a silent server, a reset, a frozen
 * connection, keep-alive only while calls are open, and an auth token etcd let expire.
 */
import * as grpc from '@grpc/grpc-js';
import net from 'node:net';
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { decodeRangeResponse, decodeStringField, encodeInt64Fields, encodeRangeRequest, encodeStringFields, passThrough } from '../src/etcd/codec.js';
import { EtcdSide } from '../src/etcd/connection.js';
import { readHeader, rangePage, scanPages } from '../src/etcd/kv.js';
import { CompactedError, EtcdRequestError, TooLargeError, UnreachableError } from '../src/errors.js';
import { EtcdServer, freePort } from './helpers/etcd.js';
import { Proxy } from './helpers/proxy.js';
import { waitFor } from './helpers/wait.js';

const retry = <T>(_what: string, fn: () => Promise<T>): Promise<T> => fn();

/** A call on a grpc-js client of the test's own, outside etcd-sync's connection. */
function rawCall(client: grpc.Client, method: string, request: Buffer, metadata = new grpc.Metadata()): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    client.makeUnaryRequest(`/etcdserverpb.${method}`, passThrough, passThrough, request, metadata, { deadline: Date.now() + 5_000 }, (err, reply) =>
      err ? reject(err) : resolve(reply as Buffer),
    ),
  );
}

describe('calls to etcd', () => {
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
    await expect(first).rejects.toThrow(new RegExp(`^primary etcd \\(${dead.replace(/[.]/g, '\\.')}\\) status: unreachable: .*ECONNREFUSED ${dead.slice('http://'.length).replace(/[.]/g, '\\.')}`));
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
    await expect(call).rejects.toThrow(new RegExp(`^standby etcd \\(http://127\\.0\\.0\\.1:${port}\\) status: unreachable: Deadline exceeded after 0\\.[23]\\d*s`)); // grpc-js measures 0.299s as often as 0.3s
  });

  /** An EtcdSide on etcd through a Proxy of its own; both closed when the test ends. */
  const proxiedSide = async (options: ConstructorParameters<typeof EtcdSide>[1] = {}): Promise<{ proxy: Proxy; side: EtcdSide }> => {
    const proxy = await Proxy.start(etcd.endpoint);
    const side = new EtcdSide({ name: 'primary', endpoints: [proxy.endpoint] }, options);
    onTestFinished(async () => {
      side.close();
      await proxy.close();
    });
    return { proxy, side };
  };

  it('a connection reset fails the call, retryable; the next call connects again', async () => {
    const { proxy, side } = await proxiedSide();
    proxy.mode = 'reset';
    await expect(readHeader(side)).rejects.toBeInstanceOf(UnreachableError);
    proxy.mode = 'forward';
    expect((await readHeader(side)).clusterId).toBe((await client.get('/none').exec()).header.cluster_id);
    expect(proxy.accepted).toBeGreaterThanOrEqual(2);
  });

  it('a connection that goes silent under an open call is closed by its keep-alive ping, long before the deadline; the next call opens a new one', async () => {
    const { proxy, side } = await proxiedSide({ keepaliveMs: 100, keepaliveTimeoutMs: 200, callTimeoutMs: 60_000 });
    expect((await readHeader(side)).revision).toBeGreaterThan(0n);
    expect(proxy.accepted).toBe(1);
    proxy.mode = 'freeze';
    const started = Date.now();
    const frozen = readHeader(side);
    await expect(frozen).rejects.toBeInstanceOf(UnreachableError);
    expect(Date.now() - started).toBeLessThan(30_000);
    await waitFor(() => proxy.closedByClient === 1, { timeoutMs: 10_000, message: 'the frozen connection was not closed' });
    proxy.mode = 'forward';
    expect((await readHeader(side)).revision).toBeGreaterThan(0n);
    expect(proxy.accepted).toBe(2);
  });

  it('an idle connection is not pinged (etcd would answer GOAWAY too_many_pings), one with a call open is', async () => {
    // Both with a ping every 100 ms. `busy` has a call open on a frozen connection: its pings go
    // unanswered and close it after 200 ms. Over that time `idle`, connected, sends nothing.
    const { proxy: idleProxy, side: idle } = await proxiedSide({ keepaliveMs: 100, keepaliveTimeoutMs: 200 });
    const { proxy: busyProxy, side: busy } = await proxiedSide({ keepaliveMs: 100, keepaliveTimeoutMs: 200, callTimeoutMs: 60_000 });
    await readHeader(idle);
    await readHeader(busy);
    const idleBytes = idleProxy.bytesFromClients;
    busyProxy.mode = 'freeze';
    const busyBytes = busyProxy.bytesFromClients;
    const pending = readHeader(busy).catch((err: unknown) => err);
    await waitFor(() => busyProxy.closedByClient === 1, { timeoutMs: 10_000, message: 'the busy connection was not closed by its pings' });
    expect(await pending).toBeInstanceOf(UnreachableError);
    expect(busyProxy.bytesFromClients).toBeGreaterThan(busyBytes);
    expect(idleProxy.bytesFromClients).toBe(idleBytes);
    expect(idleProxy.closedByClient).toBe(0);
  });
});

describe('auth tokens', () => {
  let etcd: EtcdServer;
  beforeAll(async () => {
    etcd = await EtcdServer.start({ name: 'conn-auth', rootPassword: 'pw', extraArgs: ['--auth-token-ttl=1'] });
  });
  afterAll(async () => {
    await etcd?.destroy();
  });

  it('a token etcd let expire is asked for again, once, and the call goes through', async () => {
    const side = new EtcdSide(etcd.sideConfig('standby'));
    const other = new grpc.Client(etcd.endpoint.replace('http://', ''), grpc.credentials.createInsecure());
    onTestFinished(() => {
      side.close();
      other.close();
    });
    const first = await readHeader(side); // authenticates
    // A token asked for after the side's: once etcd has dropped it, it has dropped the side's too.
    const token = decodeStringField(await rawCall(other, 'Auth/Authenticate', encodeStringFields([[1, 'root'], [2, 'pw']])), 2);
    const metadata = new grpc.Metadata();
    metadata.set('token', token);
    const status = async (): Promise<bigint> =>
      decodeRangeResponse(await rawCall(other, 'KV/Range', encodeRangeRequest({ key: Buffer.from([0]), countOnly: true }), metadata)).header.revision;
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
