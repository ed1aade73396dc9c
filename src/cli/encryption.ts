/** `etcd-sync encryption merge` and `etcd-sync encryption verify`. */
import { readFileSync, writeFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { ConfigError, EtcdSyncError, describeError } from '../errors.js';
import { EtcdSide } from '../etcd/connection.js';
import { scanPages } from '../etcd/kv.js';
import { type EncryptionConfig, parseEncryptionConfig } from '../encryption/config.js';
import { mergeConfigs, mergedYaml } from '../encryption/merge.js';
import { EncryptionVerifier, allReadable, formatVerifyText, verifyJson, verifySide } from '../encryption/verify.js';
import { prefixEnd } from '../scope.js';
import { ONE_SHOT_RETRY, retrier } from '../sync/retry.js';
import type { MergeConfig, VerifyConfig } from './options/encryption.js';

export interface CliIo {
  log: Logger;
  out(text: string): void;
  warn(line: string): void;
}

export function readEncryptionConfig(flag: string, file: string): EncryptionConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read ${flag} ${file}: ${(err as NodeJS.ErrnoException).code ?? describeError(err)}`);
  }
  return parseEncryptionConfig(text, file);
}

const oneShotRetry = (log: Logger) => retrier({ log, ...ONE_SHOT_RETRY });


export async function runMerge(config: MergeConfig, io: CliIo): Promise<number> {
  const primary = readEncryptionConfig('--primary', config.primaryFile);
  const standbyConfig = readEncryptionConfig('--standby', config.standbyFile);
  const result = mergeConfigs(primary, standbyConfig);
  const yaml = mergedYaml(result, config.primaryFile, config.standbyFile);
  if (config.outputFile) writeFileSync(config.outputFile, yaml);
  else io.out(yaml);
  for (const r of result.renames) io.warn(`renamed the standby's ${r.type} key '${r.from}' to '${r.to}' for ${r.resources.join(',')}`);
  if (config.standby && result.renames.length > 0) {
    const side = new EtcdSide(config.standby);
    try {
      const stranded = new Map<string, number>();
      const prefixes = result.renames.map((r) => ({ r, prefix: Buffer.from(`k8s:enc:${r.type}:v1:${r.from}:`) }));
      const range = { key: config.keyPrefix, rangeEnd: prefixEnd(config.keyPrefix), pageSize: config.pageSize };
      for await (const page of scanPages(side, range, oneShotRetry(io.log))) {
        for (const kv of page) {
          for (const { r, prefix } of prefixes) {
            if (kv.value.subarray(0, prefix.length).equals(prefix)) stranded.set(`${r.type}/${r.from}`, (stranded.get(`${r.type}/${r.from}`) ?? 0) + 1);
          }
        }
      }
      for (const r of result.renames) {
        const count = stranded.get(`${r.type}/${r.from}`) ?? 0;
        if (count > 0) {
          io.warn(
            `warning: the standby holds ${count} values written with its ${r.type} key '${r.from}'; with the merged file '${r.from}' is the primary's key, so the standby's apiserver cannot read them. Rewrite them with the merged file in place before the rename takes effect, or keep the standby's key name.`,
          );
        }
      }
    } catch (err) {
      if (err instanceof EtcdSyncError) throw new ConfigError(`merged, but could not scan the standby for stranded values: ${describeError(err)}`);
      throw err;
    } finally {
      side.close();
    }
  }
  return 0;
}


export async function runVerify(config: VerifyConfig, io: CliIo): Promise<number> {
  const encryption = readEncryptionConfig('--config', config.configFile);
  const side = new EtcdSide(config.side);
  try {
    const verifier = new EncryptionVerifier(encryption, config.keyPrefix);
    const report = await verifySide(side, verifier, config.keyPrefix, oneShotRetry(io.log), config.pageSize);
    io.out(config.output === 'json' ? `${JSON.stringify(verifyJson(report))}\n` : formatVerifyText(report, config.limit));
    return allReadable(report) ? 0 : 1;
  } catch (err) {
    if (err instanceof EtcdSyncError) throw err.exitCode === 2 ? err : new ConfigError(`could not verify: ${describeError(err)}`);
    throw err;
  } finally {
    side.close();
  }
}
