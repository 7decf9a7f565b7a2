/**
 * Runs started from the control API: one at a time, each with the CLI's settings plus what
 * the request changes, validated exactly as `cicada run` validates its flags. Every run is
 * kept on disk (one JSON file per run, rewritten as it goes), so the dashboard's history
 * survives a page reload and a restart of cicada.
 */
import { scenarioNames } from "../config/scenario.ts";
import { mkdirSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseCommand } from "../config/options.ts";
import { readRunConfig, RUN_SPEC } from "../config/run.ts";
import { ConfigError, LoadError } from "../errors.ts";
import { writeReportSafely } from "../report/formats.ts";
import type { Report } from "../report/summary.ts";
import { TICK_MS } from "../engine/scheduler.ts";
import { RunSession } from "../run/session.ts";
import { writeFileAtomic } from "../sys/fs.ts";
import { startArgv, type StartRequest } from "./start.ts";

export type RunState = "running" | "stopping" | "finished";

export interface RunView {
  id: string;
  label: string;
  state: RunState;
  started: string;
  ended: string | null;
  report: Report;
}

/** A kept run in the history list. */
export interface RunSummary extends Omit<RunView, "report"> {
  users: number;
  publish: number;
  failures: number;
  /** The thresholds' verdict once the run ended (null while it runs, or when it had none). */
  passed: boolean | null;
}

export class ApiError extends Error {
  constructor(
    readonly status: 400 | 404 | 409,
    readonly errors: string[],
  ) {
    super(errors.join("; "));
  }
}

/** How often a running run's file is rewritten. */
const SAVE_MS = 5000;

interface Current {
  id: string;
  label: string;
  state: RunState;
  session: RunSession;
  ended: string | null;
  timers: ReturnType<typeof setTimeout>[];
  reportPath?: string;
}

export class RunManager {
  private current: Current | null = null;
  /** The form's defaults: the server's own settings (fixed for its lifetime). */
  readonly defaults: Record<string, unknown>;
  /** Summaries of finished runs read from disk: a finished run's file no longer changes. */
  private readonly finished = new Map<string, RunSummary>();

  constructor(
    /** The `cicada run` flags the server was started with: every run starts from them. */
    private readonly baseArgv: string[],
    private readonly historyDir: string,
    private readonly say: (line: string) => void,
  ) {
    mkdirSync(historyDir, { recursive: true });
    this.defaults = defaultsOf(baseArgv);
  }

  /** The run going now, if any. */
  get session(): RunSession | null {
    return this.current && this.current.state !== "finished" ? this.current.session : null;
  }

  /** The latest run, going or finished (its final stats stay scrapeable until the next one). */
  get latest(): RunSession | null {
    return this.current?.session ?? null;
  }

  async start(req: StartRequest): Promise<RunView> {
    if (this.session) throw new ApiError(409, [`run ${this.current!.id} is still going: stop it first`]);
    const argv = [...this.baseArgv, ...startArgv(req)];
    let session: RunSession;
    try {
      const o = parseCommand(RUN_SPEC, argv)!;
      const cfg = readRunConfig(o);
      o.check();
      session = await RunSession.open(cfg, this.say);
    } catch (err) {
      // Bad settings, or a part the run needs that is not there (certificates, Redis): the request's fault to fix.
      if (err instanceof ConfigError) throw new ApiError(400, err.issues);
      if (err instanceof LoadError) throw new ApiError(400, [err.message]);
      throw err;
    }
    const started = session.started;
    const id = `${started.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z")}-${Math.random().toString(16).slice(2, 6)}`;
    const cur: Current = { id, label: req.label ?? "", state: "running", session, ended: null, timers: [], ...(session.cfg.reportPath ? { reportPath: session.cfg.reportPath } : {}) };
    this.current = cur;
    await session.start();
    this.say(`run ${id} started: ${session.cfg.swarm.users} devices at ${session.cfg.swarm.rate}/s for ${session.cfg.durationMs / 1000}s`);
    cur.timers.push(setTimeout(() => void this.stop(), session.cfg.durationMs));
    cur.timers.push(setInterval(() => this.save(cur), SAVE_MS));
    this.save(cur);
    return this.viewOf(cur);
  }

  set(change: { users?: number; rate?: number; msg_rate?: number | "max"; publish?: "on" | "off" }): typeof change {
    const s = this.session;
    if (!s) throw new ApiError(409, ["no run is going"]);
    if (change.users !== undefined && change.users > s.capacity) {
      throw new ApiError(400, [`users must be at most ${s.capacity}: the run has ${s.capacity} identities (make more with cicada certs create, then start a new run)`]);
    }
    if (change.msg_rate !== undefined && s.cfg.swarm.scenario) throw new ApiError(400, [`msg_rate: the run's scenario (${s.cfg.swarm.scenario.name}) decides how often its devices publish; publish on/off pauses its every-hooks`]);
    const msgRate = change.msg_rate ?? s.msgRateNow;
    const each = typeof msgRate === "number" ? (Math.max(1, change.users ?? s.usersNow) * 1000) / msgRate : Infinity;
    if (each < TICK_MS) throw new ApiError(400, [`msg_rate ${msgRate} over ${change.users ?? s.usersNow} devices is a publish every ${each.toFixed(2)} ms per device; a device publishes at most every ${TICK_MS} ms`]);
    if (change.users !== undefined) s.setUsers(change.users);
    if (change.rate !== undefined) s.setRate(change.rate);
    if (change.msg_rate !== undefined) s.setMsgRate(change.msg_rate);
    if (change.publish !== undefined) s.setPublish(change.publish === "on");
    return change;
  }

  resetStats(): void {
    const s = this.session;
    if (!s) throw new ApiError(409, ["no run is going"]);
    s.resetStats();
  }

  /** Stops the current run; resolves with it finished (also when it was already stopping). */
  async stop(interrupted = false): Promise<RunView> {
    const cur = this.current;
    if (!cur || cur.state === "finished") throw new ApiError(409, ["no run is going"]);
    cur.state = "stopping";
    for (const t of cur.timers) clearTimeout(t);
    const report = await cur.session.stop(interrupted);
    // Two stops may race (the duration's end and a request): the first to get here records it.
    if ((cur.state as RunState) !== "finished") {
      cur.state = "finished";
      cur.ended = new Date().toISOString();
      this.save(cur);
      if (cur.reportPath) {
        const written = writeReportSafely(cur.reportPath, report);
        if (written.error) this.say(`could not write the report to ${cur.reportPath} (${written.error}); wrote it to ${written.path} instead`);
      }
      this.say(`run ${cur.id} finished`);
    }
    return this.viewOf(cur);
  }

  /** A run by id (the current one, or from disk); `since` keeps only later timeline points. */
  view(id: string, since = -1): RunView {
    const v = this.current?.id === id ? this.viewOf(this.current) : this.load(id);
    if (!v) throw new ApiError(404, [`no run ${id}`]);
    if (since >= 0) v.report = { ...v.report, timeline: (v.report.timeline ?? []).filter((p) => p.t > since) };
    return v;
  }

  currentView(since = -1): RunView | null {
    return this.current ? this.view(this.current.id, since) : null;
  }

  /** Every run kept, newest first, without their timelines. */
  list(): RunSummary[] {
    const out: RunSummary[] = [];
    for (const name of readdirSync(this.historyDir).filter((n) => n.endsWith(".json"))) {
      const id = name.slice(0, -5);
      if (this.current?.id === id) {
        out.push(summaryOf(this.viewOf(this.current)));
        continue;
      }
      let summary = this.finished.get(id);
      if (!summary) {
        const v = this.load(id);
        if (!v) continue;
        summary = summaryOf(v);
        this.finished.set(id, summary);
      }
      out.push(summary);
    }
    return out.sort((a, b) => (a.started < b.started ? 1 : -1));
  }

  private viewOf(cur: Current): RunView {
    return { id: cur.id, label: cur.label, state: cur.state, started: cur.session.started.toISOString(), ended: cur.ended, report: cur.session.report() };
  }

  private save(cur: Current): void {
    try {
      writeFileAtomic(join(this.historyDir, `${cur.id}.json`), JSON.stringify(this.viewOf(cur)), 0o644);
    } catch (err) {
      this.say(`cannot keep run ${cur.id} in ${this.historyDir}: ${(err as Error).message}`);
    }
  }

  private load(id: string): RunView | null {
    if (!/^[\w-]+$/.test(id)) return null;
    try {
      const v = JSON.parse(readFileSync(join(this.historyDir, `${id}.json`), "utf8")) as RunView;
      // A run that was going when cicada stopped is over.
      if (v.state !== "finished") v.state = "finished";
      return v;
    } catch {
      return null;
    }
  }
}

/** What the dashboard's start form shows before anything is typed: the server's own `cicada run` settings. */
function defaultsOf(argv: string[]): Record<string, unknown> {
  const cfg = readRunConfig(parseCommand(RUN_SPEC, argv)!);
  return {
    users: cfg.swarm.users,
    rate: cfg.swarm.rate,
    host: [...new Set(cfg.swarm.targets.map((t) => t.host))].join(","),
    port: [...new Set(cfg.swarm.targets.map((t) => t.port))].join(","),
    duration: `${cfg.durationMs / 1000}s`,
    qos: cfg.swarm.qos,
    scenarios: scenarioNames(cfg.scenariosDir),
  };
}

function summaryOf(v: RunView): RunSummary {
  const failures = Object.values(v.report.stats).reduce((a, r) => a + r.failures, 0);
  const t = v.state === "finished" ? v.report.thresholds : undefined;
  const passed = t && (t.held.length > 0 || t.broken.length > 0) ? t.passed : null;
  return { id: v.id, label: v.label, state: v.state, started: v.started, ended: v.ended, users: v.report.users.target, publish: v.report.stats.publish?.count ?? 0, failures, passed };
}
