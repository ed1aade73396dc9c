/** Real etcd servers for tests: free loopback ports, temporary data dirs, optional TLS and auth. */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Etcd3 } from 'etcd3';
import type { EtcdSideConfig } from '../../src/etcd/connection.js';
import { waitFor } from './wait.js';
import type { TlsFiles } from './tls.js';

export const ETCD_BIN = process.env.ETCD_BIN ?? path.resolve('.tools/etcd-3.5/usr/bin/etcd');
let etcdVersion: string | undefined;
export function etcdMinor(): string {
  etcdVersion ??= /Version: (\d+\.\d+)/.exec(execFileSync(ETCD_BIN, ['--version']).toString())?.[1] ?? '3.5';
  return etcdVersion;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

export interface EtcdServerOptions {
  name?: string;
  tls?: TlsFiles;
  /** Enables auth with user root and this password. */
  rootPassword?: string;
  /** This client port, not a free one (no retry when it is taken): for the helper's own test and the demo's --port-base. */
  clientPort?: number;
  /** This peer port, not a free one. */
  peerPort?: number;
  /** More etcd flags, e.g. `--auth-token-ttl=1`. */
  extraArgs?: string[];
}

export class EtcdServer {
  process: ChildProcess | undefined;
  readonly endpoint: string;
  private readonly peerUrl: string;
  /** The etcd member's name, unique to this server: the readiness probe checks it answers, not another etcd. */
  private readonly memberName: string;
  private authEnabled = false;
  private stderr = '';

  private constructor(
    readonly name: string,
    readonly dataDir: string,
    readonly clientPort: number,
    peerPort: number,
    readonly options: EtcdServerOptions,
  ) {
    const scheme = options.tls ? 'https' : 'http';
    this.endpoint = `${scheme}://127.0.0.1:${clientPort}`;
    this.peerUrl = `http://127.0.0.1:${peerPort}`;
    this.memberName = `${name}-${clientPort}-${process.pid}`;
  }

  static async start(options: EtcdServerOptions = {}): Promise<EtcdServer> {
    const name = options.name ?? 'etcd';
    for (let attempt = 1; ; attempt++) {
      const dataDir = mkdtempSync(path.join(os.tmpdir(), `etcd-sync-${name}-`));
      const server = new EtcdServer(name, dataDir, options.clientPort ?? (await freePort()), options.peerPort ?? (await freePort()), options);
      try {
        await server.launch();
      } catch (err) {
        await server.destroy();
        // A port freePort found can be taken before etcd binds it (any process's outgoing
        // connection draws from the same ephemeral range): new ports, a new etcd.
        if (attempt < 3 && options.clientPort === undefined && /address already in use/.test(String(err))) continue;
        throw err;
      }
      if (options.rootPassword) await server.enableAuth(options.rootPassword);
      return server;
    }
  }

  private args(): string[] {
    const args = [
      `--name=${this.memberName}`,
      `--data-dir=${this.dataDir}`,
      `--listen-client-urls=${this.endpoint}`,
      `--advertise-client-urls=${this.endpoint}`,
      `--listen-peer-urls=${this.peerUrl}`,
      `--initial-advertise-peer-urls=${this.peerUrl}`,
      `--initial-cluster=${this.memberName}=${this.peerUrl}`,
      `--initial-cluster-token=${this.memberName}`,
      '--logger=zap',
      '--log-level=error',
      '--quota-backend-bytes=8589934592',
    ];
    if (etcdMinor() !== '3.4') args.push('--unsafe-no-fsync');
    args.push(...(this.options.extraArgs ?? []));
    const tls = this.options.tls;
    if (tls) {
      args.push(`--cert-file=${tls.serverCert}`, `--key-file=${tls.serverKey}`, `--trusted-ca-file=${tls.ca}`, '--client-cert-auth');
    }
    return args;
  }

  async launch(): Promise<void> {
    this.stderr = '';
    // etcd reads every ETCD_* variable as a flag (ETCD_VERSION=3.4 would become --version): drop them.
    const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('ETCD_')));
    const child = spawn(ETCD_BIN, this.args(), { stdio: ['ignore', 'ignore', 'pipe'], env });
    child.stderr?.on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-4000);
    });
    this.process = child;
    const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
    let exited = false;
    // Root's credentials only once auth is on: before, etcd refuses to authenticate anyone.
    const client = new Etcd3(this.clientOptions({ root: this.authEnabled }));
    try {
      await waitFor(
        async () => {
          // Not a throw: waitFor would retry it until its timeout.
          if (child.exitCode !== null || child.signalCode !== null) exited = true;
          if (exited) return true;
          try {
            // Another test file's etcd can take this port between freePort and this etcd's
            // bind (and a pair's two servers, started at once, each other's): then that one
            // answers here while this one exits with "address already in use". Ready only
            // when the member answering is this one.
            const { members } = await client.cluster.memberList({});
            return members.some((member) => member.name === this.memberName);
          } catch {
            return false;
          }
        },
        { timeoutMs: 20_000, message: `etcd ${this.name} did not become ready` },
      );
    } finally {
      client.close();
    }
    if (exited) {
      await closed; // the whole of stderr
      throw new Error(`etcd ${this.name} exited: ${this.stderr}`);
    }
  }

  private async enableAuth(password: string): Promise<void> {
    const client = new Etcd3(this.clientOptions({ root: false }));
    try {
      await client.role('root').create();
      await client.user('root').create(password);
      await client.user('root').addRole('root');
      await client.auth.authEnable({});
      this.authEnabled = true;
    } finally {
      client.close();
    }
  }

  /** Options for an etcd3 client used by tests to seed and inspect (root user when auth is on). */
  clientOptions(opts: { root?: boolean } = { root: true }): ConstructorParameters<typeof Etcd3>[0] {
    const tls = this.options.tls;
    return {
      hosts: this.endpoint,
      ...(tls ? { credentials: { rootCertificate: tls.caPem, privateKey: tls.clientKeyPem, certChain: tls.clientCertPem } } : {}),
      ...(opts.root && this.options.rootPassword ? { auth: { username: 'root', password: this.options.rootPassword } } : {}),
      grpcOptions: { 'grpc.max_receive_message_length': 256 * 1024 * 1024 },
      // A stalled call fails the test with a message instead of hanging it until the test timeout.
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + 20_000 }),
    };
  }

  client(): Etcd3 {
    return new Etcd3(this.clientOptions());
  }

  /** etcd-sync's view of this server. */
  sideConfig(name: string): EtcdSideConfig {
    const tls = this.options.tls;
    return {
      name,
      endpoints: [this.endpoint],
      ...(tls ? { tls: { ca: tls.caPem, cert: tls.clientCertPem, key: tls.clientKeyPem } } : {}),
      ...(this.options.rootPassword ? { auth: { username: 'root', password: this.options.rootPassword } } : {}),
    };
  }

  /** Flags for the CLI, e.g. `--primary-endpoints`. */
  cliArgs(side: 'primary' | 'standby'): string[] {
    const args = [`--${side}-endpoints`, this.endpoint];
    const tls = this.options.tls;
    if (tls) args.push(`--${side}-cacert`, tls.ca, `--${side}-cert`, tls.clientCert, `--${side}-key`, tls.clientKey);
    if (this.options.rootPassword) args.push(`--${side}-user`, 'root', `--${side}-password`, this.options.rootPassword);
    return args;
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.process;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill(signal);
    await exited;
    this.process = undefined;
  }

  /** `etcdctl snapshot save` of this etcd into `file` (no TLS or auth: the fault tests' plain etcds). */
  snapshotTo(file: string): void {
    execFileSync(path.join(path.dirname(ETCD_BIN), 'etcdctl'), ['--endpoints', this.endpoint, 'snapshot', 'save', file], { stdio: 'ignore', env: { ...etcdctlEnv(), ETCDCTL_API: '3' } });
  }

  /**
   * Stops this etcd, replaces its data with the snapshot `file` and starts it again on the same
   * address: the same member and cluster ID, or with `newCluster` a cluster of another ID (an etcd
   * rebuilt from a backup).
   */
  async restoreFrom(file: string, options: { newCluster?: boolean } = {}): Promise<void> {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
    const dir = path.dirname(ETCD_BIN);
    // etcd 3.5 restores with etcdutl (etcdctl's restore is deprecated there); 3.4 has etcdctl only.
    const tool = existsSync(path.join(dir, 'etcdutl')) ? 'etcdutl' : 'etcdctl';
    execFileSync(
      path.join(dir, tool),
      [
        'snapshot',
        'restore',
        file,
        `--data-dir=${this.dataDir}`,
        `--name=${this.memberName}`,
        `--initial-cluster=${this.memberName}=${this.peerUrl}`,
        `--initial-cluster-token=${this.memberName}${options.newCluster ? '-rebuilt' : ''}`,
        `--initial-advertise-peer-urls=${this.peerUrl}`,
        ...(tool === 'etcdctl' ? ['--skip-hash-check'] : []),
      ],
      { stdio: 'ignore', env: { ...etcdctlEnv(), ETCDCTL_API: '3' } },
    );
    await this.launch();
  }

  /**
   * Leaves this etcd running after this process exits (the demo's --keep): stops listening to
   * it; returns its pid. Its data directory stays.
   */
  release(): number {
    const child = this.process;
    if (!child?.pid) throw new Error(`etcd ${this.name} is not running`);
    child.stderr?.destroy();
    child.unref();
    this.process = undefined;
    return child.pid;
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.launch();
  }

  async destroy(): Promise<void> {
    await this.stop('SIGKILL');
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** The environment without etcd's own ETCD_* variables (etcd and its tools read each as a flag). */
function etcdctlEnv(): Record<string, string> {
  return Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => !e[0].startsWith('ETCD') && e[1] !== undefined));
}

/** A primary and a standby, each its own cluster. */
export async function startPair(options: { tls?: TlsFiles; rootPassword?: string } = {}): Promise<{ primary: EtcdServer; standby: EtcdServer }> {
  const [primary, standby] = await Promise.all([
    EtcdServer.start({ ...options, name: 'primary' }),
    EtcdServer.start({ ...options, name: 'standby' }),
  ]);
  return { primary, standby };
}
