// metrics/ — what a run counts: rows, latency histograms, their encoding and their exact merge.
// Imports point down only: ARCHITECTURE.md lists the layers, test/architecture.test.ts checks them.
/**
 * The stats of a run: rows named as in dojot's Locust tool (connect, disconnect, publish,
 * subscribe, recv_message, renew, revoke), each a success count, failures by reason and a
 * latency histogram; plus the run's health counters. Workers ship deltas of these; the
 * controller adds them up (see merge()).
 */
import { Latency, type LatencySummary } from "./histogram.ts";

export const ROWS = ["connect", "subscribe", "publish", "recv_message", "disconnect", "renew", "revoke"] as const;
export type RowName = (typeof ROWS)[number];

/** A scenario's own rows (d.measure, d.fail): lower case, digits and _, not a built-in name. */
export const CUSTOM_ROW = /^[a-z][a-z0-9_]{0,39}$/;
/** How many custom rows one run may have. */
export const MAX_CUSTOM_ROWS = 32;
/** The engine's row for what a scenario's hooks threw (or how long they blocked), by message. */
export const SCENARIO_ERROR_ROW = "scenario_error";
/** A scenario hook that runs longer than this holds up every device of its process: counted in scenario_error as blocked:<hook>. */
export const SLOW_HOOK_MS = 50;
/** Names a custom row may not take: the built-in rows, the consumer's (report: deliver, e2e) and the engine's own. */
export const RESERVED_ROWS: readonly string[] = [...ROWS, "deliver", "e2e", SCENARIO_ERROR_ROW];

/** Connection phases, each its own histogram. */
export const PHASES = ["tcp_connect", "tls_handshake", "ws_upgrade", "connack", "suback", "puback", "e2e"] as const;
export type PhaseName = (typeof PHASES)[number];

export class Row {
  count = 0;
  failures = 0;
  readonly reasons = new Map<string, number>();
  readonly latency = new Latency();

  ok(ms?: number): void {
    this.count++;
    if (ms !== undefined) this.latency.recordMs(ms);
  }

  fail(reason: string): void {
    this.failures++;
    this.reasons.set(reason, (this.reasons.get(reason) ?? 0) + 1);
  }

  add(other: Row): void {
    this.count += other.count;
    this.failures += other.failures;
    for (const [r, n] of other.reasons) this.reasons.set(r, (this.reasons.get(r) ?? 0) + n);
    this.latency.add(other.latency);
  }
}

/** Health of the generator itself: did cicada keep up with its own schedule? */
export interface Health {
  /** Publishes that went out more than LATE_MS after their scheduled time. */
  late_sends: number;
  /** Publishes skipped because the socket's send buffer was still full. */
  backpressure_skips: number;
  /** Inbound bytes that did not parse as MQTT (each closes its connection). */
  protocol_errors: number;
  /** Numbered commands (--actuate) a device never received: jumps in the numbers it saw. */
  command_gaps: number;
  /** Timer callbacks that threw: each cost its device its connection, not the process. */
  timer_errors: number;
  /** MQTT 5 acks with reason 0x10, No matching subscribers: accepted, but nobody was listening. */
  no_matching_subscribers: number;
  /** Connections whose CONNACK said Session Present (--clean false): the broker had kept their session. */
  sessions_resumed: number;
  /** Bytes --topic-alias kept off the wire (topics not sent, less the alias properties). */
  topic_alias_bytes_saved: number;
  /** Time the ramp waited because --max-connecting connects were in flight (ms, summed over processes). */
  ramp_held_ms: number;
}

export class Stats {
  readonly rows: Record<RowName, Row>;
  readonly phases: Record<PhaseName, Latency>;
  /** Event-loop lag: how late the scheduler's tick ran. */
  readonly loopLag = new Latency();
  health: Health = { late_sends: 0, backpressure_skips: 0, protocol_errors: 0, command_gaps: 0, timer_errors: 0, no_matching_subscribers: 0, sessions_resumed: 0, topic_alias_bytes_saved: 0, ramp_held_ms: 0 };
  /** Publishes handed to a socket, whatever became of them: sent = acked + failed after sending + in flight. */
  sent = 0;
  /** Bytes of those publishes (whole packets, as written). */
  sentBytes = 0;
  /** A scenario's own rows (d.measure, d.fail) and scenario_error, by name; empty for the built-in device. */
  readonly custom = new Map<string, Row>();

  constructor() {
    this.rows = Object.fromEntries(ROWS.map((r) => [r, new Row()])) as Record<RowName, Row>;
    this.phases = Object.fromEntries(PHASES.map((p) => [p, new Latency()])) as Record<PhaseName, Latency>;
  }

  /** The custom row `name`, made when first asked for (callers check the name: CUSTOM_ROW). */
  customRow(name: string): Row {
    let row = this.custom.get(name);
    if (!row) this.custom.set(name, (row = new Row()));
    return row;
  }

  /** Every row: the built-in ones, then the custom ones by name. */
  allRows(): [string, Row][] {
    const out: [string, Row][] = ROWS.map((r) => [r, this.rows[r]]);
    for (const name of [...this.custom.keys()].sort()) out.push([name, this.custom.get(name)!]);
    return out;
  }

  /** Failures by row and reason (`{ connect: { econnreset: 3 } }`); rows without any are left out. */
  failureReasons(): Record<string, Record<string, number>> {
    const out: Record<string, Record<string, number>> = {};
    for (const [name, row] of this.allRows()) if (row.failures) out[name] = Object.fromEntries(row.reasons);
    return out;
  }

  add(other: Stats): void {
    for (const r of ROWS) this.rows[r].add(other.rows[r]);
    for (const p of PHASES) this.phases[p].add(other.phases[p]);
    this.loopLag.add(other.loopLag);
    this.sent += other.sent;
    this.sentBytes += other.sentBytes;
    for (const [name, row] of other.custom) this.customRow(name).add(row);
    for (const k of Object.keys(this.health) as (keyof Health)[]) this.health[k] += other.health[k];
  }
}

export interface RowReport extends Omit<LatencySummary, "count"> {
  count: number;
  /** Samples behind the latency figures (QoS 0 publishes and disconnects have none). */
  latency_count: number;
  failures: number;
  rate_per_s: number;
  reasons: Record<string, number>;
}

/** A row as the report shows it; `seconds` is the window its rate is over. */
export function rowReport(row: Row, seconds: number): RowReport {
  const s = row.latency.summary();
  const { count: latency_count, ...lat } = s;
  return { count: row.count, latency_count, ...lat, failures: row.failures, rate_per_s: seconds > 0 ? Math.round((row.count / seconds) * 100) / 100 : 0, reasons: Object.fromEntries(row.reasons) };
}
