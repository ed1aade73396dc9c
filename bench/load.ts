/** What the benchmark and the profiler share: the keyspace they load and how they load it. */
import { type ChildProcess, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Etcd3 } from 'etcd3';
import { type WriteOp, nestOps, txnCapacity } from '../src/etcd/kv.js';
import { WRITE_DEFAULTS } from '../src/cli/options/common.js';
import { OpChunker } from '../src/sync/batch.js';

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

/** Runs a script's main: a failure is one line on stderr and exit 1, not a stack. */
export function runScript(name: string, main: () => Promise<void>): void {
  main().catch((err: unknown) => {
    process.stderr.write(`${name} failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}

function statusMb(child: ChildProcess, field: 'VmRSS' | 'VmHWM'): number {
  const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
  return Math.round(Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) / 1024);
}

/** A running child's resident memory now, in MB. */
export const rssMb = (child: ChildProcess): number => statusMb(child, 'VmRSS');
/** A running child's peak resident memory so far (the kernel's high-water mark), in MB. */
export const peakRssMb = (child: ChildProcess): number => statusMb(child, 'VmHWM');

const CLOCK_TICKS_PER_SECOND = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

/**
 * CPU time (user + system, all threads) a running process has used so far, in seconds, to the
 * kernel's clock tick (10 ms): the processes of a measurement share the machine's cores, and
 * their sum over the cores bounds how fast it can go.
 */
export function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) throw new Error('CPU time of a process that is not running');
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command's closing parenthesis, from field 3 (state): utime is 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
}

/** This process's own CPU time so far, in seconds. */
export function ownCpuSeconds(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}

/** Kubernetes-shaped keys spread over 100 namespaces. */
export const benchKey = (i: number): string => `/registry/configmaps/ns-${i % 100}/cm-${String(i).padStart(8, '0')}`;

/**
 * Txns in flight for the ceiling. With txns of 127 puts, 4 in flight took 2.44-2.45 s for 100k
 * keys into a fresh etcd against 1.78-2.04 s with 16; with nested txns of ~1 MiB, 4, 8 and 16 were
 * within the noise (1.6-1.9 s at 100k; 14.8, 15.4, 14.7 s at 1M). The ceiling is the fastest
 * batched write, not a slower one.
 */
const CEILING_TXNS_IN_FLIGHT = 16;

/**
 * Batched puts of keys [from, to) in txns as large as etcd-sync writes (nested, see txnCapacity:
 * ~960 keys of 1 KiB, against 127 flat), CEILING_TXNS_IN_FLIGHT in flight: the write ceiling.
 * Flat txns of 127 took 18.5 s for 1M keys where these took 14.7 s.
 */
export async function batchedWrite(client: Etcd3, from: number, to: number, value = VALUE): Promise<void> {
  const raw = (op: WriteOp): object => (op.type === 'put' ? { request_put: { key: op.key, value: op.value } } : { request_delete_range: { key: op.key } });
  const chunks = (function* (): Generator<WriteOp[]> {
    const chunker = new OpChunker({ maxOps: txnCapacity(WRITE_DEFAULTS.maxTxnOps) - 1, maxBytes: WRITE_DEFAULTS.maxTxnBytes });
    for (let i = from; i < to; i++) {
      const full = chunker.add({ type: 'put', key: Buffer.from(benchKey(i)), value });
      if (full) yield full;
    }
    const last = chunker.flush();
    if (last) yield last;
  })();
  const worker = async (): Promise<void> => {
    for (let chunk = chunks.next(); !chunk.done; chunk = chunks.next()) {
      const success = nestOps(chunk.value, WRITE_DEFAULTS.maxTxnOps).map((op) => (op.type === 'txn' ? { request_txn: { success: op.success.map(raw) } } : raw(op)));
      await client.kv.txn({ compare: [], success, failure: [] } as never);
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
