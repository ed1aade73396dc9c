/** Range, txn and status calls, in etcd-sync's own types (Buffers, bigint revisions). */
import { TooLargeError } from '../errors.js';
import { type RangeRequest, type RangeResponse, type TxnOp, decodeRangeResponse, decodeTxnResponse, encodeRangeRequest, encodeTxnRequest } from './codec.js';
import type { EtcdSide } from './connection.js';

export interface KeyValue {
  key: Buffer;
  value: Buffer;
  modRevision: bigint;
  /** Lease ID as etcd prints it (decimal string); `'0'` for none. */
  lease: string;
}

export type WriteOp =
  | { type: 'put'; key: Buffer; value: Buffer; lease?: string }
  | { type: 'delete'; key: Buffer };

export interface Compare {
  key: Buffer;
  /** Enum names as in the rpc.proto that etcd3 ships. */
  target: 'Value' | 'Version' | 'Mod' | 'Create' | 'Lease';
  result: 'Equal' | 'NotEqual' | 'Greater' | 'Less';
  value?: Buffer;
  version?: bigint;
}

export interface Header {
  revision: bigint;
  clusterId: string;
}

function range(side: EtcdSide, what: string, request: RangeRequest): Promise<RangeResponse> {
  return side.unary(what, 'KV/Range', encodeRangeRequest(request), decodeRangeResponse);
}

/** Current revision and cluster ID of a side (a one-key count-only range). */
export async function readHeader(side: EtcdSide): Promise<Header> {
  return (await range(side, 'status', { key: Buffer.from([0]), countOnly: true, limit: 1 })).header;
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

/** Most keys in one range page. */
export const DEFAULT_PAGE_SIZE = 50_000;
/** Keys of the first page, before the value sizes are known. */
const FIRST_PAGE_SIZE = 1000;
/** Payload (keys + values) a page aims at once the first page has shown the average size. */
export const DEFAULT_PAGE_BYTES = 8 * 1024 * 1024;

/**
 * Keys to ask for in the next page: about `pageBytes` of payload at the average size of
 * `page`, at most `maxKeys`. Large pages matter: etcd (3.4-3.6) counts every remaining key
 * of the range on each limited request (etcd-io/etcd#16510), so a scan in pages of P keys
 * costs the server N²/2P key visits; by bytes, memory stays bounded whatever the values.
 */
export function nextPageSize(page: readonly KeyValue[], pageBytes: number, maxKeys: number): number {
  if (page.length === 0) return Math.min(maxKeys, FIRST_PAGE_SIZE);
  let bytes = 0;
  for (const kv of page) bytes += kv.key.length + kv.value.length;
  const average = Math.max(1, bytes / page.length);
  return Math.max(1, Math.min(maxKeys, Math.floor(pageBytes / average)));
}

/**
 * Reads [key, rangeEnd) in key order, one page at a time, so that memory is bounded by
 * two pages (see nextPageSize). A page over the gRPC receive limit is asked again with
 * half the limit. The next page is requested while the caller works on the current one.
 */
export async function* scanPages(
  side: EtcdSide,
  request: { key: Buffer; rangeEnd: Buffer; revision?: bigint; pageSize?: number; pageBytes?: number; signal?: AbortSignal },
  retry: <T>(what: string, fn: () => Promise<T>) => Promise<T>,
): AsyncGenerator<KeyValue[]> {
  const maxKeys = request.pageSize ?? DEFAULT_PAGE_SIZE;
  const pageBytes = request.pageBytes ?? DEFAULT_PAGE_BYTES;
  let pageSize = nextPageSize([], pageBytes, maxKeys);
  const fetchPage = async (key: Buffer): Promise<RangePage> => {
    for (;;) {
      try {
        return await retry(`read ${side.name}`, () =>
          rangePage(side, { key, rangeEnd: request.rangeEnd, limit: pageSize, ...(request.revision !== undefined ? { revision: request.revision } : {}) }),
        );
      } catch (err) {
        if (err instanceof TooLargeError && pageSize > 1) {
          pageSize = Math.max(1, Math.floor(pageSize / 2));
          continue;
        }
        throw err;
      }
    }
  };
  let pending: Promise<RangePage> | undefined = fetchPage(request.key);
  while (pending !== undefined) {
    const page: RangePage = await pending;
    pending = undefined;
    const last = page.kvs[page.kvs.length - 1];
    if (page.more && last !== undefined) {
      pageSize = nextPageSize(page.kvs, pageBytes, maxKeys);
      pending = fetchPage(Buffer.concat([last.key, Buffer.from([0])]));
      // Avoid an unhandled rejection if the consumer stops before awaiting it.
      pending.catch(() => undefined);
    }
    if (page.kvs.length > 0) yield page.kvs;
    if (request.signal?.aborted) return;
  }
}

/** One transaction. Returns whether the compares held (and so whether the ops ran). */
export async function txn(side: EtcdSide, ops: WriteOp[], compares: Compare[] = []): Promise<{ succeeded: boolean; header: Header }> {
  const res = await side.unary(`txn of ${ops.length} ops`, 'KV/Txn', encodeTxnRequest(compares, ops), decodeTxnResponse);
  return { succeeded: res.succeeded, header: res.header };
}

/** Keys per multi-get txn (under etcd's default --max-txn-ops of 128). */
const GET_MANY_CHUNK = 100;

/** Values of many keys (latest, or at `revision`), a txn of range ops per 100 keys; absent keys are not in the map (keyed by latin1). */
export async function getMany(side: EtcdSide, keys: readonly Buffer[], revision?: bigint): Promise<Map<string, KeyValue>> {
  const found = new Map<string, KeyValue>();
  for (let i = 0; i < keys.length; i += GET_MANY_CHUNK) {
    const chunk = keys.slice(i, i + GET_MANY_CHUNK);
    const reads = chunk.map((key): TxnOp => ({ type: 'range', request: { key, ...(revision !== undefined ? { revision } : {}) } }));
    const res = await side.unary(`get ${chunk.length} keys`, 'KV/Txn', encodeTxnRequest([], reads), decodeTxnResponse);
    for (const range of res.ranges) for (const kv of range.kvs) found.set(kv.key.toString('latin1'), kv);
  }
  return found;
}
