/**
 * What etcd-sync knows of the primary, in every state (streaming, paused, resyncing, follower):
 * its latest revision, when it last answered, and so how far behind the standby is. The engine
 * reports every answer it gets (watch events, progress, reads); a probe reads the primary's
 * revision every few seconds besides, so the lag keeps counting while nothing is applied (paused,
 * resyncing) and an outage shows while it lasts, not only after it.
 */
import type { Logger } from 'pino';
import type { EtcdSide } from '../etcd/connection.js';
import { readHeader } from '../etcd/kv.js';
import { UnreachableError, describeError } from '../errors.js';
import { readCheckpoint } from './checkpoint.js';
import { delay } from './retry.js';

export interface PrimaryMonitorOptions {
  /** The primary counts as unreachable once it has not answered for this long. */
  primaryTimeoutMs: number;
  /** How often the probe reads the primary's revision (and the standby's checkpoint). */
  probeIntervalMs: number;
}

/** A promise that fails with UnreachableError after `ms`, or at once when `signal` aborts (shutdown does not wait for a silent etcd). */
export function withDeadline<T>(what: string, ms: number, promise: Promise<T>, signal?: AbortSignal): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new UnreachableError(`${what}: no answer within ${ms / 1000} s`)), ms);
    onAbort = () => reject(new UnreachableError(`${what}: aborted`));
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
  });
  promise.catch(() => undefined); // settled after the race was decided: nobody waits for it
  return Promise.race([promise, deadline]).finally(() => {
    clearTimeout(timer);
    if (onAbort) signal?.removeEventListener('abort', onAbort);
  });
}

export class PrimaryMonitor {
  /** The primary's latest revision known. */
  primaryRevision = 0n;
  /** When the primary last answered (ms since epoch); undefined: never. */
  lastContactAt: number | undefined;
  /**
   * When the standby was first seen behind the primary (ms since epoch): the age of the oldest
   * primary write not applied yet, to within one probe interval. undefined: caught up.
   */
  behindSince: number | undefined;
  /** The standby's checkpoint as the probe last read it, for when no engine applies here. */
  checkpointRevision = 0n;
  /** The primary revision applied on the standby: the running engine's, else the checkpoint. */
  private appliedSource: (() => bigint | undefined) | undefined;
  /** Whether the last look (watchReachability) found the primary reachable. */
  private wasReachable = true;
  /** Why the probe's last read failed, for the log line of an outage. */
  private lastProbeError: string | undefined;

  constructor(
    readonly options: PrimaryMonitorOptions,
    private readonly log?: Logger,
  ) {}

  /** Where the applied revision comes from while an engine runs here; undefined: the checkpoint. */
  setAppliedSource(source: (() => bigint | undefined) | undefined): void {
    this.appliedSource = source;
    this.refresh();
  }

  get appliedRevision(): bigint {
    return this.appliedSource?.() ?? this.checkpointRevision;
  }

  /** The primary answered (with its revision, when the answer carried one). */
  noteContact(revision = 0n, now = Date.now()): void {
    if (!this.wasReachable) {
      this.wasReachable = true;
      const outageSeconds = this.lastContactAt === undefined ? null : Math.round((now - this.lastContactAt) / 1000);
      this.log?.info({ outageSeconds }, 'primary reachable again');
    }
    this.lastContactAt = now;
    if (revision > this.primaryRevision) this.primaryRevision = revision;
    this.refresh(now);
  }

  /** The primary was replaced or went back in time: its revision is what it says now. */
  resetPrimary(revision: bigint, now = Date.now()): void {
    this.primaryRevision = revision;
    this.lastContactAt = now;
    this.behindSince = undefined;
    this.refresh(now);
  }

  /** Recomputes whether the standby is behind (after the applied revision moved). */
  refresh(now = Date.now()): void {
    if (this.appliedRevision >= this.primaryRevision) this.behindSince = undefined;
    else this.behindSince ??= now;
  }

  /** The primary answered within the timeout. */
  reachable(now = Date.now()): boolean {
    return this.lastContactAt !== undefined && now - this.lastContactAt <= this.options.primaryTimeoutMs;
  }

  get lagRevisions(): bigint {
    const applied = this.appliedRevision;
    return this.primaryRevision > applied ? this.primaryRevision - applied : 0n;
  }

  /**
   * Seconds of primary writes the standby does not have: the age of the oldest one not applied,
   * and while the primary cannot be reached at least the time since it last answered (what it
   * wrote since is unknown, and may be lost).
   */
  lagSeconds(now = Date.now()): number {
    const behind = this.behindSince === undefined ? 0 : now - this.behindSince;
    const silent = this.reachable(now) || this.lastContactAt === undefined ? 0 : now - this.lastContactAt;
    return Math.max(behind, silent) / 1000;
  }

  /**
   * Reads the primary's revision every probe interval until `signal` aborts, and the standby's
   * checkpoint (what the standby holds when no engine runs here). Failures are the outage it
   * exists to show: logged once per outage, never thrown.
   */
  async probe(primary: EtcdSide, standby: EtcdSide, checkpointKey: Buffer, signal: AbortSignal): Promise<void> {
    const timeout = this.options.primaryTimeoutMs;
    // The outage is logged when it starts, not when a probe stuck in a silent connection gives up.
    const watcher = setInterval(() => this.watchReachability(), Math.min(1_000, this.options.probeIntervalMs));
    signal.addEventListener('abort', () => clearInterval(watcher), { once: true });
    do {
      try {
        const header = await withDeadline(`${primary.name} etcd`, timeout, readHeader(primary), signal);
        this.lastProbeError = undefined;
        this.noteContact(header.revision);
      } catch (err) {
        this.lastProbeError = describeError(err);
      }
      try {
        const stored = await withDeadline(`${standby.name} etcd`, timeout, readCheckpoint(standby, checkpointKey), signal);
        if (stored.checkpoint) this.checkpointRevision = stored.checkpoint.revision;
        this.refresh();
      } catch {
        // The standby's own outage shows in readiness (Supervisor.standbyReachable).
      }
    } while (await delay(this.options.probeIntervalMs, signal));
    clearInterval(watcher);
  }

  /** Logs the start of an outage: the primary silent for longer than the timeout. */
  private watchReachability(now = Date.now()): void {
    if (!this.wasReachable || this.reachable(now) || this.lastContactAt === undefined) return;
    this.wasReachable = false;
    const err = this.lastProbeError ?? `no answer for ${Math.round((now - this.lastContactAt) / 1000)} s`;
    this.log?.warn({ err, lastContact: new Date(this.lastContactAt).toISOString() }, 'primary unreachable');
  }
}
