/**
 * High availability: several replicas run, one leads. Leadership is an etcd lease plus an
 * election key in the standby, under etcd-sync's own prefix. Every write carries a comparison on
 * the election key (fencing), so a deposed leader's writes fail atomically; a leader that cannot
 * renew its lease stops writing before the lease can expire. Pause and the promote fence are keys
 * beside it, so all replicas see one toggle.
 */
import type { Logger } from 'pino';
import { FencedError, describeError } from '../errors.js';
import type { EtcdSide } from '../etcd/connection.js';
import { type Compare, readKey, txn } from '../etcd/kv.js';
import { leaseGrant, leaseKeepAliveOnce, leaseRevoke } from '../etcd/lease.js';
import { AbortedError, delay, retrier } from './retry.js';
import { type ControlKeys, type ControlState, type LeaderStatus, describeRecord, readControl } from './control-keys.js';
import type { PrimaryMonitor } from './primary-monitor.js';
import type { SyncEngine } from './engine.js';
import { progressFields } from './full-diff.js';
import { heldJson } from './delete-guard.js';
import type { Fence } from './writer.js';

export type Role = 'leader' | 'follower';

/** A fenced standby says so in the log at start and this often after. */
const FENCED_WARNING_MS = 5 * 60_000;

export interface SupervisorOptions {
  identity: string;
  keys: ControlKeys;
  /** Lease TTL in seconds; a dead leader is replaced within it. */
  leaseTtlSeconds: number;
  /** How often followers look for a free leadership and the leader for pause/fence. */
  pollMs: number;
  /** How often the leader publishes its status (keys.status). */
  publishMs: number;
  /** A standby that has not answered for this long makes a follower not ready. */
  standbyTimeoutMs: number;
}

export class Supervisor {
  role: Role = 'follower';
  engine: SyncEngine | undefined;
  /** What this replica does; 'engine' defers to the running engine's own state. */
  private phase: 'starting' | 'follower' | 'paused' | 'fenced' | 'engine' | 'stopped' = 'starting';
  /** The pause and fence toggles as last read, with who set them. */
  control: ControlState = {};
  /** The leading replica's identity as last read (this one's while it leads); undefined: none. */
  leaderIdentity: string | undefined;
  /** When the standby last answered this replica (ms since epoch). */
  private standbyContactAt: number | undefined;
  private fencedWarnedAt: number | undefined;

  /** 'follower', 'paused', 'fenced', 'stopped', 'standby-unavailable' while the standby refuses the engine's writes, or the engine's state. */
  get state(): string {
    if (this.phase !== 'engine' || !this.engine) return this.phase;
    return this.engine.writer.unavailable && this.engine.state !== 'stopped' ? 'standby-unavailable' : this.engine.state;
  }
  private readonly ttl: number;
  private readonly pollMs: number;

  constructor(
    private readonly standby: EtcdSide,
    private readonly options: SupervisorOptions,
    /** A new engine for each term, writing behind the given fence. */
    private readonly newEngine: (fence: Fence) => SyncEngine,
    private readonly log: Logger,
    private readonly monitor: PrimaryMonitor,
  ) {
    this.ttl = options.leaseTtlSeconds;
    this.pollMs = options.pollMs;
  }

  private retry<T>(what: string, fn: () => Promise<T>, signal: AbortSignal): Promise<T> {
    return retrier({ log: this.log, signal, maxDelayMs: 2_000 })(what, async () => {
      const result = await fn();
      this.standbyContactAt = Date.now();
      return result;
    });
  }

  /** The standby answered this replica within standbyTimeoutMs: a follower could take over. */
  standbyReachable(now = Date.now()): boolean {
    return this.standbyContactAt !== undefined && now - this.standbyContactAt <= this.options.standbyTimeoutMs;
  }

  private async readControl(signal: AbortSignal): Promise<ControlState> {
    this.control = await this.retry('read control keys', () => readControl(this.standby, this.options.keys), signal);
    return this.control;
  }

  /** Says that the standby is fenced: at once, then every FENCED_WARNING_MS. */
  private warnFenced(): void {
    const now = Date.now();
    if (this.fencedWarnedAt !== undefined && now - this.fencedWarnedAt < FENCED_WARNING_MS) return;
    this.fencedWarnedAt = now;
    const fence = this.control.fenced;
    this.log.warn(
      { fencedBy: fence?.by, fencedAt: fence?.at, reason: fence?.reason },
      `the standby is fenced (promoted) ${fence ? describeRecord(fence) : ''}: etcd-sync writes nothing into it; etcd-sync unfence lifts the fence`,
    );
  }

  async run(signal: AbortSignal): Promise<void> {
    try {
      while (!signal.aborted) {
        const control = await this.readControl(signal);
        if (control.fenced) {
          this.phase = 'fenced';
          this.warnFenced();
          await delay(this.pollMs, signal);
          continue;
        }
        this.fencedWarnedAt = undefined;
        this.phase = 'follower';
        const term = await this.campaign(signal);
        if (!term) continue;
        await this.lead(term, signal);
      }
    } catch (err) {
      if (!(err instanceof AbortedError)) throw err;
    } finally {
      this.role = 'follower';
      this.phase = 'stopped';
    }
  }

  /** One attempt to take the election key; undefined when another replica holds it. */
  private async campaign(signal: AbortSignal): Promise<{ lease: string; createRevision: bigint } | undefined> {
    // Followers only read while a leader holds the key: no lease grant or txn per poll.
    const leader = await this.retry('read leader', () => readKey(this.standby, this.options.keys.leader), signal);
    this.noteLeader(leader?.value.toString());
    if (leader) {
      await delay(this.pollMs, signal);
      return undefined;
    }
    const lease = await this.retry('grant leadership lease', () => leaseGrant(this.standby, this.ttl), signal);
    const won = await this.retry(
      'campaign',
      () =>
        txn(
          this.standby,
          [{ type: 'put', key: this.options.keys.leader, value: Buffer.from(this.options.identity), lease: lease.id }],
          [{ key: this.options.keys.leader, target: 'Create', result: 'Equal', version: 0n }],
        ),
      signal,
    );
    if (won.succeeded) return { lease: lease.id, createRevision: won.header.revision };
    await leaseRevoke(this.standby, lease.id).catch(() => undefined);
    await delay(this.pollMs, signal);
    return undefined;
  }

  /** Records who leads, and says so in the log when it changed (followers learn of failovers). */
  private noteLeader(identity: string | undefined): void {
    if (identity === this.leaderIdentity) return;
    const previous = this.leaderIdentity;
    this.leaderIdentity = identity;
    if (identity === this.options.identity) return; // "acquired leadership" says it
    if (identity === undefined) this.log.info({ previous }, 'no replica leads: campaigning');
    else this.log.info({ leader: identity, previous }, `leader is ${identity}`);
  }

  private fence(term: { createRevision: bigint }): Fence {
    const keys = this.options.keys;
    return {
      compares: (): Compare[] => [
        { key: keys.leader, target: 'Create', result: 'Equal', version: term.createRevision },
        { key: keys.fenced, target: 'Create', result: 'Equal', version: 0n },
      ],
      verify: async () => {
        const [leader, fenced] = await Promise.all([readKey(this.standby, keys.leader), readKey(this.standby, keys.fenced)]);
        if (fenced) throw new FencedError('the standby is fenced (promoted): etcd-sync must not write into it');
        // A leader key that is gone or newer than our term means another replica may lead.
        if (!leader || leader.modRevision !== term.createRevision) throw new FencedError('leadership lost: another replica may be leading');
      },
    };
  }

  /** Leads until leadership is lost, the standby is fenced, or the signal aborts; pauses in between. */
  private async lead(term: { lease: string; createRevision: bigint }, signal: AbortSignal): Promise<void> {
    const stepDown = new AbortController();
    const onAbort = (): void => stepDown.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    this.role = 'leader';
    // Not 'follower' in what it publishes for the moment before its engine starts.
    this.phase = 'starting';
    this.leaderIdentity = this.options.identity;
    this.log.info({ identity: this.options.identity, leaseTtlSeconds: this.ttl }, 'acquired leadership');
    let lost: string | undefined;
    const keepalive = (async () => {
      let renewedAt = Date.now();
      // Stop writing well before the lease can expire on the server.
      const safetyMs = (this.ttl * 1000 * 2) / 3;
      while (!stepDown.signal.aborted) {
        if (!(await delay(Math.max(200, (this.ttl * 1000) / 3 - 100), stepDown.signal))) return;
        try {
          const left = await leaseKeepAliveOnce(this.standby, term.lease);
          if (left <= 0) throw new FencedError('leadership lease expired');
          renewedAt = Date.now();
        } catch (err) {
          if (err instanceof FencedError || Date.now() - renewedAt > safetyMs) {
            lost ??= `could not renew the leadership lease: ${describeError(err)}`;
            stepDown.abort();
            return;
          }
          this.log.warn({ err: describeError(err) }, 'leadership lease renewal failed, retrying');
        }
      }
    })();
    const publishing = this.publish(term, stepDown.signal);
    try {
      // One term, several phases: each ends when the pause/fence toggle changes.
      while (!stepDown.signal.aborted && !lost) {
        const control = await this.readControl(stepDown.signal);
        if (control.fenced) {
          this.phase = 'fenced';
          this.warnFenced();
          lost = 'the standby is fenced (promoted)';
          break;
        }
        const phase = new AbortController();
        const endPhase = (): void => phase.abort();
        stepDown.signal.addEventListener('abort', endPhase, { once: true });
        const watching = this.watchControl(control, phase);
        try {
          if (control.paused) {
            this.phase = 'paused';
            this.log.info({ pausedBy: control.paused.by, pausedAt: control.paused.at, reason: control.paused.reason }, 'paused: not applying; keeping the place in the primary history');
            await new Promise<void>((resolve) => phase.signal.addEventListener('abort', () => resolve(), { once: true }));
            if (!stepDown.signal.aborted) this.log.info('resumed');
          } else {
            await this.runEngine(term, phase.signal);
          }
        } catch (err) {
          if (err instanceof FencedError) lost = describeError(err);
          else if (!(err instanceof AbortedError)) throw err;
        } finally {
          phase.abort();
          stepDown.signal.removeEventListener('abort', endPhase);
          await watching;
        }
      }
    } finally {
      stepDown.abort();
      signal.removeEventListener('abort', onAbort);
      await keepalive;
      await publishing;
      this.role = 'follower';
      this.leaderIdentity = undefined;
      // No engine applies here any more: the applied revision is the standby's checkpoint.
      this.monitor.setAppliedSource(undefined);
      if (this.phase !== 'fenced') this.phase = 'follower';
      if (lost) this.log.warn({ identity: this.options.identity, reason: lost }, 'lost leadership');
      // Hand over at once instead of letting the lease run out (harmless if it is gone already).
      await leaseRevoke(this.standby, term.lease).catch(() => undefined);
      if (signal.aborted) this.log.info({ identity: this.options.identity }, 'released leadership');
    }
  }

  private async runEngine(term: { createRevision: bigint }, signal: AbortSignal): Promise<void> {
    const engine = this.newEngine(this.fence(term));
    this.engine = engine;
    this.monitor.setAppliedSource(() => engine.appliedRevision);
    this.phase = 'engine';
    await engine.run(signal);
  }

  /** What this replica knows, as the leader publishes it for `etcd-sync status`. */
  leaderStatus(now = Date.now()): LeaderStatus {
    const m = this.monitor;
    const progress = this.engine?.diffProgress?.snapshot(now);
    return {
      identity: this.options.identity,
      state: this.state,
      appliedRevision: m.appliedRevision.toString(),
      primaryRevision: m.primaryRevision.toString(),
      lagRevisions: m.lagRevisions.toString(),
      lagSeconds: Math.round(m.lagSeconds(now) * 10) / 10,
      primaryReachable: m.reachable(now),
      lastPrimaryContact: m.lastContactAt === undefined ? null : new Date(m.lastContactAt).toISOString(),
      at: new Date(now).toISOString(),
      ...(progress && progress.finishedAt === undefined ? { progress: progressFields(progress) } : {}),
      ...(this.engine?.held ? { held: heldJson(this.engine.held) } : {}),
    };
  }

  /**
   * While leading: puts leaderStatus() into keys.status, attached to the leadership lease (gone
   * with the leader) and guarded by the leader key, when the state or the primary's reachability
   * changes and every publishMs.
   */
  private async publish(term: { lease: string; createRevision: bigint }, signal: AbortSignal): Promise<void> {
    let lastState = '';
    let lastAt = 0;
    while (!signal.aborted) {
      const now = Date.now();
      const state = `${this.state} ${this.monitor.reachable(now)}`;
      if (state !== lastState || now - lastAt >= this.options.publishMs) {
        const status = this.leaderStatus(now);
        try {
          await txn(
            this.standby,
            [{ type: 'put', key: this.options.keys.status, value: Buffer.from(JSON.stringify(status)), lease: term.lease }],
            [{ key: this.options.keys.leader, target: 'Create', result: 'Equal', version: term.createRevision }],
          );
          lastState = state;
          lastAt = now;
        } catch {
          // The next tick tries again; an unreachable standby shows in readiness.
        }
      }
      if (!(await delay(Math.min(500, this.options.publishMs), signal))) return;
    }
  }

  /**
   * Ends the phase when the pause or fence toggle differs from what the phase started with, or
   * when a hold is lifted (`resume --accept-deletes`: the next engine applies the deletes). A
   * hold the engine itself records does not end it.
   */
  private async watchControl(started: ControlState, phase: AbortController): Promise<void> {
    let held = started.held !== undefined;
    while (await delay(this.pollMs, phase.signal)) {
      try {
        const now = await readControl(this.standby, this.options.keys);
        this.control = now;
        this.standbyContactAt = Date.now();
        const lifted = held && now.held === undefined;
        held = now.held !== undefined;
        if (!now.paused !== !started.paused || !now.fenced !== !started.fenced || lifted) {
          phase.abort();
          return;
        }
      } catch {
        // An unreachable standby: the lease keep-alive decides about leadership.
      }
    }
  }
}
