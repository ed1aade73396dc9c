/** deploy/ cannot drift from the code: manifests parse, their args pass the CLI's parser, the dashboard's metrics exist, the package installs. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it, onTestFinished } from 'vitest';
import { parseEndpoints, scopeConfig } from '../src/cli/options/common.js';
import { RUN_DEFAULTS } from '../src/cli/options/run.js';
import { buildProgram } from '../src/cli/program.js';
import { SyncMetrics } from '../src/metrics.js';
import { PrimaryMonitor } from '../src/sync/primary-monitor.js';
import { IMAGE_NODE_FLAGS, IMAGE_NODE_OPTIONS } from '../bench/load.js';

type Doc = { kind: string; metadata: { name: string; namespace?: string }; spec?: any; data?: Record<string, string> };
/** What `kubectl kustomize` renders from a folder: the objects an operator applies. */
function render(dir: string): Doc[] {
  const out = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8' });
  return parseAllDocuments(out).map((d) => {
    if (d.errors.length > 0) throw new Error(`${dir}: ${d.errors[0]?.message}`);
    return d.toJS() as Doc;
  });
}
const dir = 'deploy/kubernetes';
const docs = render(dir);
const configMap = docs.find((d) => d.kind === 'ConfigMap')!;

async function parse(args: string[], env: Record<string, string>): Promise<{ name: string; options: Record<string, unknown> }> {
  let parsed: { name: string; options: Record<string, unknown> } | undefined;
  const program = buildProgram(env, (p) => {
    parsed = p;
  });
  await program.parseAsync(['node', 'etcd-sync', ...args]);
  if (!parsed) throw new Error(`no command ran for ${args.join(' ')}`);
  return parsed;
}

describe('deploy/', () => {
  it('`kubectl kustomize deploy/kubernetes` renders every manifest of the folder, in the etcd-sync namespace', () => {
    expect(docs.map((d) => `${d.kind}/${d.metadata.name}`).sort()).toEqual([
      'ConfigMap/etcd-sync',
      'CronJob/etcd-sync-check',
      'Deployment/etcd-sync',
      'Namespace/etcd-sync',
      'NetworkPolicy/etcd-sync',
      'PodDisruptionBudget/etcd-sync',
      'PrometheusRule/etcd-sync',
      'Service/etcd-sync',
      'ServiceMonitor/etcd-sync',
    ]);
    for (const d of docs) if (d.kind !== 'Namespace') expect(d.metadata.namespace, `${d.kind}/${d.metadata.name}`).toBe('etcd-sync');
    // Nothing in the folder is left out of the package.
    const listed = (parseAllDocuments(readFileSync(path.join(dir, 'kustomization.yaml'), 'utf8'))[0]!.toJS() as { resources: string[] }).resources;
    expect(readdirSync(dir).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').sort()).toEqual([...listed].sort());
  });

  it('the encryption config is optional: absent from the base, added whole by the component', () => {
    const base = docs.find((d) => d.kind === 'Deployment')!.spec.template.spec;
    expect(JSON.stringify(base)).not.toContain('encryption');
    const overlay = render('deploy/examples/encryption-at-rest').find((d) => d.kind === 'Deployment')!.spec.template.spec;
    const container = overlay.containers[0];
    expect(container.args).toContain('--encryption-config=/etc/kubernetes/encryption-provider.conf');
    expect(container.volumeMounts).toContainEqual({ name: 'encryption-config', mountPath: '/etc/kubernetes/encryption-provider.conf', readOnly: true });
    expect(overlay.volumes).toContainEqual({ name: 'encryption-config', hostPath: { path: '/etc/kubernetes/encryption-provider.conf', type: 'File' } });
  });

  it('the CronJob runs hardened like the Deployment; the PDB and NetworkPolicy select the Pods', () => {
    const pod = docs.find((d) => d.kind === 'Deployment')!.spec.template.spec;
    const job = docs.find((d) => d.kind === 'CronJob')!.spec.jobTemplate.spec.template.spec;
    for (const field of ['hostNetwork', 'dnsPolicy', 'nodeSelector', 'tolerations', 'securityContext']) expect(job[field], field).toEqual(pod[field]);
    expect(job.containers[0].securityContext).toEqual(pod.containers[0].securityContext);
    expect(job.containers[0].args).toContain('--output=json');
    const labels = docs.find((d) => d.kind === 'Deployment')!.spec.template.metadata.labels;
    const pdb = docs.find((d) => d.kind === 'PodDisruptionBudget')!.spec;
    expect(pdb).toEqual({ maxUnavailable: 1, selector: { matchLabels: labels } });
    const policy = docs.find((d) => d.kind === 'NetworkPolicy')!.spec;
    expect(policy.podSelector.matchLabels).toEqual(labels);
    expect(policy.ingress).toEqual([{ from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } }], ports: [{ protocol: 'TCP', port: 9479 }] }]);
  });

  it("the Deployment's and the CronJob's args and ConfigMap environment pass the CLI's own parser and validation", async () => {
    const deployment = docs.find((d) => d.kind === 'Deployment')!;
    const cronJob = docs.find((d) => d.kind === 'CronJob')!;
    const containers = [
      ...deployment.spec.template.spec.containers,
      ...cronJob.spec.jobTemplate.spec.template.spec.containers,
    ] as { args: string[]; envFrom: unknown[] }[];
    expect(containers).toHaveLength(2);
    const env = configMap.data!;
    for (const name of Object.keys(env)) expect(name).toMatch(/^ETCD_SYNC_[A-Z_]+$/);
    const names: string[] = [];
    for (const container of containers) {
      expect(container.envFrom).toEqual([{ configMapRef: { name: 'etcd-sync' } }]);
      const { name, options } = await parse(container.args, env);
      names.push(name);
      // Validation that reads no files: endpoints, scope.
      parseEndpoints('--primary-endpoints', String(options.primaryEndpoints));
      parseEndpoints('--standby-endpoints', String(options.standbyEndpoints));
      const { scope } = scopeConfig(options);
      expect([...scope.excludeNamespaces]).toEqual(['kube-system', 'kube-public', 'kube-node-lease', 'etcd-sync']);
      expect(options.primaryCacert).toBe('/etc/etcd-sync/primary/ca.crt');
    }
    expect(names).toEqual(['run', 'check']);
    const run = await parse(containers[0]!.args, env);
    expect(run.options).toMatchObject({ checkInterval: 600_000, leaseTtl: 15, logLevel: 'info', httpAddress: RUN_DEFAULTS.httpAddress });
    // The probes and the Service point at what the server serves.
    const probes = deployment.spec.template.spec.containers[0];
    expect([probes.livenessProbe.httpGet.path, probes.readinessProbe.httpGet.path]).toEqual(['/healthz', '/readyz']);
    expect(probes.ports).toEqual([{ name: 'http', containerPort: Number(RUN_DEFAULTS.httpAddress.split(':')[1]) }]);
    // A drifted flag is caught: the same parse with an unknown flag fails.
    await expect(parse([...containers[0]!.args, '--no-such-flag'], env)).rejects.toThrow("unknown option '--no-such-flag'");
  });

  it('the Grafana dashboard queries only metrics that /metrics exposes', async () => {
    const dashboard = JSON.parse(readFileSync('deploy/grafana-dashboard.json', 'utf8')) as { panels: { targets: { expr: string }[] }[] };
    const used = new Set(dashboard.panels.flatMap((p) => p.targets.flatMap((t) => t.expr.match(/etcd_sync_[a-z_]+/g) ?? [])));
    const metrics = new SyncMetrics({ engine: () => undefined, monitor: new PrimaryMonitor({ primaryTimeoutMs: 15_000, probeIntervalMs: 5_000 }), identity: 'x', version: '0.0.0', isLeader: () => false,
      leaderIdentity: () => undefined, state: () => 'follower', unreadableEncryptedValues: () => 0 });
    const exposed = new Set((await metrics.registry.getMetricsAsJSON()).flatMap((m) => [m.name, `${m.name}_bucket`, `${m.name}_count`, `${m.name}_sum`]));
    expect([...used].filter((m) => !exposed.has(m))).toEqual([]);
    expect(used.size).toBeGreaterThanOrEqual(12);
  });

  it("the Dockerfile starts node as the benchmark does, with flags this node accepts", () => {
    const dockerfile = readFileSync('deploy/Dockerfile', 'utf8');
    const nodeOptions = /^ENV NODE_OPTIONS="([^"]*)"$/m.exec(dockerfile)?.[1];
    const entrypoint = JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(dockerfile)?.[1] ?? '[]') as string[];
    expect(nodeOptions).toBe(IMAGE_NODE_OPTIONS);
    expect(entrypoint).toEqual(['node', ...IMAGE_NODE_FLAGS, '/app/dist/bin/etcd-sync.js']);
    // Node exits 9 on a flag it does not know, or on one that NODE_OPTIONS may not carry.
    const heapLimit = execFileSync(process.execPath, [...IMAGE_NODE_FLAGS, '-p', "require('v8').getHeapStatistics().heap_size_limit"], {
      encoding: 'utf8',
      env: { PATH: process.env.PATH ?? '', NODE_OPTIONS: IMAGE_NODE_OPTIONS },
    });
    // 192 MiB of old space and three 8 MiB semi-spaces on Node 20 and 24 alike.
    expect(Number(heapLimit) / 2 ** 20).toBe(216);
  });

  it('npm pack holds what the image needs, and the packed bin installed in a clean folder answers --help', () => {
    const out = mkdtempSync(path.join(os.tmpdir(), 'etcd-sync-pack-'));
    const app = mkdtempSync(path.join(os.tmpdir(), 'etcd-sync-install-'));
    // ~23 MB a run: not left behind in the machine's temp directory.
    onTestFinished(() => {
      for (const dir of [out, app]) rmSync(dir, { recursive: true, force: true });
    });
    const [pack] = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', out], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })) as {
      filename: string;
      files: { path: string }[];
    }[];
    const files = pack!.files.map((f) => f.path);
    for (const needed of ['package.json', 'README.md', 'dist/bin/etcd-sync.js', 'dist/src/cli/run.js', 'dist/src/sync/engine.js', 'dist/src/encryption/decrypt.js']) {
      expect(files).toContain(needed);
    }
    expect(files.filter((f) => f.startsWith('test/') || f.startsWith('src/') || f.endsWith('.ts'))).toEqual([]);
    execFileSync('npm', ['init', '-y'], { cwd: app, stdio: 'ignore' });
    execFileSync('npm', ['install', '--omit=dev', '--no-audit', '--no-fund', path.join(out, pack!.filename)], { cwd: app, stdio: 'ignore' });
    const help = execFileSync(path.join(app, 'node_modules/.bin/etcd-sync'), ['--help'], { encoding: 'utf8' });
    for (const command of ['run', 'check', 'encryption', 'pause', 'resume', 'promote', 'unfence', 'status']) expect(help).toMatch(new RegExp(`\\n  ${command}\\b`));
  }, 180_000);
});
