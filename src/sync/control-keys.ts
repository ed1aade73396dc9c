/**
 * etcd-sync's own keys in the standby beside the checkpoint: the leader key, the pause and fence
 * toggles (each recording who set it, when and why), the last control action, and the status the
 * leader publishes for `etcd-sync status`. One module writes and reads them all.
 */
import path from 'node:path';
import type { EtcdSide } from '../etcd/connection.js';
import { readKey } from '../etcd/kv.js';

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
}

/** `/etcd-sync/checkpoint` → `/etcd-sync/leader`, `/etcd-sync/control/{paused,fenced,last}`, `/etcd-sync/status`. */
export function controlKeys(checkpointKey: Buffer): ControlKeys {
  const dir = path.posix.dirname(checkpointKey.toString());
  const at = (name: string): Buffer => Buffer.from(`${dir === '/' ? '' : dir}/${name}`);
  return { leader: at('leader'), paused: at('control/paused'), fenced: at('control/fenced'), last: at('control/last'), status: at('status'), unreplicable: at('unreplicable') };
}

/** Who did a control action, when and why. */
export interface ControlRecord {
  /** `pause`, `resume`, `promote`, `unfence`. */
  what: string;
  /** user@host. */
  by: string;
  /** RFC 3339. */
  at: string;
  reason: string;
}

export function encodeControlRecord(record: ControlRecord): Buffer {
  return Buffer.from(JSON.stringify(record));
}

export function decodeControlRecord(value: Buffer): ControlRecord {
  try {
    const parsed = JSON.parse(value.toString()) as Partial<ControlRecord>;
    return { what: String(parsed.what ?? ''), by: String(parsed.by ?? 'unknown'), at: String(parsed.at ?? ''), reason: String(parsed.reason ?? '') };
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
}

export async function readControl(standby: EtcdSide, keys: ControlKeys): Promise<ControlState> {
  const [paused, fenced] = await Promise.all([readKey(standby, keys.paused), readKey(standby, keys.fenced)]);
  return { ...(paused ? { paused: decodeControlRecord(paused.value) } : {}), ...(fenced ? { fenced: decodeControlRecord(fenced.value) } : {}) };
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
export const REPLICA_STATES = ['starting', 'replaying', 'initial-sync', 'resyncing', 'streaming', 'standby-unavailable', 'paused', 'fenced', 'follower', 'stopped'] as const;
export const STATUS_STATES = [...REPLICA_STATES, 'no-leader'] as const;
