#!/usr/bin/env node
/**
 * The edge: argv, environment, terminal and signals in; exit codes out. Everything else is in
 * src/cli (the command table, the options, the commands).
 *   0 ok / clean shutdown · 1 runtime failure · 2 usage, configuration, TLS or auth error
 * With --output json a failure is {"error": "...", "exitCode": N} on stdout instead of a line on stderr.
 */
import { CommanderError } from 'commander';
import { readFileSync } from 'node:fs';
import { hostname, userInfo } from 'node:os';
import { createInterface } from 'node:readline/promises';
import type { CliEdge } from '../src/cli/commands.js';
import { buildProgram } from '../src/cli/program.js';
import { EtcdSyncError, describeError } from '../src/errors.js';

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

/**
 * `-o json` / `--output json` (or ETCD_SYNC_OUTPUT=json): failures are a JSON object on stdout.
 * Read from argv before commander parses it, so that a usage error is JSON too; the parsed
 * option replaces it once a command runs.
 */
let jsonOutput = wantsJson(process.argv.slice(2), process.env.ETCD_SYNC_OUTPUT);

function wantsJson(args: string[], env: string | undefined): boolean {
  let format = env;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') break;
    if (a === '-o' || a === '--output') format = args[i + 1];
    else if (a.startsWith('--output=')) format = a.slice('--output='.length);
    else if (/^-o[^-]/.test(a)) format = a.slice(2);
  }
  return format === 'json';
}

function fail(message: string, code: number): never {
  if (jsonOutput) process.stdout.write(`${JSON.stringify({ error: message, exitCode: code })}\n`);
  else process.stderr.write(`etcd-sync: ${message}\n`);
  process.exit(code);
}

process.on('unhandledRejection', (err) => fail(`internal error: ${describeError(err)}`, 1));
process.on('uncaughtException', (err) => fail(`internal error: ${describeError(err)}`, 1));

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

function osUser(): string {
  try {
    return userInfo().username;
  } catch {
    return process.env.USER ?? process.env.LOGNAME ?? 'unknown';
  }
}

// dist/bin/etcd-sync.js → the package's root, in the repository and in the image (/app) alike.
const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

const edge: CliEdge = {
  env: process.env,
  out: (text) => void process.stdout.write(text),
  err: (text) => void process.stderr.write(text),
  tty: process.stderr.isTTY === true,
  ...(process.stdin.isTTY ? { confirm: confirmDelete } : {}),
  signal: controller.signal,
  actor: `${osUser()}@${hostname()}`,
  identity: process.env.POD_NAME || hostname(),
  version: VERSION,
};

let exitCode = 0;
const program = buildProgram(process.env, async ({ command, options }) => {
  jsonOutput = options.output === 'json';
  exitCode = await command.run(options, edge);
}, VERSION);

try {
  await program.parseAsync(process.argv);
  process.exit(exitCode);
} catch (err) {
  if (err instanceof CommanderError) {
    // commander already printed the message (and usage hint) on stderr.
    const ok = err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help';
    if (ok && err.exitCode === 0) process.exit(0);
    if (jsonOutput) process.stdout.write(`${JSON.stringify({ error: err.message.replace(/^error: /, ''), exitCode: 2 })}\n`);
    process.exit(2);
  }
  if (err instanceof EtcdSyncError) fail(err.message, err.exitCode);
  fail(`internal error: ${describeError(err)}`, 1);
}
