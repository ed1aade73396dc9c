/**
 * etcd-sync's own watch stream on grpc-js. It exists because etcd3's Watcher resumes
 * after a reconnect from the last response header's revision + 1, which etcd stamps with
 * the store's current revision during catch-up, so events are lost. This stream never
 * reconnects by itself: the caller opens a new one from its last *applied* revision + 1.
 */
import type * as grpc from '@grpc/grpc-js';
import { CompactedError, UnreachableError, fromGrpcError } from '../errors.js';
import { WATCH_PROGRESS_REQUEST, type WatchResponse, decodeWatchResponse, encodeWatchCreateRequest, passThrough } from './codec.js';
import type { EtcdSide } from './connection.js';
import { withGrant } from './kv.js';

export interface WatchEvent {
  type: 'put' | 'delete';
  key: Buffer;
  /** Empty for deletes. */
  value: Buffer;
  modRevision: bigint;
  /** `'0'` for none. */
  lease: string;
}

export type WatchMessage =
  /** Events in revision order; `headerRevision` is the primary store's revision when they were sent. */
  | { kind: 'events'; events: WatchEvent[]; headerRevision: bigint }
  /** No event at or below `revision` is still to come (a progress notification). */
  | { kind: 'progress'; revision: bigint };

type Duplex = grpc.ClientDuplexStream<Buffer, WatchResponse>;

/** How long a watch without a silence timeout waits for etcd to confirm its creation. */
const WATCH_CREATE_TIMEOUT_MS = 30_000;

export interface WatchRequest {
  key: Buffer;
  rangeEnd: Buffer;
  startRevision: bigint;
  /**
   * The stream counts as dead when nothing arrives for this long: not the create's answer, no
   * event, no progress notification. A silent network path (packets dropped, no reset) fails no
   * call by itself; the caller asks for progress while idle, so a live stream always answers.
   * Without it, only grpc-js's keep-alive pings find a dead connection.
   */
  silenceTimeoutMs?: number;
}

export class WatchStream {
  private closed = false;
  /** Set when the stream was cancelled for its silence: what its reader then throws. */
  private silenced: UnreachableError | undefined;
  private lastMessageAt = Date.now();
  private silenceTimer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly side: EtcdSide,
    private readonly client: grpc.Client,
    private readonly call: Duplex,
    private readonly iterator: AsyncIterator<WatchResponse>,
    readonly startRevision: bigint,
    private readonly where: string,
  ) {}

  /**
   * Opens the stream and waits for etcd to confirm the watcher, at most `createTimeoutMs`
   * (default 30 s), and no longer than the signal allows: an unanswered create is retried
   * by the caller like any unreachable endpoint.
   */
  static async open(side: EtcdSide, request: WatchRequest, signal?: AbortSignal): Promise<WatchStream> {
    const createTimeoutMs = request.silenceTimeoutMs ?? WATCH_CREATE_TIMEOUT_MS;
    const { client, metadata, endpoint } = await side.streamClient();
    const where = `${side.name} etcd (${endpoint}) watch from revision ${request.startRevision}`;
    // Encoded and decoded by codec.ts: a watch at a few thousand events/s spent more CPU in
    // protobufjs (int64 through Long to string, object copies) than in anything else.
    const call: Duplex = client.makeBidiStreamRequest('/etcdserverpb.Watch/Watch', passThrough, decodeWatchResponse, metadata, {});
    call.on('error', () => undefined); // surfaced through the iterator
    const iterator = call[Symbol.asyncIterator]() as AsyncIterator<WatchResponse>;
    const stream = new WatchStream(side, client, call, iterator, request.startRevision, where);
    call.write(encodeWatchCreateRequest({ key: request.key, rangeEnd: request.rangeEnd, startRevision: request.startRevision, progressNotify: true }));
    let timer: NodeJS.Timeout | undefined;
    const giveUp = (why: string): void => {
      stream.close();
      failCreate?.(new UnreachableError(`${where}: ${why}`));
    };
    let failCreate: ((err: Error) => void) | undefined;
    const onAbort = (): void => giveUp('aborted');
    try {
      const first = await Promise.race([
        stream.nextRaw(),
        new Promise<never>((_resolve, reject) => {
          failCreate = reject;
          timer = setTimeout(() => giveUp(`no answer to the watch create within ${createTimeoutMs} ms`), createTimeoutMs);
          if (signal?.aborted) onAbort();
          else signal?.addEventListener('abort', onAbort, { once: true });
        }),
      ]);
      if (first === undefined) throw new UnreachableError(`${where}: stream ended before the watch was created`);
      stream.checkCanceled(first);
      if (!first.created) throw new UnreachableError(`${where}: unexpected first response`);
      if (request.silenceTimeoutMs !== undefined) stream.watchSilence(request.silenceTimeoutMs);
    } catch (err) {
      stream.close();
      throw withGrant(err, `read on the keys from ${JSON.stringify(request.key.toString('latin1'))} to ${JSON.stringify(request.rangeEnd.toString('latin1'))} (exclusive)`);
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
    return stream;
  }

  private async nextRaw(): Promise<WatchResponse | undefined> {
    try {
      const next = await this.iterator.next();
      if (this.silenced) throw this.silenced;
      this.lastMessageAt = Date.now();
      return next.done ? undefined : next.value;
    } catch (err) {
      if (this.silenced) throw this.silenced;
      if (this.closed) return undefined;
      throw fromGrpcError(err, this.where);
    }
  }

  /** Cancels the stream, failing its reader with UnreachableError, once nothing has arrived for `timeoutMs`. */
  private watchSilence(timeoutMs: number): void {
    this.silenceTimer = setInterval(() => {
      const silentMs = Date.now() - this.lastMessageAt;
      if (silentMs <= timeoutMs || this.closed) return;
      this.silenced = new UnreachableError(`${this.where}: no answer from the primary for ${Math.round(silentMs / 1000)} s (silent connection)`);
      clearInterval(this.silenceTimer);
      this.call.cancel();
    }, Math.min(1_000, Math.max(50, Math.floor(timeoutMs / 4))));
    this.silenceTimer.unref();
  }

  private checkCanceled(res: WatchResponse): void {
    if (res.compactRevision !== 0n) {
      throw new CompactedError(`${this.where}: revision compacted (compact revision ${res.compactRevision})`, res.compactRevision);
    }
    if (res.canceled) {
      throw fromGrpcError(new Error(res.cancelReason || 'watch canceled by the server'), this.where);
    }
  }

  /**
   * Messages until the stream fails (typed error) or is closed by `close()` (returns).
   * Compaction surfaces as CompactedError with the compact revision.
   */
  async *messages(): AsyncGenerator<WatchMessage> {
    let fragments: WatchResponse['events'] = [];
    for (;;) {
      const res = await this.nextRaw();
      if (res === undefined) {
        if (this.closed) return;
        throw new UnreachableError(`${this.where}: stream ended by the server`);
      }
      this.checkCanceled(res);
      if (res.fragment) {
        fragments = fragments.concat(res.events);
        continue;
      }
      const rawEvents = fragments.length > 0 ? fragments.concat(res.events) : res.events;
      fragments = [];
      if (rawEvents.length === 0) {
        if (!res.created && res.header.revision > 0n) yield { kind: 'progress', revision: res.header.revision };
        continue;
      }
      yield {
        kind: 'events',
        headerRevision: res.header.revision,
        events: rawEvents.map((e) => ({ type: e.type, key: e.kv.key, value: e.kv.value, modRevision: e.kv.modRevision, lease: e.kv.lease })),
      };
    }
  }

  /** Asks etcd for a progress notification; it answers once this watcher has caught up. */
  requestProgress(): void {
    if (!this.closed) this.call.write(WATCH_PROGRESS_REQUEST);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.silenceTimer);
    this.call.cancel();
    this.side.dropStreamClient(this.client);
  }
}
