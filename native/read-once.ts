/**
 * Reads a file cicada needs once — a device's certificate or key, read as the device dials — and
 * tells the kernel not to keep its pages cached (posix_fadvise POSIX_FADV_DONTNEED, through libc
 * via bun:ffi, which Bun does not expose).
 *
 * Why: 400,000 devices are 800,000 small files, 3.2 GB of page cache in 4 KB pages, read once
 * each. Cached, they crowd out what the machine does need once memory runs short late in a big
 * ramp, and the kernel has to reclaim them under pressure (README, Sizing). Where the call is not
 * available the file is read as usual; reading never fails because of it.
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { loadLibc } from "./libc.ts";

const POSIX_FADV_DONTNEED = 4; // Linux, every architecture

/** The file's text (UTF-8); its pages are dropped from the page cache once read. Throws as readFileSync does. */
export function readOnce(path: string): string {
  const fd = openSync(path, "r");
  try {
    const size = fstatSync(fd).size;
    const buf = Buffer.allocUnsafe(size);
    let got = 0;
    while (got < size) {
      const n = readSync(fd, buf, got, size - got, got);
      if (n === 0) break;
      got += n;
    }
    loadLibc()?.posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    return buf.toString("utf8", 0, got);
  } finally {
    closeSync(fd);
  }
}
