/** The test helper that starts etcd: a server is ready only when it is the one answering on its port. */
import { afterAll, describe, expect, it } from 'vitest';
import { EtcdServer } from './helpers/etcd.js';

describe('EtcdServer (test helper)', () => {
  let first: EtcdServer | undefined;
  afterAll(async () => {
    await first?.destroy();
  });

  it('an etcd whose client port another etcd holds is not taken for ready: it fails with the bind error', async () => {
    first = await EtcdServer.start({ name: 'first' });
    // The race the parallel test files run into: the port is taken between freePort and the bind.
    // Before the helper checked the member answering, the first etcd's answer made this one "ready".
    await expect(EtcdServer.start({ name: 'second', clientPort: first.clientPort })).rejects.toThrow(/etcd second exited: .*address already in use/s);
    const client = first.client();
    try {
      const { members } = await client.cluster.memberList({});
      expect(members.map((member) => member.name)).toEqual([expect.stringMatching(/^first-\d+-\d+$/)]);
    } finally {
      client.close();
    }
  });
});
