/**
 * The full diff: the primary's in-scope keys at one pinned revision against the standby's,
 * merged in key order, writing only what differs, several txns in flight (their order does not
 * matter: each carries the same checkpoint, the diff's revision). Memory is bounded by a page
 * per side and the write queue. It runs at the first start, after a restart whose checkpoint
 * was compacted away, and after the watch met compaction.
 */
import PQueue from 'p-queue';
import { type KeyValue, type WriteOp, scanPages } from '../etcd/kv.js';
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

export interface SyncProgress {
  phase: 'diff';
  scanned: number;
  written: number;
  bytesWritten: number;
  keysPerSecond: number;
}

/** Surplus keys listed in the log, one line each; the rest are counted. */
const SURPLUS_LOGGED = 20;

/**
 * Makes the standby's in-scope keys those of the primary at `revision` (surplus keys deleted
 * only with `prune`), and records `revision` as applied.
 */
export async function fullDiff(ctx: SyncContext, revision: bigint, prune: boolean, onProgress?: (progress: SyncProgress) => void): Promise<DiffStats> {
  const { scope, writer, leases, checkpoint, log, signal, options } = ctx;
  const started = Date.now();
  log.info({ revision: revision.toString(), prune }, 'full diff started');
  const stats: DiffStats = { revision, scanned: 0, equal: 0, missing: 0, different: 0, surplus: 0, put: 0, deleted: 0, bytesWritten: 0, durationMs: 0 };
  const inScope = (kv: KeyValue): boolean => scope.inScope(kv.key);
  const range = { key: scope.keyPrefix, rangeEnd: scope.rangeEnd, pageSize: options.pageSize, signal };
  const primaryPages = filterPages(scanPages(ctx.primary, { ...range, revision }, ctx.retry), inScope);
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
    log.info(progress, 'sync progress');
    onProgress?.(progress);
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
      if (Date.now() - lastProgress >= options.progressIntervalMs) {
        lastProgress = Date.now();
        reportProgress();
      }
    }
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
  if (stats.scanned > 0 && Date.now() - started >= options.progressIntervalMs) reportProgress();
  return stats;
}
