/** `cicada run --ui HOST:PORT`: serves the dashboard, the control API and /metrics until Ctrl-C; `--metrics HOST:PORT`: /metrics alone for one run. */
import { Hono } from "hono";
import type { RunConfig } from "../config/run.ts";
import type { Listen } from "../config/serve.ts";
import { guard } from "./guard.ts";
import { METRICS_TYPE, renderMetrics, type MetricsInput } from "./metrics.ts";
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

/**
 * `cicada run --metrics HOST:PORT` (this run) and `cicada worker --metrics HOST:PORT` (this
 * machine's devices): /metrics alone, under the same guard as the control API (Host checked,
 * the bearer token when one is given). Returns the server, to stop when done.
 */
export function serveMetrics(listen: Listen, input: () => MetricsInput, say: (line: string) => void): { stop(): Promise<void> } {
  const app = new Hono();
  app.use("*", guard({ ...(listen.token ? { token: listen.token } : {}), allowHosts: listen.allowHosts }));
  app.get("/metrics", (c) => c.body(renderMetrics(input()), 200, { "content-type": METRICS_TYPE }));
  let server: ReturnType<typeof Bun.serve>;
  try {
    server = Bun.serve({ hostname: listen.host, port: listen.port, fetch: app.fetch, idleTimeout: 60 });
  } catch (err) {
    throw new LoadError(`--metrics ${listen.host}:${listen.port}: cannot listen: ${messageOf(err)}`, EXIT.BAD_INPUT);
  }
  say(`metrics on http://${listen.host.includes(":") ? `[${listen.host}]` : listen.host}:${server.port}/metrics`);
  return { stop: () => server.stop(true) };
}
