import { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';

/**
 * JSON lines on stderr (stdout stays free for command output such as reports). Synchronous
 * writes so that the last lines before an exit are never lost. `pretty` (the bin sets it when
 * stderr is a terminal) turns each line into `HH:MM:SS LEVEL message key=value ...`.
 */
export function createLogger(level: string, bindings: Record<string, unknown> = {}, pretty = false, statusLine?: StatusLine): Logger {
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
      const text = chunk
        .toString()
        .split('\n')
        .filter((line) => line)
        .map((line) => `${prettyLine(line)}\n`)
        .join('');
      if (statusLine) statusLine.print(text);
      else out.write(text);
      done();
    },
  });
  return pino(options, stream);
}

/**
 * One line at the bottom of a terminal (a diff's progress) that log lines scroll above instead of
 * running into: each log line erases it, prints, and draws it again.
 */
export class StatusLine {
  private text = '';

  constructor(private readonly write: (text: string) => void) {}

  set(text: string): void {
    this.text = text;
    this.write(`\r\x1b[2K${text}`);
  }

  /** Erases the line for good (the diff ended). */
  clear(): void {
    if (!this.text) return;
    this.text = '';
    this.write('\r\x1b[2K');
  }

  /** Log lines, printed above the status line. */
  print(lines: string): void {
    this.write(this.text ? `\r\x1b[2K${lines}${this.text}` : lines);
  }
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
