/**
 * The replication engine: initial (and restart) diff at a pinned primary revision, replay
 * of the primary's history since the checkpoint, and streaming from the primary's watch,
 * each write transaction carrying the checkpoint of the last applied primary revision.
 */
import PQueue from 'p-queue';
import type { Logger } from 'pino';
import { CheckpointChangedError, CompactedError, ConfigError, FencedError, describeError } from '../errors.js';
import type { EtcdSide } from '../etcd/connection.js';
import { type Compare, DEFAULT_PAGE_SIZE, type KeyValue, type WriteOp, readHeader, readKey, scanPages, txn } from '../etcd/kv.js';
import { type WatchEvent, WatchStream } from '../etcd/watch.js';
import { filterPages, mergeJoin } from '../diff/merge-join.js';
import type { Scope } from '../scope.js';
import { DEFAULT_MAX_TXN_BYTES, DEFAULT_MAX_TXN_OPS, type EventBatch, OpChunker, headOfWholeRevisions, opBytes, takeEventBatch } from './batch.js';
import { LeaseMapper, leaseKeyPrefix } from './leases.js';
import { AbortedError, delay, withRetry } from './retry.js';
import { StandbyWriter, type WriterHooks } from './writer.js';
import { audit, repair, repairPlan } from './audit.js';
import { SelfHealer } from './heal.js';
import type { CheckReport } from '../diff/report.js';

export const DEFAULT_CHECKPOINT_KEY = '/etcd-sync/checkpoint';
/**
 * --write-concurrency. etcd puts the txns that arrive together into one raft batch and one
 * fsync. With txns of 127 ops a 1M-key initial sync took 41 s with 4 in flight, 35 s with 8,
 * 26-28 s with 16. Nested txns of ~1 MiB (txnCapacity) need fewer: on Node 20 23.6 s with 4,
 * 20.6 s with 8, 21.8 s with 16 (peak RSS 180, 186, 237 MB); on Node 24, the image's runtime,
 * 24.6 and 22.4 s with 4 (185, 184 MB) against 29.3 and 24.1 s with 8 (217, 218 MB). 2 cores.
 */
export const DEFAULT_WRITE_CONCURRENCY = 4;
/** --check-interval: 10 minutes, as operators expect of a data check. */
export const DEFAULT_CHECK_INTERVAL_MS = 10 * 60_000;
/** --heal-delay: first wait before restoring a key changed on the standby. */
export const DEFAULT_HEAL_DELAY_MS = 1_000;

export interface SyncOptions {
  scope: Scope;
  /** Where the last applied primary revision is recorded, outside the synced prefix. Default `/etcd-sync/checkpoint`. */
  checkpointKey: Buffer;
  /**
   * The standby etcd's --max-txn-ops, which etcd applies per level of a txn: nested, one txn
   * holds maxTxnOps²/4 ops, the checkpoint included (see txnCapacity). Default 128.
   */
  maxTxnOps?: number;
  /** Approximate payload per txn. Default 1 MiB. */
  maxTxnBytes?: number;
  /** Txns in flight during a full diff (order does not matter there). Default 16. */
  writeConcurrency?: number;
  /** Most keys per range page (pages aim at DEFAULT_PAGE_BYTES, 4 MiB). Default 50000; halved automatically for pages too large to receive. */
  pageSize?: number;
  /** Revisions per window when a restart replays a long gap over parallel watches. Default 1000. */
  replayWindowRevisions?: number;
  /** Replay windows fetched at once. Default 64. */
  replayWindows?: number;
  /** Streaming txns in flight, each guarded to apply only right after the one before it. Default 4. */
  streamTxnsInFlight?: number;
  /** Delete in-scope keys only the standby has. Default false: they are logged and counted. */
  prune?: boolean;
  /** How often a long diff logs its progress. Default 5 s. */
  progressIntervalMs?: number;
  /** After this long without events, ask etcd for a progress notification so the checkpoint advances. Default 5 s. */
  idleProgressMs?: number;
  /** Periodic check and repair of missing and different keys (surplus too with prune); 0 = off. Default 10 min. */
  checkIntervalMs?: number;
  /** First wait before restoring a synced key changed on the standby; undefined or negative = self-healing off. Default 1 s. */
  healDelayMs?: number;
  /** Called for every key-value put into the standby, and with each write txn's duration. */
  writerHooks?: WriterHooks;
}

export interface Checkpoint {
  revision: bigint;
  primaryClusterId: string;
}

export interface DiffStats {
  revision: bigint;
  scanned: number;
  equal: number;
  missing: number;
  different: number;
  surplus: number;
  put: number;
  deleted: number;
  bytesWritten: number;
  durationMs: number;
}

export interface SyncProgress {
  phase: 'diff';
  scanned: number;
  written: number;
  bytesWritten: number;
  keysPerSecond: number;
}

/** The put of etcd-sync's checkpoint key. */
type CheckpointPut = Extract<WriteOp, { type: 'put' }>;

/** A streaming txn in flight. */
interface StreamTxn {
  ops: WriteOp[];
  throughRevision: bigint;
  checkpoint: CheckpointPut;
  compares: Compare[];
  held: Promise<boolean>;
  settled: boolean;
  /** Resolves (never rejects) once `held` has settled. */
  answered: Promise<void>;
}

export type SyncState = 'starting' | 'replaying' | 'initial-sync' | 'streaming' | 'resyncing' | 'stopped';

export interface SyncHooks {
  onProgress?(progress: SyncProgress): void;
  onState?(state: SyncState): void;
}

const HIGH_WATER_EVENTS = 50_000;
/**
 * etcd (3.4-3.6) hands a watcher that starts in the past at most 1000 revisions per 100 ms
 * sync pass, so one watch replays about 5-10k revisions/s. Watchers on consecutive windows
 * are served in the same pass: a long gap is fetched over several, and applied in order. Each
 * pass reads every revision from the oldest waiting watcher's to the newest, however few it
 * hands out, so more windows a pass cost the primary less: 64 against 16 (4 paired catch-ups
 * of 100k single-key revisions, 1 KiB each) took 1.87-2.01 s against 2.20-2.86 s, the
 * primary's CPU 0.82-0.93 against 1.13-1.67 CPU-s, at a peak RSS of 165-187 MB against
 * 138-144 (REPLAY_BUFFER_BYTES bounds what waits); 32 windows 1.95-2.17 s.
 */
const DEFAULT_REPLAY_WINDOW_REVISIONS = 1000;
const DEFAULT_REPLAY_WINDOWS = 64;
/**
 * With one txn in flight, streaming follows at most one txn's ops (txnCapacity: 4096 nested
 * under the default --max-txn-ops) per txn latency. More txns are sent without waiting, once a
 * full txn is queued, each comparing the checkpoint with the value the txn before it writes, so
 * etcd applies one only right after its predecessor and order holds whatever order they arrive in.
 */
export const DEFAULT_STREAM_TXNS_IN_FLIGHT = 4;
/** Fetched but not yet applied replay windows stop growing beyond about this many bytes. */
const REPLAY_BUFFER_BYTES = 64 * 1024 * 1024;

export class SyncEngine {
  /** Every primary event at or below this revision is applied on the standby. */
  appliedRevision = 0n;
  /** Last revision recorded in the checkpoint key. */
  checkpointedRevision = 0n;
  /** Numbers checkpoint values; starts at the clock so that a restarted process does not repeat one. */
  private checkpointWrites = Date.now() * 1000;
  /** The checkpoint value as the standby holds it after etcd-sync's last write (undefined: none yet). */
  private chainValue: Buffer | undefined;
  primaryClusterId = '';
  state: SyncState = 'starting';
  lastDiff: DiffStats | undefined;
  /** The primary's revision as last seen (watch headers, progress, reads). */
  primaryRevision = 0n;
  /** Since when the standby has been behind the primary (ms since epoch); undefined when caught up. */
  behindSince: number | undefined;
  /** Events applied to the standby, by type (out-of-scope events not counted). */
  readonly eventsApplied = { put: 0, delete: 0 };
  /** Full resyncs by reason. */
  readonly resyncs = new Map<string, number>();
  watchRestarts = 0;
  /** Streaming txns that arrived before their predecessor and were sent again. */
  streamResends = 0;
  /** Replay windows fetched over their own watch (long gaps after a restart). */
  replayWindowsFetched = 0;
  /** The latest periodic check (with what it repaired). */
  lastCheck: CheckReport | undefined;
  healer: SelfHealer | undefined;

  private readonly maxTxnBytes: number;
  private readonly writeConcurrency: number;
  private readonly pageSize: number;
  private readonly progressIntervalMs: number;
  private readonly idleProgressMs: number;
  private readonly leases: LeaseMapper;
  readonly writer: StandbyWriter;
  private readonly scope: Scope;
  private readonly checkpointKey: Buffer;
  private signal: AbortSignal = new AbortController().signal;

  constructor(
    private readonly primary: EtcdSide,
    private readonly standby: EtcdSide,
    private readonly options: SyncOptions,
    private readonly log: Logger,
    private readonly hooks: SyncHooks = {},
  ) {
    this.scope = options.scope;
    this.checkpointKey = options.checkpointKey;
    this.maxTxnBytes = options.maxTxnBytes ?? DEFAULT_MAX_TXN_BYTES;
    this.writeConcurrency = options.writeConcurrency ?? DEFAULT_WRITE_CONCURRENCY;
    this.pageSize = options.pageSize ?? DEFAULT_PAGE_SIZE;
    this.progressIntervalMs = options.progressIntervalMs ?? 5_000;
    this.idleProgressMs = options.idleProgressMs ?? 5_000;
    this.leases = new LeaseMapper(primary, standby, leaseKeyPrefix(this.checkpointKey), log);
    this.writer = new StandbyWriter(standby, this.leases, log, () => this.signal, options.writerHooks, options.maxTxnOps ?? DEFAULT_MAX_TXN_OPS);
  }

  private countResync(reason: string): void {
    this.resyncs.set(reason, (this.resyncs.get(reason) ?? 0) + 1);
  }

  /** Records the primary's revision and whether the standby has caught up with it. */
  private notePrimary(revision: bigint): void {
    if (revision > this.primaryRevision) this.primaryRevision = revision;
    if (this.appliedRevision >= this.primaryRevision) this.behindSince = undefined;
    else this.behindSince ??= Date.now();
  }

  /** Revisions the standby is behind the primary. */
  get lagRevisions(): bigint {
    return this.primaryRevision > this.appliedRevision ? this.primaryRevision - this.appliedRevision : 0n;
  }

  private setState(state: SyncState): void {
    this.state = state;
    this.hooks.onState?.(state);
  }

  private retry<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return withRetry(what, fn, { log: this.log, signal: this.signal });
  }

  /**
   * The whole lifecycle until the signal aborts: checks, replay since the checkpoint,
   * full diff, then streaming; compaction anywhere falls back to a full resync.
   */
  async run(signal: AbortSignal): Promise<void> {
    this.signal = signal;
    try {
      await this.preflight();
      const checkpoint = await this.retry('read checkpoint', () => this.readCheckpoint());
      let revision = (await this.retry('read primary revision', () => readHeader(this.primary))).revision;
      const prune = this.options.prune ?? false;
      if (checkpoint && checkpoint.primaryClusterId !== this.primaryClusterId) {
        this.log.warn({ checkpointCluster: checkpoint.primaryClusterId, primaryCluster: this.primaryClusterId }, 'resync: checkpoint belongs to another primary cluster');
        this.countResync('other-primary');
      } else if (checkpoint) {
        this.appliedRevision = checkpoint.revision;
        this.checkpointedRevision = checkpoint.revision;
        try {
          this.setState('replaying');
          await this.replay(revision);
        } catch (err) {
          if (!(err instanceof CompactedError)) throw err;
          this.log.warn({ checkpoint: checkpoint.revision.toString(), err: describeError(err) }, 'resync: checkpoint compacted on the primary');
          this.countResync('checkpoint-compacted');
          revision = (await this.retry('read primary revision', () => readHeader(this.primary))).revision;
        }
      }
      this.setState(checkpoint ? 'resyncing' : 'initial-sync');
      await this.retry('load lease mappings', () => this.leases.load());
      await this.fullSync(revision, prune);
      this.log.info({ ...this.lastDiff, revision: revision.toString() }, 'initial sync done');
      // Background work ends with streaming, whatever ends it, so run() can never hang on it.
      const backgroundStop = new AbortController();
      const stopBackground = (): void => backgroundStop.abort();
      signal.addEventListener('abort', stopBackground, { once: true });
      const background = this.startBackground(backgroundStop.signal);
      try {
        await this.streamUntilStopped(prune);
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

  /** Streams, falling back to a full resync whenever the watch meets compaction. */
  private async streamUntilStopped(prune: boolean): Promise<void> {
    for (;;) {
      this.setState('streaming');
      try {
        await this.stream();
        return;
      } catch (err) {
        if (!(err instanceof CompactedError)) throw err;
        this.log.warn({ appliedRevision: this.appliedRevision.toString(), err: describeError(err) }, 'resync: watch revision compacted');
        this.countResync('watch-compacted');
        this.setState('resyncing');
        const revision = (await this.retry('read primary revision', () => readHeader(this.primary))).revision;
        await this.fullSync(revision, prune);
        this.log.info({ revision: revision.toString() }, 'resync done');
      }
    }
  }

  /** Self-healing and the periodic check, until the engine stops. Failures are logged, never fatal. */
  private async startBackground(signal: AbortSignal): Promise<void> {
    const tasks: Promise<void>[] = [];
    const healDelayMs = this.options.healDelayMs ?? DEFAULT_HEAL_DELAY_MS;
    if (healDelayMs >= 0) {
      const healer = new SelfHealer(this.primary, this.standby, this.scope, this.writer, this.log, { delayMs: healDelayMs, maxTxnBytes: this.maxTxnBytes });
      this.healer = healer;
      const heal = async (): Promise<void> => {
        const from = (await withRetry('read standby revision', () => readHeader(this.standby), { log: this.log, signal })).revision + 1n;
        await healer.run(from, signal);
      };
      tasks.push(
        heal().catch((err: unknown) => {
          if (!(err instanceof AbortedError)) this.log.error({ err: describeError(err) }, 'self-heal stopped');
        }),
      );
    }
    const interval = this.options.checkIntervalMs ?? DEFAULT_CHECK_INTERVAL_MS;
    if (interval > 0) tasks.push(this.periodicChecks(interval, signal));
    await Promise.all(tasks);
  }

  private async periodicChecks(intervalMs: number, signal: AbortSignal): Promise<void> {
    const retry = <T>(what: string, fn: () => Promise<T>): Promise<T> => withRetry(what, fn, { log: this.log, signal });
    while (await delay(intervalMs, signal)) {
      try {
        const options = { scope: this.scope, checkpointKey: this.checkpointKey, pageSize: this.pageSize, retry, signal };
        let report = await audit(this.primary, this.standby, options);
        const counts = { missing: report.findings.missing.length, surplus: report.findings.surplus.length, different: report.findings.different.length };
        this.log.info({ consistent: report.consistent, mode: report.mode, inScope: report.inScope, ...counts }, 'periodic check');
        const plan = repairPlan(report, this.options.prune ?? false);
        if (plan.put.length + plan.delete.length > 0) {
          const repaired = await repair(this.primary, this.standby, this.writer, plan, retry, this.maxTxnBytes);
          this.log.info(repaired, 'periodic check repaired');
          report = { ...report, repaired };
        }
        this.lastCheck = report;
      } catch (err) {
        if (err instanceof AbortedError || signal.aborted) return;
        this.log.warn({ err: describeError(err) }, 'periodic check failed');
      }
    }
  }

  /** Refuses to sync an etcd into itself; records the primary's cluster ID. */
  async preflight(): Promise<void> {
    const [p, s] = await Promise.all([
      this.retry('connect to primary', () => readHeader(this.primary)),
      this.retry('connect to standby', () => readHeader(this.standby)),
    ]);
    if (p.clusterId === s.clusterId) {
      throw new ConfigError(`primary and standby are the same etcd cluster (cluster ID ${BigInt(p.clusterId).toString(16)}): refusing to sync an etcd into itself`);
    }
    this.primaryClusterId = p.clusterId;
    this.log.info({ primaryRevision: p.revision.toString(), standbyRevision: s.revision.toString() }, 'connected to both etcd clusters');
  }

  async readCheckpoint(): Promise<Checkpoint | undefined> {
    return this.parseCheckpoint(await readKey(this.standby, this.checkpointKey));
  }

  private parseCheckpoint(kv: KeyValue | undefined): Checkpoint | undefined {
    if (!kv) return undefined;
    try {
      const parsed = JSON.parse(kv.value.toString()) as { revision: string; primaryClusterId: string };
      return { revision: BigInt(parsed.revision), primaryClusterId: String(parsed.primaryClusterId) };
    } catch {
      this.log.warn('ignoring unreadable checkpoint');
      return undefined;
    }
  }

  /**
   * Reads the standby's checkpoint as the value the next streaming txn must find. Txns of a
   * pipeline that failed may have been applied after all: a checkpoint past appliedRevision
   * says so (it is written atomically with the data), and streaming resumes after it.
   */
  private async loadChain(): Promise<void> {
    const kv = await readKey(this.standby, this.checkpointKey);
    this.chainValue = kv === undefined ? undefined : Buffer.from(kv.value);
    const checkpoint = this.parseCheckpoint(kv);
    if (checkpoint && checkpoint.primaryClusterId === this.primaryClusterId && checkpoint.revision > this.appliedRevision) {
      this.appliedRevision = checkpoint.revision;
      this.checkpointedRevision = checkpoint.revision;
    }
  }

  /** The compare that makes a txn apply only on top of the checkpoint `expected` (absent: no checkpoint). */
  private chainCompare(expected: Buffer | undefined): Compare {
    return expected === undefined
      ? { key: this.checkpointKey, target: 'Version', result: 'Equal', version: 0n }
      : { key: this.checkpointKey, target: 'Value', result: 'Equal', value: expected };
  }

  private checkpointOp(revision: bigint): CheckpointPut {
    return {
      type: 'put',
      key: this.checkpointKey,
      // `write` makes every value unique: streaming txns chain on the exact value of the one
      // before, and parts of a revision split over several txns share a revision.
      value: Buffer.from(JSON.stringify({ revision: revision.toString(), primaryClusterId: this.primaryClusterId, write: String(++this.checkpointWrites) })),
    };
  }

  /** Writes data ops and the checkpoint in one txn, retrying while the standby is unreachable. */
  async applyOps(ops: WriteOp[], checkpoint: bigint): Promise<void> {
    const op = this.checkpointOp(checkpoint);
    await this.writer.write(ops, [op]);
    if (checkpoint > this.checkpointedRevision) this.checkpointedRevision = checkpoint;
    // Exact for sequential callers; after the concurrent txns of a diff, follow() reloads it.
    this.chainValue = op.value;
  }

  /**
   * Compares the in-scope keys of the primary at `revision` with the standby's, writing only
   * what differs. Several txns in flight; memory bounded by a page per side and the queue.
   */
  async fullSync(revision: bigint, prune: boolean): Promise<DiffStats> {
    const started = Date.now();
    this.log.info({ revision: revision.toString(), prune }, 'full diff started');
    const stats: DiffStats = { revision, scanned: 0, equal: 0, missing: 0, different: 0, surplus: 0, put: 0, deleted: 0, bytesWritten: 0, durationMs: 0 };
    const inScope = (kv: KeyValue): boolean => this.scope.inScope(kv.key);
    const range = { key: this.scope.keyPrefix, rangeEnd: this.scope.rangeEnd, pageSize: this.pageSize, signal: this.signal };
    const retry = <T>(what: string, fn: () => Promise<T>): Promise<T> => this.retry(what, fn);
    const primaryPages = filterPages(scanPages(this.primary, { ...range, revision }, retry), inScope);
    const standbyPages = filterPages(scanPages(this.standby, range, retry), inScope);
    const same = (p: KeyValue, s: KeyValue): boolean =>
      p.value.equals(s.value) && (p.lease === '0' ? s.lease === '0' : this.leases.current(p.lease) === s.lease);

    const queue = new PQueue({ concurrency: this.writeConcurrency });
    let failure: unknown;
    const chunker = new OpChunker({ maxOps: this.writer.opsPerTxn - 1, maxBytes: this.maxTxnBytes });
    const submit = async (chunk: WriteOp[]): Promise<void> => {
      // As many txns ready as in flight: enough to keep etcd busy, a bounded amount of memory.
      await queue.onSizeLessThan(this.writeConcurrency);
      if (failure !== undefined) throw failure;
      void queue.add(() => this.applyOps(chunk, revision)).catch((err: unknown) => {
        failure ??= err;
      });
    };
    const surplusLogged = 20;
    let lastProgress = Date.now();
    const reportProgress = (): void => {
      const seconds = (Date.now() - started) / 1000;
      const progress: SyncProgress = {
        phase: 'diff',
        scanned: stats.scanned,
        written: stats.put + stats.deleted,
        bytesWritten: stats.bytesWritten,
        keysPerSecond: seconds > 0 ? Math.round(stats.scanned / seconds) : 0,
      };
      this.log.info(progress, 'sync progress');
      this.hooks.onProgress?.(progress);
    };

    for await (const findings of mergeJoin(primaryPages, standbyPages, same)) {
      if (this.signal.aborted) break;
      for (const finding of findings) {
        stats.scanned++;
        let op: WriteOp | undefined;
        switch (finding.kind) {
          case 'equal':
            stats.equal++;
            break;
          case 'missing':
          case 'different': {
            stats[finding.kind]++;
            const p = finding.primary;
            op = { type: 'put', key: p.key, value: p.value, lease: p.lease };
            stats.put++;
            stats.bytesWritten += p.key.length + p.value.length;
            break;
          }
          case 'surplus':
            stats.surplus++;
            if (stats.surplus <= surplusLogged) {
              this.log.info({ key: finding.standby.key.toString(), pruned: prune }, 'surplus key: only in the standby');
            }
            if (prune) {
              op = { type: 'delete', key: finding.standby.key };
              stats.deleted++;
            }
            break;
        }
        if (op) {
          const chunk = chunker.add(op);
          if (chunk) await submit(chunk);
        }
        if (Date.now() - lastProgress >= this.progressIntervalMs) {
          lastProgress = Date.now();
          reportProgress();
        }
      }
    }
    const last = chunker.flush();
    if (last) await submit(last);
    await queue.onIdle();
    if (failure !== undefined) throw failure;
    if (this.signal.aborted) throw new AbortedError();
    if (stats.put + stats.deleted === 0 || this.checkpointedRevision < revision) {
      await this.applyOps([], revision);
    }
    this.appliedRevision = revision;
    this.notePrimary(revision);
    stats.durationMs = Date.now() - started;
    if (stats.surplus > surplusLogged) {
      this.log.info({ surplus: stats.surplus, listed: surplusLogged }, 'more surplus keys not listed');
    }
    if (stats.scanned > 0 && Date.now() - started >= this.progressIntervalMs) reportProgress();
    this.lastDiff = stats;
    return stats;
  }

  /**
   * Applies the primary's history from the checkpoint up to `untilRevision` (inclusive), in
   * revision order, so that the standby passes only through states the primary had.
   */
  async replay(untilRevision: bigint): Promise<void> {
    if (this.appliedRevision >= untilRevision) return;
    const window = BigInt(this.options.replayWindowRevisions ?? DEFAULT_REPLAY_WINDOW_REVISIONS);
    const gap = untilRevision - this.appliedRevision;
    this.log.info(
      { from: (this.appliedRevision + 1n).toString(), until: untilRevision.toString(), windows: gap > window ? ((gap + window - 1n) / window).toString() : '1' },
      'replaying primary history since checkpoint',
    );
    if (gap > window) await this.replayWindows(untilRevision, window);
    else await this.follow(untilRevision);
  }

  /** The replay of a long gap: windows fetched over parallel watches, applied one after the other. */
  private async replayWindows(until: bigint, window: bigint): Promise<void> {
    const maxInFlight = this.options.replayWindows ?? DEFAULT_REPLAY_WINDOWS;
    const inFlight: { to: bigint; events: Promise<WatchEvent[]> }[] = [];
    let next = this.appliedRevision + 1n;
    let bytesPerWindow = 0;
    const launch = (): void => {
      // At least one window in flight; more while their expected size fits the buffer.
      while (next <= until && (inFlight.length === 0 || (inFlight.length < maxInFlight && (inFlight.length + 1) * bytesPerWindow <= REPLAY_BUFFER_BYTES))) {
        const from = next;
        const to = from + window - 1n < until ? from + window - 1n : until;
        next = to + 1n;
        const events = this.retry(`replay revisions ${from}-${to}`, () => this.fetchWindow(from, to));
        events.catch(() => undefined); // awaited in order below; a failure there ends the replay
        inFlight.push({ to, events });
      }
    };
    launch();
    for (let head = inFlight.shift(); head !== undefined; head = inFlight.shift()) {
      const events = await head.events;
      this.replayWindowsFetched++;
      let bytes = 0;
      for (const e of events) bytes += e.key.length + e.value.length;
      bytesPerWindow = Math.max(bytesPerWindow * 0.8, bytes);
      launch();
      for (let done = 0; done < events.length; ) {
        const batch = this.takeBatch(events.slice(done));
        // One txn at a time. Four chained txns in flight (as streaming sends them) made a 100k
        // replay slower: etcd's handlers race to propose txns that arrive together, and 453-478
        // of its 800 full txns (127 x 1 KiB) reached etcd before their predecessor and were sent
        // again, even when each left only once the one before it was written out.
        await this.completeStreamBatch(this.sendStreamBatch(batch, false));
        done += batch.consumed;
      }
      if (head.to > this.appliedRevision) this.appliedRevision = head.to;
      this.notePrimary(this.primaryRevision);
      if (this.signal.aborted) throw new AbortedError();
    }
    await this.writeCheckpointIfBehind();
  }

  /** Every in-scope event of revisions [from, to] of the primary, in order, over a watch of its own. */
  private async fetchWindow(from: bigint, to: bigint): Promise<WatchEvent[]> {
    const watch = await WatchStream.open(this.primary, { key: this.scope.keyPrefix, rangeEnd: this.scope.rangeEnd, startRevision: from }, this.signal);
    // A window whose last revisions hold no watched key ends with a progress notification
    // (sent once the watcher has caught up) or with the first event after it.
    const progress = setInterval(() => watch.requestProgress(), 100);
    const events: WatchEvent[] = [];
    try {
      for await (const message of watch.messages()) {
        if (message.kind === 'progress') {
          if (message.revision >= to) return events;
          continue;
        }
        for (const event of message.events) {
          if (event.modRevision > to) return events;
          events.push(event);
        }
        // etcd sends whole revisions: an event of `to` means all of `to` has arrived.
        if ((events[events.length - 1]?.modRevision ?? 0n) >= to) return events;
      }
      throw new AbortedError();
    } finally {
      clearInterval(progress);
      watch.close();
    }
  }

  /** The next txn's worth of whole revisions from the head of `events`, coalesced. */
  private takeBatch(events: readonly WatchEvent[]): EventBatch {
    const maxOps = this.writer.opsPerTxn - 1;
    return takeEventBatch(headOfWholeRevisions(events, 10 * maxOps + 1024), { maxOps, maxBytes: this.maxTxnBytes }, (e) => this.eventOp(e));
  }


  /** Streams the primary's changes until the signal aborts. */
  async stream(): Promise<void> {
    this.log.info({ revision: (this.appliedRevision + 1n).toString() }, `streaming from revision ${this.appliedRevision + 1n}`);
    await this.follow(undefined);
  }

  /**
   * Watches the primary from appliedRevision + 1 and applies events in revision order, one
   * txn in flight, reconnecting from the last applied revision after any failure. With
   * `until`, stops once every event up to it is applied and drops later ones.
   */
  private async follow(until: bigint | undefined): Promise<void> {
    while (!this.signal.aborted) {
      await this.retry('read checkpoint', () => this.loadChain());
      if (until !== undefined && this.appliedRevision >= until) return;
      const watch = await this.retry('watch primary', () =>
        WatchStream.open(this.primary, { key: this.scope.keyPrefix, rangeEnd: this.scope.rangeEnd, startRevision: this.appliedRevision + 1n }, this.signal),
      );
      try {
        const done = await this.consume(watch, until);
        if (done) return;
      } catch (err) {
        if (err instanceof CompactedError || err instanceof AbortedError) throw err;
        if (!(err as { retryable?: boolean }).retryable) throw err;
        this.log.warn({ appliedRevision: this.appliedRevision.toString(), err: describeError(err) }, 'watch stream broke, resuming from applied revision');
        this.watchRestarts++;
        await delay(500, this.signal);
      } finally {
        watch.close();
      }
    }
    await this.writeCheckpointIfBehind();
  }

  private async writeCheckpointIfBehind(): Promise<void> {
    if (this.appliedRevision > this.checkpointedRevision) {
      try {
        const op = this.checkpointOp(this.appliedRevision);
        await this.writer.write([], [op]);
        this.checkpointedRevision = this.appliedRevision;
        this.chainValue = op.value;
      } catch (err) {
        if (err instanceof FencedError) throw err;
        this.log.warn({ err: describeError(err) }, 'could not record the checkpoint');
      }
    }
  }

  /** Returns true when `until` was reached, false when the signal aborted. Throws on stream failure. */
  private async consume(watch: WatchStream, until: bigint | undefined): Promise<boolean> {
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
    const reader = (async () => {
      try {
        for await (const message of watch.messages()) {
          if (message.kind === 'events') {
            queue.push(...message.events);
            lastEventAt = Date.now();
            const last = message.events[message.events.length - 1];
            this.notePrimary(last && last.modRevision > message.headerRevision ? last.modRevision : message.headerRevision);
          } else if (message.revision > progressRevision) {
            progressRevision = message.revision;
            this.notePrimary(message.revision);
          }
          notify();
          while (queue.length > HIGH_WATER_EVENTS && !this.signal.aborted) {
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
    this.signal.addEventListener('abort', onAbort, { once: true });
    const progressTimer = setInterval(
      () => {
        if (until !== undefined || Date.now() - lastEventAt >= this.idleProgressMs) watch.requestProgress();
      },
      until !== undefined ? 100 : Math.max(100, Math.floor(this.idleProgressMs / 2)),
    );
    const maxInFlight = this.options.streamTxnsInFlight ?? DEFAULT_STREAM_TXNS_IN_FLIGHT;
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
          if (limit > 0 && (pipeline.length === 0 || (pipeline.length < maxInFlight && limit >= this.writer.opsPerTxn - 1))) {
            const batch = this.takeBatch(limit < queue.length ? queue.slice(0, limit) : queue);
            // A value too large to share a txn is written alone, then its checkpoint (see
            // StandbyWriter): no room for the chain compare, so only with nothing in flight.
            const alone = batch.ops.reduce((sum, op) => sum + opBytes(op), 0) > this.maxTxnBytes;
            if (!alone || pipeline.length === 0) {
              pipeline.push(this.sendStreamBatch(batch, !alone));
              queue.splice(0, batch.consumed);
              if (queue.length <= HIGH_WATER_EVENTS) drained?.();
              continue;
            }
          }
        }
        const head = pipeline[0];
        if (head !== undefined) {
          if (!head.settled && pipeline.length < maxInFlight && !readerDone && !this.signal.aborted) {
            // Room for another txn: wait for a backlog worth sending, or complete the oldest.
            await Promise.race([head.answered, new Promise<void>((resolve) => (wake = resolve))]);
            continue;
          }
          pipeline.shift();
          await this.completeStreamBatch(head);
          if (this.signal.aborted) return false;
          continue;
        }
        // Only events past `until` are left: the replay is complete.
        if (until !== undefined && queue.length > 0) {
          this.appliedRevision = until;
          return true;
        }
        if (queue.length === 0 && progressRevision > this.appliedRevision) {
          // Only writes outside the watched range (or none) happened up to progressRevision:
          // record it, so that a restart does not replay them or fall behind compaction.
          this.appliedRevision = until !== undefined && progressRevision > until ? until : progressRevision;
          this.notePrimary(this.primaryRevision);
          await this.writeCheckpointIfBehind();
        }
        if (until !== undefined && this.appliedRevision >= until) return true;
        if (this.signal.aborted) return false;
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
      this.signal.removeEventListener('abort', onAbort);
      watch.close();
      drained?.();
      // Txns still in flight settle before anyone reads the chain again (loadChain).
      await Promise.all(pipeline.map((t) => t.answered));
      await reader;
    }
  }

  /** Sends a batch with its checkpoint; `chained`: guarded to apply only right after the txn before it. */
  private sendStreamBatch(batch: EventBatch, chained: boolean): StreamTxn {
    const checkpoint = this.checkpointOp(batch.throughRevision);
    const compares = chained ? [this.chainCompare(this.chainValue)] : [];
    const held = this.writer.write(batch.ops, [checkpoint], compares);
    // The next txn chains on this one's checkpoint.
    this.chainValue = checkpoint.value;
    const txn: StreamTxn = { ops: batch.ops, throughRevision: batch.throughRevision, checkpoint, compares, held, settled: false, answered: Promise.resolve() };
    // Awaited in order by completeStreamBatch; `answered` never rejects.
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
  private async completeStreamBatch(txn: StreamTxn): Promise<void> {
    let held = await txn.held;
    if (!held) {
      this.streamResends++;
      held = await this.writer.write(txn.ops, [txn.checkpoint], txn.compares);
    }
    // A txn whose answer was lost (a deadline after the commit) was retried and found its own checkpoint.
    if (!held) held = (await this.retry('read checkpoint', () => readKey(this.standby, this.checkpointKey)))?.value.equals(txn.checkpoint.value) ?? false;
    if (!held) {
      throw new CheckpointChangedError(`the standby's checkpoint ${this.checkpointKey.toString()} is not the one etcd-sync wrote last; resuming from it`);
    }
    if (txn.throughRevision > this.appliedRevision) this.appliedRevision = txn.throughRevision;
    if (txn.throughRevision > this.checkpointedRevision) this.checkpointedRevision = txn.throughRevision;
    for (const op of txn.ops) this.eventsApplied[op.type]++;
    this.notePrimary(this.primaryRevision);
  }

  private eventOp(event: WatchEvent): WriteOp | undefined {
    if (!this.scope.inScope(event.key)) return undefined;
    if (event.type === 'delete') return { type: 'delete', key: event.key };
    return { type: 'put', key: event.key, value: event.value, lease: event.lease };
  }
}
