/**
 * Typed failures a user can meet. Each carries the process exit code the CLI
 * uses for it and whether the retry loop may try again.
 *
 * Exit codes (documented in the README):
 *   0  success / clean shutdown
 *   1  runtime failure not caused by the user's input
 *   2  usage, configuration, TLS or authentication error: fix the input and rerun
 */
export abstract class EtcdSyncError extends Error {
  abstract readonly retryable: boolean;
  abstract readonly exitCode: number;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Bad flags, environment or files. Never retried. */
export class ConfigError extends EtcdSyncError {
  readonly retryable = false;
  readonly exitCode = 2;
}

/** The TLS handshake with an endpoint failed (wrong CA, bad client cert, plain vs TLS). */
export class TlsError extends EtcdSyncError {
  readonly retryable = false;
  readonly exitCode = 2;
}

/** Wrong user or password, or a user without the needed permission. */
export class AuthError extends EtcdSyncError {
  readonly retryable = false;
  readonly exitCode = 2;
}

/** The endpoint cannot be reached now (down, restarting, network cut, no leader). */
export class UnreachableError extends EtcdSyncError {
  readonly retryable = true;
  readonly exitCode = 1;
}

/** A revision we needed has been compacted away on the primary. */
export class CompactedError extends EtcdSyncError {
  readonly retryable = false;
  readonly exitCode = 1;
  constructor(
    message: string,
    readonly compactRevision: bigint | undefined,
  ) {
    super(message);
  }
}

/**
 * The primary is not the history etcd-sync applied: its revision is below the applied one
 * (restored from an older backup) or its cluster ID changed (replaced). The engine resyncs from
 * the primary as it is now.
 */
export class PrimaryChangedError extends EtcdSyncError {
  readonly retryable = false;
  readonly exitCode = 1;
}

/** A write was refused because this instance is not allowed to write (deposed leader, promoted standby). */
export class FencedError extends EtcdSyncError {
  readonly retryable = false;
  readonly exitCode = 1;
}

/** A reply larger than the gRPC receive limit: the caller should ask for less. */
export class TooLargeError extends EtcdSyncError {
  readonly retryable = false;
  readonly exitCode = 1;
}

/**
 * The standby's checkpoint is not the value etcd-sync last wrote (another writer, or a write
 * whose answer was lost): streaming resumes from the checkpoint as the standby holds it.
 */
export class CheckpointChangedError extends EtcdSyncError {
  readonly retryable = true;
  readonly exitCode = 1;
}

/**
 * The endpoint answers, but is not an etcd gRPC endpoint, or speaks TLS to an http:// URL: a
 * configuration mistake. Retryable (an endpoint list may be fixed by DNS or a restart), logged as
 * an error each time; a one-shot command gives up with exit 2.
 */
export class WrongEndpointError extends EtcdSyncError {
  readonly retryable = true;
  readonly exitCode = 2;
}

/**
 * The etcd answers but takes no writes for now: its NOSPACE alarm is raised (database space
 * exceeded). An outage of that etcd, not a mistake in the request: retried until it takes writes
 * again (the operator compacts, defragments and disarms the alarm).
 */
export class WriteRefusedError extends EtcdSyncError {
  readonly retryable = true;
  readonly exitCode = 1;
}

/** A request over the etcd's --max-request-bytes: sent again as it is, it fails again. */
export class RequestTooLargeError extends EtcdSyncError {
  readonly retryable = false;
  readonly exitCode = 1;
}

/** Anything else etcd said no to. Retrying does not help. */
export class EtcdRequestError extends EtcdSyncError {
  readonly retryable = false;
  readonly exitCode = 1;
}

/** gRPC status codes (grpc/doc/statuscodes.md), as grpc-js reports them. */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
const { CANCELLED, DEADLINE_EXCEEDED, PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAUTHENTICATED, UNAVAILABLE } = GrpcStatus;

const TLS_HINTS = [
  'handshake',
  'certificate',
  'ssl',
  'tls',
  'self signed',
  'self-signed',
  'wrong version number',
  'unable to verify',
  'alert',
];

/**
 * Turns whatever the gRPC or etcd3 layer threw into one of the typed errors,
 * naming the side and endpoint so that a log line says where it happened.
 */
export function fromGrpcError(err: unknown, where: string): EtcdSyncError {
  if (err instanceof EtcdSyncError) return err;
  const e = err as { message?: unknown; code?: unknown; details?: unknown };
  const message = typeof e?.message === 'string' ? e.message : String(err);
  const details = typeof e?.details === 'string' ? e.details : '';
  // grpc-js errors carry `code`; an error passed along as text keeps "14 UNAVAILABLE: ..." in its message.
  const code = typeof e?.code === 'number' ? e.code : codeFromMessage(message);
  const text = `${message} ${details}`.toLowerCase();
  const cause = { cause: err };
  const short = oneLine(details || message);

  if (text.includes('authentication failed') || text.includes('invalid user id or password')) {
    return new AuthError(`${where}: authentication failed (wrong user or password)`, cause);
  }
  if (text.includes('permission denied') || code === PERMISSION_DENIED) {
    return new AuthError(`${where}: permission denied: ${short}`, cause);
  }
  if (text.includes('user name is empty') || code === UNAUTHENTICATED) {
    return new AuthError(`${where}: not authenticated (does the server require --*-user/--*-password?): ${short}`, cause);
  }
  if (text.includes('required revision has been compacted')) {
    return new CompactedError(`${where}: required revision has been compacted`, undefined);
  }
  if (text.includes('database space exceeded')) {
    return new WriteRefusedError(`${where}: refuses writes: database space exceeded (its NOSPACE alarm is raised: compact, defragment, then etcdctl alarm disarm)`, cause);
  }
  if (text.includes('request is too large')) {
    return new RequestTooLargeError(`${where}: request is too large for the etcd's --max-request-bytes`, cause);
  }
  if (code === RESOURCE_EXHAUSTED || text.includes('received message larger than max')) {
    return new TooLargeError(`${where}: reply too large: ${short}`, cause);
  }
  if (code === UNAVAILABLE || code === DEADLINE_EXCEEDED || code === CANCELLED) {
    if (TLS_HINTS.some((hint) => text.includes(hint))) {
      return new TlsError(`${where}: TLS handshake failed: ${short}`, cause);
    }
    return new UnreachableError(`${where}: unreachable: ${short}`, cause);
  }
  if (
    text.includes('no leader') ||
    text.includes('leader changed') ||
    text.includes('too many requests') ||
    text.includes('timed out') ||
    text.includes('server is stopped') ||
    text.includes('client_closed') ||
    text.includes('econnrefused') ||
    // A stream the server reset as it stopped (etcd 3.4 on shutdown: RST_STREAM with code 0).
    text.includes('rst_stream') ||
    text.includes('call ended without grpc status')
  ) {
    return new UnreachableError(`${where}: unavailable: ${short}`, cause);
  }
  return new EtcdRequestError(`${where}: ${short}`, cause);
}

function codeFromMessage(message: string): number | undefined {
  const m = /^(?:\w+: )?(\d{1,2}) [A-Z_]+:/.exec(message);
  return m ? Number(m[1]) : undefined;
}

function oneLine(s: string): string {
  return s.replace(/\s+/g, ' ').replace(/ Resolution note: ?$/, '').trim();
}

/** The message a user sees for an error: one line, no stack. */
export function describeError(err: unknown): string {
  if (err instanceof Error) return oneLine(err.message);
  return oneLine(String(err));
}
