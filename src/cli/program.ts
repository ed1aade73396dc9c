/**
 * The command-line parser, built from the command table (commands.ts). Every flag can also come
 * from the environment as ETCD_SYNC_<FLAG_IN_UPPER_SNAKE> (e.g. --primary-endpoints ←
 * ETCD_SYNC_PRIMARY_ENDPOINTS), shown beside each flag in --help; a flag on the command line
 * wins. The environment is passed in, never read here.
 */
import { Command, Help, type Option } from 'commander';
import { ConfigError } from '../errors.js';
import { COMMANDS, type CommandSpec, GROUPS } from './commands.js';
import { type Env, type Options, envName } from './options/common.js';

export { envName };

export interface ParsedCommand {
  name: string;
  command: CommandSpec;
  options: Options;
}

const HELP_HINT = '(run with --help for usage)';

/**
 * Builds the program. `onCommand` receives the chosen command and its options (flags, then
 * environment, then defaults); `version` is what `--version` prints.
 */
export function buildProgram(env: Env, onCommand: (parsed: ParsedCommand) => unknown, version?: string): Command {
  const program = new Command('etcd-sync').description("Keeps a standby Kubernetes control plane's etcd a live copy of the primary's");
  if (version !== undefined) program.version(version, '-V, --version', "print etcd-sync's version and exit");
  const groups = new Map<string, Command>();
  for (const spec of COMMANDS) {
    const words = spec.path.split(' ');
    let parent = program;
    for (const group of words.slice(0, -1)) {
      let cmd = groups.get(group);
      if (cmd === undefined) {
        cmd = new Command(group).description(GROUPS[group] ?? '');
        groups.set(group, cmd);
        parent.addCommand(cmd);
      }
      parent = cmd;
    }
    const cmd = spec.addOptions(new Command(words[words.length - 1]).description(spec.description));
    cmd.action(async (_opts: unknown, command: Command) => {
      applyEnv(command, env);
      await onCommand({ name: spec.path, command: spec, options: command.opts() });
    });
    parent.addCommand(cmd);
  }
  const wire = (cmd: Command): void => {
    cmd.exitOverride();
    cmd.showHelpAfterError(HELP_HINT);
    cmd.configureHelp({ optionDescription: describeOption });
    for (const sub of cmd.commands) wire(sub);
  };
  wire(program);
  return program;
}

/** commander's description of a flag, with its ETCD_SYNC_* variable. */
function describeOption(this: Help, option: Option): string {
  const base = Help.prototype.optionDescription.call(this, option);
  if (option.long === '--help' || option.long === '--version') return base;
  return `${base} [env: ${envName(option)}]`;
}

/** Fills options not given on the command line from ETCD_SYNC_* variables. */
export function applyEnv(cmd: Command, env: Env): void {
  for (const option of cmd.options) {
    const key = option.attributeName();
    const raw = env[envName(option)];
    if (raw === undefined || raw === '' || cmd.getOptionValueSource(key) === 'cli') continue;
    let value: unknown = raw;
    if (option.isBoolean()) {
      if (!/^(1|true|yes|0|false|no)$/i.test(raw)) throw new ConfigError(`${envName(option)} must be true or false, got '${raw}'`);
      value = /^(1|true|yes)$/i.test(raw);
    } else if (option.argChoices && !option.argChoices.includes(raw)) {
      throw new ConfigError(`${envName(option)} must be one of ${option.argChoices.join(', ')}, got '${raw}'`);
    } else if (option.parseArg) {
      try {
        value = option.parseArg(raw, undefined as never);
      } catch (err) {
        throw new ConfigError(`${envName(option)}: ${(err as Error).message.replace(/^error: /, '')}`);
      }
    }
    cmd.setOptionValueWithSource(key, value, 'env');
  }
}
