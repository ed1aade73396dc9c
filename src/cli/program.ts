/**
 * The command-line surface. Every flag can also come from the environment as
 * ETCD_SYNC_<FLAG_IN_UPPER_SNAKE> (e.g. --primary-endpoints ← ETCD_SYNC_PRIMARY_ENDPOINTS);
 * a flag on the command line wins. The environment is passed in, never read here.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { DEFAULT_EXCLUDE_NAMESPACES, DEFAULT_EXCLUDE_PREFIXES, DEFAULT_KEY_PREFIX } from '../scope.js';
import { DEFAULT_MAX_TXN_BYTES, DEFAULT_MAX_TXN_OPS } from '../sync/batch.js';
import { DEFAULT_PAGE_SIZE } from '../etcd/kv.js';
import { DEFAULT_CHECKPOINT_KEY, DEFAULT_WRITE_CONCURRENCY } from '../sync/engine.js';
import { ConfigError } from '../errors.js';

export type Env = Readonly<Record<string, string | undefined>>;

export function envName(option: Option): string {
  return `ETCD_SYNC_${(option.long ?? '').replace(/^--/, '').toUpperCase().replace(/-/g, '_')}`;
}

/** Repeatable, comma-separated list: `--x a,b --x c` → [a, b, c]. */
function collectList(value: string, previous: string[] | undefined): string[] {
  const items = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  return [...(previous ?? []), ...items];
}

function positiveInt(flag: string) {
  return (value: string): number => {
    if (!/^\d+$/.test(value.trim()) || Number(value) < 1) {
      throw new InvalidArgumentError(`${flag} must be a positive integer.`);
    }
    return Number(value);
  };
}

export function addConnectionOptions(cmd: Command, side: 'primary' | 'standby'): Command {
  return cmd
    .addOption(new Option(`--${side}-endpoints <urls>`, `${side} etcd client URLs, comma-separated (http:// or https://)`))
    .addOption(new Option(`--${side}-cacert <file>`, `CA bundle (PEM) to verify the ${side} etcd`))
    .addOption(new Option(`--${side}-cert <file>`, `client certificate (PEM) for the ${side} etcd`))
    .addOption(new Option(`--${side}-key <file>`, `client key (PEM) for the ${side} etcd`))
    .addOption(new Option(`--${side}-user <name>`, `user for the ${side} etcd's authentication`))
    .addOption(new Option(`--${side}-password <password>`, `password for the ${side} etcd (prefer ETCD_SYNC_${side.toUpperCase()}_PASSWORD)`));
}

export function addScopeOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--key-prefix <prefix>', 'only keys under this prefix are synced').default(DEFAULT_KEY_PREFIX))
    .addOption(
      new Option('--exclude-namespace <names>', 'namespace whose keys (and Namespace object) are never synced; repeatable, comma lists allowed')
        .argParser(collectList)
        .default([...DEFAULT_EXCLUDE_NAMESPACES], DEFAULT_EXCLUDE_NAMESPACES.join(',')),
    )
    .addOption(
      new Option('--exclude-prefix <prefixes>', 'key prefix never synced; repeatable, comma lists allowed')
        .argParser(collectList)
        .default([...DEFAULT_EXCLUDE_PREFIXES], DEFAULT_EXCLUDE_PREFIXES.join(',')),
    )
    .addOption(new Option('--checkpoint-key <key>', "where etcd-sync records its progress in the standby (outside --key-prefix)").default(DEFAULT_CHECKPOINT_KEY));
}

export function addWriteOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--max-txn-ops <n>', "operations per write transaction (etcd's --max-txn-ops)").argParser(positiveInt('--max-txn-ops')).default(DEFAULT_MAX_TXN_OPS))
    .addOption(new Option('--max-txn-bytes <n>', 'approximate payload bytes per write transaction').argParser(positiveInt('--max-txn-bytes')).default(DEFAULT_MAX_TXN_BYTES))
    .addOption(new Option('--write-concurrency <n>', 'transactions in flight during a full diff').argParser(positiveInt('--write-concurrency')).default(DEFAULT_WRITE_CONCURRENCY))
    .addOption(new Option('--page-size <n>', 'keys per range page when reading').argParser(positiveInt('--page-size')).default(DEFAULT_PAGE_SIZE));
}

function addLogOptions(cmd: Command): Command {
  return cmd.addOption(new Option('--log-level <level>', 'log level').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info'));
}

export interface ParsedCommand {
  name: string;
  options: Record<string, unknown>;
}

/**
 * Builds the program. `onCommand` receives the chosen subcommand and its options (flags,
 * then environment, then defaults).
 */
export function buildProgram(env: Env, onCommand: (parsed: ParsedCommand) => void | Promise<void>): Command {
  const program = new Command('etcd-sync')
    .description("Keeps a standby Kubernetes control plane's etcd a live copy of the primary's")
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();

  const run = new Command('run')
    .description('mirror the primary etcd into the standby: initial diff, then streaming (the daemon)')
    .addOption(new Option('--prune', 'delete in-scope keys that only the standby has (default: log and count them)'));
  addConnectionOptions(run, 'primary');
  addConnectionOptions(run, 'standby');
  addScopeOptions(run);
  addWriteOptions(run);
  addLogOptions(run);
  program.addCommand(run);

  for (const cmd of program.commands) {
    cmd.exitOverride();
    cmd.showHelpAfterError('(run with --help for usage)');
    cmd.action(async (_opts: unknown, command: Command) => {
      applyEnv(command, env);
      await onCommand({ name: command.name(), options: command.opts() });
    });
  }
  return program;
}

/** Fills options not given on the command line from ETCD_SYNC_* variables. */
export function applyEnv(cmd: Command, env: Env): void {
  for (const option of cmd.options) {
    const key = option.attributeName();
    const raw = env[envName(option)];
    if (raw === undefined || raw === '' || cmd.getOptionValueSource(key) === 'cli') continue;
    let value: unknown = raw;
    if (option.isBoolean()) {
      if (!/^(1|true|yes|0|false|no)$/i.test(raw)) {
        throw new ConfigError(`${envName(option)} must be true or false, got '${raw}'`);
      }
      value = /^(1|true|yes)$/i.test(raw);
    } else if (option.argChoices && !option.argChoices.includes(raw)) {
      throw new ConfigError(`${envName(option)} must be one of ${option.argChoices.join(', ')}, got '${raw}'`);
    } else if (option.parseArg) {
      try {
        value = option.parseArg(raw, undefined as never);
      } catch (err) {
        throw new ConfigError(`${envName(option)}: ${(err as Error).message.replace(/^error: /, '')}`);
      }
    }
    cmd.setOptionValueWithSource(key, value, 'env');
  }
}
