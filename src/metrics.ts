/** Prometheus metrics of `run` (prefix etcd_sync_), read from the engine at scrape time. */
import { Counter, Gauge, Histogram, type MetricObjectWithValues, type MetricValue, Registry, collectDefaultMetrics } from 'prom-client';
import { RESYNC_REASONS, type SyncEngine } from './sync/engine.js';
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
  /** The leading replica's identity as this replica last read it (itself when it leads). */
  leaderIdentity(): string | undefined;
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

const LINT_FAILING_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/** An unlabelled gauge whose value comes from `value()` at each scrape; no sample while it is undefined. */
class ScrapedGauge extends Gauge<string> {
  constructor(
    name: string,
    help: string,
    private readonly value: () => number | undefined,
  ) {
    super({ name, help, registers: [] });
  }

  override async get(): Promise<MetricObjectWithValues<MetricValue<string>>> {
    const v = this.value();
    if (v === undefined) return { ...(await super.get()), values: [] };
    this.set(v);
    return super.get();
  }
}

export class SyncMetrics {
  readonly registry = new Registry();
  private readonly txnDuration: Histogram<string>;

  constructor(sources: MetricsSources) {
    const r = this.registry;
    r.setDefaultLabels({ identity: sources.identity });
    collectDefaultMetrics({ register: r });
    // prom-client names three gauges `_total`, which `promtool check metrics` refuses (a counter's
    // suffix); each is the sum of the by-type gauge it comes with (nodejs_active_handles{type}...).
    for (const name of LINT_FAILING_DEFAULTS) r.removeSingleMetric(name);
    const engine = sources.engine;
    /** A gauge read at scrape time; `undefined` exports no sample (not a 0 that reads as a fact). */
    const gauge = (name: string, help: string, value: () => number | undefined): void => {
      r.registerMetric(new ScrapedGauge(`etcd_sync_${name}`, help, value));
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
    // The running full diff's progress, or the last one's (absent before this replica ran one).
    const progress = () => engine()?.diffProgress?.snapshot();
    gauge('full_diff_keys', 'Primary keys under --key-prefix at the revision of the running (or last) full diff.', () => progress()?.keysTotal);
    gauge('full_diff_keys_done', 'Primary keys the running (or last) full diff has read.', () => progress()?.keysDone);
    gauge('full_diff_progress_ratio', 'Share of the running (or last) full diff done, 0 to 1.', () => {
      const percent = progress()?.percent;
      return percent === undefined ? undefined : percent / 100;
    });
    gauge('full_diff_keys_per_second', 'Primary keys read per second by the running (or last) full diff.', () => progress()?.keysPerSecond);
    gauge('full_diff_eta_seconds', 'Seconds the running full diff needs still at its rate (0 once done).', () => progress()?.etaSeconds);
    // While the delete guard holds (absent otherwise).
    gauge('held_revision', 'The primary revision the standby holds at before a mass delete (absent unless held).', () => {
      const held = engine()?.held;
      return held ? Number(held.revision) : undefined;
    });
    gauge('held_pending_deletes', 'In-scope deletes on the primary after the held revision, not applied (absent unless held).', () => engine()?.held?.pendingDeletes);
    gauge('self_heal_pending_keys', 'Keys changed on the standby by someone else that wait to be looked at and restored.', () => engine()?.healer?.pendingKeys ?? 0);
    gauge('unreplicable_keys', "Keys the standby refuses even alone (over its --max-request-bytes): skipped, listed in /status.", () => engine()?.writer.unreplicable.size ?? 0);
    gauge('unreadable_encrypted_values', "Keys written whose encrypted value the standby's apiserver cannot read.", sources.unreadableEncryptedValues);
    gauge('leader', '1 on the replica that leads (writes).', () => (sources.isLeader() ? 1 : 0));
    new Gauge({
      name: 'etcd_sync_leader_info',
      help: 'Always 1; the leader label is the identity of the replica that leads, as this replica last read it (absent while none leads).',
      labelNames: ['leader'],
      registers: [r],
      collect() {
        this.reset();
        const leader = sources.leaderIdentity();
        if (leader !== undefined) this.set({ leader }, 1);
      },
    });
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
      help: 'Findings of the latest periodic check on this replica, by kind (absent until one ran).',
      labelNames: ['kind'],
      registers: [r],
      collect() {
        this.reset();
        const check = engine()?.lastCheck;
        if (check) for (const kind of ['missing', 'surplus', 'different'] as const) this.set({ kind }, check.findings[kind].length);
      },
    });
    // Absent until a check ran: a 0 would read as "consistent" or "checked in 1970".
    gauge('last_check_timestamp_seconds', 'When the latest periodic check on this replica compared the pair (Unix time; absent until one ran).', () => {
      const check = engine()?.lastCheck;
      return check ? check.checkedAt / 1000 : undefined;
    });
    gauge('last_check_consistent', '1 when the latest periodic check on this replica found the pair consistent, 0 when not (absent until one ran).', () => {
      const check = engine()?.lastCheck;
      return check ? (check.consistent ? 1 : 0) : undefined;
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
        const resyncs = engine()?.resyncs;
        for (const reason of RESYNC_REASONS) setTotal(this, { reason }, resyncs?.get(reason) ?? 0);
      },
    });
    new Counter({
      name: 'etcd_sync_self_heals_total',
      help: 'Keys restored after a change on the standby by someone else.',
      registers: [r],
      collect() {
        setTotal(this, {}, engine()?.healer?.heals ?? 0);
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
