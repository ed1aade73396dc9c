/**
 * `npm run bench [-- --keys N --sync-rounds K --stream M --lag-seconds S --lag-rounds R --lag-rates 1000,2000,4000 --same-writes-floor]`: etcd-sync
 * against the batched-write ceiling and `etcdctl make-mirror` of the same etcd version, on one
 * machine in one run (compare ratios, not absolute times). Prints a markdown table and writes
 * bench/results-<N>.json. Measures, as issue 6 numbers them:
 * 1 the ceiling and 2 the initial sync by etcd-sync, in K alternating rounds (default 3), each
 * into a fresh etcd, and 1b the ceiling again while another process reads the primary (the reads
 * a sync must do, on the same cores); 2 the initial sync by make-mirror; 3 streaming catch-up of M single-key revisions by
 * etcd-sync, and make-mirror following the same writes live; 4 replication lag at fixed write
 * rates for both, next to the probe's floor (with --same-writes-floor, the probe also watches the
 * primary during the replicated rounds: the floor of those very writes, under their load); 5
 * `check` time and peak RSS; 6 a restart after a compaction gap in which 1% of the keys changed;
 * 7 peak RSS of `run` during the initial sync.
 * For 1, 2 and 4 it also reads each process's CPU time from /proc: the processes share the
 * machine's cores, so their CPU time over the cores bounds how fast a measurement can go here.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Etcd3 } from 'etcd3';
import { EtcdServer } from '../test/helpers/etcd.js';
import { type CliProcess, runCli } from '../test/helpers/sync.js';
import { waitFor } from '../test/helpers/wait.js';
import { LAG_PREFIX, type LagResult, measureLag, median } from './lag.js';
import { IMAGE_NODE_FLAGS, IMAGE_NODE_OPTIONS, batchedWrite, cpuSeconds, optionValue, ownCpuSeconds, peakRssMb, runScript, singleKeyRevisions } from './load.js';

const KEYS = Number(optionValue('--keys', '100000'));
const STREAM = Number(optionValue('--stream', '100000'));
const SYNC_ROUNDS = Number(optionValue('--sync-rounds', '3'));
const LAG_SECONDS = Number(optionValue('--lag-seconds', '10'));
const LAG_ROUNDS = Number(optionValue('--lag-rounds', '3'));
const LAG_RATES = optionValue('--lag-rates', '1000,2000,4000')
  .split(',')
  .filter(Boolean)
  .map(Number);
const SAME_WRITES_FLOOR = process.argv.includes('--same-writes-floor');
const ETCD_BIN = process.env.ETCD_BIN ?? '.tools/etcd-3.5/usr/bin/etcd';
const ETCDCTL = process.env.ETCDCTL_BIN ?? path.join(path.dirname(ETCD_BIN), 'etcdctl');
const MARKER = '/registry/configmaps/bench-marker/stream-done';
const HOUR = 3_600_000;
/**
 * NODE_OPTIONS and node flags for every etcd-sync process, as the container image sets them
 * (`--node-options ''` and `--node-flags ''` for node's defaults).
 */
const NODE_OPTIONS = optionValue('--node-options', IMAGE_NODE_OPTIONS);
const NODE_FLAGS = optionValue('--node-flags', IMAGE_NODE_FLAGS.join(' ')).split(' ').filter(Boolean);
const cliEnv = { NODE_OPTIONS };
const CORES = Number(execFileSync('nproc').toString().trim());

/** CPU seconds per process: the benchmark's processes share the machine's cores. */
type CpuUse = Record<string, number>;
const round2 = (n: number): number => Math.round(n * 100) / 100;

/** CPU seconds that each named process, and this one as `self` if named, use from now until the returned function is called. */
function cpuMeter(pids: Record<string, number | undefined>, self?: string): () => CpuUse {
  const start = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, cpuSeconds(pid)]));
  const ownStart = ownCpuSeconds();
  return () => {
    const used: CpuUse = {};
    for (const [name, pid] of Object.entries(pids)) used[name] = round2(cpuSeconds(pid) - (start[name] as number));
    if (self !== undefined) used[self] = round2(ownCpuSeconds() - ownStart);
    return used;
  };
}

const cpuTotal = (use: CpuUse): number => Object.values(use).reduce((sum, s) => sum + s, 0);

/** "a 0.8 + b 1.6 = 2.4": each process's median over the rounds, and the median of the rounds' totals. */
function cpuSummary(rounds: readonly CpuUse[], unit: string): string {
  const names = Object.keys(rounds[0] ?? {});
  const parts = names.map((name) => `${name} ${round2(median(rounds.map((use) => use[name] ?? 0)))}`);
  return `${parts.join(' + ')} = ${round2(median(rounds.map(cpuTotal)))} ${unit}`;
}

async function count(client: Etcd3): Promise<number> {
  const res = await client.kv.range({ key: Buffer.from('/registry/'), range_end: Buffer.from('/registry0'), count_only: true });
  return Number(res.count);
}

async function revision(client: Etcd3): Promise<number> {
  return Number((await client.kv.range({ key: Buffer.from('x') })).header.revision);
}

/** Process output up to the first line containing `text`. */
function waitForOutput(child: ChildProcess, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (out.includes(text)) {
        child.stdout?.off('data', onData);
        resolve(out);
      }
    };
    child.stdout?.on('data', onData);
    child.once('exit', (code) => reject(new Error(`${text}: the process exited (${code}) first; it printed ${JSON.stringify(out)}`)));
  });
}

/**
 * The ceiling (batched write of N keys into a fresh etcd) while bench/scan-primary.ts reads the
 * primary's N keys with etcd-sync's reader in a process of its own, timed from the scan's start
 * to the later of the two.
 */
async function ceilingWithScan(primary: EtcdServer, startTimer: () => number): Promise<number> {
  const scanner = spawn(process.execPath, [...NODE_FLAGS, path.resolve('dist/bench/scan-primary.js'), JSON.stringify(primary.sideConfig('primary'))], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, ...cliEnv },
  });
  try {
    return await withFreshEtcd(async (c) => {
      await waitForOutput(scanner, 'ready');
      const scanned = waitForOutput(scanner, 'scanned ');
      // If the writes fail, the scanner is killed below and this rejects unawaited.
      scanned.catch(() => undefined);
      const t = startTimer();
      scanner.stdin?.write('go\n');
      await batchedWrite(c, 0, KEYS);
      const out = await scanned;
      if (!out.includes(`scanned ${KEYS}\n`)) throw new Error(`the scan of the primary read other than ${KEYS} keys: ${out.trim()}`);
      return since(t);
    });
  } finally {
    scanner.kill();
  }
}

/** Runs `use` with a client of a fresh etcd (the ceiling's), stopped and removed after. */
async function withFreshEtcd<T>(use: (client: Etcd3, server: EtcdServer) => Promise<T>): Promise<T> {
  const ceiling = await EtcdServer.start({ name: 'ceiling' });
  const client = ceiling.client();
  try {
    return await use(client, ceiling);
  } finally {
    client.close();
    await ceiling.destroy();
  }
}

async function stop(cli: CliProcess): Promise<void> {
  cli.child.kill('SIGTERM');
  await cli.exited;
}

function startMirror(source: EtcdServer, destination: EtcdServer, prefix: string): ChildProcess {
  return spawn(ETCDCTL, ['--endpoints', source.endpoint, 'make-mirror', '--prefix', prefix, destination.endpoint], { stdio: 'ignore' });
}

async function stopMirror(mirror: ChildProcess): Promise<void> {
  const exited = new Promise((resolve) => mirror.once('exit', resolve));
  mirror.kill('SIGTERM');
  await exited;
}

const seconds = (ms: number): number => Math.round(ms) / 1000;

/** Field by field median of the rounds of one measurement (unseen and differing keys: the worst). */
function medianOf(rounds: LagResult[]): LagResult {
  const med = (pick: (r: LagResult) => number): number => median(rounds.map(pick));
  const first = rounds[0] as LagResult;
  return {
    rate: first.rate,
    achievedRate: med((r) => r.achievedRate),
    writes: med((r) => r.writes),
    unseen: Math.max(...rounds.map((r) => r.unseen)),
    keysDiffering: Math.max(...rounds.map((r) => r.keysDiffering)),
    p50Ms: med((r) => r.p50Ms),
    p99Ms: med((r) => r.p99Ms),
    maxMs: med((r) => r.maxMs),
    growthMs: med((r) => r.growthMs),
    replyP99Ms: med((r) => r.replyP99Ms),
    ...(first.samePrimary
      ? {
          samePrimary: {
            p50Ms: med((r) => r.samePrimary?.p50Ms ?? Number.NaN),
            p99Ms: med((r) => r.samePrimary?.p99Ms ?? Number.NaN),
            maxMs: med((r) => r.samePrimary?.maxMs ?? Number.NaN),
            unseen: Math.max(...rounds.map((r) => r.samePrimary?.unseen ?? 0)),
          },
        }
      : {}),
  };
}
const since = (t: number): number => seconds(performance.now() - t);

async function main(): Promise<void> {
  if (!Number.isInteger(SYNC_ROUNDS) || SYNC_ROUNDS < 1) throw new Error(`--sync-rounds must be a whole number of at least 1, not ${optionValue('--sync-rounds', '')}`);
  const cpu = readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/)?.[1]?.trim() ?? 'unknown CPU';
  const etcdVersion = execFileSync(ETCD_BIN, ['--version']).toString().split('\n')[0];
  const machine = `${execFileSync('nproc').toString().trim()} cores (${cpu}), Node ${process.version}, ${etcdVersion}, etcd-sync NODE_OPTIONS=${NODE_OPTIONS || '(none)'}, node flags ${NODE_FLAGS.join(' ') || '(none)'}`;
  console.error(`bench: ${KEYS} keys x 1 KiB, ${STREAM} streamed revisions, lag ${LAG_RATES.join('/')} writes/s for ${LAG_SECONDS} s x ${LAG_ROUNDS} rounds; ${machine}`);
  const [primary, firstStandby, mirrorDest] = await Promise.all([
    EtcdServer.start({ name: 'primary' }),
    EtcdServer.start({ name: 'standby' }),
    EtcdServer.start({ name: 'mirror' }),
  ]);
  let standby = firstStandby;
  const p = primary.client();
  let s = standby.client();
  const m = mirrorDest.client();
  const r: Record<string, number | string> = { keys: KEYS, streamed: STREAM, machine, date: new Date().toISOString() };
  const lag: Record<string, LagResult> = {};
  const lagRounds: Record<string, LagResult[]> = {};
  /** Cores each process kept busy in each lag round (CPU seconds over the round's wall time). */
  const lagCpuRounds: Record<string, CpuUse[]> = {};
  const runArgsFor = (to: EtcdServer): string[] => ['run', ...primary.cliArgs('primary'), ...to.cliArgs('standby'), '--http-address', 'off', '--check-interval', '0'];
  let runArgs = runArgsFor(standby);
  const checkpointAt = async (): Promise<number> => {
    const res = await s.kv.range({ key: Buffer.from('/etcd-sync/checkpoint') });
    return res.kvs[0] ? Number(JSON.parse(res.kvs[0].value.toString()).revision) : 0;
  };
  const phase = (name: string): void => console.error(`bench: ${name}`);
  // A timed phase starts by writing back the page cache, so that the writeback of one phase (the
  // ceiling loads 1 GiB at 1M keys) is not timed in the next.
  const startTimer = (): number => {
    execFileSync('sync');
    return performance.now();
  };
  try {
    phase('0 load the primary (not timed)');
    await batchedWrite(p, 0, KEYS);
    // The ceiling and the sync in turn, each into a fresh etcd: the machine's noise (the ceiling
    // alone varied ±20% at 1M) is shared by the two of a round, and the ratio is each round's.
    const ceilings: number[] = [];
    const ceilingsWithScan: number[] = [];
    const syncs: number[] = [];
    const diffs: number[] = [];
    const rss: number[] = [];
    const ceilingCpu: CpuUse[] = [];
    const syncCpu: CpuUse[] = [];
    const diffCpu: CpuUse[] = [];
    let t = 0;
    let sync: CliProcess;
    for (let round = 1; round <= SYNC_ROUNDS; round++) {
      phase(`1 ceiling, round ${round}`);
      ceilings.push(
        await withFreshEtcd(async (c, server) => {
          const started = startTimer();
          // The pair's etcds too: nothing of theirs should run beside the ceiling.
          const cpu = cpuMeter({ etcd: server.process?.pid, primary: primary.process?.pid, standby: standby.process?.pid }, 'the writer');
          await batchedWrite(c, 0, KEYS);
          const elapsed = since(started);
          ceilingCpu.push(cpu());
          return elapsed;
        }),
      );

      phase(`1b ceiling while another process reads the primary, round ${round}`);
      ceilingsWithScan.push(await ceilingWithScan(primary, startTimer));

      phase(`2a etcd-sync initial sync, round ${round}`);
      if (round > 1) {
        s.close();
        await standby.destroy();
        standby = await EtcdServer.start({ name: 'standby' });
        s = standby.client();
        runArgs = runArgsFor(standby);
      }
      t = startTimer();
      const cpu = cpuMeter({ primary: primary.process?.pid, standby: standby.process?.pid });
      sync = runCli(runArgs, cliEnv, NODE_FLAGS);
      // The diff's own CPU, without etcd-sync's start-up: metered from the log line that opens the diff to the one that closes it.
      const running = sync;
      let diffMeter: (() => CpuUse) | undefined;
      running.onLog('full diff started', () => (diffMeter = cpuMeter({ primary: primary.process?.pid, standby: standby.process?.pid, 'etcd-sync': running.child.pid })));
      running.onLog('initial sync done', () => {
        if (diffMeter) diffCpu.push(diffMeter());
      });
      await sync.waitForLog('initial sync done', HOUR);
      syncs.push(since(t));
      syncCpu.push({ ...cpu(), 'etcd-sync': round2(cpuSeconds(sync.child.pid)) });
      if (diffCpu.length !== syncCpu.length) throw new Error(`no CPU reading of the diff in round ${round}: its log lines were not seen`);
      diffs.push(Number(/"durationMs":(\d+)/.exec(sync.output())?.[1]) / 1000);
      rss.push(peakRssMb(sync.child));
      await stop(sync);
    }
    const ratios = (times: number[], to = ceilings): number[] => times.map((time, i) => Math.round((time / (to[i] as number)) * 100) / 100);
    r.ceilingSeconds = median(ceilings);
    r.ceilingWithScanSeconds = median(ceilingsWithScan);
    // The ceiling's writes plus the reads of the primary that any sync makes, on the same cores:
    // what a sync costing nothing of its own would take here, over the ceiling.
    r.ceilingWithScanToCeilingRatio = median(ratios(ceilingsWithScan));
    r.etcdSyncInitialDiffToScanCeilingRatio = median(ratios(diffs, ceilingsWithScan));
    r.ceilingWithScanRounds = ceilingsWithScan.join(', ');
    r.etcdSyncInitialSeconds = median(syncs);
    r.etcdSyncInitialDiffSeconds = median(diffs);
    r.etcdSyncInitialRatio = median(ratios(syncs));
    r.etcdSyncInitialDiffRatio = median(ratios(diffs));
    r.ceilingRounds = ceilings.join(', ');
    r.etcdSyncInitialRounds = syncs.join(', ');
    r.etcdSyncInitialDiffRounds = diffs.join(', ');
    r.runPeakRssMb = Math.max(...rss);
    r.ceilingCpu = cpuSummary(ceilingCpu, 'CPU-s');
    r.etcdSyncInitialCpu = cpuSummary(syncCpu, 'CPU-s');
    // However well the processes overlap, N cores cannot do the work in less than its CPU time / N.
    const bounds = (rounds: readonly CpuUse[]): number[] => rounds.map((use) => round2(cpuTotal(use) / CORES));
    r.etcdSyncInitialCpuBoundSeconds = median(bounds(syncCpu));
    r.etcdSyncInitialCpuBoundRatio = median(ratios(bounds(syncCpu)));
    r.etcdSyncDiffCpu = cpuSummary(diffCpu, 'CPU-s');
    r.etcdSyncDiffCpuBoundSeconds = median(bounds(diffCpu));
    r.etcdSyncDiffCpuBoundRatio = median(ratios(bounds(diffCpu)));
    // How far the diff ran above its own CPU bound: the time some core was left idle.
    r.etcdSyncDiffOverBoundRatio = median(ratios(diffs, bounds(diffCpu)));

    phase('2b make-mirror initial copy');
    t = startTimer();
    const mirror = startMirror(primary, mirrorDest, '/registry/');
    await waitFor(async () => (await count(m)) >= KEYS, { timeoutMs: 4 * HOUR, intervalMs: 250 });
    r.makeMirrorInitialSeconds = since(t);

    phase(`3 ${STREAM} single-key revisions (etcd-sync stopped, make-mirror following live)`);
    t = performance.now();
    await singleKeyRevisions(p, STREAM, KEYS);
    await p.put(MARKER).value('done').exec();
    r.streamWriteSeconds = since(t);
    await waitFor(async () => (await m.get(MARKER).string()) === 'done', { timeoutMs: 4 * HOUR, intervalMs: 100 });
    r.makeMirrorFollowSeconds = since(t);
    r.makeMirrorRevisionsPerSecond = Math.round((STREAM + 1) / (r.makeMirrorFollowSeconds as number));
    await stopMirror(mirror);
    const target = await revision(p);
    t = performance.now();
    sync = runCli(runArgs, cliEnv, NODE_FLAGS);
    await waitFor(async () => (await checkpointAt()) >= target, { timeoutMs: HOUR, intervalMs: 50 });
    r.etcdSyncCatchUpSeconds = since(t);
    r.etcdSyncCatchUpRevisionsPerSecond = Math.round((STREAM + 1) / (r.etcdSyncCatchUpSeconds as number));
    await stop(sync);

    // Rounds of floor, etcd-sync, make-mirror in turn, so that all three see the same machine
    // (it is shared and noisy); each series starts with an unrecorded warm-up run (a fresh
    // process, a cold JIT). The table gives the median of the rounds.
    const warmUp = { prefix: LAG_PREFIX, rate: LAG_RATES[0] ?? 1000, seconds: 3 };
    const lagPrimary = { endpoint: primary.endpoint, client: p };
    const series = async (who: string, destination: Etcd3, pids: Record<string, number | undefined>): Promise<void> => {
      await measureLag(lagPrimary, destination, warmUp);
      for (const rate of LAG_RATES) {
        const cpu = cpuMeter(pids, 'the probe');
        const started = performance.now();
        const alsoWatchPrimary = SAME_WRITES_FLOOR && who !== 'floor';
        (lagRounds[`${who}@${rate}`] ??= []).push(await measureLag(lagPrimary, destination, { prefix: LAG_PREFIX, rate, seconds: LAG_SECONDS, alsoWatchPrimary }));
        const wall = (performance.now() - started) / 1000;
        (lagCpuRounds[`${who}@${rate}`] ??= []).push(Object.fromEntries(Object.entries(cpu()).map(([name, s]) => [name, round2(s / wall)])));
      }
    };
    for (let round = 1; round <= (LAG_RATES.length > 0 ? LAG_ROUNDS : 0); round++) {
      phase(`4 lag, round ${round}: floor (the probe watching the primary, nothing replicating)`);
      await series('floor', p, { primary: primary.process?.pid });
      phase(`4 lag, round ${round}: etcd-sync`);
      sync = runCli(runArgs, cliEnv, NODE_FLAGS);
      await sync.waitForLog('streaming from revision', HOUR);
      await series('etcd-sync', s, { primary: primary.process?.pid, standby: standby.process?.pid, 'etcd-sync': sync.child.pid });
      await stop(sync);
      phase(`4 lag, round ${round}: make-mirror`);
      const lagMirror = startMirror(primary, mirrorDest, LAG_PREFIX);
      await p.put(`${LAG_PREFIX}ready`).value(String(round)).exec();
      await waitFor(async () => (await m.get(`${LAG_PREFIX}ready`).string()) === String(round), { timeoutMs: 60_000 });
      await series('make-mirror', m, { primary: primary.process?.pid, 'its destination': mirrorDest.process?.pid, 'make-mirror': lagMirror.pid });
      await stopMirror(lagMirror);
    }
    for (const [name, rounds] of Object.entries(lagRounds)) lag[name] = medianOf(rounds);

    phase('5 check');
    sync = runCli(runArgs, cliEnv, NODE_FLAGS);
    await sync.waitForLog('streaming from revision', HOUR);
    await stop(sync);
    const checkArgs = ['check', ...primary.cliArgs('primary'), ...standby.cliArgs('standby'), '--output', 'json'];
    const timed = existsSync('/usr/bin/time');
    const [cmd, cmdArgs] = timed
      ? ['/usr/bin/time', ['-f', 'RSS_KB=%M', process.execPath, ...NODE_FLAGS, 'dist/bin/etcd-sync.js', ...checkArgs]]
      : [process.execPath, [...NODE_FLAGS, 'dist/bin/etcd-sync.js', ...checkArgs]];
    t = startTimer();
    const check = spawnSync(cmd, cmdArgs, { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, env: { ...process.env, ...cliEnv } });
    r.checkSeconds = since(t);
    r.checkConsistent = String((JSON.parse(check.stdout) as { consistent: boolean }).consistent);
    r.checkPeakRssMb = timed ? Math.round(Number(/RSS_KB=(\d+)/.exec(check.stderr)?.[1] ?? 0) / 1024) : 'n/a (no /usr/bin/time)';

    phase('6 restart after a compaction gap, 1% changed');
    const changed = Math.max(1, Math.floor(KEYS / 100));
    await batchedWrite(p, 0, changed, Buffer.alloc(1024, 0x62));
    // One more revision (outside the synced prefix), then compact up to it: the changes are
    // gone from history, so the restart cannot replay them and must find them by the diff.
    await p.put('/bench/after-changes').value('1').exec();
    // Physical, so that the compaction is done before the restart is timed. After long lag rounds
    // (--lag-seconds 60: ~1.5M revisions) it outlasts the test client's 20 s deadline, and etcd3
    // retries a deadline: the retry then fails as "required revision has been compacted".
    await p.kv.compact({ revision: String(await revision(p)), physical: true }, { deadline: Date.now() + HOUR });
    t = startTimer();
    sync = runCli(runArgs, cliEnv, NODE_FLAGS);
    await sync.waitForLog('initial sync done', HOUR);
    r.compactionRestartSeconds = since(t);
    const done = sync.output().split('\n').find((l) => l.includes('initial sync done')) ?? '';
    r.compactionRestartKeysWritten = Number(/"put":(\d+)/.exec(done)?.[1]);
    r.compactionRestartKeysChanged = changed;
    r.compactionRestartResync = String(sync.output().includes('checkpoint compacted on the primary'));
    await stop(sync);
  } finally {
    p.close();
    s.close();
    m.close();
    await Promise.all([primary.destroy(), standby.destroy(), mirrorDest.destroy()]);
  }

  const n = r as Record<string, number>;
  const x = (a: number, b: number, digits = 1): string => `${(a / b).toFixed(digits)}x`;
  const rows: string[][] = [
    [`1 ceiling: batched write of N keys into a fresh etcd (median of ${SYNC_ROUNDS})`, `${n.ceilingSeconds} s`, `rounds ${r.ceilingRounds} s; CPU ${r.ceilingCpu}`],
    [
      `1b the ceiling while another process reads the primary's N keys (median of ${SYNC_ROUNDS})`,
      `${n.ceilingWithScanSeconds} s`,
      `rounds ${r.ceilingWithScanRounds} s; ${n.ceilingWithScanToCeilingRatio}x the ceiling (its writes, with the reads any sync makes of the primary, on the same cores); etcd-sync's diff ${n.etcdSyncInitialDiffToScanCeilingRatio}x this (medians of the rounds' ratios)`,
    ],
    [`2 initial sync, etcd-sync (process start to done; median of ${SYNC_ROUNDS})`, `${n.etcdSyncInitialSeconds} s`, `${n.etcdSyncInitialRatio}x the ceiling (median of the rounds' ratios; rounds ${r.etcdSyncInitialRounds} s)`],
    [`2 initial sync, etcd-sync (the diff alone, connected; median of ${SYNC_ROUNDS})`, `${n.etcdSyncInitialDiffSeconds} s`, `${n.etcdSyncInitialDiffRatio}x the ceiling (median of the rounds' ratios; rounds ${r.etcdSyncInitialDiffRounds} s)`],
    [
      `2 initial sync, CPU time of the processes, process start to done (median of ${SYNC_ROUNDS})`,
      `${n.etcdSyncInitialCpuBoundSeconds} s on ${CORES} cores at the least`,
      `${n.etcdSyncInitialCpuBoundRatio}x the ceiling (median of the rounds' ratios); CPU ${r.etcdSyncInitialCpu}`,
    ],
    [
      `2 initial sync, CPU time of the processes during the diff alone (median of ${SYNC_ROUNDS})`,
      `${n.etcdSyncDiffCpuBoundSeconds} s on ${CORES} cores at the least`,
      `${n.etcdSyncDiffCpuBoundRatio}x the ceiling; the diff took ${n.etcdSyncDiffOverBoundRatio}x this bound (medians of the rounds' ratios); CPU ${r.etcdSyncDiffCpu}`,
    ],
    ['2 initial sync, make-mirror', `${n.makeMirrorInitialSeconds} s`, `etcd-sync ${x(n.makeMirrorInitialSeconds!, n.etcdSyncInitialSeconds!)} faster`],
    [`3 catch-up of ${STREAM} single-key revisions, etcd-sync (start to checkpoint)`, `${n.etcdSyncCatchUpSeconds} s`, `${n.etcdSyncCatchUpRevisionsPerSecond} rev/s`],
    [`3 the same revisions, make-mirror following live (written in ${n.streamWriteSeconds} s)`, `${n.makeMirrorFollowSeconds} s`, `${n.makeMirrorRevisionsPerSecond} rev/s; etcd-sync ${x(n.etcdSyncCatchUpRevisionsPerSecond!, n.makeMirrorRevisionsPerSecond!)}`],
  ];
  for (const rate of LAG_RATES) {
    const floor = lag[`floor@${rate}`] as LagResult;
    for (const who of ['floor', 'etcd-sync', 'make-mirror']) {
      const l = lag[`${who}@${rate}`] as LagResult;
      const same = l.samePrimary;
      const vsFloor =
        who === 'floor'
          ? ''
          : `; p99 ${l.p99Ms - floor.p99Ms >= 0 ? '+' : ''}${Math.round((l.p99Ms - floor.p99Ms) * 10) / 10} ms vs floor (${x(l.p99Ms, floor.p99Ms)})` +
            (same
              ? `; the same writes in the primary's own watch: p50 ${same.p50Ms} / p99 ${same.p99Ms} ms (p99 rounds ${(lagRounds[`${who}@${rate}`] ?? []).map((r) => r.samePrimary?.p99Ms).join(', ')}; ${who} ${x(l.p99Ms, same.p99Ms)} that${same.unseen ? `; ${same.unseen} unseen there` : ''})`
              : '');
      rows.push([
        `4 lag at ${rate} writes/s, ${who}${who === 'floor' ? ' (probe watching the primary)' : ''}`,
        `p50 ${l.p50Ms} / p99 ${l.p99Ms} / max ${l.maxMs} ms (median of ${LAG_ROUNDS})`,
        `p99 of the rounds ${(lagRounds[`${who}@${rate}`] ?? []).map((x) => x.p99Ms).join(', ')} ms; the primary's replies to the probe p99 ${l.replyP99Ms} ms; growth ${l.growthMs} ms; ${l.achievedRate} writes/s achieved${l.unseen ? `; ${l.unseen} unseen in the watch` : ''}${l.keysDiffering ? `; ${l.keysDiffering} KEYS DIFFER AFTER THE DRAIN` : ''}${vsFloor}; cores busy: ${cpuSummary(lagCpuRounds[`${who}@${rate}`] ?? [], `of ${CORES}`)}`,
      ]);
    }
  }
  rows.push(
    ['5 check, time', `${n.checkSeconds} s`, `consistent: ${n.checkConsistent}`],
    ['5 check, peak RSS', `${n.checkPeakRssMb} MB`, ''],
    ['6 restart after compaction, 1% changed', `${n.compactionRestartSeconds} s`, `${n.compactionRestartKeysWritten} keys written, ${n.compactionRestartKeysChanged} changed`],
    ['7 run: peak RSS during the initial sync', `${n.runPeakRssMb} MB`, `the largest of ${SYNC_ROUNDS} rounds`],
  );
  const table = [`| measure (${KEYS} keys x 1 KiB; ${machine}) | value | ratio / note |`, '|---|---|---|', ...rows.map((row) => `| ${row.join(' | ')} |`)].join('\n');
  const file = `bench/results-${KEYS}.json`;
  writeFileSync(file, `${JSON.stringify({ ...r, lag, lagRounds, lagCpuRounds, table }, null, 2)}\n`);
  process.stdout.write(`${table}\n`);
}

runScript('bench', main);
