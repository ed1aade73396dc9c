/** `etcd-sync pause|resume|promote|unfence|status`: their flags and the typed config. */
import { type Command, Option } from 'commander';
import { ConfigError } from '../../errors.js';
import type { EtcdSideConfig } from '../../etcd/connection.js';
import type { ScopeRules } from '../../scope.js';
import { CHECK_DEFAULTS } from './check.js';
import { type Options, WRITE_DEFAULTS, addConnectionOptions, addLogOptions, addScopeOptions, checkpointKeyOption, given, outputConfig, outputOption, scopeConfig, sideConfig, str } from './common.js';

export type ControlCommand = 'pause' | 'resume' | 'promote' | 'unfence' | 'status';

export const CONTROL_DEFAULTS = {
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
  output: 'text' | 'json';
  logLevel: string;
  /** promote's final check reads as `check` does, with check's defaults. */
  pageSize: number;
  settleMs: number;
}

export function addControlOptions(command: ControlCommand): (cmd: Command) => Command {
  return (cmd) => {
    addConnectionOptions(cmd, 'standby');
    if (command === 'promote' || command === 'status') addConnectionOptions(cmd, 'primary');
    if (command === 'promote') cmd.addOption(new Option('--force', 'promote even when the final check fails or cannot run (primary lost)'));
    if (command === 'status') cmd.addOption(outputOption('output format'));
    if (command === 'promote') addScopeOptions(cmd);
    else cmd.addOption(checkpointKeyOption());
    return addLogOptions(cmd, CONTROL_DEFAULTS.logLevel);
  };
}

export function controlConfig(command: ControlCommand, options: Options): ControlConfig {
  let checkpointKey: Buffer;
  let scope: ScopeRules | undefined;
  if (command === 'promote') ({ scope, checkpointKey } = scopeConfig(options));
  else {
    checkpointKey = Buffer.from(given<string>(options, 'checkpointKey'));
    if (checkpointKey.length === 0) throw new ConfigError('--checkpoint-key is empty');
  }
  return {
    command,
    standby: sideConfig(options, 'standby'),
    ...(str(options, 'primaryEndpoints') ? { primary: sideConfig(options, 'primary') } : {}),
    checkpointKey,
    ...(scope ? { scope } : {}),
    force: options.force === true,
    output: command === 'status' ? outputConfig(options) : 'text',
    logLevel: given(options, 'logLevel'),
    pageSize: WRITE_DEFAULTS.pageSize,
    settleMs: CHECK_DEFAULTS.settleMs,
  };
}
