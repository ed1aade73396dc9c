/** Range, txn and status calls, in etcd-sync's own types (Buffers, bigint revisions). */
import { TooLargeError } from '../errors.js';
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

interface RawKv {
  key: Buffer;
  value: Buffer;
  mod_revision: string;
  lease: string;
}
interface RawHeader {
  revision: string;
  cluster_id: string;
}

function header(raw: RawHeader | undefined): Header {
  return { revision: BigInt(raw?.revision ?? '0'), clusterId: raw?.cluster_id ?? '0' };
}

function keyValue(raw: RawKv): KeyValue {
  return { key: raw.key, value: raw.value, modRevision: BigInt(raw.mod_revision), lease: raw.lease || '0' };
}

/** Current revision and cluster ID of a side (a one-key count-only range). */
export async function readHeader(side: EtcdSide): Promise<Header> {
  const res = await side.call('status', (c) => c.kv.range({ key: Buffer.from([0]), count_only: true, limit: 1 }));
  return header(res.header as unknown as RawHeader);
}

export async function readKey(side: EtcdSide, key: Buffer): Promise<KeyValue | undefined> {
  const res = await side.call('get', (c) => c.kv.range({ key }));
  const kv = (res.kvs as unknown as RawKv[])[0];
  return kv === undefined ? undefined : keyValue(kv);
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
  const res = await side.call(`range at revision ${request.revision ?? 'latest'}`, (c) =>
    c.kv.range({
      key: request.key,
      range_end: request.rangeEnd,
      limit: request.limit,
      ...(request.revision !== undefined ? { revision: request.revision.toString() } : {}),
      ...(request.keysOnly ? { keys_only: true } : {}),
    }),
  );
  return {
    kvs: (res.kvs as unknown as RawKv[]).map(keyValue),
    more: res.more,
    header: header(res.header as unknown as RawHeader),
  };
}

export const DEFAULT_PAGE_SIZE = 1000;

/**
 * Reads [key, rangeEnd) in key order, one page at a time, so that memory is bounded by
 * a page. A page over the gRPC receive limit is asked again with half the limit. The
 * next page is requested while the caller works on the current one.
 */
export async function* scanPages(
  side: EtcdSide,
  request: { key: Buffer; rangeEnd: Buffer; revision?: bigint; pageSize?: number; signal?: AbortSignal },
  retry: <T>(what: string, fn: () => Promise<T>) => Promise<T>,
): AsyncGenerator<KeyValue[]> {
  let pageSize = request.pageSize ?? DEFAULT_PAGE_SIZE;
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
      pending = fetchPage(Buffer.concat([last.key, Buffer.from([0])]));
      // Avoid an unhandled rejection if the consumer stops before awaiting it.
      pending.catch(() => undefined);
    }
    if (page.kvs.length > 0) yield page.kvs;
    if (request.signal?.aborted) return;
  }
}

function rawOp(op: WriteOp): object {
  if (op.type === 'put') {
    return { request_put: { key: op.key, value: op.value, ...(op.lease && op.lease !== '0' ? { lease: op.lease } : {}) } };
  }
  return { request_delete_range: { key: op.key } };
}

function rawCompare(c: Compare): object {
  const out: Record<string, unknown> = { key: c.key, target: c.target, result: c.result };
  if (c.target === 'Value') out.value = c.value ?? Buffer.alloc(0);
  if (c.target === 'Version') out.version = (c.version ?? 0n).toString();
  if (c.target === 'Create') out.create_revision = (c.version ?? 0n).toString();
  if (c.target === 'Mod') out.mod_revision = (c.version ?? 0n).toString();
  return out;
}

/** One transaction. Returns whether the compares held (and so whether the ops ran). */
export async function txn(side: EtcdSide, ops: WriteOp[], compares: Compare[] = []): Promise<{ succeeded: boolean; header: Header }> {
  const res = await side.call(`txn of ${ops.length} ops`, (c) =>
    c.kv.txn({ compare: compares.map(rawCompare), success: ops.map(rawOp), failure: [] } as never),
  );
  return { succeeded: res.succeeded, header: header(res.header as unknown as RawHeader) };
}

/** Keys per multi-get txn (under etcd's default --max-txn-ops of 128). */
const GET_MANY_CHUNK = 100;

/** Values of many keys (latest, or at `revision`), a txn of range ops per 100 keys; absent keys are not in the map (keyed by latin1). */
export async function getMany(side: EtcdSide, keys: readonly Buffer[], revision?: bigint): Promise<Map<string, KeyValue>> {
  const at = revision === undefined ? {} : { revision: revision.toString() };
  const found = new Map<string, KeyValue>();
  for (let i = 0; i < keys.length; i += GET_MANY_CHUNK) {
    const chunk = keys.slice(i, i + GET_MANY_CHUNK);
    const res = await side.call(`get ${chunk.length} keys`, (c) =>
      c.kv.txn({ compare: [], success: chunk.map((key) => ({ request_range: { key, ...at } })), failure: [] } as never),
    );
    for (const response of res.responses as unknown as { response_range?: { kvs: RawKv[] } }[]) {
      for (const raw of response.response_range?.kvs ?? []) found.set(raw.key.toString('latin1'), keyValue(raw));
    }
  }
  return found;
}
