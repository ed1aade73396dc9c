/** `etcd-sync pause | resume | promote | unfence | status`: one audited toggle in the standby etcd for all replicas. */
import type { Logger } from 'pino';
import { ConfigError, EtcdSyncError, describeError } from '../errors.js';
import { EtcdSide } from '../etcd/connection.js';
import { readHeader, readKey, txn } from '../etcd/kv.js';
import { Scope } from '../scope.js';
import { audit } from '../sync/audit.js';
import { ONE_SHOT_RETRY, type Retry, retrier } from '../sync/retry.js';
import { readCheckpoint } from '../sync/checkpoint.js';
import { controlKeys, readControl } from '../sync/supervisor.js';

import type { ControlConfig } from './options/control.js';

export interface ControlIo {
  log: Logger;
  out(text: string): void;
  /** Who runs the command, recorded in the toggle (user@host). */
  actor: string;
}

export async function runControl(config: ControlConfig, io: ControlIo): Promise<number> {
  const standby = new EtcdSide(config.standby);
  const primary = config.primary ? new EtcdSide(config.primary) : undefined;
  const keys = controlKeys(config.checkpointKey);
  const retry = retrier({ log: io.log, ...ONE_SHOT_RETRY });
  const stamp = (what: string): Buffer => Buffer.from(JSON.stringify({ by: io.actor, at: new Date().toISOString(), what }));
  try {
    switch (config.command) {
      case 'pause':
        await retry('pause', () => txn(standby, [{ type: 'put', key: keys.paused, value: stamp('pause') }]));
        io.out('paused: the leader stops applying and keeps its place in the primary history (etcd-sync resume to continue)\n');
        return 0;
      case 'resume':
        await retry('resume', () => txn(standby, [{ type: 'delete', key: keys.paused }]));
        io.out('resumed\n');
        return 0;
      case 'unfence':
        await retry('unfence', () => txn(standby, [{ type: 'delete', key: keys.fenced }]));
        io.out('unfenced: etcd-sync replicas may write into this etcd again\n');
        return 0;
      case 'promote':
        return await promote(config, io, standby, primary, retry, stamp);
      case 'status':
        return await status(config, io, standby, primary, retry);
      default:
        throw new ConfigError(`unknown control command ${String(config.command satisfies never)}`);
    }
  } catch (err) {
    if (err instanceof EtcdSyncError && err.exitCode !== 2) throw new ConfigError(`could not ${config.command}: ${describeError(err)}`);
    throw err;
  } finally {
    standby.close();
    primary?.close();
  }
}

async function readCheckpointRevision(standby: EtcdSide, key: Buffer): Promise<bigint | undefined> {
  return (await readCheckpoint(standby, key)).checkpoint?.revision;
}

async function promote(config: ControlConfig, io: ControlIo, standby: EtcdSide, primary: EtcdSide | undefined, retry: Retry, stamp: (what: string) => Buffer): Promise<number> {
  let gap: string;
  if (!primary) {
    if (!config.force) {
      io.out('promote: refused: no --primary-endpoints to run the final check against (use --force if the primary is lost)\n');
      return 1;
    }
    gap = 'unknown (no primary given)';
  } else {
    try {
      if (!config.scope) throw new ConfigError('promote needs the scope of the final check');
      const report = await audit(primary, standby, { scope: new Scope(config.scope), checkpointKey: config.checkpointKey, pageSize: config.pageSize, settleMs: config.settleMs, retry });
      const counts = `missing ${report.findings.missing.length}, surplus ${report.findings.surplus.length}, different ${report.findings.different.length}`;
      if (!report.consistent && !config.force) {
        io.out(`promote: refused: the final check found the standby inconsistent (${counts}); run etcd-sync check --repair, or use --force\n`);
        return 1;
      }
      io.out(`final check: ${report.consistent ? 'consistent' : `INCONSISTENT (${counts}), promoting anyway (--force)`}\n`);
    } catch (err) {
      if (!config.force) {
        io.out(`promote: refused: the final check could not run (${describeError(err)}); use --force if the primary is lost\n`);
        return 1;
      }
      io.out(`final check could not run (${describeError(err)}); promoting anyway (--force)\n`);
    }
    const [p, cp] = await Promise.all([readHeader(primary).catch(() => undefined), readCheckpointRevision(standby, config.checkpointKey)]);
    gap = p && cp !== undefined ? `${p.revision - cp} revisions (primary ${p.revision}, standby checkpoint ${cp})` : 'unknown (primary unreachable)';
  }
  await retry('write the fence', () => txn(standby, [{ type: 'put', key: controlKeys(config.checkpointKey).fenced, value: stamp('promote') }]));
  io.out(
    [
      'promoted: the standby is fenced; no etcd-sync replica writes into it until etcd-sync unfence',
      `revision gap to the primary: ${gap}`,
      'next steps:',
      '  1. scale the etcd-sync Deployment on this cluster to 0 (it writes nothing now, but keep it quiet)',
      "  2. point DNS / load balancers for the platform's API at this cluster",
      '  3. clients holding the primary\'s resourceVersions may see "too large resource version": restart their watches',
      '  4. when the old primary returns, make it the standby (etcd-sync there, this cluster as its primary) before unfencing anything',
      '',
    ].join('\n'),
  );
  return 0;
}

async function status(config: ControlConfig, io: ControlIo, standby: EtcdSide, primary: EtcdSide | undefined, retry: Retry): Promise<number> {
  const keys = controlKeys(config.checkpointKey);
  const [leader, control, checkpoint] = await Promise.all([
    retry('read leader', () => readKey(standby, keys.leader)),
    retry('read control keys', () => readControl(standby, keys)),
    retry('read checkpoint', () => readCheckpointRevision(standby, config.checkpointKey)),
  ]);
  const primaryRevision = primary ? (await retry('read primary revision', () => readHeader(primary))).revision : undefined;
  const state = control.fenced ? 'fenced' : control.paused ? 'paused' : leader ? 'running' : 'no leader';
  const result = {
    leader: leader ? leader.value.toString() : null,
    state,
    checkpointRevision: checkpoint === undefined ? null : Number(checkpoint),
    ...(primaryRevision !== undefined ? { primaryRevision: Number(primaryRevision), lagRevisions: checkpoint === undefined ? null : Number(primaryRevision - checkpoint) } : {}),
  };
  if (config.output === 'json') io.out(`${JSON.stringify(result)}\n`);
  else {
    io.out(`leader: ${result.leader ?? '(none)'}\nstate: ${state}\ncheckpoint revision: ${result.checkpointRevision ?? '(none)'}\n`);
    if (primaryRevision !== undefined) io.out(`primary revision: ${primaryRevision}\nlag: ${result.lagRevisions ?? '(unknown)'} revisions\n`);
  }
  return 0;
}
