/**
 * A device's certificate and key are read once, as it dials, and their pages are not left in the
 * page cache: 400,000 devices' files crowd the memory a big run needs (README, 400,000 devices).
 * What the kernel holds is read with util-linux's fincore, which asks the kernel (mincore).
 */
import { expect, test } from "bun:test";
import { closeSync, fsyncSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { readOnce } from "../../native/read-once.ts";
import { DeviceFiles } from "../../src/store/dir.ts";
import { sh, tempDir } from "../helpers/tmp.ts";

/** Written and on disk: the kernel drops clean pages only (a certificate made minutes before is too). */
function writeDurable(path: string, text: string): void {
  writeFileSync(path, text);
  const fd = openSync(path, "r");
  fsyncSync(fd);
  closeSync(fd);
}

/** Bytes of `path` in the page cache; null where that cannot be told (no fincore; tmpfs, whose pages are the file). */
async function cached(path: string): Promise<number | null> {
  if (!Bun.which("fincore")) return null;
  const fs = await sh(["stat", "-f", "-c", "%T", path]);
  if (fs.stdout.trim() === "tmpfs") return null;
  const r = await sh(["fincore", "--bytes", "--noheadings", "--output", "RES", path]);
  return r.code === 0 ? Number(r.stdout.trim()) : null;
}

test.skipIf(process.platform !== "linux")("readOnce returns the file's text and leaves none of it cached; a device's certificate and key are read that way", async () => {
  using tmp = tempDir();
  const pem = "-----BEGIN CERTIFICATE-----\n" + "QUJD".repeat(2000) + "\n-----END CERTIFICATE-----\n";
  const file = join(tmp.path, "d00001.crt");
  writeDurable(file, pem);
  readFileSync(file); // an ordinary read leaves its pages cached
  const before = await cached(file);
  if (before === null) return console.warn("skipped: fincore missing or a tmpfs temporary folder: the page cache cannot be read here");
  expect(before).toBeGreaterThan(0);
  expect(readOnce(file)).toBe(pem);
  expect(await cached(file)).toBe(0);

  // The path a dialling device takes.
  writeDurable(join(tmp.path, "d00001.key"), "-----BEGIN PRIVATE KEY-----\nS0VZ\n-----END PRIVATE KEY-----\n");
  readFileSync(file);
  readFileSync(join(tmp.path, "d00001.key"));
  const loaded = new DeviceFiles(tmp.path).load("d00001");
  expect(loaded.cert).toBe(pem);
  expect(loaded.key).toContain("S0VZ");
  expect(await cached(file)).toBe(0);
  expect(await cached(join(tmp.path, "d00001.key"))).toBe(0);
});

test("readOnce fails as readFileSync does on a missing file", () => {
  expect(() => readOnce("/nonexistent/cicada/d00001.crt")).toThrow(/ENOENT/);
});
