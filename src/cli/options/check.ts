/** `etcd-sync check`: its flags with their defaults and the typed config. */
import { type Command, Option } from 'commander';
import type { EtcdSideConfig } from '../../etcd/connection.js';
import type { ScopeRules } from '../../scope.js';
import {
  type Options,
  type WriteConfig,
  addConnectionOptions,
  addLogOptions,
  addScopeOptions,
  addWriteOptions,
  durationText,
  given,
  nonNegativeInt,
  outputConfig,
  outputOption,
  parseDuration,
  scopeConfig,
  sideConfig,
  writeConfig,
} from './common.js';

export const CHECK_DEFAULTS = {
  /**
   * Keys listed in the text report, per kind.
   * @default 100
   */
  limit: 100,
  /**
   * Without a usable checkpoint (latest against latest): wait this long, then re-check each
   * finding, so that writes only in flight drop out. The periodic check of `run` uses it too.
   * @default 2s
   */
  settleMs: 2_000,
  /** @default 'warn' */
  logLevel: 'warn',
} as const;

export interface CheckConfig extends WriteConfig {
  primary: EtcdSideConfig;
  standby: EtcdSideConfig;
  scope: ScopeRules;
  checkpointKey: Buffer;
  output: 'text' | 'json';
  limit: number;
  repair: boolean;
  prune: boolean;
  yes: boolean;
  dryRun: boolean;
  settleMs: number;
  logLevel: string;
}

export function addCheckOptions(cmd: Command): Command {
  const d = CHECK_DEFAULTS;
  cmd
    .addOption(outputOption('the report: text, or one JSON object'))
    .addOption(new Option('--limit <n>', 'keys listed in the text report').argParser(nonNegativeInt('--limit')).default(d.limit))
    .addOption(new Option('--repair', "put missing and different keys from the primary's current version"))
    .addOption(new Option('--prune', 'also delete surplus keys (asks for confirmation unless --yes)'))
    .addOption(new Option('--yes', 'do not ask before deleting surplus keys'))
    .addOption(new Option('--dry-run', 'print what --repair/--prune would write, write nothing'))
    .addOption(new Option('--settle <duration>', 'without a usable checkpoint: wait this long, then re-check each finding').argParser(parseDuration('--settle')).default(d.settleMs, durationText(d.settleMs)));
  addConnectionOptions(cmd, 'primary');
  addConnectionOptions(cmd, 'standby');
  addScopeOptions(cmd);
  addWriteOptions(cmd);
  return addLogOptions(cmd, d.logLevel);
}

export function checkConfig(options: Options): CheckConfig {
  const scope = scopeConfig(options);
  return {
    primary: sideConfig(options, 'primary', scope.scope.keyPrefix),
    standby: sideConfig(options, 'standby', scope.checkpointKey),
    ...scope,
    ...writeConfig(options),
    output: outputConfig(options),
    limit: given(options, 'limit'),
    repair: options.repair === true || options.prune === true,
    prune: options.prune === true,
    yes: options.yes === true,
    dryRun: options.dryRun === true,
    settleMs: given(options, 'settle'),
    logLevel: given(options, 'logLevel'),
  };
}
