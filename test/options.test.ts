/** The options' bounds, through the CLI's own parser: every value a timer cannot hold is refused in one line. */
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../src/cli/program.js';
import { type RunConfig, RUN_DEFAULTS, runConfig } from '../src/cli/options/run.js';
import { controlConfig } from '../src/cli/options/control.js';

const SIDES = ['--primary-endpoints', 'http://127.0.0.1:2379', '--standby-endpoints', 'http://127.0.0.1:2380'];

/** The run config for these flags, or the one-line error the CLI would print. */
function parseRun(args: string[]): RunConfig | string {
  let config: RunConfig | string | undefined;
  const program = buildProgram({}, ({ options }) => {
    try {
      config = runConfig(options, { identity: 'test', version: 'test', tty: false });
    } catch (err) {
      config = (err as Error).message; // a ConfigError: the line the CLI prints
    }
  });
  program.configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
  for (const cmd of program.commands) cmd.configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
  try {
    program.parse(['run', ...SIDES, ...args], { from: 'user' });
  } catch (err) {
    return (err as Error).message;
  }
  if (!config) throw new Error('run did not parse');
  return config;
}

describe('-o, --output', () => {
  it('every command takes -o/--output text|json', () => {
    const program = buildProgram({}, () => undefined);
    const leaves = (cmd: typeof program): (typeof program)[] => (cmd.commands.length === 0 ? [cmd] : cmd.commands.flatMap(leaves));
    const commands = leaves(program);
    expect(commands.map((c) => c.name()).sort()).toEqual(['check', 'merge', 'pause', 'promote', 'resume', 'run', 'status', 'unfence', 'verify']);
    for (const cmd of commands) {
      const output = cmd.options.find((o) => o.long === '--output');
      expect([cmd.name(), output?.short, output?.argChoices]).toEqual([cmd.name(), '-o', ['text', 'json']]);
    }
  });

  it('run: text on a terminal, json otherwise, unless -o says', () => {
    const at = (tty: boolean, args: string[]): string => {
      let output = '';
      buildProgram({}, ({ options }) => {
        output = runConfig(options, { identity: 'test', version: 'test', tty }).output;
      }).parse(['run', ...SIDES, ...args], { from: 'user' });
      return output;
    };
    expect([at(true, []), at(false, []), at(true, ['-o', 'json']), at(false, ['--output', 'text'])]).toEqual(['text', 'json', 'json', 'text']);
  });
});

describe('--delete-guard', () => {
  it('default 5%/1m; off; a number of keys; a bad value is one line naming the flag', () => {
    const guard = (args: string[]): unknown => {
      const r = parseRun(args);
      return typeof r === 'string' ? r : r.deleteGuard;
    };
    expect(guard([])).toEqual({ keys: 100, percent: 5, windowMs: 60_000, text: '5%/1m' });
    expect(guard(['--delete-guard', 'off'])).toBeUndefined();
    expect(guard(['--delete-guard', '2000/5m'])).toEqual({ keys: 2000, percent: undefined, windowMs: 300_000, text: '2000/5m' });
    expect(guard(['--delete-guard', '5%'])).toBe("--delete-guard must be off, <keys>/<window> or <percent>%/<window> (e.g. 5%/1m or 2000/5m), not '5%'");
    expect(guard(['--delete-guard', '5%/500ms'])).toBe('--delete-guard must be at least 1s, not 500ms.');
  });
});

describe('duration flags', () => {
  it.each([
    [['--check-interval', '600h'], "error: option '--check-interval <duration>' argument '600h' is invalid. --check-interval must be at most 596h (about 24 days), not 600h."],
    [['--check-interval', '1ms'], "error: option '--check-interval <duration>' argument '1ms' is invalid. --check-interval must be at least 1s (or 0 for off), not 1ms."],
    [['--check-interval', '999ms'], "error: option '--check-interval <duration>' argument '999ms' is invalid. --check-interval must be at least 1s (or 0 for off), not 999ms."],
    [['--heal-delay', '10ms'], "error: option '--heal-delay <duration>' argument '10ms' is invalid. --heal-delay must be at least 100ms, not 10ms."],
    [['--heal-delay', '2147484s'], "error: option '--heal-delay <duration>' argument '2147484s' is invalid. --heal-delay must be at most 596h (about 24 days), not 2147484s."],
    [['--primary-timeout', '500ms'], "error: option '--primary-timeout <duration>' argument '500ms' is invalid. --primary-timeout must be at least 1s, not 500ms."],
    [['--check-interval', 'soon'], "error: option '--check-interval <duration>' argument 'soon' is invalid. --check-interval must be a duration like 500ms, 30s, 10m or 1h."],
  ])('%j is refused: %s', (args, message) => {
    expect(parseRun(args)).toBe(message);
  });

  it.each([
    [['--check-interval', '0'], { checkIntervalMs: 0 }],
    [['--check-interval', '1s'], { checkIntervalMs: 1_000 }],
    [['--check-interval', '596h'], { checkIntervalMs: 596 * 3_600_000 }],
    [['--heal-delay', '100ms'], { healDelayMs: 100 }],
    [['--primary-timeout', '1s'], { primaryTimeoutMs: 1_000 }],
    [[], { checkIntervalMs: RUN_DEFAULTS.checkIntervalMs, healDelayMs: RUN_DEFAULTS.healDelayMs, primaryTimeoutMs: RUN_DEFAULTS.primaryTimeoutMs }],
  ])('%j is taken: %j', (args, expected) => {
    expect(parseRun(args)).toMatchObject(expected);
  });
});

describe('scope and control keys', () => {
  it('--key-prefix /registry means /registry/', () => {
    const config = parseRun(['--key-prefix', '/registry']);
    expect(typeof config === 'string' ? config : config.scope.keyPrefix.toString()).toBe('/registry/');
  });

  it.each([
    [['--checkpoint-key', '/etcd-sync/leader'], '--checkpoint-key /etcd-sync/leader is etcd-sync\'s own leader key: choose another'],
    [['--checkpoint-key', '/registry/pods/default/x'], "--checkpoint-key /registry/pods/default/x: etcd-sync's keys beside it (/registry/pods/default/x) must be outside --key-prefix /registry/"],
    [['--checkpoint-key', '/registry/cp'], "--checkpoint-key /registry/cp: etcd-sync's keys beside it (/registry/cp) must be outside --key-prefix /registry/"],
    [['--key-prefix', '/k8s', '--checkpoint-key', '/k8s/sync/checkpoint'], "--checkpoint-key /k8s/sync/checkpoint: etcd-sync's keys beside it (/k8s/sync/checkpoint) must be outside --key-prefix /k8s/"],
    [['--checkpoint-key', '/registry'], "--checkpoint-key /registry: etcd-sync's keys beside it (/registry/leases/) must be outside --key-prefix /registry/"],
    [['--checkpoint-key', 'relative'], "--checkpoint-key must be a key starting with '/' (not ending with it), got 'relative'"],
    [['--key-prefix', '/'], "--key-prefix must start with '/' and name a directory, got '/'"],
  ])('run %j is refused: %s', (args, message) => {
    expect(parseRun(args)).toBe(message);
  });

  it('the control commands validate the checkpoint key the same way', () => {
    let error = '';
    const program = buildProgram({}, ({ command, options }) => {
      try {
        controlConfig(command.path as 'pause', options);
      } catch (err) {
        error = (err as Error).message;
      }
    });
    program.parse(['pause', '--standby-endpoints', 'http://127.0.0.1:2380', '--checkpoint-key', '/registry/pods/default/x'], { from: 'user' });
    expect(error).toBe("--checkpoint-key /registry/pods/default/x: etcd-sync's keys beside it (/registry/pods/default/x) must be outside --key-prefix /registry/");
  });
});
