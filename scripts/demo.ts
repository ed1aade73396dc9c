/**
 * `npm run demo [-- --port-base N] [-- --keep]`: the whole disaster-recovery loop on two local
 * etcd servers, site A (primary) and site B (standby), with the real CLI. Every etcd-sync and
 * etcdctl command is printed as it runs, ready to copy: sync → drift → check → pause/resume →
 * the delete guard → promote → role reversal → failback. --port-base N puts A's etcd on N (peer N+1), B's on N+2
 * (N+3), the daemons' HTTP on N+4 and N+5; without it, free ports. --keep leaves both etcds
 * running at the end, with commands to try by hand.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Etcd3 } from 'etcd3';
import { ETCD_BIN, EtcdServer, freePort } from '../test/helpers/etcd.js';
import { type CliProcess, putMany, runCli, snapshot, waitInSync } from '../test/helpers/sync.js';
import { waitFor } from '../test/helpers/wait.js';

const CLI = 'node dist/bin/etcd-sync.js';
const ETCDCTL = path.join(path.dirname(ETCD_BIN), 'etcdctl');

const say = (line = ''): void => void process.stdout.write(`${line}\n`);
const step = (title: string): void => say(`\n== ${title}`);

function quote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`;
}

interface Options {
  portBase: number | undefined;
  keep: boolean;
}

function parseArgs(argv: string[]): Options {
  const options: Options = { portBase: undefined, keep: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--keep') options.keep = true;
    else if (arg === '--port-base' || arg.startsWith('--port-base=')) {
      const raw = arg.includes('=') ? arg.slice(arg.indexOf('=') + 1) : argv[++i];
      const n = Number(raw);
      if (!Number.isInteger(n) || n < 1024 || n > 65530) usage(`--port-base must be a port from 1024 to 65530 (it uses 6 ports from there), got '${raw ?? ''}'`);
      options.portBase = n;
    } else usage(`unknown argument '${arg}'`);
  }
  return options;
}

function usage(problem: string): never {
  process.stderr.write(`demo: ${problem}\nusage: npm run demo [-- --port-base N] [-- --keep]\n`);
  process.exit(2);
}

/** Runs one etcd-sync command as printed; its stdout shown indented. */
async function etcdSync(args: string[], expect: number | number[]): Promise<{ code: number; stdout: string }> {
  say(`$ ${CLI} ${args.map(quote).join(' ')}`);
  const c = runCli(args);
  const { code } = await c.exited;
  const out = c.stdout().trimEnd();
  if (out) say(out.replace(/^/gm, '    '));
  const expected = Array.isArray(expect) ? expect : [expect];
  if (code === null || !expected.includes(code)) throw new Error(`exit ${code}, expected ${expected.join(' or ')}:\n${c.output().slice(-2000)}`);
  say(`    (exit ${code})`);
  return { code, stdout: out };
}

/** etcdctl as printed (the binary beside etcd); without one, the same request through a client. */
async function etcdctl(endpoint: string, args: string[], client: Etcd3): Promise<void> {
  say(`$ ETCDCTL_API=3 ${ETCDCTL} --endpoints ${endpoint} ${args.map(quote).join(' ')}`);
  if (existsSync(ETCDCTL)) {
    const env = Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => !e[0].startsWith('ETCD') && e[1] !== undefined));
    const out = execFileSync(ETCDCTL, ['--endpoints', endpoint, ...args], { encoding: 'utf8', env: { ...env, ETCDCTL_API: '3' } }).trimEnd();
    if (out) say(out.replace(/^/gm, '    '));
    return;
  }
  const [verb, key, flag] = args;
  if (verb === 'del' && flag === '--prefix') await client.delete().prefix(key!).exec();
  else if (verb === 'del') await client.delete().key(key!).exec();
  else throw new Error(`no etcdctl beside ${ETCD_BIN} for: ${args.join(' ')}`);
}

/** A daemon: `etcd-sync run` from `primary` into `standby`, as printed; resolves once it streams. */
async function startDaemon(name: string, primary: EtcdServer, standby: EtcdServer, httpPort: number, extra: string[] = []): Promise<{ cli: CliProcess; args: string[] }> {
  const args = ['run', '--primary-endpoints', primary.endpoint, '--standby-endpoints', standby.endpoint, '--http-address', `127.0.0.1:${httpPort}`, '--identity', name, ...extra];
  say(`$ ${CLI} ${args.map(quote).join(' ')} &`);
  const cli = runCli(args);
  const status = async (): Promise<{ role: string; state: string; ready: { ready: boolean }; progress: { keysDone: number; keysTotal: number; percent: number } | null }> =>
    (await fetch(`http://127.0.0.1:${httpPort}/status`)).json() as never;
  await cli.waitForLog('http listening');
  await waitFor(async () => {
    const st = await status();
    return st.role === 'leader' && st.state === 'streaming' && st.ready.ready;
  }, { timeoutMs: 60_000, message: `${name} never streamed:\n${cli.output().slice(-2000)}` });
  // `etcd-sync status` reads what the leader publishes in the standby (on every change of state).
  const published = standby.client();
  try {
    await waitFor(async () => (JSON.parse((await snapshot(published)).get('/etcd-sync/status')?.value.toString() ?? '{}') as { state?: string }).state === 'streaming', { timeoutMs: 20_000 });
  } finally {
    published.close();
  }
  const p = (await status()).progress;
  say(`    ${name} leads and streams; initial sync: ${p?.keysDone} of ${p?.keysTotal} primary keys read (${p?.percent}%); curl -s http://127.0.0.1:${httpPort}/status`);
  return { cli, args };
}

async function stopDaemon(daemon: { cli: CliProcess }, name: string): Promise<void> {
  say(`$ kill -TERM ${daemon.cli.child.pid}      # ${name}; in Kubernetes: kubectl -n etcd-sync scale deploy/etcd-sync --replicas=0`);
  daemon.cli.child.kill('SIGTERM');
  const { code } = await daemon.cli.exited;
  if (code !== 0) throw new Error(`${name} exited ${code}:\n${daemon.cli.output().slice(-2000)}`);
  say(`    ${name} exited 0`);
}

async function main(): Promise<void> {
  const options = parseArgs(process.argv.slice(2));
  const base = options.portBase;
  const port = async (offset: number): Promise<number> => (base === undefined ? freePort() : base + offset);
  say('etcd-sync demo: a disaster-recovery pair on loopback, and the whole failover loop');
  const [a, b] = await Promise.all([
    EtcdServer.start({ name: 'site-a', clientPort: await port(0), peerPort: await port(1) }),
    EtcdServer.start({ name: 'site-b', clientPort: await port(2), peerPort: await port(3) }),
  ]);
  const [httpB, httpA] = [await port(4), await port(5)];
  say(`  site A etcd (primary): ${a.endpoint}    site B etcd (standby): ${b.endpoint}`);
  const ca = a.client();
  const cb = b.client();
  const daemons: { cli: CliProcess }[] = [];
  let kept = false;
  try {
    const pod = readFileSync('test/fixtures/k8s-objects/storage-pod.bin');
    const seed: [string, string | Buffer][] = [
      ['/registry/namespaces/apps', 'Namespace apps'],
      ['/registry/pods/apps/web-0', pod],
      ['/registry/deployments/apps/web', 'Deployment apps/web'],
      ['/registry/secrets/apps/db', 'Secret apps/db'],
      ['/registry/clusterroles/admin', 'ClusterRole admin'],
      ['/registry/pods/kube-system/kube-apiserver', "A's own apiserver Pod"],
      ['/registry/masterleases/10.0.0.1', "A's apiserver endpoint"],
    ];
    for (let i = 0; i < 2000; i++) seed.push([`/registry/configmaps/apps/cm-${i}`, `ConfigMap ${i}`]);
    await putMany(ca, seed);
    await putMany(cb, [['/registry/pods/kube-system/kube-apiserver', "B's own apiserver Pod"]]);
    say(`  seeded A with ${seed.length} Kubernetes-shaped keys; B holds its own kube-system Pod`);

    step('1. sync: the daemon on B mirrors A (initial diff, then the watch)');
    const syncB = await startDaemon('site-b-0', a, b, httpB, ['--check-interval', '30s']);
    daemons.push(syncB);
    await ca.put('/registry/deployments/apps/api').value('Deployment apps/api').exec();
    await ca.delete().key('/registry/configmaps/apps/cm-7').exec();
    await waitInSync(ca, cb);
    say('  A changed (a Deployment added, a ConfigMap deleted): B follows within milliseconds');
    await etcdSync(['status', '--standby-endpoints', b.endpoint, '--primary-endpoints', a.endpoint], 0);

    step('2. pause, and drift: someone edits B by hand while A keeps changing');
    await etcdSync(['pause', '--standby-endpoints', b.endpoint, '--reason', 'demo: maintenance'], 0);
    await waitFor(async () => ((await (await fetch(`http://127.0.0.1:${httpB}/status`)).json()) as { state: string }).state === 'paused', { timeoutMs: 10_000 });
    await cb.delete().key('/registry/secrets/apps/db').exec();
    await cb.put('/registry/deployments/apps/web').value('edited on B by hand').exec();
    await ca.put('/registry/configmaps/apps/cm-new').value('written on A while paused').exec();
    say('  on B: Secret apps/db deleted, Deployment apps/web edited; on A: ConfigMap cm-new written');

    step('3. check: what would a failover lose right now?');
    await etcdSync(['check', '--primary-endpoints', a.endpoint, '--standby-endpoints', b.endpoint], 1);
    await etcdSync(['status', '--standby-endpoints', b.endpoint, '--primary-endpoints', a.endpoint], 1);

    step('4. resume: the restart of the engine replays and diffs, repairing the drift');
    await etcdSync(['resume', '--standby-endpoints', b.endpoint], 0);
    await waitInSync(ca, cb);
    await etcdSync(['check', '--primary-endpoints', a.endpoint, '--standby-endpoints', b.endpoint], 0);

    step('5. the delete guard: a mass delete on A is held back, the operator decides');
    await ca.delete().prefix('/registry/configmaps/apps/cm-1').exec();
    say('  on A: 1111 ConfigMaps deleted in one request (55 % of the keys; --delete-guard is 5%/1m)');
    await waitFor(async () => ((await (await fetch(`http://127.0.0.1:${httpB}/status`)).json()) as { state: string }).state === 'held', { timeoutMs: 20_000 });
    await etcdSync(['status', '--standby-endpoints', b.endpoint], 1);
    say('  B still has every ConfigMap: the image of A before the delete. Here the deletes were meant:');
    await etcdSync(['resume', '--standby-endpoints', b.endpoint, '--accept-deletes', '--reason', 'demo: retiring cm-1*'], 0);
    await waitInSync(ca, cb);
    await waitFor(async () => ((await (await fetch(`http://127.0.0.1:${httpB}/status`)).json()) as { state: string }).state === 'streaming', { timeoutMs: 20_000 });
    say('  B applied the deletes and streams again (with a disaster, `etcd-sync promote` would have promoted the image instead)');

    step("6. planned switchover: A's apiservers stopped (no more writes), then promote B");
    await etcdSync(['promote', '--standby-endpoints', b.endpoint, '--primary-endpoints', a.endpoint, '--reason', 'demo: planned switchover', '--wait', '30s'], 0);
    await waitFor(async () => ((await (await fetch(`http://127.0.0.1:${httpB}/status`)).json()) as { state: string }).state === 'fenced', { timeoutMs: 10_000 });
    say('  the daemon on B now reports state fenced and writes nothing; it is scaled down:');
    await stopDaemon(syncB, 'site-b-0');
    daemons.pop();
    await cb.put('/registry/deployments/apps/api').value('Deployment apps/api v2, written on B after the failover').exec();
    say('  B serves: its apiservers write (Deployment apps/api v2)');

    step('7. role reversal: A becomes the standby of B');
    await etcdSync(['unfence', '--standby-endpoints', a.endpoint, '--reason', 'demo: A becomes the standby'], 0);
    await etcdctl(a.endpoint, ['del', '--prefix', '/etcd-sync/checkpoint'], ca);
    await etcdctl(b.endpoint, ['del', '--prefix', '/etcd-sync/checkpoint'], cb);
    await etcdctl(b.endpoint, ['del', '/etcd-sync/leader'], cb);
    await etcdctl(b.endpoint, ['del', '/etcd-sync/control/paused'], cb);
    const syncA = await startDaemon('site-a-0', b, a, httpA, ['--prune']);
    daemons.push(syncA);
    await waitInSync(cb, ca);
    await etcdSync(['check', '--primary-endpoints', b.endpoint, '--standby-endpoints', a.endpoint], 0);

    step('8. failback: a planned switchover from B to A, and the same reversal with the sites swapped');
    await etcdSync(['promote', '--standby-endpoints', a.endpoint, '--primary-endpoints', b.endpoint, '--reason', 'demo: failback', '--wait', '30s'], 0);
    await stopDaemon(syncA, 'site-a-0');
    daemons.pop();
    await etcdSync(['unfence', '--standby-endpoints', b.endpoint, '--reason', 'demo: B is the standby again'], 0);
    await etcdctl(b.endpoint, ['del', '--prefix', '/etcd-sync/checkpoint'], cb);
    await etcdctl(a.endpoint, ['del', '--prefix', '/etcd-sync/checkpoint'], ca);
    await etcdctl(a.endpoint, ['del', '/etcd-sync/leader'], ca);
    const again = await startDaemon('site-b-0', a, b, httpB, ['--prune']);
    daemons.push(again);
    await etcdSync(['check', '--primary-endpoints', a.endpoint, '--standby-endpoints', b.endpoint], 0);
    const onB = await snapshot(cb);
    say(`  back where it started: A serves (fenced against etcd-sync writers), B mirrors it, and nothing written while B served is lost:`);
    say(`    /registry/deployments/apps/api on B: ${onB.get('/registry/deployments/apps/api')?.value.toString()}`);
    await stopDaemon(again, 'site-b-0');
    daemons.pop();

    if (options.keep) {
      kept = true;
      const pids = [a.release(), b.release()];
      say('\n== kept running: both etcds (A serves, B is its standby). Try:');
      say(`  ${CLI} run --primary-endpoints ${a.endpoint} --standby-endpoints ${b.endpoint} --http-address 127.0.0.1:${httpB}`);
      say(`  curl -s http://127.0.0.1:${httpB}/status ; curl -s http://127.0.0.1:${httpB}/metrics | grep ^etcd_sync_`);
      say(`  ${CLI} status --standby-endpoints ${b.endpoint} --primary-endpoints ${a.endpoint}`);
      say(`  ${CLI} check --primary-endpoints ${a.endpoint} --standby-endpoints ${b.endpoint} -o json`);
      say(`  ETCDCTL_API=3 ${ETCDCTL} --endpoints ${a.endpoint} put /registry/configmaps/apps/by-hand hello`);
      say(`stop them: kill ${pids.join(' ')}; rm -rf ${a.dataDir} ${b.dataDir}`);
    }
  } finally {
    for (const d of daemons) d.cli.child.kill('SIGKILL');
    ca.close();
    cb.close();
    if (!kept) {
      await Promise.all([a.destroy(), b.destroy()]);
      say('\nstopped both etcd servers and removed their data');
    }
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
