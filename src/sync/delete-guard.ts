/**
 * The delete guard: counts the primary's in-scope deletes over a sliding window and says where to
 * stop before a mass delete (`kubectl delete ns --all` by mistake, a GitOps prune at the wrong
 * path). The engine applies everything before the revision whose deletes cross the threshold and
 * holds there: the standby stays the exact image of the primary at the revision before it.
 *
 * Deletes of Events never count: they expire by TTL in bulk on any busy cluster, and losing them
 * in a failover loses nothing an operator restores.
 */
import type { WatchEvent } from '../etcd/watch.js';
import { parseKubernetesKey } from '../scope.js';

/** How a threshold is given: a number of keys, or a percentage of the in-scope keys. */
export interface DeleteGuardRule {
  /** Deletes within the window that trip the guard; with `percent`, the floor of the threshold. */
  keys: number;
  /** The threshold as a share of the in-scope keys (0-100); undefined: `keys` alone. */
  percent: number | undefined;
  windowMs: number;
  /** As given, for messages: `5%/1m`. */
  text: string;
}

/**
 * A percentage never means fewer deletes than this: on a small keyspace 5 % is a handful of
 * keys, which ordinary churn (a Deployment rolled) reaches.
 */
export const DELETE_GUARD_MIN_KEYS = 100;

/** Why the guard tripped, and where the standby holds. */
export interface DeleteBurst {
  /** The first primary revision not applied: its deletes crossed the threshold. */
  burstRevision: bigint;
  /** The standby holds the primary's image at this revision (burstRevision - 1). */
  heldRevision: bigint;
  /** Deletes counted in the window, the crossing revision's included. */
  deletes: number;
  threshold: number;
  inScopeKeys: number;
  rule: string;
}

/** Where the standby holds before a mass delete, and what waits on the primary since. */
export interface HeldState {
  /** The standby is the primary's image at this revision. */
  revision: bigint;
  /** Why (the burst), as recorded in the held control key. */
  reason: string;
  /** When the guard tripped (RFC 3339). */
  since: string;
  /** In-scope deletes on the primary after the held revision, counted while held. */
  pendingDeletes: number;
  pendingPuts: number;
  /** pendingDeletes by resource/namespace (groupOf). */
  deletesByGroup: Map<string, number>;
  /** The primary compacted past the held revision: the burst can only be accepted, by a resync. */
  compacted: boolean;
}

/** Groups listed in heldJson; the rest are summed. */
const HELD_GROUPS_LISTED = 20;

/** A hold as /status, the published leader status and `etcd-sync status` show it. */
export function heldJson(held: HeldState): Record<string, unknown> {
  const groups = [...held.deletesByGroup.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  return {
    revision: held.revision.toString(),
    reason: held.reason,
    since: held.since,
    pendingDeletes: held.pendingDeletes,
    pendingPuts: held.pendingPuts,
    deletesByGroup: Object.fromEntries(groups.slice(0, HELD_GROUPS_LISTED)),
    compacted: held.compacted,
  };
}

/** Resources whose deletes the guard does not count. */
const UNCOUNTED_RESOURCES = new Set(['events', 'events.k8s.io']);

export class DeleteGuard {
  /** Deletes at or below this revision were accepted by the operator: not counted. */
  exemptThrough = 0n;
  /** Deletes per admitted revision, oldest first, with when they arrived. */
  private readonly recent: { at: number; deletes: number }[] = [];
  /** The sum of `recent` (kept, not summed per call: admit runs for every watch message). */
  private inWindow = 0;
  /**
   * Revisions up to here are counted: a watch that broke and opened again from the applied
   * revision delivers again what was read but not yet applied, which must not count twice.
   */
  private countedThrough = 0n;

  constructor(
    readonly rule: DeleteGuardRule,
    private readonly keyPrefix: Buffer,
    /** The in-scope keys now (the last full diff's count, or the primary's count at the start). */
    private readonly inScopeKeys: () => number,
    /** Whether a key is replicated at all (excluded namespaces are not). */
    private readonly inScope: (key: Buffer) => boolean,
  ) {}

  /** The deletes within one window that trip the guard. */
  threshold(): number {
    const { keys, percent } = this.rule;
    if (percent === undefined) return keys;
    return Math.max(keys, Math.ceil((this.inScopeKeys() * percent) / 100));
  }

  /** Whether this event is a delete the guard counts. */
  counts(event: WatchEvent): boolean {
    if (event.type !== 'delete' || event.modRevision <= this.exemptThrough || !this.inScope(event.key)) return false;
    const resource = parseKubernetesKey(event.key, this.keyPrefix.length)?.resource;
    return resource === undefined || !UNCOUNTED_RESOURCES.has(resource);
  }

  /**
   * Admits `events` (in revision order, whole revisions: etcd sends a revision in one watch
   * response unless asked to fragment, which etcd-sync never asks) revision by revision. Returns the index
   * of the first event of the revision whose deletes would cross the threshold, with the burst;
   * or undefined when all are admitted (and counted).
   */
  admit(events: readonly WatchEvent[], now = Date.now()): { cut: number; burst: DeleteBurst } | undefined {
    const from = now - this.rule.windowMs;
    while (this.recent.length > 0 && (this.recent[0] as { at: number }).at <= from) this.inWindow -= (this.recent.shift() as { deletes: number }).deletes;
    for (let i = 0; i < events.length; ) {
      const revision = (events[i] as WatchEvent).modRevision;
      if (revision <= this.countedThrough) {
        i++;
        continue;
      }
      let end = i;
      let deletes = 0;
      for (; end < events.length && (events[end] as WatchEvent).modRevision === revision; end++) if (this.counts(events[end] as WatchEvent)) deletes++;
      if (deletes > 0) {
        const threshold = this.threshold();
        if (this.inWindow + deletes > threshold) {
          return {
            cut: i,
            burst: { burstRevision: revision, heldRevision: revision - 1n, deletes: this.inWindow + deletes, threshold, inScopeKeys: this.inScopeKeys(), rule: this.rule.text },
          };
        }
        this.inWindow += deletes;
        this.recent.push({ at: now, deletes });
      }
      this.countedThrough = revision;
      i = end;
    }
    return undefined;
  }
}

/** `--delete-guard`: `off`, `<keys>/<duration>` or `<percent>%/<duration>`; undefined for off. Throws a message on bad input. */
export function parseDeleteGuard(text: string, parseWindow: (duration: string) => number): DeleteGuardRule | undefined {
  const value = text.trim();
  if (value === 'off') return undefined;
  const m = /^(\d+(?:\.\d+)?)(%?)\/(\S+)$/.exec(value);
  if (!m) throw new Error(`--delete-guard must be off, <keys>/<window> or <percent>%/<window> (e.g. 5%/1m or 2000/5m), not '${value}'`);
  const amount = Number(m[1]);
  const windowMs = parseWindow(m[3] as string);
  if (m[2] === '%') {
    if (!(amount > 0 && amount <= 100)) throw new Error(`--delete-guard: the percentage must be above 0 and at most 100, not ${m[1]}%`);
    return { keys: DELETE_GUARD_MIN_KEYS, percent: amount, windowMs, text: value };
  }
  if (!Number.isInteger(amount) || amount < 1) throw new Error(`--delete-guard: the number of keys must be a whole number of at least 1, not ${m[1]}`);
  return { keys: amount, percent: undefined, windowMs, text: value };
}

/** `312 deletes crossed --delete-guard 5%/1m (threshold 100 of 1000 in-scope keys) at primary revision 812`. */
export function describeBurst(b: DeleteBurst): string {
  return `${b.deletes} deletes crossed --delete-guard ${b.rule} (threshold ${b.threshold} of ${b.inScopeKeys} in-scope keys) at primary revision ${b.burstRevision}`;
}

/** The stream or the replay stopped before a burst: everything up to `burst.heldRevision` is applied. */
export class DeleteBurstError extends Error {
  constructor(readonly burst: DeleteBurst) {
    super(describeBurst(burst));
    this.name = 'DeleteBurstError';
  }
}
