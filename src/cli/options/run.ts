/** `etcd-sync run`: its flags with their defaults, the tuning below the flags, and the typed config. */
import { type Command, Option } from 'commander';
import { ConfigError } from '../../errors.js';
import type { EtcdSideConfig } from '../../etcd/connection.js';
import type { Scope, ScopeRules } from '../../scope.js';
import type { SyncOptions } from '../../sync/engine.js';
import { type DeleteGuardRule, parseDeleteGuard } from '../../sync/delete-guard.js';
import { CHECK_DEFAULTS } from './check.js';
import {
  type Options,
  OUTPUT_FORMATS,
  type OutputFormat,
  type WriteConfig,
  addConnectionOptions,
  addLogOptions,
  addScopeOptions,
  addWriteOptions,
  durationText,
  given,
  nonNegativeInt,
  parseDuration,
  positiveInt,
  scopeConfig,
  sideConfig,
  str,
  writeConfig,
} from './common.js';

export const RUN_DEFAULTS = {
  /**
   * Periodic consistency check and repair; 0 turns it off. Ten minutes, as operators expect of a data check.
   * @default 10m
   */
  checkIntervalMs: 10 * 60_000,
  /**
   * Where /metrics, /healthz, /readyz, /status and /check are served; "off" for none.
   * @default '0.0.0.0:9479'
   */
  httpAddress: '0.0.0.0:9479',
  /**
   * Whether the HTTP server answers /check (an audit of both etcds, listing key names) at all.
   * @default 'on'
   */
  httpCheck: 'on',
  /**
   * The leadership lease: when the leader dies another replica takes over within it.
   * @default 15 (seconds)
   */
  leaseTtlSeconds: 15,
  /**
   * /readyz is ready once the initial sync is done and the lag is at most this many revisions.
   * @default 1000
   */
  readyMaxLag: 1000,
  /**
   * Streaming transactions in flight, each applying only right after the one before it: with
   * one, streaming follows at most one txn's ops per txn latency.
   * @default 4
   */
  streamTxns: 4,
  /**
   * Wait before restoring a synced key changed on the standby (doubles per key while it keeps happening).
   * @default 1s
   */
  healDelayMs: 1_000,
  /**
   * A primary that has not answered for this long is unreachable: its watch reconnects (to the
   * next endpoint), /readyz turns 503 and etcd_sync_primary_up 0. The watch asks for progress
   * every 5 s while idle, so a live primary always answers well within it.
   * @default 15s
   */
  primaryTimeoutMs: 15_000,
  /**
   * The delete guard: hold the standby before a mass delete on the primary. Deletes of in-scope
   * keys (Events not counted) over a sliding window; a percentage of the in-scope keys never
   * means fewer than 100 keys. 5 % a minute: ordinary churn of the suite's Kubernetes-shaped
   * workload stays far below it, `kubectl delete ns` of a namespace holding a twentieth of the
   * cluster trips it (docs/operations.md, "Delete guard").
   * @default '5%/1m'
   */
  deleteGuard: '5%/1m',
  /** @default 'info' */
  logLevel: 'info',
} as const;

/** The smallest values the duration flags take: below them, work would run back to back. */
export const RUN_LIMITS = {
  /** --check-interval: a full audit of both etcds at most once a second (0 turns it off). */
  checkIntervalMinMs: 1_000,
  /** A guard window shorter than a second counts almost nothing. */
  deleteGuardWindowMinMs: 1_000,
  /** --heal-delay: a key changed on the standby is looked at no sooner than this. */
  healDelayMinMs: 100,
  /** --primary-timeout: shorter takes a primary's ordinary pauses for an outage. */
  primaryTimeoutMinMs: 1_000,
} as const;

/**
 * The engine's tuning below the flags: the values `run` uses; tests change them. Why each is
 * what it is: bench/HISTORY.md under the name given.
 */
export const SYNC_TUNING = {
  /** Revisions per window when a restart replays a long gap over parallel watches ("replay windows"). */
  replayWindowRevisions: 1000,
  /** Replay windows fetched at once ("replay windows"). */
  replayWindows: 64,
  /** How often a long diff logs its progress. */
  progressIntervalMs: 5_000,
  /** After this long without events, ask etcd for a progress notification (the checkpoint advances; a live stream answers). */
  idleProgressMs: 5_000,
  /** How often the probe reads the primary's revision, in every state. */
  primaryProbeMs: 5_000,
  /** How often followers look for a free leadership and the leader for pause and fence. */
  controlPollMs: 1_000,
} as const;

export interface RunConfig extends WriteConfig {
  primary: EtcdSideConfig;
  standby: EtcdSideConfig;
  scope: ScopeRules;
  checkpointKey: Buffer;
  prune: boolean;
  logLevel: string;
  /** Periodic check and repair; 0 = off. */
  checkIntervalMs: number;
  healDelayMs: number;
  /** Streaming txns in flight. */
  streamTxnsInFlight: number;
  /** The standby's EncryptionConfiguration file, to check written encrypted values. */
  encryptionConfigFile?: string;
  /** undefined: no HTTP server. */
  httpAddress?: string;
  /** This replica in /status, metrics and logs. */
  identity: string;
  /** etcd-sync's own version (package.json's), in the first log line and etcd_sync_build_info. */
  version: string;
  readyMaxLag: number;
  leaseTtlSeconds: number;
  primaryTimeoutMs: number;
  /** Whether /check is served. */
  httpCheck: boolean;
  /** Log lines as text (readable, with a progress line) or JSON. */
  output: OutputFormat;
  /** undefined: the guard is off. */
  deleteGuard: DeleteGuardRule | undefined;
}

export function addRunOptions(cmd: Command): Command {
  const d = RUN_DEFAULTS;
  cmd
    .addOption(new Option('-o, --output <format>', 'log lines: text (readable, with a progress line) or json (default: text on a terminal, json otherwise)').choices(OUTPUT_FORMATS))
    .addOption(
      new Option('--delete-guard <threshold/window>', 'hold the standby before a mass delete on the primary: <percent>%/<window> of the in-scope keys, <keys>/<window>, or off').default(
        d.deleteGuard,
      ),
    )
    .addOption(new Option('--prune', 'delete in-scope keys that only the standby has (default: log and count them)'))
    .addOption(new Option('--check-interval <duration>', 'periodic consistency check and repair; 0 turns it off').argParser(parseDuration('--check-interval', { minMs: RUN_LIMITS.checkIntervalMinMs, zeroMeansOff: true })).default(d.checkIntervalMs, durationText(d.checkIntervalMs)))
    .addOption(new Option('--http-address <host:port>', 'serve /metrics, /healthz, /readyz, /status, /check here; "off" for none').default(d.httpAddress))
    .addOption(new Option('--http-check <on|off>', '/check on the HTTP server: an audit of both etcds that lists key names').choices(['on', 'off']).default(d.httpCheck))
    .addOption(new Option('--lease-ttl <seconds>', 'leadership lease; when the leader dies another replica takes over within it').argParser(positiveInt('--lease-ttl')).default(d.leaseTtlSeconds))
    .addOption(new Option('--identity <name>', 'this replica in /status, metrics and logs (default: $POD_NAME, else the hostname)'))
    .addOption(new Option('--ready-max-lag <revisions>', '/readyz is ready once the initial sync is done and the lag is at most this').argParser(nonNegativeInt('--ready-max-lag')).default(d.readyMaxLag))
    .addOption(new Option('--encryption-config <file>', "the standby's EncryptionConfiguration: check that every encrypted value written is readable there"))
    .addOption(new Option('--stream-txns <n>', 'streaming transactions in flight (each applies only right after the one before it)').argParser(positiveInt('--stream-txns')).default(d.streamTxns))
    .addOption(
      new Option('--primary-timeout <duration>', 'a primary silent this long is unreachable: the watch reconnects, /readyz turns 503')
        .argParser(parseDuration('--primary-timeout', { minMs: RUN_LIMITS.primaryTimeoutMinMs }))
        .default(d.primaryTimeoutMs, durationText(d.primaryTimeoutMs)),
    )
    .addOption(
      new Option('--heal-delay <duration>', 'wait before restoring a synced key changed on the standby (doubles per key while it keeps happening)')
        .argParser(parseDuration('--heal-delay', { minMs: RUN_LIMITS.healDelayMinMs }))
        .default(d.healDelayMs, durationText(d.healDelayMs)),
    );
  addConnectionOptions(cmd, 'primary');
  addConnectionOptions(cmd, 'standby');
  addScopeOptions(cmd);
  addWriteOptions(cmd);
  return addLogOptions(cmd, d.logLevel);
}

/** --primary-timeout (bounded by its parser: RUN_LIMITS). */
export function primaryTimeout(options: Options): number {
  return given<number>(options, 'primaryTimeout');
}

function deleteGuardConfig(options: Options): DeleteGuardRule | undefined {
  try {
    return parseDeleteGuard(given<string>(options, 'deleteGuard'), parseDuration('--delete-guard', { minMs: RUN_LIMITS.deleteGuardWindowMinMs }));
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
}

function httpAddress(options: Options): string | undefined {
  const address = given<string>(options, 'httpAddress');
  if (address === 'off') return undefined;
  if (!/^(\[[0-9a-fA-F:]+\]|[^:\s]*):\d{1,5}$/.test(address) || Number(address.split(':').pop()) > 65535) {
    throw new ConfigError(`--http-address must be host:port (or "off"), got '${address}'`);
  }
  return address;
}

/** `identity`: the replica's name when --identity is not given (the edge's $POD_NAME or hostname). */
export function runConfig(options: Options, edge: { identity: string; version: string; tty: boolean }): RunConfig {
  const address = httpAddress(options);
  const encryptionConfigFile = str(options, 'encryptionConfig');
  const scope = scopeConfig(options);
  return {
    // The primary's user reads the synced prefix only; the standby's, the prefix and etcd-sync's own keys.
    primary: sideConfig(options, 'primary', scope.scope.keyPrefix),
    standby: sideConfig(options, 'standby', scope.checkpointKey),
    ...scope,
    ...writeConfig(options),
    prune: options.prune === true,
    logLevel: given(options, 'logLevel'),
    checkIntervalMs: given(options, 'checkInterval'),
    healDelayMs: given(options, 'healDelay'),
    streamTxnsInFlight: given(options, 'streamTxns'),
    ...(encryptionConfigFile ? { encryptionConfigFile } : {}),
    ...(address ? { httpAddress: address } : {}),
    identity: str(options, 'identity') ?? edge.identity,
    version: edge.version,
    readyMaxLag: given(options, 'readyMaxLag'),
    leaseTtlSeconds: given(options, 'leaseTtl'),
    primaryTimeoutMs: primaryTimeout(options),
    httpCheck: given<string>(options, 'httpCheck') === 'on',
    output: str(options, 'output') === 'json' || (str(options, 'output') === undefined && !edge.tty) ? 'json' : 'text',
    deleteGuard: deleteGuardConfig(options),
  };
}

/**
 * How often to ask a live primary for an answer: the tuned interval, but at least three times
 * within --primary-timeout, so that a live primary never looks silent.
 */
export function livenessInterval(tunedMs: number, primaryTimeoutMs: number): number {
  return Math.max(100, Math.min(tunedMs, Math.floor(primaryTimeoutMs / 3)));
}

/** The engine's options for a run: its flags and the tuning below them. */
export function syncOptions(config: RunConfig, scope: Scope): SyncOptions {
  return {
    scope,
    checkpointKey: config.checkpointKey,
    maxTxnOps: config.maxTxnOps,
    maxTxnBytes: config.maxTxnBytes,
    writeConcurrency: config.writeConcurrency,
    pageSize: config.pageSize,
    prune: config.prune,
    checkIntervalMs: config.checkIntervalMs,
    healDelayMs: config.healDelayMs,
    streamTxnsInFlight: config.streamTxnsInFlight,
    settleMs: CHECK_DEFAULTS.settleMs,
    replayWindowRevisions: SYNC_TUNING.replayWindowRevisions,
    replayWindows: SYNC_TUNING.replayWindows,
    progressIntervalMs: SYNC_TUNING.progressIntervalMs,
    idleProgressMs: livenessInterval(SYNC_TUNING.idleProgressMs, config.primaryTimeoutMs),
    primaryTimeoutMs: config.primaryTimeoutMs,
    identity: config.identity,
    deleteGuard: config.deleteGuard,
  };
}
