/**
 * Schemas of what crosses Redis between a controller and its machines. Every beat and machine
 * state is checked against them before any of it is used: a message that does not match is
 * dropped whole and counted, never half-applied. They are strict — a field they do not name
 * (a shell hook, a CA directory, a password) makes the message invalid — and bounded, so a
 * forged message cannot ask for absurd work.
 */
import { z } from "zod";
import type { SwarmConfig } from "../engine/config.ts";
import type { LifecyclePlan } from "../lifecycle/types.ts";
import { Latency } from "../metrics/histogram.ts";
import { type EncodedStats, type PackedStats, unpackStats } from "../metrics/snapshot.ts";
import { MAX_CUSTOM_ROWS, ROWS } from "../metrics/stats.ts";
import { TLS_GROUPS_FORMAT, TLS_STACKS, TLS_VERSIONS } from "../transport/connect.ts";
import type { Assignment, Beat, MachineState } from "./redis-protocol.ts";
import type { WorkerInfo } from "./fleet.ts";

const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const amount = z.number().finite().min(0);
const ms = z.number().finite().min(0).max(365 * 86_400_000);
const name = z.string().min(1).max(200);
const range = z.tuple([count, count]);

const policy = z.object({ max: count, afterMs: ms, probability: z.number().min(0).max(100) }).strict();
const plan: z.ZodType<LifecyclePlan> = z.object({ renew: policy.optional(), revoke: policy.optional(), signer: z.enum(["local", "dojot"]), crlWaitMs: ms }).strict();

const swarm: z.ZodType<SwarmConfig> = z
  .object({
    targets: z.array(z.object({ host: z.string().min(1).max(255), port: z.number().int().min(1).max(65535) }).strict()).min(1).max(10_000),
    sources: z.array(z.string().max(64)).max(1024),
    tls: z.boolean(),
    tlsStack: z.enum(TLS_STACKS).optional(),
    tlsVersion: z.enum(TLS_VERSIONS).optional(),
    tlsGroups: z.string().regex(TLS_GROUPS_FORMAT).max(200).optional(),
    insecure: z.boolean(),
    caPem: z.string().max(1024 * 1024).optional(),
    tenant: z.string().min(1).max(255),
    qos: z.union([z.literal(0), z.literal(1), z.literal(2)]),
    version: z.union([z.literal(4), z.literal(5)]),
    keepaliveS: z.number().int().min(0).max(65535),
    intervalMs: z.tuple([ms, ms]),
    publish: z.boolean().optional(),
    topic: z.string().min(1).max(65535).optional(),
    payload: z.string().max(16 * 1024 * 1024).optional(),
    retain: z.boolean().optional(),
    churn: amount.optional(),
    max: z.boolean().optional(),
    machine: z.string().max(255).optional(),
    payloadSize: z.number().int().min(0).max(256 * 1024 * 1024),
    payloadSizeMax: z.number().int().min(0).max(256 * 1024 * 1024).optional(),
    maxPacketSize: z.number().int().min(64).max(268_435_460).optional(),
    inflight: z.number().int().min(1).max(65535).optional(),
    ackTimeoutMs: ms.optional(),
    drainMs: ms.optional(),
    reconnectMs: z.tuple([ms, ms]),
    connectTimeoutMs: ms,
    maxConnecting: z.number().int().min(1).max(1_000_000).optional(),
    users: count,
    rate: amount,
    lifecycle: plan.optional(),
    // A name and a hash to look up among the machine's own files (never code, never a path it uses).
    scenario: z.object({ name: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/), path: z.string().max(4096), sha256: z.string().regex(/^[0-9a-f]{64}$/) }).strict().optional(),
  })
  .strict();

const assignment: z.ZodType<Assignment> = z.object({ v: count, fence: count, ranges: z.array(range).max(100_000), users: count, rate: amount }).strict();

const BeatSchema: z.ZodType<Beat> = z
  .object({
    t: z.literal("beat"),
    run: name,
    started: count,
    seq: count,
    at: count,
    epoch: count,
    grace_ms: ms.min(1),
    stop: z.boolean(),
    swarm,
    synthetic: z.boolean(),
    verify: z.object({ connections: z.number().int().min(1).max(64), actuateRate: amount, waitMs: ms }).strict().optional(),
    assign: z.record(name, assignment),
    acks: z.record(name, count),
  })
  .strict();

const worker: z.ZodType<WorkerInfo> = z
  .object({ v: count, target: count, active: count, connected: count, inflight: count, rss: count, cpu_us: count, fds: count, fd_limit: count, slot: count, pid: count, restarts: count, alive: z.boolean() })
  .strict();

const packedRow = z.object({ count, failures: count, reasons: z.record(z.string().max(200), count), h: z.string().max(1024 * 1024) }).strict();
const packed: z.ZodType<PackedStats> = z
  .object({
    // The built-in rows, a scenario's own (MAX_CUSTOM_ROWS) and scenario_error: no more.
    rows: z.record(z.string().max(64), packedRow).refine((r) => Object.keys(r).length <= ROWS.length + MAX_CUSTOM_ROWS + 1, "too many rows"),
    phases: z.record(z.string().max(64), z.string().max(1024 * 1024)),
    lag: z.string().max(1024 * 1024),
    health: z.record(z.string().max(64), count),
    sent: count,
    sent_bytes: count.optional(),
  })
  .strict() as unknown as z.ZodType<PackedStats>;

const StateSchema: z.ZodType<MachineState> = z
  .object({
    t: z.literal("state"),
    machine: name,
    host: z.string().max(255),
    pid: count,
    since: count,
    at: count,
    run: name.nullable(),
    seq: count,
    epoch: count,
    v: count,
    used: count,
    ids: count,
    digest: z.string().max(64),
    running: z.boolean(),
    stopped: z.boolean(),
    target: count,
    active: count,
    connected: count,
    cpu_us: count,
    rss: count,
    workers: z.array(worker).max(4096),
    stats: z.object({ from: count, to: count, packed }).strict().nullable(),
    pending: count,
    dropped: count,
    fenced: count,
    verified: z.object({ delivered: count, duplicated: count, reordered: count, commands_sent: count, latency: z.array(count).max(200_000) }).strict().optional(),
    error: z.string().max(2000).optional(),
  })
  .strict();

/** A beat, or null when `value` is not one. */
export function parseBeat(value: unknown): Beat | null {
  const r = BeatSchema.safeParse(value);
  return r.success ? r.data : null;
}

/** A machine state and its stats unpacked, or null when `value` is not one (histograms included: every bucket must exist). */
export function parseState(value: unknown): { state: MachineState; stats: EncodedStats | null } | null {
  const r = StateSchema.safeParse(value);
  if (!r.success) return null;
  const s = r.data;
  if (!s.stats) return { state: s, stats: null };
  if (s.stats.to < s.stats.from) return null;
  let stats: EncodedStats;
  try {
    stats = unpackStats(s.stats.packed);
  } catch {
    return null;
  }
  const all = [...Object.values(stats.rows).map((row) => row.h), ...Object.values(stats.phases), stats.lag];
  if (s.verified && !Latency.isSparse(s.verified.latency)) return null;
  return all.every(Latency.isSparse) ? { state: s, stats } : null;
}
