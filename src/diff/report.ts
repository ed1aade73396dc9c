/** Pure: what `etcd-sync check` found, and how it is shown (text or JSON). */
import { parseKubernetesKey } from '../scope.js';

export type FindingKind = 'missing' | 'surplus' | 'different';
export const FINDING_KINDS: readonly FindingKind[] = ['missing', 'surplus', 'different'];

export interface CheckReport {
  consistent: boolean;
  /** The primary revision the standby was compared at (the standby's checkpoint, or the primary's latest then). */
  comparedAtRevision: bigint;
  /** The primary's revision when the check ended. */
  primaryRevision: bigint;
  /** The standby revision compared. */
  standbyRevision: bigint;
  /** `checkpoint`: primary at the standby's checkpoint vs the standby as of that checkpoint (exact). `settled`: latest vs latest, findings re-checked after a settle delay. */
  mode: 'checkpoint' | 'settled';
  /** In-scope keys in the primary at the compared revision. */
  inScope: number;
  findings: Record<FindingKind, Buffer[]>;
  /**
   * Keys the standby refuses even alone (larger than its --max-request-bytes), as etcd-sync
   * recorded them: taken out of `missing` and `different`, reported with their size and reason.
   */
  unreplicable: UnreplicableFinding[];
  repaired?: { put: number; deleted: number };
  /** When the comparison finished (ms since epoch). */
  checkedAt: number;
}

export interface UnreplicableFinding {
  key: Buffer;
  bytes: number;
  reason: string;
}

/** Primary revisions the standby had not applied when checked. */
export function unapplied(report: CheckReport): bigint {
  return report.primaryRevision > report.comparedAtRevision ? report.primaryRevision - report.comparedAtRevision : 0n;
}

export function isConsistent(findings: Record<FindingKind, Buffer[]>): boolean {
  return FINDING_KINDS.every((kind) => findings[kind].length === 0);
}

/** A key as JSON/text shows it: UTF-8 when it is valid UTF-8, else `base64:<...>`. */
export function keyText(key: Buffer): string {
  const text = key.toString('utf8');
  return Buffer.from(text, 'utf8').equals(key) ? text : `base64:${key.toString('base64')}`;
}

/**
 * A key as text output and prompts show it on a terminal: keyText with every control character
 * (C0, DEL, C1) and the Unicode format controls that reorder text (bidi overrides and isolates)
 * escaped, so that a hostile key name cannot move the cursor or disguise itself as another key.
 */
export function displayKey(key: Buffer): string {
  return keyText(key).replace(/[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g, (c) => {
    const code = c.charCodeAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

/** `pods/apps`, `clusterroles (cluster)`, or `(other)` for keys that are not object keys. */
export function groupOf(key: Buffer, keyPrefix: Buffer): string {
  const parsed = parseKubernetesKey(key, keyPrefix.length);
  if (!parsed) return '(other)';
  return parsed.namespace === undefined ? `${parsed.resource} (cluster)` : `${parsed.resource}/${parsed.namespace}`;
}

export interface CheckJson {
  consistent: boolean;
  comparedAtRevision: number;
  primaryRevision: number;
  /** primaryRevision - comparedAtRevision: primary revisions the standby had not applied when checked. */
  unappliedRevisions: number;
  standbyRevision: number;
  counts: { inScope: number; missing: number; surplus: number; different: number; unreplicable: number };
  missing: string[];
  surplus: string[];
  different: string[];
  unreplicable: { key: string; bytes: number; reason: string }[];
  repaired?: { put: number; deleted: number };
}

export function toJson(report: CheckReport): CheckJson {
  return {
    consistent: report.consistent,
    comparedAtRevision: Number(report.comparedAtRevision),
    primaryRevision: Number(report.primaryRevision),
    unappliedRevisions: Number(unapplied(report)),
    standbyRevision: Number(report.standbyRevision),
    counts: {
      inScope: report.inScope,
      missing: report.findings.missing.length,
      surplus: report.findings.surplus.length,
      different: report.findings.different.length,
      unreplicable: report.unreplicable.length,
    },
    missing: report.findings.missing.map(keyText),
    surplus: report.findings.surplus.map(keyText),
    different: report.findings.different.map(keyText),
    unreplicable: report.unreplicable.map((u) => ({ key: keyText(u.key), bytes: u.bytes, reason: u.reason })),
    ...(report.repaired ? { repaired: report.repaired } : {}),
  };
}

/** Counts per kind and per resource/namespace, then the keys (at most `limit`), then what was left out. */
export function formatText(report: CheckReport, keyPrefix: Buffer, limit: number): string {
  const lines: string[] = [];
  const f = report.findings;
  const how = report.mode === 'checkpoint' ? "at the standby's checkpoint" : 'latest against latest, re-checked after settling';
  const verdict = report.consistent ? 'CONSISTENT' : 'INCONSISTENT';
  const behind = unapplied(report);
  const where =
    behind === 0n
      ? `at primary revision ${report.comparedAtRevision}`
      : `as of primary revision ${report.comparedAtRevision}; primary now at ${report.primaryRevision}: ${behind} revisions not applied`;
  lines.push(`etcd-sync check: ${verdict} ${where} (standby revision ${report.standbyRevision}, compared ${how})`);
  lines.push(`in scope: ${report.inScope} keys in the primary`);
  lines.push(`missing: ${f.missing.length}  surplus: ${f.surplus.length}  different: ${f.different.length}${report.unreplicable.length > 0 ? `  unreplicable: ${report.unreplicable.length}` : ''}`);
  if (report.unreplicable.length > 0) {
    lines.push('', `unreplicable (${report.unreplicable.length}): the standby refuses these even alone; give its etcd a --max-request-bytes of at least the primary's plus 64 KiB`);
    for (const u of report.unreplicable.slice(0, limit)) lines.push(`  ${displayKey(u.key)} (${u.bytes} bytes): ${u.reason}`);
  }
  if (report.repaired) lines.push(`repaired: ${report.repaired.put} put, ${report.repaired.deleted} deleted`);
  const groups = new Map<string, Record<FindingKind, number>>();
  for (const kind of FINDING_KINDS) {
    for (const key of f[kind]) {
      const group = groupOf(key, keyPrefix);
      const counts = groups.get(group) ?? { missing: 0, surplus: 0, different: 0 };
      counts[kind]++;
      groups.set(group, counts);
    }
  }
  if (groups.size > 0) {
    lines.push('', 'by resource/namespace:');
    const width = Math.max(...[...groups.keys()].map((g) => g.length));
    for (const [group, counts] of [...groups.entries()].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const parts = FINDING_KINDS.filter((k) => counts[k] > 0).map((k) => `${k} ${counts[k]}`);
      lines.push(`  ${group.padEnd(width)}  ${parts.join('  ')}`);
    }
  }
  let listed = 0;
  let total = 0;
  for (const kind of FINDING_KINDS) {
    total += f[kind].length;
    // A section only when it lists keys; the counts above and the last line cover the rest.
    if (f[kind].length === 0 || listed >= limit) continue;
    lines.push('', `${kind} (${f[kind].length}):`);
    for (const key of f[kind]) {
      if (listed >= limit) break;
      lines.push(`  ${displayKey(key)}`);
      listed++;
    }
  }
  lines.push('', `listed ${listed} of ${total} keys, ${total - listed} left out (--limit ${limit})`);
  return `${lines.join('\n')}\n`;
}
