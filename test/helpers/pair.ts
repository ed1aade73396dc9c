/** The per-file etcd pair fixture. Only tests import this (it needs vitest); the demo and bench use etcd.ts. */
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll } from 'vitest';
import { type EtcdServer, startPair } from './etcd.js';
import type { TlsFiles } from './tls.js';

export interface Pair {
  primary: EtcdServer;
  standby: EtcdServer;
  /** Root clients for seeding and inspecting each side. */
  p: Etcd3;
  s: Etcd3;
}

/**
 * A primary/standby pair for the whole test file: started before its tests, with a client to
 * each side, stopped and removed after them. Read the fields inside hooks and tests.
 */
export function usePair(options: { tls?: TlsFiles; rootPassword?: string } = {}): Pair {
  const pair = {} as Pair;
  beforeAll(async () => {
    const started = await startPair(options);
    Object.assign(pair, started, { p: started.primary.client(), s: started.standby.client() });
  });
  afterAll(async () => {
    pair.p?.close();
    pair.s?.close();
    await Promise.all([pair.primary?.destroy(), pair.standby?.destroy()]);
  });
  return pair;
}
