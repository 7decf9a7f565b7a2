// api/ — the control API, /metrics and the dashboard server: they parse requests and print answers, and leave runs to run/.
// Imports point down only: ARCHITECTURE.md lists the layers, test/architecture.test.ts checks them.
/**
 * The control API (Hono, described as OpenAPI at /openapi.json), the dashboard page and
 * /metrics, over a RunManager. Every request needs `Authorization: Bearer <token>` when a
 * token is set (the dashboard takes it once as ?token= and keeps it for the tab).
 */
import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import uplotCss from "uplot/dist/uPlot.min.css" with { type: "text" };
import uplotJs from "uplot/dist/uPlot.iife.min.js" with { type: "text" };
import { renderReport, REPORT_FORMATS, type ReportFormat } from "../report/formats.ts";
import chartsJs from "../ui/charts.asset.js" with { type: "text" };
import dashboardHtml from "../ui/dashboard.asset.html" with { type: "text" };
import dashboardJs from "../ui/dashboard.asset.js" with { type: "text" };
import grafanaDashboard from "../ui/grafana-dashboard.json";
import pkg from "../../package.json" with { type: "json" };
import { HTTPException } from "hono/http-exception";
import { guard, type GuardOptions } from "./guard.ts";
import { ApiError, type RunManager } from "./manager.ts";
import { Start } from "./start.ts";
import { METRICS_TYPE, metricsOf, renderMetrics } from "./metrics.ts";

const Errors = z.object({ errors: z.array(z.string()).openapi({ example: ["--users must be a whole number from 1 to 10000000 (got \"0\")"] }) }).openapi("Errors");
const Report = z.record(z.string(), z.unknown()).openapi("Report", { description: "The run's report: config, stats rows, errors, health, workers/machines, timeline (as --report run.json)" });
const Run = z
  .object({
    id: z.string(),
    label: z.string(),
    state: z.enum(["running", "stopping", "finished"]),
    started: z.string(),
    ended: z.string().nullable(),
    report: Report,
  })
  .openapi("Run");
const RunSummary = z.object({ id: z.string(), label: z.string(), state: z.string(), started: z.string(), ended: z.string().nullable(), users: z.number(), publish: z.number(), failures: z.number(), passed: z.boolean().nullable().openapi({ description: "The thresholds' verdict (null while running or without thresholds)" }) }).openapi("RunSummary");
const Change = z
  .object({
    users: z.number().int().min(0).optional(),
    rate: z.number().positive().optional(),
    msg_rate: z.union([z.number().positive(), z.literal("max")]).optional().openapi({ description: 'Total publishes per second from now on, spread over the devices; "max": each device as fast as its in-flight window allows' }),
    publish: z.enum(["on", "off"]).optional().openapi({ description: "off pauses publishing (devices stay connected); on resumes it" }),
  })
  .strict()
  .refine((c) => Object.values(c).some((v) => v !== undefined), { message: "give users, rate, msg_rate and/or publish" })
  .openapi("ChangeRun");
const Status = z.object({ version: z.string(), state: z.enum(["idle", "running", "stopping"]), current: Run.nullable(), defaults: z.record(z.string(), z.unknown()) }).openapi("Status");

const json = <T extends z.ZodType>(schema: T, description: string) => ({ content: { "application/json": { schema } }, description });
const bad = { 400: json(Errors, "Invalid request: every problem listed") };
const conflict = { 409: json(Errors, "No run is going, or one already is") };
const IdParam = z.object({ id: z.string().openapi({ param: { name: "id", in: "path" }, example: "20261125T101500Z-1a2b" }) });
const SinceQuery = z.object({ since: z.coerce.number().optional().openapi({ description: "Only timeline points after this many seconds" }) });

const routes = {
  status: createRoute({ method: "get", path: "/api/status", request: { query: SinceQuery }, responses: { 200: json(Status, "What the server is doing, with the current run") } }),
  start: createRoute({ method: "post", path: "/api/runs", request: { body: { content: { "application/json": { schema: Start } }, required: true } }, responses: { 201: json(Run, "Started"), ...bad, ...conflict } }),
  list: createRoute({ method: "get", path: "/api/runs", responses: { 200: json(z.array(RunSummary), "Every run kept, newest first") } }),
  get: createRoute({ method: "get", path: "/api/runs/{id}", request: { params: IdParam, query: SinceQuery }, responses: { 200: json(Run, "The run"), 404: json(Errors, "No such run") } }),
  change: createRoute({ method: "patch", path: "/api/runs/current", request: { body: { content: { "application/json": { schema: Change } }, required: true } }, responses: { 200: json(Change, "Applied"), ...bad, ...conflict } }),
  stop: createRoute({ method: "post", path: "/api/runs/current/stop", responses: { 200: json(Run, "Stopped; the final report"), ...conflict } }),
  reset: createRoute({ method: "post", path: "/api/runs/current/reset-stats", responses: { 204: { description: "Stats reset" }, ...conflict } }),
  file: createRoute({
    method: "get",
    path: "/api/runs/{id}/report/{format}",
    request: { params: IdParam.extend({ format: z.enum(REPORT_FORMATS).openapi({ param: { name: "format", in: "path" } }) }) },
    responses: { 200: { description: "The report as a download (JSON, CSV or self-contained HTML)" }, 404: json(Errors, "No such run") },
  }),
  metrics: createRoute({ method: "get", path: "/metrics", responses: { 200: { description: "Prometheus text exposition format 0.0.4" } } }),
};

export function createApp(manager: RunManager, opts: GuardOptions = {}): OpenAPIHono {
  const app = new OpenAPIHono({
    defaultHook: (result, c) => {
      if (!result.success) return c.json({ errors: result.error.issues.map((i) => `${i.path.length ? `${i.path.join(".")}: ` : ""}${i.message}`) }, 400);
    },
  });
  app.openAPIRegistry.registerComponent("securitySchemes", "Bearer", { type: "http", scheme: "bearer" });

  app.use("*", guard(opts));
  app.onError((err, c) => {
    if (err instanceof ApiError) return c.json({ errors: err.errors }, err.status);
    // A body that is not JSON (or none where one is required) is the caller's to fix.
    if (err instanceof HTTPException && err.status === 400) return c.json({ errors: [`the request body is not valid JSON: ${err.message}`] }, 400);
    process.stderr.write(`cicada: API ${c.req.method} ${c.req.path} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return c.json({ errors: [`internal error: ${err instanceof Error ? err.message : String(err)}`] }, 500);
  });

  app.openapi(routes.status, (c) => {
    const { since } = c.req.valid("query");
    const current = manager.currentView(since ?? -1);
    const state = !current || current.state === "finished" ? "idle" : current.state;
    return c.json({ version: pkg.version, state, current, defaults: manager.defaults } as unknown as z.infer<typeof Status>, 200);
  });
  app.openapi(routes.start, async (c) => c.json((await manager.start(c.req.valid("json"))) as unknown as z.infer<typeof Run>, 201));
  app.openapi(routes.list, (c) => c.json(manager.list(), 200));
  app.openapi(routes.get, (c) => c.json(manager.view(c.req.valid("param").id, c.req.valid("query").since ?? -1) as unknown as z.infer<typeof Run>, 200));
  app.openapi(routes.change, (c) => c.json(manager.set(c.req.valid("json")), 200));
  app.openapi(routes.stop, async (c) => c.json((await manager.stop()) as unknown as z.infer<typeof Run>, 200));
  app.openapi(routes.reset, (c) => {
    manager.resetStats();
    return c.body(null, 204);
  });
  app.openapi(routes.file, (c) => {
    const { id, format } = c.req.valid("param");
    const run = manager.view(id);
    const types: Record<ReportFormat, string> = { json: "application/json", csv: "text/csv; charset=utf-8", html: "text/html; charset=utf-8" };
    return c.body(renderReport(run.report, format), 200, { "content-type": types[format], "content-disposition": `attachment; filename="cicada-${id}.${format}"` });
  });
  app.openapi(routes.metrics, (c) => {
    const body = renderMetrics(metricsOf(manager.latest, !!manager.session));
    return c.body(body, 200, { "content-type": METRICS_TYPE });
  });

  app.doc31("/openapi.json", { openapi: "3.1.0", info: { title: "cicada control API", version: pkg.version }, security: opts.token ? [{ Bearer: [] }] : [] });
  const asset = (body: string, type: string) => (c: Context) => c.body(body, 200, { "content-type": type, "cache-control": "no-cache" });
  app.get("/", asset(dashboardHtml, "text/html; charset=utf-8"));
  app.get("/assets/uplot.js", asset(uplotJs, "text/javascript; charset=utf-8"));
  app.get("/assets/uplot.css", asset(uplotCss, "text/css; charset=utf-8"));
  app.get("/assets/charts.js", asset(chartsJs, "text/javascript; charset=utf-8"));
  app.get("/assets/dashboard.js", asset(dashboardJs, "text/javascript; charset=utf-8"));
  // The Grafana dashboard for these metrics, to import as it is.
  app.get("/assets/grafana-dashboard.json", (c) => c.json(grafanaDashboard));
  return app;
}
