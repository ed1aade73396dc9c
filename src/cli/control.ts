/**
 * `etcd-sync pause | resume | promote | unfence | status`: one audited toggle in the standby etcd
 * for all replicas, the failover decision, and what the standby knows.
 */
import type { Logger } from 'pino';
import { ConfigError, EtcdSyncError, describeError } from '../errors.js';
import { EtcdSide } from '../etcd/connection.js';
import { type Header, type WriteOp, readHeader, readKey, txn } from '../etcd/kv.js';
import { Scope } from '../scope.js';
import { audit } from '../sync/audit.js';
import { type Checkpoint, readCheckpoint } from '../sync/checkpoint.js';
import {
  type ControlKeys,
  type ControlRecord,
  type ControlState,
  type LeaderStatus,
  controlKeys,
  decodeControlRecord,
  describeRecord,
  encodeControlRecord,
  readControl,
  readLeaderStatus,
} from '../sync/control-keys.js';
import { withDeadline } from '../sync/primary-monitor.js';
import { ONE_SHOT_RETRY, type Retry, delay, retrier } from '../sync/retry.js';
import type { ControlConfig } from './options/control.js';

export interface ControlIo {
  log: Logger;
  out(text: string): void;
  /** Who runs the command, recorded with the toggle (user@host). */
  actor: string;
}

/** How often promote looks whether the standby has caught up with a primary that stopped. */
const PROMOTE_POLL_MS = 1_000;
/** A leader status older than this many publish intervals is stale (the leader may be gone). */
const STALE_STATUS_MS = 20_000;

/**
 * What a toggle or promote tells the operator: text lines, or with --output json one object
 * {command, outcome, exitCode, messages, record?}. `outcome` is one word a script can branch on.
 */
class Outcome {
  readonly messages: string[] = [];
  outcome = '';
  record: ControlRecord | undefined;

  say(line: string): void {
    this.messages.push(line);
  }

  /** Sets the outcome word and says why; returns the exit code. */
  end(outcome: string, line: string, exitCode: number, record?: ControlRecord): number {
    this.outcome = outcome;
    this.say(line);
    this.record = record;
    return exitCode;
  }
}

export async function runControl(config: ControlConfig, io: ControlIo): Promise<number> {
  const standby = new EtcdSide(config.standby);
  const primary = config.primary ? new EtcdSide(config.primary) : undefined;
  const keys = controlKeys(config.checkpointKey);
  const retry = retrier({ log: io.log, ...ONE_SHOT_RETRY });
  const record = (what: string): ControlRecord => ({ what, by: io.actor, at: new Date().toISOString(), reason: config.reason });
  const result = new Outcome();
  try {
    let code: number;
    switch (config.command) {
      case 'pause': {
        const r = record('pause');
        await retry('pause', () => txn(standby, [put(keys.paused, r), put(keys.last, r)]));
        code = result.end('paused', `paused ${describeRecord(r)}: the leader stops applying and keeps its place in the primary history (etcd-sync resume to continue)`, 0, r);
        break;
      }
      case 'resume': {
        const control = await retry('read control keys', () => readControl(standby, keys));
        if (control.held && config.acceptDeletes) {
          const r = { ...record('accept-deletes'), ...(control.held.revision ? { revision: control.held.revision } : {}) };
          // The leader ends its hold when the held key goes; the next engine finds the accept record.
          await retry('resume', () => txn(standby, [{ type: 'delete', key: keys.held }, { type: 'delete', key: keys.paused }, put(keys.acceptDeletes, r), put(keys.last, r)]));
          code = result.end(
            'accepted-deletes',
            `accepted the held deletes ${describeRecord(r)} (held at primary revision ${control.held.revision ?? '?'}: ${control.held.reason}): the leader applies them and goes on streaming`,
            0,
            r,
          );
          break;
        }
        if (config.acceptDeletes) result.say('resume --accept-deletes: nothing to accept: the standby is not held');
        if (!control.paused && control.held) {
          code = result.end('held', `resume: refused: the standby is held before a mass delete at primary revision ${control.held.revision ?? '?'} (${control.held.reason}); etcd-sync resume --accept-deletes applies the deletes, etcd-sync promote promotes the image before them`, 1);
          break;
        }
        const r = record('resume');
        await retry('resume', () => txn(standby, [{ type: 'delete', key: keys.paused }, put(keys.last, r)]));
        const stillHeld = control.held ? `; still held before a mass delete at primary revision ${control.held.revision ?? '?'}: resume --accept-deletes or promote` : '';
        code = result.end('resumed', `resumed ${describeRecord(r)}${stillHeld}`, 0, r);
        break;
      }
      case 'unfence': {
        const fenced = await retry('read the fence', () => readKey(standby, keys.fenced));
        if (!fenced) {
          code = result.end('not-fenced', 'unfence: nothing to do: this etcd is not fenced', 0);
          break;
        }
        const r = record('unfence');
        await retry('unfence', () => txn(standby, [{ type: 'delete', key: keys.fenced }, put(keys.last, r)]));
        code = result.end('unfenced', `unfenced ${describeRecord(r)} (was fenced ${describeRecord(decodeControlRecord(fenced.value))}): etcd-sync replicas may write into this etcd again`, 0, r);
        break;
      }
      case 'promote':
        code = await promote(config, result, standby, primary, keys, retry, record('promote'));
        break;
      case 'status':
        return await status(config, io, standby, primary, keys, retry);
      default:
        throw new ConfigError(`unknown control command ${String(config.command satisfies never)}`);
    }
    if (config.output === 'json') {
      io.out(`${JSON.stringify({ command: config.command, outcome: result.outcome, exitCode: code, messages: result.messages, ...(result.record ? { record: result.record } : {}) })}\n`);
    } else io.out(result.messages.map((line) => `${line}\n`).join(''));
    return code;
  } catch (err) {
    if (err instanceof EtcdSyncError && err.exitCode !== 2) throw new ConfigError(`could not ${config.command}: ${describeError(err)}`);
    throw err;
  } finally {
    standby.close();
    primary?.close();
  }
}

function put(key: Buffer, record: ControlRecord): WriteOp {
  return { type: 'put', key, value: encodeControlRecord(record) };
}

/** `12 s ago`, `3 min ago`, `2.5 h ago`. */
function age(isoTime: string | undefined, now = Date.now()): string {
  if (!isoTime) return 'at an unknown time';
  const ms = now - Date.parse(isoTime);
  if (!Number.isFinite(ms)) return 'at an unknown time';
  if (ms < 120_000) return `${Math.max(0, Math.round(ms / 1000))} s ago`;
  if (ms < 2 * 3_600_000) return `${Math.round(ms / 60_000)} min ago`;
  return `${Math.round(ms / 360_000) / 10} h ago`;
}

function describeCheckpoint(checkpoint: Checkpoint | undefined): string {
  if (!checkpoint) return 'none (no primary revision recorded in the standby)';
  return `primary revision ${checkpoint.revision}, as the primary was at ${checkpoint.at ?? 'an unknown time'} (${age(checkpoint.at)})`;
}

/** The primary's header, or why it could not be read, within --primary-timeout. */
async function readPrimary(primary: EtcdSide, timeoutMs: number): Promise<{ header?: Header; error?: string }> {
  try {
    return { header: await withDeadline(`${primary.name} etcd`, timeoutMs, readHeader(primary)) };
  } catch (err) {
    if (err instanceof EtcdSyncError && err.exitCode === 2) throw err;
    return { error: describeError(err) };
  }
}

function sameCluster(primary: Header, standby: Header): ConfigError {
  return new ConfigError(`primary and standby are the same etcd cluster (cluster ID ${BigInt(primary.clusterId).toString(16)}): check --primary-endpoints`);
}

/**
 * The failover decision. Planned (the primary answers, no --force): waits until the standby has
 * applied the primary's current revision and the primary has stopped moving, checks the pair at
 * that revision, then fences. Unplanned (--force): fences and says what is lost.
 */
async function promote(config: ControlConfig, result: Outcome, standby: EtcdSide, primary: EtcdSide | undefined, keys: ControlKeys, retry: Retry, record: ControlRecord): Promise<number> {
  const say = (line: string): void => result.say(line);
  const refuse = (why: string): number => result.end('refused', `promote: refused: ${why}`, 1);
  const [standbyHeader, control] = await Promise.all([retry('read standby revision', () => readHeader(standby)), retry('read control keys', () => readControl(standby, keys))]);
  if (control.fenced) return result.end('already-fenced', `promote: nothing to do: this etcd is already fenced ${describeRecord(control.fenced)}`, 0);
  const readStoredCheckpoint = async (): Promise<Checkpoint | undefined> => (await retry('read checkpoint', () => readCheckpoint(standby, config.checkpointKey))).checkpoint;
  const reached = primary ? await readPrimary(primary, config.primaryTimeoutMs) : { error: 'no --primary-endpoints given' };
  if (reached.header && reached.header.clusterId === standbyHeader.clusterId) throw sameCluster(reached.header, standbyHeader);

  let checkpoint = await readStoredCheckpoint();
  const lines: string[] = [];
  if (control.held && !config.force) {
    // Held before a mass delete: the image before it is what is promoted, without waiting for a
    // primary the standby must not follow, nor a final check that would find the burst.
    lines.push(`the standby holds before a mass delete on the primary: ${control.held.reason}`);
    lines.push(`promoting the image before it: the standby holds ${describeCheckpoint(checkpoint)}`);
    const gap = reached.header && checkpoint ? `${reached.header.revision - checkpoint.revision} revisions (primary now at ${reached.header.revision})` : `unknown (primary: ${reached.error ?? 'unreachable'})`;
    lines.push(`data-loss point: every primary write after revision ${checkpoint?.revision ?? control.held.revision ?? '(unknown)'} is not on this standby (the held deletes and whatever followed them): ${gap}`);
  } else if (config.force || !reached.header) {
    if (!config.force) return refuse(`the primary cannot be reached (${reached.error}); if it is lost, promote with --force (what the standby holds is printed)`);
    // Unplanned: the primary is lost (or the operator says so).
    lines.push(`unplanned promote (--force): the standby holds ${describeCheckpoint(checkpoint)}`);
    if (reached.header && checkpoint) lines.push(`revision gap to the primary: ${reached.header.revision - checkpoint.revision} revisions (primary now at ${reached.header.revision}): they are lost`);
    else lines.push(`data-loss point: every primary write after revision ${checkpoint?.revision ?? '(unknown)'} is lost (primary: ${reached.error ?? 'unreachable'})`);
  } else {
    // Planned: the standby must have everything the primary has, and the primary must be still.
    const deadline = Date.now() + config.waitMs;
    let head = reached.header;
    const firstRevision = head.revision;
    let stillFor = 0;
    for (;;) {
      checkpoint = await readStoredCheckpoint();
      const applied = checkpoint !== undefined && checkpoint.primaryClusterId === head.clusterId && checkpoint.revision >= head.revision;
      if (applied && stillFor >= 1) break;
      if (Date.now() >= deadline || config.dryRun) {
        const gap = checkpoint ? head.revision - checkpoint.revision : head.revision;
        if (head.revision !== firstRevision && !config.dryRun) {
          return refuse(
            `the primary is still being written (revision ${firstRevision} → ${head.revision} in ${Math.round(config.waitMs / 1000)} s): stop the primary's apiservers first, then promote again`,
          );
        }
        if (!applied) {
          const why = `the standby has not applied the primary's revision ${head.revision}: ${gap} revisions not applied (standby at ${checkpoint?.revision ?? 'no checkpoint'})`;
          if (config.dryRun) return result.end('dry-run-would-wait', `dry run: promote would wait up to ${Math.round(config.waitMs / 1000)} s for ${why}; nothing written`, 1);
          return refuse(`${why} after waiting ${Math.round(config.waitMs / 1000)} s: is etcd-sync running and not paused? (etcd-sync status)`);
        }
        break;
      }
      await delay(PROMOTE_POLL_MS);
      const next = (await readPrimary(primary as EtcdSide, config.primaryTimeoutMs)).header;
      if (!next) return refuse('the primary stopped answering while promote waited; if it is lost, promote with --force');
      stillFor = next.revision === head.revision ? stillFor + 1 : 0;
      head = next;
    }
    const atRevision = head.revision;
    try {
      if (!config.scope) throw new ConfigError('promote needs the scope of the final check');
      const report = await audit(primary as EtcdSide, standby, { scope: new Scope(config.scope), checkpointKey: config.checkpointKey, pageSize: config.pageSize, maxTxnOps: config.maxTxnOps, settleMs: config.settleMs, retry });
      const counts = `missing ${report.findings.missing.length}, surplus ${report.findings.surplus.length}, different ${report.findings.different.length}${report.unreplicable.length > 0 ? `, unreplicable ${report.unreplicable.length}` : ''}`;
      if (!report.consistent) return refuse(`the final check at primary revision ${report.comparedAtRevision} found the standby inconsistent (${counts}); run etcd-sync check --repair, then promote again`);
      lines.push(`final check: consistent at primary revision ${report.comparedAtRevision} (primary now at ${report.primaryRevision})`);
    } catch (err) {
      if (err instanceof EtcdSyncError && err.exitCode === 2) throw err;
      return refuse(`the final check could not run (${describeError(err)}); use --force if the primary is lost`);
    }
    lines.push(`revision gap to the primary: 0 revisions (the standby holds primary revision ${atRevision}; nothing is lost)`);
  }
  if (config.dryRun) {
    for (const line of lines) say(line);
    return result.end('dry-run-would-promote', 'dry run: promote would fence this etcd now; nothing written', 0);
  }
  const fence = await retry('write the fence', () => txn(standby, [put(keys.fenced, record), put(keys.last, record)], [{ key: keys.fenced, target: 'Create', result: 'Equal', version: 0n }]));
  if (!fence.succeeded) {
    const now = await retry('read control keys', () => readControl(standby, keys));
    return result.end('already-fenced', `promote: nothing to do: fenced meanwhile ${now.fenced ? describeRecord(now.fenced) : ''}`, 0);
  }
  for (const line of lines) say(line);
  return result.end(
    'promoted',
    [
      `promoted ${describeRecord(record)}: the standby is fenced; no etcd-sync writer (run, check --repair) writes into it until etcd-sync unfence`,
      'next steps (docs/operations.md):',
      '  1. scale the etcd-sync Deployment on this cluster to 0 (it writes nothing now, but keep it quiet)',
      "  2. point DNS / load balancers for the platform's API at this cluster",
      '  3. clients holding the primary\'s resourceVersions may see "too large resource version": restart their watches',
      '  4. when the old primary returns, make it the standby of this cluster (role reversal) before unfencing anything',
    ].join('\n'),
    0,
    record,
  );
}

interface StatusJson {
  state: string;
  ready: boolean;
  reason: string;
  leader: string | null;
  leaderStatus: LeaderStatus | null;
  checkpointRevision: number | null;
  checkpointAt: string | null;
  primaryRevision: number | null;
  primaryReachable: boolean | null;
  primaryError?: string;
  lagRevisions: number | null;
  lagSeconds: number | null;
  paused: ControlRecord | null;
  fenced: ControlRecord | null;
  held: ControlRecord | null;
  lastAction: ControlRecord | null;
}

/**
 * What the standby knows, whether or not the primary answers: exit 0 only when a leader streams
 * within --ready-max-lag of a primary that answers, 1 otherwise, 2 when the standby cannot be read.
 */
async function status(config: ControlConfig, io: ControlIo, standby: EtcdSide, primary: EtcdSide | undefined, keys: ControlKeys, retry: Retry): Promise<number> {
  const [leader, published, control, stored, last] = await Promise.all([
    retry('read leader', () => readKey(standby, keys.leader)),
    retry('read leader status', () => readLeaderStatus(standby, keys)),
    retry('read control keys', () => readControl(standby, keys)),
    retry('read checkpoint', () => readCheckpoint(standby, config.checkpointKey)),
    retry('read last control action', () => readKey(standby, keys.last)),
  ]);
  const now = Date.now();
  const checkpoint = stored.checkpoint;
  const fresh = published !== undefined && leader !== undefined && now - Date.parse(published.at) <= STALE_STATUS_MS ? published : undefined;
  const own = primary ? await readPrimary(primary, config.primaryTimeoutMs) : undefined;
  const primaryRevision = own?.header?.revision ?? (fresh ? BigInt(fresh.primaryRevision) : undefined);
  const primaryReachable = own ? own.header !== undefined : fresh ? fresh.primaryReachable : undefined;
  const lagRevisions =
    own?.header && checkpoint ? (own.header.revision > checkpoint.revision ? own.header.revision - checkpoint.revision : 0n) : fresh ? BigInt(fresh.lagRevisions) : undefined;
  const state = stateOf(control, leader !== undefined, fresh);
  const { ready, reason } = judge(state, control, primaryReachable, lagRevisions, config.readyMaxLag, leader !== undefined && fresh === undefined);
  const result: StatusJson = {
    state,
    ready,
    reason,
    leader: leader ? leader.value.toString() : null,
    leaderStatus: published ?? null,
    checkpointRevision: checkpoint ? Number(checkpoint.revision) : null,
    checkpointAt: checkpoint?.at ?? null,
    primaryRevision: primaryRevision === undefined ? null : Number(primaryRevision),
    primaryReachable: primaryReachable ?? null,
    ...(own?.error ? { primaryError: own.error } : {}),
    lagRevisions: lagRevisions === undefined ? null : Number(lagRevisions),
    lagSeconds: fresh ? fresh.lagSeconds : null,
    paused: control.paused ?? null,
    fenced: control.fenced ?? null,
    held: control.held ?? null,
    lastAction: last ? decodeControlRecord(last.value) : null,
  };
  if (config.output === 'json') io.out(`${JSON.stringify(result)}\n`);
  else io.out(statusText(result, own !== undefined, now));
  return ready ? 0 : 1;
}

function stateOf(control: ControlState, hasLeader: boolean, published: LeaderStatus | undefined): string {
  if (control.fenced) return 'fenced';
  if (control.paused) return 'paused';
  if (control.held) return 'held';
  if (!hasLeader) return 'no-leader';
  return published?.state ?? 'starting';
}

function judge(state: string, control: ControlState, reachable: boolean | undefined, lag: bigint | undefined, readyMaxLag: number, stale: boolean): { ready: boolean; reason: string } {
  if (control.fenced) return { ready: false, reason: `fenced (promoted) ${describeRecord(control.fenced)}` };
  if (control.paused) return { ready: false, reason: `paused ${describeRecord(control.paused)}` };
  if (control.held) return { ready: false, reason: `held before a mass delete at primary revision ${control.held.revision ?? '?'}: ${control.held.reason}` };
  if (state === 'no-leader') return { ready: false, reason: 'no etcd-sync replica leads' };
  if (stale) return { ready: false, reason: 'the leader has published no status for a while (is it alive?)' };
  if (reachable === false) return { ready: false, reason: 'the primary does not answer' };
  if (reachable === undefined) return { ready: false, reason: 'nothing known of the primary' };
  if (state !== 'streaming') return { ready: false, reason: `the leader is ${state}, not streaming yet` };
  if (lag === undefined) return { ready: false, reason: 'the lag is unknown (no checkpoint)' };
  if (lag > BigInt(readyMaxLag)) return { ready: false, reason: `${lag} revisions behind (--ready-max-lag ${readyMaxLag})` };
  return { ready: true, reason: `streaming, ${lag} revisions behind` };
}

function statusText(s: StatusJson, primaryRead: boolean, now: number): string {
  const lines = [`state: ${s.state} (${s.ready ? 'ready' : 'NOT READY'}: ${s.reason})`, `leader: ${s.leader ?? '(none)'}`];
  lines.push(
    `checkpoint: ${s.checkpointRevision === null ? '(none)' : `primary revision ${s.checkpointRevision}, as the primary was at ${s.checkpointAt ?? 'an unknown time'} (${age(s.checkpointAt ?? undefined, now)})`}`,
  );
  if (primaryRead) lines.push(`primary: ${s.primaryReachable ? `revision ${s.primaryRevision} (read now)` : `unreachable: ${s.primaryError ?? 'no answer'}`}`);
  else if (s.leaderStatus) {
    const l = s.leaderStatus;
    lines.push(`primary: revision ${l.primaryRevision}, ${l.primaryReachable ? 'answering' : `NOT answering (last contact ${l.lastPrimaryContact ?? 'never'})`} (as the leader saw it ${age(l.at, now)})`);
  } else lines.push('primary: unknown (give --primary-endpoints to read it)');
  lines.push(`lag: ${s.lagRevisions === null ? 'unknown' : `${s.lagRevisions} revisions`}${s.lagSeconds === null ? '' : `, ${s.lagSeconds} s`}`);
  const p = s.leaderStatus?.progress;
  if (p) {
    const of = p.keysTotal === null ? `${p.keysDone} keys` : `${p.keysDone} of ${p.keysTotal} keys (${p.percent}%)`;
    lines.push(`progress: ${p.phase} at primary revision ${p.revision}: ${of}, ${p.keysPerSecond} keys/s${p.etaSeconds === null ? '' : `, ETA ${p.etaSeconds} s`}`);
  }
  if (s.paused) lines.push(`paused: ${describeRecord(s.paused)}`);
  if (s.fenced) lines.push(`fenced: ${describeRecord(s.fenced)}`);
  if (s.held) {
    lines.push(`held: at primary revision ${s.held.revision ?? '?'} since ${s.held.at}: ${s.held.reason}`);
    const h = s.leaderStatus?.held as { pendingDeletes?: number; deletesByGroup?: Record<string, number>; compacted?: boolean } | undefined;
    if (h) {
      const groups = Object.entries(h.deletesByGroup ?? {}).map(([g, n]) => `${g} ${n}`).join(', ');
      lines.push(`  waiting on the primary: ${h.pendingDeletes ?? 0} deletes${groups ? ` (${groups})` : ''}${h.compacted ? '; the primary compacted past the held revision' : ''}`);
    }
    lines.push('  etcd-sync resume --accept-deletes applies them; etcd-sync promote promotes the image before them');
  }
  if (s.lastAction) lines.push(`last control action: ${s.lastAction.what} ${describeRecord(s.lastAction)}`);
  return `${lines.join('\n')}\n`;
}
