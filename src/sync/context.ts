/**
 * What the engine's steps (full diff, replay, stream, periodic check) share: the two sides, the
 * scope, the writer and the checkpoint chain, the engine's options and its abort signal. The
 * engine is one; tests can drive a step with a context of their own.
 */
import type { DeleteGuard, DeleteGuardRule, HeldState } from './delete-guard.js';
import type { Logger } from 'pino';
import type { EtcdSide } from '../etcd/connection.js';
import type { Scope } from '../scope.js';
import type { CheckpointChain } from './checkpoint.js';
import type { LeaseMapper } from './leases.js';
import type { PrimaryMonitor } from './primary-monitor.js';
import type { Retry } from './retry.js';
import type { StandbyWriter, WriterHooks } from './writer.js';

/**
 * The engine's settings. Every field is given by the caller: the flags' defaults are written
 * once, in src/cli/options.ts, and the tuning below the flags in SYNC_TUNING there.
 */
export interface SyncOptions {
  scope: Scope;
  /** Where the last applied primary revision is recorded, outside the synced prefix. */
  checkpointKey: Buffer;
  /** The standby etcd's --max-txn-ops, applied per level of a txn (see txnCapacity). */
  maxTxnOps: number;
  /** Approximate payload per txn. */
  maxTxnBytes: number;
  /** Txns in flight during a full diff (order does not matter there). */
  writeConcurrency: number;
  /** Most keys per range page; halved automatically for pages too large to receive. */
  pageSize: number;
  /** Revisions per window when a restart replays a long gap over parallel watches. */
  replayWindowRevisions: number;
  /** Replay windows fetched at once. */
  replayWindows: number;
  /** Streaming txns in flight, each guarded to apply only right after the one before it. */
  streamTxnsInFlight: number;
  /** Delete in-scope keys only the standby has; otherwise they are logged and counted. */
  prune: boolean;
  /** How often a long diff logs its progress. */
  progressIntervalMs: number;
  /** After this long without events, ask etcd for a progress notification: the checkpoint advances, and a live stream answers. */
  idleProgressMs: number;
  /** A primary (or its watch) silent for this long is unreachable: the watch reconnects, to the next endpoint. */
  primaryTimeoutMs: number;
  /** Periodic check and repair of missing and different keys (surplus too with prune); 0 = off. */
  checkIntervalMs: number;
  /** The periodic check's settle delay (see AuditOptions.settleMs). */
  settleMs: number;
  /** First wait before restoring a synced key changed on the standby; negative = self-healing off. */
  healDelayMs: number;
  /** Called for every key-value put into the standby, and with each write txn's duration. */
  writerHooks?: WriterHooks;
  /** This replica, recorded in the held control key. */
  identity: string;
  /** Hold before a mass delete on the primary; undefined: off. */
  deleteGuard: DeleteGuardRule | undefined;
}

export interface SyncContext {
  readonly primary: EtcdSide;
  readonly standby: EtcdSide;
  readonly scope: Scope;
  readonly options: SyncOptions;
  readonly log: Logger;
  readonly writer: StandbyWriter;
  readonly leases: LeaseMapper;
  readonly checkpoint: CheckpointChain;
  /** Aborts when the engine stops. */
  readonly signal: AbortSignal;
  /** Retries while an etcd is unreachable, until the signal aborts. */
  readonly retry: Retry;
  /** What is known of the primary: its revision, its last answer, the lag. */
  readonly monitor: PrimaryMonitor;
  /** The primary answered with `revision`; without one, the applied revision moved. */
  notePrimary(revision?: bigint): void;
  /** Counts the primary's deletes; undefined when --delete-guard is off. */
  readonly guard: DeleteGuard | undefined;
  /** Set while the standby holds before a mass delete: nothing repairs it then. */
  readonly held: HeldState | undefined;
}
