/** `etcd-sync encryption merge` and `etcd-sync encryption verify`. */
import { readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
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

/** An EncryptionConfiguration is a few KiB: a larger input is a mistake (or /dev/zero), not a config. */
const MAX_CONFIG_BYTES = 1024 * 1024;

export function readEncryptionConfig(flag: string, file: string): EncryptionConfig {
  let text: string;
  try {
    const stat = statSync(file);
    if (!stat.isFile()) throw new ConfigError(`${flag} ${file} is not a regular file`);
    if (stat.size > MAX_CONFIG_BYTES) throw new ConfigError(`${flag} ${file} is ${stat.size} bytes: an EncryptionConfiguration is at most ${MAX_CONFIG_BYTES} (1 MiB)`);
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(`cannot read ${flag} ${file}: ${(err as NodeJS.ErrnoException).code ?? describeError(err)}`);
  }
  return parseEncryptionConfig(text, file);
}

/**
 * Writes `text` to `file` readable by its owner only (0600: it holds encryption keys): into a
 * new file beside it, then renamed over it, so that an existing file keeps no wider mode and a
 * symlink at the path is replaced, never followed.
 */
function writeSecretFile(file: string, text: string): void {
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    writeFileSync(temp, text, { mode: 0o600, flag: 'wx' });
    renameSync(temp, file);
  } catch (err) {
    rmSync(temp, { force: true });
    throw new ConfigError(`cannot write --output-file ${file}: ${(err as NodeJS.ErrnoException).code ?? describeError(err)}`);
  }
}

const oneShotRetry = (log: Logger) => retrier({ log, ...ONE_SHOT_RETRY });


export async function runMerge(config: MergeConfig, io: CliIo): Promise<number> {
  const primary = readEncryptionConfig('--primary', config.primaryFile);
  const standbyConfig = readEncryptionConfig('--standby', config.standbyFile);
  const result = mergeConfigs(primary, standbyConfig);
  const yaml = mergedYaml(result, config.primaryFile, config.standbyFile);
  const json = config.output === 'json';
  // JSON: one object at the end, the warnings in it; text: the YAML on stdout, warnings on stderr.
  const warnings: string[] = [];
  const warn = (line: string): void => {
    if (json) warnings.push(line);
    else io.warn(line);
  };
  if (config.outputFile) writeSecretFile(config.outputFile, yaml);
  else if (!json) io.out(yaml);
  for (const r of result.renames) warn(`renamed the standby's ${r.type} key '${r.from}' to '${r.to}' for ${r.resources.join(',')}`);
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
          warn(
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
  if (json) {
    io.out(`${JSON.stringify({ outputFile: config.outputFile ?? null, ...(config.outputFile ? {} : { yaml }), renames: result.renames, warnings })}\n`);
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
