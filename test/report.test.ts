import { describe, expect, it } from 'vitest';
import { type CheckReport, formatText, groupOf, keyText, toJson, displayKey } from '../src/diff/report.js';
import { StatusLine, createLogger, prettyLine } from '../src/log.js';
import { progressLine } from '../src/cli/commands.js';
import { DiffProgress } from '../src/sync/full-diff.js';

const prefix = Buffer.from('/registry/');

describe('keyText', () => {
  it.each([
    [Buffer.from('/registry/pods/apps/a'), '/registry/pods/apps/a'],
    [Buffer.from('/registry/configmaps/apps/ü'), '/registry/configmaps/apps/ü'],
    [Buffer.from([0x2f, 0xff, 0xfe]), 'base64:L//+'],
    [Buffer.from([0x2f, 0xc3, 0x28]), 'base64:L8Mo'],
  ])('%s → %s', (key, text) => {
    expect(keyText(key)).toBe(text);
  });
});

describe('groupOf', () => {
  it.each([
    ['/registry/pods/apps/a', 'pods/apps'],
    ['/registry/services/specs/apps/api', 'services/specs/apps'],
    ['/registry/clusterroles/admin', 'clusterroles (cluster)'],
    ['/registry/example.com/widgets/apps/w', 'example.com/widgets/apps'],
    ['/registry/odd/a/b/c', '(other)'],
  ])('%s → %s', (key, group) => {
    expect(groupOf(Buffer.from(key), prefix)).toBe(group);
  });
});

describe('report output', () => {
  const report: CheckReport = {
    consistent: false,
    comparedAtRevision: 42n,
    primaryRevision: 42n,
    standbyRevision: 7n,
    mode: 'settled',
    inScope: 10,
    findings: {
      missing: [Buffer.from('/registry/pods/apps/a'), Buffer.from('/registry/pods/apps/b')],
      surplus: [Buffer.from('/registry/secrets/default/s')],
      different: [Buffer.from([0x2f, 0xff])],
    },
    unreplicable: [],
    checkedAt: 0,
  };
  it('JSON has the documented shape', () => {
    expect(toJson(report)).toEqual({
      consistent: false,
      comparedAtRevision: 42,
      primaryRevision: 42,
      unappliedRevisions: 0,
      standbyRevision: 7,
      counts: { inScope: 10, missing: 2, surplus: 1, different: 1, unreplicable: 0 },
      missing: ['/registry/pods/apps/a', '/registry/pods/apps/b'],
      surplus: ['/registry/secrets/default/s'],
      different: ['base64:L/8='],
      unreplicable: [],
    });
    expect(toJson({ ...report, repaired: { put: 3, deleted: 1 } }).repaired).toEqual({ put: 3, deleted: 1 });
  });
  it('the first line says what was compared: consistent at R, or as of C with the primary N revisions ahead', () => {
    const consistent = { ...report, consistent: true, findings: { missing: [], surplus: [], different: [] } };
    expect(formatText(consistent, prefix, 2).split('\n')[0]).toBe(
      'etcd-sync check: CONSISTENT at primary revision 42 (standby revision 7, compared latest against latest, re-checked after settling)',
    );
    const behind: CheckReport = { ...consistent, mode: 'checkpoint', comparedAtRevision: 3765n, primaryRevision: 4001n };
    expect(formatText(behind, prefix, 2).split('\n')[0]).toBe(
      "etcd-sync check: CONSISTENT as of primary revision 3765; primary now at 4001: 236 revisions not applied (standby revision 7, compared at the standby's checkpoint)",
    );
    expect(toJson(behind)).toMatchObject({ consistent: true, comparedAtRevision: 3765, primaryRevision: 4001, unappliedRevisions: 236 });
  });
  it('text: counts, groups, keys up to the limit, and what was left out', () => {
    expect(formatText(report, prefix, 2)).toBe(
      [
        'etcd-sync check: INCONSISTENT at primary revision 42 (standby revision 7, compared latest against latest, re-checked after settling)',
        'in scope: 10 keys in the primary',
        'missing: 2  surplus: 1  different: 1',
        '',
        'by resource/namespace:',
        '  (other)          different 1',
        '  pods/apps        missing 2',
        '  secrets/default  surplus 1',
        '',
        'missing (2):',
        '  /registry/pods/apps/a',
        '  /registry/pods/apps/b',
        '',
        'listed 2 of 4 keys, 2 left out (--limit 2)',
        '',
      ].join('\n'),
    );
  });
});

describe('pretty log lines (terminal only)', () => {
  it.each([
    [
      '{"level":"info","time":"2026-11-21T06:44:19.009Z","cmd":"run","address":"127.0.0.1:35539","msg":"http listening"}',
      '06:44:19 INFO  http listening address=127.0.0.1:35539',
    ],
    [
      '{"level":"warn","time":"2026-11-21T06:44:20.000Z","attempt":2,"err":"primary etcd: unreachable: x y","msg":"connect to primary failed, retrying"}',
      '06:44:20 WARN  connect to primary failed, retrying attempt=2 err="primary etcd: unreachable: x y"',
    ],
    ['not json', 'not json'],
  ])('%s', (line, pretty) => {
    expect(prettyLine(line)).toBe(pretty);
  });
});

describe('the progress line on a terminal', () => {
  it('log lines scroll above it instead of running into it', async () => {
    const written: string[] = [];
    const line = new StatusLine((text) => written.push(text));
    const log = createLogger('info', { cmd: 'run' }, true, line);
    line.set('initial-sync: 10/40 keys (25%)');
    log.info({ revision: '7' }, 'sync progress');
    await new Promise((resolve) => setImmediate(resolve));
    line.set('initial-sync: 20/40 keys (50%)');
    line.clear();
    log.info('streaming');
    await new Promise((resolve) => setImmediate(resolve));
    const erase = '\r\x1b[2K';
    expect(written.map((w) => w.replace(/\d\d:\d\d:\d\d/, 'HH:MM:SS'))).toEqual([
      `${erase}initial-sync: 10/40 keys (25%)`,
      `${erase}HH:MM:SS INFO  sync progress revision=7\ninitial-sync: 10/40 keys (25%)`,
      `${erase}initial-sync: 20/40 keys (50%)`,
      erase,
      'HH:MM:SS INFO  streaming\n',
    ]);
  });

  it('says keys done of total, percent, rate and ETA; without a total, only what it knows', () => {
    const p = new DiffProgress('initial-sync', 9n, 0);
    p.keysDone = 250;
    p.written = 100;
    p.bytesWritten = 3 * 1048576;
    expect(progressLine(p.snapshot(10_000))).toBe('initial-sync: 250 keys, 25 keys/s, 100 written (3.0 MiB)');
    p.keysTotal = 1000;
    expect(p.snapshot(10_000)).toMatchObject({ keysDone: 250, keysTotal: 1000, percent: 25, keysPerSecond: 25, etaSeconds: 30 });
    expect(progressLine(p.snapshot(10_000))).toBe('initial-sync: 250/1000 keys (25%), 25 keys/s, ETA 30 s, 100 written (3.0 MiB)');
    p.keysDone = 1000;
    p.finishedAt = 20_000;
    expect(p.snapshot(99_000)).toMatchObject({ percent: 100, keysPerSecond: 50, etaSeconds: 0 });
    const empty = new DiffProgress('resyncing', 9n, 0);
    empty.keysTotal = 0;
    expect(empty.snapshot(0)).toMatchObject({ percent: 100, keysPerSecond: 0, etaSeconds: undefined });
  });
});

describe('displayKey: a key on a terminal', () => {
  it.each([
    ['/registry/secrets/kube-sys/real-target\r  /registry/configmaps/default/harmless-cache', '/registry/secrets/kube-sys/real-target\\x0d  /registry/configmaps/default/harmless-cache'],
    ['/registry/pods/apps/\x1b[2Kx', '/registry/pods/apps/\\x1b[2Kx'],
    ['/registry/pods/apps/a\u202eb', '/registry/pods/apps/a\\u202eb'],
    ['/registry/pods/apps/\x7f\u0085', '/registry/pods/apps/\\x7f\\x85'],
    ['/registry/pods/apps/ünïcode', '/registry/pods/apps/ünïcode'],
  ])('%j shows as %s', (key, shown) => {
    expect(displayKey(Buffer.from(key))).toBe(shown);
  });
  it('the text report escapes them; JSON keeps the key exact', () => {
    const hostile = Buffer.from('/registry/secrets/kube-sys/real-target\r  /registry/configmaps/default/harmless-cache');
    const r: CheckReport = {
      consistent: false,
      comparedAtRevision: 5n,
      primaryRevision: 5n,
      standbyRevision: 3n,
      mode: 'checkpoint',
      inScope: 1,
      findings: { missing: [], surplus: [hostile], different: [] },
      unreplicable: [],
      checkedAt: 0,
    };
    expect(formatText(r, prefix, 10)).toContain('  /registry/secrets/kube-sys/real-target\\x0d  /registry/configmaps/default/harmless-cache\n');
    expect(formatText(r, prefix, 10)).not.toContain('\r');
    expect(toJson(r).surplus).toEqual([hostile.toString()]);
  });
});
