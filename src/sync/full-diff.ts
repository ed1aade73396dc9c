/**
 * The full diff: the primary's in-scope keys at one pinned revision against the standby's,
 * merged in key order, writing only what differs, several txns in flight (their order does not
 * matter: each carries the same checkpoint, the diff's revision). Memory is bounded by a page
 * per side and the write queue. It runs at the first start, after a restart whose checkpoint
 * was compacted away, and after the watch met compaction.
 */
import PQueue from 'p-queue';
import { describeError } from '../errors.js';
import { type KeyValue, type WriteOp, countKeys, scanPages } from '../etcd/kv.js';
import { filterPages, mergeJoin } from '../diff/merge-join.js';
import { AbortedError } from './retry.js';
import { OpChunker } from './batch.js';
import type { SyncContext } from './context.js';

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

/** Where a full diff stands: what /status, the metrics, the log and the terminal line show. */
export interface SyncProgress {
  /** The engine state that runs the diff: initial-sync or resyncing. */
  phase: string;
  /** The primary revision the diff is pinned to. */
  revision: bigint;
  /** Primary keys read so far under --key-prefix (in scope or not: the diff reads them all). */
  keysDone: number;
  /** Primary keys under --key-prefix at the pinned revision (a count-only read); undefined until it answered. */
  keysTotal: number | undefined;
  /** keysDone of keysTotal, 0-100 with one decimal; undefined without a total. */
  percent: number | undefined;
  /** Primary keys read per second since the diff started. */
  keysPerSecond: number;
  /** Seconds left at that rate; undefined without a total or a rate. */
  etaSeconds: number | undefined;
  /** Keys written or deleted on the standby so far. */
  written: number;
  bytesWritten: number;
  startedAt: number;
  /** When the diff finished; undefined while it runs. */
  finishedAt: number | undefined;
}

/** Counts a full diff's progress; `snapshot()` derives rate, percent and ETA at the moment asked. */
export class DiffProgress {
  keysDone = 0;
  keysTotal: number | undefined;
  written = 0;
  bytesWritten = 0;
  finishedAt: number | undefined;
  readonly startedAt: number;

  constructor(
    readonly phase: string,
    readonly revision: bigint,
    now = Date.now(),
  ) {
    this.startedAt = now;
  }

  snapshot(now = Date.now()): SyncProgress {
    const end = this.finishedAt ?? now;
    const seconds = (end - this.startedAt) / 1000;
    const keysPerSecond = seconds > 0 ? Math.round(this.keysDone / seconds) : 0;
    const total = this.keysTotal;
    // The count and the scan read one revision: they agree at the end. Until then the count can
    // only be behind when it answered late, so percent stays at most 100.
    const percent = total === undefined ? undefined : total === 0 ? 100 : Math.min(100, Math.floor((this.keysDone / total) * 1000) / 10);
    const etaSeconds =
      this.finishedAt !== undefined ? 0 : total === undefined || keysPerSecond === 0 ? undefined : Math.ceil(Math.max(0, total - this.keysDone) / keysPerSecond);
    return {
      phase: this.phase,
      revision: this.revision,
      keysDone: this.keysDone,
      keysTotal: total,
      percent,
      keysPerSecond,
      etaSeconds,
      written: this.written,
      bytesWritten: this.bytesWritten,
      startedAt: this.startedAt,
      finishedAt: this.finishedAt,
    };
  }
}

/** A progress as one log line's fields (revisions as text, times as ISO). */
export function progressFields(p: SyncProgress): Record<string, unknown> {
  return {
    phase: p.phase,
    revision: p.revision.toString(),
    keysDone: p.keysDone,
    keysTotal: p.keysTotal ?? null,
    percent: p.percent ?? null,
    keysPerSecond: p.keysPerSecond,
    etaSeconds: p.etaSeconds ?? null,
    written: p.written,
    bytesWritten: p.bytesWritten,
  };
}

/** How often the terminal's progress line is redrawn (the log line comes every progressIntervalMs). */
const DRAW_INTERVAL_MS = 1_000;

/** Passes pages through, counting their keys. */
async function* counted<T>(pages: AsyncIterable<readonly T[]>, count: (n: number) => void): AsyncGenerator<readonly T[]> {
  for await (const page of pages) {
    count(page.length);
    yield page;
  }
}

/** Surplus keys listed in the log, one line each; the rest are counted. */
const SURPLUS_LOGGED = 20;

/**
 * Makes the standby's in-scope keys those of the primary at `revision` (surplus keys deleted
 * only with `prune`), and records `revision` as applied.
 */
export async function fullDiff(
  ctx: SyncContext,
  revision: bigint,
  prune: boolean,
  progress: DiffProgress = new DiffProgress('diff', revision),
  onProgress?: (progress: SyncProgress) => void,
): Promise<DiffStats> {
  const { scope, writer, leases, checkpoint, log, signal, options } = ctx;
  const started = progress.startedAt;
  log.info({ revision: revision.toString(), prune }, 'full diff started');
  const stats: DiffStats = { revision, scanned: 0, equal: 0, missing: 0, different: 0, surplus: 0, put: 0, deleted: 0, bytesWritten: 0, durationMs: 0 };
  const inScope = (kv: KeyValue): boolean => scope.inScope(kv.key);
  const range = { key: scope.keyPrefix, rangeEnd: scope.rangeEnd, pageSize: options.pageSize, signal };
  // The total for percent and ETA, read beside the scan; without it the progress has no total.
  const counting = ctx
    .retry('count primary keys', () => countKeys(ctx.primary, { key: range.key, rangeEnd: range.rangeEnd, revision }))
    .then((total) => (progress.keysTotal = total))
    .catch((err: unknown) => log.warn({ err: describeError(err) }, 'could not count the primary keys: the progress has no total'));
  const primaryPages = filterPages(
    counted(scanPages(ctx.primary, { ...range, revision }, ctx.retry), (n) => (progress.keysDone += n)),
    inScope,
  );
  const standbyPages = filterPages(scanPages(ctx.standby, range, ctx.retry), inScope);
  const same = (p: KeyValue, s: KeyValue): boolean => p.value.equals(s.value) && (p.lease === '0' ? s.lease === '0' : leases.current(p.lease) === s.lease);

  const queue = new PQueue({ concurrency: options.writeConcurrency });
  let failure: unknown;
  const chunker = new OpChunker({ maxOps: writer.opsPerTxn - 1, maxBytes: options.maxTxnBytes });
  const submit = async (chunk: WriteOp[]): Promise<void> => {
    // As many txns ready as in flight: enough to keep etcd busy, a bounded amount of memory.
    await queue.onSizeLessThan(options.writeConcurrency);
    if (failure !== undefined) throw failure;
    void queue.add(() => checkpoint.apply(chunk, revision)).catch((err: unknown) => {
      failure ??= err;
    });
  };
  let lastLogged = Date.now();
  let lastDrawn = 0;
  const reportProgress = (now: number): void => {
    progress.written = stats.put + stats.deleted;
    progress.bytesWritten = stats.bytesWritten;
    if (now - lastDrawn >= DRAW_INTERVAL_MS) {
      lastDrawn = now;
      onProgress?.(progress.snapshot(now));
    }
    if (now - lastLogged >= options.progressIntervalMs) {
      lastLogged = now;
      log.info(progressFields(progress.snapshot(now)), 'sync progress');
    }
  };

  for await (const findings of mergeJoin(primaryPages, standbyPages, same)) {
    if (signal.aborted) break;
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
          if (stats.surplus <= SURPLUS_LOGGED) log.info({ key: finding.standby.key.toString(), pruned: prune }, 'surplus key: only in the standby');
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
    }
    reportProgress(Date.now());
  }
  const last = chunker.flush();
  if (last) await submit(last);
  await queue.onIdle();
  if (failure !== undefined) throw failure;
  if (signal.aborted) throw new AbortedError();
  if (stats.put + stats.deleted === 0 || checkpoint.checkpointedRevision < revision) await checkpoint.apply([], revision);
  checkpoint.appliedRevision = revision;
  ctx.notePrimary(revision); // the primary answered at the pinned revision: it is at least there
  stats.durationMs = Date.now() - started;
  if (stats.surplus > SURPLUS_LOGGED) log.info({ surplus: stats.surplus, listed: SURPLUS_LOGGED }, 'more surplus keys not listed');
  await counting;
  progress.written = stats.put + stats.deleted;
  progress.bytesWritten = stats.bytesWritten;
  progress.finishedAt = Date.now();
  if (progress.finishedAt - started >= options.progressIntervalMs) log.info(progressFields(progress.snapshot()), 'sync progress');
  return stats;
}
