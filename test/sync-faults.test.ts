/** Each etcd restarted under load, and an etcd unreachable at start: nothing lost once it is back. */
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EtcdServer } from './helpers/etcd.js';
import { usePair } from './helpers/pair.js';
import { type RunningEngine, inScope, runCli, startEngine, waitInSync } from './helpers/sync.js';
import { waitFor } from './helpers/wait.js';

describe('etcd restarts under load', () => {
  let primary: EtcdServer;
  let standby: EtcdServer;
  let p: Etcd3;
  let s: Etcd3;
  let running: RunningEngine | undefined;

  const pair = usePair();
  beforeAll(() => ({ primary, standby, p, s } = pair));
  afterAll(async () => {
    await running?.stop();
  });

  /** Writes puts and deletes until stopped, retrying each write while the primary is down. */
  function startWriter(prefix: string): { stop(): Promise<number>; count(): number } {
    let stopping = false;
    let n = 0;
    const done = (async () => {
      for (let i = 0; !stopping; i++) {
        const key = `${prefix}/k-${i % 300}`;
        for (;;) {
          try {
            if (i % 5 === 4) await p.delete().key(key).exec();
            else await p.put(key).value(`v${i}`).exec();
            break;
          } catch {
            if (stopping) return;
            await new Promise((r) => setTimeout(r, 50));
          }
        }
        n++;
      }
    })();
    return {
      count: () => n,
      async stop() {
        stopping = true;
        await done;
        return n;
      },
    };
  }

  it('the standby etcd restarted while writes stream: equal afterwards', async () => {
    running = startEngine(primary, standby);
    await waitFor(() => running!.engine.state === 'streaming', { timeoutMs: 30_000 });
    const writer = startWriter('/registry/configmaps/load-a');
    await waitFor(() => writer.count() > 300, { timeoutMs: 30_000 });
    await standby.stop();
    const during = writer.count();
    await waitFor(() => writer.count() > during + 300, { timeoutMs: 30_000 });
    await standby.launch();
    await waitFor(() => writer.count() > during + 600, { timeoutMs: 30_000 });
    await writer.stop();
    await waitInSync(p, s);
  });

  it('the primary etcd restarted while writes stream: equal afterwards', async () => {
    const writer = startWriter('/registry/configmaps/load-b');
    await waitFor(() => writer.count() > 300, { timeoutMs: 30_000 });
    await primary.stop();
    await primary.launch();
    const after = writer.count();
    await waitFor(() => writer.count() > after + 300, { timeoutMs: 30_000 });
    await writer.stop();
    await waitInSync(p, s);
    expect(Object.keys(await inScope(s)).filter((k) => k.includes('/load-b/')).length).toBeGreaterThan(0);
    await running!.stop();
    running = undefined;
  });

  it('a primary unreachable at start is retried with backoff, then synced', async () => {
    await primary.stop();
    await p.put('/registry/configmaps/x/never').value('n').exec().catch(() => undefined);
    const cli = runCli(['run', ...primary.cliArgs('primary'), ...standby.cliArgs('standby')]);
    try {
      await cli.waitForLog('connect to primary failed, retrying');
      expect(cli.child.exitCode).toBeNull();
      await primary.launch();
      // The test's own etcd3 client keeps its default circuit breaker open for 5 s after failures.
      await waitFor(async () => {
        await p.put('/registry/configmaps/x/after-restart').value('yes').exec();
        return true;
      }, { timeoutMs: 20_000, intervalMs: 500 });
      await cli.waitForLog('streaming from revision');
      await waitInSync(p, s);
    } finally {
      cli.child.kill('SIGTERM');
      await cli.exited;
    }
  });
});
