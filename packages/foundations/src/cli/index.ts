/**
 * The command line every Foundations service shares: `-c/--config FILE` (repeatable),
 * `-g/--generate FILE|-`, `--check`, `-h/--help`, `-v/--version`, `--restart` (when the settings
 * have a `restart` section) and the app's own options.
 *
 * Order of work in `runService`: parse arguments → help/version/generate (no settings needed
 * beyond the files given) → load settings → check or restart mode → telemetry → `main`.
 * A user's mistake (bad flag, bad config) prints one line to stderr and exits 2, never a stack
 * trace; an unexpected failure while starting is logged with its stack and exits 1. The exit
 * code is set through `process.exitCode`, so pending output is flushed.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import type { z } from 'zod';
import { FND_ERR, FoundationsError, isFoundationsError } from '../errors.ts';
import { runRestarter, withResolvedRestartSocket } from '../restart/index.ts';
import type { ServiceInfo } from '../service-info.ts';
import { checkSettings, type SettingsProblem, withOrigins } from '../settings/checks.ts';
import { generateYaml, toJsonSchema } from '../settings/generate.ts';
import {
  formatIssue,
  mergeSources,
  parseSettings,
  readYamlFile,
  SettingsError,
  type SettingsIssue,
} from '../settings/load.ts';
import { type Infer, settingsNode } from '../settings/schema.ts';
import { initTelemetry, log, type Telemetry, type TelemetrySettingsValue } from '../telemetry/index.ts';
import { isWorkerProcess } from '../workers/role.ts';

/** An app-defined command-line option, in `node:util` `parseArgs` style plus help text. */
export interface AppOption {
  readonly type: 'string' | 'boolean';
  /** One-letter alias, e.g. `w` for `-w`. */
  readonly short?: string;
  /** Allow the option more than once; its value is then an array. */
  readonly multiple?: boolean;
  /** Value when the option is not given. */
  readonly default?: string | boolean | readonly string[] | readonly boolean[];
  /** One line for `--help`. */
  readonly description: string;
  /** Placeholder for the value in `--help` (default `VALUE`). */
  readonly valueName?: string;
}

/** The app's options, by long name. */
export type AppOptions = Readonly<Record<string, AppOption>>;

/** The parsed values of `O`: booleans default to false, lists to `[]`, strings to `undefined`. */
export type OptionValues<O extends AppOptions> = {
  -readonly [K in keyof O]: O[K]['type'] extends 'boolean'
    ? O[K]['multiple'] extends true
      ? boolean[]
      : boolean
    : O[K]['multiple'] extends true
      ? string[]
      : O[K] extends { default: string }
        ? string
        : string | undefined;
};

/** What `main` receives. */
export interface MainContext<S extends z.ZodType, O extends AppOptions> {
  /** The settings: defaults with every `-c` file merged over them, validated. */
  readonly settings: Infer<S>;
  /** The app's own options. */
  readonly options: OptionValues<O>;
  /** The `-c` files, in the order given. */
  readonly configFiles: readonly string[];
  /** Telemetry, started from `settings.telemetry` (null if the schema has no such section). */
  readonly telemetry: Telemetry | null;
}

/** A service: who it is, its settings schema, its options and its `main`. */
export interface ServiceSpec<S extends z.ZodType, O extends AppOptions = Record<never, never>> {
  readonly info: ServiceInfo;
  /** The settings schema (`s.object`); should have a `telemetry` section and may have `restart`. */
  readonly settings: S;
  readonly options?: O;
  /**
   * Checks the parsed settings beyond their schema, as start-up would (files readable,
   * directories present, values the program cannot use), without opening, creating or binding
   * anything. Runs for `--check`, `--restart` and before `main`, after Foundations' own checks
   * (`restart.socket`, `telemetry.logging.file`). Return every problem; the CLI names the file
   * that set each key and exits 2.
   */
  check?(settings: Infer<S>): readonly SettingsProblem[];
  /**
   * Settings that start but will not work as the user most likely means (a target every
   * connection to would be refused), in the same form as `check`'s problems. They do not stop
   * anything: `--check` and `--restart` print each as a `warning:` line on stderr, and a start
   * logs each once at WARN (the supervisor of `workers: N`, not each worker).
   */
  warnings?(settings: Infer<S>): readonly SettingsProblem[];
  /**
   * Runs the service, after settings are loaded and telemetry is up. The returned promise is
   * the service's life: when it settles, telemetry shuts down and the process may exit.
   */
  main(ctx: MainContext<S, O>): void | Promise<void>;
}

/** What the command line asks for, as decided by `parseCli`. */
export type CliCommand<S extends z.ZodType, O extends AppOptions> =
  | { readonly kind: 'help'; readonly text: string }
  | { readonly kind: 'version'; readonly text: string }
  | { readonly kind: 'generate'; readonly target: string; readonly yaml: string }
  /** `--schema`: the settings' JSON Schema, for editors (the generated YAML points at it). */
  | { readonly kind: 'schema'; readonly text: string }
  | {
      readonly kind: 'check';
      readonly configFiles: readonly string[];
      readonly warnings: readonly SettingsIssue[];
    }
  | ({ readonly kind: 'restart' | 'run'; readonly warnings: readonly SettingsIssue[] } & Omit<
      MainContext<S, O>,
      'telemetry'
    >);

const BUILT_IN = {
  config: { type: 'string', short: 'c', multiple: true },
  generate: { type: 'string', short: 'g' },
  check: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'v' },
  restart: { type: 'boolean' },
  schema: { type: 'boolean' },
} as const;

const BUILT_IN_HELP: readonly [string, string, string][] = [
  ['config', 'FILE', 'Merge settings from a YAML file over the defaults (repeatable; later files win).'],
  [
    'generate',
    'FILE',
    'Write the complete annotated config to FILE ("-" for stdout), with NAME.schema.json beside it, and exit.',
  ],
  [
    'check',
    '',
    'Run every check a start runs short of binding sockets, and exit (0: the settings would start).',
  ],
  ['schema', '', "Print the settings' JSON Schema (for editors: save it as NAME.schema.json) and exit."],
  [
    'restart',
    '',
    'Restart the running instance gracefully: the one at the restart.socket of the -c files given here (by default ' +
      'named after the files, so give those it was started with; without -c, the only one running). The new process ' +
      'loads the -c files given (without -c, the files it was started with); exits 0 once it is ready, naming the ' +
      'files it loaded.',
  ],
  ['help', '', 'Show this help and exit.'],
  ['version', '', 'Print the version and exit.'],
];

function hasRestart(schema: z.ZodType): boolean {
  const node = settingsNode(schema);
  return node?.kind === 'object' && 'restart' in node.shape;
}

function userError(message: string): FoundationsError {
  return new FoundationsError(FND_ERR.CLI, message, { userError: true });
}

/** The `--help` text. */
export function helpText<S extends z.ZodType, O extends AppOptions>(spec: ServiceSpec<S, O>): string {
  const rows: [string, string][] = [];
  const flag = (name: string, short: string | undefined, value: string) =>
    `${short === undefined ? '    ' : `-${short}, `}--${name}${value === '' ? '' : ` ${value}`}`;
  for (const [name, value, text] of BUILT_IN_HELP) {
    if (name === 'restart' && !hasRestart(spec.settings)) continue;
    const short = (BUILT_IN[name as keyof typeof BUILT_IN] as { short?: string }).short;
    rows.push([flag(name, short, value), text]);
  }
  const appRows: [string, string][] = Object.entries(spec.options ?? {}).map(([name, o]) => [
    flag(name, o.short, o.type === 'string' ? (o.valueName ?? 'VALUE') : ''),
    o.description + (o.default !== undefined ? ` (default: ${JSON.stringify(o.default)})` : ''),
  ]);
  const width = Math.max(...[...rows, ...appRows].map(([f]) => f.length)) + 2;
  const lines = (rs: [string, string][]) => rs.map(([f, t]) => `  ${f.padEnd(width)}${t}`);
  const { name, version, description } = spec.info;
  const out = [
    `${name} ${version}: ${description}`,
    '',
    `Usage: ${name} [options]`,
    '',
    'Options:',
    ...lines(rows),
  ];
  if (appRows.length > 0) out.push('', `${name} options:`, ...lines(appRows));
  return `${out.join('\n')}\n`;
}

function parseArgv<O extends AppOptions>(argv: readonly string[], schema: z.ZodType, appOptions: O) {
  const options: NonNullable<ParseArgsConfig['options']> = { ...BUILT_IN };
  if (!hasRestart(schema)) delete options.restart;
  for (const [name, o] of Object.entries(appOptions)) {
    const clash =
      name in BUILT_IN || Object.values(BUILT_IN).some((b) => 'short' in b && b.short === o.short);
    if (clash) throw new TypeError(`cli: app option "${name}" clashes with a built-in option`);
    options[name] = {
      type: o.type,
      multiple: o.multiple ?? false,
      ...(o.short === undefined ? {} : { short: o.short }),
      ...(o.default === undefined ? {} : { default: o.default as string }),
    };
  }
  try {
    return parseArgs({ args: [...argv], options, strict: true, allowPositionals: false }).values;
  } catch (e) {
    const msg = e instanceof Error ? e.message.split('. ')[0]! : String(e);
    throw userError(`${msg.charAt(0).toLowerCase()}${msg.slice(1)} (see --help)`);
  }
}

/**
 * Decides what the command line asks for, loading and validating the settings when needed.
 * Never exits or prints: throws `FoundationsError` (`FND_ERR_CLI`) for bad arguments and
 * `SettingsError` for bad settings, both with `userError` set.
 */
export function parseCli<S extends z.ZodType, O extends AppOptions = Record<never, never>>(
  argv: readonly string[],
  spec: ServiceSpec<S, O>,
): CliCommand<S, O> {
  const values = parseArgv(argv, spec.settings, spec.options ?? ({} as O));
  if (values.help === true) return { kind: 'help', text: helpText(spec) };
  if (values.version === true) return { kind: 'version', text: `${spec.info.name} ${spec.info.version}\n` };
  if (values.schema === true) return { kind: 'schema', text: schemaText(spec) };
  const configFiles = (values.config ?? []) as string[];
  const sources = configFiles.map((file) => ({ source: file, value: readYamlFile(file) }));
  const settings = parseSettings(spec.settings, sources);
  if (typeof values.generate === 'string') {
    if (values.generate === '') throw userError('--generate needs a file name, or "-" for stdout');
    const { name, version, description } = spec.info;
    const header =
      `${schemaComment(name)}\n` +
      `${name} ${version}: ${description}\n` +
      `Generated by \`${name} --generate\`${configFiles.length > 0 ? ` from ${configFiles.join(', ')}` : ''}; ` +
      'every key is shown, with its description above it.';
    const merged = mergeSources(spec.settings, sources);
    return {
      kind: 'generate',
      target: values.generate,
      yaml: generateYaml(spec.settings, { header, values: merged }),
    };
  }
  // Everything start-up would refuse short of binding sockets, for --check and a start alike.
  checkSettings(spec.settings, sources, settings, spec.check?.bind(spec));
  const warnings = withOrigins(spec.settings, sources, spec.warnings?.(settings) ?? []);
  if (values.check === true) return { kind: 'check', configFiles, warnings };
  const options: Record<string, unknown> = {};
  for (const [name, o] of Object.entries(spec.options ?? {})) {
    options[name] = values[name] ?? (o.multiple === true ? [] : o.type === 'boolean' ? false : undefined);
  }
  return {
    kind: values.restart === true ? 'restart' : 'run',
    // An empty restart.socket becomes the per-user, per-instance default (restart/socket-path.ts).
    settings: withResolvedRestartSocket(settings, { service: spec.info.name, configFiles }),
    options: options as OptionValues<O>,
    configFiles,
    warnings,
  };
}

/**
 * The first line of a generated config: editors with yaml-language-server (VS Code's YAML
 * extension and others) validate and complete the file against `<name>.schema.json` beside it,
 * which `<name> --schema > <name>.schema.json` writes.
 */
export function schemaComment(name: string): string {
  return `yaml-language-server: $schema=${name}.schema.json`;
}

/** `--schema`'s output: the settings' JSON Schema (input form), titled after the service. */
function schemaText<S extends z.ZodType, O extends AppOptions>(spec: ServiceSpec<S, O>): string {
  const { name, version, description } = spec.info;
  const { $schema, ...rest } = toJsonSchema(spec.settings);
  return `${JSON.stringify({ $schema, title: `${name} ${version} settings`, ...rest, description }, null, 2)}\n`;
}

/** Where `runCli` writes; defaults to the process's streams. */
export interface CliIo {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
}

const processIo: CliIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
};

/**
 * Runs the whole command line and returns the exit code (0 ok, 2 user error, 1 failure)
 * without exiting, so tests and wrappers can drive it.
 */
export async function runCli<S extends z.ZodType, O extends AppOptions = Record<never, never>>(
  argv: readonly string[],
  spec: ServiceSpec<S, O>,
  io: CliIo = processIo,
): Promise<number> {
  const name = spec.info.name;
  let command: CliCommand<S, O>;
  try {
    command = parseCli(argv, spec);
    if (command.kind === 'help' || command.kind === 'version' || command.kind === 'schema') {
      io.stdout(command.text);
      return 0;
    }
    if (command.kind === 'generate') {
      if (command.target === '-') io.stdout(command.yaml);
      else {
        writeFileSync(command.target, command.yaml);
        // The schema the first line names, beside the file, so editors pick it up at once.
        writeFileSync(path.join(path.dirname(command.target), `${name}.schema.json`), schemaText(spec));
      }
      return 0;
    }
    if (command.kind === 'check') {
      printWarnings(command.warnings, name, io);
      io.stdout(`${command.configFiles.length === 0 ? '(defaults)' : command.configFiles.join(', ')}: ok\n`);
      return 0;
    }
  } catch (e) {
    if (e instanceof SettingsError && argv.includes('--check')) {
      for (const issue of e.issues) io.stderr(`${name}: ${formatIssue(issue)}\n`);
      return 2;
    }
    if (isFoundationsError(e) && e.userError) {
      io.stderr(`${name}: ${e.message}\n`);
      return 2;
    }
    const err = e as NodeJS.ErrnoException;
    if (typeof err?.code === 'string' && typeof err.syscall === 'string') {
      io.stderr(`${name}: ${err.message}\n`); // e.g. --generate into a missing directory
      return 2;
    }
    throw e;
  }
  return runMain(command, spec, io);
}

async function runMain<S extends z.ZodType, O extends AppOptions>(
  command: Extract<CliCommand<S, O>, { kind: 'run' | 'restart' }>,
  spec: ServiceSpec<S, O>,
  io: CliIo,
): Promise<number> {
  const name = spec.info.name;
  const settings = command.settings as Record<string, unknown>;
  if (command.kind === 'restart') {
    printWarnings(command.warnings, name, io);
    try {
      // The files given here (validated above) replace the instance's own; none keeps them.
      const files = command.configFiles.map((f) => path.resolve(f));
      return await runRestarter(settings.restart as { socket: string }, {
        ...(files.length === 0 ? {} : { configFiles: files }),
        identity: { service: name, configFiles: files },
        print: (line, ok) => (ok ? io.stdout : io.stderr)(`${line}\n`),
      });
    } catch (e) {
      return reportFailure(e, name, io);
    }
  }
  let telemetry: Telemetry | null = null;
  try {
    if (settings.telemetry !== undefined) {
      const value = settings.telemetry as TelemetrySettingsValue;
      // A worker's metrics and health are served by its supervisor's telemetry server.
      const own = isWorkerProcess() ? { ...value, server: { ...value.server, enabled: false } } : value;
      telemetry = await initTelemetry(spec.info, own);
    }
    if (!isWorkerProcess()) for (const w of command.warnings) log.warn(`setting: ${formatIssue(w)}`);
    await spec.main({
      settings: command.settings,
      options: command.options,
      configFiles: command.configFiles,
      telemetry,
    });
    return 0;
  } catch (e) {
    return reportFailure(e, name, io, debugVerbosity(settings));
  } finally {
    await telemetry
      ?.shutdown()
      .catch((e: unknown) => io.stderr(`${name}: telemetry shutdown failed: ${e}\n`));
  }
}

/** `--check`'s and `--restart`'s lines for the settings' warnings, on stderr. */
function printWarnings(warnings: readonly SettingsIssue[], name: string, io: CliIo): void {
  for (const w of warnings) io.stderr(`${name}: warning: ${formatIssue(w)}\n`);
}

/**
 * Prints a failure as one line: a user error (a bad setting found at start-up too) exits 2;
 * another `FoundationsError`, whose message already says what failed and where, exits 1; so
 * does anything else, being unexpected, with its stack on the following lines only when
 * `debug` (the settings' log verbosity is DEBUG or TRACE).
 */
function reportFailure(e: unknown, name: string, io: CliIo, debug = false): number {
  if (isFoundationsError(e)) {
    io.stderr(`${name}: ${e.message}\n`);
    if (debug && e.stack !== undefined) io.stderr(`${e.stack}\n`);
    return e.userError ? 2 : 1;
  }
  const message = e instanceof Error ? e.message.split('\n')[0] : String(e);
  io.stderr(`${name}: fatal: ${message}\n`);
  if (debug && e instanceof Error && e.stack !== undefined) io.stderr(`${e.stack}\n`);
  return 1;
}

/** True when `settings.telemetry.logging.verbosity` asks for DEBUG or TRACE records. */
function debugVerbosity(settings: Record<string, unknown>): boolean {
  const logging = (settings.telemetry as { logging?: { verbosity?: unknown } } | undefined)?.logging;
  return logging?.verbosity === 'DEBUG' || logging?.verbosity === 'TRACE';
}

/**
 * The entry point of a service: runs the command line on `process.argv`, then sets
 * `process.exitCode`. After a failure, the process is made to exit within 2 s even if
 * something started by `main` still holds the event loop open.
 */
export async function runService<S extends z.ZodType, O extends AppOptions = Record<never, never>>(
  spec: ServiceSpec<S, O>,
): Promise<void> {
  let code: number;
  try {
    code = await runCli(process.argv.slice(2), spec);
  } catch (e) {
    code = reportFailure(e, spec.info.name, processIo);
  }
  process.exitCode = code;
  if (code !== 0) setTimeout(() => process.exit(), 2000).unref();
}
