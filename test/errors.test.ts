/** fromGrpcError: what grpc-js and etcd report, turned into the typed errors the retry loop reads. */
import { describe, expect, it } from 'vitest';
import { AuthError, CompactedError, EtcdRequestError, TlsError, TooLargeError, UnreachableError, fromGrpcError } from '../src/errors.js';

/** An error as grpc-js raises it: numeric code, details, and "<code> <NAME>: <details>" as the message. */
const grpcError = (code: number, name: string, details: string): Error => Object.assign(new Error(`${code} ${name}: ${details}`), { code, details });

describe('fromGrpcError', () => {
  it.each([
    ['unreachable', grpcError(14, 'UNAVAILABLE', 'No connection established. Last error: connect ECONNREFUSED 127.0.0.1:2379'), UnreachableError, true],
    ['deadline', grpcError(4, 'DEADLINE_EXCEEDED', 'Deadline exceeded after 30.001s'), UnreachableError, true],
    ['TLS', grpcError(14, 'UNAVAILABLE', 'No connection established. Last error: self-signed certificate in certificate chain'), TlsError, false],
    ['wrong password', grpcError(3, 'INVALID_ARGUMENT', 'etcdserver: authentication failed, invalid user ID or password'), AuthError, false],
    ['permission', grpcError(7, 'PERMISSION_DENIED', 'etcdserver: permission denied'), AuthError, false],
    ['no token', grpcError(16, 'UNAUTHENTICATED', 'etcdserver: user name is empty'), AuthError, false],
    ['compacted', grpcError(11, 'OUT_OF_RANGE', 'etcdserver: mvcc: required revision has been compacted'), CompactedError, false],
    ['too large', grpcError(8, 'RESOURCE_EXHAUSTED', 'Received message larger than max (300000000 vs 268435456)'), TooLargeError, false],
    ['no leader', grpcError(2, 'UNKNOWN', 'etcdserver: no leader'), UnreachableError, true],
    ['too many requests', grpcError(2, 'UNKNOWN', 'etcdserver: too many requests'), UnreachableError, true],
    ['lease not found', grpcError(5, 'NOT_FOUND', 'etcdserver: requested lease not found'), EtcdRequestError, false],
    ['code only in the text', new Error('14 UNAVAILABLE: read ECONNRESET'), UnreachableError, true],
  ])('%s', (_name, err, type, retryable) => {
    const typed = fromGrpcError(err, 'primary etcd (http://127.0.0.1:2379) range');
    expect(typed).toBeInstanceOf(type);
    expect(typed.retryable).toBe(retryable);
    expect(typed.message).toMatch(/^primary etcd \(http:\/\/127\.0\.0\.1:2379\) range: /);
    expect(typed.message).not.toContain('\n');
  });
});

describe('a stream the server reset as it stopped', () => {
  it('is unreachable (retried), not a request error: etcd 3.4 resets its watches with RST_STREAM code 0 on shutdown', () => {
    const err = Object.assign(new Error('13 INTERNAL: Received RST_STREAM with code 0 (Call ended without gRPC status)'), { code: 13, details: 'Received RST_STREAM with code 0 (Call ended without gRPC status)' });
    const typed = fromGrpcError(err, 'primary etcd (http://127.0.0.1:2379) watch from revision 203');
    expect(typed).toBeInstanceOf(UnreachableError);
    expect(typed.retryable).toBe(true);
  });
});
