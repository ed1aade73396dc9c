/**
 * `npm run bench:check-memory [-- --keys N]`: the peak RSS (GNU time) and duration of
 * `etcd-sync check` over N equal keys x 1 KiB on both sides, with Node's default heap settings
 * and as the container image starts node (its NODE_OPTIONS and node flags), so the effect of the
 * image's heap settings is measured.
 */
import { spawnSync } from 'node:child_process';
import { startPair } from '../test/helpers/etcd.js';
import { IMAGE_NODE_FLAGS, IMAGE_NODE_OPTIONS, batchedWrite, optionValue, runScript } from './load.js';

const KEYS = Number(optionValue('--keys', '1000000'));

async function main(): Promise<void> {
  const { primary: p, standby: s } = await startPair();
  const pc = p.client();
  const sc = s.client();
  try {
    await Promise.all([batchedWrite(pc, 0, KEYS), batchedWrite(sc, 0, KEYS)]);
    const args = ['check', ...p.cliArgs('primary'), ...s.cliArgs('standby'), '--output', 'json'];
    console.log(`| etcd-sync check, ${KEYS} equal keys x 1 KiB | time | peak RSS |\n|---|---|---|`);
    const settings: [string, readonly string[]][] = [
      ['', []],
      [IMAGE_NODE_OPTIONS, IMAGE_NODE_FLAGS],
    ];
    for (const [nodeOptions, nodeFlags] of settings) {
      const started = performance.now();
      const run = spawnSync('/usr/bin/time', ['-f', 'RSS_KB=%M', process.execPath, ...nodeFlags, 'dist/bin/etcd-sync.js', ...args], {
        encoding: 'utf8',
        env: { ...process.env, NODE_OPTIONS: nodeOptions },
        maxBuffer: 1 << 28,
      });
      if (run.status !== 0) throw new Error(`check exited ${run.status}: ${run.stderr.slice(-500)}`);
      const rss = Math.round(Number(/RSS_KB=(\d+)/.exec(run.stderr)?.[1]) / 1024);
      console.log(`| NODE_OPTIONS=${nodeOptions || '(none)'}, node flags ${nodeFlags.join(' ') || '(none)'} | ${Math.round(performance.now() - started) / 1000} s | ${rss} MB |`);
    }
  } finally {
    pc.close();
    sc.close();
    await Promise.all([p.destroy(), s.destroy()]);
  }
}

runScript('check-memory', main);
