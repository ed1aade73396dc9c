#!/usr/bin/env node
/**
 * The edge: argv and environment in, one validated config, signals, exit codes.
 *   0 ok / clean shutdown · 1 runtime failure · 2 usage, configuration, TLS or auth error
 */
import { CommanderError } from 'commander';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { createInterface } from 'node:readline/promises';
import { runCheck } from '../src/cli/check.js';
import { checkConfig, controlConfig, mergeConfig, runConfig, verifyConfig } from '../src/cli/config.js';
import { runControl } from '../src/cli/control.js';
import { runMerge, runVerify } from '../src/cli/encryption.js';
import { buildProgram } from '../src/cli/program.js';
import { runSync } from '../src/cli/run.js';
import { EtcdSyncError, describeError } from '../src/errors.js';
import { createLogger } from '../src/log.js';
import type { SyncProgress } from '../src/sync/engine.js';

// grpc-js sets the TLS servername to the endpoint's IP address, which Node flags with a
// deprecation warning on every connection; it says nothing an operator can act on.
const emitWarning = process.emitWarning.bind(process) as (...args: unknown[]) => void;
process.emitWarning = ((...args: unknown[]) => {
  if (args.some((a) => a === 'DEP0123' || (typeof a === 'object' && a !== null && (a as { code?: unknown }).code === 'DEP0123'))) return;
  emitWarning(...args);
}) as typeof process.emitWarning;

const SHUTDOWN_TIMEOUT_MS = 10_000;
const controller = new AbortController();
let signals = 0;
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.on(sig, () => {
    signals++;
    if (signals > 1) {
      process.stderr.write(`etcd-sync: second ${sig}, exiting now\n`);
      process.exit(1);
    }
    controller.abort();
    // Shutdown finishes the txn in flight (calls have 30 s deadlines, but a stuck one must not
    // keep a Pod terminating): past this bound, say so and exit.
    setTimeout(() => fail(`shutdown did not finish within ${SHUTDOWN_TIMEOUT_MS / 1000} s after ${sig}; exiting`, 1), SHUTDOWN_TIMEOUT_MS).unref();
  });
}

function fail(message: string, code: number): never {
  process.stderr.write(`etcd-sync: ${message}\n`);
  process.exit(code);
}

process.on('unhandledRejection', (err) => fail(`internal error: ${describeError(err)}`, 1));
process.on('uncaughtException', (err) => fail(`internal error: ${describeError(err)}`, 1));

let progressDrawn = false;
function drawProgress(p: SyncProgress): void {
  progressDrawn = true;
  process.stderr.write(`\r\x1b[2Ksync: ${p.scanned} keys compared, ${p.written} written, ${(p.bytesWritten / 1048576).toFixed(1)} MiB, ${p.keysPerSecond} keys/s`);
}

/** Lists the keys and asks on the terminal; only offered when stdin is one. */
async function confirmDelete(keys: string[]): Promise<boolean> {
  process.stderr.write(`surplus keys only the standby has (${keys.length}):\n${keys.map((k) => `  ${k}`).join('\n')}\n`);
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(`delete these ${keys.length} keys from the standby? [y/N] `)).trim());
  } finally {
    rl.close();
  }
}

// dist/bin/etcd-sync.js → the package's root, in the repository and in the image (/app) alike.
const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

let exitCode = 0;
const program = buildProgram(process.env, async ({ name, options }) => {
  if (name === 'check') {
    const config = checkConfig(options);
    const log = createLogger(config.logLevel, { cmd: 'check' }, process.stderr.isTTY);
    exitCode = await runCheck(config, {
      log,
      out: (text) => process.stdout.write(text),
      ...(process.stdin.isTTY ? { confirm: confirmDelete } : {}),
    });
  }
  if (name === 'encryption merge' || name === 'encryption verify') {
    const log = createLogger(String(options.logLevel ?? 'warn'), { cmd: name }, process.stderr.isTTY);
    const io = { log, out: (text: string) => process.stdout.write(text), warn: (line: string) => process.stderr.write(`etcd-sync: ${line}\n`) };
    exitCode = name === 'encryption merge' ? await runMerge(mergeConfig(options), io) : await runVerify(verifyConfig(options), io);
  }
  if (name === 'pause' || name === 'resume' || name === 'promote' || name === 'unfence' || name === 'status') {
    const log = createLogger(String(options.logLevel ?? 'warn'), { cmd: name }, process.stderr.isTTY);
    exitCode = await runControl(controlConfig(name, options), { log, out: (text) => process.stdout.write(text), actor: `${process.env.USER ?? 'unknown'}@${hostname()}` });
  }
  if (name === 'run') {
    // The Pod name (Downward API) or the hostname, unless --identity says otherwise.
    const config = runConfig({ identity: process.env.POD_NAME || hostname(), version: VERSION, ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) });
    const log = createLogger(config.logLevel, { cmd: 'run' }, process.stderr.isTTY);
    process.once('SIGTERM', () => log.info('SIGTERM: finishing the transaction in flight'));
    process.once('SIGINT', () => log.info('SIGINT: finishing the transaction in flight'));
    const endProgressLine = (): void => {
      if (progressDrawn) process.stderr.write('\n');
      progressDrawn = false;
    };
    await runSync(config, log, controller.signal, process.stderr.isTTY ? { onProgress: drawProgress, onState: endProgressLine } : {});
  }
}, VERSION);

try {
  await program.parseAsync(process.argv);
  process.exit(exitCode);
} catch (err) {
  if (err instanceof CommanderError) {
    // commander already printed the message (and usage hint).
    const ok = err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help';
    process.exit(ok && err.exitCode === 0 ? 0 : 2);
  }
  if (err instanceof EtcdSyncError) fail(err.message, err.exitCode);
  fail(`internal error: ${describeError(err)}`, 1);
}
