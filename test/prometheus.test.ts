/**
 * The operator's Prometheus kit against real tools: the alert rules under `promtool test rules`,
 * a live /metrics of a leader and a follower under `promtool check metrics`, and every query of
 * the Grafana dashboard and of the alerts evaluated by a real Prometheus scraping a running pair.
 * Prometheus and promtool come from Debian's `prometheus` package (scripts/install-prometheus.sh,
 * run by npm test); PROMETHEUS_BIN_DIR names them.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Etcd3 } from 'etcd3';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type EtcdServer, freePort } from './helpers/etcd.js';
import { parseMetrics } from './helpers/metrics.js';
import { usePair } from './helpers/pair.js';
import { Proxy } from './helpers/proxy.js';
import { type CliProcess, httpPort, putMany, runCli, waitInSync } from './helpers/sync.js';
import { waitFor } from './helpers/wait.js';

const binDir = process.env.PROMETHEUS_BIN_DIR;
if (!binDir) throw new Error('PROMETHEUS_BIN_DIR is not set: run the suite with `npm test`, which installs Prometheus (scripts/install-prometheus.sh)');
const promtool = path.join(binDir, 'promtool');
const prometheusBin = path.join(binDir, 'prometheus');

type Rule = { alert: string; expr: string; for?: string; labels: Record<string, string>; annotations: Record<string, string> };
const ruleFile = parse(readFileSync('deploy/kubernetes/prometheus-rules.yaml', 'utf8')) as { kind: string; spec: { groups: { name: string; rules: Rule[] }[] } };
const rules = ruleFile.spec.groups.flatMap((g) => g.rules);

type Panel = { title: string; targets: { expr: string }[] };
const dashboard = JSON.parse(readFileSync('deploy/grafana-dashboard.json', 'utf8')) as { panels: Panel[]; templating: { list: { name: string }[] } };

const tmp = mkdtempSync(path.join(os.tmpdir(), 'etcd-sync-prom-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('alert rules', () => {
  it('pass promtool check rules and the unit tests of test/fixtures/alerts.test.yaml', () => {
    expect(ruleFile.kind).toBe('PrometheusRule');
    writeFileSync(path.join(tmp, 'rules.yaml'), stringify(ruleFile.spec));
    copyFileSync('test/fixtures/alerts.test.yaml', path.join(tmp, 'alerts.test.yaml'));
    const check = spawnSync(promtool, ['check', 'rules', 'rules.yaml'], { cwd: tmp, encoding: 'utf8' });
    expect(check.stdout + check.stderr).toContain(`SUCCESS: ${rules.length} rules found`);
    expect(check.status).toBe(0);
    const test = spawnSync(promtool, ['test', 'rules', 'alerts.test.yaml'], { cwd: tmp, encoding: 'utf8' });
    expect({ status: test.status, out: test.stdout + test.stderr }).toEqual({ status: 0, out: expect.stringContaining('SUCCESS') });
    // Every alert is exercised by the unit tests, and says how bad it is and where the runbook is.
    const tested = new Set([...readFileSync('test/fixtures/alerts.test.yaml', 'utf8').matchAll(/alertname: (\w+)/g)].map((m) => m[1]));
    const runbook = readFileSync('docs/operations.md', 'utf8');
    for (const rule of rules) {
      expect(tested.has(rule.alert), rule.alert).toBe(true);
      expect(['critical', 'warning']).toContain(rule.labels.severity);
      expect(Object.keys(rule.annotations).sort()).toEqual(['description', 'runbook', 'summary']);
      expect(rule.annotations.description).toContain(`Runbook: docs/operations.md, "Alerts: `);
      const anchor = rule.annotations.runbook!.replace('docs/operations.md#', '');
      expect(runbook.split('\n').some((line) => line.startsWith('### ') && line.slice(4).toLowerCase().replace(/[^a-z0-9]/g, '') === anchor), `runbook section for #${anchor}`).toBe(true);
    }
  });

  it('a broken threshold fails the unit tests (they can fail)', () => {
    const broken = structuredClone(ruleFile.spec);
    const lag = broken.groups[0]!.rules.find((r) => r.alert === 'EtcdSyncLagSeconds')!;
    lag.expr = lag.expr.replace('> 60', '> 600');
    const dir = mkdtempSync(path.join(tmp, 'broken-'));
    writeFileSync(path.join(dir, 'rules.yaml'), stringify(broken));
    copyFileSync('test/fixtures/alerts.test.yaml', path.join(dir, 'alerts.test.yaml'));
    const test = spawnSync(promtool, ['test', 'rules', 'alerts.test.yaml'], { cwd: dir, encoding: 'utf8' });
    expect(test.status).toBe(1);
    expect(test.stdout + test.stderr).toContain('alertname: EtcdSyncLagSeconds, time: 8m');
  });
});

describe('a running pair, scraped', () => {
  let primary: EtcdServer;
  let standby: EtcdServer;
  let p: Etcd3;
  let s: Etcd3;
  const pair = usePair();
  const replicas: CliProcess[] = [];
  const ports: number[] = [];
  const keys = 20_000;
  let prometheus: ReturnType<typeof spawn> | undefined;
  let promUrl = '';

  const get = async (port: number, what: string): Promise<string> => (await fetch(`http://127.0.0.1:${port}${what}`)).text();
  const status = async (port: number): Promise<Record<string, any>> => JSON.parse(await get(port, '/status')) as Record<string, any>;
  const query = async (expr: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]> => {
    const res = (await (await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(expr)}`)).json()) as { status: string; error?: string; data: { result: never[] } };
    if (res.status !== 'success') throw new Error(`${expr}: ${res.error}`);
    return res.data.result;
  };

  let proxy: Proxy;
  let args: string[] = [];
  beforeAll(async () => {
    ({ primary, standby, p, s } = pair);
    for (let i = 0; i < keys; i += 2000) {
      await putMany(p, Array.from({ length: 2000 }, (_, j) => [`/registry/configmaps/apps/cm-${String(i + j).padStart(5, '0')}`, `value-${'x'.repeat(100)}-${i + j}`] as [string, string]));
    }
    await putMany(p, [['/registry/configmaps/kube-system/local', 'not replicated']]);
    // The leader reads the primary through a proxy that holds (no byte lost) once part of the
    // keyspace went through: the initial sync stands still mid-way for as long as the test looks.
    proxy = await Proxy.start(primary.endpoint);
    proxy.holdAfterBytes = 600_000;
    args = [...standby.cliArgs('standby'), '--check-interval', '2s', '--page-size', '500'];
    replicas.push(runCli(['run', '--primary-endpoints', proxy.endpoint, ...args, '--identity', 'sync-0']));
    await replicas[0]!.waitForLog('http listening');
    ports.push(httpPort(replicas[0]!));
  });
  afterAll(async () => {
    prometheus?.kill('SIGTERM');
    for (const r of replicas) r.child.kill('SIGTERM');
    await Promise.all(replicas.map((r) => r.exited));
    await proxy?.close();
  });

  it('mid-way through the initial sync, /status, the metrics and `status` say keys done of total, percent, rate and ETA', async () => {
    const total = keys + 1; // the count reads the whole prefix, the excluded namespace too
    await waitFor(() => proxy.held, { timeoutMs: 30_000, message: 'the initial sync never reached the hold' });
    let running: Record<string, any> = {};
    await waitFor(async () => {
      running = (await status(ports[0]!)).progress ?? {};
      return running.keysTotal === total && running.keysDone > 0;
    }, { timeoutMs: 10_000, message: 'no progress with a total in /status' });
    expect(running).toMatchObject({ phase: 'initial-sync', keysTotal: total, running: true, finishedAt: null });
    expect(running.keysDone).toBeLessThan(total);
    expect(running.percent).toBe(Math.floor((running.keysDone / total) * 1000) / 10);
    expect(running.etaSeconds === null || running.etaSeconds >= 0).toBe(true);
    const m = parseMetrics(await get(ports[0]!, '/metrics'));
    expect(m.get('etcd_sync_full_diff_keys')).toBe(total);
    expect(m.get('etcd_sync_full_diff_progress_ratio')).toBeGreaterThan(0);
    expect(m.get('etcd_sync_full_diff_progress_ratio')).toBeLessThan(1);
    expect(m.get('etcd_sync_state{state="initial-sync"}')).toBe(1);
    // The leader publishes it for `etcd-sync status` (every 5 s).
    let text = '';
    await waitFor(async () => {
      const c = runCli(['status', ...standby.cliArgs('standby')]);
      await c.exited;
      text = c.stdout();
      return text.includes('progress: initial-sync');
    }, { timeoutMs: 20_000, intervalMs: 500, message: 'status never showed the progress' });
    expect(text).toMatch(new RegExp(`^progress: initial-sync at primary revision \\d+: \\d+ of ${total} keys \\([\\d.]+%\\), \\d+ keys/s(, ETA \\d+ s)?$`, 'm'));
    expect(text).toMatch(/^state: initial-sync \(NOT READY/m);

    proxy.release();
    await waitFor(async () => {
      const st = await status(ports[0]!);
      return st.role === 'leader' && st.state === 'streaming' && st.ready.ready === true;
    }, { timeoutMs: 60_000, message: 'sync-0 never streamed after the hold' });
    const done = (await status(ports[0]!)).progress;
    expect(done).toMatchObject({ phase: 'initial-sync', keysDone: total, keysTotal: total, percent: 100, etaSeconds: 0, written: keys, running: false });
    expect(done.keysPerSecond).toBeGreaterThan(0);
    const after = parseMetrics(await get(ports[0]!, '/metrics'));
    expect([after.get('etcd_sync_full_diff_keys'), after.get('etcd_sync_full_diff_keys_done'), after.get('etcd_sync_full_diff_progress_ratio'), after.get('etcd_sync_full_diff_eta_seconds')]).toEqual([total, total, 1, 0]);
    expect(replicas[0]!.output()).toContain('"msg":"initial sync done"');

    replicas.push(runCli(['run', ...primary.cliArgs('primary'), ...args, '--identity', 'sync-1']));
    await replicas[1]!.waitForLog('http listening');
    ports.push(httpPort(replicas[1]!));
    await waitInSync(p, s);
  });

  it('a follower exports who leads and what the standby holds, and logs the leader', async () => {
    await waitFor(async () => parseMetrics(await get(ports[1]!, '/metrics')).get('etcd_sync_leader_info{leader="sync-0"}') === 1, { timeoutMs: 20_000, message: 'follower never named the leader' });
    await replicas[1]!.waitForLog('"msg":"leader is sync-0"');
    const leader = parseMetrics(await get(ports[0]!, '/metrics'));
    expect(leader.get('etcd_sync_leader_info{leader="sync-0"}')).toBe(1);
    // The follower's applied revision is the checkpoint it reads every few seconds: not 0.
    await waitFor(async () => (parseMetrics(await get(ports[1]!, '/metrics')).get('etcd_sync_applied_revision') ?? 0) > 0, { timeoutMs: 20_000 });
    const follower = parseMetrics(await get(ports[1]!, '/metrics'));
    expect(follower.get('etcd_sync_leader')).toBe(0);
    expect(follower.get('etcd_sync_primary_up')).toBe(1);
    const revision = Number((await p.kv.range({ key: Buffer.from('x') })).header.revision);
    expect(follower.get('etcd_sync_primary_revision')).toBe(revision);
    // Nothing the follower did not measure: no check, no diff of its own.
    expect([...follower.keys()].filter((k) => /check_keys|last_check|full_diff/.test(k))).toEqual([]);
  });

  it('every counter starts at 0 for its known labels, and the check result is exported', async () => {
    await waitFor(async () => parseMetrics(await get(ports[0]!, '/metrics')).has('etcd_sync_last_check_timestamp_seconds'), { timeoutMs: 20_000, message: 'no periodic check' });
    const text = await get(ports[0]!, '/metrics');
    const m = parseMetrics(text);
    for (const reason of ['checkpoint-compacted', 'watch-compacted', 'compacted', 'primary-changed', 'other-primary']) expect(m.get(`etcd_sync_resyncs_total{reason="${reason}"}`)).toBe(0);
    expect(m.get('etcd_sync_self_heals_total')).toBe(0);
    expect(m.get('etcd_sync_watch_restarts_total')).toBe(0);
    expect(text).toContain('# TYPE etcd_sync_self_heals_total counter');
    expect(m.get('etcd_sync_last_check_consistent')).toBe(1);
    expect(m.get('etcd_sync_check_keys{kind="missing"}')).toBe(0);
    expect(Math.abs(m.get('etcd_sync_last_check_timestamp_seconds')! - Date.now() / 1000)).toBeLessThan(60);
  });

  it('promtool check metrics passes on the leader and on the follower', async () => {
    for (const port of ports) {
      const text = await get(port, '/metrics');
      const lint = spawnSync(promtool, ['check', 'metrics'], { input: text, encoding: 'utf8' });
      expect({ port, status: lint.status, out: lint.stdout + lint.stderr }).toEqual({ port, status: 0, out: '' });
    }
  });

  it('Prometheus scraping both replicas: every dashboard query returns data, no alert fires, a pause raises EtcdSyncPaused', async () => {
    const promPort = await freePort();
    promUrl = `http://127.0.0.1:${promPort}`;
    writeFileSync(
      path.join(tmp, 'prometheus.yml'),
      stringify({
        global: { scrape_interval: '1s', evaluation_interval: '1s' },
        scrape_configs: [{ job_name: 'etcd-sync', static_configs: [{ targets: ports.map((port) => `127.0.0.1:${port}`) }] }],
      }),
    );
    prometheus = spawn(prometheusBin, [`--config.file=${path.join(tmp, 'prometheus.yml')}`, `--storage.tsdb.path=${path.join(tmp, 'data')}`, `--web.listen-address=127.0.0.1:${promPort}`], {
      stdio: 'ignore',
    });
    // Rates and increases need two samples of each replica.
    await waitFor(async () => (await query('count_over_time(up{job="etcd-sync"}[1m]) >= 3')).length === 2, { timeoutMs: 60_000, intervalMs: 500, message: 'Prometheus never scraped both replicas 3 times' });

    expect(dashboard.templating.list.map((v) => v.name)).toEqual(['datasource', 'job']);
    const exprs = dashboard.panels.flatMap((panel) => panel.targets.map((t) => ({ panel: panel.title, expr: t.expr.replaceAll('$job', 'etcd-sync').replaceAll('$__rate_interval', '1m') })));
    expect(exprs.length).toBeGreaterThanOrEqual(15);
    const empty: string[] = [];
    for (const { panel, expr } of exprs) if ((await query(expr)).length === 0) empty.push(`${panel}: ${expr}`);
    expect(empty).toEqual([]);
    // The State panel shows the leader and the follower by name.
    const states = (await query(dashboard.panels.find((panel) => panel.title === 'State per replica')!.targets[0]!.expr.replaceAll('$job', 'etcd-sync'))).map((r) => `${r.metric.identity}: ${r.metric.state}`);
    expect(states.sort()).toEqual(['sync-0: streaming', 'sync-1: follower']);

    // A healthy pair: no alert condition holds (the `for` clauses aside).
    const firing: string[] = [];
    for (const rule of rules) if ((await query(rule.expr)).length > 0) firing.push(rule.alert);
    expect(firing).toEqual([]);

    const paused = runCli(['pause', ...standby.cliArgs('standby'), '--reason', 'alert test']);
    expect((await paused.exited).code).toBe(0);
    const pausedRule = rules.find((r) => r.alert === 'EtcdSyncPaused')!;
    await waitFor(async () => (await query(pausedRule.expr)).length === 1, { timeoutMs: 30_000, message: 'EtcdSyncPaused never held' });
    const resumed = runCli(['resume', ...standby.cliArgs('standby')]);
    expect((await resumed.exited).code).toBe(0);
    // The State panel shows paused too (a leader's gauge filtered on `leader > 0` hid it before).
    await waitFor(async () => (await status(ports[0]!)).state === 'streaming', { timeoutMs: 30_000 });
    await waitInSync(p, s);
  });
});

describe('promtool is the real one', () => {
  it('answers its version', () => {
    expect(execFileSync(promtool, ['--version'], { encoding: 'utf8' }).split('\n')[0]).toMatch(/^promtool, version 2\./);
  });
});
