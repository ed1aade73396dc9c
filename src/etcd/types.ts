/**
 * The etcd layer's own types, shared by the wire codec (codec.ts), the connection
 * (connection.ts) and the calls (kv.ts, watch.ts, lease.ts), so that none of those depends on
 * another only for a type.
 */

export interface KeyValue {
  key: Buffer;
  value: Buffer;
  modRevision: bigint;
  /** Lease ID as etcd prints it (decimal string); `'0'` for none. */
  lease: string;
}

export type WriteOp =
  | { type: 'put'; key: Buffer; value: Buffer; lease?: string }
  | { type: 'delete'; key: Buffer };

export interface Compare {
  key: Buffer;
  /** Enum names as in etcd's rpc.proto. */
  target: 'Value' | 'Version' | 'Mod' | 'Create' | 'Lease';
  result: 'Equal' | 'NotEqual' | 'Greater' | 'Less';
  value?: Buffer;
  version?: bigint;
}

export interface Header {
  revision: bigint;
  clusterId: string;
}

export interface EtcdTls {
  /** PEM CA bundle to verify the server. */
  ca?: Buffer;
  /** PEM client certificate and key for mTLS; both or neither. */
  cert?: Buffer;
  key?: Buffer;
}

/** How to reach one side of the pair. */
export interface EtcdSideConfig {
  /** `primary` or `standby`: used in every error and log line. */
  name: string;
  /** `http://host:port` or `https://host:port`, not mixed. */
  endpoints: string[];
  tls?: EtcdTls;
  auth?: { username: string; password: string };
  /**
   * The key whose read tells the side's revision and cluster ID (a count-only read of this one
   * key): one the side's user may read, e.g. the synced prefix on the primary and etcd-sync's own
   * checkpoint key on the standby. Absent: the key `\0`, which needs read on the whole keyspace.
   */
  probeKey?: Buffer;
}
