/**
 * The hold before a mass delete (see delete-guard.ts): recorded in the standby behind the
 * leader's fence, then watched: what waits on the primary after the held revision, by resource
 * and namespace, and whether the primary compacted past it.
 */
import { groupOf } from '../diff/report.js';
import { CompactedError, describeError } from '../errors.js';
import { countKeys } from '../etcd/kv.js';
import { WatchStream } from '../etcd/watch.js';
import { type ControlKeys, type ControlRecord, encodeControlRecord } from './control-keys.js';
import type { SyncContext } from './context.js';
import { type DeleteBurst, type HeldState, describeBurst } from './delete-guard.js';
import { AbortedError, delay } from './retry.js';

/** Records the hold (the held control key, behind the leader's fence) and says so in the log. */
export async function recordHold(ctx: SyncContext, keys: ControlKeys, burst: DeleteBurst): Promise<ControlRecord> {
  const record: ControlRecord = { what: 'hold', by: ctx.options.identity, at: new Date().toISOString(), reason: describeBurst(burst), revision: burst.heldRevision.toString() };
  await ctx.writer.write([], [{ type: 'put', key: keys.held, value: encodeControlRecord(record) }]);
  ctx.log.error(
    { heldRevision: burst.heldRevision.toString(), burstRevision: burst.burstRevision.toString(), deletes: burst.deletes, threshold: burst.threshold, inScopeKeys: burst.inScopeKeys, rule: burst.rule },
    `delete guard: holding the standby at primary revision ${burst.heldRevision} before a mass delete: ${describeBurst(burst)}; etcd-sync resume --accept-deletes applies it, etcd-sync promote promotes the image before it`,
  );
  return record;
}

/** How often a hold looks whether the primary compacted past the held revision. */
const COMPACTION_PROBE_MS = 5_000;

/**
 * Whether the primary still has the held revision: a count of the one prefix key at that
 * revision (no value read), which etcd refuses once compacted past it.
 */
async function stillHasRevision(ctx: SyncContext, revision: bigint): Promise<boolean> {
  try {
    await countKeys(ctx.primary, { key: ctx.scope.keyPrefix, rangeEnd: Buffer.concat([ctx.scope.keyPrefix, Buffer.from([0])]), revision });
    return true;
  } catch (err) {
    if (err instanceof CompactedError) return false;
    throw err;
  }
}

/** Says, once and loudly, that the primary compacted past the held revision. */
function noteCompacted(ctx: SyncContext, held: HeldState, err: unknown): void {
  if (held.compacted) return;
  held.compacted = true;
  ctx.log.error(
    { heldRevision: held.revision.toString(), err: describeError(err) },
    `delete guard: the primary compacted past the held revision ${held.revision}: the held deletes can no longer be replayed; the held image stays intact, and only resume --accept-deletes (a full resync; then check --repair --prune removes what the burst deleted) or promote remain`,
  );
}

/** Counts the primary's in-scope changes after the held revision, and looks for its compaction, until the engine stops. */
export async function watchHeld(ctx: SyncContext, held: HeldState): Promise<void> {
  const probing = (async () => {
    while (!held.compacted && (await delay(COMPACTION_PROBE_MS, ctx.signal))) {
      try {
        if (!(await stillHasRevision(ctx, held.revision))) noteCompacted(ctx, held, new CompactedError(`primary revision ${held.revision} compacted`, undefined));
      } catch {
        // An unreachable primary shows in primary_up and the lag.
      }
    }
  })();
  try {
    await watchPending(ctx, held);
  } finally {
    await probing;
  }
}

/** Counts the primary's in-scope changes after the held revision, until the engine stops. */
async function watchPending(ctx: SyncContext, held: HeldState): Promise<void> {
  let next = held.revision + 1n;
  while (!ctx.signal.aborted) {
    try {
      const watch = await ctx.retry('watch primary', () => WatchStream.open(ctx.primary, { key: ctx.scope.keyPrefix, rangeEnd: ctx.scope.rangeEnd, startRevision: next, silenceTimeoutMs: ctx.options.primaryTimeoutMs }, ctx.signal));
      const onAbort = (): void => watch.close();
      ctx.signal.addEventListener('abort', onAbort, { once: true });
      // A silent primary still answers progress requests: the watch is not taken for dead.
      const progress = setInterval(() => watch.requestProgress(), ctx.options.idleProgressMs);
      try {
        for await (const message of watch.messages()) {
          if (message.kind !== 'events') {
            ctx.notePrimary(message.revision);
            continue;
          }
          for (const event of message.events) {
            if (!ctx.scope.inScope(event.key)) continue;
            if (event.type === 'put') held.pendingPuts++;
            else {
              held.pendingDeletes++;
              const group = groupOf(event.key, ctx.scope.keyPrefix);
              held.deletesByGroup.set(group, (held.deletesByGroup.get(group) ?? 0) + 1);
            }
            next = event.modRevision + 1n;
          }
          ctx.notePrimary(message.headerRevision);
        }
        if (ctx.signal.aborted) return;
      } finally {
        clearInterval(progress);
        ctx.signal.removeEventListener('abort', onAbort);
        watch.close();
      }
    } catch (err) {
      if (err instanceof AbortedError || ctx.signal.aborted) return;
      if (err instanceof CompactedError) noteCompacted(ctx, held, err);
      else ctx.log.warn({ err: describeError(err) }, 'delete guard: watching the primary while held failed, retrying');
      if (!(await delay(held.compacted ? 60_000 : 1_000, ctx.signal))) return;
    }
  }
}
