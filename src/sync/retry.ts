import type { Logger } from 'pino';
import { EtcdSyncError, describeError } from '../errors.js';

export interface RetryOptions {
  log: Logger;
  signal?: AbortSignal;
  /** First delay; doubles per attempt. Default 200 ms. */
  initialDelayMs?: number;
  /** Cap of the delay. Default 10 s. */
  maxDelayMs?: number;
  /** Give up after this many attempts (one-shot commands). Default: never give up. */
  maxAttempts?: number;
  /** Told of each failure that will be retried (e.g. to show an outage while it lasts). */
  onRetry?: (err: unknown) => void;
}

export class AbortedError extends Error {
  constructor() {
    super('aborted');
    this.name = 'AbortedError';
  }
}

export function isRetryable(err: unknown): boolean {
  return err instanceof EtcdSyncError && err.retryable;
}

/** Resolves after `ms`, or early (false) when the signal aborts. */
export function delay(ms: number, signal?: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve(false);
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Runs `fn` until it succeeds or fails with an error that is not retryable, waiting with
 * capped exponential backoff between attempts. Never gives up on a retryable error: an
 * etcd that comes back is caught up with, and nothing is lost meanwhile. Stops with
 * AbortedError when the signal aborts between attempts.
 */
export async function withRetry<T>(what: string, fn: () => Promise<T>, options: RetryOptions): Promise<T> {
  let delayMs = options.initialDelayMs ?? 200;
  const maxDelayMs = options.maxDelayMs ?? 10_000;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!isRetryable(err) || attempt >= (options.maxAttempts ?? Infinity)) throw err;
      options.onRetry?.(err);
      // A configuration mistake that may yet be fixed outside (an endpoint) is an error, not a warning.
      const level = err instanceof EtcdSyncError && err.exitCode === 2 ? 'error' : 'warn';
      options.log[level]({ attempt, retryInMs: delayMs, err: describeError(err) }, `${what} failed, retrying`);
      if (!(await delay(delayMs, options.signal))) throw new AbortedError();
      delayMs = Math.min(maxDelayMs, delayMs * 2);
    }
  }
}

/** A retry bound to its options: what every module that reads etcd is handed. */
export type Retry = <T>(what: string, fn: () => Promise<T>) => Promise<T>;

export function retrier(options: RetryOptions): Retry {
  return (what, fn) => withRetry(what, fn, options);
}

/** A one-shot command (check, the control commands, encryption) gives up on an unreachable etcd after a few tries. */
export const ONE_SHOT_RETRY = { maxAttempts: 4, maxDelayMs: 2_000 } as const;
