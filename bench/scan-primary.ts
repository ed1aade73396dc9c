/**
 * Child process of the bench (measure 1b): reads every key of the bench's range from the primary
 * with etcd-sync's own reader, and nothing else, so that the ceiling can be timed with the reads
 * a sync cannot avoid running beside it on the same machine. Argument: the primary's side config
 * as JSON. Prints `ready` once connected, scans on a line on stdin, then prints `scanned <keys>`.
 */
import { WRITE_DEFAULTS } from '../src/cli/options/common.js';
import { once } from 'node:events';
import { EtcdSide, type EtcdSideConfig } from '../src/etcd/connection.js';
import { readHeader, scanPages } from '../src/etcd/kv.js';
import { runScript } from './load.js';

async function main(): Promise<void> {
  const side = new EtcdSide(JSON.parse(process.argv[2] ?? '') as EtcdSideConfig);
  try {
    await readHeader(side);
    process.stdout.write('ready\n');
    await once(process.stdin, 'data');
    let keys = 0;
    const range = { key: Buffer.from('/registry/'), rangeEnd: Buffer.from('/registry0'), pageSize: WRITE_DEFAULTS.pageSize };
    for await (const page of scanPages(side, range, (_what, fn) => fn())) keys += page.length;
    process.stdout.write(`scanned ${keys}\n`);
  } finally {
    side.close();
    process.stdin.destroy();
  }
}

runScript('scan-primary', main);
