/**
 * The checkpoint record: the last primary revision applied to the standby, kept in one standby
 * key outside the synced prefix and written in the same txn as the data it covers. So at every
 * txn boundary the standby holds the primary's image at the recorded revision (the invariant
 * `check` compares at, docs/architecture.md). This module alone writes and parses the record,
 * for the engine, `check` and the control commands.
 */
import type { EtcdSide } from '../etcd/connection.js';
import { type Compare, type WriteOp, rangePage } from '../etcd/kv.js';
import { FencedError, describeError } from '../errors.js';
import type { Logger } from 'pino';
import type { StandbyWriter } from './writer.js';

export interface Checkpoint {
  revision: bigint;
  primaryClusterId: string;
  /**
   * When the record was written (RFC 3339): the standby holds the primary as it was then, so
   * after a failover the primary's writes after this time are what was lost. Absent in records
   * of older versions.
   */
  at?: string;
}

/** The record as stored: JSON; `write` makes every value unique (see CheckpointChain). */
interface StoredCheckpoint {
  revision: string;
  primaryClusterId: string;
  at?: string;
  write?: string;
}

export function encodeCheckpoint(checkpoint: Checkpoint, write: number): Buffer {
  const stored: StoredCheckpoint = {
    revision: checkpoint.revision.toString(),
    primaryClusterId: checkpoint.primaryClusterId,
    at: checkpoint.at ?? new Date().toISOString(),
    write: String(write),
  };
  return Buffer.from(JSON.stringify(stored));
}

/** The record in a stored value; undefined when the value is not one. */
export function decodeCheckpoint(value: Buffer): Checkpoint | undefined {
  try {
    const parsed = JSON.parse(value.toString()) as Partial<StoredCheckpoint>;
    if (typeof parsed.revision !== 'string' || !/^\d+$/.test(parsed.revision)) return undefined;
    return { revision: BigInt(parsed.revision), primaryClusterId: String(parsed.primaryClusterId), ...(typeof parsed.at === 'string' ? { at: parsed.at } : {}) };
  } catch {
    return undefined;
  }
}

export interface StoredRecord {
  /** undefined: no checkpoint key, or a value that is not a checkpoint (`value` says which). */
  checkpoint: Checkpoint | undefined;
  /** The key's value as stored; undefined when the key is absent. */
  value: Buffer | undefined;
  /** The standby's revision when it was read: the standby holds the primary at `checkpoint.revision` there. */
  standbyRevision: bigint;
}

/** Reads the standby's checkpoint key, with the standby revision it was read at. */
export async function readCheckpoint(standby: EtcdSide, key: Buffer): Promise<StoredRecord> {
  const page = await rangePage(standby, { key, rangeEnd: Buffer.concat([key, Buffer.from([0])]), limit: 1 });
  const value = page.kvs[0]?.value;
  return { checkpoint: value === undefined ? undefined : decodeCheckpoint(value), value: value === undefined ? undefined : Buffer.from(value), standbyRevision: page.header.revision };
}

/** The put of etcd-sync's checkpoint key. */
export type CheckpointPut = Extract<WriteOp, { type: 'put' }>;

/**
 * The engine's side of the record: which primary revision is applied and which is recorded,
 * and the value the next chained streaming txn must find (each compares the checkpoint with the
 * exact value the txn before it wrote, so that txns in flight apply only in order).
 */
export class CheckpointChain {
  /** Every primary event at or below this revision is applied on the standby. */
  appliedRevision = 0n;
  /** Last revision recorded in the checkpoint key. */
  checkpointedRevision = 0n;
  /** Numbers checkpoint values; starts at the clock so that a restarted process does not repeat one. */
  private writes = Date.now() * 1000;
  /** The checkpoint value as the standby holds it after etcd-sync's last write (undefined: none yet). */
  private chainValue: Buffer | undefined;
  /** The primary cluster the record belongs to (known after the preflight). */
  primaryClusterId = '';

  constructor(
    readonly key: Buffer,
    private readonly standby: EtcdSide,
    private readonly writer: StandbyWriter,
    private readonly log: Logger,
  ) {}

  /** The put recording `revision`; every value is unique, so parts of one revision split over txns chain too. */
  op(revision: bigint): CheckpointPut {
    return { type: 'put', key: this.key, value: encodeCheckpoint({ revision, primaryClusterId: this.primaryClusterId }, ++this.writes) };
  }

  /**
   * Makes `op` the value the next txn chains on. Returns the compare for a txn carrying `op`
   * when `chained`: it applies only on top of the checkpoint written last.
   */
  chainOn(op: CheckpointPut, chained: boolean): Compare[] {
    const expected = this.chainValue;
    this.chainValue = op.value;
    if (!chained) return [];
    return [
      expected === undefined
        ? { key: this.key, target: 'Version', result: 'Equal', version: 0n }
        : { key: this.key, target: 'Value', result: 'Equal', value: expected },
    ];
  }

  /** After a txn carrying `op` for `revision` has applied. */
  recorded(revision: bigint, op: CheckpointPut): void {
    if (revision > this.checkpointedRevision) this.checkpointedRevision = revision;
    this.chainValue = op.value;
  }

  /** Writes data ops and the checkpoint in one txn (retrying while the standby is unreachable). */
  async apply(ops: WriteOp[], revision: bigint): Promise<void> {
    const op = this.op(revision);
    await this.writer.write(ops, [op]);
    // Exact for sequential callers; after the concurrent txns of a diff, load() reads it again.
    this.recorded(revision, op);
  }

  /**
   * Reads the standby's checkpoint as the value the next streaming txn must find. Txns of a
   * pipeline that failed may have been applied after all: a checkpoint past appliedRevision
   * says so (it is written atomically with the data), and streaming resumes after it.
   */
  async load(): Promise<void> {
    const { checkpoint, value } = await readCheckpoint(this.standby, this.key);
    this.chainValue = value;
    if (!checkpoint || checkpoint.primaryClusterId !== this.primaryClusterId) return;
    if (checkpoint.revision > this.appliedRevision) {
      this.appliedRevision = checkpoint.revision;
      this.checkpointedRevision = checkpoint.revision;
    } else if (checkpoint.revision < this.checkpointedRevision) {
      // The standby went back in time (restored from an older backup, or another writer): what
      // it holds is the primary at its own checkpoint. Resume from there, so that the writes
      // (deletes too) since then arrive again.
      this.log.warn({ from: this.checkpointedRevision.toString(), to: checkpoint.revision.toString() }, `resync: standby checkpoint went back from ${this.checkpointedRevision} to ${checkpoint.revision}`);
      this.appliedRevision = checkpoint.revision;
      this.checkpointedRevision = checkpoint.revision;
    }
  }

  /** Records appliedRevision when only writes outside the scope (or none) moved it; a failure is logged, a fence thrown. */
  async writeIfBehind(): Promise<void> {
    if (this.appliedRevision <= this.checkpointedRevision) return;
    try {
      const op = this.op(this.appliedRevision);
      await this.writer.write([], [op]);
      this.recorded(this.appliedRevision, op);
    } catch (err) {
      if (err instanceof FencedError) throw err;
      this.log.warn({ err: describeError(err) }, 'could not record the checkpoint');
    }
  }
}
