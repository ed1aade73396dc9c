/**
 * The one way etcd-sync writes into the standby: leases mapped, txns retried while the standby
 * is unreachable, and each txn's standby revision remembered so that the self-healer can tell
 * etcd-sync's own writes from everybody else's.
 */
import type { Logger } from 'pino';
import type { EtcdSide } from '../etcd/connection.js';
import { type Compare, type WriteOp, scanPages, txn, txnCapacity } from '../etcd/kv.js';
import { prefixEnd } from '../scope.js';
import { OpChunker } from './batch.js';
import type { LeaseMapper } from './leases.js';
import { withRetry } from './retry.js';
import { RequestTooLargeError, describeError } from '../errors.js';
import { keyText } from '../diff/report.js';

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
  /**
   * Where a key the standby refuses even alone is recorded (prefix + key), for `check` and the
   * next leader; without it, it is only logged and counted.
   */
  unreplicablePrefix?: Buffer;
  /** Every put that was written (e.g. to verify encrypted values). */
  onPut?: (key: Buffer, value: Buffer) => void;
  /** Seconds each write txn took, retries included. */
  onTxn?: (seconds: number) => void;
}

/** A key whose write the standby refuses even alone (larger than its --max-request-bytes). */
export interface UnreplicableKey {
  key: Buffer;
  /** The value's size. */
  bytes: number;
  reason: string;
  /** When it was first refused (ms since epoch). */
  since: number;
}

/** An unreplicable key's record: its value as stored under WriterHooks.unreplicablePrefix. */
export interface UnreplicableRecord {
  bytes: number;
  reason: string;
  at: string;
}

export class StandbyWriter {
  /** Keys the standby refused even alone: skipped, so that everything else is replicated; a later write of the key that fits heals it. */
  readonly unreplicable = new Map<string, UnreplicableKey>();
  /**
   * Why the standby takes no writes now (unreachable, NOSPACE alarm), since when: set while a
   * write is being retried, cleared by the next write that succeeds.
   */
  unavailable: { reason: string; since: number } | undefined;
  private readonly ownRevisions = new Set<bigint>();
  /** Txns sent and not answered yet. */
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(
    private readonly standby: EtcdSide,
    private readonly leases: LeaseMapper,
    private readonly log: Logger,
    private readonly signal: () => AbortSignal,
    /** The standby etcd's --max-txn-ops: the limit per level of a txn (see txnCapacity). */
    readonly maxTxnOps: number,
    private readonly hooks: WriterHooks = {},
  ) {}

  /** Loads the unreplicable keys recorded in the standby (by an earlier leader), so that a later write of one heals its record. */
  async loadUnreplicable(): Promise<void> {
    const prefix = this.hooks.unreplicablePrefix;
    if (!prefix) return;
    for await (const page of scanPages(this.standby, { key: prefix, rangeEnd: prefixEnd(prefix), pageSize: 10_000 }, (what, fn) => this.retry(what, fn))) {
      for (const kv of page) {
        const key = Buffer.from(kv.key.subarray(prefix.length));
        try {
          const record = JSON.parse(kv.value.toString()) as Partial<UnreplicableRecord>;
          this.unreplicable.set(key.toString('latin1'), { key, bytes: Number(record.bytes ?? 0), reason: String(record.reason ?? ''), since: Date.parse(String(record.at)) || Date.now() });
        } catch {
          // Not a record of etcd-sync's: left alone.
        }
      }
    }
  }

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
    return withRetry(what, fn, { log: this.log, signal: this.signal(), onRetry: (err) => (this.unavailable ??= { reason: describeError(err), since: Date.now() }) });
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
    // An op the standby refused even alone was skipped (unreplicable): not written.
    const wrote = (ops: WriteOp[]): void => void written.push(...ops.filter((op) => !this.unreplicable.has(op.key.toString('latin1'))));
    const guarded = async (chunk: WriteOp[]): Promise<void> => {
      if (await this.write(chunk, [], chunk.map((op) => unchanged(op.key)))) wrote(chunk);
      else if (chunk.length > 1) for (const op of chunk) if (await this.write([op], [], [unchanged(op.key)])) wrote([op]);
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
      if (!(err instanceof RequestTooLargeError) || mapped.length === 0) throw err;
    }
    // Over the standby's --max-request-bytes together (a value near the primary's own limit does
    // not fit beside the compares and the checkpoint): each op alone, then the bookkeeping. The
    // checkpoint comes last, so a crash in between replays them (puts are idempotent). An op too
    // large even alone cannot be replicated: skipped and recorded, never fatal.
    for (const op of mapped) {
      try {
        if (!(await this.txn([op], compares))) return false;
      } catch (err) {
        if (!(err instanceof RequestTooLargeError)) throw err;
        await this.recordUnreplicable(op, err);
      }
    }
    return bookkeeping.length === 0 || (await this.txn(bookkeeping, compares));
  }

  private async recordUnreplicable(op: WriteOp, err: Error): Promise<void> {
    const id = op.key.toString('latin1');
    if (this.unreplicable.has(id)) return;
    const bytes = op.type === 'put' ? op.value.length : 0;
    const reason = describeError(err);
    this.unreplicable.set(id, { key: Buffer.from(op.key), bytes, reason, since: Date.now() });
    this.log.error(
      { key: keyText(op.key), bytes, err: reason },
      "unreplicable key: the standby refuses its write even alone; skipped, everything else goes on (give the standby's etcd a --max-request-bytes of at least the primary's plus 64 KiB)",
    );
    const prefix = this.hooks.unreplicablePrefix;
    if (prefix) {
      const record: UnreplicableRecord = { bytes, reason, at: new Date().toISOString() };
      await this.txn([{ type: 'put', key: Buffer.concat([prefix, op.key]), value: Buffer.from(JSON.stringify(record)) }], []);
    }
  }

  /** After a txn with `ops` applied: keys of it that were unreplicable are healed. */
  private async healedUnreplicable(ops: readonly WriteOp[]): Promise<void> {
    const healed = ops.filter((op) => this.unreplicable.delete(op.key.toString('latin1')));
    if (healed.length === 0) return;
    this.log.info({ keys: healed.map((op) => keyText(op.key)) }, 'unreplicable key healed: a later write of it reached the standby');
    const prefix = this.hooks.unreplicablePrefix;
    if (prefix) await this.txn(healed.map((op): WriteOp => ({ type: 'delete', key: Buffer.concat([prefix, op.key]) })), []);
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
    if (this.unavailable) {
      this.log.info({ outageSeconds: Math.round((Date.now() - this.unavailable.since) / 1000), reason: this.unavailable.reason }, 'the standby takes writes again');
      this.unavailable = undefined;
    }
    this.hooks.onTxn?.((performance.now() - started) / 1000);
    if (result.succeeded) {
      this.remember(result.header.revision);
      if (this.unreplicable.size > 0) await this.healedUnreplicable(ops);
    } else if (fence) await fence.verify();
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
