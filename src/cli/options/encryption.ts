/** `etcd-sync encryption merge|verify`: their flags with their defaults and the typed configs. */
import { type Command, Option } from 'commander';
import type { EtcdSideConfig } from '../../etcd/connection.js';
import {
  type Options,
  SCOPE_DEFAULTS,
  WRITE_DEFAULTS,
  addConnectionOptions,
  addLogOptions,
  given,
  keyPrefixConfig,
  nonNegativeInt,
  type OutputFormat,
  outputConfig,
  outputOption,
  positiveInt,
  required,
  sideConfig,
  str,
} from './common.js';

export const VERIFY_DEFAULTS = {
  /**
   * Failing keys listed in the text report.
   * @default 100
   */
  limit: 100,
  /** @default 'warn' */
  logLevel: 'warn',
} as const;

export interface MergeConfig {
  primaryFile: string;
  standbyFile: string;
  outputFile?: string;
  /** With it, warn when a rename strands values the standby holds under the old name. */
  standby?: EtcdSideConfig;
  keyPrefix: Buffer;
  pageSize: number;
  output: OutputFormat;
  logLevel: string;
}

export interface VerifyConfig {
  configFile: string;
  side: EtcdSideConfig;
  keyPrefix: Buffer;
  output: 'text' | 'json';
  limit: number;
  pageSize: number;
  logLevel: string;
}

export function addMergeOptions(cmd: Command): Command {
  cmd
    .addOption(new Option('--primary <file>', "the primary's EncryptionConfiguration (required)"))
    .addOption(new Option('--standby <file>', "the standby's EncryptionConfiguration (required)"))
    .addOption(new Option('--output-file <file>', 'write the merged file here, mode 0600 (default: stdout)'))
    .addOption(outputOption('text: the merged YAML; json: one object with it (or the file written), the renames and warnings'));
  addConnectionOptions(cmd, 'standby');
  return addLogOptions(cmd, VERIFY_DEFAULTS.logLevel);
}

export function addVerifyOptions(cmd: Command): Command {
  cmd
    .addOption(new Option('--config <file>', 'the EncryptionConfiguration of that side (required)'))
    .addOption(outputOption('the report: text, or one JSON object'))
    .addOption(new Option('--limit <n>', 'failing keys listed in the text report').argParser(nonNegativeInt('--limit')).default(VERIFY_DEFAULTS.limit))
    .addOption(new Option('--key-prefix <prefix>', 'keys under this prefix are scanned').default(SCOPE_DEFAULTS.keyPrefix))
    .addOption(new Option('--page-size <n>', 'most keys per range page (pages aim at 4 MiB)').argParser(positiveInt('--page-size')).default(WRITE_DEFAULTS.pageSize));
  addConnectionOptions(cmd, '');
  return addLogOptions(cmd, VERIFY_DEFAULTS.logLevel);
}

export function mergeConfig(options: Options): MergeConfig {
  const outputFile = str(options, 'outputFile');
  return {
    primaryFile: required(options, 'primary'),
    standbyFile: required(options, 'standby'),
    ...(outputFile ? { outputFile } : {}),
    ...(str(options, 'standbyEndpoints') ? { standby: sideConfig(options, 'standby', Buffer.from(SCOPE_DEFAULTS.keyPrefix)) } : {}),
    keyPrefix: Buffer.from(SCOPE_DEFAULTS.keyPrefix),
    pageSize: WRITE_DEFAULTS.pageSize,
    output: outputConfig(options),
    logLevel: given(options, 'logLevel'),
  };
}

export function verifyConfig(options: Options): VerifyConfig {
  const keyPrefix = keyPrefixConfig(options);
  return {
    configFile: required(options, 'config'),
    side: sideConfig(options, 'this', keyPrefix, ''),
    keyPrefix,
    output: outputConfig(options),
    limit: given(options, 'limit'),
    pageSize: given(options, 'pageSize'),
    logLevel: given(options, 'logLevel'),
  };
}
