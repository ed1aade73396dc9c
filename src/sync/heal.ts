/**
 * Self-healing: watches the standby's in-scope keys. When a synced key is deleted or changed
 * there by anyone but etcd-sync (the standby's garbage collector, a stray kubectl), the
 * primary's current version is put back after a delay that doubles per key while the key
 * keeps being changed, so a fight with a standby controller cannot spin.
 */
import type { Logger } from 'pino';
import { CompactedError, describeError } from '../errors.js';
import type { EtcdSide } from '../etcd/connection.js';
import { type WriteOp, getMany, readHeader } from '../etcd/kv.js';
import { WatchStream } from '../etcd/watch.js';
import type { Scope } from '../scope.js';
import { AbortedError, delay, withRetry } from './retry.js';
import type { StandbyWriter } from './writer.js';

export interface HealOptions {
  /** First wait before restoring a key. Default 1 s (--heal-delay). */
  delayMs: number;
  /** Longest wait between two restores of one key. Default 5 min. */
  maxDelayMs?: number;
  /** A key not restored for this long starts again from delayMs. Default 10 min. */
  forgetAfterMs?: number;
  /** Approximate payload bytes per restoring txn (--max-txn-bytes). */
  maxTxnBytes: number;
}

/** Past this many keys with heal state, quiet ones are forgotten. */
const KEYS_REMEMBERED = 10_000;

/**
 * Keys looked at and restored per step, one step at a time: a standby garbage collector that
 * deletes thousands of keys at once costs a few reads and txns per 100 keys, not three calls per
 * key all at once (10,000 keys deleted together ran etcd-sync out of its 192 MB heap that way).
 */
const HEAL_BATCH_KEYS = 100;

interface KeyState {
  key: Buffer;
  /** Restores so far in the current streak. */
  streak: number;
  lastHealAt: number;
  timer?: NodeJS.Timeout;
}

export class SelfHealer {
  /** Keys put back so far. */
  heals = 0;
  /**
   * Restores the primary's version at this revision instead of its latest: while the standby
   * holds before a mass delete, it stays the primary's image there (the burst's keys included).
   */
  atRevision: bigint | undefined;
  private readonly keys = new Map<string, KeyState>();
  /** Keys whose delay is over, waiting for the drain. */
  private readonly due = new Map<string, KeyState>();
  private draining = false;
  private signal: AbortSignal | undefined;
  /** forgetQuietKeys runs when there are more keys than this (doubling, so a flood costs linear time). */
  private forgetAbove = KEYS_REMEMBERED;
  private readonly maxDelayMs: number;
  private readonly forgetAfterMs: number;

  /** Keys with heal state: changed on the standby by someone else, within forgetAfterMs. */
  get trackedKeys(): number {
    return this.keys.size;
  }

  /** Keys changed on the standby by someone else and not looked at yet: waiting for their delay or their step. */
  get pendingKeys(): number {
    let waiting = this.due.size;
    for (const state of this.keys.values()) if (state.timer) waiting++;
    return waiting;
  }

  constructor(
    private readonly primary: EtcdSide,
    private readonly standby: EtcdSide,
    private readonly scope: Scope,
    private readonly writer: StandbyWriter,
    private readonly log: Logger,
    private readonly options: HealOptions,
    private readonly onHeal?: (key: Buffer) => void,
  ) {
    this.maxDelayMs = options.maxDelayMs ?? 5 * 60_000;
    this.forgetAfterMs = options.forgetAfterMs ?? 10 * 60_000;
  }

  /** Watches the standby from `fromRevision` until the signal aborts. */
  async run(fromRevision: bigint, signal: AbortSignal): Promise<void> {
    let next = fromRevision;
    this.signal = signal;
    const retry = <T>(what: string, fn: () => Promise<T>): Promise<T> => withRetry(what, fn, { log: this.log, signal });
    try {
      while (!signal.aborted) {
        const watch = await retry('watch standby', () => WatchStream.open(this.standby, { key: this.scope.keyPrefix, rangeEnd: this.scope.rangeEnd, startRevision: next }, signal));
        const onAbort = (): void => watch.close();
        signal.addEventListener('abort', onAbort, { once: true });
        try {
          for await (const message of watch.messages()) {
            if (message.kind !== 'events') continue;
            let foreign = message.events.filter((event) => !this.writer.isOwn(event.modRevision) && this.scope.inScope(event.key));
            // The standby's watch often shows a txn's change before the txn's answer reaches
            // etcd-sync (about three events in four, measured at 1,000 and 4,000 writes/s):
            // judge once every txn sent so far has been answered, once per message, rather than
            // give each such key heal state.
            if (foreign.length > 0) {
              await this.writer.settled();
              foreign = foreign.filter((event) => !this.writer.isOwn(event.modRevision));
            }
            for (const event of foreign) this.changed(event.key);
            const last = message.events[message.events.length - 1];
            if (last) next = last.modRevision + 1n;
          }
        } catch (err) {
          if (err instanceof CompactedError) {
            // Changes in the gap are left to the periodic check.
            next = (await retry('read standby revision', () => readHeader(this.standby))).revision + 1n;
            this.log.warn('self-heal: standby watch compacted, resuming from the current revision');
          } else if ((err as { retryable?: boolean }).retryable) {
            this.log.warn({ err: describeError(err) }, 'self-heal: standby watch broke, resuming');
            await delay(500, signal);
          } else {
            throw err;
          }
        } finally {
          signal.removeEventListener('abort', onAbort);
          watch.close();
        }
      }
    } catch (err) {
      if (!(err instanceof AbortedError)) throw err;
    } finally {
      for (const state of this.keys.values()) {
        clearTimeout(state.timer);
        state.timer = undefined;
      }
      // A step under way ends by itself (its writes retry only until the engine stops); not
      // awaited, so that a step retrying against an unreachable standby cannot hold run() up.
      this.due.clear();
    }
  }

  /** A change to a synced key by someone else than etcd-sync: restore it after the key's delay. */
  private changed(key: Buffer): void {
    if (this.keys.size > this.forgetAbove) {
      this.forgetQuietKeys();
      this.forgetAbove = Math.max(KEYS_REMEMBERED, 2 * this.keys.size);
    }
    const id = key.toString('latin1');
    let state = this.keys.get(id);
    if (!state) {
      // A copy: the event's key is a view into the whole watch message.
      state = { key: Buffer.from(key), streak: 0, lastHealAt: 0 };
      this.keys.set(id, state);
    }
    if (state.timer) return;
    if (Date.now() - state.lastHealAt > this.forgetAfterMs) state.streak = 0;
    const wait = Math.min(this.maxDelayMs, this.options.delayMs * 2 ** state.streak);
    const current = state;
    state.timer = setTimeout(() => {
      current.timer = undefined;
      this.due.set(id, current);
      if (!this.draining) {
        this.draining = true;
        // drain() catches every step's failure: it never rejects.
        void this.drain().finally(() => (this.draining = false));
      }
    }, wait);
    state.timer.unref();
  }

  /** Keys without a pending restore and quiet for forgetAfterMs need no state: their streak is over. */
  private forgetQuietKeys(): void {
    const now = Date.now();
    for (const [id, state] of this.keys) {
      if (!state.timer && !this.due.has(id) && now - state.lastHealAt > this.forgetAfterMs) this.keys.delete(id);
    }
  }

  private async drain(): Promise<void> {
    // Every key whose timer is due now joins the first step (node runs the drain's start
    // between two timers' callbacks otherwise).
    await new Promise<void>((resolve) => setImmediate(resolve));
    while (this.due.size > 0 && !this.signal?.aborted) {
      const batch = new Map<string, KeyState>();
      for (const [id, state] of this.due) {
        batch.set(id, state);
        this.due.delete(id);
        if (batch.size === HEAL_BATCH_KEYS) break;
      }
      try {
        await this.heal(batch);
      } catch (err) {
        if (err instanceof AbortedError) return;
        const first = batch.values().next().value?.key.toString();
        this.log.warn({ keys: batch.size, first, err: describeError(err) }, 'self-heal failed, will retry on the next change');
      }
    }
  }

  /** Puts back the primary's version of each key whose standby copy is missing or differs. */
  private async heal(batch: Map<string, KeyState>): Promise<void> {
    const keys = [...batch.values()].map((state) => state.key);
    // Read first: a standby copy modified after it (by the stream, say) is newer than the
    // primary's version read here, and the restore leaves it alone.
    const standbyRevision = (await readHeader(this.standby)).revision;
    const [p, s] = await Promise.all([getMany(this.primary, keys, this.writer.maxTxnOps, this.atRevision), getMany(this.standby, keys, this.writer.maxTxnOps)]);
    const restores: WriteOp[] = [];
    for (const id of batch.keys()) {
      const wanted = p.get(id);
      const copy = s.get(id);
      // Not a synced key (only the standby has it), or already equal again: nothing to restore.
      if (wanted && !(copy && copy.value.equals(wanted.value))) restores.push({ type: 'put', key: wanted.key, value: wanted.value, lease: wanted.lease });
    }
    for (const op of await this.writer.writeUnchangedSince(restores, standbyRevision, this.options.maxTxnBytes)) {
      const id = op.key.toString('latin1');
      const state = batch.get(id);
      if (!state) continue;
      this.heals++;
      state.streak++;
      state.lastHealAt = Date.now();
      this.onHeal?.(state.key);
      this.log.info({ key: state.key.toString(), was: s.has(id) ? 'changed' : 'deleted', streak: state.streak }, 'self-heal: restored key from the primary');
    }
  }
}
