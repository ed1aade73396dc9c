/**
 * `npm run bench [-- --keys N]`: etcd-sync against the batched-write ceiling and `etcdctl make-mirror`,
 * on one machine in one run (compare ratios, not absolute times). Prints a markdown table and
 * writes bench/results.json. Measures (issue 6): 1 the ceiling, 2 the initial sync by etcd-sync
 * and by make-mirror, 3 streaming catch-up of single-key revisions, 5 `check` time and peak RSS,
 * 6 a restart after a compaction gap in which 1% of the keys changed, 7 peak RSS of `run`.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Etcd3 } from 'etcd3';
import { EtcdServer } from '../test/helpers/etcd.js';
import { type CliProcess, runCli } from '../test/helpers/sync.js';
import { waitFor } from '../test/helpers/wait.js';
import { batchedWrite, benchKey, optionValue } from './load.js';

const KEYS = Number(optionValue('--keys', '100000'));
const STREAM = Number(optionValue('--stream', String(Math.min(KEYS, 20_000))));
const ETCDCTL = process.env.ETCDCTL_BIN ?? path.join(path.dirname(process.env.ETCD_BIN ?? '.tools/etcd-3.5/usr/bin/etcd'), 'etcdctl');
const key = benchKey;

async function count(client: Etcd3): Promise<number> {
  const res = await client.kv.range({ key: Buffer.from('/registry/'), range_end: Buffer.from('/registry0'), count_only: true });
  return Number(res.count);
}

async function revision(client: Etcd3): Promise<number> {
  return Number((await client.kv.range({ key: Buffer.from('x') })).header.revision);
}

function peakRssMb(child: ChildProcess): number {
  const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
}

async function stop(cli: CliProcess): Promise<void> {
  cli.child.kill('SIGTERM');
  await cli.exited;
}

const seconds = (ms: number): number => Math.round(ms) / 1000;

async function main(): Promise<void> {
  const machine = `${execFileSync('nproc').toString().trim()} cores, ${process.version}, ${execFileSync(process.env.ETCD_BIN ?? '.tools/etcd-3.5/usr/bin/etcd', ['--version']).toString().split('\n')[0]}`;
  console.error(`bench: ${KEYS} keys x 1 KiB, ${STREAM} streamed revisions; ${machine}`);
  const [primary, standby, mirrorDest] = await Promise.all([
    EtcdServer.start({ name: 'primary' }),
    EtcdServer.start({ name: 'standby' }),
    EtcdServer.start({ name: 'mirror' }),
  ]);
  const p = primary.client();
  const s = standby.client();
  const m = mirrorDest.client();
  const results: Record<string, number | string> = { keys: KEYS, streamed: STREAM, machine };
  try {
    // 1. The ceiling: batched writes of N keys into a fresh etcd.
    let t = performance.now();
    await batchedWrite(p, 0, KEYS);
    results.ceilingSeconds = seconds(performance.now() - t);

    // 2a. Initial sync by etcd-sync (diff into an empty standby), and its peak RSS (7).
    const args = ['run', ...primary.cliArgs('primary'), ...standby.cliArgs('standby'), '--http-address', 'off', '--check-interval', '0'];
    t = performance.now();
    let sync = runCli(args);
    await sync.waitForLog('initial sync done', 600_000);
    results.etcdSyncInitialSeconds = seconds(performance.now() - t);
    results.etcdSyncInitialDiffMs = Number(/"durationMs":(\d+)/.exec(sync.output())?.[1]);
    results.runPeakRssMb = Math.round(peakRssMb(sync.child));

    // 2b. make-mirror of the same keys into a fresh etcd.
    t = performance.now();
    const mirror = spawn(ETCDCTL, ['--endpoints', primary.endpoint, 'make-mirror', '--prefix', '/registry/', mirrorDest.endpoint], { stdio: 'ignore' });
    await waitFor(async () => (await count(m)) >= KEYS, { timeoutMs: 1_800_000, intervalMs: 250 });
    results.makeMirrorInitialSeconds = seconds(performance.now() - t);

    // 3. Streaming catch-up: with the sync stopped, STREAM single-key revisions, then start and time the catch-up.
    await stop(sync);
    for (let i = 0; i < STREAM; i += 200) {
      await Promise.all(Array.from({ length: Math.min(200, STREAM - i) }, (_, j) => p.put(key((i + j) % KEYS)).value(`s${i + j}`).exec()));
    }
    const target = await revision(p);
    const checkpointAt = async (): Promise<number> => {
      const res = await s.kv.range({ key: Buffer.from('/etcd-sync/checkpoint') });
      return res.kvs[0] ? Number(JSON.parse(res.kvs[0].value.toString()).revision) : 0;
    };
    t = performance.now();
    sync = runCli(args);
    await waitFor(async () => (await checkpointAt()) >= target, { timeoutMs: 600_000, intervalMs: 100 });
    results.etcdSyncCatchUpSeconds = seconds(performance.now() - t);
    results.etcdSyncCatchUpRevisionsPerSecond = Math.round(STREAM / (performance.now() - t) * 1000);
    // make-mirror followed live: time until its copy has the last streamed value.
    const last = `s${STREAM - 1}`;
    t = performance.now();
    await waitFor(async () => (await m.get(key((STREAM - 1) % KEYS)).string()) === last, { timeoutMs: 600_000, intervalMs: 100 });
    results.makeMirrorLagAfterStreamSeconds = seconds(performance.now() - t);
    mirror.kill('SIGTERM');

    // 5. check: time and peak RSS in one run (GNU time, when installed).
    const checkArgs = ['check', ...primary.cliArgs('primary'), ...standby.cliArgs('standby'), '--output', 'json'];
    const timed = existsSync('/usr/bin/time');
    const [cmd, cmdArgs] = timed
      ? ['/usr/bin/time', ['-f', 'RSS_KB=%M', process.execPath, 'dist/bin/etcd-sync.js', ...checkArgs]]
      : [process.execPath, ['dist/bin/etcd-sync.js', ...checkArgs]];
    t = performance.now();
    const check = spawnSync(cmd, cmdArgs, { encoding: 'utf8' });
    results.checkSeconds = seconds(performance.now() - t);
    results.checkConsistent = String((JSON.parse(check.stdout) as { consistent: boolean }).consistent);
    results.checkPeakRssMb = timed ? Math.round(Number(/RSS_KB=(\d+)/.exec(check.stderr)?.[1] ?? 0) / 1024) : 'n/a (no /usr/bin/time)';

    // 6. Restart after a compaction gap in which 1% of the keys changed: only those should be written.
    await stop(sync);
    const changed = Math.max(1, Math.floor(KEYS / 100));
    await batchedWrite(p, 0, changed, Buffer.alloc(1024, 0x62));
    await p.kv.compact({ revision: String(await revision(p)), physical: true });
    t = performance.now();
    sync = runCli(args);
    await sync.waitForLog('initial sync done', 600_000);
    results.compactionRestartSeconds = seconds(performance.now() - t);
    results.compactionRestartKeysWritten = Number(/"put":(\d+)/.exec(sync.output().split('\n').find((l) => l.includes('initial sync done')) ?? '')?.[1]);
    results.compactionRestartKeysChanged = changed;
    await stop(sync);
  } finally {
    p.close();
    s.close();
    m.close();
    await Promise.all([primary.destroy(), standby.destroy(), mirrorDest.destroy()]);
  }

  const r = results as Record<string, number>;
  const rows = [
    ['ceiling: batched write of N keys', `${r.ceilingSeconds} s`, ''],
    ['initial sync, etcd-sync (process start to done)', `${r.etcdSyncInitialSeconds} s`, `${(r.etcdSyncInitialSeconds! / r.ceilingSeconds!).toFixed(2)}x the ceiling`],
    ['initial sync, make-mirror', `${r.makeMirrorInitialSeconds} s`, `etcd-sync ${(r.makeMirrorInitialSeconds! / r.etcdSyncInitialSeconds!).toFixed(1)}x faster`],
    [`catch-up of ${STREAM} single-key revisions, etcd-sync (replay + diff)`, `${r.etcdSyncCatchUpSeconds} s`, `${r.etcdSyncCatchUpRevisionsPerSecond} rev/s`],
    ['make-mirror still behind once the same stream was written (it followed live; not a rate)', `${r.makeMirrorLagAfterStreamSeconds} s`, ''],
    ['check (latest at checkpoint)', `${r.checkSeconds} s`, `peak RSS ${r.checkPeakRssMb} MB`],
    ['restart after compaction, 1% changed', `${r.compactionRestartSeconds} s`, `${r.compactionRestartKeysWritten} keys written, ${r.compactionRestartKeysChanged} changed`],
    ['run: peak RSS during the initial sync', `${r.runPeakRssMb} MB`, ''],
  ];
  const table = [`| measure (${KEYS} keys x 1 KiB; ${machine}) | value | ratio |`, '|---|---|---|', ...rows.map((row) => `| ${row.join(' | ')} |`)].join('\n');
  writeFileSync('bench/results.json', `${JSON.stringify(results, null, 2)}\n`);
  process.stdout.write(`${table}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
