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

/** Walks pages one key-value at a time; awaits only when a page is used up. */
class Cursor {
  private page: readonly KeyValue[] = [];
  private index = 0;
  private done = false;

  constructor(private readonly pages: AsyncIterator<readonly KeyValue[]>) {}

  /** The current key-value, or undefined at the end; loads the next page if needed. */
  async peek(): Promise<KeyValue | undefined> {
    while (this.index >= this.page.length && !this.done) {
      const next = await this.pages.next();
      if (next.done) this.done = true;
      else {
        this.page = next.value;
        this.index = 0;
      }
    }
    return this.page[this.index];
  }

  /** The current key-value without loading: undefined when the page is used up. */
  current(): KeyValue | undefined {
    return this.page[this.index];
  }

  advance(): void {
    this.index++;
  }
}

/**
 * Yields the findings in key order, one finding per key present on either side, in
 * batches (one per stretch that needs no new page): a for-await step per key cost more
 * than the comparison. `same` decides whether two versions of a key are equal (value
 * bytes, lease mapping).
 */
export async function* mergeJoin(
  primary: Pages,
  standby: Pages,
  same: (primary: KeyValue, standby: KeyValue) => boolean,
): AsyncGenerator<Finding[]> {
  const p = new Cursor(primary[Symbol.asyncIterator]());
  const s = new Cursor(standby[Symbol.asyncIterator]());
  for (;;) {
    let pkv = await p.peek();
    let skv = await s.peek();
    if (pkv === undefined && skv === undefined) return;
    const batch: Finding[] = [];
    // Until either side's page runs out (then peek again, which may await).
    while (pkv !== undefined || skv !== undefined) {
      if (skv === undefined) {
        batch.push({ kind: 'missing', primary: pkv as KeyValue });
        p.advance();
      } else if (pkv === undefined) {
        batch.push({ kind: 'surplus', standby: skv });
        s.advance();
      } else {
        const order = Buffer.compare(pkv.key, skv.key);
        if (order < 0) {
          batch.push({ kind: 'missing', primary: pkv });
          p.advance();
        } else if (order > 0) {
          batch.push({ kind: 'surplus', standby: skv });
          s.advance();
        } else {
          batch.push({ kind: same(pkv, skv) ? 'equal' : 'different', primary: pkv, standby: skv });
          p.advance();
          s.advance();
        }
      }
      const pNext = p.current();
      const sNext = s.current();
      // A side whose page is used up may still have pages: stop the batch and load.
      if ((pNext === undefined && pkv !== undefined) || (sNext === undefined && skv !== undefined)) break;
      pkv = pNext;
      skv = sNext;
    }
    yield batch;
  }
}

/** Drops key-values the predicate rejects, keeping pages. */
export async function* filterPages(pages: Pages, keep: (kv: KeyValue) => boolean): AsyncGenerator<KeyValue[]> {
  for await (const page of pages) {
    const kept = page.filter(keep);
    if (kept.length > 0) yield kept;
  }
}
