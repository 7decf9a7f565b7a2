/**
 * The libc calls cicada needs and Bun does not expose, through bun:ffi: loaded once, on first
 * use. null where it cannot be loaded (not Linux, no glibc, no FFI); callers fall back or say so.
 */
export interface Libc {
  getrlimit(resource: number, limits: unknown): number;
  setrlimit(resource: number, limits: unknown): number;
  posix_fadvise(fd: number, offset: number, length: number, advice: number): number;
}

let libc: Libc | null | undefined;

export function loadLibc(): Libc | null {
  if (libc !== undefined) return libc;
  libc = null;
  if (process.platform !== "linux") return libc;
  try {
    // bun:ffi is Bun's own module: required lazily so that importing this file costs nothing elsewhere.
    const { dlopen, FFIType } = require("bun:ffi") as typeof import("bun:ffi");
    const lib = dlopen("libc.so.6", {
      getrlimit: { args: [FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
      setrlimit: { args: [FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
      posix_fadvise: { args: [FFIType.i32, FFIType.i64, FFIType.i64, FFIType.i32], returns: FFIType.i32 },
    });
    libc = lib.symbols as unknown as Libc;
  } catch {
    libc = null;
  }
  return libc;
}
