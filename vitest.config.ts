import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    // Each file starts its own etcd pair; 3 files at a time keeps 2 cores busy without starving etcd.
    poolOptions: { forks: { maxForks: 3, minForks: 1 } },
    testTimeout: 120_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});
