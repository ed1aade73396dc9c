/** `etcd-sync run`: wires the configuration to the supervisor (leadership) and its engines. */
import type { Logger } from 'pino';
import { EtcdSide } from '../etcd/connection.js';
import { toJson } from '../diff/report.js';
import { EncryptedWriteMonitor, EncryptionVerifier } from '../encryption/verify.js';
import { type HttpHandlers, startHttp } from '../http.js';
import { SyncMetrics } from '../metrics.js';
import { Scope } from '../scope.js';
import { audit } from '../sync/audit.js';
import { SyncEngine, type SyncHooks } from '../sync/engine.js';
import { retrier } from '../sync/retry.js';
import { Supervisor, controlKeys } from '../sync/supervisor.js';
import { CHECK_DEFAULTS } from './options/check.js';
import { type RunConfig, SYNC_TUNING, syncOptions } from './options/run.js';
import { readEncryptionConfig } from './encryption.js';

export async function runSync(config: RunConfig, log: Logger, signal: AbortSignal, hooks: SyncHooks = {}): Promise<void> {
  const monitor = config.encryptionConfigFile
    ? new EncryptedWriteMonitor(new EncryptionVerifier(readEncryptionConfig('--encryption-config', config.encryptionConfigFile), config.scope.keyPrefix), log)
    : undefined;
  const primary = new EtcdSide(config.primary);
  const standby = new EtcdSide(config.standby);
  const scope = new Scope(config.scope);
  let supervisor: Supervisor | undefined;
  const metrics = new SyncMetrics({
    engine: () => supervisor?.engine,
    identity: config.identity,
    version: config.version,
    isLeader: () => supervisor?.role === 'leader',
    state: () => supervisor?.state ?? 'starting',
    unreadableEncryptedValues: () => monitor?.unreadable ?? 0,
  });
  supervisor = new Supervisor(
    standby,
    { identity: config.identity, keys: controlKeys(config.checkpointKey), leaseTtlSeconds: config.leaseTtlSeconds, pollMs: SYNC_TUNING.controlPollMs },
    (fence) =>
      new SyncEngine(
        primary,
        standby,
        {
          ...syncOptions(config, scope),
          writerHooks: {
            fence,
            ...(monitor ? { onPut: (key: Buffer, value: Buffer) => monitor.check(key, value) } : {}),
            onTxn: (seconds: number) => metrics.observeTxn(seconds),
          },
        },
        log,
        hooks,
      ),
    log,
  );
  const checkNow = () =>
    audit(primary, standby, {
      scope,
      checkpointKey: config.checkpointKey,
      pageSize: config.pageSize,
      settleMs: CHECK_DEFAULTS.settleMs,
      retry: retrier({ log, signal, maxAttempts: 4 }),
      signal,
    });
  log.info({ version: config.version, identity: config.identity }, 'starting');
  try {
    const server = config.httpAddress ? await startHttp(config.httpAddress, httpHandlers(supervisor, config, metrics, checkNow), log) : undefined;
    try {
      await supervisor.run(signal);
    } finally {
      await server?.close();
    }
    const engine = supervisor.engine;
    log.info({ appliedRevision: engine?.appliedRevision.toString(), checkpoint: engine?.checkpointedRevision.toString() }, 'stopped');
  } finally {
    primary.close();
    standby.close();
  }
}

/** What /readyz, /status and /check answer. Followers are ready (healthy, waiting); the leader once it streams within the lag bound. */
export function httpHandlers(
  supervisor: Supervisor,
  config: Pick<RunConfig, 'identity' | 'readyMaxLag'>,
  metrics: SyncMetrics,
  checkNow: () => ReturnType<typeof audit>,
): HttpHandlers {
  return {
    registry: metrics.registry,
    ready: () => {
      if (supervisor.role !== 'leader') return supervisor.state !== 'stopped';
      if (supervisor.state === 'paused') return true;
      const engine = supervisor.engine;
      return engine !== undefined && engine.state === 'streaming' && engine.lagRevisions <= BigInt(config.readyMaxLag);
    },
    status: () => {
      const engine = supervisor.role === 'leader' ? supervisor.engine : undefined;
      const lastCheck = supervisor.engine?.lastCheck;
      return {
        identity: config.identity,
        role: supervisor.role,
        state: supervisor.state,
        appliedRevision: Number(engine?.appliedRevision ?? 0n),
        primaryRevision: Number(engine?.primaryRevision ?? 0n),
        lagRevisions: Number(engine?.lagRevisions ?? 0n),
        lastCheck: lastCheck
          ? { checkedAt: new Date(lastCheck.checkedAt).toISOString(), ...toJson(lastCheck), missing: undefined, surplus: undefined, different: undefined }
          : null,
      };
    },
    check: async () => toJson(supervisor.engine?.lastCheck ?? (await checkNow())),
  };
}
