/** `etcd-sync run`: wires the configuration to the supervisor (leadership) and its engines. */
import type { Logger } from 'pino';
import { EtcdSide } from '../etcd/connection.js';
import { keyText, toJson } from '../diff/report.js';
import { EncryptedWriteMonitor, EncryptionVerifier } from '../encryption/verify.js';
import { type HttpHandlers, startHttp } from '../http.js';
import { SyncMetrics } from '../metrics.js';
import { Scope } from '../scope.js';
import { audit } from '../sync/audit.js';
import { SyncEngine, type SyncHooks, type SyncProgress, refuseSameCluster } from '../sync/engine.js';
import { progressFields } from '../sync/full-diff.js';
import { heldJson } from '../sync/delete-guard.js';
import { AbortedError, type Retry, retrier } from '../sync/retry.js';
import { readHeader } from '../etcd/kv.js';
import { Supervisor } from '../sync/supervisor.js';
import { controlKeys, describeRecord } from '../sync/control-keys.js';
import { PrimaryMonitor } from '../sync/primary-monitor.js';
import { CHECK_DEFAULTS } from './options/check.js';
import { type RunConfig, SYNC_TUNING, livenessInterval, syncOptions } from './options/run.js';
import { readEncryptionConfig } from './encryption.js';

export async function runSync(config: RunConfig, log: Logger, signal: AbortSignal, hooks: SyncHooks = {}): Promise<void> {
  const monitor = config.encryptionConfigFile
    ? new EncryptedWriteMonitor(new EncryptionVerifier(readEncryptionConfig('--encryption-config', config.encryptionConfigFile), config.scope.keyPrefix), log)
    : undefined;
  const primary = new EtcdSide(config.primary);
  const standby = new EtcdSide(config.standby);
  const scope = new Scope(config.scope);
  const primaryMonitor = new PrimaryMonitor({ primaryTimeoutMs: config.primaryTimeoutMs, probeIntervalMs: livenessInterval(SYNC_TUNING.primaryProbeMs, config.primaryTimeoutMs) }, log);
  let supervisor: Supervisor | undefined;
  const metrics = new SyncMetrics({
    engine: () => supervisor?.engine,
    monitor: primaryMonitor,
    identity: config.identity,
    version: config.version,
    isLeader: () => supervisor?.role === 'leader',
    leaderIdentity: () => supervisor?.leaderIdentity,
    state: () => supervisor?.state ?? 'starting',
    unreadableEncryptedValues: () => monitor?.unreadable ?? 0,
  });
  supervisor = new Supervisor(
    standby,
    {
      identity: config.identity,
      keys: controlKeys(config.checkpointKey),
      leaseTtlSeconds: config.leaseTtlSeconds,
      pollMs: SYNC_TUNING.controlPollMs,
      publishMs: SYNC_TUNING.primaryProbeMs,
      standbyTimeoutMs: config.primaryTimeoutMs,
    },
    (fence) =>
      new SyncEngine(
        primary,
        standby,
        primaryMonitor,
        {
          ...syncOptions(config, scope),
          writerHooks: {
            fence,
            unreplicablePrefix: controlKeys(config.checkpointKey).unreplicable,
            ...(monitor ? { onPut: (key: Buffer, value: Buffer) => monitor.check(key, value) } : {}),
            onTxn: (seconds: number) => metrics.observeTxn(seconds),
          },
        },
        log,
        hooks,
      ),
    log,
    primaryMonitor,
  );
  const checkNow = () => {
    log.info('/check: auditing both etcds');
    return audit(primary, standby, {
      scope,
      checkpointKey: config.checkpointKey,
      pageSize: config.pageSize,
      maxTxnOps: config.maxTxnOps,
      settleMs: CHECK_DEFAULTS.settleMs,
      retry: retrier({ log, signal, maxAttempts: 4 }),
      signal,
    });
  };
  log.info({ version: config.version, identity: config.identity }, 'starting');
  const probeStop = new AbortController();
  const probing = primaryMonitor.probe(primary, standby, config.checkpointKey, probeStop.signal);
  try {
    const server = config.httpAddress ? await startHttp(config.httpAddress, httpHandlers(supervisor, primaryMonitor, config, metrics, checkNow), log) : undefined;
    try {
      // Refused before any replica campaigns: campaigning writes the leader key into the standby.
      await waitForBothSides(primary, standby, retrier({ log, signal }));
      await supervisor.run(signal);
    } catch (err) {
      if (err instanceof AbortedError) return;
      throw err;
    } finally {
      await server?.close();
    }
    const engine = supervisor.engine;
    log.info({ appliedRevision: engine?.appliedRevision.toString(), checkpoint: engine?.checkpointedRevision.toString() }, 'stopped');
  } finally {
    probeStop.abort();
    await probing;
    primary.close();
    standby.close();
  }
}

/** Unreplicable keys /status lists (etcd_sync_unreplicable_keys counts them all). */
const STATUS_UNREPLICABLE_LISTED = 100;

/** Waits until both sides answer; a primary that is the standby itself is a configuration error. */
async function waitForBothSides(primary: EtcdSide, standby: EtcdSide, retry: Retry): Promise<void> {
  const [p, s] = await Promise.all([retry('connect to primary', () => readHeader(primary)), retry('connect to standby', () => readHeader(standby))]);
  refuseSameCluster(p, s);
}

/**
 * Whether this replica is ready, and why (the body of /readyz). The leader: streaming, the primary
 * answering within --primary-timeout, the lag within --ready-max-lag. A follower: while it reaches
 * the standby (it could not take over otherwise). Paused, fenced, stopped: not ready.
 */
export function readiness(supervisor: Supervisor, monitor: PrimaryMonitor, readyMaxLag: number, now = Date.now()): { ready: boolean; reason: string } {
  const state = supervisor.state;
  const control = supervisor.control;
  if (state === 'fenced') return { ready: false, reason: `fenced (promoted) ${control.fenced ? describeRecord(control.fenced) : ''}`.trim() };
  if (state === 'paused') return { ready: false, reason: `paused ${control.paused ? describeRecord(control.paused) : ''}`.trim() };
  if (state === 'stopped') return { ready: false, reason: state };
  if (supervisor.role !== 'leader' && state !== 'starting') {
    return supervisor.standbyReachable(now) ? { ready: true, reason: 'follower: the standby answers' } : { ready: false, reason: 'follower: the standby etcd does not answer' };
  }
  if (!monitor.reachable(now)) {
    const since = monitor.lastContactAt === undefined ? 'never answered' : `silent for ${Math.round((now - monitor.lastContactAt) / 1000)} s`;
    return { ready: false, reason: `primary unreachable (${since})` };
  }
  const held = supervisor.engine?.held;
  if (state === 'held' && held) {
    return { ready: false, reason: `held before a mass delete at primary revision ${held.revision} (${held.reason}); ${held.pendingDeletes} deletes waiting: etcd-sync resume --accept-deletes, or promote` };
  }
  const unavailable = supervisor.engine?.writer.unavailable;
  if (state === 'standby-unavailable' && unavailable) return { ready: false, reason: `standby-unavailable: ${unavailable.reason}` };
  if (state !== 'streaming') return { ready: false, reason: state };
  if (supervisor.role !== 'leader') return { ready: false, reason: 'starting' };
  const lag = monitor.lagRevisions;
  if (lag > BigInt(readyMaxLag)) return { ready: false, reason: `lag ${lag} revisions > --ready-max-lag ${readyMaxLag}` };
  return { ready: true, reason: `streaming, lag ${lag} revisions` };
}

/** What /readyz, /status and /check answer. */
export function httpHandlers(
  supervisor: Supervisor,
  monitor: PrimaryMonitor,
  config: Pick<RunConfig, 'identity' | 'readyMaxLag' | 'httpCheck'>,
  metrics: SyncMetrics,
  checkNow: () => ReturnType<typeof audit>,
): HttpHandlers {
  return {
    registry: metrics.registry,
    ready: () => readiness(supervisor, monitor, config.readyMaxLag),
    status: () => {
      const now = Date.now();
      const lastCheck = supervisor.engine?.lastCheck;
      const control = supervisor.control;
      return {
        identity: config.identity,
        role: supervisor.role,
        state: supervisor.state,
        ready: readiness(supervisor, monitor, config.readyMaxLag, now),
        appliedRevision: Number(monitor.appliedRevision),
        primaryRevision: Number(monitor.primaryRevision),
        lagRevisions: Number(monitor.lagRevisions),
        lagSeconds: Math.round(monitor.lagSeconds(now) * 10) / 10,
        primaryReachable: monitor.reachable(now),
        lastPrimaryContact: monitor.lastContactAt === undefined ? null : new Date(monitor.lastContactAt).toISOString(),
        progress: progressJson(supervisor.engine?.diffProgress?.snapshot(now)),
        held: supervisor.engine?.held ? heldJson(supervisor.engine.held) : null,
        paused: control.paused ?? null,
        fenced: control.fenced ?? null,
        unreplicable: [...(supervisor.engine?.writer.unreplicable.values() ?? [])]
          .slice(0, STATUS_UNREPLICABLE_LISTED)
          .map((u) => ({ key: keyText(u.key), bytes: u.bytes, reason: u.reason, since: new Date(u.since).toISOString() })),
        standbyUnavailable: supervisor.engine?.writer.unavailable
          ? { reason: supervisor.engine.writer.unavailable.reason, since: new Date(supervisor.engine.writer.unavailable.since).toISOString() }
          : null,
        lastCheck: lastCheck
          ? { checkedAt: new Date(lastCheck.checkedAt).toISOString(), ...toJson(lastCheck), missing: undefined, surplus: undefined, different: undefined }
          : null,
      };
    },
    ...(config.httpCheck ? { check: sharedCheck(supervisor, checkNow) } : {}),
  };
}

/** The running or last full diff of this replica's engine, as /status shows it; null before any. */
function progressJson(p: SyncProgress | undefined): object | null {
  if (!p) return null;
  return {
    ...progressFields(p),
    running: p.finishedAt === undefined,
    startedAt: new Date(p.startedAt).toISOString(),
    finishedAt: p.finishedAt === undefined ? null : new Date(p.finishedAt).toISOString(),
  };
}

/** A /check result this young is served again instead of a new audit of both etcds. */
const CHECK_REUSE_MS = 30_000;

/**
 * /check: the latest periodic check; without one, at most one audit at a time, shared by every
 * request that arrives while it runs, and its result served again for CHECK_REUSE_MS. Many
 * concurrent requests cost one audit and one serialized report, not one each.
 */
function sharedCheck(supervisor: Supervisor, checkNow: () => ReturnType<typeof audit>): () => Promise<object> {
  let running: Promise<object> | undefined;
  let last: { at: number; body: object } | undefined;
  return async () => {
    const periodic = supervisor.engine?.lastCheck;
    if (periodic) return toJson(periodic);
    if (last && Date.now() - last.at < CHECK_REUSE_MS) return last.body;
    running ??= checkNow()
      .then((report) => {
        last = { at: Date.now(), body: toJson(report) };
        return last.body;
      })
      .finally(() => (running = undefined));
    return running;
  };
}
