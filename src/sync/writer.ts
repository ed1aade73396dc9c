/**
 * The one way etcd-sync writes into the standby: leases mapped, txns retried while the standby
 * is unreachable, and each txn's standby revision remembered so that the self-healer can tell
 * etcd-sync's own writes from everybody else's.
 */
import type { Logger } from 'pino';
import type { EtcdSide } from '../etcd/connection.js';
import { type Compare, type WriteOp, txn, txnCapacity } from '../etcd/kv.js';
import { OpChunker } from './batch.js';
import type { LeaseMapper } from './leases.js';
import { withRetry } from './retry.js';

/** How many of its own recent standby revisions the writer remembers. */
const OWN_REVISIONS_KEPT = 100_000;

/** What makes a write allowed (leadership, no promote fence); carried by every txn. */
export interface Fence {
  compares(): Compare[];
  /** After a txn whose compares failed: throws FencedError when the fence is what failed. */
  verify(): Promise<void>;
}

export interface WriterHooks {
  fence?: Fence;
  /** Every put that was written (e.g. to verify encrypted values). */
  onPut?: (key: Buffer, value: Buffer) => void;
  /** Seconds each write txn took, retries included. */
  onTxn?: (seconds: number) => void;
}

export class StandbyWriter {
  private readonly ownRevisions = new Set<bigint>();
  /** Txns sent and not answered yet. */
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(
    private readonly standby: EtcdSide,
    private readonly leases: LeaseMapper,
    private readonly log: Logger,
    private readonly signal: () => AbortSignal,
    /** The standby etcd's --max-txn-ops: the limit per level of a txn (see txnCapacity). */
    private readonly maxTxnOps: number,
    private readonly hooks: WriterHooks = {},
  ) {}

  /** Ops one txn holds, checkpoint included (nested, see txnCapacity). */
  get opsPerTxn(): number {
    return txnCapacity(this.maxTxnOps);
  }

  /**
   * Ops one txn holds when each carries a compare of its own: compares cannot be nested away,
   * and the fence's count too.
   */
  get guardedOpsPerTxn(): number {
    return Math.max(1, this.maxTxnOps - (this.hooks.fence?.compares().length ?? 0));
  }

  private retry<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return withRetry(what, fn, { log: this.log, signal: this.signal() });
  }

  /** Replaces primary lease IDs by the standby leases that mirror them. */
  async mapLeases(ops: WriteOp[]): Promise<WriteOp[]> {
    const mapped: WriteOp[] = [];
    for (const op of ops) {
      if (op.type === 'put' && op.lease && op.lease !== '0') {
        const primaryLease = op.lease;
        const lease = await this.retry('map lease', () => this.leases.standbyLeaseFor(primaryLease));
        mapped.push({ ...op, lease });
      } else {
        mapped.push(op);
      }
    }
    return mapped;
  }

  /**
   * Writes `ops` (primary lease IDs) and `bookkeeping` (etcd-sync's own keys, e.g. the
   * checkpoint) in one txn. Returns whether `compares` held.
   */
  async write(ops: WriteOp[], bookkeeping: WriteOp[] = [], compares: Compare[] = []): Promise<boolean> {
    const mapped = await this.mapLeases(ops);
    const held = await this.writeMapped(mapped, bookkeeping, compares);
    const onPut = this.hooks.onPut;
    if (held && onPut) for (const op of ops) if (op.type === 'put') onPut(op.key, op.value);
    return held;
  }

  /**
   * Writes each op only if its key's standby copy was not modified after `standbyRevision` (a
   * copy changed since, by the stream or anyone, is newer and left alone), in txns as large as
   * the per-key guards allow; a txn whose guard fails is redone key by key. Returns the ops written.
   */
  async writeUnchangedSince(ops: readonly WriteOp[], standbyRevision: bigint, maxTxnBytes: number): Promise<WriteOp[]> {
    const unchanged = (key: Buffer): Compare => ({ key, target: 'Mod', result: 'Less', version: standbyRevision + 1n });
    const written: WriteOp[] = [];
    const guarded = async (chunk: WriteOp[]): Promise<void> => {
      if (await this.write(chunk, [], chunk.map((op) => unchanged(op.key)))) written.push(...chunk);
      else if (chunk.length > 1) for (const op of chunk) if (await this.write([op], [], [unchanged(op.key)])) written.push(op);
    };
    const chunker = new OpChunker({ maxOps: this.guardedOpsPerTxn, maxBytes: maxTxnBytes });
    for (const op of ops) {
      const full = chunker.add(op);
      if (full) await guarded(full);
    }
    const last = chunker.flush();
    if (last) await guarded(last);
    return written;
  }

  private async writeMapped(mapped: WriteOp[], bookkeeping: WriteOp[], compares: Compare[]): Promise<boolean> {
    try {
      return await this.txn([...mapped, ...bookkeeping], compares);
    } catch (err) {
      // A value close to etcd's request limit fits the primary's put but not with bookkeeping
      // beside it: write it alone, then the bookkeeping. A crash in between replays it (puts are idempotent).
      if (mapped.length !== 1 || bookkeeping.length === 0 || !/request is too large/.test(String((err as Error).message))) throw err;
      const held = await this.txn(mapped, compares);
      await this.txn(bookkeeping, compares);
      return held;
    }
  }

  /** One txn, tracked until its revision is remembered (see settled). */
  private txn(ops: WriteOp[], compares: Compare[]): Promise<boolean> {
    const written = this.txnOnce(ops, compares);
    this.inFlight.add(written);
    return written.finally(() => this.inFlight.delete(written));
  }

  private async txnOnce(ops: WriteOp[], compares: Compare[]): Promise<boolean> {
    const fence = this.hooks.fence;
    const all = fence ? [...compares, ...fence.compares()] : compares;
    const started = performance.now();
    const result = await this.retry('write to standby', () => txn(this.standby, ops, all, this.maxTxnOps));
    this.hooks.onTxn?.((performance.now() - started) / 1000);
    if (result.succeeded) this.remember(result.header.revision);
    else if (fence) await fence.verify();
    return result.succeeded;
  }

  private remember(revision: bigint): void {
    this.ownRevisions.add(revision);
    if (this.ownRevisions.size > OWN_REVISIONS_KEPT) {
      const oldest = this.ownRevisions.values().next().value;
      if (oldest !== undefined) this.ownRevisions.delete(oldest);
    }
  }

  /**
   * Resolves once every txn sent so far has been answered and its revision remembered: after
   * it, isOwn knows each of them.
   * (The standby's watch can show a txn's change before the txn's answer reaches etcd-sync.)
   */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.inFlight]);
  }

  /** Whether a standby revision is one of etcd-sync's own recent writes. */
  isOwn(revision: bigint): boolean {
    return this.ownRevisions.has(revision);
  }
}
