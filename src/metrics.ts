/** Prometheus metrics of `run` (prefix etcd_sync_), read from the engine at scrape time. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { SyncEngine } from './sync/engine.js';
import { REPLICA_STATES } from './sync/control-keys.js';
import type { PrimaryMonitor } from './sync/primary-monitor.js';

export const SYNC_STATES = REPLICA_STATES;

export interface MetricsSources {
  engine(): SyncEngine | undefined;
  /** The primary's revision, its last answer and the lag, in every state. */
  monitor: PrimaryMonitor;
  identity: string;
  /** etcd-sync's version, the label of etcd_sync_build_info. */
  version: string;
  isLeader(): boolean;
  /** The state to report (the engine's, or paused/fenced/follower around it). */
  state(): string;
  unreadableEncryptedValues(): number;
}

/** Sets a counter to a total kept elsewhere (the engine counts; Prometheus wants counters). */
function setTotal(counter: Counter<string>, labels: Record<string, string>, total: number): void {
  counter.remove(labels);
  if (total > 0) counter.inc(labels, total);
  else counter.inc(labels, 0);
}

export class SyncMetrics {
  readonly registry = new Registry();
  private readonly txnDuration: Histogram<string>;

  constructor(sources: MetricsSources) {
    const r = this.registry;
    r.setDefaultLabels({ identity: sources.identity });
    collectDefaultMetrics({ register: r });
    const engine = sources.engine;
    const gauge = (name: string, help: string, value: () => number | undefined): void => {
      new Gauge({
        name: `etcd_sync_${name}`,
        help,
        registers: [r],
        collect() {
          const v = value();
          if (v !== undefined) this.set(v);
        },
      });
    };
    // Which build each replica runs, as Prometheus exporters say it (Node's own is nodejs_version_info).
    new Gauge({ name: 'etcd_sync_build_info', help: "Always 1; the version label is etcd-sync's.", labelNames: ['version'], registers: [r] }).set({ version: sources.version }, 1);
    const monitor = sources.monitor;
    gauge('applied_revision', 'Last primary revision applied to the standby.', () => Number(monitor.appliedRevision));
    gauge('primary_revision', "The primary's latest revision known (refreshed every few seconds in every state).", () => Number(monitor.primaryRevision));
    gauge('lag_revisions', "The primary's latest revision known minus the applied one.", () => Number(monitor.lagRevisions));
    gauge('lag_seconds', "Age of the oldest primary write not applied yet; while the primary is unreachable, at least the time since it last answered.", () => monitor.lagSeconds());
    gauge('primary_up', '1 when the primary answered within --primary-timeout.', () => (monitor.reachable() ? 1 : 0));
    gauge('primary_last_contact_timestamp_seconds', 'When the primary last answered (Unix time); 0 when it never did.', () => (monitor.lastContactAt ?? 0) / 1000);
    gauge('self_heals_total', 'Keys restored after a change on the standby by someone else.', () => engine()?.healer?.heals ?? 0);
    gauge('self_heal_pending_keys', 'Keys changed on the standby by someone else that wait to be looked at and restored.', () => engine()?.healer?.pendingKeys ?? 0);
    gauge('unreplicable_keys', "Keys the standby refuses even alone (over its --max-request-bytes): skipped, listed in /status.", () => engine()?.writer.unreplicable.size ?? 0);
    gauge('unreadable_encrypted_values', "Keys written whose encrypted value the standby's apiserver cannot read.", sources.unreadableEncryptedValues);
    gauge('leader', '1 on the replica that leads (writes).', () => (sources.isLeader() ? 1 : 0));
    new Gauge({
      name: 'etcd_sync_state',
      help: 'The current state (1 for the current one).',
      labelNames: ['state'],
      registers: [r],
      collect() {
        const current = sources.state();
        for (const state of SYNC_STATES) this.set({ state }, state === current ? 1 : 0);
      },
    });
    new Gauge({
      name: 'etcd_sync_check_keys',
      help: 'Findings of the latest periodic check, by kind.',
      labelNames: ['kind'],
      registers: [r],
      collect() {
        const check = engine()?.lastCheck;
        for (const kind of ['missing', 'surplus', 'different'] as const) this.set({ kind }, check ? check.findings[kind].length : 0);
      },
    });
    new Counter({
      name: 'etcd_sync_events_applied_total',
      help: 'Primary events applied to the standby, by type.',
      labelNames: ['type'],
      registers: [r],
      collect() {
        const applied = engine()?.eventsApplied ?? { put: 0, delete: 0 };
        setTotal(this, { type: 'put' }, applied.put);
        setTotal(this, { type: 'delete' }, applied.delete);
      },
    });
    new Counter({
      name: 'etcd_sync_resyncs_total',
      help: 'Full resyncs, by reason.',
      labelNames: ['reason'],
      registers: [r],
      collect() {
        for (const [reason, total] of engine()?.resyncs ?? []) setTotal(this, { reason }, total);
      },
    });
    new Counter({
      name: 'etcd_sync_watch_restarts_total',
      help: "Reconnects of the primary's watch stream.",
      registers: [r],
      collect() {
        setTotal(this, {}, engine()?.watchRestarts ?? 0);
      },
    });
    new Counter({
      name: 'etcd_sync_stream_resends_total',
      help: 'Streaming transactions that reached the standby before the one they follow, and were sent again.',
      registers: [r],
      collect() {
        setTotal(this, {}, engine()?.streamResends ?? 0);
      },
    });
    this.txnDuration = new Histogram({
      name: 'etcd_sync_txn_duration_seconds',
      help: 'Duration of write transactions into the standby, retries included.',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [r],
    });
  }

  observeTxn(seconds: number): void {
    this.txnDuration.observe(seconds);
  }
}
