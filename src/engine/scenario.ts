/**
 * Devices that run a scenario (--scenario FILE.ts): its hooks on the timer wheel, and the
 * device API they call. The scenario decides what to send and when; this file encodes, sends
 * and counts it as the built-in device's traffic is counted (traffic.ts): every publish ends in
 * one counted outcome, and a hook that throws or blocks costs a counted scenario_error, never
 * the process.
 */
import type { IPublishPacket } from "mqtt-packet";
import type { Device as ApiDevice, Message, PublishOptions } from "../scenario/api.ts";
import type { LoadedScenario } from "../scenario/load.ts";
import { encodePublish, type QoS } from "../mqtt/codec.ts";
import { State, type Conn, type Device } from "../mqtt/device.ts";
import { subscribe, type SessionHost } from "../mqtt/session.ts";
import { CUSTOM_ROW, MAX_CUSTOM_ROWS, RESERVED_ROWS, SCENARIO_ERROR_ROW, SLOW_HOOK_MS } from "../metrics/stats.ts";
import { TICK_MS, Timer, intendedTime } from "./scheduler.ts";
import type { SwarmState } from "./state.ts";
import type { Traffic } from "./traffic.ts";
import { cachedInterval, compileTopic, EMPTY, parsePayload, payloadBytes, propertiesOf, ScriptDevice } from "./scenario-device.ts";

/** Distinct scenario_error messages kept per stats delta; the rest count as "other". */
const MAX_ERROR_REASONS = 50;

/** What the runner needs from the connections: a device going offline for a while. */
export interface ScenarioLinks extends SessionHost {
  offline(dev: Device, ms: number): boolean;
}


export class ScenarioRunner {
  private readonly devs: (ScriptDevice | undefined)[] = [];
  private readonly topics: Map<string, (d: ScriptDevice) => string>;
  /** The scheduled time of the `every` hook running now (NaN outside one): publishes are timed from it. */
  scheduled = NaN;

  constructor(
    readonly st: SwarmState,
    readonly sc: LoadedScenario,
    readonly links: ScenarioLinks,
    private readonly traffic: Traffic,
  ) {
    this.topics = new Map(Object.entries(sc.def.topics ?? {}).map(([name, t]) => [name, compileTopic(t, st.cfg.machine ?? "")]));
  }

  /** The device's scenario side, made (with its state) the first time it connects. */
  private handle(dev: Device): ScriptDevice {
    let h = this.devs[dev.index];
    if (h && h.dev === dev) return h;
    h = new ScriptDevice(this, dev, this.sc.every.length > 1 ? new Float64Array(this.sc.every.length) : null);
    this.devs[dev.index] = h;
    const init = this.sc.def.state;
    if (init) {
      const t0 = performance.now();
      try {
        h.state = (init(h as unknown as ApiDevice<never>) ?? {}) as Record<string, unknown>;
      } catch (err) {
        this.error("state", err);
      }
      this.timed("state", t0);
    }
    return h;
  }

  /** CONNACK accepted: each `every` hook first runs at a random point of its interval, then onConnect runs. */
  connected(dev: Device, now: number): void {
    const h = this.handle(dev);
    if (this.st.publishing.publish) this.schedule(h, now);
    const hook = this.sc.def.onConnect;
    if (!hook) return;
    const t0 = performance.now();
    try {
      this.async("onConnect", hook(h));
    } catch (err) {
      this.error("onConnect", err);
    }
    this.timed("onConnect", t0);
  }

  /** The scenario timer (due at `at`) fired: runs each `every` hook that is due, then re-arms for the next. */
  fire(dev: Device, at: number, now: number): void {
    const st = this.st;
    const h = this.devs[dev.index];
    if (!h || h.dev !== dev || dev.state !== State.CONNECTED || st.stopping || !st.publishing.publish) return;
    const every = this.sc.every;
    for (let i = 0; i < every.length; i++) {
      const due = h.multiple ? h.due(i) : at;
      if (due > now) continue;
      // The next run keeps to the schedule even when this one is late.
      let next = due + this.interval(h, i);
      if (next <= now) next = now + 1;
      h.setDue(i, next);
      this.scheduled = intendedTime(due, st.prevTick, now);
      const t0 = performance.now();
      try {
        this.async(every[i]!.name, every[i]!.hook.run(h));
      } catch (err) {
        this.error(every[i]!.name, err);
      }
      this.scheduled = NaN;
      this.timed(every[i]!.name, t0);
      if (dev.conn === null || dev.state !== State.CONNECTED) return; // it went offline in the hook
    }
    this.arm(h);
  }

  /** Publishing resumed (the API): connected devices get their hooks scheduled again. */
  rearm(now: number): void {
    if (!this.st.publishing.publish) return;
    for (const h of this.devs) {
      if (!h || h.dev.state !== State.CONNECTED || this.st.wheel.deadline(h.dev.index, Timer.SCENARIO) !== Infinity) continue;
      this.schedule(h, now);
    }
  }

  /** Each `every` hook's first run after a connect (or a resume), as its `start` says. */
  private schedule(h: ScriptDevice, now: number): void {
    for (let i = 0; i < this.sc.every.length; i++) {
      const start = this.sc.every[i]!.hook.start;
      h.setDue(i, start === "now" ? now : now + (start === "interval" ? 1 : Math.random()) * this.interval(h, i));
    }
    this.arm(h);
  }

  /** With several `every` hooks, the wheel holds the earliest of their times (with one, setDue set it). */
  private arm(h: ScriptDevice): void {
    if (!h.multiple) return;
    let next = Infinity;
    for (let i = 0; i < this.sc.every.length; i++) next = Math.min(next, h.due(i));
    if (next < Infinity) this.st.wheel.set(h.dev.index, Timer.SCENARIO, next);
  }

  /** Hook i's next interval, ms: fixed, or what its function says now (a bad answer counts and falls back to a minute). */
  private interval(h: ScriptDevice, i: number): number {
    const e = this.sc.every[i]!;
    let r = e.fixed;
    if (!r) {
      let v: unknown;
      try {
        v = (e.hook.interval as (d: ApiDevice<Record<string, unknown>>) => unknown)(h);
      } catch (err) {
        this.error(`${e.name}.interval`, err);
      }
      const parsed = cachedInterval(v);
      if (typeof parsed === "string") {
        this.error(`${e.name}.interval`, new Error(parsed));
        r = [60_000, 60_000];
      } else r = parsed;
    }
    return Math.max(TICK_MS, r[0] + Math.random() * (r[1] - r[0]));
  }

  /** A PUBLISH came (already counted in recv_message and acknowledged): onMessage. */
  message(conn: Conn, p: IPublishPacket): void {
    const hook = this.sc.def.onMessage;
    const h = this.devs[conn.device.index];
    if (!hook || !h || h.dev !== conn.device) return;
    const bytes = (p.payload as Uint8Array | undefined) ?? EMPTY;
    const props = p.properties;
    const msg: Message = {
      topic: p.topic,
      payload: parsePayload(bytes),
      bytes,
      qos: p.qos,
      retain: p.retain,
      ...(props?.responseTopic ? { responseTopic: props.responseTopic } : {}),
      ...(props?.correlationData ? { correlationData: props.correlationData as Uint8Array } : {}),
      ...(props?.userProperties ? { userProperties: props.userProperties as Record<string, string | string[]> } : {}),
      ...(props?.contentType ? { contentType: props.contentType } : {}),
    };
    const t0 = performance.now();
    try {
      this.async("onMessage", hook(h, msg.topic, msg.payload, msg));
    } catch (err) {
      this.error("onMessage", err);
    }
    this.timed("onMessage", t0);
  }

  /** The connection ended: onDisconnect, with the reason. */
  closed(dev: Device, reason: string): void {
    const hook = this.sc.def.onDisconnect;
    const h = this.devs[dev.index];
    if (!hook || !h || h.dev !== dev) return;
    const t0 = performance.now();
    try {
      this.async("onDisconnect", hook(h, reason));
    } catch (err) {
      this.error("onDisconnect", err);
    }
    this.timed("onDisconnect", t0);
  }

  // ---- what the device API does --------------------------------------------------------

  topic(h: ScriptDevice, name: string): string {
    const t = this.topics.get(name);
    return t ? t(h) : name;
  }

  publish(h: ScriptDevice, topicName: string, payload: unknown, o: PublishOptions | undefined): boolean {
    const st = this.st;
    if (st.stopping) return false; // nothing new leaves while acks drain
    const dev = h.dev;
    const conn = dev.conn;
    if (dev.state !== State.CONNECTED || !conn) return this.traffic.skip("not_connected");
    const qos = (o?.qos ?? st.cfg.qos) as QoS;
    const retain = o?.retain === true;
    const blocked = this.traffic.blocked(dev, conn, qos);
    if (blocked) return this.traffic.skip(blocked);
    if (qos > conn.maxQoS) return this.traffic.skip("qos_over_server_maximum");
    if (retain && !conn.retainAvailable) return this.traffic.skip("retain_unavailable");
    const id = qos > 0 ? dev.packetId() : 0;
    let bytes: Uint8Array;
    try {
      bytes = encodePublish(this.topic(h, topicName), payloadBytes(payload), qos, retain, id, conn.version, propertiesOf(o));
    } catch (err) {
      this.error("publish", err); // a topic too long, a payload JSON cannot write: the scenario's error, and no publish
      return false;
    }
    if (conn.maxPacketOut && bytes.length > conn.maxPacketOut) return this.traffic.skip("over_server_maximum_packet_size");
    const now = st.clock();
    if (qos > 0) this.traffic.track(dev, id, Number.isNaN(this.scheduled) ? now : this.scheduled, now, bytes);
    this.traffic.write(conn, bytes, 1, qos);
    return true;
  }

  canPublish(h: ScriptDevice): boolean {
    const dev = h.dev;
    const conn = dev.conn;
    return dev.state === State.CONNECTED && conn !== null && !this.st.stopping && this.traffic.blocked(dev, conn, 1) === null;
  }

  subscribe(h: ScriptDevice, name: string, qos: QoS | undefined): void {
    const conn = h.dev.conn;
    if (h.dev.state !== State.CONNECTED || !conn) return void this.st.stats.rows.subscribe.fail("not_connected");
    subscribe(this.links, conn, this.topic(h, name), qos ?? this.st.cfg.qos, this.st.clock());
  }

  /** d.measure / d.fail: the custom row `name`, or a scenario_error when the name cannot be one. */
  row(name: string) {
    const stats = this.st.stats;
    const row = stats.custom.get(name);
    if (row) return row;
    if (!CUSTOM_ROW.test(name) || RESERVED_ROWS.includes(name)) return void this.error("measure", new Error(`row name ${JSON.stringify(name).slice(0, 50)}: lower-case letters, digits and _, not ${RESERVED_ROWS.join(", ")}`));
    if (stats.custom.size >= MAX_CUSTOM_ROWS + 1) return void this.error("measure", new Error(`more than ${MAX_CUSTOM_ROWS} custom rows`));
    return stats.customRow(name);
  }

  offline(h: ScriptDevice, ms: number | undefined): void {
    if (ms === undefined) return void this.error("offline", new Error("offline(duration) needs a time such as \"10m\""));
    this.links.offline(h.dev, Math.max(TICK_MS, ms));
  }

  /** A hook threw: scenario_error, by hook and message (deduplicated, bounded). */
  error(hook: string, err: unknown): void {
    const row = this.st.stats.customRow(SCENARIO_ERROR_ROW);
    const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    const reason = `${hook}: ${message}`.slice(0, 160);
    row.fail(row.reasons.has(reason) || row.reasons.size < MAX_ERROR_REASONS ? reason : "other");
  }

  /** An async hook: its rejection is counted like a throw (unhandled, it would end the process). */
  private async(hook: string, result: unknown): void {
    if (result instanceof Promise) result.catch((err: unknown) => this.error(hook, err));
  }

  private timed(hook: string, t0: number): void {
    const ms = performance.now() - t0;
    if (ms > SLOW_HOOK_MS) this.st.stats.customRow(SCENARIO_ERROR_ROW).fail(`blocked:${hook}`);
  }
}
