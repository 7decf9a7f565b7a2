/** `cicada run`: a fleet of devices on this machine — one process per core — with a live progress line and a final report. */
import { mkdirSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { dirname } from "node:path";
import { getFileLimit, raiseFileLimit } from "../../native/rlimit.ts";
import { InProcessFleet } from "../cluster/local-fleet.ts";
import { Controller } from "../cluster/controller.ts";
import { idsDigest } from "../cluster/federation.ts";
import { Supervisor, planWorkers, type Fleet } from "../cluster/supervisor.ts";
import type { Range } from "../cluster/identities.ts";
import { identitiesFor } from "../cluster/worker.ts";
import { readRunConfig, RUN_SPEC, type RunConfig } from "../config/run.ts";
import { checkCapacity, ephemeralPorts } from "../engine/limits.ts";
import { ConfigError, EXIT } from "../errors.ts";
import { buildReport, renderTable, type Report } from "../report/summary.ts";
import { listIdentities } from "../cluster/identities.ts";
import { lifecycleService } from "../lifecycle/service.ts";
import { redact } from "../cluster/redis.ts";
import { CA_KEY, isStoreUrl, RedisStore, storeSettings } from "../store/redis.ts";
import { parseCommand } from "./options.ts";
import { Progress, fmtInt } from "./progress.ts";

export async function runCommand(argv: string[]): Promise<number> {
  const o = parseCommand(RUN_SPEC, argv);
  if (!o) return EXIT.OK;
  const cfg = readRunConfig(o);
  o.check();

  const fromStore = isStoreUrl(cfg.certDir);
  const where = fromStore ? `the store ${redact(cfg.certDir)}` : cfg.certDir;
  const ids = await listIdentities(cfg.certDir, cfg.storeCa);
  const available = Math.max(0, ids.length - cfg.firstDevice);
  const synthetic = !cfg.swarm.tls && available < cfg.swarm.users;
  if (available < cfg.swarm.users && !synthetic) {
    throw new ConfigError([
      `--users ${cfg.swarm.users} needs ${cfg.swarm.users} device certificates in ${where}${cfg.firstDevice ? ` from device ${cfg.firstDevice} on` : ""}, found ${available}: ` +
        `run cicada certs create --devices ${cfg.swarm.users - available} ${fromStore ? `--redis ${redact(cfg.certDir)}` : `--dir ${cfg.certDir}`}`,
    ]);
  }
  if (fromStore && cfg.swarm.tls && !cfg.swarm.caPem) {
    // The broker's CA, kept in the store by `cicada certs create --redis`.
    const store = await RedisStore.open(storeSettings(cfg.certDir, process.env, cfg.storeCa));
    cfg.swarm.caPem = (await store.caPem()) ?? undefined;
    await store.close();
    if (!cfg.swarm.caPem && !cfg.swarm.insecure) {
      throw new ConfigError([`--certs: ${where} holds no CA certificate (key ${CA_KEY}): pass --ca-cert FILE, or --insecure`]);
    }
  }

  if (cfg.federation) {
    const controller = new Controller(
      {
        redis: cfg.federation.redis,
        swarm: cfg.swarm,
        synthetic,
        space: [cfg.firstDevice, synthetic ? cfg.swarm.users : Math.max(available, cfg.swarm.users)],
        digest: idsDigest(ids),
        graceMs: cfg.federation.graceMs,
        expect: cfg.federation.expect,
        waitMs: Math.max(cfg.federation.graceMs, 10_000),
      },
      (line) => process.stderr.write(`cicada: ${line}\n`),
    );
    return runFleet(cfg, controller, 0);
  }

  const raised = await raiseFileLimit();
  if (!raised.ok) process.stderr.write(`cicada: warning: ${raised.reason}\n`);
  const limit = raised.ok ? raised : getFileLimit();
  const files = limit.ok ? limit.value : null;
  const perProcess = files ? Math.max(1, files.soft - 100) : cfg.swarm.users;
  const workers =
    cfg.workers === "auto" ? Math.max(1, Math.min(cfg.swarm.users, Math.max(availableParallelism(), Math.ceil(cfg.swarm.users / perProcess)))) : cfg.workers;
  const cap = checkCapacity({
    users: cfg.swarm.users,
    workers,
    destinations: new Set(cfg.swarm.targets.map((t) => `${t.host}:${t.port}`)).size,
    sources: cfg.swarm.sources.length,
    files,
    ports: ephemeralPorts(),
  });
  for (const w of cap.warnings) process.stderr.write(`cicada: warning: ${w}\n`);
  if (cap.errors.length) throw new ConfigError(cap.errors);

  const ranges: Range[] = [[cfg.firstDevice, synthetic ? cfg.swarm.users : Math.max(available, cfg.swarm.users)]];
  const say = (line: string) => process.stderr.write(`cicada: ${line}\n`);
  const lifecycle = cfg.swarm.lifecycle ? lifecycleService(cfg.swarm.lifecycle, cfg.swarm.tenant, say) : null;
  const fleet: Fleet =
    workers === 1
      ? new InProcessFleet(cfg.swarm, await identitiesFor({ certDir: cfg.certDir, ranges, synthetic, stride: 1, slot: 0, storeCa: cfg.storeCa }), lifecycle)
      : new Supervisor(planWorkers({ certDir: cfg.certDir, synthetic, ranges, workers, swarm: cfg.swarm, storeCa: cfg.storeCa }), say, lifecycle);
  return runFleet(cfg, fleet, workers);
}

async function runFleet(cfg: RunConfig, fleet: Fleet, workers: number): Promise<number> {
  const started = new Date();
  const cpu0 = process.cpuUsage();
  const federated = !!cfg.federation;
  await fleet.start();
  process.stderr.write(
    `cicada: ${fmtInt(cfg.swarm.users)} devices → ${cfg.echo.targets} at ${cfg.swarm.rate}/s for ${cfg.durationMs / 1000}s` +
      ` (${cfg.swarm.tls ? "mTLS" : "TCP"}, MQTT ${cfg.swarm.version === 5 ? "5" : "3.1.1"}, QoS ${cfg.swarm.qos}, ` +
      `${federated ? `${fleet.snapshot().machines?.filter((m) => !m.lost && !m.rejected).length} machines` : `${workers} process${workers > 1 ? "es" : ""}`})\n`,
  );

  const progress = new Progress(process.stderr, { intervalMs: 2000 });
  const t0 = performance.now();
  let prev = { t: t0, pub: 0, recv: 0, fail: 0 };
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
  const supervised = workers > 1 || federated;
  // CPU of this process and its workers, so the report's CPU covers the same window as its stats.
  const cpuNow = (workersCpu: number) => {
    const own = process.cpuUsage(cpu0);
    return own.user + own.system + (supervised ? workersCpu : 0);
  };
  let statsFrom = started;
  let cpuFrom = 0;
  let resetPending = cfg.resetStats;
  const ticker = setInterval(() => {
    if (resetPending) {
      const s = fleet.snapshot();
      if (s.connected >= s.target) {
        fleet.resetStats();
        resetPending = false;
        statsFrom = new Date();
        cpuFrom = cpuNow(s.workers.reduce((a, w) => a + w.cpu_us, 0));
        prev = { t: performance.now(), pub: 0, recv: 0, fail: 0 };
        progress.update(`[${Math.round((performance.now() - t0) / 1000)}s] all ${fmtInt(s.target)} devices connected: stats reset`, true);
        return;
      }
    }
    progress.update(line(), true);
  }, 2000);

  const { promise: finished, resolve: finish } = Promise.withResolvers<boolean>();
  const timeout = setTimeout(() => finish(false), cfg.durationMs);
  const onSignal = () => finish(true);
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const interrupted = await finished;
  clearTimeout(timeout);
  clearInterval(ticker);
  progress.done();
  if (interrupted) process.stderr.write("cicada: interrupted, stopping devices and writing the report\n");

  const after = await fleet.stop();
  process.off("SIGINT", onSignal);
  process.off("SIGTERM", onSignal);
  const own = process.cpuUsage(cpu0);
  // In-process: the one worker is this process. Otherwise add the workers' own figures.
  const cpuMicros = cpuNow(after.workers.reduce((a, w) => a + w.cpu_us, 0)) - cpuFrom;
  const rssBytes = process.memoryUsage().rss + (supervised ? after.workers.reduce((a, w) => a + w.rss, 0) : 0);
  const machines = after.machines?.map(({ id, host, pid, lost, users, ranges, connected, processes, cpu_us, rss, rejected }) => ({ id, host, pid, lost, users, ranges, connected, processes, cpu_us, rss, ...(rejected ? { rejected } : {}) }));
  const report = buildReport({
    config: { ...cfg.echo, workers: federated ? "machines" : workers },
    started: statsFrom,
    ended: new Date(),
    interrupted,
    users: { target: after.target, active: after.active, connected: after.connected },
    stats: after.stats,
    cpuMicros,
    rssBytes,
    machines,
    workers: supervised ? { processes: federated ? after.workers.length : workers, supervisor_cpu_percent: Math.round(((own.user + own.system) / 1e4 / Math.max(1e-3, (Date.now() - started.getTime()) / 1000)) * 100) / 100, restarts: after.restarts, list: after.workers.map(({ slot, pid, restarts, connected, rss, cpu_us }) => ({ slot, pid, restarts, connected, rss, cpu_us })) } : undefined,
  });
  process.stdout.write(`\n${renderTable(report)}`);
  if (cfg.reportPath) writeReport(cfg.reportPath, report);
  return interrupted ? EXIT.INTERRUPTED : EXIT.OK;
}

function writeReport(path: string, report: Report): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${JSON.stringify(report, null, 2)}\n`);
  process.stderr.write(`cicada: report written to ${path}\n`);
}
