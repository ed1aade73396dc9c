/**
 * What answers at an http:// endpoint that gRPC cannot talk to ("Protocol error", "Failed to
 * connect" after the TCP connection was made): first a TLS handshake (a server that completes it,
 * or answers it with a TLS alert, speaks TLS), then a plain HTTP/1.1 request for etcd's /version
 * (an etcd answers with its version; anything else that answers is not etcd). Used only to name
 * a configuration mistake: the wrong scheme, or an endpoint that is not etcd at all.
 */
import net from 'node:net';
import tls from 'node:tls';

export type EndpointDiagnosis = 'tls' | 'not-etcd' | 'etcd' | 'unknown';

const DIAGNOSE_TIMEOUT_MS = 2_000;

export async function diagnoseEndpoint(endpoint: string): Promise<EndpointDiagnosis> {
  const url = new URL(endpoint);
  if (url.protocol !== 'http:') return 'unknown';
  if (await speaksTls(url)) return 'tls';
  return askVersion(url);
}

function speaksTls(url: URL): Promise<boolean> {
  return new Promise((resolve) => {
    // Only to see whether the server speaks TLS: nothing is sent over this connection.
    const socket = tls.connect({ host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port), rejectUnauthorized: false, ALPNProtocols: ['h2'] });
    const done = (yes: boolean): void => {
      socket.destroy();
      resolve(yes);
    };
    socket.setTimeout(DIAGNOSE_TIMEOUT_MS, () => done(false));
    socket.on('secureConnect', () => done(true));
    socket.on('error', (err: Error) => done(/alert|certificate/i.test(err.message)));
  });
}

function askVersion(url: URL): Promise<EndpointDiagnosis> {
  return new Promise((resolve) => {
    let reply = '';
    const socket = net.connect(Number(url.port), url.hostname.replace(/^\[|\]$/g, ''));
    const done = (diagnosis: EndpointDiagnosis): void => {
      socket.destroy();
      resolve(diagnosis);
    };
    socket.setTimeout(DIAGNOSE_TIMEOUT_MS, () => done(classify(reply)));
    socket.on('connect', () => socket.write(`GET /version HTTP/1.1\r\nHost: ${url.host}\r\nConnection: close\r\n\r\n`));
    socket.on('data', (chunk: Buffer) => {
      reply += chunk.toString('latin1');
      if (reply.length > 4096) done(classify(reply));
    });
    socket.on('end', () => done(classify(reply)));
    socket.on('error', () => done(classify(reply)));
  });
}

function classify(reply: string): EndpointDiagnosis {
  if (reply === '') return 'unknown';
  if (/HTTP request to an HTTPS server/i.test(reply) || reply.startsWith('\x15\x03')) return 'tls';
  if (/"etcdserver"/.test(reply)) return 'etcd';
  return 'not-etcd';
}
