/**
 * Hand-written protobuf for every etcd call etcd-sync makes (etcd's rpc.proto and kv.proto
 * field numbers): KV.Range and KV.Txn, the Watch stream, the lease calls and Authenticate.
 * Through protobufjs, a 100k-key copy spent more CPU turning replies into objects (int64 as
 * Long then string, a copy of every key and value) than etcd spent answering, and a watch at
 * 2000 events/s more than on anything else. Here keys and values are views into the reply
 * buffer, revisions are bigints, and a request is sized first and written into one buffer.
 */
import { BYTES, Reader, VARINT, Writer, bigVarintSize, fieldSize, varintSize } from './protobuf.js';
import type { Compare, Header, KeyValue, WriteOp } from './types.js';

/** grpc-js (de)serializer for a message this module already encoded, or decodes later. */
export const passThrough = (message: Buffer): Buffer => message;

export interface RangeRequest {
  key: Buffer;
  /** Absent: the single key. */
  rangeEnd?: Buffer;
  limit?: number;
  revision?: bigint;
  keysOnly?: boolean;
  countOnly?: boolean;
}

function rangeRequestSize(r: RangeRequest): number {
  let size = fieldSize(r.key.length);
  if (r.rangeEnd) size += fieldSize(r.rangeEnd.length);
  if (r.limit) size += 1 + varintSize(r.limit);
  if (r.revision) size += 1 + bigVarintSize(r.revision);
  if (r.keysOnly) size += 2;
  if (r.countOnly) size += 2;
  return size;
}

function writeRangeRequest(w: Writer, r: RangeRequest): void {
  w.bytes(1, r.key);
  if (r.rangeEnd) w.bytes(2, r.rangeEnd);
  if (r.limit) w.tag(3, VARINT).varint(r.limit);
  if (r.revision) w.tag(4, VARINT).bigVarint(r.revision);
  if (r.keysOnly) w.tag(8, VARINT).varint(1);
  if (r.countOnly) w.tag(9, VARINT).varint(1);
}

export function encodeRangeRequest(r: RangeRequest): Buffer {
  const w = new Writer(rangeRequestSize(r));
  writeRangeRequest(w, r);
  return w.done();
}

const leaseId = (lease: string | undefined): bigint => (lease && lease !== '0' ? BigInt(lease) : 0n);

/** A txn nested in another: writes, no compares. */
export interface NestedTxn {
  type: 'txn';
  success: readonly WriteOp[];
}

/** A txn operation: a write, a read of one key (for multi-gets), or a nested txn. */
export type TxnOp = WriteOp | { type: 'range'; request: RangeRequest } | NestedTxn;

/** A TxnRequest's `success` ops (field 2), each a RequestOp holding the op's own message. */
function successSize(ops: readonly TxnOp[]): number {
  let size = 0;
  for (const op of ops) size += fieldSize(fieldSize(opBodySize(op)));
  return size;
}

function writeSuccess(w: Writer, ops: readonly TxnOp[]): void {
  for (const op of ops) {
    const body = opBodySize(op);
    w.message(2, fieldSize(body)).message(OP_FIELD[op.type], body);
    writeOpBody(w, op);
  }
}

function opBodySize(op: TxnOp): number {
  if (op.type === 'range') return rangeRequestSize(op.request);
  if (op.type === 'txn') return successSize(op.success);
  if (op.type === 'delete') return fieldSize(op.key.length);
  const lease = leaseId(op.lease);
  return fieldSize(op.key.length) + fieldSize(op.value.length) + (lease ? 1 + bigVarintSize(lease) : 0);
}

/** RequestOp's oneof fields. */
const OP_FIELD = { range: 1, put: 2, delete: 3, txn: 4 } as const;

function writeOpBody(w: Writer, op: TxnOp): void {
  if (op.type === 'range') return writeRangeRequest(w, op.request);
  if (op.type === 'txn') return writeSuccess(w, op.success);
  w.bytes(1, op.key);
  if (op.type === 'put') {
    w.bytes(2, op.value);
    const lease = leaseId(op.lease);
    if (lease) w.tag(3, VARINT).bigVarint(lease);
  }
}

const COMPARE_RESULT = { Equal: 0, Greater: 1, Less: 2, NotEqual: 3 } as const;
const COMPARE_TARGET = { Version: 0, Create: 1, Mod: 2, Value: 3, Lease: 4 } as const;
/** Field of the compared value in Compare's target_union, by target. */
const COMPARE_UNION_FIELD = { Version: 4, Create: 5, Mod: 6, Value: 7, Lease: 8 } as const;

function compareSize(c: Compare): number {
  // result and target are always written (a zero enum is legal and explicit).
  let size = 2 + 2 + fieldSize(c.key.length);
  if (c.target === 'Value') size += fieldSize((c.value ?? Buffer.alloc(0)).length);
  else size += 1 + bigVarintSize(c.version ?? 0n);
  return size;
}

function writeCompare(w: Writer, c: Compare): void {
  w.tag(1, VARINT).varint(COMPARE_RESULT[c.result]);
  w.tag(2, VARINT).varint(COMPARE_TARGET[c.target]);
  w.bytes(3, c.key);
  if (c.target === 'Value') w.bytes(COMPARE_UNION_FIELD.Value, c.value ?? Buffer.alloc(0));
  else w.tag(COMPARE_UNION_FIELD[c.target], VARINT).bigVarint(c.version ?? 0n);
}

export function encodeTxnRequest(compares: readonly Compare[], success: readonly TxnOp[]): Buffer {
  const compareSizes = compares.map(compareSize);
  let size = successSize(success);
  for (const s of compareSizes) size += fieldSize(s);
  const w = new Writer(size);
  compares.forEach((c, i) => {
    w.message(1, compareSizes[i] as number);
    writeCompare(w, c);
  });
  writeSuccess(w, success);
  return w.done();
}

const EMPTY = Buffer.alloc(0);

function decodeHeader(r: Reader): Header {
  const header: Header = { revision: 0n, clusterId: '0' };
  while (r.more) {
    const tag = r.varint();
    if (tag === (1 << 3) + VARINT) header.clusterId = r.uint64().toString();
    else if (tag === (3 << 3) + VARINT) header.revision = r.int64();
    else r.skip(tag & 7);
  }
  return header;
}

function decodeKeyValue(r: Reader): KeyValue {
  const kv: KeyValue = { key: EMPTY, value: EMPTY, modRevision: 0n, lease: '0' };
  while (r.more) {
    const tag = r.varint();
    if (tag === (1 << 3) + BYTES) kv.key = r.bytes();
    else if (tag === (3 << 3) + VARINT) kv.modRevision = r.int64();
    else if (tag === (5 << 3) + BYTES) kv.value = r.bytes();
    else if (tag === (6 << 3) + VARINT) kv.lease = r.int64().toString();
    else r.skip(tag & 7);
  }
  return kv;
}

export interface RangeResponse {
  header: Header;
  kvs: KeyValue[];
  more: boolean;
  count: bigint;
}

function readRangeResponse(r: Reader): RangeResponse {
  const res: RangeResponse = { header: { revision: 0n, clusterId: '0' }, kvs: [], more: false, count: 0n };
  while (r.more) {
    const tag = r.varint();
    if (tag === (1 << 3) + BYTES) res.header = decodeHeader(r.embedded());
    else if (tag === (2 << 3) + BYTES) res.kvs.push(decodeKeyValue(r.embedded()));
    else if (tag === (3 << 3) + VARINT) res.more = r.varint() !== 0;
    else if (tag === (4 << 3) + VARINT) res.count = r.int64();
    else r.skip(tag & 7);
  }
  return res;
}

export function decodeRangeResponse(buf: Buffer): RangeResponse {
  return readRangeResponse(new Reader(buf));
}

export interface TxnResponse {
  header: Header;
  succeeded: boolean;
  /** The range responses among the results, in op order (puts and deletes are skipped). */
  ranges: RangeResponse[];
}

export function decodeTxnResponse(buf: Buffer): TxnResponse {
  const r = new Reader(buf);
  const res: TxnResponse = { header: { revision: 0n, clusterId: '0' }, succeeded: false, ranges: [] };
  while (r.more) {
    const tag = r.varint();
    if (tag === (1 << 3) + BYTES) res.header = decodeHeader(r.embedded());
    else if (tag === (2 << 3) + VARINT) res.succeeded = r.varint() !== 0;
    else if (tag === (3 << 3) + BYTES) {
      const op = r.embedded();
      while (op.more) {
        const opTag = op.varint();
        if (opTag === (1 << 3) + BYTES) res.ranges.push(readRangeResponse(op.embedded()));
        else op.skip(opTag & 7);
      }
    } else r.skip(tag & 7);
  }
  return res;
}

export interface WatchCreateRequest {
  key: Buffer;
  rangeEnd: Buffer;
  startRevision: bigint;
  progressNotify: boolean;
}

/** WatchRequest{create_request}. */
export function encodeWatchCreateRequest(r: WatchCreateRequest): Buffer {
  let body = fieldSize(r.key.length) + fieldSize(r.rangeEnd.length);
  if (r.startRevision) body += 1 + bigVarintSize(r.startRevision);
  if (r.progressNotify) body += 2;
  const w = new Writer(fieldSize(body));
  w.message(1, body).bytes(1, r.key).bytes(2, r.rangeEnd);
  if (r.startRevision) w.tag(3, VARINT).bigVarint(r.startRevision);
  if (r.progressNotify) w.tag(4, VARINT).varint(1);
  return w.done();
}

/** WatchRequest{progress_request{}}. */
export const WATCH_PROGRESS_REQUEST: Buffer = Buffer.from([(3 << 3) + BYTES, 0]);

export interface WatchResponseEvent {
  type: 'put' | 'delete';
  kv: KeyValue;
}

export interface WatchResponse {
  header: Header;
  created: boolean;
  canceled: boolean;
  compactRevision: bigint;
  cancelReason: string;
  fragment: boolean;
  events: WatchResponseEvent[];
}

function decodeEvent(r: Reader): WatchResponseEvent {
  const event: WatchResponseEvent = { type: 'put', kv: { key: EMPTY, value: EMPTY, modRevision: 0n, lease: '0' } };
  while (r.more) {
    const tag = r.varint();
    if (tag === (1 << 3) + VARINT) event.type = r.varint() === 1 ? 'delete' : 'put';
    else if (tag === (2 << 3) + BYTES) event.kv = decodeKeyValue(r.embedded());
    else r.skip(tag & 7);
  }
  return event;
}

export function decodeWatchResponse(buf: Buffer): WatchResponse {
  const r = new Reader(buf);
  const res: WatchResponse = { header: { revision: 0n, clusterId: '0' }, created: false, canceled: false, compactRevision: 0n, cancelReason: '', fragment: false, events: [] };
  while (r.more) {
    const tag = r.varint();
    if (tag === (1 << 3) + BYTES) res.header = decodeHeader(r.embedded());
    else if (tag === (3 << 3) + VARINT) res.created = r.varint() !== 0;
    else if (tag === (4 << 3) + VARINT) res.canceled = r.varint() !== 0;
    else if (tag === (5 << 3) + VARINT) res.compactRevision = r.int64();
    else if (tag === (6 << 3) + BYTES) res.cancelReason = r.bytes().toString('utf8');
    else if (tag === (7 << 3) + VARINT) res.fragment = r.varint() !== 0;
    else if (tag === (11 << 3) + BYTES) res.events.push(decodeEvent(r.embedded()));
    else r.skip(tag & 7);
  }
  return res;
}

/** A message of int64 fields only (lease requests): [field number, value], zero values left out. */
export function encodeInt64Fields(fields: readonly [number, bigint][]): Buffer {
  const present = fields.filter(([, v]) => v !== 0n);
  const w = new Writer(present.reduce((size, [, v]) => size + 1 + bigVarintSize(v), 0));
  for (const [field, v] of present) w.tag(field, VARINT).bigVarint(v);
  return w.done();
}

/** A message of string fields only (AuthenticateRequest): [field number, value]. */
export function encodeStringFields(fields: readonly [number, string][]): Buffer {
  const bytes = fields.map(([field, v]) => [field, Buffer.from(v, 'utf8')] as const);
  const w = new Writer(bytes.reduce((size, [, b]) => size + fieldSize(b.length), 0));
  for (const [field, b] of bytes) w.bytes(field, b);
  return w.done();
}

/** The int64 fields of a reply (lease replies; the header, field 1, is skipped), by field number; absent ones are 0. */
export function decodeInt64Fields(buf: Buffer): Map<number, bigint> {
  const r = new Reader(buf);
  const fields = new Map<number, bigint>();
  while (r.more) {
    const tag = r.varint();
    if ((tag & 7) === VARINT) fields.set(tag >>> 3, r.int64());
    else r.skip(tag & 7);
  }
  return fields;
}

/** One string field of a reply (AuthenticateResponse.token), '' when absent. */
export function decodeStringField(buf: Buffer, field: number): string {
  const r = new Reader(buf);
  let value = '';
  while (r.more) {
    const tag = r.varint();
    if (tag === (field << 3) + BYTES) value = r.bytes().toString('utf8');
    else r.skip(tag & 7);
  }
  return value;
}
