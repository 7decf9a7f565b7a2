/** How devices publish and who listens: the rate (--msg-rate), templates, churn, and plain subscribers. */
import { deviceTopic } from "../engine/config.ts";
import { TICK_MS } from "../engine/scheduler.ts";
import { PublishTemplate } from "../mqtt/codec.ts";
import type { Options, OptionSpecs } from "./options.ts";
import { parseDuration } from "../sys/units.ts";

export const TRAFFIC_OPTIONS: OptionSpecs = {
    "msg-rate": { type: "string", arg: "N|max", help: "Total publishes per second, spread evenly over the devices: each publishes every users/N seconds (instead of --interval); max: each as fast as its --inflight window allows" },
    publish: { type: "string", arg: "on|off", default: "on", help: "off: devices connect, subscribe and hold, and publish nothing (a connection benchmark)" },
    topic: { type: "string", arg: "TEMPLATE", help: "Publish topic: {tenant}, {id}, {index}, {machine} per device, {seq}, {rand:N} per message (default: the device's CN + /attrs)" },
    payload: { type: "string", arg: "TEMPLATE", help: "Payload template, e.g. '{\"t\":{timestamp},\"n\":{seq},\"v\":{rand:0..100},\"s\":\"{string:8}\"}'" },
    "payload-file": { type: "string", arg: "FILE", help: "The payload template from a file" },
    retain: { type: "boolean", help: "Publish with the retain flag" },
    churn: { type: "string", arg: "N", help: "Connected devices per second that disconnect and reconnect at once: a reconnect storm" },
    subscribers: { type: "string", arg: "N", help: "Connections that only subscribe (with the consumer's identity) and count what is delivered: messages, bytes, publish → delivery latency" },
    "sub-topic": { type: "string", arg: "FILTER", default: "+/attrs", help: "What the subscribers subscribe to" },
    "sub-qos": { type: "string", arg: "0|1|2", default: "1", help: "QoS of the subscriptions" },
    shared: { type: "string", arg: "GROUP", help: "The subscribers share one subscription ($share/GROUP/FILTER): each message goes to one of them (without it, each gets every message: fan-out)" },
};

/** A device's shortest publish interval: one timer-wheel tick. */
const MIN_PUBLISH_INTERVAL_MS = TICK_MS;

export interface Traffic {
  intervalMs: [number, number];
  /** --msg-rate N: the total rate, which sets intervalMs. */
  msgRate?: number;
  /** --msg-rate max. */
  max: boolean;
  publish: boolean;
  topic?: string;
  payload?: string;
  churn: number;
}

/** --msg-rate, --publish, the templates and --churn; `intervalMs` is --interval's (or dojot's) unless the rate sets it. Problems go to `o.issues`. */
export function readTraffic(o: Options, users: number, intervalMs: [number, number]): Traffic {
  const max = o.str("msg-rate") === "max";
  const msgRate = o.has("msg-rate") && !max ? o.num("msg-rate", 1, Number.MIN_VALUE) : undefined;
  if ((max || msgRate !== undefined) && o.has("interval")) o.issues.push(`--msg-rate and --interval both set how often devices publish: give one`);
  if (max) intervalMs = [TICK_MS, TICK_MS];
  if (msgRate !== undefined) {
    // Every device publishes on the same fixed interval; devices connect spread over the ramp, so their turns are spread too.
    const each = (users * 1000) / msgRate;
    if (each < MIN_PUBLISH_INTERVAL_MS) o.issues.push(`${o.source("msg-rate")} ${msgRate} over ${users} devices is a publish every ${each.toFixed(2)} ms per device; a device publishes at most every ${MIN_PUBLISH_INTERVAL_MS} ms: raise --users to at least ${Math.ceil((msgRate * MIN_PUBLISH_INTERVAL_MS) / 1000)} or lower --msg-rate`);
    else intervalMs = [each, each];
  }
  const publish = o.choice("publish", ["on", "off"], "on") === "on";
  const { topic, payload } = readTemplates(o, users);
  const churn = o.has("churn") ? o.num("churn", 0, 0) : 0;
  return { intervalMs, ...(msgRate !== undefined ? { msgRate } : {}), max, publish, ...(topic !== undefined ? { topic } : {}), ...(payload !== undefined ? { payload } : {}), churn };
}

/** --topic and --payload/--payload-file, checked by building one device's PUBLISH from them. Problems go to `o.issues`. */
function readTemplates(o: Options, users: number): { topic?: string; payload?: string } {
  const topic = o.str("topic");
  if (o.has("payload") && o.has("payload-file")) o.issues.push("--payload and --payload-file both give the payload: give one");
  const payload = o.str("payload") ?? o.fileText("payload-file");
  if (payload !== undefined && o.str("payload-size") !== "0") o.issues.push("--payload-size pads the default payload; a --payload template is its own size");
  if (o.bool("verify") && topic !== undefined) o.issues.push("--verify reads each device's telemetry on <its CN>/attrs: it does not go with --topic");
  if (o.bool("verify") && payload !== undefined && !/\{timestamp\}/.test(payload)) o.issues.push('--verify counts messages by their "timestamp" and "seq": a --payload template needs "timestamp":{timestamp} and "seq":{seq}');
  if (topic !== undefined && /^\s*$|[#+\u0000]/.test(topic)) o.fail("topic", "must be a topic name: not empty, without # or +", topic);
  try {
    const sample = topic === undefined ? "t" : deviceTopic(topic, { tenant: "t", id: "d", index: users, machine: "m" });
    new PublishTemplate(sample, 1, 5, 0, payload !== undefined ? { payload } : {});
  } catch (err) {
    o.issues.push(`${/^topic/.test((err as Error).message) ? "--topic" : o.has("payload") ? "--payload" : "--payload-file"} ${(err as Error).message.replace(/^(topic|payload) template: /, "")}`);
  }
  return { ...(topic !== undefined ? { topic } : {}), ...(payload !== undefined ? { payload } : {}) };
}

export interface SubscribersConfig {
  connections: number;
  /** The topic filter, `$share/GROUP/…` with --shared. */
  filter: string;
  qos: 0 | 1 | 2;
  cert?: string;
  key?: string;
  waitMs: number;
}

/** --subscribers and its settings; the identity is the consumer's (--verify-cert/--verify-key). Problems go to `o.issues`. */
export function readSubscribers(o: Options, tls: boolean): SubscribersConfig | undefined {
  if (!o.has("subscribers")) {
    if (o.has("shared")) o.issues.push("--shared needs --subscribers");
    return undefined;
  }
  const connections = o.int("subscribers", 1, 1, 10_000);
  const topic = o.str("sub-topic")!;
  const qos = o.int("sub-qos", 1, 0, 2) as 0 | 1 | 2;
  const group = o.str("shared");
  if (group !== undefined && !/^[^/+#]+$/.test(group)) o.fail("shared", "must be a group name without /, + or #", group);
  const cert = o.fileText("verify-cert");
  const key = o.fileText("verify-key");
  if (tls && (!o.has("verify-cert") || !o.has("verify-key"))) o.issues.push("--subscribers over TLS need the consumer's own --verify-cert and --verify-key");
  const waitMs = parseDuration(o.str("verify-wait") ?? "5s") ?? 5000;
  return { connections, filter: group ? `$share/${group}/${topic}` : topic, qos, ...(cert ? { cert } : {}), ...(key ? { key } : {}), waitMs };
}
