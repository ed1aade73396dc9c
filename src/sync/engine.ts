/**
 * The replication engine: owns the lifecycle and orchestrates the steps, each a module of its
 * own — the replay of the primary's history since the checkpoint (replay.ts), the full diff at a
 * pinned primary revision (full-diff.ts), streaming from the primary's watch (stream.ts), and in
 * the background the self-healer (heal.ts) and the periodic check (periodic-check.ts). Every
 * write txn carries the checkpoint of the last applied primary revision (checkpoint.ts).
 */
import type { Logger } from 'pino';
import { CompactedError, ConfigError, PrimaryChangedError, describeError } from '../errors.js';
import type { EtcdSide } from '../etcd/connection.js';
import { type Header, countKeys, readHeader } from '../etcd/kv.js';
import { type ControlKeys, type ControlRecord, controlKeys, describeRecord, readControl } from './control-keys.js';
import { DeleteBurstError, DeleteGuard, type HeldState } from './delete-guard.js';
import { recordHold, watchHeld } from './hold.js';
import type { CheckReport } from '../diff/report.js';
import type { Scope } from '../scope.js';
import { CheckpointChain, readCheckpoint } from './checkpoint.js';
import type { SyncContext, SyncOptions } from './context.js';
import { DiffProgress, type DiffStats, type SyncProgress, fullDiff } from './full-diff.js';
import { SelfHealer } from './heal.js';
import { LeaseMapper, leaseKeyPrefix } from './leases.js';
import { periodicChecks } from './periodic-check.js';
import type { PrimaryMonitor } from './primary-monitor.js';
import { replay } from './replay.js';
import { AbortedError, type Retry, delay, retrier } from './retry.js';
import { StreamPipeline, newStreamCounters } from './stream.js';
import { StandbyWriter } from './writer.js';

export type { SyncOptions } from './context.js';
export type { HeldState } from './delete-guard.js';
export type { DiffStats, SyncProgress } from './full-diff.js';

/** Refuses to sync an etcd into itself: the one check `run` makes before campaigning and the engine before its first read. */
export function refuseSameCluster(primary: Header, standby: Header): void {
  if (primary.clusterId === standby.clusterId) {
    throw new ConfigError(`primary and standby are the same etcd cluster (cluster ID ${BigInt(primary.clusterId).toString(16)}): refusing to sync an etcd into itself`);
  }
}

/** Longest pause before a full diff starts again after its revision was compacted. */
const COMPACTED_DIFF_MAX_PAUSE_MS = 10_000;

/** Why a full resync ran: etcd_sync_resyncs_total's reason label, every one exported from 0. */
export const RESYNC_REASONS = ['checkpoint-compacted', 'watch-compacted', 'compacted', 'primary-changed', 'other-primary'] as const;
export type ResyncReason = (typeof RESYNC_REASONS)[number];

export type SyncState = 'starting' | 'replaying' | 'initial-sync' | 'streaming' | 'resyncing' | 'held' | 'stopped';

export interface SyncHooks {
  onProgress?(progress: SyncProgress): void;
  onState?(state: SyncState): void;
}

export class SyncEngine implements SyncContext {
  state: SyncState = 'starting';
  lastDiff: DiffStats | undefined;
  /** The running full diff's progress, or the last one's. */
  diffProgress: DiffProgress | undefined;
  /** Full resyncs by reason. */
  readonly resyncs = new Map<ResyncReason, number>();
  /** The latest periodic check (with what it repaired). */
  lastCheck: CheckReport | undefined;
  healer: SelfHealer | undefined;
  /** Set while the delete guard holds the standby. */
  held: HeldState | undefined;
  readonly guard: DeleteGuard | undefined;
  /** In-scope keys of the primary: counted at the start, then each full diff's count (the guard's percentage). */
  private inScopeKeys = 0;
  private readonly keys: ControlKeys;

  readonly scope: Scope;
  readonly leases: LeaseMapper;
  readonly writer: StandbyWriter;
  readonly checkpoint: CheckpointChain;
  private readonly counters = newStreamCounters();
  private readonly pipeline: StreamPipeline;
  signal: AbortSignal = new AbortController().signal;
  retry: Retry;

  constructor(
    readonly primary: EtcdSide,
    readonly standby: EtcdSide,
    readonly monitor: PrimaryMonitor,
    readonly options: SyncOptions,
    readonly log: Logger,
    private readonly hooks: SyncHooks = {},
  ) {
    this.scope = options.scope;
    this.leases = new LeaseMapper(primary, standby, leaseKeyPrefix(options.checkpointKey), log);
    this.writer = new StandbyWriter(standby, this.leases, log, () => this.signal, options.maxTxnOps, options.writerHooks);
    this.checkpoint = new CheckpointChain(options.checkpointKey, standby, this.writer, log);
    this.pipeline = new StreamPipeline(this, this.counters);
    this.retry = retrier({ log, signal: this.signal });
    this.keys = controlKeys(options.checkpointKey);
    this.guard = options.deleteGuard ? new DeleteGuard(options.deleteGuard, this.scope.keyPrefix, () => this.inScopeKeys, (key) => this.scope.inScope(key)) : undefined;
  }

  /** Every primary event at or below this revision is applied on the standby. */
  get appliedRevision(): bigint {
    return this.checkpoint.appliedRevision;
  }

  /** Last revision recorded in the checkpoint key. */
  get checkpointedRevision(): bigint {
    return this.checkpoint.checkpointedRevision;
  }

  get primaryClusterId(): string {
    return this.checkpoint.primaryClusterId;
  }

  /** Events applied to the standby, by type (out-of-scope events not counted). */
  get eventsApplied(): { put: number; delete: number } {
    return this.counters.eventsApplied;
  }

  get watchRestarts(): number {
    return this.counters.watchRestarts;
  }

  /** Streaming txns that arrived before their predecessor and were sent again. */
  get streamResends(): number {
    return this.counters.streamResends;
  }

  /** Replay windows fetched over their own watch (long gaps after a restart). */
  get replayWindowsFetched(): number {
    return this.counters.replayWindowsFetched;
  }

  /** The primary's revision as last seen (watch headers, progress, reads, the probe). */
  get primaryRevision(): bigint {
    return this.monitor.primaryRevision;
  }

  /** The primary answered with `revision`; without one, the applied revision moved. */
  notePrimary(revision?: bigint): void {
    if (revision === undefined) this.monitor.refresh();
    else this.monitor.noteContact(revision);
  }

  private countResync(reason: ResyncReason): void {
    this.resyncs.set(reason, (this.resyncs.get(reason) ?? 0) + 1);
  }

  private setState(state: SyncState): void {
    this.state = state;
    this.hooks.onState?.(state);
  }

  private async primaryHeadRevision(): Promise<bigint> {
    return (await this.retry('read primary revision', () => readHeader(this.primary))).revision;
  }

  /**
   * The whole lifecycle until the signal aborts: checks, replay since the checkpoint,
   * full diff, then streaming; compaction anywhere falls back to a full resync.
   */
  async run(signal: AbortSignal): Promise<void> {
    this.signal = signal;
    this.retry = retrier({ log: this.log, signal });
    try {
      await this.preflight();
      const control = await this.retry('read control keys', () => readControl(this.standby, this.keys));
      const stored = await this.retry('read checkpoint', () => readCheckpoint(this.standby, this.options.checkpointKey));
      if (control.held) {
        // Held before a mass delete, by this replica or another, before a restart: still held.
        if (stored.checkpoint) {
          this.checkpoint.appliedRevision = stored.checkpoint.revision;
          this.checkpoint.checkpointedRevision = stored.checkpoint.revision;
        }
        // The self-healer restores leased keys too: with the existing lease mappings.
        await this.retry('load lease mappings', () => this.leases.load());
        await this.holdUntilStopped(control.held);
        return;
      }
      await this.prepareGuard(control.acceptDeletes, stored.checkpoint !== undefined);
      if (stored.value !== undefined && stored.checkpoint === undefined) this.log.warn('ignoring unreadable checkpoint');
      const checkpoint = stored.checkpoint;
      let revision = await this.primaryHeadRevision();
      if (checkpoint && checkpoint.primaryClusterId !== this.primaryClusterId) {
        this.log.warn({ checkpointCluster: checkpoint.primaryClusterId, primaryCluster: this.primaryClusterId }, 'resync: checkpoint belongs to another primary cluster');
        this.countResync('other-primary');
      } else if (checkpoint) {
        this.checkpoint.appliedRevision = checkpoint.revision;
        this.checkpoint.checkpointedRevision = checkpoint.revision;
        try {
          this.setState('replaying');
          await replay(this, this.pipeline, revision);
        } catch (err) {
          if (err instanceof DeleteBurstError) {
            await this.holdUntilStopped(await recordHold(this, this.keys, err.burst));
            return;
          }
          if (err instanceof CompactedError) {
            this.log.warn({ checkpoint: checkpoint.revision.toString(), err: describeError(err) }, 'resync: checkpoint compacted on the primary');
            this.countResync('checkpoint-compacted');
          } else if (err instanceof PrimaryChangedError) {
            this.log.warn({ checkpoint: checkpoint.revision.toString(), err: describeError(err) }, `resync: ${describeError(err)}; following the primary as it is now`);
            this.countResync('primary-changed');
            this.checkpoint.appliedRevision = 0n;
            this.checkpoint.checkpointedRevision = 0n;
          } else throw err;
          revision = await this.primaryHeadRevision();
        }
      }
      this.setState(checkpoint ? 'resyncing' : 'initial-sync');
      await this.retry('load lease mappings', () => this.leases.load());
      await this.writer.loadUnreplicable();
      await this.fullSync(revision);
      this.log.info({ ...this.lastDiff, revision: revision.toString() }, 'initial sync done');
      // Background work ends with streaming, whatever ends it, so run() can never hang on it.
      const backgroundStop = new AbortController();
      const stopBackground = (): void => backgroundStop.abort();
      signal.addEventListener('abort', stopBackground, { once: true });
      const background = this.startBackground(backgroundStop.signal);
      try {
        try {
          await this.streamUntilStopped();
        } catch (err) {
          if (!(err instanceof DeleteBurstError)) throw err;
          // The self-healer goes on (restoring the held image); the periodic check waits.
          await this.holdUntilStopped(await recordHold(this, this.keys, err.burst));
        }
      } finally {
        stopBackground();
        signal.removeEventListener('abort', stopBackground);
        await background;
      }
    } catch (err) {
      if (err instanceof AbortedError) return;
      throw err;
    } finally {
      this.leases.stop();
      this.setState('stopped');
    }
  }

  /**
   * The full diff at `revision` (see full-diff.ts); its stats become lastDiff. The primary can
   * compact the pinned revision mid-diff (Kubernetes compacts every 5 minutes): the diff starts
   * again at the primary's newer revision, after a growing pause, as often as it takes.
   */
  async fullSync(revision: bigint): Promise<DiffStats> {
    for (let attempt = 1; ; attempt++) {
      try {
        this.diffProgress = new DiffProgress(this.state, revision);
        this.lastDiff = await fullDiff(this, revision, this.options.prune, this.diffProgress, this.hooks.onProgress);
        this.inScopeKeys = this.lastDiff.equal + this.lastDiff.missing + this.lastDiff.different;
        return this.lastDiff;
      } catch (err) {
        if (!(err instanceof CompactedError)) throw err;
        const pauseMs = Math.min(COMPACTED_DIFF_MAX_PAUSE_MS, 200 * 2 ** Math.min(attempt - 1, 10));
        this.log.warn({ revision: revision.toString(), attempt, retryInMs: pauseMs, err: describeError(err) }, 'resync: the full diff revision was compacted on the primary; again at a newer revision');
        this.countResync('compacted');
        if (!(await delay(pauseMs, this.signal))) throw new AbortedError();
        revision = await this.primaryHeadRevision();
      }
    }
  }

  /** Streams, falling back to a full resync whenever the watch meets compaction. */
  private async streamUntilStopped(): Promise<void> {
    for (;;) {
      this.setState('streaming');
      try {
        this.log.info({ revision: (this.appliedRevision + 1n).toString() }, `streaming from revision ${this.appliedRevision + 1n}`);
        await this.pipeline.follow(undefined);
        return;
      } catch (err) {
        if (err instanceof CompactedError) {
          this.log.warn({ appliedRevision: this.appliedRevision.toString(), err: describeError(err) }, 'resync: watch revision compacted');
          this.countResync('watch-compacted');
        } else if (err instanceof PrimaryChangedError) {
          this.log.warn({ appliedRevision: this.appliedRevision.toString(), err: describeError(err) }, `resync: ${describeError(err)}; following the primary as it is now`);
          this.countResync('primary-changed');
          // Its history is another one: everything known of the old one goes.
          const head = await this.retry('read primary revision', () => readHeader(this.primary));
          this.checkpoint.primaryClusterId = head.clusterId;
          this.checkpoint.appliedRevision = 0n;
          this.checkpoint.checkpointedRevision = 0n;
          this.monitor.resetPrimary(head.revision);
        } else throw err;
        this.setState('resyncing');
        const revision = await this.primaryHeadRevision();
        await this.fullSync(revision);
        this.log.info({ revision: revision.toString() }, 'resync done');
      }
    }
  }

  /** Self-healing and the periodic check, until the engine stops. Failures are logged, never fatal. */
  private async startBackground(signal: AbortSignal): Promise<void> {
    const tasks: Promise<void>[] = [this.startHealer(signal, undefined)];
    if (this.options.checkIntervalMs > 0) tasks.push(periodicChecks(this, this.options.checkIntervalMs, signal, (report) => (this.lastCheck = report)));
    await Promise.all(tasks);
  }

  /** The self-healer until `signal` aborts (restoring the primary's version at `atRevision` while held). Never fails. */
  private async startHealer(signal: AbortSignal, atRevision: bigint | undefined): Promise<void> {
    if (this.options.healDelayMs < 0) return;
    const healer = new SelfHealer(this.primary, this.standby, this.scope, this.writer, this.log, { delayMs: this.options.healDelayMs, maxTxnBytes: this.options.maxTxnBytes });
    healer.atRevision = atRevision;
    this.healer = healer;
    try {
      const from = (await retrier({ log: this.log, signal })('read standby revision', () => readHeader(this.standby))).revision + 1n;
      await healer.run(from, signal);
    } catch (err) {
      if (!(err instanceof AbortedError)) this.log.error({ err: describeError(err) }, 'self-heal stopped');
    }
  }

  /**
   * The guard's starting point: with a checkpoint to replay from, the in-scope count the replay
   * is judged by (the primary's keys under the prefix, until the full diff counts exactly; an
   * initial sync streams nothing before its diff, so it needs none), and deletes the operator
   * accepted (`resume --accept-deletes`): every delete up to the primary's revision now passes;
   * the accept record is then removed.
   */
  private async prepareGuard(accepted: ControlRecord | undefined, replays: boolean): Promise<void> {
    const guard = this.guard;
    if (!(guard && replays) && !accepted) return;
    const head = await this.retry('read primary revision', () => readHeader(this.primary));
    if (guard && replays) this.inScopeKeys = await this.retry('count primary keys', () => countKeys(this.primary, { key: this.scope.keyPrefix, rangeEnd: this.scope.rangeEnd, revision: head.revision }));
    if (!accepted) return;
    if (guard) guard.exemptThrough = head.revision;
    this.log.warn({ acceptedBy: accepted.by, reason: accepted.reason, heldRevision: accepted.revision, throughRevision: head.revision.toString() }, `applying the held deletes: accepted ${describeRecord(accepted)}`);
    await this.writer.write([], [{ type: 'delete', key: this.keys.acceptDeletes }]);
  }

  /**
   * Holds: applies nothing, keeps the self-healer restoring the held image, and watches what
   * waits on the primary (deletes by resource and namespace) until the engine stops. An accept
   * or a pause ends the supervisor's phase, and the next engine takes it from there.
   */
  private async holdUntilStopped(record: ControlRecord): Promise<void> {
    const revision = BigInt(record.revision ?? this.checkpoint.appliedRevision);
    this.held = { revision, reason: record.reason, since: record.at, pendingDeletes: 0, pendingPuts: 0, deletesByGroup: new Map(), compacted: false };
    if (this.healer) this.healer.atRevision = revision;
    this.setState('held');
    const healing = this.healer ? undefined : this.startHealer(this.signal, revision);
    try {
      await watchHeld(this, this.held);
    } finally {
      await healing;
    }
  }

  /** Refuses to sync an etcd into itself; records the primary's cluster ID. */
  async preflight(): Promise<void> {
    const [p, s] = await Promise.all([
      this.retry('connect to primary', () => readHeader(this.primary)),
      this.retry('connect to standby', () => readHeader(this.standby)),
    ]);
    refuseSameCluster(p, s);
    this.checkpoint.primaryClusterId = p.clusterId;
    this.log.info({ primaryRevision: p.revision.toString(), standbyRevision: s.revision.toString() }, 'connected to both etcd clusters');
  }
}
