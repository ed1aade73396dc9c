/**
 * The command-line surface. Every flag can also come from the environment as
 * ETCD_SYNC_<FLAG_IN_UPPER_SNAKE> (e.g. --primary-endpoints ← ETCD_SYNC_PRIMARY_ENDPOINTS);
 * a flag on the command line wins. The environment is passed in, never read here.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { DEFAULT_EXCLUDE_NAMESPACES, DEFAULT_EXCLUDE_PREFIXES, DEFAULT_KEY_PREFIX } from '../scope.js';
import { DEFAULT_MAX_TXN_BYTES, DEFAULT_MAX_TXN_OPS } from '../sync/batch.js';
import { DEFAULT_PAGE_MIB, DEFAULT_PAGE_SIZE } from '../etcd/kv.js';
import { DEFAULT_HTTP_ADDRESS } from '../http.js';
import { DEFAULT_SETTLE_MS } from '../sync/audit.js';
import { DEFAULT_CHECK_INTERVAL_MS, DEFAULT_CHECKPOINT_KEY, DEFAULT_HEAL_DELAY_MS, DEFAULT_STREAM_TXNS_IN_FLIGHT, DEFAULT_WRITE_CONCURRENCY } from '../sync/engine.js';
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

/** `--<side>-endpoints` and friends; side '' gives `--endpoints`, `--cacert`, ... for one-side commands. */
export function addConnectionOptions(cmd: Command, side: 'primary' | 'standby' | ''): Command {
  const flag = side ? `${side}-` : '';
  const what = side ? `the ${side} etcd` : 'the etcd';
  return cmd
    .addOption(new Option(`--${flag}endpoints <urls>`, `${what}: client URLs, comma-separated (http:// or https://)`))
    .addOption(new Option(`--${flag}cacert <file>`, `CA bundle (PEM) to verify ${what}`))
    .addOption(new Option(`--${flag}cert <file>`, `client certificate (PEM) for ${what}`))
    .addOption(new Option(`--${flag}key <file>`, `client key (PEM) for ${what}`))
    .addOption(new Option(`--${flag}user <name>`, `user for ${what}'s authentication`))
    .addOption(new Option(`--${flag}password <password>`, `password for ${what} (prefer ETCD_SYNC_${flag.toUpperCase().replace(/-/g, '_')}PASSWORD)`));
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
    .addOption(new Option('--max-txn-ops <n>', "the standby etcd's --max-txn-ops (etcd-sync nests txns to write up to n*n/4 operations in one)").argParser(positiveInt('--max-txn-ops')).default(DEFAULT_MAX_TXN_OPS))
    .addOption(new Option('--max-txn-bytes <n>', 'approximate payload bytes per write transaction').argParser(positiveInt('--max-txn-bytes')).default(DEFAULT_MAX_TXN_BYTES))
    .addOption(new Option('--write-concurrency <n>', 'transactions in flight during a full diff').argParser(positiveInt('--write-concurrency')).default(DEFAULT_WRITE_CONCURRENCY))
    .addOption(new Option('--page-size <n>', `most keys per range page when reading (pages aim at ${DEFAULT_PAGE_MIB} MiB)`).argParser(positiveInt('--page-size')).default(DEFAULT_PAGE_SIZE));
}

function addLogOptions(cmd: Command, level = 'info'): Command {
  return cmd.addOption(new Option('--log-level <level>', 'log level').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default(level));
}

/** `500ms`, `30s`, `10m`, `1h`; a bare number is seconds. Returns milliseconds. */
export function parseDuration(flag: string) {
  return (value: string): number => {
    const m = /^(\d+)(ms|s|m|h)?$/.exec(value.trim());
    if (!m) throw new InvalidArgumentError(`${flag} must be a duration like 500ms, 30s, 10m or 1h.`);
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
    return Number(m[1]) * unit;
  };
}

function nonNegativeInt(flag: string) {
  return (value: string): number => {
    if (!/^\d+$/.test(value.trim())) throw new InvalidArgumentError(`${flag} must be a whole number.`);
    return Number(value);
  };
}

export interface ParsedCommand {
  name: string;
  options: Record<string, unknown>;
}

/**
 * Builds the program. `onCommand` receives the chosen subcommand and its options (flags,
 * then environment, then defaults); `version` is what `--version` prints.
 */
export function buildProgram(env: Env, onCommand: (parsed: ParsedCommand) => unknown, version?: string): Command {
  const program = new Command('etcd-sync')
    .description("Keeps a standby Kubernetes control plane's etcd a live copy of the primary's")
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  if (version !== undefined) program.version(version, '-V, --version', "print etcd-sync's version and exit");

  const run = new Command('run')
    .description('mirror the primary etcd into the standby: initial diff, then streaming (the daemon)')
    .addOption(new Option('--prune', 'delete in-scope keys that only the standby has (default: log and count them)'))
    .addOption(new Option('--check-interval <duration>', 'periodic consistency check and repair; 0 turns it off').argParser(parseDuration('--check-interval')).default(DEFAULT_CHECK_INTERVAL_MS, '10m'))
    .addOption(new Option('--http-address <host:port>', 'serve /metrics, /healthz, /readyz, /status, /check here; "off" for none').default(DEFAULT_HTTP_ADDRESS))
    .addOption(new Option('--lease-ttl <seconds>', 'leadership lease; when the leader dies another replica takes over within it').argParser(positiveInt('--lease-ttl')).default(15))
    .addOption(new Option('--identity <name>', 'this replica in /status, metrics and logs (default: $POD_NAME, else the hostname)'))
    .addOption(new Option('--ready-max-lag <revisions>', '/readyz is ready once the initial sync is done and the lag is at most this').argParser(nonNegativeInt('--ready-max-lag')).default(1000))
    .addOption(new Option('--encryption-config <file>', "the standby's EncryptionConfiguration: check that every encrypted value written is readable there"))
    .addOption(new Option('--stream-txns <n>', 'streaming transactions in flight (each applies only right after the one before it)').argParser(positiveInt('--stream-txns')).default(DEFAULT_STREAM_TXNS_IN_FLIGHT))
    .addOption(new Option('--heal-delay <duration>', 'wait before restoring a synced key changed on the standby (doubles per key while it keeps happening)').argParser(parseDuration('--heal-delay')).default(DEFAULT_HEAL_DELAY_MS, '1s'));
  addConnectionOptions(run, 'primary');
  addConnectionOptions(run, 'standby');
  addScopeOptions(run);
  addWriteOptions(run);
  addLogOptions(run);
  program.addCommand(run);

  const check = new Command('check')
    .description('audit the pair: missing, surplus and different in-scope keys; optionally repair (exit 0 consistent, 1 inconsistent, 2 could not check)')
    .addOption(new Option('--output <format>', 'report format').choices(['text', 'json']).default('text'))
    .addOption(new Option('--limit <n>', 'keys listed in the text report').argParser(nonNegativeInt('--limit')).default(100))
    .addOption(new Option('--repair', "put missing and different keys from the primary's current version"))
    .addOption(new Option('--prune', 'also delete surplus keys (asks for confirmation unless --yes)'))
    .addOption(new Option('--yes', 'do not ask before deleting surplus keys'))
    .addOption(new Option('--dry-run', 'print what --repair/--prune would write, write nothing'))
    .addOption(new Option('--settle <duration>', 'without a usable checkpoint: wait this long, then re-check each finding').argParser(parseDuration('--settle')).default(DEFAULT_SETTLE_MS, '2s'));
  addConnectionOptions(check, 'primary');
  addConnectionOptions(check, 'standby');
  addScopeOptions(check);
  addWriteOptions(check);
  addLogOptions(check, 'warn');
  program.addCommand(check);

  const encryption = new Command('encryption').description("merge and verify kube-apiserver encryption-at-rest configurations across the pair");
  const merge = new Command('merge')
    .description("merge the standby's encryption keys into the primary's configuration (YAML out)")
    .addOption(new Option('--primary <file>', "the primary's EncryptionConfiguration").makeOptionMandatory())
    .addOption(new Option('--standby <file>', "the standby's EncryptionConfiguration").makeOptionMandatory())
    .addOption(new Option('-o, --output <file>', 'write the merged file here (default: stdout)'));
  addConnectionOptions(merge, 'standby');
  addLogOptions(merge, 'warn');
  encryption.addCommand(merge);
  const verify = new Command('verify')
    .description('decrypt every encrypted value of one etcd the way kube-apiserver would (exit 0 all readable, 1 some unreadable, 2 could not verify)')
    .addOption(new Option('--config <file>', 'the EncryptionConfiguration of that side').makeOptionMandatory())
    .addOption(new Option('--output <format>', 'report format').choices(['text', 'json']).default('text'))
    .addOption(new Option('--limit <n>', 'failing keys listed in the text report').argParser(nonNegativeInt('--limit')).default(100))
    .addOption(new Option('--key-prefix <prefix>', 'keys under this prefix are scanned').default(DEFAULT_KEY_PREFIX))
    .addOption(new Option('--page-size <n>', `most keys per range page (pages aim at ${DEFAULT_PAGE_MIB} MiB)`).argParser(positiveInt('--page-size')).default(DEFAULT_PAGE_SIZE));
  addConnectionOptions(verify, '');
  addLogOptions(verify, 'warn');
  encryption.addCommand(verify);
  program.addCommand(encryption);

  const controls: [string, string][] = [
    ['pause', 'the leader stops applying, keeping its place in the primary history (state paused)'],
    ['resume', 'the leader picks up where it stopped'],
    ['promote', 'failover: final check (refuses when inconsistent, unless --force), then fence this etcd against every etcd-sync writer'],
    ['unfence', 'lift the fence that promote wrote'],
    ['status', 'leader identity, state, checkpoint revision, and with --primary-endpoints the lag'],
  ];
  for (const [name, description] of controls) {
    const cmd = new Command(name).description(description);
    addConnectionOptions(cmd, 'standby');
    if (name === 'promote' || name === 'status') addConnectionOptions(cmd, 'primary');
    if (name === 'promote') cmd.addOption(new Option('--force', 'promote even when the final check fails or cannot run (primary lost)'));
    if (name === 'status') cmd.addOption(new Option('--output <format>', 'output format').choices(['text', 'json']).default('text'));
    if (name === 'promote') addScopeOptions(cmd);
    else cmd.addOption(new Option('--checkpoint-key <key>', 'where etcd-sync records its progress in the standby').default(DEFAULT_CHECKPOINT_KEY));
    addLogOptions(cmd, 'warn');
    program.addCommand(cmd);
  }

  const wire = (cmd: Command, path: string): void => {
    cmd.exitOverride();
    cmd.showHelpAfterError('(run with --help for usage)');
    if (cmd.commands.length > 0) {
      for (const sub of cmd.commands) wire(sub, `${path} ${sub.name()}`);
      return;
    }
    cmd.action(async (_opts: unknown, command: Command) => {
      applyEnv(command, env);
      await onCommand({ name: path, options: command.opts() });
    });
  };
  for (const cmd of program.commands) wire(cmd, cmd.name());
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
