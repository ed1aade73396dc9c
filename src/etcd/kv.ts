/** Range, txn and status calls, in etcd-sync's own types (Buffers, bigint revisions). */
import { AuthError, TooLargeError } from '../errors.js';
import { type NestedTxn, type RangeRequest, type RangeResponse, type TxnOp, decodeRangeResponse, decodeTxnResponse, encodeRangeRequest, encodeTxnRequest } from './codec.js';
import type { EtcdSide } from './connection.js';
import type { Compare, Header, KeyValue, WriteOp } from './types.js';

export type { Compare, Header, KeyValue, WriteOp } from './types.js';

async function range(side: EtcdSide, what: string, request: RangeRequest): Promise<RangeResponse> {
  try {
    return await side.unary(what, 'KV/Range', encodeRangeRequest(request), decodeRangeResponse);
  } catch (err) {
    throw withGrant(err, `read on ${describeRange(request.key, request.rangeEnd)}`);
  }
}

/** `'/registry/'`, `'/registry/' to '/registry0'` (the prefix), `'\x00' to the end`. */
function describeRange(key: Buffer, rangeEnd: Buffer | undefined): string {
  const text = (b: Buffer): string => JSON.stringify(b.toString('latin1'));
  if (rangeEnd === undefined || rangeEnd.length === 0) return `the key ${text(key)}`;
  if (rangeEnd.length === 1 && rangeEnd[0] === 0) return `every key from ${text(key)}`;
  return `the keys from ${text(key)} to ${text(rangeEnd)} (exclusive)`;
}

/** A permission error says which grant the side's user lacks. */
export function withGrant(err: unknown, grant: string): unknown {
  if (err instanceof AuthError && /permission denied/.test(err.message)) return new AuthError(`${err.message} (the user needs ${grant})`, { cause: err });
  return err;
}

/** Current revision and cluster ID of a side (a count-only read of its probe key). */
export async function readHeader(side: EtcdSide): Promise<Header> {
  return (await range(side, 'status', { key: side.probeKey, countOnly: true })).header;
}

/** How many keys [key, rangeEnd) holds at `revision` (a count-only read: no key or value crosses the wire). */
export async function countKeys(side: EtcdSide, request: { key: Buffer; rangeEnd: Buffer; revision?: bigint }): Promise<number> {
  return Number((await range(side, `count at revision ${request.revision ?? 'latest'}`, { ...request, countOnly: true })).count);
}

export async function readKey(side: EtcdSide, key: Buffer): Promise<KeyValue | undefined> {
  return (await range(side, 'get', { key })).kvs[0];
}

export interface RangePage {
  kvs: KeyValue[];
  more: boolean;
  header: Header;
}

export async function rangePage(
  side: EtcdSide,
  request: { key: Buffer; rangeEnd: Buffer; limit: number; revision?: bigint; keysOnly?: boolean },
): Promise<RangePage> {
  return range(side, `range at revision ${request.revision ?? 'latest'}`, request);
}

/** Keys of the first page, before the value sizes are known. */
const FIRST_PAGE_SIZE = 1000;
/**
 * Payload (keys + values) a page aims at once the first page has shown the average size. A scan
 * holds two pages a side, while V8 frees dropped Buffers only some 64 MB of external memory
 * later: larger pages raised a 1M-key check's peak RSS, smaller ones slowed the initial sync
 * (bench/HISTORY.md, "page bytes").
 */
export const PAGE_BYTES = 4 * 1024 * 1024;

/**
 * Keys to ask for in each page: about `pageBytes` of payload, at most `maxKeys`. The size
 * per key is the larger of the last page's average and half the estimate before it, and a
 * page asks for at most twice the keys of the one before: after a stretch of small values
 * (50,000 keys a page), a stretch of large ones should not arrive in one page of 50,000.
 */
export class PageSizer {
  /** Keys of the next page. */
  size: number;
  private bytesPerKey = 0;

  constructor(
    private readonly pageBytes: number,
    private readonly maxKeys: number,
  ) {
    this.size = Math.min(maxKeys, FIRST_PAGE_SIZE);
  }

  /** After a page: sizes the next one. A page of fewer than two keys says nothing of sizes. */
  observe(page: readonly KeyValue[]): void {
    if (page.length < 2) return;
    let bytes = 0;
    for (const kv of page) bytes += kv.key.length + kv.value.length;
    this.bytesPerKey = Math.max(1, bytes / page.length, this.bytesPerKey / 2);
    this.size = Math.max(1, Math.min(this.maxKeys, 2 * this.size, Math.floor(this.pageBytes / this.bytesPerKey)));
  }

  /** After a reply too large to receive. */
  halve(): boolean {
    if (this.size <= 1) return false;
    this.size = Math.max(1, Math.floor(this.size / 2));
    return true;
  }
}

/** Bytes after the common prefix that a key's position in the keyspace is read from. */
const POSITION_BYTES = 12;
const POSITION_LIMIT = 1n << BigInt(8 * POSITION_BYTES);
/** A bounded request holds about this many pages' worth of keys (see nextBound). */
const BOUND_PAGES = 1.5;
/** How much wider the next bound is after a request that found fewer than two keys. */
const EMPTY_WIDENING = 256;

function commonPrefixLength(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/** The key's POSITION_BYTES bytes from `offset` as a number (missing bytes are 0). */
function position(key: Buffer, offset: number): bigint {
  let v = 0n;
  for (let i = 0; i < POSITION_BYTES; i++) v = (v << 8n) | BigInt(key[offset + i] ?? 0);
  return v;
}

/** etcd's range_end `\0`: every key from `key` on. */
const isOpenEnd = (end: Buffer): boolean => end.length === 1 && end[0] === 0;

/** The first and last key of a page, and how many keys it held. */
export interface KeySample {
  first: Buffer;
  last: Buffer;
  keys: number;
}

/**
 * The range_end of a scan's next request from `from`: where about `targetKeys` keys lie, going
 * by the key density of `sample` (the first and last key of a recent page and how many keys it
 * held, at least two), widened by `widen`. etcd counts every key from the start to the range_end
 * of each limited request (etcd-io/etcd#16510): to the end of the prefix, P-key pages cost the
 * server N²/2P key visits in all; within bounds, 4.6x-6.6x fewer on the keyspaces of
 * test/scan-plan.test.ts. Always after `from` and never after `end`; a bound is only a
 * guess, so it decides what a request costs, never which keys a scan returns.
 */
export function nextBound(from: Buffer, end: Buffer, sample: KeySample | undefined, targetKeys: number, widen = 1): Buffer {
  if (sample === undefined || sample.keys < 2) return end;
  const { first, last } = sample;
  // Positions are read after the prefix that `from` shares with the sample, so that keys with a
  // long common prefix (/registry/configmaps/ns-1/...) still differ in them.
  let offset = commonPrefixLength(first, from);
  let span = position(last, offset) - position(first, offset);
  if (span < 1n) span = 1n;
  const scale = BigInt(Math.max(1, Math.ceil(targetKeys * widen)));
  const gaps = BigInt(sample.keys - 1);
  let step = (span * scale + gaps - 1n) / gaps;
  let next = position(from, offset) + step;
  // A step past every key with this prefix carries into the prefix: the same distance, read
  // from a byte earlier.
  while (next >= POSITION_LIMIT && offset > 0) {
    offset--;
    step = (step >> 8n) + 1n;
    next = position(from, offset) + step;
  }
  if (next >= POSITION_LIMIT) return end;
  const bound = Buffer.alloc(offset + POSITION_BYTES);
  from.copy(bound, 0, 0, offset);
  let v = next;
  for (let i = POSITION_BYTES - 1; i >= 0; i--) {
    bound[offset + i] = Number(v & 255n);
    v >>= 8n;
  }
  return isOpenEnd(end) || Buffer.compare(bound, end) < 0 ? bound : end;
}

/**
 * Where a scan's requests start and end. Each request after the first ends at a bound about
 * BOUND_PAGES pages past its start (nextBound), so that etcd's count of the range stays about a
 * page too; the pages of the requests cover [from, end) exactly, whatever the bounds.
 */
export class ScanPlan {
  private sample: KeySample | undefined;
  private widen = 1;
  /** The range_end of the request in flight. */
  bound: Buffer;

  constructor(private readonly end: Buffer) {
    this.bound = end;
  }

  /** After a page of the request in flight: the next request's start and bound, or undefined when the scan is done. */
  next(keys: readonly { key: Buffer }[], more: boolean, targetKeys: number): { from: Buffer; bound: Buffer } | undefined {
    const first = keys[0];
    const last = keys[keys.length - 1];
    if (keys.length >= 2 && first !== undefined && last !== undefined) {
      // Copies: a sample may outlive its page, and must not pin the whole reply.
      this.sample = { first: Buffer.from(first.key), last: Buffer.from(last.key), keys: keys.length };
      this.widen = 1;
    } else {
      this.widen *= EMPTY_WIDENING;
    }
    // More in this request's range: go on after its last key. None: go on at its bound.
    let from: Buffer;
    if (more && last !== undefined) from = Buffer.concat([last.key, Buffer.from([0])]);
    else if (this.bound !== this.end) from = this.bound;
    else return undefined;
    this.bound = nextBound(from, this.end, this.sample, targetKeys, this.widen);
    return { from, bound: this.bound };
  }
}

/**
 * Reads [key, rangeEnd) in key order, one page at a time, so that memory is bounded by
 * two pages (see PageSizer), and etcd's count per request by about a page (ScanPlan). A
 * page over the gRPC receive limit is asked again with half the limit. The next page is
 * requested while the caller works on the current one.
 */
export async function* scanPages(
  side: EtcdSide,
  request: { key: Buffer; rangeEnd: Buffer; revision?: bigint; pageSize: number; pageBytes?: number; signal?: AbortSignal },
  retry: <T>(what: string, fn: () => Promise<T>) => Promise<T>,
): AsyncGenerator<KeyValue[]> {
  const maxKeys = request.pageSize;
  const pageBytes = request.pageBytes ?? PAGE_BYTES;
  const pages = new PageSizer(pageBytes, maxKeys);
  const fetchPage = async (key: Buffer, rangeEnd: Buffer): Promise<RangePage> => {
    for (;;) {
      try {
        return await retry(`read ${side.name}`, () =>
          rangePage(side, { key, rangeEnd, limit: pages.size, ...(request.revision !== undefined ? { revision: request.revision } : {}) }),
        );
      } catch (err) {
        if (err instanceof TooLargeError && pages.halve()) continue;
        throw err;
      }
    }
  };
  const plan = new ScanPlan(request.rangeEnd);
  let pending: Promise<RangePage> | undefined = fetchPage(request.key, plan.bound);
  while (pending !== undefined) {
    const page: RangePage = await pending;
    pending = undefined;
    pages.observe(page.kvs);
    const next = plan.next(page.kvs, page.more, pages.size * BOUND_PAGES);
    if (next !== undefined) {
      pending = fetchPage(next.from, next.bound);
      // Avoid an unhandled rejection if the consumer stops before awaiting it.
      pending.catch(() => undefined);
    }
    if (page.kvs.length > 0) yield page.kvs;
    if (request.signal?.aborted) return;
  }
}


/**
 * etcd checks --max-txn-ops per level of nesting: a txn's ops (or compares) plus those of any
 * txn nested in it may not exceed the limit (etcd 3.4-3.6, checkTxnRequest). Nested txns of
 * half the limit each, in a txn of the other half, hold limit²/4 ops: 4096 under the default
 * 128. The standby applies them as one txn at one revision, like a flat one; a txn of 1,000 puts
 * costs etcd far less than eight of 127.
 */
export function txnCapacity(maxTxnOps: number): number {
  const inner = Math.floor(maxTxnOps / 2);
  return Math.max(maxTxnOps, inner * (maxTxnOps - inner));
}

/**
 * The ops as a txn's success list under etcd's per-level limit: flat when they fit, otherwise in
 * nested txns of half the limit. `compareCount` counts against the outer level too.
 */
export function nestOps(ops: readonly WriteOp[], maxTxnOps: number, compareCount = 0): (WriteOp | NestedTxn)[] {
  if (ops.length <= maxTxnOps && compareCount <= maxTxnOps) return [...ops];
  const inner = Math.floor(maxTxnOps / 2);
  const outer = Math.ceil(ops.length / inner);
  if (inner < 1 || Math.max(outer, compareCount) + inner > maxTxnOps) {
    throw new RangeError(`a txn of ${ops.length} ops and ${compareCount} compares exceeds what --max-txn-ops ${maxTxnOps} allows (${txnCapacity(maxTxnOps)} ops)`);
  }
  const nested: NestedTxn[] = [];
  for (let i = 0; i < ops.length; i += inner) nested.push({ type: 'txn', success: ops.slice(i, i + inner) });
  return nested;
}

/**
 * One transaction, nested when it has more ops than `maxTxnOps` (see txnCapacity); without a
 * limit it is sent flat (etcd-sync's few-op control txns: --max-txn-ops is at least 3). Returns
 * whether the compares held (and so whether the ops ran).
 */
export async function txn(side: EtcdSide, ops: WriteOp[], compares: Compare[] = [], maxTxnOps = Math.max(ops.length, compares.length)): Promise<{ succeeded: boolean; header: Header }> {
  try {
    const res = await side.unary(`txn of ${ops.length} ops`, 'KV/Txn', encodeTxnRequest(compares, nestOps(ops, maxTxnOps, compares.length)), decodeTxnResponse);
    return { succeeded: res.succeeded, header: res.header };
  } catch (err) {
    const keys = [...new Set([...ops, ...compares].map((o) => JSON.stringify(o.key.toString('latin1'))))];
    throw withGrant(err, `readwrite on ${keys.slice(0, 3).join(', ')}${keys.length > 3 ? ` and ${keys.length - 3} more keys` : ''}`);
  }
}

/**
 * Values of many keys (latest, or at `revision`), a txn of up to `maxTxnOps` range ops each (etcd
 * refuses more: "too many operations in txn request"); absent keys are not in the map (keyed by latin1).
 */
export async function getMany(side: EtcdSide, keys: readonly Buffer[], maxTxnOps: number, revision?: bigint): Promise<Map<string, KeyValue>> {
  const found = new Map<string, KeyValue>();
  const step = Math.max(1, maxTxnOps);
  for (let i = 0; i < keys.length; i += step) {
    const chunk = keys.slice(i, i + step);
    const reads = chunk.map((key): TxnOp => ({ type: 'range', request: { key, ...(revision !== undefined ? { revision } : {}) } }));
    const res = await side.unary(`get ${chunk.length} keys`, 'KV/Txn', encodeTxnRequest([], reads), decodeTxnResponse);
    for (const range of res.ranges) for (const kv of range.kvs) found.set(kv.key.toString('latin1'), kv);
  }
  return found;
}
