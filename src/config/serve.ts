/** What `cicada run` serves over HTTP: the dashboard and control API (--ui), or /metrics alone (--metrics), and the token both need beyond loopback. */
import type { Options, OptionSpecs } from "./options.ts";
import { isLoopbackHost } from "../sys/net.ts";

export const SERVE_OPTIONS: OptionSpecs = {
  ui: { type: "string", arg: "HOST:PORT", help: "Serve the dashboard, control API and /metrics here (e.g. 127.0.0.1:8089) and take runs from it" },
  metrics: { type: "string", arg: "HOST:PORT", help: "Serve /metrics alone here for this run (e.g. 127.0.0.1:9464), for Prometheus: no dashboard, no API" },
  token: { type: "string", arg: "TOKEN", env: "CICADA_TOKEN", help: "Bearer token --ui and --metrics require, 16+ characters (required to bind beyond loopback)" },
  "ui-allow-host": { type: "string", arg: "LIST", help: "With --ui or --metrics: host names answered to besides the addresses and localhost (e.g. behind a proxy)" },
  history: { type: "string", arg: "DIR", default: "cicada-runs", help: "With --ui: one file per run kept here, so the dashboard keeps its history" },
  autostart: { type: "boolean", help: "With --ui: start a run with these settings at once, as if from the form" },
};

const MIN_TOKEN_CHARS = 16;

/** Where to listen, and who may ask. */
export interface Listen {
  host: string;
  port: number;
  token?: string;
  allowHosts: string[];
}

/** --ui, or --metrics: HOST:PORT, and anything beyond loopback needs --token. Problems go to `o.issues`. */
export function readListen(o: Options, flag: "ui" | "metrics"): Listen {
  const spec = o.str(flag)!;
  const m = /^(.*):(\d+)$/.exec(spec);
  const host = m ? m[1]!.replace(/^\[(.*)\]$/, "$1") : "";
  const port = m ? Number(m[2]) : NaN;
  if (!m || !host || !(port >= 0 && port <= 65535)) o.fail(flag, "must be HOST:PORT, e.g. 127.0.0.1:8089", spec);
  const token = o.str("token");
  if (host && !isLoopbackHost(host) && !token) o.issues.push(`--${flag} ${spec} is reachable beyond this machine: give --token (or CICADA_TOKEN) so ${flag === "ui" ? "the API" : "a scrape"} needs it, or bind 127.0.0.1`);
  // Said without the token itself: it is a secret.
  if (token !== undefined && token.length < MIN_TOKEN_CHARS) o.issues.push(`${o.source("token")} must be at least ${MIN_TOKEN_CHARS} characters (got ${token.length}); make one with: openssl rand -hex 16`);
  return { host, port, ...(token ? { token } : {}), allowHosts: o.list("ui-allow-host") ?? [] };
}
