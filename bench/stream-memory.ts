/**
 * `npm run bench:stream-memory [-- --keys N --value-bytes B --writers W]`: the peak RSS of
 * `etcd-sync run`, started as the container image starts node, while it streams N single-key
 * writes of B-byte values (default 12,000 x 32 KiB: Kubernetes objects of the larger kind) made by
 * W concurrent clients of the primary, as apiservers do. The initial sync has nothing to copy, so
 * the peak is the stream's. Run on Node 24 with `PATH=.tools/node24/bin:$PATH npm run bench:stream-memory`.
 */
import { EtcdServer } from '../test/helpers/etcd.js';
import { type CliProcess, runCli } from '../test/helpers/sync.js';
import { waitFor } from '../test/helpers/wait.js';
import { IMAGE_NODE_FLAGS, IMAGE_NODE_OPTIONS, optionValue, peakRssMb, rssMb } from './load.js';

const KEYS = Number(optionValue('--keys', '12000'));
const VALUE_BYTES = Number(optionValue('--value-bytes', '32768'));
const WRITERS = Number(optionValue('--writers', '8'));

const key = (i: number): string => `/registry/configmaps/ns-${i % 50}/cm-${String(i).padStart(8, '0')}`;
const value = (i: number): Buffer => Buffer.alloc(VALUE_BYTES, 97 + (i % 26));

async function main(): Promise<void> {
  for (const [name, n] of [
    ['--keys', KEYS],
    ['--value-bytes', VALUE_BYTES],
    ['--writers', WRITERS],
  ] as const) {
    if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a whole number of at least 1, not ${optionValue(name, '')}`);
  }
  const [p, s] = await Promise.all([EtcdServer.start({ name: 'primary' }), EtcdServer.start({ name: 'standby' })]);
  const pc = p.client();
  const sc = s.client();
  let sync: CliProcess | undefined;
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
    await waitFor(async () => Number(await sc.getAll().prefix('/registry/configmaps/').count()) === KEYS, { timeoutMs: 600_000, intervalMs: 100 });
    const copied = (performance.now() - started) / 1000;
    const last = await sc.get(key(KEYS - 1)).buffer();
    if (!last?.equals(value(KEYS - 1))) throw new Error(`the standby's ${key(KEYS - 1)} is not the primary's`);
    console.log(`| etcd-sync run streaming ${KEYS} writes x ${VALUE_BYTES} B, ${WRITERS} writers, Node ${process.version} | written in | on the standby after | RSS streaming began at | peak RSS |`);
    console.log('|---|---|---|---|---|');
    console.log(`| NODE_OPTIONS=${IMAGE_NODE_OPTIONS}, node flags ${IMAGE_NODE_FLAGS.join(' ')} | ${written.toFixed(1)} s (${Math.round(KEYS / written)}/s) | ${copied.toFixed(1)} s | ${atStart} MB | ${peakRssMb(sync.child)} MB |`);
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

main().catch((err: unknown) => {
  process.stderr.write(`stream-memory failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
