/** `cicada run`: a fleet of devices on this machine — one process per core — with a live progress line and a final report; or, with --ui, the dashboard and control API. */
import { serveControl, serveMetrics } from "../api/server.ts";
import { metricsOf } from "../api/metrics.ts";
import { readRunConfig, RUN_SPEC, type RunConfig } from "../config/run.ts";
import { EXIT } from "../errors.ts";
import { writeReportSafely } from "../report/formats.ts";
import { renderTable, type Report } from "../report/summary.ts";
import { RunSession } from "../run/session.ts";
import { parseCommand } from "../config/options.ts";
import { Progress, fmtInt } from "./progress.ts";

export async function runCommand(argv: string[]): Promise<number> {
  const o = parseCommand(RUN_SPEC, argv);
  if (!o) return EXIT.OK;
  const cfg = readRunConfig(o);
  o.check();
  if (cfg.ui) return serveControl(cfg, argv);
  const say = (line: string) => process.stderr.write(`cicada: ${line}\n`);
  const session = await RunSession.open(cfg, say);
  let running = true;
  const metrics = cfg.metrics ? serveMetrics(cfg.metrics, () => metricsOf(session, running), say) : null;
  let code: number;
  try {
    code = await runToEnd(cfg, session);
  } catch (err) {
    await metrics?.stop();
    throw err;
  }
  running = false;
  if (metrics) {
    // The final counters stay up for one default scrape interval, so Prometheus sees how the run
    // ended; not after Ctrl-C (the user wants out), and a second Ctrl-C cuts it short.
    if (code !== EXIT.INTERRUPTED) {
      say(`serving the final metrics for ${METRICS_LINGER_MS / 1000}s more`);
      const { promise, resolve } = Promise.withResolvers<void>();
      process.once("SIGINT", resolve);
      await Promise.race([Bun.sleep(METRICS_LINGER_MS), promise]);
      process.off("SIGINT", resolve);
    }
    await metrics.stop();
  }
  return code;
}

/** How long --metrics goes on serving after the report: Prometheus' default scrape interval is 15 s, the README's config 5 s. */
const METRICS_LINGER_MS = 5000;

async function runToEnd(cfg: RunConfig, session: RunSession): Promise<number> {
  const fleet = session.fleet;
  const progress = new Progress(process.stderr, { intervalMs: 2000 });
  const t0 = performance.now();
  let prev = { t: t0, pub: 0, recv: 0, fail: 0 };
  await session.start(({ devices, failures }) => {
    prev = { t: performance.now(), pub: 0, recv: 0, fail: 0 };
    const dropped = Object.entries(failures).flatMap(([row, reasons]) => Object.entries(reasons).map(([reason, n]) => `${row} ${reason} ${fmtInt(n)}`));
    progress.update(`[${Math.round((performance.now() - t0) / 1000)}s] all ${fmtInt(devices)} devices connected: stats reset${dropped.length ? ` (failures during the ramp: ${dropped.join(", ")})` : ""}`, true);
  });
  process.stderr.write(
    `cicada: ${fmtInt(cfg.swarm.users)} ${cfg.swarm.scenario ? `${cfg.swarm.scenario.name} ` : ""}devices → ${cfg.echo.targets} at ${cfg.swarm.rate}/s for ${cfg.durationMs / 1000}s` +
      ` (${cfg.swarm.ws ? (cfg.swarm.tls ? "WebSocket over mTLS" : "WebSocket") : cfg.swarm.tls ? "mTLS" : "TCP"}, MQTT ${cfg.swarm.version === 5 ? "5" : "3.1.1"}, QoS ${cfg.swarm.qos}, ` +
      `${session.federated ? `${fleet.snapshot().machines?.filter((m) => !m.lost && !m.rejected).length} machines` : `${session.workers} process${session.workers > 1 ? "es" : ""}`})\n`,
  );

  const line = () => {
    const s = fleet.snapshot();
    const now = performance.now();
    const dt = Math.max(1e-3, (now - prev.t) / 1000);
    const rows = s.stats.rows;
    const pub = rows.publish.count, recv = rows.recv_message.count;
    const fail = Object.values(rows).reduce((a, r) => a + r.failures, 0);
    const text =
      `[${Math.round((now - t0) / 1000)}s] devices ${fmtInt(s.connected)}/${fmtInt(s.target)} connected` +
      ` | publish ${((pub - prev.pub) / dt).toFixed(1)}/s p99 ${rows.publish.latency.percentileMs(99).toFixed(1)} ms` +
      ` | recv ${((recv - prev.recv) / dt).toFixed(1)}/s | failures ${fmtInt(fail)} (+${fmtInt(fail - prev.fail)})` +
      (s.restarts ? ` | worker restarts ${s.restarts}` : "") +
      (s.machines ? ` | machines ${s.machines.filter((m) => !m.lost && !m.rejected).length}${s.machines.some((m) => m.lost) ? ` (${s.machines.filter((m) => m.lost).length} lost)` : ""}` : "");
    prev = { t: now, pub, recv, fail };
    return text;
  };
  const ticker = setInterval(() => progress.update(line(), true), 2000);

  const { promise: finished, resolve: finish } = Promise.withResolvers<boolean>();
  const timeout = setTimeout(() => finish(false), cfg.durationMs);
  // Ctrl-C stops and writes the report; a second one stops at once and still writes it; a third aborts.
  let signals = 0;
  const onSignal = () => {
    signals++;
    if (signals === 1) return finish(true);
    if (signals === 2) {
      process.stderr.write("cicada: stopping now, without waiting for acks; the report is still written (Ctrl-C again to abort without it)\n");
      return session.hurry();
    }
    process.exit(EXIT.INTERRUPTED);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const interrupted = await finished;
  clearTimeout(timeout);
  clearInterval(ticker);
  progress.done();
  if (interrupted) process.stderr.write("cicada: interrupted, stopping devices and writing the report\n");

  const report = await session.stop(interrupted);
  process.off("SIGINT", onSignal);
  process.off("SIGTERM", onSignal);
  process.stdout.write(`\n${renderTable(report)}`);
  let lost = false;
  if (cfg.reportPath) {
    const written = writeReportSafely(cfg.reportPath, report);
    lost = written.error !== undefined;
    if (lost) process.stderr.write(`cicada: could not write the report to ${cfg.reportPath} (${written.error}); wrote it to ${written.path} instead\n`);
    else process.stderr.write(`cicada: report written to ${written.path}\n`);
  }
  const verdict = thresholdsExit(report);
  if (interrupted) return EXIT.INTERRUPTED;
  // Thresholds first; then a report that is not where it was asked for is a failed run too.
  return verdict !== EXIT.OK ? verdict : lost ? EXIT.INTERNAL : EXIT.OK;
}

/** Exit 3, listing each broken threshold with its value, when the report breaks any. */
function thresholdsExit(report: Report): number {
  const t = report.thresholds;
  if (!t) return EXIT.OK;
  if (t.passed) {
    process.stdout.write(`Thresholds: all ${t.held.length} held.\n`);
    return EXIT.OK;
  }
  const all = t.held.length + t.broken.length;
  process.stdout.write(`Thresholds broken (${t.broken.length} of ${all}):\n${t.broken.map((b) => `  ${b.expr}  (was ${b.actual})`).join("\n")}\n`);
  return EXIT.THRESHOLDS;
}
