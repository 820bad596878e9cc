import { ConfigError } from './settings';

/** EX_CONFIG (sysexits.h): a supervisor of processes (systemd, compose) can tell a bad setting from a crash. */
export const CONFIG_ERROR_EXIT_CODE = 78;

/**
 * For an entry point: runs `load` (which validates settings) and returns its result; on a bad setting
 * prints each problem on stderr, without a stack trace, and exits with CONFIG_ERROR_EXIT_CODE.
 */
export function orExitOnBadConfig<T>(program: string, load: () => T): T {
  try {
    return load();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`${program}: invalid configuration\n${err.problems.map((p) => `  ${p}\n`).join('')}`);
    process.exit(CONFIG_ERROR_EXIT_CODE);
  }
}
