import pino, { type Logger } from 'pino';

/**
 * JSON lines on stderr (stdout stays free for command output such as reports). Synchronous
 * writes so that the last lines before an exit are never lost.
 */
export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  return pino(
    {
      level,
      base: { ...bindings },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ fd: 2, sync: true }),
  );
}

export type { Logger };
