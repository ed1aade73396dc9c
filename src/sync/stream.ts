/**
 * The stream pipeline: the primary's watch, from the applied revision + 1, turned into standby
 * txns of whole revisions, each carrying the checkpoint of its last revision. Up to
 * `streamTxnsInFlight` txns are sent without waiting, each comparing the checkpoint with the
 * value the txn before it writes, so etcd applies one only right after its predecessor and the
 * order holds whatever order they arrive in. Any failure of the stream resumes from the applied
 * revision; compaction surfaces to the engine (CompactedError) for a full resync.
 */
import { CheckpointChangedError, CompactedError, PrimaryChangedError, describeError } from '../errors.js';
import { type WriteOp, readHeader, readKey } from '../etcd/kv.js';
import { type WatchEvent, WatchStream } from '../etcd/watch.js';
import { type EventBatch, headOfWholeRevisions, opBytes, takeEventBatch } from './batch.js';
import type { CheckpointPut } from './checkpoint.js';
import type { SyncContext } from './context.js';
import { type DeleteBurst, DeleteBurstError } from './delete-guard.js';
import { AbortedError, delay } from './retry.js';

/** What the pipeline has done, for metrics and tests. */
export interface StreamCounters {
  /** Events applied to the standby, by type (out-of-scope events not counted). */
  eventsApplied: { put: number; delete: number };
  /** Streaming txns that arrived before their predecessor and were sent again. */
  streamResends: number;
  /** Watch streams that broke and were opened again from the applied revision. */
  watchRestarts: number;
  /** Replay windows fetched over their own watch (long gaps after a restart). */
  replayWindowsFetched: number;
}

export function newStreamCounters(): StreamCounters {
  return { eventsApplied: { put: 0, delete: 0 }, streamResends: 0, watchRestarts: 0, replayWindowsFetched: 0 };
}

/** Events the reader queues before it waits for the writer. */
const HIGH_WATER_EVENTS = 50_000;
/** How often a bounded follow (a replay) asks for progress, so that it learns it reached its end. */
const BOUNDED_PROGRESS_MS = 100;
/** Wait before opening the watch again after it broke. */
const WATCH_RESTART_DELAY_MS = 500;

/** A streaming txn in flight. */
interface StreamTxn {
  ops: WriteOp[];
  throughRevision: bigint;
  checkpoint: CheckpointPut;
  compares: ReturnType<SyncContext['checkpoint']['chainOn']>;
  held: Promise<boolean>;
  settled: boolean;
  /** Resolves (never rejects) once `held` has settled. */
  answered: Promise<void>;
}

export class StreamPipeline {
  constructor(
    private readonly ctx: SyncContext,
    readonly counters: StreamCounters,
  ) {}

  private get applied(): bigint {
    return this.ctx.checkpoint.appliedRevision;
  }

  /** Throws PrimaryChangedError when the primary is behind what was applied from it, or another cluster. */
  private checkPrimary(header: { revision: bigint; clusterId: string }): void {
    const { checkpoint } = this.ctx;
    if (header.clusterId !== checkpoint.primaryClusterId) {
      throw new PrimaryChangedError(
        `the primary is another etcd cluster now (cluster ID ${BigInt(checkpoint.primaryClusterId).toString(16)} → ${BigInt(header.clusterId).toString(16)}): replaced, or restored as a new cluster`,
      );
    }
    if (header.revision < checkpoint.appliedRevision) {
      throw new PrimaryChangedError(`the primary went back in time: its revision ${header.revision} is below the ${checkpoint.appliedRevision} applied from it (restored from an older backup?)`);
    }
  }

  /**
   * The delete guard's verdict on events just read (those past `until` are never applied here,
   * so not counted): where to cut, or undefined to take them all.
   */
  guard(events: readonly WatchEvent[], until?: bigint): { cut: number; burst: DeleteBurst } | undefined {
    const guard = this.ctx.guard;
    if (!guard) return undefined;
    if (until === undefined) return guard.admit(events);
    let end = 0;
    while (end < events.length && (events[end] as WatchEvent).modRevision <= until) end++;
    return guard.admit(end < events.length ? events.slice(0, end) : events);
  }

  /**
   * Once everything before the burst's revision is applied: records the revision before it as
   * applied (the watch covers the whole prefix, so the standby is the primary's image there) and
   * ends with DeleteBurstError. The stream and the replay's windows both stop here.
   */
  async stopBefore(burst: DeleteBurst): Promise<never> {
    const checkpoint = this.ctx.checkpoint;
    if (burst.heldRevision > checkpoint.appliedRevision) checkpoint.appliedRevision = burst.heldRevision;
    await checkpoint.writeIfBehind();
    throw new DeleteBurstError(burst);
  }

  /** The next txn's worth of whole revisions from the head of `events`, coalesced. */
  takeBatch(events: readonly WatchEvent[]): EventBatch {
    const maxOps = this.ctx.writer.opsPerTxn - 1;
    return takeEventBatch(headOfWholeRevisions(events, 10 * maxOps + 1024), { maxOps, maxBytes: this.ctx.options.maxTxnBytes }, (e) => this.eventOp(e));
  }

  /**
   * Watches the primary from appliedRevision + 1 and applies events in revision order,
   * reconnecting from the last applied revision after any failure. With `until`, stops once
   * every event up to it is applied and drops later ones.
   */
  async follow(until: bigint | undefined): Promise<void> {
    const { ctx } = this;
    while (!ctx.signal.aborted) {
      await ctx.retry('read checkpoint', () => ctx.checkpoint.load());
      if (until !== undefined && this.applied >= until) return;
      // A watch from a revision the primary has not reached is accepted and stays silent: the
      // primary is checked against what was applied before every (re)connect (a restored or
      // replaced primary restarts, which breaks the watch). Not on the watch's own answers: a
      // progress notification can trail what was applied already.
      this.checkPrimary(await ctx.retry('read primary revision', () => readHeader(ctx.primary)));
      const watch = await ctx.retry('watch primary', () =>
        WatchStream.open(
          ctx.primary,
          { key: ctx.scope.keyPrefix, rangeEnd: ctx.scope.rangeEnd, startRevision: this.applied + 1n, silenceTimeoutMs: ctx.options.primaryTimeoutMs },
          ctx.signal,
        ),
      );
      try {
        const done = await this.consume(watch, until);
        if (done) return;
      } catch (err) {
        if (err instanceof CompactedError || err instanceof AbortedError || err instanceof DeleteBurstError) throw err;
        if (!(err as { retryable?: boolean }).retryable) throw err;
        ctx.log.warn({ appliedRevision: this.applied.toString(), err: describeError(err) }, 'watch stream broke, resuming from applied revision');
        this.counters.watchRestarts++;
        await delay(WATCH_RESTART_DELAY_MS, ctx.signal);
      } finally {
        watch.close();
      }
    }
    await ctx.checkpoint.writeIfBehind();
  }

  /** Returns true when `until` was reached, false when the signal aborted. Throws on stream failure. */
  private async consume(watch: WatchStream, until: bigint | undefined): Promise<boolean> {
    const { ctx } = this;
    const checkpoint = ctx.checkpoint;
    const queue: WatchEvent[] = [];
    let progressRevision = 0n;
    let readerError: unknown;
    let readerDone = false;
    let wake: (() => void) | undefined;
    let drained: (() => void) | undefined;
    const notify = (): void => {
      wake?.();
      wake = undefined;
    };
    let lastEventAt = Date.now();
    /** The delete guard tripped: nothing from burst.burstRevision on is queued or read. */
    let burst: DeleteBurst | undefined;
    const reader = (async () => {
      try {
        for await (const message of watch.messages()) {
          if (message.kind === 'events') {
            const verdict = this.guard(message.events, until);
            if (verdict) {
              queue.push(...message.events.slice(0, verdict.cut));
              burst = verdict.burst;
              notify();
              return;
            }
            queue.push(...message.events);
            lastEventAt = Date.now();
            const last = message.events[message.events.length - 1];
            ctx.notePrimary(last && last.modRevision > message.headerRevision ? last.modRevision : message.headerRevision);
          } else if (message.revision > progressRevision) {
            progressRevision = message.revision;
            ctx.notePrimary(message.revision);
          }
          notify();
          while (queue.length > HIGH_WATER_EVENTS && !ctx.signal.aborted) {
            await new Promise<void>((resolve) => (drained = resolve));
          }
        }
      } catch (err) {
        readerError = err;
      } finally {
        readerDone = true;
        notify();
      }
    })();
    const onAbort = (): void => {
      watch.close();
      notify();
    };
    ctx.signal.addEventListener('abort', onAbort, { once: true });
    const idleProgressMs = ctx.options.idleProgressMs;
    const progressTimer = setInterval(
      () => {
        if (until !== undefined || Date.now() - lastEventAt >= idleProgressMs) watch.requestProgress();
      },
      until !== undefined ? BOUNDED_PROGRESS_MS : Math.max(BOUNDED_PROGRESS_MS, Math.floor(idleProgressMs / 2)),
    );
    const maxInFlight = ctx.options.streamTxnsInFlight;
    const pipeline: StreamTxn[] = [];
    try {
      for (;;) {
        if (queue.length > 0) {
          let limit = queue.length;
          if (until !== undefined) {
            limit = 0;
            while (limit < queue.length && (queue[limit] as WatchEvent).modRevision <= until) limit++;
          }
          // A second txn in flight only for a backlog of at least a full txn: below that, one
          // txn carries everything that arrived meanwhile, and concurrent txns would mostly
          // reach etcd out of order and be sent again.
          if (limit > 0 && (pipeline.length === 0 || (pipeline.length < maxInFlight && limit >= ctx.writer.opsPerTxn - 1))) {
            const batch = this.takeBatch(limit < queue.length ? queue.slice(0, limit) : queue);
            // A value too large to share a txn is written alone, then its checkpoint (see
            // StandbyWriter): no room for the chain compare, so only with nothing in flight.
            const alone = batch.ops.reduce((sum, op) => sum + opBytes(op), 0) > ctx.options.maxTxnBytes;
            if (!alone || pipeline.length === 0) {
              pipeline.push(this.send(batch, !alone));
              queue.splice(0, batch.consumed);
              if (queue.length <= HIGH_WATER_EVENTS) drained?.();
              continue;
            }
          }
        }
        const head = pipeline[0];
        if (head !== undefined) {
          if (!head.settled && pipeline.length < maxInFlight && !readerDone && !ctx.signal.aborted) {
            // Room for another txn: wait for a backlog worth sending, or complete the oldest.
            await Promise.race([head.answered, new Promise<void>((resolve) => (wake = resolve))]);
            continue;
          }
          pipeline.shift();
          await this.complete(head);
          if (ctx.signal.aborted) return false;
          continue;
        }
        if (burst && queue.length === 0) await this.stopBefore(burst);
        // Only events past `until` are left: the replay is complete.
        if (until !== undefined && queue.length > 0) {
          checkpoint.appliedRevision = until;
          return true;
        }
        if (queue.length === 0 && progressRevision > checkpoint.appliedRevision) {
          // Only writes outside the watched range (or none) happened up to progressRevision:
          // record it, so that a restart does not replay them or fall behind compaction.
          checkpoint.appliedRevision = until !== undefined && progressRevision > until ? until : progressRevision;
          ctx.notePrimary();
          await checkpoint.writeIfBehind();
        }
        if (until !== undefined && checkpoint.appliedRevision >= until) return true;
        if (ctx.signal.aborted) return false;
        if (readerDone) {
          if (readerError) throw readerError;
          return false;
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
      }
    } finally {
      clearInterval(progressTimer);
      ctx.signal.removeEventListener('abort', onAbort);
      watch.close();
      drained?.();
      // Txns still in flight settle before anyone reads the chain again (CheckpointChain.load).
      await Promise.all(pipeline.map((t) => t.answered));
      await reader;
    }
  }

  /** Sends a batch with its checkpoint; `chained`: guarded to apply only right after the txn before it. */
  send(batch: EventBatch, chained: boolean): StreamTxn {
    const checkpoint = this.ctx.checkpoint.op(batch.throughRevision);
    const compares = this.ctx.checkpoint.chainOn(checkpoint, chained);
    const held = this.ctx.writer.write(batch.ops, [checkpoint], compares);
    const txn: StreamTxn = { ops: batch.ops, throughRevision: batch.throughRevision, checkpoint, compares, held, settled: false, answered: Promise.resolve() };
    // Awaited in order by complete(); `answered` never rejects.
    txn.answered = held.then(
      () => void (txn.settled = true),
      () => void (txn.settled = true),
    );
    return txn;
  }

  /**
   * Waits for the oldest txn in flight. One that arrived before its predecessor did nothing
   * (its compare failed); the predecessor has applied by now, so it is sent again.
   */
  async complete(txn: StreamTxn): Promise<void> {
    const { ctx } = this;
    let held = await txn.held;
    if (!held) {
      this.counters.streamResends++;
      held = await ctx.writer.write(txn.ops, [txn.checkpoint], txn.compares);
    }
    // A txn whose answer was lost (a deadline after the commit) was retried and found its own checkpoint.
    if (!held) held = (await ctx.retry('read checkpoint', () => readKey(ctx.standby, ctx.checkpoint.key)))?.value.equals(txn.checkpoint.value) ?? false;
    if (!held) {
      throw new CheckpointChangedError(`the standby's checkpoint ${ctx.checkpoint.key.toString()} is not the one etcd-sync wrote last; resuming from it`);
    }
    const checkpoint = ctx.checkpoint;
    if (txn.throughRevision > checkpoint.appliedRevision) checkpoint.appliedRevision = txn.throughRevision;
    if (txn.throughRevision > checkpoint.checkpointedRevision) checkpoint.checkpointedRevision = txn.throughRevision;
    for (const op of txn.ops) this.counters.eventsApplied[op.type]++;
    ctx.notePrimary();
  }

  private eventOp(event: WatchEvent): WriteOp | undefined {
    if (!this.ctx.scope.inScope(event.key)) return undefined;
    if (event.type === 'delete') return { type: 'delete', key: event.key };
    return { type: 'put', key: event.key, value: event.value, lease: event.lease };
  }
}
