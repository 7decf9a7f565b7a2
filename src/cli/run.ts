/** `cicada run`: one process simulating a fleet of devices, with a live progress line and a final report. */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { getFileLimit, raiseFileLimit } from "../../native/rlimit.ts";
import { readRunConfig, RUN_SPEC, type RunConfig } from "../config/run.ts";
import { ConfigError, EXIT } from "../errors.ts";
import { checkCapacity, ephemeralPorts } from "../engine/limits.ts";
import { Swarm, type IdentitySource } from "../engine/swarm.ts";
import { buildReport, renderTable, type Report } from "../report/summary.ts";
import { DirIdentities } from "../store/dir.ts";
import { parseCommand } from "./options.ts";
import { Progress, fmtInt } from "./progress.ts";

/** Ids for plain-TCP runs without a certificate directory. */
class SyntheticIdentities implements IdentitySource {
  constructor(readonly count: number, private readonly first: number) {}
  id(i: number): string {
    return (this.first + i).toString(16).padStart(8, "0");
  }
  load(): { cert: string; key: string } {
    throw new Error("synthetic identities have no certificate");
  }
}

export async function runCommand(argv: string[]): Promise<number> {
  const o = parseCommand(RUN_SPEC, argv);
  if (!o) return EXIT.OK;
  const cfg = readRunConfig(o);
  o.check();

  let identities: IdentitySource = new DirIdentities(cfg.certDir, cfg.firstDevice, cfg.swarm.users);
  if (identities.count < cfg.swarm.users) {
    if (cfg.swarm.tls) {
      const have = identities.count;
      throw new ConfigError([
        `--users ${cfg.swarm.users} needs ${cfg.swarm.users} device certificates in ${cfg.certDir}${cfg.firstDevice ? ` from device ${cfg.firstDevice} on` : ""}, found ${have}: ` +
          `run cicada certs create --devices ${cfg.swarm.users - have} --dir ${cfg.certDir}`,
      ]);
    }
    identities = new SyntheticIdentities(cfg.swarm.users, cfg.firstDevice);
  }

  const raised = await raiseFileLimit();
  if (!raised.ok) process.stderr.write(`cicada: warning: ${raised.reason}\n`);
  const limit = raised.ok ? raised : getFileLimit();
  const files = limit.ok ? limit.value : null;
  const cap = checkCapacity({
    users: cfg.swarm.users,
    destinations: new Set(cfg.swarm.targets.map((t) => `${t.host}:${t.port}`)).size,
    sources: cfg.swarm.sources.length,
    files,
    ports: ephemeralPorts(),
  });
  for (const w of cap.warnings) process.stderr.write(`cicada: warning: ${w}\n`);
  if (cap.errors.length) throw new ConfigError(cap.errors);

  return runSwarm(cfg, identities);
}

async function runSwarm(cfg: RunConfig, identities: IdentitySource): Promise<number> {
  const swarm = new Swarm(cfg.swarm, identities);
  const started = new Date();
  const cpu0 = process.cpuUsage();
  swarm.start();
  process.stderr.write(
    `cicada: ${fmtInt(cfg.swarm.users)} devices → ${cfg.echo.targets} at ${cfg.swarm.rate}/s for ${cfg.durationMs / 1000}s` +
      ` (${cfg.swarm.tls ? "mTLS" : "TCP"}, MQTT ${cfg.swarm.version === 5 ? "5" : "3.1.1"}, QoS ${cfg.swarm.qos})\n`,
  );

  const progress = new Progress(process.stderr, { intervalMs: 2000 });
  const t0 = performance.now();
  let prev = { t: t0, pub: 0, recv: 0, fail: 0 };
  const line = () => {
    const s = swarm.snapshot();
    const now = performance.now();
    const dt = Math.max(1e-3, (now - prev.t) / 1000);
    const rows = s.stats.rows;
    const pub = rows.publish.count, recv = rows.recv_message.count;
    const fail = Object.values(rows).reduce((a, r) => a + r.failures, 0);
    const text =
      `[${Math.round((now - t0) / 1000)}s] devices ${fmtInt(s.connected)}/${fmtInt(s.target)} connected` +
      ` | publish ${((pub - prev.pub) / dt).toFixed(1)}/s p99 ${rows.publish.latency.percentileMs(99).toFixed(1)} ms` +
      ` | recv ${((recv - prev.recv) / dt).toFixed(1)}/s | failures ${fmtInt(fail)} (+${fmtInt(fail - prev.fail)})`;
    prev = { t: now, pub, recv, fail };
    return text;
  };
  const ticker = setInterval(() => progress.update(line(), true), 2000);

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

  const { target, active, connected } = swarm.snapshot();
  await swarm.stop();
  process.off("SIGINT", onSignal);
  process.off("SIGTERM", onSignal);
  const cpu = process.cpuUsage(cpu0);
  const report = buildReport({
    config: cfg.echo,
    started,
    ended: new Date(),
    interrupted,
    users: { target, active, connected },
    stats: swarm.stats,
    cpuMicros: cpu.user + cpu.system,
    rssBytes: process.memoryUsage().rss,
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
