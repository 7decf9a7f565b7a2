// store/ — identities at rest: a directory in dojot's layout (here), a Redis store in dojot's layout, Redis connections.
// Imports point down only: ARCHITECTURE.md lists the layers, test/architecture.test.ts checks them.
/**
 * Device identities on disk, laid out like dojot's generate_certs directory:
 * `<id>.key`, `<id>.crt`, `ca.crt`, `renew/`, `revoke/` — so `ls cert | wc -l` = 2N+3.
 * cicada's own CA key and CRL live in the hidden `.ca/` folder, which `ls` does not count.
 */
import { readdirSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { EXIT, LoadError, messageOf } from "../errors.ts";
import { DIR_MODE, exists, makeDir, PRIVATE_DIR_MODE, writeFileAtomic } from "../sys/fs.ts";
import { readOnce } from "../../native/read-once.ts";

export interface CertDir {
  root: string;
  caCert: string;
  /** Hidden folder (mode 0700) with the CA key, the CRL and its number. */
  caDir: string;
  caKey: string;
  crl: string;
  crlNumber: string;
  renew: string;
  revoke: string;
  /** Default home of `certs server` output. */
  broker: string;
}

export function certDir(root: string): CertDir {
  const caDir = join(root, ".ca");
  return {
    root,
    caCert: join(root, "ca.crt"),
    caDir,
    caKey: join(caDir, "ca.key"),
    crl: join(caDir, "crl.pem"),
    crlNumber: join(caDir, "crlnumber"),
    renew: join(root, "renew"),
    revoke: join(root, "revoke"),
    broker: join(root, ".broker"),
  };
}

/** A device id must be usable as a file name and an MQTT topic level. */
export const DEVICE_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** Creates the layout (idempotent). Fails with a bad-input error naming the directory when it cannot. */
export function ensureCertDir(root: string): CertDir {
  const d = certDir(root);
  try {
    makeDir(d.root, DIR_MODE);
    makeDir(d.renew, DIR_MODE);
    makeDir(d.revoke, DIR_MODE);
    makeDir(d.caDir, PRIVATE_DIR_MODE);
    const probe = join(d.caDir, `.probe-${process.pid}`);
    writeFileAtomic(probe, "", 0o600);
    unlinkSync(probe);
  } catch (err) {
    throw new LoadError(`certificate directory ${root} is not usable: ${messageOf(err)}`, EXIT.BAD_INPUT, { cause: err });
  }
  return d;
}

/** Ids of the devices with both `<id>.crt` and `<id>.key` in `root`, sorted. */
export function listDeviceIds(root: string): string[] {
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return [];
  }
  const keys = new Set(names.filter((n) => n.endsWith(".key")).map((n) => n.slice(0, -4)));
  return names
    .filter((n) => n.endsWith(".crt") && n !== "ca.crt")
    .map((n) => n.slice(0, -4))
    .filter((id) => keys.has(id))
    .sort();
}

/**
 * Stores one device's key (mode 0600) and certificate. The key goes first, so a `.crt` on disk
 * always has its key. Returns false, writing nothing, when the device already exists — unless
 * `replace` (a renewed device's new pair replaces the last one).
 */
export function writeDevice(dir: string, id: string, keyPem: string, certPem: string, opts: { replace?: boolean } = {}): boolean {
  const exclusive = !opts.replace;
  if (!writeFileAtomic(join(dir, `${id}.key`), keyPem, 0o600, { exclusive })) return false;
  if (!writeFileAtomic(join(dir, `${id}.crt`), certPem, 0o644, { exclusive })) return false;
  return true;
}

/**
 * Files a revoked certificate (and, when given, its key) under `revokeDir` as `<id>.crt`, or
 * `<id>-<serial>.crt` when that name is taken (a device revoked twice); returns the
 * certificate's path. The local CA's CRL lists every certificate filed here.
 */
export function fileRevoked(revokeDir: string, id: string, serial: string, certPem: string, keyPem?: string): string {
  let base = join(revokeDir, id);
  if (exists(`${base}.crt`)) base = join(revokeDir, `${id}-${serial}`);
  if (keyPem !== undefined) writeFileAtomic(`${base}.key`, keyPem, 0o600);
  writeFileAtomic(`${base}.crt`, certPem, 0o644);
  return `${base}.crt`;
}

/** A directory's device files by id: a renewed device's certificate and key come from `renew/`. */
export class DeviceFiles {
  private readonly renewed: Set<string>;

  constructor(readonly root: string) {
    this.renewed = new Set(listDeviceIds(join(root, "renew")));
  }

  load(id: string): { cert: string; key: string } {
    const dir = this.renewed.has(id) ? join(this.root, "renew") : this.root;
    // Read once as the device dials, and not left in the page cache (native/read-once.ts).
    return { cert: readOnce(join(dir, `${id}.crt`)), key: readOnce(join(dir, `${id}.key`)) };
  }
}

export class DirIdentities {
  readonly ids: string[];
  private readonly files: DeviceFiles;

  /** `first`/`count` select a segment of the sorted ids (so processes never share an id). */
  constructor(
    readonly root: string,
    first = 0,
    count = Infinity,
  ) {
    this.ids = listDeviceIds(root).slice(first, first + count);
    this.files = new DeviceFiles(root);
  }

  get count(): number {
    return this.ids.length;
  }

  id(index: number): string {
    return this.ids[index]!;
  }

  load(index: number): { cert: string; key: string } {
    return this.files.load(this.ids[index]!);
  }
}
