/**
 * Pure streaming comparison of two key-ordered sequences of key-values. Memory is
 * bounded by one page of each side, whatever the keyspace size.
 */
import type { KeyValue } from '../etcd/kv.js';

export type Finding =
  | { kind: 'equal'; primary: KeyValue; standby: KeyValue }
  | { kind: 'missing'; primary: KeyValue }
  | { kind: 'different'; primary: KeyValue; standby: KeyValue }
  | { kind: 'surplus'; standby: KeyValue };

/** Pages of key-values in ascending byte order of key, as etcd returns them. */
export type Pages = AsyncIterable<readonly KeyValue[]>;

async function* flatten(pages: Pages): AsyncGenerator<KeyValue> {
  for await (const page of pages) yield* page;
}

/**
 * Yields one finding per key present on either side, in key order.
 * `same` decides whether two versions of a key are equal (value bytes, lease mapping).
 */
export async function* mergeJoin(
  primary: Pages,
  standby: Pages,
  same: (primary: KeyValue, standby: KeyValue) => boolean,
): AsyncGenerator<Finding> {
  const p = flatten(primary);
  const s = flatten(standby);
  let pNext = await p.next();
  let sNext = await s.next();
  while (!pNext.done || !sNext.done) {
    if (sNext.done) {
      yield { kind: 'missing', primary: pNext.value as KeyValue };
      pNext = await p.next();
      continue;
    }
    if (pNext.done) {
      yield { kind: 'surplus', standby: sNext.value };
      sNext = await s.next();
      continue;
    }
    const order = Buffer.compare(pNext.value.key, sNext.value.key);
    if (order < 0) {
      yield { kind: 'missing', primary: pNext.value };
      pNext = await p.next();
    } else if (order > 0) {
      yield { kind: 'surplus', standby: sNext.value };
      sNext = await s.next();
    } else {
      const kind = same(pNext.value, sNext.value) ? 'equal' : 'different';
      yield { kind, primary: pNext.value, standby: sNext.value };
      pNext = await p.next();
      sNext = await s.next();
    }
  }
}

/** Drops key-values the predicate rejects, keeping pages. */
export async function* filterPages(pages: Pages, keep: (kv: KeyValue) => boolean): AsyncGenerator<KeyValue[]> {
  for await (const page of pages) {
    const kept = page.filter(keep);
    if (kept.length > 0) yield kept;
  }
}
