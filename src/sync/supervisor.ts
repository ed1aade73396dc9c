/**
 * High availability: several replicas run, one leads. Leadership is an etcd lease plus an
 * election key in the standby, under etcd-sync's own prefix. Every write carries a comparison on
 * the election key (fencing), so a deposed leader's writes fail atomically; a leader that cannot
 * renew its lease stops writing before the lease can expire. Pause and the promote fence are keys
 * beside it, so all replicas see one toggle.
 */
import path from 'node:path';
import type { Logger } from 'pino';
import { FencedError, describeError } from '../errors.js';
import type { EtcdSide } from '../etcd/connection.js';
import { type Compare, readKey, txn } from '../etcd/kv.js';
import { leaseGrant, leaseKeepAliveOnce, leaseRevoke } from '../etcd/lease.js';
import { AbortedError, delay, retrier } from './retry.js';
import type { SyncEngine } from './engine.js';
import type { Fence } from './writer.js';

export interface ControlKeys {
  leader: Buffer;
  paused: Buffer;
  fenced: Buffer;
}

/** `/etcd-sync/checkpoint` → `/etcd-sync/leader`, `/etcd-sync/control/paused`, `/etcd-sync/control/fenced`. */
export function controlKeys(checkpointKey: Buffer): ControlKeys {
  const dir = path.posix.dirname(checkpointKey.toString());
  const at = (name: string): Buffer => Buffer.from(`${dir === '/' ? '' : dir}/${name}`);
  return { leader: at('leader'), paused: at('control/paused'), fenced: at('control/fenced') };
}

export type Role = 'leader' | 'follower';

export interface ControlState {
  paused: boolean;
  fenced: boolean;
}

export async function readControl(standby: EtcdSide, keys: ControlKeys): Promise<ControlState> {
  const [paused, fenced] = await Promise.all([readKey(standby, keys.paused), readKey(standby, keys.fenced)]);
  return { paused: paused !== undefined, fenced: fenced !== undefined };
}

export interface SupervisorOptions {
  identity: string;
  keys: ControlKeys;
  /** Lease TTL in seconds; a dead leader is replaced within it. */
  leaseTtlSeconds: number;
  /** How often followers look for a free leadership and the leader for pause/fence. */
  pollMs: number;
}

export class Supervisor {
  role: Role = 'follower';
  engine: SyncEngine | undefined;
  /** What this replica does; 'engine' defers to the running engine's own state. */
  private phase: 'follower' | 'paused' | 'fenced' | 'engine' | 'stopped' = 'follower';

  /** 'follower', 'paused', 'fenced', 'stopped', or the running engine's state. */
  get state(): string {
    return this.phase === 'engine' && this.engine ? this.engine.state : this.phase;
  }
  private readonly ttl: number;
  private readonly pollMs: number;

  constructor(
    private readonly standby: EtcdSide,
    private readonly options: SupervisorOptions,
    /** A new engine for each term, writing behind the given fence. */
    private readonly newEngine: (fence: Fence) => SyncEngine,
    private readonly log: Logger,
  ) {
    this.ttl = options.leaseTtlSeconds;
    this.pollMs = options.pollMs;
  }

  private retry<T>(what: string, fn: () => Promise<T>, signal: AbortSignal): Promise<T> {
    return retrier({ log: this.log, signal, maxDelayMs: 2_000 })(what, fn);
  }

  async run(signal: AbortSignal): Promise<void> {
    try {
      while (!signal.aborted) {
        const control = await this.retry('read control keys', () => readControl(this.standby, this.options.keys), signal);
        if (control.fenced) {
          this.phase = 'fenced';
          await delay(this.pollMs, signal);
          continue;
        }
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
    if (await this.retry('read leader', () => readKey(this.standby, this.options.keys.leader), signal)) {
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
    try {
      // One term, several phases: each ends when the pause/fence toggle changes.
      while (!stepDown.signal.aborted && !lost) {
        const control = await this.retry('read control keys', () => readControl(this.standby, this.options.keys), stepDown.signal);
        if (control.fenced) {
          this.phase = 'fenced';
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
            this.log.info('paused: not applying; keeping the place in the primary history');
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
      this.role = 'follower';
      if (this.phase !== 'fenced') this.phase = 'follower';
      if (lost) this.log.warn({ identity: this.options.identity, reason: lost }, 'lost leadership');
      // Hand over at once instead of letting the lease run out (harmless if it is gone already).
      await leaseRevoke(this.standby, term.lease).catch(() => undefined);
      if (signal.aborted) this.log.info({ identity: this.options.identity }, 'released leadership');
    }
  }

  private async runEngine(term: { createRevision: bigint }, signal: AbortSignal): Promise<void> {
    this.engine = this.newEngine(this.fence(term));
    this.phase = 'engine';
    await this.engine.run(signal);
  }

  /** Ends the phase when the pause or fence toggle differs from what the phase started with. */
  private async watchControl(started: ControlState, phase: AbortController): Promise<void> {
    while (await delay(this.pollMs, phase.signal)) {
      try {
        const now = await readControl(this.standby, this.options.keys);
        if (now.paused !== started.paused || now.fenced !== started.fenced) {
          phase.abort();
          return;
        }
      } catch {
        // An unreachable standby: the lease keep-alive decides about leadership.
      }
    }
  }
}
