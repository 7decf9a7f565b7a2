/** How cicada starts more of itself: worker processes run the same binary (or the same source tree). */
import { fileURLToPath } from "node:url";

/** True inside a `bun build --compile` executable. */
export const COMPILED = import.meta.url.includes("$bunfs");

/** argv that runs `cicada <args>` with this very binary, whoever imported this module. */
export function selfArgv(args: string[]): string[] {
  if (COMPILED) return [process.execPath, ...args];
  return [process.execPath, fileURLToPath(new URL("../cli/main.ts", import.meta.url)), ...args];
}
