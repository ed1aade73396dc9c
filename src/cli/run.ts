/** `etcd-sync run`: wires the configuration to the engine. */
import type { Logger } from 'pino';
import { EtcdSide } from '../etcd/connection.js';
import { Scope } from '../scope.js';
import { SyncEngine, type SyncHooks } from '../sync/engine.js';
import type { RunConfig } from './config.js';
import { EncryptedWriteMonitor, EncryptionVerifier } from '../encryption/verify.js';
import { readEncryptionConfig } from './encryption.js';

export async function runSync(config: RunConfig, log: Logger, signal: AbortSignal, hooks: SyncHooks = {}): Promise<void> {
  const monitor = config.encryptionConfigFile
    ? new EncryptedWriteMonitor(new EncryptionVerifier(readEncryptionConfig('--encryption-config', config.encryptionConfigFile), config.scope.keyPrefix), log)
    : undefined;
  const primary = new EtcdSide(config.primary);
  const standby = new EtcdSide(config.standby);
  try {
    const engine = new SyncEngine(
      primary,
      standby,
      {
        scope: new Scope(config.scope),
        checkpointKey: config.checkpointKey,
        maxTxnOps: config.maxTxnOps,
        maxTxnBytes: config.maxTxnBytes,
        writeConcurrency: config.writeConcurrency,
        pageSize: config.pageSize,
        prune: config.prune,
        checkIntervalMs: config.checkIntervalMs,
        healDelayMs: config.healDelayMs,
        ...(monitor ? { onPut: (key: Buffer, value: Buffer) => monitor.check(key, value) } : {}),
      },
      log,
      hooks,
    );
    await engine.run(signal);
    log.info({ appliedRevision: engine.appliedRevision.toString(), checkpoint: engine.checkpointedRevision.toString() }, 'stopped');
  } finally {
    primary.close();
    standby.close();
  }
}
