/** The Pod's HTTP surface: /metrics, /healthz, /readyz, /status, /check. */
import { type Server, createServer } from 'node:http';
import type { Logger } from 'pino';
import { ConfigError, describeError } from './errors.js';
import type { Registry } from 'prom-client';

export interface HttpHandlers {
  registry: Registry;
  /** Whether to answer /readyz with 200, and the reason its body gives. */
  ready(): { ready: boolean; reason: string };
  status(): object;
  /** The latest check as `etcd-sync check --output json` prints it (runs one when there is none); undefined: /check is off. */
  check?: () => Promise<object>;
}

export interface HttpServer {
  port: number;
  close(): Promise<void>;
}

export function parseAddress(address: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(address);
  if (!m || Number(m[2]) > 65535) throw new Error(`'${address}' is not host:port`);
  return { host: (m[1] ?? '').replace(/^\[|\]$/g, '') || '0.0.0.0', port: Number(m[2]) };
}

export async function startHttp(address: string, handlers: HttpHandlers, log: Logger): Promise<HttpServer> {
  const { host, port } = parseAddress(address);
  const json = (res: import('node:http').ServerResponse, code: number, body: object): void => {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(`${JSON.stringify(body)}\n`);
  };
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    void (async () => {
      try {
        // Read-only surface: anything but GET and HEAD is refused before any work is done.
        if (req.method !== 'GET' && req.method !== 'HEAD') {
          res.writeHead(405, { 'content-type': 'text/plain', allow: 'GET, HEAD' });
          res.end('method not allowed\n');
          return;
        }
        if (path === '/metrics') {
          res.writeHead(200, { 'content-type': handlers.registry.contentType });
          res.end(await handlers.registry.metrics());
        } else if (path === '/healthz') {
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.end('ok\n');
        } else if (path === '/readyz') {
          const { ready, reason } = handlers.ready();
          res.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' });
          res.end(`${ready ? 'ready' : 'not ready'}: ${reason}\n`);
        } else if (path === '/status') {
          json(res, 200, handlers.status());
        } else if (path === '/check' && handlers.check) {
          json(res, 200, await handlers.check());
        } else {
          res.writeHead(404, { 'content-type': 'text/plain' });
          res.end('not found\n');
        }
      } catch (err) {
        log.warn({ path, err: describeError(err) }, 'http request failed');
        if (!res.headersSent) json(res, 503, { error: describeError(err) });
        else res.end();
      }
    })();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new ConfigError(`--http-address ${address}: ${err.code === 'EADDRINUSE' ? 'address already in use' : (err.code ?? err.message)}`)),
    );
    server.listen(port, host, () => resolve());
  });
  const bound = server.address();
  const actualPort = typeof bound === 'object' && bound ? bound.port : port;
  log.info({ address: `${host}:${actualPort}` }, 'http listening');
  return {
    port: actualPort,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
