/** Turns parsed options into one validated, typed configuration. Errors name the flag. */
import { readFileSync } from 'node:fs';
import { ConfigError } from '../errors.js';
import type { EtcdSideConfig } from '../etcd/connection.js';
import { type ScopeRules, startsWith } from '../scope.js';
import type { MergeConfig, VerifyConfig } from './encryption.js';
import type { ControlConfig } from './control.js';

export interface RunConfig {
  primary: EtcdSideConfig;
  standby: EtcdSideConfig;
  scope: ScopeRules;
  checkpointKey: Buffer;
  maxTxnOps: number;
  maxTxnBytes: number;
  writeConcurrency: number;
  pageSize: number;
  prune: boolean;
  logLevel: string;
  /** Periodic check and repair; 0 = off. */
  checkIntervalMs: number;
  healDelayMs: number;
  /** Streaming txns in flight. */
  streamTxnsInFlight: number;
  /** The standby's EncryptionConfiguration file, to check written encrypted values. */
  encryptionConfigFile?: string;
  /** undefined: no HTTP server. */
  httpAddress?: string;
  identity: string;
  /** etcd-sync's own version (package.json's, from bin/), in the first log line and etcd_sync_build_info. */
  version: string;
  readyMaxLag: number;
  leaseTtlSeconds: number;
}

export interface CheckConfig {
  primary: EtcdSideConfig;
  standby: EtcdSideConfig;
  scope: ScopeRules;
  checkpointKey: Buffer;
  pageSize: number;
  maxTxnOps: number;
  maxTxnBytes: number;
  output: 'text' | 'json';
  limit: number;
  repair: boolean;
  prune: boolean;
  yes: boolean;
  dryRun: boolean;
  settleMs: number;
  logLevel: string;
}

type Options = Record<string, unknown>;

function str(options: Options, key: string): string | undefined {
  const v = options[key];
  return typeof v === 'string' && v.length > 0 ? v : undefined;
}

function camel(flag: string): string {
  return flag.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
}

function readPem(flag: string, file: string): Buffer {
  let data: Buffer;
  try {
    data = readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new ConfigError(`cannot read ${flag} ${file}: ${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code}`);
  }
  if (!data.toString('latin1').includes('-----BEGIN ')) {
    throw new ConfigError(`${flag} ${file} is not a PEM file`);
  }
  return data;
}

export function parseEndpoints(flag: string, value: string): string[] {
  const endpoints = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (endpoints.length === 0) throw new ConfigError(`${flag} is empty`);
  for (const endpoint of endpoints) {
    let url: URL;
    try {
      url = new URL(endpoint);
    } catch {
      throw new ConfigError(`${flag}: '${endpoint}' is not a URL (expected http://host:port or https://host:port)`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new ConfigError(`${flag}: '${endpoint}' must start with http:// or https://`);
    }
    if (!url.port) throw new ConfigError(`${flag}: '${endpoint}' has no port (etcd listens on 2379)`);
    if (url.pathname !== '/' && url.pathname !== '') throw new ConfigError(`${flag}: '${endpoint}' must not have a path`);
  }
  const secure = endpoints.map((e) => e.startsWith('https://'));
  if (secure.some((s) => s) && !secure.every((s) => s)) {
    throw new ConfigError(`${flag}: mixes http:// and https:// endpoints`);
  }
  return endpoints;
}

/** Connection settings of one side from `--<side>-*` options. */
export function sideConfig(options: Options, side: string, flagPrefix = `${side}-`): EtcdSideConfig {
  const flag = (name: string): string => `--${flagPrefix}${name}`;
  const get = (name: string): string | undefined => str(options, camel(`${flagPrefix}${name}`));
  const endpointsValue = get('endpoints');
  const envHint = `ETCD_SYNC_${`${flagPrefix}endpoints`.toUpperCase().replace(/-/g, '_')}`;
  if (!endpointsValue) throw new ConfigError(`missing ${flag('endpoints')} (or ${envHint})`);
  const endpoints = parseEndpoints(flag('endpoints'), endpointsValue);
  const secure = endpoints[0]?.startsWith('https://') ?? false;
  const cacert = get('cacert');
  const cert = get('cert');
  const key = get('key');
  if ((cert === undefined) !== (key === undefined)) {
    throw new ConfigError(`${flag('cert')} and ${flag('key')} go together: give both or neither`);
  }
  if (!secure && (cacert || cert)) {
    throw new ConfigError(`${flag(cacert ? 'cacert' : 'cert')} given, but ${flag('endpoints')} are http:// (use https://)`);
  }
  const config: EtcdSideConfig = { name: side, endpoints };
  if (secure) {
    config.tls = {
      ...(cacert ? { ca: readPem(flag('cacert'), cacert) } : {}),
      ...(cert ? { cert: readPem(flag('cert'), cert) } : {}),
      ...(key ? { key: readPem(flag('key'), key) } : {}),
    };
  }
  const user = get('user');
  const password = get('password');
  if ((user === undefined) !== (password === undefined)) {
    throw new ConfigError(`${flag('user')} and ${flag('password')} go together: give both or neither`);
  }
  if (user !== undefined && password !== undefined) config.auth = { username: user, password };
  return config;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export function scopeConfig(options: Options): { scope: ScopeRules; checkpointKey: Buffer } {
  const keyPrefix = str(options, 'keyPrefix');
  if (!keyPrefix || !keyPrefix.startsWith('/')) throw new ConfigError(`--key-prefix must start with '/', got '${keyPrefix ?? ''}'`);
  const namespaces = (options.excludeNamespace as string[] | undefined) ?? [];
  for (const ns of namespaces) {
    if (!DNS_LABEL.test(ns)) throw new ConfigError(`--exclude-namespace: '${ns}' is not a valid namespace name`);
  }
  const prefixes = (options.excludePrefix as string[] | undefined) ?? [];
  for (const prefix of prefixes) {
    if (!prefix.startsWith('/')) throw new ConfigError(`--exclude-prefix: '${prefix}' must start with '/'`);
  }
  const checkpointKey = Buffer.from(str(options, 'checkpointKey') ?? '');
  const prefixBuf = Buffer.from(keyPrefix);
  if (checkpointKey.length === 0) throw new ConfigError('--checkpoint-key is empty');
  if (startsWith(checkpointKey, prefixBuf)) {
    throw new ConfigError(`--checkpoint-key ${checkpointKey.toString()} must be outside --key-prefix ${keyPrefix}`);
  }
  return {
    scope: { keyPrefix: prefixBuf, excludeNamespaces: new Set(namespaces), excludePrefixes: prefixes.map((p) => Buffer.from(p)) },
    checkpointKey,
  };
}

function maxTxnOps(options: Options): number {
  const n = Number(options.maxTxnOps);
  // A streaming txn's compares: the checkpoint chain (one) and the leader's fence (two, the
  // leader key and the fenced key; see Supervisor.fence). Compares cannot be nested away.
  if (n < 3) throw new ConfigError(`--max-txn-ops must be at least 3 (a write carries up to 3 compares), not ${n}`);
  return n;
}

export function runConfig(options: Options): RunConfig {
  return {
    primary: sideConfig(options, 'primary'),
    standby: sideConfig(options, 'standby'),
    ...scopeConfig(options),
    maxTxnOps: maxTxnOps(options),
    maxTxnBytes: Number(options.maxTxnBytes),
    writeConcurrency: Number(options.writeConcurrency),
    pageSize: Number(options.pageSize),
    prune: options.prune === true,
    logLevel: String(options.logLevel ?? 'info'),
    checkIntervalMs: Number(options.checkInterval),
    healDelayMs: Number(options.healDelay),
    streamTxnsInFlight: Number(options.streamTxns),
    ...(str(options, 'encryptionConfig') ? { encryptionConfigFile: str(options, 'encryptionConfig') as string } : {}),
    ...httpConfig(options),
    identity: str(options, 'identity') ?? 'etcd-sync',
    version: str(options, 'version') ?? 'unknown',
    readyMaxLag: Number(options.readyMaxLag ?? 1000),
    leaseTtlSeconds: Number(options.leaseTtl ?? 15),
  };
}

export function checkConfig(options: Options): CheckConfig {
  return {
    primary: sideConfig(options, 'primary'),
    standby: sideConfig(options, 'standby'),
    ...scopeConfig(options),
    pageSize: Number(options.pageSize),
    maxTxnOps: maxTxnOps(options),
    maxTxnBytes: Number(options.maxTxnBytes),
    output: options.output === 'json' ? 'json' : 'text',
    limit: Number(options.limit),
    repair: options.repair === true || options.prune === true,
    prune: options.prune === true,
    yes: options.yes === true,
    dryRun: options.dryRun === true,
    settleMs: Number(options.settle),
    logLevel: String(options.logLevel ?? 'warn'),
  };
}

export function mergeConfig(options: Options): MergeConfig {
  return {
    primaryFile: String(options.primary),
    standbyFile: String(options.standby),
    ...(str(options, 'output') ? { outputFile: str(options, 'output') as string } : {}),
    ...(str(options, 'standbyEndpoints') ? { standby: sideConfig(options, 'standby') } : {}),
    keyPrefix: Buffer.from('/registry/'),
  };
}

export function verifyConfig(options: Options): VerifyConfig {
  const keyPrefix = str(options, 'keyPrefix') ?? '/registry/';
  if (!keyPrefix.startsWith('/')) throw new ConfigError(`--key-prefix must start with '/', got '${keyPrefix}'`);
  return {
    configFile: String(options.config),
    side: sideConfig(options, 'this', ''),
    keyPrefix: Buffer.from(keyPrefix),
    output: options.output === 'json' ? 'json' : 'text',
    limit: Number(options.limit),
    pageSize: Number(options.pageSize),
  };
}

function httpConfig(options: Options): { httpAddress?: string } {
  const address = str(options, 'httpAddress');
  if (!address || address === 'off') return {};
  if (!/^(\[[0-9a-fA-F:]+\]|[^:\s]*):\d{1,5}$/.test(address) || Number(address.split(':').pop()) > 65535) {
    throw new ConfigError(`--http-address must be host:port (or "off"), got '${address}'`);
  }
  return { httpAddress: address };
}

export function controlConfig(command: ControlConfig['command'], options: Options): ControlConfig {
  const checkpointKey = Buffer.from(str(options, 'checkpointKey') ?? '/etcd-sync/checkpoint');
  return {
    command,
    standby: sideConfig(options, 'standby'),
    ...(str(options, 'primaryEndpoints') ? { primary: sideConfig(options, 'primary') } : {}),
    checkpointKey,
    scope: command === 'promote' ? scopeConfig(options).scope : { keyPrefix: Buffer.from('/registry/'), excludeNamespaces: new Set(), excludePrefixes: [] },
    force: options.force === true,
    output: options.output === 'json' ? 'json' : 'text',
  };
}
