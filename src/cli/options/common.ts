/**
 * What every command family shares: the value parsers, the ETCD_SYNC_* variable of each flag,
 * and the flag groups (connection, scope, writes, logging) with their defaults, each written
 * once with its doc comment. commander fills the defaults in and `--help` shows them with the
 * variable's name; the typed configs below read what commander produced and never apply a
 * default of their own. Nothing below src/cli applies one either.
 */
import { type KeyObject, X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { ConfigError } from '../../errors.js';
import type { EtcdSideConfig } from '../../etcd/connection.js';
import { DEFAULT_EXCLUDE_NAMESPACES, DEFAULT_EXCLUDE_PREFIXES, DEFAULT_KEY_PREFIX, type ScopeRules, normalizePrefix, startsWith } from '../../scope.js';
import { controlKeys } from '../../sync/control-keys.js';
import { leaseKeyPrefix } from '../../sync/leases.js';

export type Env = Readonly<Record<string, string | undefined>>;
/** What commander parsed: flags, then ETCD_SYNC_* variables, then the defaults. */
export type Options = Record<string, unknown>;

/** The flags of the scope group (run, check, promote). */
export const SCOPE_DEFAULTS = {
  /**
   * Only keys under this prefix are synced: kube-apiserver's --etcd-prefix.
   * @default '/registry/' (src/scope.ts)
   */
  keyPrefix: DEFAULT_KEY_PREFIX,
  /**
   * Namespaces whose keys (and Namespace objects) belong to one cluster only.
   * @default kube-system, kube-public, kube-node-lease (src/scope.ts says why)
   */
  excludeNamespace: DEFAULT_EXCLUDE_NAMESPACES,
  /**
   * Prefixes of keys that belong to one cluster only.
   * @default /registry/masterleases/, /registry/peerserverleases/ (src/scope.ts)
   */
  excludePrefix: DEFAULT_EXCLUDE_PREFIXES,
  /**
   * Where etcd-sync records its progress in the standby; its leader and control keys sit beside it.
   * @default '/etcd-sync/checkpoint'
   */
  checkpointKey: '/etcd-sync/checkpoint',
} as const;

/** The flags of the write group (run, check). */
export const WRITE_DEFAULTS = {
  /**
   * The standby etcd's --max-txn-ops; etcd-sync nests txns to write up to n*n/4 operations in one.
   * @default 128 (etcd's own default)
   */
  maxTxnOps: 128,
  /**
   * Approximate payload bytes per write transaction: under etcd's 1.5 MiB request limit, with room for overhead.
   * @default 1 MiB
   */
  maxTxnBytes: 1024 * 1024,
  /**
   * Transactions in flight during a full diff: etcd batches the txns that arrive together into
   * one raft entry and fsync; with nested txns of ~1 MiB, 4 was as fast as 8 or 16 with less
   * memory (bench/HISTORY.md, "write concurrency").
   * @default 4
   */
  writeConcurrency: 4,
  /**
   * Most keys per range page (pages aim at PAGE_BYTES of payload, src/etcd/kv.ts).
   * @default 50000
   */
  pageSize: 50_000,
} as const;

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;

export function envName(option: Option): string {
  return `ETCD_SYNC_${(option.long ?? '').replace(/^--/, '').toUpperCase().replace(/-/g, '_')}`;
}

/** Repeatable, comma-separated list: `--x a,b --x c` → [a, b, c]. */
export function collectList(value: string, previous: string[] | undefined): string[] {
  const items = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  return [...(previous ?? []), ...items];
}

export function positiveInt(flag: string) {
  return (value: string): number => {
    if (!/^\d+$/.test(value.trim()) || Number(value) < 1) throw new InvalidArgumentError(`${flag} must be a positive integer.`);
    return Number(value);
  };
}

export function nonNegativeInt(flag: string) {
  return (value: string): number => {
    if (!/^\d+$/.test(value.trim())) throw new InvalidArgumentError(`${flag} must be a whole number.`);
    return Number(value);
  };
}

/** The longest duration a timer holds: Node clamps a longer one to 1 ms (a busy loop). */
export const MAX_DURATION_MS = 2 ** 31 - 1;

/**
 * `500ms`, `30s`, `10m`, `1h`; a bare number is seconds. Returns milliseconds, at most
 * MAX_DURATION_MS (about 24 days) and at least `minMs` (0 allowed too when `zeroMeansOff`).
 */
export function parseDuration(flag: string, bounds: { minMs?: number; zeroMeansOff?: boolean } = {}) {
  return (value: string): number => {
    const m = /^(\d+)(ms|s|m|h)?$/.exec(value.trim());
    if (!m) throw new InvalidArgumentError(`${flag} must be a duration like 500ms, 30s, 10m or 1h.`);
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
    const ms = Number(m[1]) * unit;
    if (ms > MAX_DURATION_MS) throw new InvalidArgumentError(`${flag} must be at most ${durationText(MAX_DURATION_MS - (MAX_DURATION_MS % 3_600_000))} (about 24 days), not ${value.trim()}.`);
    if (ms === 0 && bounds.zeroMeansOff) return 0;
    const min = bounds.minMs ?? 0;
    if (ms < min) throw new InvalidArgumentError(`${flag} must be at least ${durationText(min)}${bounds.zeroMeansOff ? ' (or 0 for off)' : ''}, not ${value.trim()}.`);
    return ms;
  };
}

/** A duration's default as --help shows it. */
export function durationText(ms: number): string {
  if (ms % 3_600_000 === 0 && ms > 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms > 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
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
    .addOption(new Option(`--${flag}password <password>`, `password for ${what} (prefer the variable to the flag)`));
}

export function addScopeOptions(cmd: Command): Command {
  const d = SCOPE_DEFAULTS;
  return cmd
    .addOption(new Option('--key-prefix <prefix>', 'only keys under this prefix are synced').default(d.keyPrefix))
    .addOption(
      new Option('--exclude-namespace <names>', 'namespace whose keys (and Namespace object) are never synced; repeatable, comma lists allowed')
        .argParser(collectList)
        .default([...d.excludeNamespace], d.excludeNamespace.join(',')),
    )
    .addOption(
      new Option('--exclude-prefix <prefixes>', 'key prefix never synced; repeatable, comma lists allowed')
        .argParser(collectList)
        .default([...d.excludePrefix], d.excludePrefix.join(',')),
    )
    .addOption(checkpointKeyOption());
}

export function checkpointKeyOption(): Option {
  return new Option('--checkpoint-key <key>', 'where etcd-sync records its progress in the standby (outside --key-prefix)').default(SCOPE_DEFAULTS.checkpointKey);
}

export function addWriteOptions(cmd: Command): Command {
  const d = WRITE_DEFAULTS;
  return cmd
    .addOption(new Option('--max-txn-ops <n>', "the standby etcd's --max-txn-ops (etcd-sync nests txns to write up to n*n/4 operations in one)").argParser(positiveInt('--max-txn-ops')).default(d.maxTxnOps))
    .addOption(new Option('--max-txn-bytes <n>', 'approximate payload bytes per write transaction').argParser(positiveInt('--max-txn-bytes')).default(d.maxTxnBytes))
    .addOption(new Option('--write-concurrency <n>', 'transactions in flight during a full diff').argParser(positiveInt('--write-concurrency')).default(d.writeConcurrency))
    .addOption(new Option('--page-size <n>', 'most keys per range page when reading (pages aim at 4 MiB)').argParser(positiveInt('--page-size')).default(d.pageSize));
}

export function addLogOptions(cmd: Command, level: (typeof LOG_LEVELS)[number]): Command {
  return cmd.addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).default(level));
}

export const OUTPUT_FORMATS = ['text', 'json'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

/**
 * `-o, --output text|json`, on every command: json makes what the command prints on stdout one
 * JSON object (a failure too: {"error", "exitCode"}), and its log lines JSON even on a terminal.
 */
export function outputOption(what: string): Option {
  return new Option('-o, --output <format>', what).choices(OUTPUT_FORMATS).default('text');
}

// ---- typed configs from what commander parsed ----

export function str(options: Options, key: string): string | undefined {
  const v = options[key];
  return typeof v === 'string' && v.length > 0 ? v : undefined;
}

/** A value commander always fills in (it has a default): its absence is a bug, not a user mistake. */
export function given<T>(options: Options, key: string): T {
  const v = options[key];
  if (v === undefined) throw new Error(`option ${key} has no value (no default registered)`);
  return v as T;
}

/** A flag without a default that the command cannot do without (from the command line or its variable). */
export function required(options: Options, key: string): string {
  const v = str(options, key);
  if (v === undefined) {
    const flag = key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
    throw new ConfigError(`missing --${flag} (or ETCD_SYNC_${flag.toUpperCase().replace(/-/g, '_')})`);
  }
  return v;
}

function camel(flag: string): string {
  return flag.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
}

function readPem(flag: string, file: string): Buffer {
  let data: Buffer;
  try {
    data = readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new ConfigError(`cannot read ${flag} ${file}: ${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code}`);
  }
  if (!data.toString('latin1').includes('-----BEGIN ')) throw new ConfigError(`${flag} ${file} is not a PEM file`);
  return data;
}

export function parseEndpoints(flag: string, value: string): string[] {
  const endpoints = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (endpoints.length === 0) throw new ConfigError(`${flag} is empty`);
  for (const given of endpoints) {
    // Whatever is wrong with it, an endpoint is never echoed with what could be a password in it.
    const endpoint = given.replace(/\/\/[^/@]*@/, '//***@');
    let url: URL;
    try {
      url = new URL(given);
    } catch {
      throw new ConfigError(`${flag}: '${endpoint}' is not a URL (expected http://host:port or https://host:port)`);
    }
    if (url.username !== '' || url.password !== '') {
      const side = flag.replace(/-endpoints$/, '');
      throw new ConfigError(`${flag}: '${endpoint}' carries credentials: give them as ${side}-user and ${side}-password (or their ETCD_SYNC_* variables), not in the URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError(`${flag}: '${endpoint}' must start with http:// or https://`);
    if (!url.port) throw new ConfigError(`${flag}: '${endpoint}' has no port (etcd listens on 2379)`);
    if (url.pathname !== '/' && url.pathname !== '') throw new ConfigError(`${flag}: '${endpoint}' must not have a path`);
  }
  const secure = endpoints.map((e) => e.startsWith('https://'));
  if (secure.some((s) => s) && !secure.every((s) => s)) throw new ConfigError(`${flag}: mixes http:// and https:// endpoints`);
  return endpoints;
}

/**
 * Connection settings of one side from `--<side>-*` options. `probeKey`: the key the side's
 * revision is read with, one its user may read (least privilege: no read of the whole keyspace).
 */
export function sideConfig(options: Options, side: string, probeKey: Buffer, flagPrefix = `${side}-`): EtcdSideConfig {
  const flag = (name: string): string => `--${flagPrefix}${name}`;
  const get = (name: string): string | undefined => str(options, camel(`${flagPrefix}${name}`));
  const endpointsValue = get('endpoints');
  const envHint = `ETCD_SYNC_${`${flagPrefix}endpoints`.toUpperCase().replace(/-/g, '_')}`;
  if (!endpointsValue) throw new ConfigError(`missing ${flag('endpoints')} (or ${envHint})`);
  const endpoints = parseEndpoints(flag('endpoints'), endpointsValue);
  const secure = endpoints[0]?.startsWith('https://') ?? false;
  const cacert = get('cacert');
  const cert = get('cert');
  const key = get('key');
  if ((cert === undefined) !== (key === undefined)) throw new ConfigError(`${flag('cert')} and ${flag('key')} go together: give both or neither`);
  if (!secure && (cacert || cert)) throw new ConfigError(`${flag(cacert ? 'cacert' : 'cert')} given, but ${flag('endpoints')} are http:// (use https://)`);
  const config: EtcdSideConfig = { name: side, endpoints, probeKey };
  if (secure) {
    config.tls = {
      ...(cacert ? { ca: readPem(flag('cacert'), cacert) } : {}),
      ...(cert ? { cert: readPem(flag('cert'), cert) } : {}),
      ...(key ? { key: readPem(flag('key'), key) } : {}),
    };
    if (config.tls.cert && config.tls.key) checkKeyPair(side, flag('cert'), config.tls.cert, flag('key'), config.tls.key);
  }
  const user = get('user');
  const password = get('password');
  if ((user === undefined) !== (password === undefined)) throw new ConfigError(`${flag('user')} and ${flag('password')} go together: give both or neither`);
  if (user !== undefined && password !== undefined) config.auth = { username: user, password };
  return config;
}

/** The client certificate and its key must belong together: a mismatch fails every connection with a cryptic TLS error. */
function checkKeyPair(side: string, certFlag: string, certPem: Buffer, keyFlag: string, keyPem: Buffer): void {
  let certificate: X509Certificate;
  let key: KeyObject;
  try {
    certificate = new X509Certificate(certPem);
  } catch {
    throw new ConfigError(`${certFlag} is not a certificate (the ${side} side's ${certFlag} and ${keyFlag} swapped?)`);
  }
  try {
    key = createPrivateKey(keyPem);
  } catch {
    throw new ConfigError(`${keyFlag} is not a private key (the ${side} side's ${certFlag} and ${keyFlag} swapped?)`);
  }
  if (!certificate.checkPrivateKey(key)) throw new ConfigError(`${keyFlag} is not the key of ${certFlag}: the ${side} side's client certificate and key do not belong together`);
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** The checkpoint key: non-empty and outside `keyPrefix`. */
/**
 * The checkpoint key, validated once for every command: a key of its own, outside --key-prefix,
 * whose neighbours (the leader and control keys, derived from its directory) are outside it too,
 * and that is none of those neighbours itself.
 */
export function checkpointKeyConfig(options: Options, keyPrefix: Buffer): Buffer {
  const flag = '--checkpoint-key';
  const text = given<string>(options, 'checkpointKey');
  if (!text.startsWith('/') || text.endsWith('/')) throw new ConfigError(`${flag} must be a key starting with '/' (not ending with it), got '${text}'`);
  const checkpointKey = Buffer.from(text);
  const keys = controlKeys(checkpointKey);
  for (const key of [checkpointKey, leaseKeyPrefix(checkpointKey), ...Object.values(keys)]) {
    if (startsWith(key, keyPrefix)) {
      throw new ConfigError(`${flag} ${text}: etcd-sync's keys beside it (${key.toString()}) must be outside --key-prefix ${keyPrefix.toString()}`);
    }
  }
  const clash = Object.entries(keys).find(([, key]) => key.equals(checkpointKey));
  if (clash) throw new ConfigError(`${flag} ${text} is etcd-sync's own ${clash[0]} key: choose another`);
  return checkpointKey;
}

export function keyPrefixConfig(options: Options): Buffer {
  const keyPrefix = given<string>(options, 'keyPrefix');
  if (!keyPrefix.startsWith('/') || keyPrefix === '/') throw new ConfigError(`--key-prefix must start with '/' and name a directory, got '${keyPrefix}'`);
  return normalizePrefix(Buffer.from(keyPrefix));
}

export function scopeConfig(options: Options): { scope: ScopeRules; checkpointKey: Buffer } {
  const keyPrefix = keyPrefixConfig(options);
  const namespaces = given<string[]>(options, 'excludeNamespace');
  for (const ns of namespaces) {
    if (!DNS_LABEL.test(ns)) throw new ConfigError(`--exclude-namespace: '${ns}' is not a valid namespace name`);
  }
  const prefixes = given<string[]>(options, 'excludePrefix');
  for (const prefix of prefixes) {
    if (!prefix.startsWith('/')) throw new ConfigError(`--exclude-prefix: '${prefix}' must start with '/'`);
  }
  return {
    scope: { keyPrefix, excludeNamespaces: new Set(namespaces), excludePrefixes: prefixes.map((p) => Buffer.from(p)) },
    checkpointKey: checkpointKeyConfig(options, keyPrefix),
  };
}

export interface WriteConfig {
  maxTxnOps: number;
  maxTxnBytes: number;
  writeConcurrency: number;
  pageSize: number;
}

export function writeConfig(options: Options): WriteConfig {
  const maxTxnOps = given<number>(options, 'maxTxnOps');
  // A streaming txn's compares: the checkpoint chain (one) and the leader's fence (two, the
  // leader key and the fenced key; see Supervisor.fence). Compares cannot be nested away.
  if (maxTxnOps < 3) throw new ConfigError(`--max-txn-ops must be at least 3 (a write carries up to 3 compares), not ${maxTxnOps}`);
  return {
    maxTxnOps,
    maxTxnBytes: given<number>(options, 'maxTxnBytes'),
    writeConcurrency: given<number>(options, 'writeConcurrency'),
    pageSize: given<number>(options, 'pageSize'),
  };
}

export function outputConfig(options: Options): OutputFormat {
  return given<string>(options, 'output') === 'json' ? 'json' : 'text';
}
