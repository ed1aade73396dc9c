/**
 * The command table: each command's name, description, flags and what runs it. program.ts
 * builds the parser from it and bin/ dispatches through it; nothing else lists the commands.
 */
import type { Command } from 'commander';
import { StatusLine, createLogger } from '../log.js';
import type { SyncProgress } from '../sync/engine.js';
import { runCheck } from './check.js';
import { runControl } from './control.js';
import { type CliIo, runMerge, runVerify } from './encryption.js';
import { addCheckOptions, checkConfig } from './options/check.js';
import type { Env, Options } from './options/common.js';
import { type ControlCommand, addControlOptions, controlConfig } from './options/control.js';
import { addMergeOptions, addVerifyOptions, mergeConfig, verifyConfig } from './options/encryption.js';
import { addRunOptions, runConfig } from './options/run.js';
import { runSync } from './run.js';

/** A diff's progress as the terminal's status line shows it. */
export function progressLine(p: SyncProgress): string {
  const of = p.keysTotal === undefined ? `${p.keysDone} keys` : `${p.keysDone}/${p.keysTotal} keys (${p.percent ?? 0}%)`;
  const eta = p.etaSeconds === undefined ? '' : `, ETA ${p.etaSeconds} s`;
  return `${p.phase}: ${of}, ${p.keysPerSecond} keys/s${eta}, ${p.written} written (${(p.bytesWritten / 1048576).toFixed(1)} MiB)`;
}

/** What the process gives a command: bin/ is the only place that reads process state. */
export interface CliEdge {
  env: Env;
  out(text: string): void;
  err(text: string): void;
  /** stderr is a terminal: readable logs and a progress line. */
  tty: boolean;
  /** Asks the operator to confirm deleting these keys; absent when nobody can be asked (no terminal). */
  confirm?: (keys: string[]) => Promise<boolean>;
  /** Aborts on SIGTERM/SIGINT. */
  signal: AbortSignal;
  /** Who runs the command (user@host), recorded by the control commands. */
  actor: string;
  /** The replica's name unless --identity says otherwise ($POD_NAME, else the hostname). */
  identity: string;
  /** etcd-sync's version. */
  version: string;
}

export interface CommandSpec {
  /** As typed: `check`, `encryption merge`. */
  path: string;
  description: string;
  addOptions(cmd: Command): Command;
  /** Runs the command; resolves to the process's exit code. */
  run(options: Options, edge: CliEdge): Promise<number>;
}

function control(command: ControlCommand, description: string): CommandSpec {
  return {
    path: command,
    description,
    addOptions: addControlOptions(command),
    run: (options, edge) => {
      const config = controlConfig(command, options);
      const log = createLogger(config.logLevel, { cmd: command }, edge.tty && config.output === 'text');
      return runControl(config, { log, out: edge.out, actor: edge.actor });
    },
  };
}

function encryption<C extends { logLevel: string; output: 'text' | 'json' }>(
  name: string,
  description: string,
  addOptions: (cmd: Command) => Command,
  toConfig: (options: Options) => C,
  run: (config: C, io: CliIo) => Promise<number>,
): CommandSpec {
  const path = `encryption ${name}`;
  return {
    path,
    description,
    addOptions,
    run: (options, edge) => {
      const config = toConfig(options);
      const log = createLogger(config.logLevel, { cmd: path }, edge.tty && config.output === 'text');
      return run(config, { log, out: edge.out, warn: (line) => edge.err(`etcd-sync: ${line}\n`) });
    },
  };
}

export const COMMANDS: readonly CommandSpec[] = [
  {
    path: 'run',
    description: 'mirror the primary etcd into the standby: initial diff, then streaming (the daemon)',
    addOptions: addRunOptions,
    run: async (options, edge) => {
      const config = runConfig(options, { identity: edge.identity, version: edge.version, tty: edge.tty });
      const readable = edge.tty && config.output === 'text';
      const statusLine = readable ? new StatusLine(edge.err) : undefined;
      const log = createLogger(config.logLevel, { cmd: 'run' }, readable, statusLine);
      edge.signal.addEventListener('abort', () => log.info('stopping: finishing the transaction in flight'), { once: true });
      const hooks = statusLine ? { onProgress: (p: SyncProgress) => statusLine.set(progressLine(p)), onState: () => statusLine.clear() } : {};
      await runSync(config, log, edge.signal, hooks);
      return 0;
    },
  },
  {
    path: 'check',
    description: 'audit the pair: missing, surplus and different in-scope keys; optionally repair (exit 0 consistent, 1 inconsistent, 2 could not check)',
    addOptions: addCheckOptions,
    run: (options, edge) => {
      const config = checkConfig(options);
      const log = createLogger(config.logLevel, { cmd: 'check' }, edge.tty && config.output === 'text');
      return runCheck(config, { log, out: edge.out, ...(edge.confirm ? { confirm: edge.confirm } : {}) });
    },
  },
  encryption('merge', "merge the standby's encryption keys into the primary's configuration (YAML out)", addMergeOptions, mergeConfig, runMerge),
  encryption(
    'verify',
    'decrypt every encrypted value of one etcd the way kube-apiserver would (exit 0 all readable, 1 some unreadable, 2 could not verify)',
    addVerifyOptions,
    verifyConfig,
    runVerify,
  ),
  control('pause', 'the leader stops applying, keeping its place in the primary history (state paused)'),
  control('resume', 'the leader picks up where it stopped'),
  control('promote', 'failover: final check (refuses when inconsistent, unless --force), then fence this etcd against every etcd-sync writer'),
  control('unfence', 'lift the fence that promote wrote'),
  control('status', 'leader identity, state, checkpoint revision, and with --primary-endpoints the lag'),
];

/** Descriptions of the command groups (the first word of a two-word path). */
export const GROUPS: Readonly<Record<string, string>> = {
  encryption: 'merge and verify kube-apiserver encryption-at-rest configurations across the pair',
};
