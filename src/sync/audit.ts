/**
 * The consistency audit behind `etcd-sync check`, the periodic check of `run`, and repair.
 * Comparison and reporting are pure (src/diff); this module pins revisions and reads.
 */
import { CompactedError } from '../errors.js';
import type { EtcdSide } from '../etcd/connection.js';
import { type KeyValue, type WriteOp, getMany, readHeader, scanPages } from '../etcd/kv.js';
import { filterPages, mergeJoin } from '../diff/merge-join.js';
import { type CheckReport, FINDING_KINDS, type FindingKind, type UnreplicableFinding, isConsistent } from '../diff/report.js';
import { prefixEnd } from '../scope.js';
import { controlKeys } from './control-keys.js';
import type { Scope } from '../scope.js';
import { readCheckpoint } from './checkpoint.js';
import { type Retry, delay } from './retry.js';
import type { StandbyWriter } from './writer.js';

export interface AuditOptions {
  scope: Scope;
  checkpointKey: Buffer;
  pageSize: number;
  /** The etcds' --max-txn-ops: re-reads of findings go in txns of at most this many reads. */
  maxTxnOps: number;
  /** Latest-vs-latest mode waits this long, then re-checks each finding. */
  settleMs: number;
  retry: Retry;
  signal?: AbortSignal;
}

type Findings = Record<FindingKind, Buffer[]>;

/** How often a latest-against-latest comparison starts again after its revision was compacted mid-scan. */
const COMPACTED_ATTEMPTS = 5;

function emptyFindings(): Findings {
  return { missing: [], surplus: [], different: [] };
}

async function compareAt(
  primary: EtcdSide,
  standby: EtcdSide,
  primaryRevision: bigint,
  standbyRevision: bigint,
  options: AuditOptions,
): Promise<{ findings: Findings; inScope: number }> {
  const range = { key: options.scope.keyPrefix, rangeEnd: options.scope.rangeEnd, pageSize: options.pageSize };
  const inScope = (kv: KeyValue): boolean => options.scope.inScope(kv.key);
  const primaryPages = filterPages(scanPages(primary, { ...range, revision: primaryRevision }, options.retry), inScope);
  const standbyPages = filterPages(scanPages(standby, { ...range, revision: standbyRevision }, options.retry), inScope);
  const findings = emptyFindings();
  let count = 0;
  for await (const batch of mergeJoin(primaryPages, standbyPages, (p, s) => p.value.equals(s.value))) {
    for (const finding of batch) {
      if (finding.kind !== 'surplus') count++;
      // Keys are copied: a read key is a view into its whole reply, values included.
      if (finding.kind === 'missing') findings.missing.push(Buffer.from(finding.primary.key));
      else if (finding.kind === 'different') findings.different.push(Buffer.from(finding.primary.key));
      else if (finding.kind === 'surplus') findings.surplus.push(Buffer.from(finding.standby.key));
    }
  }
  return { findings, inScope: count };
}

/** Re-reads every finding on both sides now, keeping only what still differs (with its kind now). */
async function recheck(primary: EtcdSide, standby: EtcdSide, findings: Findings, options: AuditOptions): Promise<Findings> {
  const keys = FINDING_KINDS.flatMap((kind) => findings[kind]);
  const [p, s] = await Promise.all([
    options.retry('re-read primary', () => getMany(primary, keys, options.maxTxnOps)),
    options.retry('re-read standby', () => getMany(standby, keys, options.maxTxnOps)),
  ]);
  const out = emptyFindings();
  for (const key of keys) {
    const id = key.toString('latin1');
    const pk = p.get(id);
    const sk = s.get(id);
    if (pk && !sk) out.missing.push(key);
    else if (!pk && sk) out.surplus.push(key);
    else if (pk && sk && !pk.value.equals(sk.value)) out.different.push(key);
  }
  for (const kind of FINDING_KINDS) out[kind].sort(Buffer.compare);
  return out;
}

/**
 * Compares the in-scope keys of both sides. Exact when the standby's checkpoint C is still in
 * the primary's history: every txn of etcd-sync carries the checkpoint, so the standby at the
 * revision where the checkpoint read C holds exactly the primary's writes up to C. Otherwise
 * latest against latest, and every finding is re-checked after a settle delay so that writes
 * that were only in flight drop out.
 */
/**
 * Moves the missing and different keys that etcd-sync recorded as unreplicable (the standby
 * refused them even alone) into their own kind, with the recorded size and reason.
 */
async function classifyUnreplicable(standby: EtcdSide, findings: Findings, options: AuditOptions): Promise<{ findings: Findings; unreplicable: UnreplicableFinding[] }> {
  const prefix = controlKeys(options.checkpointKey).unreplicable;
  const records = new Map<string, { bytes: number; reason: string }>();
  for await (const page of scanPages(standby, { key: prefix, rangeEnd: prefixEnd(prefix), pageSize: options.pageSize }, options.retry)) {
    for (const kv of page) {
      try {
        const record = JSON.parse(kv.value.toString()) as { bytes?: number; reason?: string };
        records.set(kv.key.subarray(prefix.length).toString('latin1'), { bytes: Number(record.bytes ?? 0), reason: String(record.reason ?? '') });
      } catch {
        // Not a record of etcd-sync's: ignored.
      }
    }
  }
  if (records.size === 0) return { findings, unreplicable: [] };
  const unreplicable: UnreplicableFinding[] = [];
  const keep = (key: Buffer): boolean => {
    const record = records.get(key.toString('latin1'));
    if (record === undefined) return true;
    unreplicable.push({ key, ...record });
    return false;
  };
  const out = { ...findings, missing: findings.missing.filter(keep), different: findings.different.filter(keep) };
  unreplicable.sort((a, b) => Buffer.compare(a.key, b.key));
  return { findings: out, unreplicable };
}

/** The primary's revision as the check ends: what the standby is behind by is measured against it. */
async function primaryNow(primary: EtcdSide, options: AuditOptions): Promise<bigint> {
  return (await options.retry('read primary revision', () => readHeader(primary))).revision;
}

export async function audit(primary: EtcdSide, standby: EtcdSide, options: AuditOptions): Promise<CheckReport> {
  // The checkpoint first: the primary's revision read after it is never below it while a sync runs.
  const stored = await options.retry('read checkpoint', () => readCheckpoint(standby, options.checkpointKey));
  const primaryHeader = await options.retry('read primary revision', () => readHeader(primary));
  const checkpoint = stored.checkpoint;
  if (checkpoint && checkpoint.primaryClusterId === primaryHeader.clusterId && checkpoint.revision <= primaryHeader.revision) {
    try {
      const compared = await compareAt(primary, standby, checkpoint.revision, stored.standbyRevision, options);
      const { inScope } = compared;
      const { findings, unreplicable } = await classifyUnreplicable(standby, compared.findings, options);
      return {
        consistent: isConsistent(findings) && unreplicable.length === 0,
        unreplicable,
        comparedAtRevision: checkpoint.revision,
        primaryRevision: await primaryNow(primary, options),
        standbyRevision: stored.standbyRevision,
        mode: 'checkpoint',
        inScope,
        findings,
        checkedAt: Date.now(),
      };
    } catch (err) {
      if (!(err instanceof CompactedError)) throw err;
    }
  }
  // Latest against latest; a compaction of the revision mid-scan starts it again at a newer one.
  let latest = primaryHeader;
  let standbyHeader = await options.retry('read standby revision', () => readHeader(standby));
  let first: Awaited<ReturnType<typeof compareAt>> | undefined;
  for (let attempt = 1; first === undefined; attempt++) {
    try {
      first = await compareAt(primary, standby, latest.revision, standbyHeader.revision, options);
    } catch (err) {
      if (!(err instanceof CompactedError) || attempt >= COMPACTED_ATTEMPTS) throw err;
      [latest, standbyHeader] = await Promise.all([
        options.retry('read primary revision', () => readHeader(primary)),
        options.retry('read standby revision', () => readHeader(standby)),
      ]);
    }
  }
  let settled = first.findings;
  if (!isConsistent(settled)) {
    await delay(options.settleMs, options.signal);
    settled = await recheck(primary, standby, settled, options);
  }
  const { findings, unreplicable } = await classifyUnreplicable(standby, settled, options);
  return {
    consistent: isConsistent(findings) && unreplicable.length === 0,
    unreplicable,
    comparedAtRevision: latest.revision,
    primaryRevision: await primaryNow(primary, options),
    standbyRevision: standbyHeader.revision,
    mode: 'settled',
    inScope: first.inScope,
    findings,
    checkedAt: Date.now(),
  };
}

export interface RepairPlan {
  put: Buffer[];
  delete: Buffer[];
  /** The primary revision whose values are written; undefined = the primary's current values. */
  primaryRevision?: bigint;
  /** Only standby copies not modified after this revision are touched; undefined = the standby's revision when the repair starts. */
  standbyRevision?: bigint;
}

/**
 * What a repair of this report writes. At the checkpoint it writes the primary's values as of
 * the checkpoint, so the standby stays the exact image of the primary at C that the running
 * sync continues from; otherwise the primary's current values.
 */
export function repairPlan(report: CheckReport, prune: boolean): RepairPlan {
  return {
    // Unreplicable keys too: a value that fits by now heals; one that does not is recorded again.
    put: [...report.findings.missing, ...report.findings.different, ...report.unreplicable.map((u) => u.key)],
    delete: prune ? [...report.findings.surplus] : [],
    ...(report.mode === 'checkpoint' ? { primaryRevision: report.comparedAtRevision, standbyRevision: report.standbyRevision } : {}),
  };
}

/** Keys read from the primary per step of a repair: bounds the values held at once. */
const REPAIR_READ_KEYS = 1_000;

/**
 * Puts the primary's version of each key to put, and deletes each key to delete that is absent
 * on the primary, each only if the standby's copy was not modified after the compared standby
 * revision: a key the running sync (or anyone) changed since is newer, and left alone.
 */
export async function repair(
  primary: EtcdSide,
  standby: EtcdSide,
  writer: StandbyWriter,
  plan: RepairPlan,
  retry: AuditOptions['retry'],
  maxTxnBytes: number,
): Promise<{ put: number; deleted: number }> {
  const standbyRevision = plan.standbyRevision ?? (await retry('read standby revision', () => readHeader(standby))).revision;
  /** Reads the keys' primary versions a step at a time and writes the ops built from them; returns how many were written. */
  const inSteps = async (keys: readonly Buffer[], toOps: (step: Buffer[], onPrimary: Map<string, KeyValue>) => WriteOp[]): Promise<number> => {
    let written = 0;
    for (let i = 0; i < keys.length; i += REPAIR_READ_KEYS) {
      const step = keys.slice(i, i + REPAIR_READ_KEYS);
      const onPrimary = await retry('read primary', () => getMany(primary, step, writer.maxTxnOps, plan.primaryRevision));
      written += (await writer.writeUnchangedSince(toOps(step, onPrimary), standbyRevision, maxTxnBytes)).length;
    }
    return written;
  };
  const put = await inSteps(plan.put, (step, onPrimary) =>
    step.flatMap((key): WriteOp[] => {
      const kv = onPrimary.get(key.toString('latin1'));
      return kv ? [{ type: 'put', key: kv.key, value: kv.value, lease: kv.lease }] : [];
    }),
  );
  const deleted = await inSteps(plan.delete, (step, onPrimary) => step.filter((key) => !onPrimary.has(key.toString('latin1'))).map((key): WriteOp => ({ type: 'delete', key })));
  return { put, deleted };
}
