/** `etcd-sync encryption verify` and the check of each encrypted value `run` writes. */
import type { Logger } from 'pino';
import type { EtcdSide } from '../etcd/connection.js';
import { scanPages } from '../etcd/kv.js';
import { displayKey, keyText } from '../diff/report.js';
import { parseKubernetesKey, prefixEnd, startsWith } from '../scope.js';
import type { EncryptionConfig } from './config.js';
import { ENCRYPTED_PREFIX, type Verdict, providersFor, verifyValue } from './decrypt.js';

export interface Tally {
  readable: number;
  unreadable: number;
  unknownKey: number;
  notVerifiable: number;
}

export interface VerifyReport {
  scanned: number;
  encrypted: number;
  total: Tally;
  /** By `<provider>/<key name>` (kms: `kms/<plugin name>`). */
  byKeyName: Record<string, Tally>;
  /** By resource (`secrets`, `example.com/widgets`). */
  byResource: Record<string, Tally>;
  unreadable: Buffer[];
  unknownKey: Buffer[];
}

function emptyTally(): Tally {
  return { readable: 0, unreadable: 0, unknownKey: 0, notVerifiable: 0 };
}

const TALLY_FIELD: Record<Verdict['status'], keyof Tally> = {
  readable: 'readable',
  unreadable: 'unreadable',
  'unknown-key': 'unknownKey',
  kms: 'notVerifiable',
};

export function allReadable(report: VerifyReport): boolean {
  return report.total.unreadable === 0 && report.total.unknownKey === 0;
}

/** Verdicts for values as the apiserver configured by `config` would read them. */
export class EncryptionVerifier {
  constructor(
    private readonly config: EncryptionConfig,
    private readonly keyPrefix: Buffer,
  ) {}

  /** undefined for values that are not encrypted. */
  verdict(key: Buffer, value: Buffer): Verdict | undefined {
    if (!startsWith(value, ENCRYPTED_PREFIX)) return undefined;
    return verifyValue(key, value, providersFor(this.config, key, this.keyPrefix));
  }
}

export async function verifySide(
  side: EtcdSide,
  verifier: EncryptionVerifier,
  keyPrefix: Buffer,
  retry: <T>(what: string, fn: () => Promise<T>) => Promise<T>,
  pageSize: number,
): Promise<VerifyReport> {
  const report: VerifyReport = { scanned: 0, encrypted: 0, total: emptyTally(), byKeyName: {}, byResource: {}, unreadable: [], unknownKey: [] };
  for await (const page of scanPages(side, { key: keyPrefix, rangeEnd: prefixEnd(keyPrefix), pageSize }, retry)) {
    for (const kv of page) {
      report.scanned++;
      const verdict = verifier.verdict(kv.key, kv.value);
      if (!verdict) continue;
      report.encrypted++;
      const field = TALLY_FIELD[verdict.status];
      const keyName = `${verdict.provider}/${verdict.keyName}`;
      const resource = parseKubernetesKey(kv.key, keyPrefix.length)?.resource ?? '(other)';
      report.total[field]++;
      (report.byKeyName[keyName] ??= emptyTally())[field]++;
      (report.byResource[resource] ??= emptyTally())[field]++;
      if (verdict.status === 'unreadable') report.unreadable.push(Buffer.from(kv.key));
      if (verdict.status === 'unknown-key') report.unknownKey.push(Buffer.from(kv.key));
    }
  }
  return report;
}

export function verifyJson(report: VerifyReport): object {
  return {
    allReadable: allReadable(report),
    scanned: report.scanned,
    counts: { encrypted: report.encrypted, ...report.total },
    byKeyName: report.byKeyName,
    byResource: report.byResource,
    unreadable: report.unreadable.map(keyText),
    unknownKey: report.unknownKey.map(keyText),
  };
}

export function formatVerifyText(report: VerifyReport, limit: number): string {
  const t = report.total;
  const lines = [
    `etcd-sync encryption verify: ${allReadable(report) ? 'ALL READABLE' : 'UNREADABLE VALUES'} (${report.encrypted} encrypted of ${report.scanned} values)`,
    `readable: ${t.readable}  unreadable: ${t.unreadable}  unknown key name: ${t.unknownKey}  not verifiable offline (kms): ${t.notVerifiable}`,
  ];
  const table = (title: string, rows: Record<string, Tally>): void => {
    const names = Object.keys(rows).sort();
    if (names.length === 0) return;
    lines.push('', `${title}:`);
    const width = Math.max(...names.map((n) => n.length));
    for (const name of names) {
      const r = rows[name] as Tally;
      lines.push(`  ${name.padEnd(width)}  readable ${r.readable}  unreadable ${r.unreadable}  unknown key ${r.unknownKey}  kms ${r.notVerifiable}`);
    }
  };
  table('by key name', report.byKeyName);
  table('by resource', report.byResource);
  let listed = 0;
  for (const [title, keys] of [
    ['unreadable', report.unreadable],
    ['unknown key name', report.unknownKey],
  ] as const) {
    if (keys.length === 0 || listed >= limit) continue;
    lines.push('', `${title} (${keys.length}):`);
    for (const key of keys.slice(0, limit - listed)) lines.push(`  ${displayKey(key)}`);
    listed += Math.min(keys.length, limit - listed);
  }
  const failures = report.unreadable.length + report.unknownKey.length;
  lines.push('', `listed ${listed} of ${failures} failing keys, ${failures - listed} left out (--limit ${limit})`);
  return `${lines.join('\n')}\n`;
}

/** In `run`: every encrypted value written to the standby is checked; each unreadable key logged once. */
export class EncryptedWriteMonitor {
  /** Distinct keys whose written value the standby's apiserver could not read. */
  unreadable = 0;
  private readonly logged = new Set<string>();

  constructor(
    private readonly verifier: EncryptionVerifier,
    private readonly log: Logger,
  ) {}

  check(key: Buffer, value: Buffer): void {
    const verdict = this.verifier.verdict(key, value);
    if (!verdict || verdict.status === 'readable' || verdict.status === 'kms') return;
    const id = key.toString('latin1');
    if (this.logged.has(id)) return;
    this.logged.add(id);
    this.unreadable++;
    this.log.warn({ key: keyText(key), provider: verdict.provider, keyName: verdict.keyName, reason: verdict.status }, "encrypted value the standby's apiserver cannot read");
  }
}
