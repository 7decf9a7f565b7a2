/** The error types cicada raises, and the exit codes they map to. */

/** Process exit codes (see README "Exit codes"). */
export const EXIT = {
  OK: 0,
  INTERNAL: 1,
  BAD_INPUT: 2,
  THRESHOLDS: 3,
  /** A remote service the command needs (dojot, Redis) failed or could not be reached. */
  REMOTE: 4,
  INTERRUPTED: 130,
} as const;

/** Base class for every error cicada raises on purpose. `code` is the exit code it maps to. */
export class LoadError extends Error {
  constructor(
    message: string,
    readonly code: number = EXIT.INTERNAL,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "LoadError";
  }
}

/**
 * Bad input: every problem found, gathered before failing (k6's consolidateErrorMessage).
 * Each issue names the flag or env var, e.g. `--devices must be a whole number > 0 (got "abc")`.
 */
export class ConfigError extends LoadError {
  constructor(readonly issues: string[]) {
    super(issues.join("; "), EXIT.BAD_INPUT);
    this.name = "ConfigError";
  }
}

/** Returns `err.message` for any thrown value. */
export function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
