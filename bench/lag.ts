/**
 * Replication lag probe (issue 6, item 4): writes timestamped 1 KiB values to the primary at
 * a fixed rate (open loop: the schedule does not wait for replies) and watches a destination,
 * the standby, the mirror, or the primary itself for the floor. The lag of a write is the
 * time from issuing its put to seeing it arrive in the destination's watch; both ends run in
 * this process, so one clock measures both. A write counts as delivered when it, or a later
 * write to the same key, arrives.
 */
import type { Etcd3 } from 'etcd3';

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
}

/** Where the probe writes: inside the synced prefix, apart from the bench's other keys. */
export const LAG_PREFIX = '/registry/configmaps/bench-lag/';

/** Distinct keys the probe cycles through (Kubernetes objects are rewritten in place too). */
const PROBE_KEYS = 1000;
/** Writes in flight before the writer counts itself as the bottleneck and waits. */
const MAX_IN_FLIGHT = 2000;
const TICK_MS = 5;
/** How long the end state may take to equal the primary's after the drain before keys count as differing. */
const END_STATE_WAIT_MS = 30_000;

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

const median = (values: number[]): number => percentile([...values].sort((a, b) => a - b), 50);
const round1 = (n: number): number => Math.round(n * 10) / 10;

export async function measureLag(
  writer: Etcd3,
  destination: Etcd3,
  options: { prefix: string; rate: number; seconds: number; drainMs?: number },
): Promise<LagResult> {
  const { prefix, rate, seconds } = options;
  const issuedAt: number[] = [];
  const lag: (number | undefined)[] = [];
  let seen = 0;
  const watcher = await destination.watch().prefix(prefix).create();
  watcher.on('put', (kv) => {
    const head = kv.value.toString('latin1', 0, 24);
    const id = Number(head.slice(0, head.indexOf(':')));
    const now = performance.now();
    // A replicator may coalesce writes to one key (last write wins): seeing a write also
    // delivers every earlier write to the same key that was not seen yet.
    for (let j = id; j >= 0 && lag[j] === undefined; j -= PROBE_KEYS) {
      const at = issuedAt[j];
      if (at === undefined) break;
      lag[j] = now - at;
      seen++;
    }
  });
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
      writer.kv
        .put({ key: Buffer.from(`${prefix}k-${id % PROBE_KEYS}`), value })
        .then(() => inFlight--)
        .catch((err: unknown) => (failed = err));
    }
    await new Promise((resolve) => setTimeout(resolve, TICK_MS));
  }
  const writeSeconds = (performance.now() - started) / 1000;
  const drainUntil = performance.now() + (options.drainMs ?? 120_000);
  while ((seen < issued || inFlight > 0) && performance.now() < drainUntil && failed === undefined) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await watcher.cancel();
  if (failed !== undefined) throw failed;
  // Whatever the watch showed, the end state must be the primary's. Not at once: concurrent
  // puts to one key may reach the primary in the opposite order of their ids, and then seeing
  // the later id (counted as delivering the earlier one) precedes the primary's last write.
  const range = { key: Buffer.from(prefix), range_end: Buffer.from(`${prefix.slice(0, -1)}0`) };
  const differing = async (): Promise<number> => {
    const [source, copy] = await Promise.all([writer.kv.range(range), destination.kv.range(range)]);
    const copied = new Map(copy.kvs.map((kv) => [kv.key.toString('latin1'), kv.value]));
    return source.kvs.filter((kv) => !copied.get(kv.key.toString('latin1'))?.equals(kv.value)).length + Math.max(0, copy.kvs.length - source.kvs.length);
  };
  const settleUntil = performance.now() + END_STATE_WAIT_MS;
  let keysDiffering = await differing();
  while (keysDiffering > 0 && performance.now() < settleUntil) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    keysDiffering = await differing();
  }
  const lags = lag.slice(0, issued).filter((l): l is number => l !== undefined);
  const sorted = [...lags].sort((a, b) => a - b);
  const third = Math.floor(issued / 3);
  const firstThird = lag.slice(0, third).filter((l): l is number => l !== undefined);
  const lastThird = lag.slice(issued - third, issued).filter((l): l is number => l !== undefined);
  return {
    rate,
    achievedRate: Math.round(issued / writeSeconds),
    writes: issued,
    unseen: issued - lags.length,
    keysDiffering,
    p50Ms: round1(percentile(sorted, 50)),
    p99Ms: round1(percentile(sorted, 99)),
    maxMs: round1(sorted[sorted.length - 1] ?? Number.NaN),
    growthMs: round1(median(lastThird) - median(firstThird)),
  };
}
