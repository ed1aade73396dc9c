/**
 * The replay after a restart: the primary's history from the checkpoint up to a revision,
 * applied in revision order, so that the standby passes only through states the primary had.
 * A short gap is followed over one watch; a long one is fetched in windows over parallel
 * watches and applied one window after the other.
 *
 * etcd (3.4-3.6) hands a watcher that starts in the past at most 1000 revisions per 100 ms
 * sync pass, so one watch replays about 5-10k revisions/s; watchers on consecutive windows are
 * served in the same pass. Each pass reads every revision from the oldest waiting watcher's to
 * the newest, however few it hands out, so more windows a pass cost the primary less
 * (bench/HISTORY.md, "replay windows").
 */
import { type WatchEvent, WatchStream } from '../etcd/watch.js';
import type { SyncContext } from './context.js';
import { AbortedError } from './retry.js';
import type { StreamPipeline } from './stream.js';

/** Fetched but not yet applied replay windows stop growing beyond about this many bytes. */
const REPLAY_BUFFER_BYTES = 64 * 1024 * 1024;
/** How often a window's watch asks for progress, so that a window ending in silence ends. */
const WINDOW_PROGRESS_MS = 100;

/** Applies the primary's history after the applied revision up to `untilRevision` (inclusive). */
export async function replay(ctx: SyncContext, pipeline: StreamPipeline, untilRevision: bigint): Promise<void> {
  const applied = ctx.checkpoint.appliedRevision;
  if (applied >= untilRevision) return;
  const window = BigInt(ctx.options.replayWindowRevisions);
  const gap = untilRevision - applied;
  ctx.log.info(
    { from: (applied + 1n).toString(), until: untilRevision.toString(), windows: gap > window ? ((gap + window - 1n) / window).toString() : '1' },
    'replaying primary history since checkpoint',
  );
  if (gap > window) await replayWindows(ctx, pipeline, untilRevision, window);
  else await pipeline.follow(untilRevision);
}

/** The replay of a long gap: windows fetched over parallel watches, applied one after the other. */
async function replayWindows(ctx: SyncContext, pipeline: StreamPipeline, until: bigint, window: bigint): Promise<void> {
  const checkpoint = ctx.checkpoint;
  const maxInFlight = ctx.options.replayWindows;
  const inFlight: { to: bigint; events: Promise<WatchEvent[]> }[] = [];
  let next = checkpoint.appliedRevision + 1n;
  let bytesPerWindow = 0;
  const launch = (): void => {
    // At least one window in flight; more while their expected size fits the buffer.
    while (next <= until && (inFlight.length === 0 || (inFlight.length < maxInFlight && (inFlight.length + 1) * bytesPerWindow <= REPLAY_BUFFER_BYTES))) {
      const from = next;
      const to = from + window - 1n < until ? from + window - 1n : until;
      next = to + 1n;
      const events = ctx.retry(`replay revisions ${from}-${to}`, () => fetchWindow(ctx, from, to));
      events.catch(() => undefined); // awaited in order below; a failure there ends the replay
      inFlight.push({ to, events });
    }
  };
  launch();
  for (let head = inFlight.shift(); head !== undefined; head = inFlight.shift()) {
    let events = await head.events;
    const verdict = pipeline.guard(events);
    if (verdict) events = events.slice(0, verdict.cut);
    pipeline.counters.replayWindowsFetched++;
    let bytes = 0;
    for (const e of events) bytes += e.key.length + e.value.length;
    bytesPerWindow = Math.max(bytesPerWindow * 0.8, bytes);
    launch();
    for (let done = 0; done < events.length; ) {
      const batch = pipeline.takeBatch(events.slice(done));
      // One txn at a time: chained txns in flight (as streaming sends them) made a replay
      // slower, most reaching etcd before their predecessor and sent again (bench/HISTORY.md).
      await pipeline.complete(pipeline.send(batch, false));
      done += batch.consumed;
    }
    if (verdict) await pipeline.stopBefore(verdict.burst);
    if (head.to > checkpoint.appliedRevision) checkpoint.appliedRevision = head.to;
    ctx.notePrimary();
    if (ctx.signal.aborted) throw new AbortedError();
  }
  await checkpoint.writeIfBehind();
}

/** Every in-scope event of revisions [from, to] of the primary, in order, over a watch of its own. */
async function fetchWindow(ctx: SyncContext, from: bigint, to: bigint): Promise<WatchEvent[]> {
  const watch = await WatchStream.open(
    ctx.primary,
    { key: ctx.scope.keyPrefix, rangeEnd: ctx.scope.rangeEnd, startRevision: from, silenceTimeoutMs: ctx.options.primaryTimeoutMs },
    ctx.signal,
  );
  // A window whose last revisions hold no watched key ends with a progress notification
  // (sent once the watcher has caught up) or with the first event after it.
  const progress = setInterval(() => watch.requestProgress(), WINDOW_PROGRESS_MS);
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
