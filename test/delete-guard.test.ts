/** The delete guard's arithmetic and its flag, as tables. The held standby itself: test/delete-guard-hold.test.ts. */
import { describe, expect, it } from 'vitest';
import { DELETE_GUARD_MIN_KEYS, DeleteGuard, type DeleteGuardRule, parseDeleteGuard } from '../src/sync/delete-guard.js';
import type { WatchEvent } from '../src/etcd/watch.js';
import { parseDuration } from '../src/cli/options/common.js';

const prefix = Buffer.from('/registry/');
const del = (key: string, rev: number): WatchEvent => ({ type: 'delete', key: Buffer.from(key), value: Buffer.alloc(0), modRevision: BigInt(rev), lease: '0' });
const put = (key: string, rev: number): WatchEvent => ({ type: 'put', key: Buffer.from(key), value: Buffer.from('v'), modRevision: BigInt(rev), lease: '0' });
const window = (ms: string): number => parseDuration('--delete-guard')(ms);

function guard(rule: string, inScopeKeys: number): DeleteGuard {
  return new DeleteGuard(parseDeleteGuard(rule, window) as DeleteGuardRule, prefix, () => inScopeKeys, (key) => !key.toString().includes('/kube-system/'));
}

describe('--delete-guard', () => {
  it.each([
    ['5%/1m', { keys: DELETE_GUARD_MIN_KEYS, percent: 5, windowMs: 60_000, text: '5%/1m' }],
    ['0.5%/30s', { keys: DELETE_GUARD_MIN_KEYS, percent: 0.5, windowMs: 30_000, text: '0.5%/30s' }],
    ['2000/5m', { keys: 2000, percent: undefined, windowMs: 300_000, text: '2000/5m' }],
    [' off ', undefined],
  ])('%s', (text, rule) => {
    expect(parseDeleteGuard(text, window)).toEqual(rule);
  });

  it.each([
    ['5%', "--delete-guard must be off, <keys>/<window> or <percent>%/<window> (e.g. 5%/1m or 2000/5m), not '5%'"],
    ['on', "--delete-guard must be off, <keys>/<window> or <percent>%/<window> (e.g. 5%/1m or 2000/5m), not 'on'"],
    ['0%/1m', '--delete-guard: the percentage must be above 0 and at most 100, not 0%'],
    ['150%/1m', '--delete-guard: the percentage must be above 0 and at most 100, not 150%'],
    ['0/1m', '--delete-guard: the number of keys must be a whole number of at least 1, not 0'],
    ['1.5/1m', '--delete-guard: the number of keys must be a whole number of at least 1, not 1.5'],
    ['10/forever', '--delete-guard must be a duration like 500ms, 30s, 10m or 1h.'],
  ])('refuses %s', (text, message) => {
    expect(() => parseDeleteGuard(text, window)).toThrow(message);
  });
});

describe('DeleteGuard', () => {
  it('a percentage of the in-scope keys, never fewer than the floor', () => {
    expect(guard('5%/1m', 100_000).threshold()).toBe(5000);
    expect(guard('5%/1m', 1000).threshold()).toBe(DELETE_GUARD_MIN_KEYS);
    expect(guard('150/1m', 1_000_000).threshold()).toBe(150);
  });

  it('admits up to the threshold, then cuts at the first event of the revision that crosses it', () => {
    const g = guard('3/1m', 0);
    const events = [put('/registry/pods/a/p0', 10), del('/registry/pods/a/p1', 11), del('/registry/pods/a/p2', 12), del('/registry/pods/a/p3', 13), put('/registry/pods/a/p4', 13), del('/registry/pods/a/p5', 13), del('/registry/pods/a/p6', 14)];
    expect(g.admit(events.slice(0, 3), 0)).toBeUndefined(); // 2 deletes
    // Revision 13 (a delete, a put, a delete) takes the window from 2 to 4, over 3: cut at its first event.
    expect(g.admit(events.slice(3), 1000)).toEqual({
      cut: 0,
      burst: { burstRevision: 13n, heldRevision: 12n, deletes: 4, threshold: 3, inScopeKeys: 0, rule: '3/1m' },
    });
    const atThreshold = guard('3/1m', 0);
    expect(atThreshold.admit(events.slice(0, 3), 0)).toBeUndefined();
    expect(atThreshold.admit([del('/registry/pods/a/x', 13)], 0)).toBeUndefined(); // 3 deletes: at the threshold, not over
  });

  it('one revision that deletes many keys at once is cut whole', () => {
    const g = guard('3/1m', 0);
    const burst = [put('/registry/pods/a/x', 20), ...Array.from({ length: 5 }, (_, i) => del(`/registry/pods/a/q${i}`, 21))];
    expect(g.admit(burst, 0)).toMatchObject({ cut: 1, burst: { burstRevision: 21n, heldRevision: 20n, deletes: 5 } });
  });

  it('events delivered again (a watch opened again from the applied revision) are not counted twice', () => {
    const g = guard('3/1m', 0);
    const first = [del('/registry/pods/a/p1', 11), del('/registry/pods/a/p2', 12)];
    expect(g.admit(first, 0)).toBeUndefined();
    // The watch broke before 11 and 12 were applied: they arrive again, then 13.
    expect(g.admit([...first, del('/registry/pods/a/p3', 13)], 10)).toBeUndefined();
    expect(g.admit([del('/registry/pods/a/p4', 14)], 20)).toMatchObject({ cut: 0, burst: { burstRevision: 14n, deletes: 4 } });
  });

  it('the window slides: the same deletes spread over time never trip it', () => {
    const g = guard('3/1m', 0);
    for (let i = 0; i < 20; i++) expect(g.admit([del(`/registry/pods/a/p${i}`, 100 + i)], i * 25_000)).toBeUndefined();
  });

  it('Events, excluded namespaces, puts and accepted deletes do not count', () => {
    const g = guard('2/1m', 0);
    g.exemptThrough = 50n;
    const events = [
      ...Array.from({ length: 10 }, (_, i) => del(`/registry/events/apps/e${i}`, 60 + i)),
      ...Array.from({ length: 10 }, (_, i) => del(`/registry/pods/kube-system/k${i}`, 70 + i)),
      ...Array.from({ length: 10 }, (_, i) => del(`/registry/pods/apps/old${i}`, 40 + i)),
      ...Array.from({ length: 10 }, (_, i) => put(`/registry/pods/apps/p${i}`, 80 + i)),
      del('/registry/pods/apps/p1', 90),
      del('/registry/pods/apps/p2', 91),
    ].sort((a, b) => Number(a.modRevision - b.modRevision));
    expect(g.admit(events, 0)).toBeUndefined();
    expect(g.admit([del('/registry/pods/apps/p3', 92)], 1)).toMatchObject({ cut: 0, burst: { burstRevision: 92n, deletes: 3 } });
  });
});
