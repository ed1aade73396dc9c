import { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';

/**
 * JSON lines on stderr (stdout stays free for command output such as reports). Synchronous
 * writes so that the last lines before an exit are never lost. `pretty` (the bin sets it when
 * stderr is a terminal) turns each line into `HH:MM:SS LEVEL message key=value ...`.
 */
export function createLogger(level: string, bindings: Record<string, unknown> = {}, pretty = false): Logger {
  const options = {
    level,
    base: { ...bindings },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  if (!pretty) return pino(options, pino.destination({ fd: 2, sync: true }));
  const out = pino.destination({ fd: 2, sync: true });
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line) out.write(`${prettyLine(line)}\n`);
      done();
    },
  });
  return pino(options, stream);
}

const SKIP = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'cmd']);

/** One JSON log line as a person reads it. Lines that are not JSON pass through. */
export function prettyLine(line: string): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  const time = typeof entry.time === 'string' ? entry.time.slice(11, 19) : '';
  const fields = Object.entries(entry)
    .filter(([key]) => !SKIP.has(key))
    .map(([key, value]) => `${key}=${typeof value === 'string' && !/\s/.test(value) ? value : JSON.stringify(value)}`);
  return [time, String(entry.level ?? '').toUpperCase().padEnd(5), String(entry.msg ?? ''), ...fields].filter((s) => s !== '').join(' ');
}

export type { Logger };
