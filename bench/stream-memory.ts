/**
 * `npm run bench:stream-memory [-- --keys N --value-bytes B --writers W]`: the peak RSS of
 * `etcd-sync run`, started as the container image starts node, while it streams N single-key
 * writes of B-byte values (default 12,000 x 32 KiB: Kubernetes objects of the larger kind) made by
 * W concurrent clients of the primary, as apiservers do. The initial sync has nothing to copy, so
 * the peak is the stream's. Then the standby's "garbage collector" deletes all N keys at once, and
 * the self-healer puts them back: the time until all are back, and the peak RSS after that. Run on
 * Node 24 with `PATH=.tools/node24/bin:$PATH npm run bench:stream-memory`.
 */
import { startPair } from '../test/helpers/etcd.js';
import { type CliProcess, runCli } from '../test/helpers/sync.js';
import { waitFor } from '../test/helpers/wait.js';
import { IMAGE_NODE_FLAGS, IMAGE_NODE_OPTIONS, optionValue, peakRssMb, rssMb, runScript } from './load.js';

const KEYS = Number(optionValue('--keys', '12000'));
const VALUE_BYTES = Number(optionValue('--value-bytes', '32768'));
const WRITERS = Number(optionValue('--writers', '8'));

const key = (i: number): string => `/registry/configmaps/ns-${i % 50}/cm-${String(i).padStart(8, '0')}`;
const exited = (cli: CliProcess): boolean => cli.child.exitCode !== null || cli.child.signalCode !== null;
/** Why a CLI that exited did: node's fatal error line (e.g. out of heap), or the end of its output. */
const exitReason = (cli: CliProcess): string => `${cli.child.signalCode ?? cli.child.exitCode}: ${/FATAL ERROR[^\n]*/.exec(cli.output())?.[0] ?? cli.output().slice(-300)}`;
const value = (i: number): Buffer => Buffer.alloc(VALUE_BYTES, 97 + (i % 26));

async function main(): Promise<void> {
  for (const [name, n] of [
    ['--keys', KEYS],
    ['--value-bytes', VALUE_BYTES],
    ['--writers', WRITERS],
  ] as const) {
    if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a whole number of at least 1, not ${optionValue(name, '')}`);
  }
  const { primary: p, standby: s } = await startPair();
  const pc = p.client();
  const sc = s.client();
  let sync: CliProcess | undefined;
  /** Waits until the standby holds all the keys; fails at once, with node's reason, when etcd-sync exits meanwhile. */
  const allOnStandby = async (cli: CliProcess, during: string): Promise<void> => {
    await waitFor(async () => Number(await sc.getAll().prefix('/registry/configmaps/').count()) === KEYS || exited(cli), { timeoutMs: 600_000, intervalMs: 100 });
    if (exited(cli)) throw new Error(`etcd-sync exited while it ${during}, ${exitReason(cli)}`);
  };
  try {
    sync = runCli(['run', ...p.cliArgs('primary'), ...s.cliArgs('standby'), '--http-address', 'off', '--check-interval', '0'], { NODE_OPTIONS: IMAGE_NODE_OPTIONS }, IMAGE_NODE_FLAGS);
    await sync.waitForLog('streaming from revision', 60_000);
    const atStart = rssMb(sync.child);
    const started = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: WRITERS }, async () => {
        for (let i = next++; i < KEYS; i = next++) await pc.put(key(i)).value(value(i)).exec();
      }),
    );
    const written = (performance.now() - started) / 1000;
    await allOnStandby(sync, 'streamed');
    const copied = (performance.now() - started) / 1000;
    const last = await sc.get(key(KEYS - 1)).buffer();
    if (!last?.equals(value(KEYS - 1))) throw new Error(`the standby's ${key(KEYS - 1)} is not the primary's`);
    const streamedPeak = peakRssMb(sync.child);
    const deletedAt = performance.now();
    await sc.delete().prefix('/registry/configmaps/').exec();
    await allOnStandby(sync, 'put the keys back');
    const healed = (performance.now() - deletedAt) / 1000;
    const restored = (sync.output().match(/restored key from the primary/g) ?? []).length;
    if (restored !== KEYS) throw new Error(`${restored} keys logged as restored, not ${KEYS}`);
    console.log(`| etcd-sync run, ${KEYS} keys x ${VALUE_BYTES} B, Node ${process.version}, NODE_OPTIONS=${IMAGE_NODE_OPTIONS}, node flags ${IMAGE_NODE_FLAGS.join(' ')} | time | peak RSS |`);
    console.log('|---|---|---|');
    console.log(`| streamed: ${WRITERS} writers, one key per write (RSS ${atStart} MB when streaming began) | written in ${written.toFixed(1)} s (${Math.round(KEYS / written)}/s), all on the standby after ${copied.toFixed(1)} s | ${streamedPeak} MB |`);
    console.log(`| all ${KEYS} deleted on the standby at once, put back by the self-healer (1 s heal delay included) | ${healed.toFixed(1)} s | ${peakRssMb(sync.child)} MB |`);
  } finally {
    if (sync) {
      sync.child.kill('SIGTERM');
      await sync.exited;
    }
    pc.close();
    sc.close();
    await Promise.all([p.destroy(), s.destroy()]);
  }
}

runScript('stream-memory', main);
