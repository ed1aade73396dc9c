/**
 * A TCP proxy to an etcd endpoint that forwards, resets new connections, or freezes: keeps every
 * socket open and forwards nothing, as a silent network partition does (packets dropped, no
 * reset). The kernel's netem is not available here; this is the honest way to make that fault.
 */
import net from 'node:net';
import { freePort } from './etcd.js';

export class Proxy {
  mode: 'forward' | 'reset' | 'freeze' = 'forward';
  /** Connections accepted. */
  accepted = 0;
  /** Connections the client side closed. */
  closedByClient = 0;
  /** Bytes received from clients (forwarded or not). */
  bytesFromClients = 0;
  /** Bytes etcd sent to clients. */
  bytesToClients = 0;
  /** Once etcd has sent this many bytes to clients, the proxy holds (see hold()). */
  holdAfterBytes: number | undefined;
  /** Whether the proxy holds now. */
  held = false;
  private readonly sockets = new Set<net.Socket>();
  private readonly upstreams = new Set<net.Socket>();

  /**
   * Stops reading from etcd without losing a byte (TCP flow control holds the rest, as a very
   * slow link would); release() goes on where it stopped. Unlike freeze, the connections survive.
   */
  hold(): void {
    this.held = true;
    for (const s of this.upstreams) s.pause();
  }

  release(): void {
    this.held = false;
    this.holdAfterBytes = undefined;
    for (const s of this.upstreams) s.resume();
  }
  private constructor(
    private readonly server: net.Server,
    readonly endpoint: string,
  ) {}

  static async start(target: string): Promise<Proxy> {
    const { hostname, port } = new URL(target);
    const listenPort = await freePort();
    const server = net.createServer();
    const proxy = new Proxy(server, `http://127.0.0.1:${listenPort}`);
    server.on('connection', (client) => {
      proxy.accepted++;
      if (proxy.mode === 'reset') return client.resetAndDestroy();
      const upstream = net.connect(Number(port), hostname);
      proxy.sockets.add(client).add(upstream);
      proxy.upstreams.add(upstream);
      if (proxy.held) upstream.pause();
      upstream.on('data', (chunk: Buffer) => {
        proxy.bytesToClients += chunk.length;
        if (proxy.holdAfterBytes !== undefined && !proxy.held && proxy.bytesToClients >= proxy.holdAfterBytes) proxy.hold();
      });
      client.on('data', (chunk: Buffer) => (proxy.bytesFromClients += chunk.length));
      for (const [from, to] of [
        [client, upstream],
        [upstream, client],
      ] as const) {
        from.on('data', (chunk) => {
          if (proxy.mode !== 'freeze') to.write(chunk);
        });
        from.on('error', () => to.destroy());
      }
      client.on('close', () => {
        proxy.closedByClient++;
        proxy.sockets.delete(client);
        upstream.destroy();
      });
      upstream.on('close', () => {
        proxy.sockets.delete(upstream);
        proxy.upstreams.delete(upstream);
        client.destroy();
      });
    });
    await new Promise<void>((resolve) => server.listen(listenPort, '127.0.0.1', resolve));
    return proxy;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }
}
