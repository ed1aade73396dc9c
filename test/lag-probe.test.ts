// The bench's lag probe: which arrival delivers which write (pure, no etcd).
import { describe, expect, it } from 'vitest';
import { PROBE_KEYS, deliveries, lastWritesUnseen } from '../bench/lag.js';

/** [id, issuedAt, the primary's revision, seenAt]; undefined: no reply, or never arrived. */
type Write = [number, number, number | undefined, number | undefined];

/**
 * Writes 0 and PROBE_KEYS go to the same key. The ids between them, each the only write to its
 * key, are filled in as applied and seen at once.
 */
function probe(writes: Write[]) {
  const issued = Math.max(...writes.map(([id]) => id)) + 1;
  const issuedAt: number[] = [];
  const revisionOf: (number | undefined)[] = [];
  const seenAt: (number | undefined)[] = [];
  for (let id = 0; id < issued; id++) {
    issuedAt[id] = id;
    revisionOf[id] = 1000 + id;
    seenAt[id] = id + 1;
  }
  for (const [id, at, revision, seen] of writes) {
    issuedAt[id] = at;
    revisionOf[id] = revision;
    seenAt[id] = seen;
  }
  return { lag: deliveries(issued, issuedAt, revisionOf, seenAt).slice(0, issued), unseenLast: lastWritesUnseen(issued, revisionOf, seenAt) };
}

const A = 0;
const B = PROBE_KEYS; // same key as A, issued later

describe('lag probe deliveries', () => {
  it.each<{ case: string; writes: Write[]; lagA: number | undefined; lagB: number | undefined; unseenLast: boolean }>([
    {
      case: 'each write seen itself',
      writes: [[A, 0, 10, 5], [1, 1, 11, 7], [B, 2, 12, 9]],
      lagA: 5, lagB: 7, unseenLast: false,
    },
    {
      case: 'coalesced: only the later write to the key arrives, and delivers the earlier one',
      writes: [[A, 0, 10, undefined], [B, 2, 12, 30]],
      lagA: 30, lagB: 28, unseenLast: false,
    },
    {
      case: 'reordered: B applied before A, only A (the last by revision) arrives, delivering both',
      writes: [[A, 0, 12, 40], [B, 2, 10, undefined]],
      lagA: 40, lagB: 38, unseenLast: false,
    },
    {
      case: "reordered: only B arrives, the primary's last write A never does",
      writes: [[A, 0, 12, undefined], [B, 2, 10, 20]],
      lagA: undefined, lagB: 18, unseenLast: true,
    },
    {
      case: 'an earlier arrival of the later write counts for the earlier one',
      writes: [[A, 0, 10, 50], [B, 2, 12, 30]],
      lagA: 30, lagB: 28, unseenLast: false,
    },
    {
      case: 'a write without a reply counts only its own arrival',
      writes: [[A, 0, undefined, undefined], [B, 2, 12, 30]],
      lagA: undefined, lagB: 28, unseenLast: false,
    },
  ])('$case', ({ writes, lagA, lagB, unseenLast }) => {
    const result = probe(writes);
    expect(result.lag[A]).toBe(lagA);
    expect(result.lag[B]).toBe(lagB);
    expect(result.unseenLast).toBe(unseenLast);
  });
});
