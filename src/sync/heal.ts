/**
 * Self-healing: watches the standby's in-scope keys. When a synced key is deleted or changed
 * there by anyone but etcd-sync (the standby's garbage collector, a stray kubectl), the
 * primary's current version is put back after a delay that doubles per key while the key
 * keeps being changed, so a fight with a standby controller cannot spin.
 */
import type { Logger } from 'pino';
import { CompactedError, describeError } from '../errors.js';
import type { EtcdSide } from '../etcd/connection.js';
import { type Compare, getMany, readHeader } from '../etcd/kv.js';
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
}

/** Past this many keys with heal state, quiet ones are forgotten. */
const KEYS_REMEMBERED = 10_000;

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
  private readonly keys = new Map<string, KeyState>();
  private readonly maxDelayMs: number;
  private readonly forgetAfterMs: number;

  /** Keys with heal state: changed on the standby by someone else, within forgetAfterMs. */
  get trackedKeys(): number {
    return this.keys.size;
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
      for (const state of this.keys.values()) clearTimeout(state.timer);
    }
  }

  /** A change to a synced key by someone else than etcd-sync: restore it after the key's delay. */
  private changed(key: Buffer): void {
    if (this.keys.size > KEYS_REMEMBERED) this.forgetQuietKeys();
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
    state.timer = setTimeout(() => void this.heal(id, current), wait);
    state.timer.unref();
  }

  /** Keys without a pending restore and quiet for forgetAfterMs need no state: their streak is over. */
  private forgetQuietKeys(): void {
    const now = Date.now();
    for (const [id, state] of this.keys) {
      if (!state.timer && now - state.lastHealAt > this.forgetAfterMs) this.keys.delete(id);
    }
  }

  private async heal(id: string, state: KeyState): Promise<void> {
    state.timer = undefined;
    try {
      const [p, s] = await Promise.all([getMany(this.primary, [state.key]), getMany(this.standby, [state.key])]);
      const wanted = p.get(id);
      const copy = s.get(id);
      // Not a synced key (only the standby has it), or already equal again: nothing to restore.
      if (!wanted || (copy && copy.value.equals(wanted.value))) return;
      // Only over the standby's version just read: a newer one streamed meanwhile must not be
      // replaced by this older read of the primary.
      const unchanged: Compare = copy
        ? { key: state.key, target: 'Mod', result: 'Equal', version: copy.modRevision }
        : { key: state.key, target: 'Version', result: 'Equal', version: 0n };
      const restored = await this.writer.write([{ type: 'put', key: wanted.key, value: wanted.value, lease: wanted.lease }], [], [unchanged]);
      if (!restored) return;
      this.heals++;
      state.streak++;
      state.lastHealAt = Date.now();
      this.onHeal?.(state.key);
      this.log.info({ key: state.key.toString(), was: copy ? 'changed' : 'deleted', streak: state.streak }, 'self-heal: restored key from the primary');
    } catch (err) {
      this.log.warn({ key: state.key.toString(), err: describeError(err) }, 'self-heal failed, will retry on the next change');
    }
  }
}
