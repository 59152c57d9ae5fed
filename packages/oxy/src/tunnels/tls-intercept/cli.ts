/**
 * `oxy ca export [-c FILE]…`: prints the interception CA certificate alone, PEM, on stdout,
 * for clients to trust (curl `--cacert`, an NSS database, `NODE_EXTRA_CA_CERTS`). It reads the
 * same settings the service would (`-c` files merged over the defaults) and generates the CA
 * into `interception.ca.dir` when it is not there yet, so it works before the first start.
 *
 * Why a subcommand here and not a Foundations option: it is Oxy's, and its output must be the
 * certificate and nothing else (no telemetry, no log lines), so it runs before the service's
 * command line and never starts the service.
 */

import type { ServiceInfo } from 'foundations';
import type { z } from 'zod';

/** Where the command writes. */
export interface CaCommandIo {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
}

const processIo: CaCommandIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
};

function usage(name: string): string {
  return (
    `Usage: ${name} ca export [-c FILE]...\n\n` +
    'Prints the interception CA certificate (PEM) on stdout, generating the CA into\n' +
    'interception.ca.dir first when it does not exist yet. -c merges settings files as for\n' +
    'the service (repeatable; later files win).\n'
  );
}

/** True when `argv` (without node and script) asks for the `ca` subcommand. */
export function isCaCommand(argv: readonly string[]): boolean {
  return argv[0] === 'ca';
}

/**
 * Runs `ca …` (`argv` starts with `ca`) and returns the exit code: 0 with the PEM printed, 2 for
 * a usage or settings mistake, 1 when the CA cannot be loaded or generated.
 */
export async function runCaCommand(
  argv: readonly string[],
  spec: { readonly info: ServiceInfo; readonly settings: z.ZodType },
  io: CaCommandIo = processIo,
): Promise<number> {
  const name = spec.info.name;
  const [, sub, ...rest] = argv;
  if (sub === '-h' || sub === '--help') {
    io.stdout(usage(name));
    return 0;
  }
  if (sub === undefined) {
    io.stderr(usage(name));
    return 2;
  }
  if (sub !== 'export') {
    io.stderr(`${name}: unknown ca subcommand ${JSON.stringify(sub)}\n${usage(name)}`);
    return 2;
  }
  const { parseCli } = await import('foundations/cli');
  const { formatIssue, SettingsError } = await import('foundations/settings');
  const { isFoundationsError } = await import('foundations');
  let settings: { interception?: { ca: { cert: string; key: string; dir: string } } };
  try {
    const command = parseCli(rest, { info: spec.info, settings: spec.settings, main: () => {} });
    if (command.kind !== 'run') {
      io.stderr(`${name}: ca export takes only -c FILE\n${usage(name)}`);
      return 2;
    }
    settings = command.settings as typeof settings;
  } catch (e) {
    if (e instanceof SettingsError) {
      for (const issue of e.issues) io.stderr(`${name}: ${formatIssue(issue)}\n`);
      return 2;
    }
    if (isFoundationsError(e) && e.userError) {
      io.stderr(`${name}: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  if (settings.interception === undefined) {
    io.stderr(`${name}: these settings have no interception section\n`);
    return 2;
  }
  const { loadInterceptionCa } = await import('./ca.ts');
  const { isOxyError } = await import('../../errors.ts');
  try {
    const ca = await loadInterceptionCa(settings.interception.ca);
    io.stdout(ca.certPem.endsWith('\n') ? ca.certPem : `${ca.certPem}\n`);
    return 0;
  } catch (e) {
    if (!isOxyError(e)) throw e;
    // The CA files a setting names cannot be used: a user error, exit 2, as at start-up.
    io.stderr(`${name}: ${e.message}\n`);
    return 2;
  }
}
