/**
 * Keys attached to a lease on the primary (Kubernetes events, for one) get a lease on the
 * standby with the primary's remaining TTL, kept alive only while the primary's lease lives,
 * so no copy becomes immortal. The mapping is stored on the standby under etcd-sync's own
 * prefix, attached to the standby lease itself: it disappears with the lease, and a restart
 * picks up the live ones.
 */
import type { Logger } from 'pino';
import { describeError } from '../errors.js';
import type { EtcdSide } from '../etcd/connection.js';
import { scanPages, txn } from '../etcd/kv.js';
import { leaseGrant, leaseKeepAliveOnce, leaseRevoke, leaseTimeToLive } from '../etcd/lease.js';
import { prefixEnd } from '../scope.js';

/** Where the lease mappings live: beside the checkpoint, outside the synced prefix. */
export function leaseKeyPrefix(checkpointKey: Buffer): Buffer {
  return Buffer.concat([checkpointKey, Buffer.from('/leases/')]);
}

interface Mapping {
  standbyId: string;
  grantedTtl: number;
  /** When the standby lease was last granted or kept alive (ms since epoch). */
  renewedAt: number;
  timer?: NodeJS.Timeout;
}

export class LeaseMapper {
  private readonly mappings = new Map<string, Mapping>();
  private readonly pending = new Map<string, Promise<string>>();
  private stopped = false;

  constructor(
    private readonly primary: EtcdSide,
    private readonly standby: EtcdSide,
    /** e.g. `/etcd-sync/leases/` */
    private readonly keyPrefix: Buffer,
    private readonly log: Logger,
  ) {}

  /** Loads the mappings of leases still alive on the standby. */
  async load(): Promise<void> {
    // A mapping is a few dozen bytes: pages of up to 10,000 keys stay well under a page's bytes.
    const range = { key: this.keyPrefix, rangeEnd: prefixEnd(this.keyPrefix), pageSize: 10_000 };
    for await (const page of scanPages(this.standby, range, (_what, read) => read())) {
      for (const kv of page) {
        const primaryId = kv.key.subarray(this.keyPrefix.length).toString();
        try {
          const saved = JSON.parse(kv.value.toString()) as { standbyId: string; grantedTtl: number };
          const left = await leaseTimeToLive(this.standby, saved.standbyId);
          if (left.ttl <= 0) continue;
          this.track(primaryId, {
            standbyId: saved.standbyId,
            grantedTtl: saved.grantedTtl,
            renewedAt: Date.now() - (saved.grantedTtl - left.ttl) * 1000,
          });
        } catch (err) {
          this.log.warn({ primaryLease: primaryId, err: describeError(err) }, 'ignoring unreadable lease mapping');
        }
      }
    }
    if (this.mappings.size > 0) this.log.info({ leases: this.mappings.size }, 'loaded lease mappings');
  }

  /** The standby lease currently mapped to a primary lease, if any (for comparisons). */
  current(primaryId: string): string | undefined {
    return this.mappings.get(primaryId)?.standbyId;
  }

  get size(): number {
    return this.mappings.size;
  }

  /** The standby lease for a primary lease, granting one with the primary's remaining TTL. */
  standbyLeaseFor(primaryId: string): Promise<string> {
    const known = this.mappings.get(primaryId);
    if (known) return Promise.resolve(known.standbyId);
    let granting = this.pending.get(primaryId);
    if (!granting) {
      granting = this.grant(primaryId).finally(() => this.pending.delete(primaryId));
      this.pending.set(primaryId, granting);
    }
    return granting;
  }

  private async grant(primaryId: string): Promise<string> {
    const remaining = await leaseTimeToLive(this.primary, primaryId);
    // A lease already gone on the primary: its keys' deletes are on their way; live briefly.
    const granted = await leaseGrant(this.standby, Math.max(1, remaining.ttl));
    const standbyId = granted.id;
    const ttl = granted.ttl;
    const mapping: Mapping = { standbyId, grantedTtl: ttl, renewedAt: Date.now() };
    await txn(this.standby, [
      {
        type: 'put',
        key: Buffer.concat([this.keyPrefix, Buffer.from(primaryId)]),
        value: Buffer.from(JSON.stringify({ standbyId, grantedTtl: ttl })),
        lease: standbyId,
      },
    ]);
    this.track(primaryId, mapping);
    this.log.debug({ primaryLease: primaryId, standbyLease: standbyId, ttl }, 'mapped lease');
    return standbyId;
  }

  private track(primaryId: string, mapping: Mapping): void {
    this.mappings.set(primaryId, mapping);
    this.schedule(primaryId, mapping);
  }

  private schedule(primaryId: string, mapping: Mapping): void {
    if (this.stopped) return;
    // Look again when half of the copy's time is left, so a keep-alive is never late.
    const leftMs = mapping.grantedTtl * 1000 - (Date.now() - mapping.renewedAt);
    const intervalMs = Math.min(60_000, Math.max(250, leftMs / 2));
    mapping.timer = setTimeout(() => void this.refresh(primaryId, mapping), intervalMs);
    mapping.timer.unref();
  }

  /**
   * Follows the primary's lease: revoke the copy when the primary's is gone, keep it alive
   * when the primary's would outlive it, otherwise let it run down with the primary's.
   */
  private async refresh(primaryId: string, mapping: Mapping): Promise<void> {
    if (this.stopped || this.mappings.get(primaryId) !== mapping) return;
    try {
      const primaryLeft = await leaseTimeToLive(this.primary, primaryId);
      if (primaryLeft.ttl <= 0) {
        await leaseRevoke(this.standby, mapping.standbyId);
        this.mappings.delete(primaryId);
        this.log.debug({ primaryLease: primaryId, standbyLease: mapping.standbyId }, 'primary lease gone, revoked copy');
        return;
      }
      const standbyLeft = mapping.grantedTtl - (Date.now() - mapping.renewedAt) / 1000;
      // etcd floors TTLs to whole seconds: the primary's may have up to 1 s more than it says.
      if (primaryLeft.ttl + 1 > standbyLeft) {
        const ttl = await leaseKeepAliveOnce(this.standby, mapping.standbyId);
        if (ttl <= 0) {
          // Expired on the standby already (etcd-sync was away): its keys are gone; forget it
          // so that the next write of those keys grants a fresh lease.
          this.mappings.delete(primaryId);
          return;
        }
        mapping.renewedAt = Date.now();
      }
    } catch (err) {
      this.log.warn({ primaryLease: primaryId, err: describeError(err) }, 'lease refresh failed, will retry');
    }
    this.schedule(primaryId, mapping);
  }

  stop(): void {
    this.stopped = true;
    for (const mapping of this.mappings.values()) clearTimeout(mapping.timer);
  }
}
