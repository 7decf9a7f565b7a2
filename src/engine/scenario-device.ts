/**
 * The device a scenario's hooks see (the scenario API's Device), and how what they hand over
 * becomes MQTT: topics filled per device, payloads as bytes, MQTT 5 properties, received
 * payloads parsed. The runner (scenario.ts) decides when each is used.
 */
import type { Device as ApiDevice, Message, PublishOptions } from "../scenario/api.ts";
import { intervalMs } from "../scenario/load.ts";
import type { OnePublishProperties } from "../mqtt/codec.ts";
import { State, type Device } from "../mqtt/device.ts";
import { Timer } from "./scheduler.ts";
import type { ScenarioRunner } from "./scenario.ts";

const utf8 = new TextEncoder();
const text = new TextDecoder();
export const EMPTY = new Uint8Array(0);

/** A device as its hooks see it (the scenario API's Device): one small object per device, its methods on the prototype. */
export class ScriptDevice implements ApiDevice<Record<string, unknown>> {
  state: Record<string, unknown> = {};

  constructor(
    private readonly r: ScenarioRunner,
    readonly dev: Device,
    /** Next run of each `every` hook (more than one); with one, the wheel's deadline is the only one. */
    private readonly dues: Float64Array | null,
  ) {}

  get multiple(): boolean {
    return this.dues !== null;
  }
  due(i: number): number {
    return this.dues ? this.dues[i]! : this.r.st.wheel.deadline(this.dev.index, Timer.SCENARIO);
  }
  setDue(i: number, at: number): void {
    if (this.dues) this.dues[i] = at;
    else this.r.st.wheel.set(this.dev.index, Timer.SCENARIO, at);
  }

  get id(): string {
    return this.dev.id;
  }
  get clientId(): string {
    return this.dev.clientId;
  }
  get tenant(): string {
    return this.r.st.cfg.tenant;
  }
  get index(): number {
    return this.r.st.identities.position?.(this.dev.index) ?? this.dev.index;
  }
  get connected(): boolean {
    return this.dev.state === State.CONNECTED;
  }
  now(): number {
    return Math.round(this.r.st.wallClock(Number.isNaN(this.r.scheduled) ? this.r.st.clock() : this.r.scheduled));
  }
  seq(): number {
    return this.dev.nextSeq++;
  }
  random(): number {
    return Math.random();
  }
  topic(name: string): string {
    return this.r.topic(this, name);
  }
  publish(topic: string, payload?: unknown, options?: PublishOptions): boolean {
    return this.r.publish(this, topic, payload, options);
  }
  subscribe(topic: string, options?: { qos?: 0 | 1 | 2 }): void {
    this.r.subscribe(this, topic, options?.qos);
  }
  canPublish(): boolean {
    return this.r.canPublish(this);
  }
  reply(request: Message, payload?: unknown, options?: PublishOptions): boolean {
    if (!request.responseTopic) return false;
    return this.r.publish(this, request.responseTopic, payload, { ...options, ...(request.correlationData ? { correlationData: request.correlationData } : {}) });
  }
  measure(row: string, ms?: number): void {
    this.r.row(row)?.ok(typeof ms === "number" && Number.isFinite(ms) ? Math.max(0, ms) : undefined);
  }
  fail(row: string, reason: string): void {
    this.r.row(row)?.fail(String(reason).slice(0, 80));
  }
  offline(duration: number | string): void {
    this.r.offline(this, typeof duration === "number" ? duration : parseDurationMs(duration));
  }
}

function parseDurationMs(d: string): number | undefined {
  const r = intervalMs(d);
  return typeof r === "string" ? undefined : r[0];
}

/**
 * A topic template's per-device parts filled: {tenant}, {id}, {clientId}, {index}, {machine}.
 * Split once into literal text and fields, so a publish joins a few strings (a regex replace per
 * publish was 8 % of a tracker's CPU).
 */
export function compileTopic(template: string, machine: string): (d: ScriptDevice) => string {
  const parts = template.replace(/\{machine\}/g, machine).split(/\{(tenant|id|clientId|index)\}/);
  if (parts.length === 1) return () => parts[0]!;
  return (d) => {
    let out = parts[0]!;
    for (let i = 1; i < parts.length; i += 2) out += String(d[parts[i] as "tenant" | "id" | "clientId" | "index"]) + parts[i + 1]!;
    return out;
  };
}

/** Intervals an interval function returned, parsed (a tracker says "5s" or "10m" on every run). */
const parsedIntervals = new Map<unknown, [number, number] | string>();
export function cachedInterval(v: unknown): [number, number] | string {
  if (typeof v !== "string") return intervalMs(v as never);
  let r = parsedIntervals.get(v);
  if (r === undefined) {
    r = intervalMs(v);
    if (parsedIntervals.size < 256) parsedIntervals.set(v, r);
  }
  return r;
}

export function payloadBytes(p: unknown): Uint8Array {
  if (p === undefined || p === null) return EMPTY;
  if (p instanceof Uint8Array) return p;
  if (typeof p === "string") return utf8.encode(p);
  return utf8.encode(JSON.stringify(p));
}

export function propertiesOf(o: PublishOptions | undefined): OnePublishProperties | undefined {
  if (!o || (o.responseTopic === undefined && o.correlationData === undefined && o.userProperties === undefined && o.contentType === undefined && o.messageExpiry === undefined)) return undefined;
  return {
    ...(o.responseTopic !== undefined ? { responseTopic: o.responseTopic } : {}),
    ...(o.correlationData !== undefined ? { correlationData: typeof o.correlationData === "string" ? utf8.encode(o.correlationData) : o.correlationData } : {}),
    ...(o.userProperties ? { userProperties: Object.fromEntries(Object.entries(o.userProperties).map(([k, v]) => [k, [String(v)]])) } : {}),
    ...(o.contentType !== undefined ? { contentType: o.contentType } : {}),
    ...(o.messageExpiry !== undefined ? { messageExpiryInterval: o.messageExpiry } : {}),
  };
}

/** JSON when it parses, else text. */
export function parsePayload(bytes: Uint8Array): unknown {
  const s = text.decode(bytes);
  const c = s.charCodeAt(0);
  // { [ " - digits t f n: worth trying as JSON.
  if (c === 123 || c === 91 || c === 34 || c === 45 || (c >= 48 && c <= 57) || c === 116 || c === 102 || c === 110) {
    try {
      return JSON.parse(s);
    } catch {
      return s;
    }
  }
  return s;
}
