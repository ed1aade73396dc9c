/** What the benchmark and the profiler share: the keyspace they load and how they load it. */
import type { Etcd3 } from 'etcd3';

/** `--name value` from argv, or the fallback. */
export function optionValue(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 ? (process.argv[i + 1] ?? fallback) : fallback;
}

export const VALUE = Buffer.alloc(1024, 0x61);

/**
 * How the container image (deploy/Dockerfile) starts node: its NODE_OPTIONS, and the flags of its
 * ENTRYPOINT that NODE_OPTIONS refuses. The benchmark runs etcd-sync as the image does;
 * test/deploy.test.ts keeps these equal to the Dockerfile's.
 */
export const IMAGE_NODE_OPTIONS = '--max-old-space-size=192 --max-semi-space-size=8';
export const IMAGE_NODE_FLAGS: readonly string[] = ['--heap-growing-percent=200'];

/** Kubernetes-shaped keys spread over 100 namespaces. */
export const benchKey = (i: number): string => `/registry/configmaps/ns-${i % 100}/cm-${String(i).padStart(8, '0')}`;

/**
 * Txns in flight for the ceiling: etcd-sync's default --write-concurrency. With 4, a fresh etcd
 * took 2.44-2.45 s for 100k keys against 1.78-2.04 s with 16 (3 rounds each), and 28.4 and 22.4 s
 * for 1M against 20.8 and 22.3 s: the ceiling is the fastest batched write, not a slower one.
 */
const CEILING_TXNS_IN_FLIGHT = 16;

/** Batched puts of keys [from, to), 127 per txn, CEILING_TXNS_IN_FLIGHT txns in flight: the write ceiling. */
export async function batchedWrite(client: Etcd3, from: number, to: number, value = VALUE): Promise<void> {
  let next = from;
  const worker = async (): Promise<void> => {
    while (next < to) {
      const start = next;
      next = Math.min(to, next + 127);
      const ops = [];
      for (let i = start; i < next; i++) ops.push({ request_put: { key: Buffer.from(benchKey(i)), value } });
      await client.kv.txn({ compare: [], success: ops, failure: [] } as never);
    }
  };
  await Promise.all(Array.from({ length: CEILING_TXNS_IN_FLIGHT }, worker));
}

/** `count` single-key revisions (as Kubernetes writes), 200 puts in flight, values `s<i>`, keys cycling over `keys`. */
export async function singleKeyRevisions(client: Etcd3, count: number, keys: number): Promise<void> {
  for (let i = 0; i < count; i += 200) {
    await Promise.all(Array.from({ length: Math.min(200, count - i) }, (_, j) => client.put(benchKey((i + j) % keys)).value(`s${i + j}`).exec()));
  }
}
