/**
 * The hand-written protobuf codec against the reference: protobufjs through proto-loader on
 * etcd3's own rpc.proto. Each request we encode must read back field for field, and each
 * reply the reference encodes must decode to the same values.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import * as protoLoader from '@grpc/proto-loader';
import { describe, expect, it } from 'vitest';
import {
  WATCH_PROGRESS_REQUEST,
  decodeRangeResponse,
  decodeTxnResponse,
  decodeInt64Fields,
  decodeStringField,
  decodeWatchResponse,
  encodeInt64Fields,
  encodeRangeRequest,
  encodeStringFields,
  encodeTxnRequest,
  encodeWatchCreateRequest,
} from '../src/etcd/codec.js';

const require = createRequire(import.meta.url);
const rpcProto = path.join(path.dirname(require.resolve('etcd3/package.json')), 'proto', 'rpc.proto');
type Method = { requestDeserialize(b: Buffer): Record<string, unknown>; responseSerialize(o: object): Buffer };
const rpc = protoLoader.loadSync(rpcProto, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
const kv = rpc['etcdserverpb.KV'] as unknown as Record<'Range' | 'Txn', Method>;
const watch = (rpc['etcdserverpb.Watch'] as unknown as Record<'Watch', Method>).Watch;
const lease = rpc['etcdserverpb.Lease'] as unknown as Record<'LeaseGrant' | 'LeaseRevoke' | 'LeaseTimeToLive' | 'LeaseKeepAlive', Method>;
const authenticate = (rpc['etcdserverpb.Auth'] as unknown as Record<'Authenticate', Method>).Authenticate;

const LEASE = '7587869523456789012'; // above 2^53: must survive exactly
const BIG_REVISION = 2n ** 60n + 7n;
const binaryKey = Buffer.from([0x2f, 0x00, 0xff, 0x80, 0x7f]);
const kvOut = (key: Buffer, value: Buffer, mod: string, lease = '0'): object => ({ key, value, create_revision: '1', mod_revision: mod, version: '3', lease });

describe('encodeRangeRequest', () => {
  it.each([
    ['single key', { key: Buffer.from('/a') }, { key: '/a', range_end: '', limit: '0', revision: '0', keys_only: false, count_only: false }],
    [
      'paged range at a revision',
      { key: Buffer.from('/registry/'), rangeEnd: Buffer.from('/registry0'), limit: 50_000, revision: 123_456_789_012n },
      { key: '/registry/', range_end: '/registry0', limit: '50000', revision: '123456789012', keys_only: false, count_only: false },
    ],
    ['count only', { key: Buffer.from([0]), limit: 1, countOnly: true }, { key: '\0', range_end: '', limit: '1', revision: '0', keys_only: false, count_only: true }],
    ['keys only, huge revision', { key: binaryKey, rangeEnd: Buffer.from([0]), keysOnly: true, revision: BIG_REVISION }, { key: binaryKey.toString('latin1'), range_end: '\0', limit: '0', revision: BIG_REVISION.toString(), keys_only: true, count_only: false }],
  ])('%s', (_name, request, expected) => {
    const decoded = kv.Range.requestDeserialize(encodeRangeRequest(request));
    const { key, range_end, limit, revision, keys_only, count_only } = decoded as Record<string, Buffer | string | boolean>;
    expect({ key: (key as Buffer).toString('latin1'), range_end: (range_end as Buffer).toString('latin1'), limit, revision, keys_only, count_only }).toEqual(expected);
  });
});

describe('encodeTxnRequest', () => {
  it('writes compares of every target and puts, deletes and reads in order', () => {
    const value = Buffer.alloc(70_000, 0x61); // a length that needs a three-byte varint
    const buf = encodeTxnRequest(
      [
        { key: Buffer.from('/election'), target: 'Version', result: 'Equal', version: 0n },
        { key: Buffer.from('/k'), target: 'Mod', result: 'Less', version: BIG_REVISION },
        { key: Buffer.from('/v'), target: 'Value', result: 'Equal', value: Buffer.alloc(0) },
        { key: Buffer.from('/v2'), target: 'Value', result: 'NotEqual', value: Buffer.from('x') },
        { key: Buffer.from('/c'), target: 'Create', result: 'Greater', version: 5n },
      ],
      [
        { type: 'put', key: Buffer.from('/p'), value },
        { type: 'put', key: binaryKey, value: Buffer.alloc(0), lease: LEASE },
        { type: 'put', key: Buffer.from('/no-lease'), value: Buffer.from('v'), lease: '0' },
        { type: 'delete', key: Buffer.from('/d') },
        { type: 'range', request: { key: Buffer.from('/r'), revision: 9n } },
      ],
    );
    const txn = kv.Txn.requestDeserialize(buf) as { compare: Record<string, unknown>[]; success: Record<string, Record<string, unknown>>[]; failure: unknown[] };
    expect(txn.compare.map((c) => [c.result, c.target, (c.key as Buffer).toString(), c.target_union, String(c[c.target_union as string])])).toEqual([
      ['Equal', 'Version', '/election', 'version', '0'],
      ['Less', 'Mod', '/k', 'mod_revision', BIG_REVISION.toString()],
      ['Equal', 'Value', '/v', 'value', ''],
      ['NotEqual', 'Value', '/v2', 'value', 'x'],
      ['Greater', 'Create', '/c', 'create_revision', '5'],
    ]);
    expect(txn.success.map((op) => op.request)).toEqual(['request_put', 'request_put', 'request_put', 'request_delete_range', 'request_range']);
    const put = (i: number): Record<string, unknown> => txn.success[i]?.request_put as Record<string, unknown>;
    expect((put(0).value as Buffer).equals(value)).toBe(true);
    expect([(put(1).key as Buffer).equals(binaryKey), put(1).lease, (put(1).value as Buffer).length]).toEqual([true, LEASE, 0]);
    expect(put(2).lease).toBe('0');
    expect((txn.success[3]?.request_delete_range?.key as Buffer).toString()).toBe('/d');
    expect([(txn.success[4]?.request_range?.key as Buffer).toString(), txn.success[4]?.request_range?.revision]).toEqual(['/r', '9']);
    expect(txn.failure).toEqual([]);
  });

  it('writes nested txns: their puts and deletes in order, beside a compare and a flat op', () => {
    const big = Buffer.alloc(200, 0x62); // a nested op longer than 127 bytes: two-byte lengths
    const buf = encodeTxnRequest(
      [{ key: Buffer.from('/cp'), target: 'Value', result: 'Equal', value: Buffer.from('7') }],
      [
        { type: 'txn', success: [{ type: 'put', key: Buffer.from('/a'), value: big }, { type: 'delete', key: Buffer.from('/b') }] },
        { type: 'txn', success: [{ type: 'put', key: Buffer.from('/c'), value: Buffer.from('c'), lease: LEASE }] },
        { type: 'put', key: Buffer.from('/cp'), value: Buffer.from('8') },
      ],
    );
    type Op = { request: string; request_put?: Record<string, unknown>; request_delete_range?: Record<string, unknown>; request_txn?: { compare: unknown[]; success: Op[]; failure: unknown[] } };
    const txn = kv.Txn.requestDeserialize(buf) as { compare: unknown[]; success: Op[] };
    const flatten = (ops: Op[]): unknown[] =>
      ops.map((op) =>
        op.request === 'request_txn'
          ? { compare: op.request_txn?.compare, failure: op.request_txn?.failure, success: flatten(op.request_txn?.success ?? []) }
          : op.request === 'request_put'
            ? ['put', String(op.request_put?.key), String(op.request_put?.value), op.request_put?.lease]
            : ['delete', String(op.request_delete_range?.key)],
      );
    expect(txn.compare).toHaveLength(1);
    expect(flatten(txn.success)).toEqual([
      { compare: [], failure: [], success: [['put', '/a', big.toString(), '0'], ['delete', '/b']] },
      { compare: [], failure: [], success: [['put', '/c', 'c', LEASE]] },
      ['put', '/cp', '8', '0'],
    ]);
  });

  it('encodes an empty txn (a bare checkpoint-less write) as zero bytes', () => {
    expect(encodeTxnRequest([], []).length).toBe(0);
  });
});

describe('decodeRangeResponse', () => {
  it('reads the header, keys, values, revisions, leases, more and count', () => {
    const reply = kv.Range.responseSerialize({
      header: { cluster_id: '14841639068965178418', member_id: '10276657743932975437', revision: BIG_REVISION.toString(), raft_term: '2' },
      kvs: [kvOut(Buffer.from('/a'), Buffer.from('1'), '5'), kvOut(binaryKey, Buffer.alloc(0), BIG_REVISION.toString(), LEASE), kvOut(Buffer.from('/c'), Buffer.alloc(200_000, 7), '6')],
      more: true,
      count: '1000001',
    });
    const res = decodeRangeResponse(reply);
    expect(res.header).toEqual({ clusterId: '14841639068965178418', revision: BIG_REVISION });
    expect(res.kvs.map((k) => [k.key.toString('latin1'), k.value.length, k.modRevision, k.lease])).toEqual([
      ['/a', 1, 5n, '0'],
      [binaryKey.toString('latin1'), 0, BIG_REVISION, LEASE],
      ['/c', 200_000, 6n, '0'],
    ]);
    expect(res.kvs[2]?.value.equals(Buffer.alloc(200_000, 7))).toBe(true);
    expect([res.more, res.count]).toEqual([true, 1_000_001n]);
  });

  it('reads an empty reply as no keys at revision 0', () => {
    expect(decodeRangeResponse(Buffer.alloc(0))).toEqual({ header: { revision: 0n, clusterId: '0' }, kvs: [], more: false, count: 0n });
  });

  it('refuses a truncated reply', () => {
    const reply = kv.Range.responseSerialize({ kvs: [kvOut(Buffer.from('/a'), Buffer.from('value'), '5')] });
    expect(() => decodeRangeResponse(reply.subarray(0, reply.length - 2))).toThrow(/truncated/);
  });
});

describe('decodeTxnResponse', () => {
  it('reads succeeded, the header and the range results in op order', () => {
    const reply = kv.Txn.responseSerialize({
      header: { cluster_id: '1', revision: '42' },
      succeeded: true,
      responses: [
        { response_put: { header: { revision: '42' } } },
        { response_range: { header: { revision: '42' }, kvs: [kvOut(Buffer.from('/x'), Buffer.from('X'), '40')], count: '1' } },
        { response_delete_range: { header: { revision: '42' }, deleted: '1' } },
        { response_range: { header: { revision: '42' }, kvs: [], count: '0' } },
      ],
    });
    const res = decodeTxnResponse(reply);
    expect([res.succeeded, res.header]).toEqual([true, { clusterId: '1', revision: 42n }]);
    expect(res.ranges.map((r) => r.kvs.map((k) => `${k.key}=${k.value}@${k.modRevision}`))).toEqual([['/x=X@40'], []]);
  });

  it('reads a failed compare as not succeeded', () => {
    expect(decodeTxnResponse(kv.Txn.responseSerialize({ header: { revision: '7' }, succeeded: false })).succeeded).toBe(false);
  });
});

describe('watch requests', () => {
  it('encodes a create request with every field we send', () => {
    const req = watch.requestDeserialize(
      encodeWatchCreateRequest({ key: binaryKey, rangeEnd: Buffer.from('/registry0'), startRevision: BIG_REVISION, progressNotify: true }),
    );
    const create = req.create_request as Record<string, unknown>;
    expect(req.request_union).toBe('create_request');
    expect([(create.key as Buffer).equals(binaryKey), (create.range_end as Buffer).toString(), create.start_revision, create.progress_notify, create.prev_kv, create.filters]).toEqual([
      true,
      '/registry0',
      BIG_REVISION.toString(),
      true,
      false,
      [],
    ]);
  });

  it('encodes a create request from revision 0 without progress notifications', () => {
    const create = watch.requestDeserialize(encodeWatchCreateRequest({ key: Buffer.from('/a'), rangeEnd: Buffer.from('/b'), startRevision: 0n, progressNotify: false })).create_request as Record<string, unknown>;
    expect([(create.key as Buffer).toString(), create.start_revision, create.progress_notify]).toEqual(['/a', '0', false]);
  });

  it('encodes a progress request', () => {
    expect(watch.requestDeserialize(WATCH_PROGRESS_REQUEST).request_union).toBe('progress_request');
  });
});

describe('decodeWatchResponse', () => {
  const none = { revision: 0n, clusterId: '0' };

  it('reads events in order: puts and deletes, values, leases, revisions', () => {
    const reply = watch.responseSerialize({
      header: { cluster_id: '9', revision: BIG_REVISION.toString() },
      watch_id: '0',
      events: [
        { type: 'Put', kv: kvOut(Buffer.from('/a'), Buffer.alloc(70_000, 3), '11', LEASE) },
        { type: 'Delete', kv: { key: binaryKey, mod_revision: BIG_REVISION.toString() } },
        { type: 'Put', kv: kvOut(Buffer.from('/c'), Buffer.alloc(0), '12') },
      ],
    });
    const res = decodeWatchResponse(reply);
    expect([res.header, res.created, res.canceled, res.compactRevision, res.fragment]).toEqual([{ clusterId: '9', revision: BIG_REVISION }, false, false, 0n, false]);
    expect(res.events.map((e) => [e.type, e.kv.key.toString('latin1'), e.kv.value.length, e.kv.modRevision, e.kv.lease])).toEqual([
      ['put', '/a', 70_000, 11n, LEASE],
      ['delete', binaryKey.toString('latin1'), 0, BIG_REVISION, '0'],
      ['put', '/c', 0, 12n, '0'],
    ]);
    expect(res.events[0]?.kv.value.equals(Buffer.alloc(70_000, 3))).toBe(true);
  });

  it('reads created, progress, fragment, compaction and cancel replies', () => {
    expect(decodeWatchResponse(watch.responseSerialize({ header: { revision: '5' }, created: true }))).toMatchObject({ created: true, events: [], header: { revision: 5n } });
    expect(decodeWatchResponse(watch.responseSerialize({ header: { revision: '77' } }))).toEqual({
      header: { revision: 77n, clusterId: '0' },
      created: false,
      canceled: false,
      compactRevision: 0n,
      cancelReason: '',
      fragment: false,
      events: [],
    });
    expect(decodeWatchResponse(watch.responseSerialize({ fragment: true, events: [{ type: 'Put', kv: kvOut(Buffer.from('/f'), Buffer.from('v'), '3') }] }))).toMatchObject({ fragment: true, header: none });
    expect(decodeWatchResponse(watch.responseSerialize({ canceled: true, compact_revision: '4000000000' }))).toMatchObject({ canceled: true, compactRevision: 4_000_000_000n });
    expect(decodeWatchResponse(watch.responseSerialize({ canceled: true, cancel_reason: 'etcdserver: permission denied' }))).toMatchObject({ canceled: true, cancelReason: 'etcdserver: permission denied' });
  });

  it('refuses a truncated reply', () => {
    const reply = watch.responseSerialize({ events: [{ type: 'Put', kv: kvOut(Buffer.from('/a'), Buffer.from('value'), '5') }] });
    expect(() => decodeWatchResponse(reply.subarray(0, reply.length - 2))).toThrow(/truncated/);
  });
});

describe('lease and auth messages', () => {
  it('encodes lease requests: TTL, IDs above 2^53, zero fields left out', () => {
    expect(lease.LeaseGrant.requestDeserialize(encodeInt64Fields([[1, 30n]]))).toMatchObject({ TTL: '30', ID: '0' });
    expect(lease.LeaseRevoke.requestDeserialize(encodeInt64Fields([[1, BigInt(LEASE)]]))).toMatchObject({ ID: LEASE });
    expect(lease.LeaseTimeToLive.requestDeserialize(encodeInt64Fields([[1, BigInt(LEASE)]]))).toMatchObject({ ID: LEASE, keys: false });
    expect(lease.LeaseKeepAlive.requestDeserialize(encodeInt64Fields([[1, 1n]]))).toMatchObject({ ID: '1' });
    expect(encodeInt64Fields([[1, 0n]]).length).toBe(0);
  });

  it('reads the int64 fields of lease replies, negative TTLs included, past the header and keys', () => {
    const ttl = decodeInt64Fields(
      lease.LeaseTimeToLive.responseSerialize({ header: { revision: '99', cluster_id: '5' }, ID: LEASE, TTL: '-1', grantedTTL: '60', keys: [Buffer.from('/k')] }),
    );
    expect([ttl.get(2), ttl.get(3), ttl.get(4)]).toEqual([BigInt(LEASE), -1n, 60n]);
    const grant = decodeInt64Fields(lease.LeaseGrant.responseSerialize({ header: { revision: '3' }, ID: '7', TTL: '10', error: '' }));
    expect([grant.get(2), grant.get(3)]).toEqual([7n, 10n]);
    expect(decodeInt64Fields(lease.LeaseKeepAlive.responseSerialize({ ID: '7' })).get(3)).toBeUndefined();
  });

  it('encodes the authenticate request and reads the token', () => {
    expect(authenticate.requestDeserialize(encodeStringFields([[1, 'root'], [2, 'pä$s wörd']]))).toEqual({ name: 'root', password: 'pä$s wörd' });
    expect(decodeStringField(authenticate.responseSerialize({ header: { revision: '1' }, token: 'abc.123' }), 2)).toBe('abc.123');
    expect(decodeStringField(authenticate.responseSerialize({ header: { revision: '1' } }), 2)).toBe('');
  });
});
