/** `cicada run --ui` as a separate process on a free port, for API and dashboard tests. */
import type { Subprocess } from "bun";

const MAIN = `${import.meta.dir}/../../src/cli/main.ts`;

export interface UiServer extends AsyncDisposable {
  url: string;
  proc: Subprocess<"ignore", "pipe", "pipe">;
  /** Everything it wrote to stderr so far. */
  log(): string;
  /** Polls `check` every 100 ms until it holds, failing after `ms`. */
  waitFor(check: () => Promise<boolean> | boolean, ms?: number): Promise<void>;
}

export async function startUi(args: string[], env: Record<string, string> = {}): Promise<UiServer> {
  const proc = Bun.spawn([process.execPath, MAIN, "run", "--ui", "127.0.0.1:0", ...args], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
  let err = "";
  void (async () => {
    for await (const chunk of proc.stderr) err += new TextDecoder().decode(chunk);
  })();
  void new Response(proc.stdout).text();
  const deadline = Date.now() + 15_000;
  let url = "";
  while (!url) {
    const m = /dashboard on (http:\/\/\S+?)\//.exec(err);
    if (m) url = m[1]!;
    else if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`cicada run --ui did not come up:\n${err}`);
    else await Bun.sleep(50);
  }
  return {
    url,
    proc,
    log: () => err,
    async waitFor(check, ms = 20_000) {
      const end = Date.now() + ms;
      while (!(await check())) {
        if (Date.now() > end) throw new Error(`condition not met within ${ms} ms; server said:\n${err}`);
        await Bun.sleep(100);
      }
    },
    async [Symbol.asyncDispose]() {
      if (proc.exitCode !== null) return;
      proc.kill("SIGINT");
      const t = setTimeout(() => proc.kill("SIGKILL"), 15_000);
      await proc.exited;
      clearTimeout(t);
    },
  };
}
