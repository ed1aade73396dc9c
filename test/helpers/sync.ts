import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import type { Etcd3 } from 'etcd3';
import pino from 'pino';
import { EtcdSide } from '../../src/etcd/connection.js';
import { Scope, defaultScopeRules, prefixEnd } from '../../src/scope.js';
import { SyncEngine, type SyncOptions } from '../../src/sync/engine.js';
import { buildProgram } from '../../src/cli/program.js';
import { type RunConfig, SYNC_TUNING, runConfig, syncOptions } from '../../src/cli/options/run.js';
import { PrimaryMonitor } from '../../src/sync/primary-monitor.js';
import type { EtcdServer } from './etcd.js';
import { waitFor } from './wait.js';

export const quietLog = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

export interface Entry {
  value: Buffer;
  lease: string;
}

/** Every key under `prefix` (default the whole keyspace), by latin1 key; at `revision` when given. */
export async function snapshot(client: Etcd3, prefix?: Buffer, revision?: bigint): Promise<Map<string, Entry>> {
  const key = prefix ?? Buffer.from([0]);
  const rangeEnd = prefix ? prefixEnd(prefix) : Buffer.from([0]);
  const res = await client.kv.range({ key, range_end: rangeEnd, ...(revision !== undefined ? { revision: revision.toString() } : {}) });
  const out = new Map<string, Entry>();
  for (const kv of res.kvs) out.set(kv.key.toString('latin1'), { value: kv.value, lease: kv.lease });
  return out;
}

/** In-scope keys with their values (hex), for exact comparisons with clear diffs. */
export async function inScope(client: Etcd3, scope = new Scope(defaultScopeRules()), revision?: bigint): Promise<Record<string, string>> {
  const all = await snapshot(client, scope.keyPrefix, revision);
  const out: Record<string, string> = {};
  for (const [k, e] of [...all.entries()].sort()) {
    if (scope.inScope(Buffer.from(k, 'latin1'))) out[k] = e.value.toString('hex');
  }
  return out;
}

/** Keys whose in-scope values differ, with both sides' values (for failure messages). */
export async function differences(primary: Etcd3, standby: Etcd3, scope?: Scope): Promise<string[]> {
  const a = await inScope(primary, scope);
  const b = await inScope(standby, scope);
  const text = (hex: string | undefined): string => (hex === undefined ? '(absent)' : Buffer.from(hex, 'hex').toString().slice(0, 40));
  return [...new Set([...Object.keys(a), ...Object.keys(b)])]
    .filter((k) => a[k] !== b[k])
    .map((k) => `${k}: primary ${text(a[k])} standby ${text(b[k])}`);
}

export async function waitInSync(primary: Etcd3, standby: Etcd3, scope?: Scope, timeoutMs = 60_000): Promise<void> {
  try {
    await waitFor(async () => isDeepStrictEqual(await inScope(primary, scope), await inScope(standby, scope)), { timeoutMs });
  } catch {
    const diff = await differences(primary, standby, scope);
    throw new Error(`standby did not match the primary within ${timeoutMs} ms: ${diff.length} keys differ, e.g.\n${diff.slice(0, 8).join('\n')}`);
  }
}

export interface RunningEngine {
  engine: SyncEngine;
  done: Promise<void>;
  stop(): Promise<void>;
}

/** `etcd-sync run`'s config for these two etcds with `args`, through the CLI's own parser: the defaults exactly as the CLI applies them. */
export function parseRunConfig(primary: EtcdServer, standby: EtcdServer, args: string[] = []): RunConfig {
  let options: Record<string, unknown> | undefined;
  buildProgram({}, (parsed) => {
    options = parsed.options;
  }).parse(['run', ...primary.cliArgs('primary'), ...standby.cliArgs('standby'), ...args], { from: 'user' });
  if (!options) throw new Error('run did not parse');
  return runConfig(options, { identity: 'test', version: 'test', tty: false });
}

/** The engine's options as `run` builds them with its default flags (idle progress every 200 ms, for quick tests), then `overrides`. */
export function engineOptions(primary: EtcdServer, standby: EtcdServer, overrides: Partial<SyncOptions> = {}): SyncOptions {
  const config = parseRunConfig(primary, standby);
  return { ...syncOptions(config, new Scope(config.scope)), idleProgressMs: 200, ...overrides };
}

export function startEngine(primary: EtcdServer, standby: EtcdServer, options: Partial<SyncOptions> = {}): RunningEngine {
  const p = new EtcdSide(primary.sideConfig('primary'));
  const s = new EtcdSide(standby.sideConfig('standby'));
  const engineConfig = engineOptions(primary, standby, options);
  const monitor = new PrimaryMonitor({ primaryTimeoutMs: engineConfig.primaryTimeoutMs, probeIntervalMs: SYNC_TUNING.primaryProbeMs }, quietLog);
  const engine = new SyncEngine(p, s, monitor, engineConfig, quietLog);
  monitor.setAppliedSource(() => engine.appliedRevision);
  const controller = new AbortController();
  const done = engine.run(controller.signal).finally(() => {
    p.close();
    s.close();
  });
  done.catch(() => undefined);
  return {
    engine,
    done,
    async stop() {
      controller.abort();
      await done;
    },
  };
}

export const CLI = path.resolve('dist/bin/etcd-sync.js');

/** package.json's version: what `--version` prints and etcd_sync_build_info carries. */
export function packageVersion(): string {
  return (JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }).version;
}

export interface CliProcess {
  child: ChildProcess;
  /** stdout and stderr interleaved. */
  output(): string;
  stdout(): string;
  waitForLog(text: string, timeoutMs?: number): Promise<void>;
  /** Calls `fn` in the output handler that receives `text` first: at that moment, not a poll later. */
  onLog(text: string, fn: () => void): void;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Runs the built CLI; `nodeFlags` go to node itself (e.g. --cpu-prof, which NODE_OPTIONS refuses). */
export function runCli(args: string[], env: Record<string, string> = {}, nodeFlags: readonly string[] = []): CliProcess {
  // Parallel `run`s must not share the default port: an ephemeral one unless the test picks.
  if (args[0] === 'run' && !args.includes('--http-address')) args = [...args, '--http-address', '127.0.0.1:0'];
  const child = spawn(process.execPath, [...nodeFlags, CLI, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '', ...env },
  });
  let out = '';
  let stdout = '';
  let watchers: { text: string; fn: () => void }[] = [];
  const received = (text: string): void => {
    // From a text's length before the new chunk: a line may arrive split over two chunks.
    const from = out.length;
    out += text;
    if (watchers.length === 0) return;
    const at = (w: { text: string }): number => out.indexOf(w.text, Math.max(0, from - w.text.length));
    const due = watchers.filter((w) => at(w) >= 0).sort((a, b) => at(a) - at(b));
    watchers = watchers.filter((w) => !due.includes(w));
    for (const w of due) w.fn();
  };
  child.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString();
    received(d.toString());
  });
  child.stderr?.on('data', (d: Buffer) => received(d.toString()));
  let exitedWith: string | undefined;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      exitedWith = signal ?? String(code);
      resolve({ code, signal });
    }),
  );
  return {
    child,
    output: () => out,
    stdout: () => stdout,
    waitForLog: async (text, timeoutMs = 60_000) => {
      // A process that has exited will never log it: fail at once rather than at the timeout.
      await waitFor(() => out.includes(text) || exitedWith !== undefined, { timeoutMs }).catch(() => {
        throw new Error(`no '${text}' in output within ${timeoutMs} ms:\n${out.slice(-2000)}`);
      });
      if (!out.includes(text)) throw new Error(`the CLI exited (${exitedWith}) without '${text}' in its output:\n${out.slice(-2000)}`);
    },
    onLog: (text, fn) => {
      if (out.includes(text)) fn();
      else watchers.push({ text, fn });
    },
    exited,
  };
}

/** The port a `run` serves HTTP on (it logs `http listening` with the address it bound). */
export function httpPort(cli: CliProcess): number {
  const port = /"address":"[^"]*:(\d+)","msg":"http listening"/.exec(cli.output())?.[1];
  if (port === undefined) throw new Error(`no 'http listening' line in:\n${cli.output().slice(-2000)}`);
  return Number(port);
}

/** Waits until a `run` serves HTTP and its /status says `streaming`. */
export async function waitStreaming(cli: CliProcess, timeoutMs = 30_000): Promise<void> {
  await cli.waitForLog('http listening');
  const url = `http://127.0.0.1:${httpPort(cli)}/status`;
  await waitFor(async () => ((await (await fetch(url)).json()) as { state: string }).state === 'streaming', {
    timeoutMs,
    message: `never streaming:\n${cli.output().slice(-2000)}`,
  });
}

export async function putMany(client: Etcd3, entries: [string | Buffer, string | Buffer][]): Promise<void> {
  for (let i = 0; i < entries.length; i += 100) {
    const chunk = entries.slice(i, i + 100);
    await client.kv.txn({
      compare: [],
      success: chunk.map(([k, v]) => ({ request_put: { key: Buffer.from(k as never), value: Buffer.from(v as never) } })),
      failure: [],
    } as never);
  }
}
