/** `etcd-sync check`: audit, optional repair, report, exit code 0 consistent / 1 inconsistent / 2 could not check. */
import type { Logger } from 'pino';
import { ConfigError, EtcdSyncError, describeError } from '../errors.js';
import { EtcdSide } from '../etcd/connection.js';
import { readHeader } from '../etcd/kv.js';
import { type CheckReport, displayKey, formatText, keyText, toJson } from '../diff/report.js';
import { Scope } from '../scope.js';
import { audit, repair, repairPlan } from '../sync/audit.js';
import { LeaseMapper, leaseKeyPrefix } from '../sync/leases.js';
import { ONE_SHOT_RETRY, retrier } from '../sync/retry.js';
import { type Fence, StandbyWriter } from '../sync/writer.js';
import { type ControlRecord, controlKeys, describeRecord, readControl } from '../sync/control-keys.js';
import type { CheckConfig } from './options/check.js';

export interface CheckIo {
  log: Logger;
  out(text: string): void;
  /** Asks the operator to confirm deleting these keys; absent when nobody can be asked (no terminal). */
  confirm?: (keys: string[]) => Promise<boolean>;
}

function fencedError(record: ControlRecord): ConfigError {
  return new ConfigError(`the standby is fenced (promoted) ${describeRecord(record)}: check does not write into it (etcd-sync unfence lifts the fence)`);
}

export async function runCheck(config: CheckConfig, io: CheckIo): Promise<number> {
  if (config.prune && !config.yes && !config.dryRun && !io.confirm) {
    throw new ConfigError('--prune deletes keys: add --yes, or run from a terminal to confirm them');
  }
  const primary = new EtcdSide(config.primary);
  const standby = new EtcdSide(config.standby);
  const controller = new AbortController();
  const retry = retrier({ log: io.log, signal: controller.signal, ...ONE_SHOT_RETRY });
  const scope = new Scope(config.scope);
  const leases = new LeaseMapper(primary, standby, leaseKeyPrefix(config.checkpointKey), io.log);
  try {
    const [p, s] = await Promise.all([retry('connect to primary', () => readHeader(primary)), retry('connect to standby', () => readHeader(standby))]);
    if (p.clusterId === s.clusterId) throw new ConfigError('primary and standby are the same etcd cluster: nothing to compare');
    // The fence of a promoted standby stops every etcd-sync writer, this one too: refused before anything is read or written.
    const keys = controlKeys(config.checkpointKey);
    if (config.repair && !config.dryRun) {
      const control = await retry('read control keys', () => readControl(standby, keys));
      if (control.fenced) throw fencedError(control.fenced);
      if (control.held) {
        throw new ConfigError(
          `the standby holds before a mass delete on the primary (${control.held.reason}): a repair would apply the held deletes; etcd-sync resume --accept-deletes, or promote`,
        );
      }
    }
    const auditOptions = { scope, checkpointKey: config.checkpointKey, pageSize: config.pageSize, maxTxnOps: config.maxTxnOps, settleMs: config.settleMs, retry, signal: controller.signal };
    let report = await audit(primary, standby, auditOptions);
    if (config.repair && !report.consistent) {
      const plan = repairPlan(report, config.prune);
      if (config.dryRun) {
        print(report, config, io, { put: plan.put, delete: plan.delete });
        return report.consistent ? 0 : 1;
      }
      if (plan.delete.length > 0 && !config.yes) {
        const confirmed = (await io.confirm?.(plan.delete.map(displayKey))) ?? false;
        if (!confirmed) {
          io.log.warn({ surplus: plan.delete.length }, 'not deleting surplus keys: not confirmed');
          plan.delete = [];
        }
      }
      await retry('load lease mappings', () => leases.load());
      const fence: Fence = {
        compares: () => [{ key: keys.fenced, target: 'Create', result: 'Equal', version: 0n }],
        verify: async () => {
          const now = await readControl(standby, keys);
          if (now.fenced) throw fencedError(now.fenced);
        },
      };
      const writer = new StandbyWriter(standby, leases, io.log, () => controller.signal, config.maxTxnOps, { fence, unreplicablePrefix: keys.unreplicable });
      await writer.loadUnreplicable();
      const repaired = await repair(primary, standby, writer, plan, retry, config.maxTxnBytes);
      io.log.info(repaired, 'repaired');
      report = { ...(await audit(primary, standby, auditOptions)), repaired };
    }
    print(report, config, io);
    return report.consistent ? 0 : 1;
  } catch (err) {
    if (err instanceof EtcdSyncError) {
      // Whatever stopped the audit, the answer is "could not check".
      throw err.exitCode === 2 ? err : new ConfigError(`could not check: ${describeError(err)}`);
    }
    throw err;
  } finally {
    controller.abort();
    leases.stop();
    primary.close();
    standby.close();
  }
}

function print(report: CheckReport, config: CheckConfig, io: CheckIo, plan?: { put: Buffer[]; delete: Buffer[] }): void {
  if (config.output === 'json') {
    io.out(`${JSON.stringify({ ...toJson(report), ...(plan ? { plan: { put: plan.put.map(keyText), delete: plan.delete.map(keyText) } } : {}) })}\n`);
    return;
  }
  io.out(formatText(report, config.scope.keyPrefix, config.limit));
  if (plan) {
    io.out(`\ndry run: would put ${plan.put.length} keys and delete ${plan.delete.length}; nothing written\n`);
    for (const key of plan.put) io.out(`  put    ${displayKey(key)}\n`);
    for (const key of plan.delete) io.out(`  delete ${displayKey(key)}\n`);
  }
}
