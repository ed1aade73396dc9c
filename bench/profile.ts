/**
 * `npm run profile [-- --keys N --what sync|catchup|check|stream --rate R --seconds S]`: loads N keys
 * x 1 KiB into a fresh primary, runs `etcd-sync run` (initial sync into an empty standby; for
 * catchup, a restart after N single-key revisions were written while it was stopped; for stream,
 * streaming while the lag probe writes R writes/s (default 2000) for S seconds (default 10)) or
 * `etcd-sync check` (after a sync) under `node --cpu-prof`, started as the container image starts
 * node, and prints the functions with the most self time. The profile is
 * written to bench/profiles/ (not committed) for Chrome DevTools.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { startPair } from '../test/helpers/etcd.js';
import { runCli } from '../test/helpers/sync.js';
import { waitFor } from '../test/helpers/wait.js';
import { LAG_PREFIX, measureLag } from './lag.js';
import { IMAGE_NODE_FLAGS, IMAGE_NODE_OPTIONS, batchedWrite, optionValue, runScript, singleKeyRevisions } from './load.js';

const KEYS = Number(optionValue('--keys', '100000'));
const WHAT = optionValue('--what', 'sync');
const RATE = Number(optionValue('--rate', '2000'));
const SECONDS = Number(optionValue('--seconds', '10'));
const PROFILE_DIR = path.resolve('bench/profiles');

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Self time per function (ms), summed over every node of the profile's call tree. */
function selfTimes(profile: Profile): { name: string; ms: number }[] {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const ms = new Map<string, number>();
  profile.samples.forEach((id, i) => {
    const node = byId.get(id);
    if (!node) return;
    const { functionName, url, lineNumber } = node.callFrame;
    const where = url ? `${url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/dist\//, '')}:${lineNumber + 1}` : '';
    const name = `${functionName || '(anonymous)'} ${where}`.trim();
    ms.set(name, (ms.get(name) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000);
  });
  return [...ms.entries()].map(([name, t]) => ({ name, ms: t })).sort((a, b) => b.ms - a.ms);
}

async function main(): Promise<void> {
  rmSync(PROFILE_DIR, { recursive: true, force: true });
  mkdirSync(PROFILE_DIR, { recursive: true });
  const { primary, standby } = await startPair();
  const p = primary.client();
  try {
    await batchedWrite(p, 0, KEYS);
    const connection = [...primary.cliArgs('primary'), ...standby.cliArgs('standby')];
    const runArgs = ['run', ...connection, '--http-address', 'off', '--check-interval', '0'];
    const imageEnv = { NODE_OPTIONS: IMAGE_NODE_OPTIONS };
    const profiled = [...IMAGE_NODE_FLAGS, '--cpu-prof', '--cpu-prof-dir', PROFILE_DIR];
    if (WHAT === 'catchup') {
      // The sync stopped, N single-key revisions written, then the profiled restart catches up.
      let sync = runCli(runArgs, imageEnv, IMAGE_NODE_FLAGS);
      await sync.waitForLog('initial sync done', 600_000);
      sync.child.kill('SIGTERM');
      await sync.exited;
      await singleKeyRevisions(p, KEYS, KEYS);
      const target = BigInt((await p.kv.range({ key: Buffer.from('x') })).header.revision);
      const s = standby.client();
      const started = performance.now();
      sync = runCli(runArgs, imageEnv, profiled);
      await waitFor(async () => {
        const res = await s.kv.range({ key: Buffer.from('/etcd-sync/checkpoint') });
        return res.kvs[0] !== undefined && BigInt(JSON.parse(res.kvs[0].value.toString()).revision) >= target;
      }, { timeoutMs: 600_000, intervalMs: 50 });
      console.error(`catch-up of ${KEYS} revisions took ${Math.round(performance.now() - started)} ms (process start to checkpoint)`);
      s.close();
      sync.child.kill('SIGTERM');
      await sync.exited;
    } else if (WHAT === 'stream') {
      const sync = runCli(runArgs, imageEnv, profiled);
      await sync.waitForLog('streaming from revision', 600_000);
      const s = standby.client();
      const lagPrimary = { endpoint: primary.endpoint, client: p };
      await measureLag(lagPrimary, s, { prefix: LAG_PREFIX, rate: RATE, seconds: 3 }); // warm-up, as in the bench: a cold JIT is not streaming
      const lag = await measureLag(lagPrimary, s, { prefix: LAG_PREFIX, rate: RATE, seconds: SECONDS });
      console.error(`streaming at ${lag.achievedRate} writes/s for ${SECONDS} s: lag p50 ${lag.p50Ms} / p99 ${lag.p99Ms} / max ${lag.maxMs} ms`);
      s.close();
      sync.child.kill('SIGTERM');
      await sync.exited;
    } else if (WHAT === 'check') {
      const sync = runCli(runArgs, imageEnv, IMAGE_NODE_FLAGS);
      await sync.waitForLog('initial sync done', 600_000);
      sync.child.kill('SIGTERM');
      await sync.exited;
      const check = spawn(process.execPath, [...profiled, 'dist/bin/etcd-sync.js', 'check', ...connection, '--output', 'json'], {
        stdio: ['ignore', 'ignore', 'inherit'],
        env: { ...process.env, ...imageEnv },
      });
      const started = performance.now();
      await new Promise((resolve) => check.on('exit', resolve));
      console.error(`check took ${Math.round(performance.now() - started)} ms`);
    } else {
      const started = performance.now();
      const sync = runCli(runArgs, imageEnv, profiled);
      await sync.waitForLog('initial sync done', 600_000);
      console.error(`initial sync took ${Math.round(performance.now() - started)} ms (process start to done)`);
      sync.child.kill('SIGTERM');
      await sync.exited;
    }
  } finally {
    p.close();
    await Promise.all([primary.destroy(), standby.destroy()]);
  }
  const file = readdirSync(PROFILE_DIR).find((f) => f.endsWith('.cpuprofile'));
  if (!file) throw new Error('no .cpuprofile written');
  const profile = JSON.parse(readFileSync(path.join(PROFILE_DIR, file), 'utf8')) as Profile;
  const top = selfTimes(profile);
  const total = top.reduce((sum, t) => sum + t.ms, 0);
  console.log(`${path.join('bench/profiles', file)}: ${Math.round(total)} ms sampled`);
  for (const t of top.slice(0, 30)) console.log(`${t.ms.toFixed(0).padStart(7)} ms ${((t.ms / total) * 100).toFixed(1).padStart(5)}%  ${t.name}`);
}

runScript('profile', main);
