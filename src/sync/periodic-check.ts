/**
 * The periodic check of `run`: every interval, an audit of the pair (src/sync/audit.ts) and a
 * repair of what it found missing or different (surplus too with --prune), written behind the
 * leader's fence. Failures are logged and the next interval tries again; never fatal.
 */
import type { CheckReport } from '../diff/report.js';
import { describeError } from '../errors.js';
import { audit, repair, repairPlan } from './audit.js';
import type { SyncContext } from './context.js';
import { AbortedError, delay, retrier } from './retry.js';

/** Runs a check every `intervalMs` until `signal` aborts, handing each report (with what it repaired) to `onReport`. */
export async function periodicChecks(ctx: SyncContext, intervalMs: number, signal: AbortSignal, onReport: (report: CheckReport) => void): Promise<void> {
  const { log, options } = ctx;
  const retry = retrier({ log, signal });
  while (await delay(intervalMs, signal)) {
    // Held before a mass delete: a repair would apply the held deletes through the back door.
    if (ctx.held) continue;
    try {
      let report = await audit(ctx.primary, ctx.standby, { scope: ctx.scope, checkpointKey: options.checkpointKey, pageSize: options.pageSize, maxTxnOps: options.maxTxnOps, settleMs: options.settleMs, retry, signal });
      const counts = { missing: report.findings.missing.length, surplus: report.findings.surplus.length, different: report.findings.different.length };
      log.info({ consistent: report.consistent, mode: report.mode, inScope: report.inScope, ...counts }, 'periodic check');
      const plan = repairPlan(report, options.prune);
      if (plan.put.length + plan.delete.length > 0) {
        const repaired = await repair(ctx.primary, ctx.standby, ctx.writer, plan, retry, options.maxTxnBytes);
        log.info(repaired, 'periodic check repaired');
        report = { ...report, repaired };
      }
      onReport(report);
    } catch (err) {
      if (err instanceof AbortedError || signal.aborted) return;
      log.warn({ err: describeError(err) }, 'periodic check failed');
    }
  }
}
