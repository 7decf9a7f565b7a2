// sys/ — process-level helpers: atomic file writes and modes (here), spawning this binary, redaction, loopback hosts.
// Imports point down only: ARCHITECTURE.md lists the layers, test/architecture.test.ts checks them.
/** Files written so that a crash or a full disk never leaves half of one, with the modes asked for whatever the umask. */
import { chmodSync, closeSync, existsSync, fchmodSync, fsyncSync, linkSync, mkdirSync, openSync, renameSync, statSync, unlinkSync, writeSync } from "node:fs";

/**
 * Creates `path` (and its parents) when missing, with exactly `mode` whatever the umask: a
 * broker must be able to read `ca.crt` and the CRL under a strict umask, and the CA key's
 * directory must stay private under a loose one. An existing directory keeps its mode.
 */
export function makeDir(path: string, mode: number): void {
  if (existsSync(path)) return;
  mkdirSync(path, { recursive: true, mode });
  chmodSync(path, mode);
}

/** Modes of the layout's directories: keys inside are 0600 files; the CA's own directory is private. */
export const DIR_MODE = 0o755;
export const PRIVATE_DIR_MODE = 0o700;

let tmpCounter = 0;

/**
 * Writes a file atomically: a temporary file in the same folder, fsync'd, then moved into place.
 * With `exclusive`, an existing file is never replaced: returns false instead (hard-link, then
 * unlink the temporary), so two writers racing for one name cannot clobber each other.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode: number, opts: { exclusive?: boolean; sync?: boolean } = {}): boolean {
  const tmp = `${path}.tmp-${process.pid}-${++tmpCounter}`;
  const fd = openSync(tmp, "wx", mode);
  try {
    // Exactly `mode`, whatever the umask: a broker must be able to read ca.crt and the CRL.
    fchmodSync(fd, mode);
    writeSync(fd, typeof data === "string" ? Buffer.from(data) : data);
    if (opts.sync) fsyncSync(fd);
  } catch (err) {
    // A full disk or a vanished directory: leave no half-written temporary file behind.
    closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // already gone
    }
    throw err;
  }
  closeSync(fd);
  if (!opts.exclusive) {
    renameSync(tmp, path);
    return true;
  }
  try {
    linkSync(tmp, path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw err;
  } finally {
    unlinkSync(tmp);
  }
}

export function exists(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Device identities read from a certificate directory: ids sorted, files read at connect time.
 * A device renewed by an earlier run (`renew/<id>.crt` and `.key`) uses its renewed identity.
 */
