/** `cicada run --ui HOST:PORT`: serves the dashboard, the control API and /metrics until Ctrl-C. */
import type { RunConfig } from "../config/run.ts";
import { EXIT, LoadError, messageOf } from "../errors.ts";
import { createApp } from "./app.ts";
import { RunManager } from "./manager.ts";

/** The `cicada run` flags minus the server's own: what every run starts from. */
function runArgv(argv: string[]): string[] {
  const own = new Set(["--ui", "--token", "--ui-allow-host", "--history", "--autostart"]);
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const name = a.split("=")[0]!;
    if (!own.has(name)) out.push(a);
    else if (!a.includes("=") && name !== "--autostart") i++; // skip its value
  }
  return out;
}

export async function serveControl(cfg: RunConfig, argv: string[]): Promise<number> {
  const ui = cfg.ui!;
  const say = (line: string) => process.stderr.write(`cicada: ${line}\n`);
  const manager = new RunManager(runArgv(argv), ui.historyDir, say);
  const app = createApp(manager, { ...(ui.token ? { token: ui.token } : {}), allowHosts: ui.allowHosts });
  let server: ReturnType<typeof Bun.serve>;
  try {
    server = Bun.serve({ hostname: ui.host, port: ui.port, fetch: app.fetch, idleTimeout: 60 });
  } catch (err) {
    throw new LoadError(`--ui ${ui.host}:${ui.port}: cannot listen: ${messageOf(err)}`, EXIT.BAD_INPUT);
  }
  const where = `http://${ui.host.includes(":") ? `[${ui.host}]` : ui.host}:${server.port}`;
  say(`dashboard on ${where}/  (API: ${where}/openapi.json, metrics: ${where}/metrics; runs kept in ${ui.historyDir})`);
  if (ui.autostart) await manager.start({});

  const { promise, resolve } = Promise.withResolvers<void>();
  process.once("SIGINT", () => resolve());
  process.once("SIGTERM", () => resolve());
  await promise;
  say("stopping");
  if (manager.session) await manager.stop(true);
  await server.stop(true);
  return EXIT.OK;
}
