/** The docs that are made from the code stay made from it. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { flagsDoc } from '../src/cli/flags-doc.js';

describe('docs/', () => {
  it('docs/flags.md is what `npm run docs:flags` writes from the current --help', () => {
    const committed = readFileSync('docs/flags.md', 'utf8');
    // A flag renamed, added or given another default changes the page: run `npm run docs:flags`.
    expect(committed).toBe(flagsDoc());
    expect(committed).toContain('--primary-endpoints <urls>');
    expect(committed).toContain('[env: ETCD_SYNC_PRIMARY_ENDPOINTS]');
    expect(committed).toMatch(/--max-txn-ops <n>[\s\S]*\(default: 128\)/);
  });
});
