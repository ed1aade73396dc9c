/** `etcd-sync run`: wires the configuration to the engine. */
import type { Logger } from 'pino';
import { EtcdSide } from '../etcd/connection.js';
import { Scope } from '../scope.js';
import { SyncEngine, type SyncHooks } from '../sync/engine.js';
import { toJson } from '../diff/report.js';
import { type HttpHandlers, startHttp } from '../http.js';
import { SyncMetrics } from '../metrics.js';
import type { RunConfig } from './config.js';
import { EncryptedWriteMonitor, EncryptionVerifier } from '../encryption/verify.js';
import { readEncryptionConfig } from './encryption.js';

export async function runSync(config: RunConfig, log: Logger, signal: AbortSignal, hooks: SyncHooks = {}): Promise<void> {
  const monitor = config.encryptionConfigFile
    ? new EncryptedWriteMonitor(new EncryptionVerifier(readEncryptionConfig('--encryption-config', config.encryptionConfigFile), config.scope.keyPrefix), log)
    : undefined;
  let engineRef: SyncEngine | undefined;
  const metrics = new SyncMetrics({
    engine: () => engineRef,
    identity: config.identity,
    isLeader: () => true,
    state: () => engineRef?.state ?? 'starting',
    unreadableEncryptedValues: () => monitor?.unreadable ?? 0,
  });
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
        writerHooks: {
          ...(monitor ? { onPut: (key: Buffer, value: Buffer) => monitor.check(key, value) } : {}),
          onTxn: (seconds: number) => metrics.observeTxn(seconds),
        },
      },
      log,
      hooks,
    );
    engineRef = engine;
    const server = config.httpAddress ? await startHttp(config.httpAddress, httpHandlers(engine, config, metrics), log) : undefined;
    try {
      await engine.run(signal);
    } finally {
      await server?.close();
    }
    log.info({ appliedRevision: engine.appliedRevision.toString(), checkpoint: engine.checkpointedRevision.toString() }, 'stopped');
  } finally {
    primary.close();
    standby.close();
  }
}

/** What /readyz, /status and /check answer from the engine. */
export function httpHandlers(engine: SyncEngine, config: Pick<RunConfig, 'identity' | 'readyMaxLag'>, metrics: SyncMetrics): HttpHandlers {
  return {
    registry: metrics.registry,
    ready: () => engine.state === 'streaming' && engine.lagRevisions <= BigInt(config.readyMaxLag),
    status: () => ({
      identity: config.identity,
      role: 'leader',
      state: engine.state,
      appliedRevision: Number(engine.appliedRevision),
      primaryRevision: Number(engine.primaryRevision),
      lagRevisions: Number(engine.lagRevisions),
      lastCheck: engine.lastCheck
        ? { checkedAt: new Date(engine.lastCheck.checkedAt).toISOString(), ...toJson(engine.lastCheck), missing: undefined, surplus: undefined, different: undefined }
        : null,
    }),
    check: async () => toJson(engine.lastCheck ?? (await engine.checkNow())),
  };
}
