/**
 * Replication lag probe (issue 6, item 4): writes timestamped 1 KiB values to the primary at
 * a fixed rate (open loop: the schedule does not wait for replies), each a txn of one put over
 * a lean writer of its own (RawPutter), and watches a destination with etcd3's watcher:
 * the standby, the mirror, or the primary itself for the floor. The lag of a write is the
 * time from issuing its put to seeing it arrive in the destination's watch; both ends run in
 * this process, so one clock measures both. A write counts as delivered when it, or a write
 * the primary applied to the same key after it, arrives. With `alsoWatchPrimary`, the probe
 * also watches the primary in the same round: the floor of these very writes, under the
 * round's load (see LagResult.samePrimary).
 */
import type { Etcd3, Watcher } from 'etcd3';
import { prefixEnd } from '../src/scope.js';
import { RawPutter } from './raw-put.js';

export interface LagResult {
  /** Writes per second asked for, and achieved by the writer. */
  rate: number;
  achievedRate: number;
  writes: number;
  /** Writes never seen in the destination's watch within the drain limit. */
  unseen: number;
  /** Probe keys whose value at the destination still differs from the primary's 30 s after the drain. */
  keysDiffering: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Median lag of the last third of the writes minus that of the first third: > 0 means falling behind. */
  growthMs: number;
  /**
   * p99 of the time from issuing a put to the primary's reply reaching the probe: the primary's
   * own responsiveness under the round's load (the replicator shares the two cores). A watch may
   * deliver a write before its reply, but where a replicator's lag tracks this, the primary (or
   * the probe) slowed, not the copy.
   */
  replyP99Ms: number;
  /**
   * With `alsoWatchPrimary`: the same writes' arrival in a watch of the primary, in the same
   * round. The floor measured apart (nothing replicating) is the lag of an idle pair; on 2
   * shared cores the standby and the replicator slow the primary itself (`replyP99Ms` shows it),
   * which this floor shares with the replica's lag, so that the ratio shows what the copy adds.
   */
  samePrimary?: { p50Ms: number; p99Ms: number; maxMs: number; unseen: number };
}

/** Where the probe writes: inside the synced prefix, apart from the bench's other keys. */
export const LAG_PREFIX = '/registry/configmaps/bench-lag/';

/** Distinct keys the probe cycles through (Kubernetes objects are rewritten in place too). */
export const PROBE_KEYS = 1000;
/** Writes in flight before the writer counts itself as the bottleneck and waits. */
const MAX_IN_FLIGHT = 2000;
const TICK_MS = 5;
/** How long the end state may take to equal the primary's after the drain before keys count as differing. */
const END_STATE_WAIT_MS = 30_000;

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

/** The middle value (the upper of the two middle ones for an even count); NaN for none. */
export const median = (values: readonly number[]): number => percentile([...values].sort((a, b) => a - b), 50);
const round1 = (n: number): number => Math.round(n * 10) / 10;

/**
 * The lag of each write (undefined: not delivered): until it, or a write the primary applied to
 * the same key after it, arrived in the destination's watch. A replicator may coalesce writes to
 * one key (last write wins), and concurrent puts to one key may reach the primary in another
 * order than the probe issued them, so "after" is by the primary's revision.
 */
export function deliveries(
  issued: number,
  issuedAt: readonly number[],
  revisionOf: readonly (number | undefined)[],
  seenAt: readonly (number | undefined)[],
): (number | undefined)[] {
  const lag: (number | undefined)[] = [];
  for (let key = 0; key < Math.min(PROBE_KEYS, issued); key++) {
    const writes: number[] = [];
    for (let id = key; id < issued; id += PROBE_KEYS) writes.push(id);
    // Latest revision first; a write without a reply (never applied, as far as the probe knows) last.
    writes.sort((a, b) => (revisionOf[b] ?? -1) - (revisionOf[a] ?? -1));
    let firstSeen = Number.POSITIVE_INFINITY;
    for (const id of writes) {
      const own = seenAt[id];
      if (revisionOf[id] === undefined) firstSeen = Number.POSITIVE_INFINITY;
      if (own !== undefined && own < firstSeen) firstSeen = own;
      if (firstSeen !== Number.POSITIVE_INFINITY) lag[id] = firstSeen - (issuedAt[id] as number);
    }
  }
  return lag;
}

/** Whether the primary's last write to some probe key has not arrived yet (every put answered). */
export function lastWritesUnseen(issued: number, revisionOf: readonly (number | undefined)[], seenAt: readonly (number | undefined)[]): boolean {
  const last = new Map<number, number>();
  for (let id = 0; id < issued; id++) {
    const key = id % PROBE_KEYS;
    const current = last.get(key);
    if (current === undefined || (revisionOf[id] ?? -1) > (revisionOf[current] ?? -1)) last.set(key, id);
  }
  for (const id of last.values()) if (seenAt[id] === undefined) return true;
  return false;
}

/** The primary the probe writes to: its endpoint for the writes (see RawPutter), a client for the end state. */
export interface LagPrimary {
  endpoint: string;
  client: Etcd3;
}

export async function measureLag(
  primary: LagPrimary,
  destination: Etcd3,
  options: { prefix: string; rate: number; seconds: number; drainMs?: number; alsoWatchPrimary?: boolean; endStateWaitMs?: number },
): Promise<LagResult> {
  const { prefix, rate, seconds } = options;
  const writer = primary.client;
  const issuedAt: number[] = [];
  /** The primary's revision of each write, from its put's reply. */
  const revisionOf: (number | undefined)[] = [];
  /** Issue to reply of each answered put, in reply order. */
  const replyMs: number[] = [];
  /** When each write itself arrived in the destination's watch. */
  const seenAt: (number | undefined)[] = [];
  /** When each write arrived in the primary's own watch (with alsoWatchPrimary). */
  const seenOnPrimaryAt: (number | undefined)[] = [];
  const watchArrivals = async (client: Etcd3, arrivals: (number | undefined)[]): Promise<Watcher> => {
    const watcher = await client.watch().prefix(prefix).create();
    watcher.on('put', (kv) => {
      const head = kv.value.toString('latin1', 0, 24);
      const id = Number(head.slice(0, head.indexOf(':')));
      arrivals[id] ??= performance.now();
    });
    return watcher;
  };
  const watchers = [await watchArrivals(destination, seenAt)];
  if (options.alsoWatchPrimary) watchers.push(await watchArrivals(writer, seenOnPrimaryAt));
  const putter = new RawPutter(primary.endpoint);
  const padding = Buffer.alloc(1024, 0x70);
  let issued = 0;
  let inFlight = 0;
  let failed: unknown;
  const started = performance.now();
  const endAt = started + seconds * 1000;
  while (performance.now() < endAt && failed === undefined) {
    const due = Math.floor(((performance.now() - started) / 1000) * rate);
    while (issued < due && inFlight < MAX_IN_FLIGHT) {
      const id = issued++;
      const value = Buffer.from(padding);
      value.write(`${id}:`, 0, 'latin1');
      issuedAt[id] = performance.now();
      inFlight++;
      putter
        .put(Buffer.from(`${prefix}k-${id % PROBE_KEYS}`), value)
        .then((revision) => {
          revisionOf[id] = Number(revision);
          replyMs.push(performance.now() - (issuedAt[id] as number));
          inFlight--;
        })
        .catch((err: unknown) => (failed = err));
    }
    await new Promise((resolve) => setTimeout(resolve, TICK_MS));
  }
  const writeSeconds = (performance.now() - started) / 1000;
  const drainUntil = performance.now() + (options.drainMs ?? 120_000);
  const lastUnseen = (): boolean => lastWritesUnseen(issued, revisionOf, seenAt) || (options.alsoWatchPrimary === true && lastWritesUnseen(issued, revisionOf, seenOnPrimaryAt));
  while ((inFlight > 0 || lastUnseen()) && performance.now() < drainUntil && failed === undefined) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  putter.close();
  for (const watcher of watchers) await watcher.cancel();
  if (failed !== undefined) throw failed;
  // Whatever the watch showed, the end state must be the primary's (a watch shows arrivals, not
  // what the destination holds at the end); waited for, in case the drain timed out.
  const range = { key: Buffer.from(prefix), range_end: prefixEnd(Buffer.from(prefix)) };
  const differing = async (): Promise<number> => {
    const [source, copy] = await Promise.all([writer.kv.range(range), destination.kv.range(range)]);
    const copied = new Map(copy.kvs.map((kv) => [kv.key.toString('latin1'), kv.value]));
    return source.kvs.filter((kv) => !copied.get(kv.key.toString('latin1'))?.equals(kv.value)).length + Math.max(0, copy.kvs.length - source.kvs.length);
  };
  const settleUntil = performance.now() + (options.endStateWaitMs ?? END_STATE_WAIT_MS);
  let keysDiffering = await differing();
  while (keysDiffering > 0 && performance.now() < settleUntil) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    keysDiffering = await differing();
  }
  /** The percentiles of the delivered writes' lags, and how many were not delivered. */
  const summary = (lag: readonly (number | undefined)[]): { p50Ms: number; p99Ms: number; maxMs: number; unseen: number } => {
    const sorted = lag
      .slice(0, issued)
      .filter((l): l is number => l !== undefined)
      .sort((a, b) => a - b);
    return { p50Ms: round1(percentile(sorted, 50)), p99Ms: round1(percentile(sorted, 99)), maxMs: round1(sorted[sorted.length - 1] ?? Number.NaN), unseen: issued - sorted.length };
  };
  const lag = deliveries(issued, issuedAt, revisionOf, seenAt);
  const { unseen, ...percentiles } = summary(lag);
  const third = Math.floor(issued / 3);
  const firstThird = lag.slice(0, third).filter((l): l is number => l !== undefined);
  const lastThird = lag.slice(issued - third, issued).filter((l): l is number => l !== undefined);
  return {
    rate,
    achievedRate: Math.round(issued / writeSeconds),
    writes: issued,
    unseen,
    keysDiffering,
    ...percentiles,
    growthMs: round1(median(lastThird) - median(firstThird)),
    replyP99Ms: round1(percentile(replyMs.sort((a, b) => a - b), 99)),
    ...(options.alsoWatchPrimary ? { samePrimary: summary(deliveries(issued, issuedAt, revisionOf, seenOnPrimaryAt)) } : {}),
  };
}
