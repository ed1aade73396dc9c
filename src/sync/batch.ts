/**
 * Pure batching rules for writes into the standby. etcd limits a txn to --max-txn-ops
 * operations and --max-request-bytes bytes, and rejects the same key twice in one txn.
 */
import type { WriteOp } from '../etcd/kv.js';
import type { WatchEvent } from '../etcd/watch.js';

export interface BatchLimits {
  /** Data operations per txn (etcd-sync's own checkpoint op comes on top). */
  maxOps: number;
  /** Approximate payload bytes per txn (keys + values). */
  maxBytes: number;
}

export function opBytes(op: WriteOp): number {
  return op.key.length + (op.type === 'put' ? op.value.length : 0) + 16;
}

export interface EventBatch {
  /** One op per key: the last write to a key in the batch wins. */
  ops: WriteOp[];
  /** How many events from the head of the input the batch consumed. */
  consumed: number;
  /**
   * Every event at or below this revision is in `ops` (or out of scope): the checkpoint
   * to record with the txn. Lower than the last consumed event's revision when one
   * revision had to be split over several txns.
   */
  throughRevision: bigint;
}

function keyId(key: Buffer): string {
  return key.toString('latin1');
}

/**
 * Takes as many whole revisions from the head of `events` (in revision order) as fit the
 * limits, coalescing writes to the same key. A revision bigger than one txn is split, and
 * then the batch checkpoints the revision before it, so that a crash between the parts
 * replays the whole revision.
 *
 * `toOp` maps an event to its write, or undefined when the event is out of scope.
 */
export function takeEventBatch(
  events: readonly WatchEvent[],
  limits: BatchLimits,
  toOp: (event: WatchEvent) => WriteOp | undefined,
): EventBatch {
  const byKey = new Map<string, WriteOp>();
  let bytes = 0;
  let i = 0;
  let throughRevision = 0n;
  while (i < events.length) {
    const revision = (events[i] as WatchEvent).modRevision;
    let j = i;
    while (j < events.length && (events[j] as WatchEvent).modRevision === revision) j++;
    // Each op with the index of its event, so that a split knows where to resume.
    const group: { index: number; op: WriteOp }[] = [];
    for (let k = i; k < j; k++) {
      const op = toOp(events[k] as WatchEvent);
      if (op !== undefined) group.push({ index: k, op });
    }
    let newKeys = 0;
    let addBytes = 0;
    const seen = new Set<string>();
    for (const { op } of group) {
      const id = keyId(op.key);
      if (!byKey.has(id) && !seen.has(id)) newKeys++;
      seen.add(id);
      addBytes += opBytes(op);
    }
    const fits = byKey.size + newKeys <= limits.maxOps && bytes + addBytes <= limits.maxBytes;
    if (!fits && byKey.size > 0) break;
    if (!fits) {
      // This revision alone is larger than one txn: take what fits, checkpoint the one before,
      // and resume at the first event not taken (or after the revision when all fit after all).
      let taken = 0;
      for (const { op } of group) {
        const size = opBytes(op);
        if (byKey.size > 0 && (byKey.size + 1 > limits.maxOps || bytes + size > limits.maxBytes)) break;
        byKey.set(keyId(op.key), op);
        bytes += size;
        taken++;
      }
      const firstLeft = group[taken];
      return firstLeft === undefined
        ? { ops: [...byKey.values()], consumed: j, throughRevision: revision }
        : { ops: [...byKey.values()], consumed: firstLeft.index, throughRevision: revision - 1n };
    }
    for (const { op } of group) {
      byKey.set(keyId(op.key), op);
    }
    bytes += addBytes;
    throughRevision = revision;
    i = j;
  }
  return { ops: [...byKey.values()], consumed: i, throughRevision };
}

/**
 * The first events of `events`, at least `count` of them (or all), never ending inside a
 * revision: a batch must not checkpoint a revision it has only part of.
 */
export function headOfWholeRevisions(events: readonly WatchEvent[], count: number): readonly WatchEvent[] {
  if (events.length <= count) return events;
  let end = count;
  while (end < events.length && (events[end] as WatchEvent).modRevision === (events[end - 1] as WatchEvent).modRevision) end++;
  return events.slice(0, end);
}

/** Groups independent writes (distinct keys, as a diff produces) into txn-sized chunks. */
export class OpChunker {
  private ops: WriteOp[] = [];
  private bytes = 0;

  constructor(private readonly limits: BatchLimits) {}

  /** Adds an op; returns a full chunk to write when this op did not fit in the current one. */
  add(op: WriteOp): WriteOp[] | undefined {
    const size = opBytes(op);
    let full: WriteOp[] | undefined;
    if (this.ops.length > 0 && (this.ops.length + 1 > this.limits.maxOps || this.bytes + size > this.limits.maxBytes)) {
      full = this.ops;
      this.ops = [];
      this.bytes = 0;
    }
    this.ops.push(op);
    this.bytes += size;
    return full;
  }

  /** The last, partly filled chunk. */
  flush(): WriteOp[] | undefined {
    if (this.ops.length === 0) return undefined;
    const out = this.ops;
    this.ops = [];
    this.bytes = 0;
    return out;
  }
}
