/**
 * etcd-sync's own keys in the standby beside the checkpoint: the leader key, the pause and fence
 * toggles (each recording who set it, when and why), the last control action, and the status the
 * leader publishes for `etcd-sync status`. One module writes and reads them all.
 */
import path from 'node:path';
import type { EtcdSide } from '../etcd/connection.js';
import { rangePage, readKey } from '../etcd/kv.js';
import { prefixEnd } from '../scope.js';

export interface ControlKeys {
  leader: Buffer;
  paused: Buffer;
  fenced: Buffer;
  /** The last control action (pause, resume, promote, unfence), whatever it was. */
  last: Buffer;
  /** What the leader publishes about itself every few seconds, attached to its lease. */
  status: Buffer;
  /** Prefix of the records of unreplicable keys: prefix + the key (keys start with '/'). */
  unreplicable: Buffer;
  /** Set by the leader when the delete guard tripped: the standby holds before a mass delete. */
  held: Buffer;
  /** Set by `resume --accept-deletes`: the next engine applies the held deletes (then removes it). */
  acceptDeletes: Buffer;
}

/** `/etcd-sync/checkpoint` → `/etcd-sync/leader`, `/etcd-sync/control/{paused,fenced,last}`, `/etcd-sync/status`. */
export function controlKeys(checkpointKey: Buffer): ControlKeys {
  const dir = path.posix.dirname(checkpointKey.toString());
  const at = (name: string): Buffer => Buffer.from(`${dir === '/' ? '' : dir}/${name}`);
  return {
    leader: at('leader'),
    paused: at('control/paused'),
    fenced: at('control/fenced'),
    last: at('control/last'),
    status: at('status'),
    unreplicable: at('unreplicable'),
    held: at('control/held'),
    acceptDeletes: at('control/accept-deletes'),
  };
}

/** Who did a control action, when and why. */
export interface ControlRecord {
  /** `pause`, `resume`, `promote`, `unfence`, `hold`, `accept-deletes`. */
  what: string;
  /** user@host (the replica's identity for `hold`). */
  by: string;
  /** RFC 3339. */
  at: string;
  reason: string;
  /** `hold`, `accept-deletes`: the primary revision the standby holds (decimal). */
  revision?: string;
}

export function encodeControlRecord(record: ControlRecord): Buffer {
  return Buffer.from(JSON.stringify(record));
}

export function decodeControlRecord(value: Buffer): ControlRecord {
  try {
    const parsed = JSON.parse(value.toString()) as Partial<ControlRecord>;
    const record: ControlRecord = { what: String(parsed.what ?? ''), by: String(parsed.by ?? 'unknown'), at: String(parsed.at ?? ''), reason: String(parsed.reason ?? '') };
    if (typeof parsed.revision === 'string' && /^\d+$/.test(parsed.revision)) record.revision = parsed.revision;
    return record;
  } catch {
    return { what: '', by: 'unknown', at: '', reason: '' };
  }
}

/** `by alice@host at 2026-12-06T23:00:00.000Z: planned switchover`. */
export function describeRecord(record: ControlRecord): string {
  return `by ${record.by}${record.at ? ` at ${record.at}` : ''}${record.reason ? `: ${record.reason}` : ''}`;
}

export interface ControlState {
  paused?: ControlRecord;
  fenced?: ControlRecord;
  /** The delete guard tripped: the standby holds at `held.revision`. */
  held?: ControlRecord;
  /** The operator accepted the held deletes; the next engine applies them. */
  acceptDeletes?: ControlRecord;
}

/** The toggles, in one read of the control prefix (every replica polls it every second). */
export async function readControl(standby: EtcdSide, keys: ControlKeys): Promise<ControlState> {
  const names = ['paused', 'fenced', 'held', 'acceptDeletes'] as const;
  const prefix = keys.paused.subarray(0, keys.paused.lastIndexOf('/') + 1);
  const { kvs } = await rangePage(standby, { key: prefix, rangeEnd: prefixEnd(prefix), limit: 0 });
  const state: ControlState = {};
  for (const kv of kvs) {
    const name = names.find((n) => kv.key.equals(keys[n]));
    if (name) state[name] = decodeControlRecord(kv.value);
  }
  return state;
}

/** What the leader publishes (`keys.status`), as `etcd-sync status` reads it. */
export interface LeaderStatus {
  identity: string;
  /** One of REPLICA_STATES. */
  state: string;
  appliedRevision: string;
  primaryRevision: string;
  lagRevisions: string;
  lagSeconds: number;
  primaryReachable: boolean;
  /** RFC 3339, or null when the primary never answered. */
  lastPrimaryContact: string | null;
  /** When it was published (RFC 3339). */
  at: string;
  /** While a full diff (initial sync, resync) runs: where it stands (progressFields). */
  progress?: Record<string, unknown>;
  /** While the standby holds before a mass delete (heldJson). */
  held?: Record<string, unknown>;
}

export async function readLeaderStatus(standby: EtcdSide, keys: ControlKeys): Promise<LeaderStatus | undefined> {
  const kv = await readKey(standby, keys.status);
  if (!kv) return undefined;
  try {
    return JSON.parse(kv.value.toString()) as LeaderStatus;
  } catch {
    return undefined;
  }
}

/**
 * The one state vocabulary of /status, etcd_sync_state and `etcd-sync status`: the engine's
 * states, then what a replica does around them; `no-leader` only in `etcd-sync status`.
 */
export const REPLICA_STATES = ['starting', 'replaying', 'initial-sync', 'resyncing', 'streaming', 'held', 'standby-unavailable', 'paused', 'fenced', 'follower', 'stopped'] as const;
export const STATUS_STATES = [...REPLICA_STATES, 'no-leader'] as const;
