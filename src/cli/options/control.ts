/** `etcd-sync pause|resume|promote|unfence|status`: their flags with their defaults and the typed config. */
import { type Command, Option } from 'commander';
import type { EtcdSideConfig } from '../../etcd/connection.js';
import type { ScopeRules } from '../../scope.js';
import { CHECK_DEFAULTS } from './check.js';
import {
  type Options,
  WRITE_DEFAULTS,
  addConnectionOptions,
  addLogOptions,
  addScopeOptions,
  SCOPE_DEFAULTS,
  checkpointKeyConfig,
  checkpointKeyOption,
  keyPrefixConfig,
  durationText,
  given,
  nonNegativeInt,
  outputConfig,
  outputOption,
  parseDuration,
  scopeConfig,
  sideConfig,
  str,
} from './common.js';
import { RUN_DEFAULTS, RUN_LIMITS, primaryTimeout } from './run.js';

export type ControlCommand = 'pause' | 'resume' | 'promote' | 'unfence' | 'status';

export const CONTROL_DEFAULTS = {
  /**
   * How long a planned promote waits for the standby to apply the primary's last revision and
   * for the primary to stop moving.
   * @default 60s
   */
  waitMs: 60_000,
  /** @default 'warn' */
  logLevel: 'warn',
} as const;

export interface ControlConfig {
  command: ControlCommand;
  standby: EtcdSideConfig;
  primary?: EtcdSideConfig;
  checkpointKey: Buffer;
  /** promote's final check compares this scope; the other commands compare nothing. */
  scope?: ScopeRules;
  force: boolean;
  /** resume: apply the deletes the delete guard holds back. */
  acceptDeletes: boolean;
  dryRun: boolean;
  /** Why, recorded with the actor by pause, resume, promote and unfence. */
  reason: string;
  waitMs: number;
  /** A primary that does not answer within this is unreachable (promote, status). */
  primaryTimeoutMs: number;
  /** status exits 0 only within this lag (as /readyz of `run`). */
  readyMaxLag: number;
  output: 'text' | 'json';
  logLevel: string;
  /** promote's final check reads as `check` does, with check's defaults. */
  pageSize: number;
  maxTxnOps: number;
  settleMs: number;
}

export function addControlOptions(command: ControlCommand): (cmd: Command) => Command {
  return (cmd) => {
    addConnectionOptions(cmd, 'standby');
    if (command === 'promote' || command === 'status') {
      addConnectionOptions(cmd, 'primary');
      cmd.addOption(
        new Option('--primary-timeout <duration>', 'a primary that does not answer within this is unreachable')
          .argParser(parseDuration('--primary-timeout', { minMs: RUN_LIMITS.primaryTimeoutMinMs }))
          .default(RUN_DEFAULTS.primaryTimeoutMs, durationText(RUN_DEFAULTS.primaryTimeoutMs)),
      );
    }
    if (command !== 'status') cmd.addOption(new Option('--reason <text>', 'why: recorded with who ran it, shown by status'));
    if (command === 'promote') {
      cmd
        .addOption(new Option('--force', 'the primary is lost: fence without waiting or checking, and print what is lost'))
        .addOption(new Option('--dry-run', 'print the decision and the gap, write nothing'))
        .addOption(
          new Option('--wait <duration>', "how long to wait for the standby to apply the primary's last revision")
            .argParser(parseDuration('--wait'))
            .default(CONTROL_DEFAULTS.waitMs, durationText(CONTROL_DEFAULTS.waitMs)),
        );
    }
    if (command === 'resume') cmd.addOption(new Option('--accept-deletes', 'the standby holds before a mass delete (state held): apply the held deletes and go on streaming'));
    if (command === 'status') {
      cmd
        .addOption(new Option('--ready-max-lag <revisions>', 'exit 0 only when the lag is at most this').argParser(nonNegativeInt('--ready-max-lag')).default(RUN_DEFAULTS.readyMaxLag));
    }
    cmd.addOption(outputOption(command === 'status' ? 'text, or the status as one JSON object' : 'text, or the outcome as one JSON object'));
    if (command === 'promote') addScopeOptions(cmd);
    else cmd.addOption(new Option('--key-prefix <prefix>', "the synced prefix, which etcd-sync's keys must stay outside of").default(SCOPE_DEFAULTS.keyPrefix)).addOption(checkpointKeyOption());
    return addLogOptions(cmd, CONTROL_DEFAULTS.logLevel);
  };
}

export function controlConfig(command: ControlCommand, options: Options): ControlConfig {
  let checkpointKey: Buffer;
  let scope: ScopeRules | undefined;
  let keyPrefix: Buffer;
  if (command === 'promote') {
    ({ scope, checkpointKey } = scopeConfig(options));
    keyPrefix = scope.keyPrefix;
  } else {
    keyPrefix = keyPrefixConfig(options);
    checkpointKey = checkpointKeyConfig(options, keyPrefix);
  }
  const readsPrimary = command === 'promote' || command === 'status';
  return {
    command,
    standby: sideConfig(options, 'standby', checkpointKey),
    ...(str(options, 'primaryEndpoints') ? { primary: sideConfig(options, 'primary', keyPrefix) } : {}),
    checkpointKey,
    ...(scope ? { scope } : {}),
    force: options.force === true,
    acceptDeletes: options.acceptDeletes === true,
    dryRun: options.dryRun === true,
    reason: str(options, 'reason') ?? '',
    waitMs: command === 'promote' ? given(options, 'wait') : 0,
    primaryTimeoutMs: readsPrimary ? primaryTimeout(options) : RUN_DEFAULTS.primaryTimeoutMs,
    readyMaxLag: command === 'status' ? given(options, 'readyMaxLag') : RUN_DEFAULTS.readyMaxLag,
    output: outputConfig(options),
    logLevel: given(options, 'logLevel'),
    pageSize: WRITE_DEFAULTS.pageSize,
    maxTxnOps: WRITE_DEFAULTS.maxTxnOps,
    settleMs: CHECK_DEFAULTS.settleMs,
  };
}
