/**
 * The verifying consumer (`cicada run --verify`): one or more subscriber connections of the
 * platform's own kind (mTLS with their own certificate) on every device's telemetry topic. It
 * counts, per device, what the broker delivered — by the `seq` each device numbers its
 * messages with — so a run can show loss, duplicates and order end to end, and it measures
 * publish → delivery latency on the same clock as the devices (same machine). With `--actuate`
 * it is also the backend: it publishes numbered commands to devices' `…/config` topics.
 */
import type { TLSOptions } from "bun";
import * as mqtt from "mqtt-packet";
import { CMD, encodeAck, payloadStamp, type ProtocolVersion } from "../mqtt/codec.ts";
import { Latency } from "../metrics/histogram.ts";
import { commonNameOf } from "../pki/subject.ts";
import { Transport, tlsOfferOptions, type LinkEvents, type Target, type TlsOffer } from "../transport/connect.ts";
import type { Link as SocketLink } from "../transport/link.ts";
import { wsFrame } from "../transport/ws.ts";
import type { SwarmConfig } from "./config.ts";

/** Messages within this many of a device's highest seq are told apart as late or duplicate; older ones count as late. */
const WINDOW = 32;

class Track {
  /** Highest seq delivered, and which of the WINDOW before it were (bit k: max - k). */
  max = 0;
  seen = 0;
  delivered = 0;
}

/** Per-device delivery accounting from the messages' seq. */
export class DeliveryTracker {
  private readonly devices = new Map<string, Track>();
  delivered = 0;
  duplicated = 0;
  reordered = 0;

  /** Counts one delivery of message `seq` (from 1) of `device`. */
  record(device: string, seq: number): void {
    let t = this.devices.get(device);
    if (!t) this.devices.set(device, (t = new Track()));
    if (seq > t.max) {
      const shift = seq - t.max;
      t.seen = shift >= WINDOW ? 1 : ((t.seen << shift) | 1) >>> 0;
      t.max = seq;
    } else {
      const back = t.max - seq;
      if (back < WINDOW) {
        const bit = (1 << back) >>> 0;
        if (t.seen & bit) {
          this.duplicated++;
          return;
        }
        t.seen = (t.seen | bit) >>> 0;
      }
      this.reordered++;
    }
    t.delivered++;
    this.delivered++;
  }

  /** Counts afresh (a stats reset); what each device was last seen at is kept. */
  resetCounts(): void {
    this.delivered = this.duplicated = this.reordered = 0;
    for (const t of this.devices.values()) t.delivered = 0;
  }

  /** Devices heard from (for actuation). */
  known(): string[] {
    return [...this.devices.keys()];
  }
}

/** With TlsOffer: what the consumer's ClientHello offers, as the devices' does (--tls-version, --tls-groups). */
export interface VerifierOptions extends TlsOffer {
  targets: Target[];
  tls: boolean;
  insecure: boolean;
  caPem?: string;
  /** The consumer's own identity (PEM), for mTLS. */
  cert?: string;
  key?: string;
  version: ProtocolVersion;
  /** Subscriber connections per broker address; with more than one link in all, they share one `$share` subscription. */
  connections: number;
  /** Commands per second to devices' config topics (0: none). */
  actuateRate: number;
  /** MQTT over WebSocket (as the devices: --transport ws|wss). */
  ws?: { path: string; protocol?: string };
  /** Only these devices are counted (a federated machine verifies its own); all when absent. */
  own?: (device: string) => boolean;
  /** Said after the client id (its certificate's CN), so consumers sharing one identity on several machines do not take each other's session. */
  clientIdSuffix?: string;
  /**
   * Plain subscribers (--subscribers) instead of the verifying consumer: `connections` links in
   * all (not per address), each subscribing to `filter` at `qos`; every delivery is counted,
   * with its bytes and publish → delivery latency, but no per-device accounting (with several
   * links each may rightly get every message: fan-out).
   */
  subscribe?: { filter: string; qos: 0 | 1 | 2 };
}

/** How a consumer reaches the devices' brokers: as the devices do (addresses, transport, TLS, CA, MQTT version). */
export function dialsLike(swarm: SwarmConfig): Pick<VerifierOptions, "targets" | "tls" | "ws" | "insecure" | "caPem" | "tlsVersion" | "tlsGroups" | "version"> {
  return {
    targets: swarm.targets,
    tls: swarm.tls,
    ...(swarm.ws ? { ws: swarm.ws } : {}),
    insecure: swarm.insecure,
    ...(swarm.caPem ? { caPem: swarm.caPem } : {}),
    ...(swarm.tlsVersion ? { tlsVersion: swarm.tlsVersion } : {}),
    ...(swarm.tlsGroups ? { tlsGroups: swarm.tlsGroups } : {}),
    version: swarm.version,
  };
}

/** What plain subscribers counted. */
export interface SubscriberTotals {
  messages: number;
  bytes: number;
  /** Publish → delivery latency, sparse buckets. */
  latency: number[];
}

/** What a verifier counted, as running totals: shipped from machines to the controller, which adds them up. */
export interface VerifiedTotals {
  delivered: number;
  duplicated: number;
  reordered: number;
  commands_sent: number;
  /** Publish → delivery latency, sparse buckets (Latency.toSparse). */
  latency: number[];
}

/** Adds `b` into `a` (the controller's sum over machines). */
export function addVerified(a: VerifiedTotals, b: VerifiedTotals): VerifiedTotals {
  const l = new Latency();
  l.addSparse(a.latency);
  l.addSparse(b.latency);
  return { delivered: a.delivered + b.delivered, duplicated: a.duplicated + b.duplicated, reordered: a.reordered + b.reordered, commands_sent: a.commands_sent + b.commands_sent, latency: l.toSparse() };
}

interface Link extends SocketLink {
  parser: mqtt.Parser;
  /** PUBACKs for the packets of the read being handled: written together, once per read. */
  acks: Uint8Array[];
  ready: PromiseWithResolvers<void>;
  index: number;
  clientId: string;
}

/** Writes straight to a link's socket (a consumer sends little; no batching), as one frame over WebSocket. */
function write(link: Link, bytes: Uint8Array): void {
  link.socket?.write(link.ws ? wsFrame(bytes) : bytes);
}

export class Verifier {
  readonly tracker = new DeliveryTracker();
  readonly latency = new Latency();
  commandsSent = 0;
  /** Every delivery, and its payload bytes. */
  messages = 0;
  bytes = 0;
  private readonly links: Link[] = [];
  private actuator: ReturnType<typeof setInterval> | null = null;
  private pinger: ReturnType<typeof setInterval> | null = null;
  private nextCommand = 0;
  private commandSeq = 0;
  /** Each device's last command number: devices see their own commands numbered 1, 2, 3… and count gaps. */
  private readonly commandSeqs = new Map<string, number>();

  private readonly transport: Transport;

  constructor(private readonly o: VerifierOptions) {
    this.transport = new Transport(this.linkEvents(), o.tls, !o.insecure);
  }

  /** Socket events of every link: CONNECT once the transport is up, packets parsed, acks written once per read. */
  private linkEvents(): LinkEvents {
    return {
      opened: () => {},
      ready: (l) => {
        const link = l as Link;
        write(link, mqtt.generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: this.o.version, clientId: link.clientId, clean: true, keepalive: 60 }, { protocolVersion: this.o.version }));
      },
      data: (l, d) => {
        const link = l as Link;
        link.parser.parse(Buffer.from(d.buffer, d.byteOffset, d.byteLength));
        if (link.acks.length) {
          write(link, link.acks.length === 1 ? link.acks[0]! : Buffer.concat(link.acks));
          link.acks = [];
        }
      },
      drained: () => {},
      closed: (l, reason) => {
        const link = l as Link;
        link.socket = null;
        link.ready.reject(new Error(reason ? `the connection closed: ${reason}` : "the connection closed"));
      },
      unpinned: (l) => l.socket?.end(),
      crashed: (l) => l.socket?.end(),
    };
  }

  /** Links: `connections` per broker address, so independent brokers are all heard. */
  private get linkCount(): number {
    return this.o.subscribe ? this.o.connections : this.o.targets.length * this.o.connections;
  }

  /**
   * The topic filter: one wildcard for a single link; a shared subscription over several, so
   * each message is delivered once whether the addresses are independent brokers or nodes of
   * one cluster (MQTT 5 §4.8.2; mosquitto and EMQX take it from 3.1.1 clients too).
   */
  filter(): string {
    if (this.o.subscribe) return this.o.subscribe.filter;
    return this.linkCount > 1 ? "$share/cicada-verify/+/attrs" : "+/attrs";
  }

  /** Connects and subscribes every link; rejects with the reason when one cannot. */
  async start(timeoutMs = 10_000): Promise<void> {
    const fallback = this.o.subscribe ? "cicada-sub" : "cicada-verify";
    const base = `${this.o.cert ? (commonNameOf(this.o.cert) ?? fallback) : fallback}${this.o.subscribe ? "-sub" : ""}${this.o.clientIdSuffix ?? ""}`;
    for (let i = 0; i < this.linkCount; i++) this.links.push(this.open(i, this.linkCount > 1 ? `${base}-${i}` : base));
    let timeout: ReturnType<typeof setTimeout> | undefined;
    const timer = new Promise<never>((_, reject) => (timeout = setTimeout(() => reject(new Error(`no SUBACK within ${timeoutMs / 1000} s`)), timeoutMs)));
    // Cleared either way: a pending timer would hold a short run's process open for the rest of it.
    await Promise.race([Promise.all(this.links.map((l) => l.ready.promise)), timer]).finally(() => clearTimeout(timeout));
    this.pinger = setInterval(() => {
      for (const l of this.links) write(l, mqtt.generate({ cmd: "pingreq" }));
    }, 20_000);
    if (this.o.actuateRate > 0) this.startActuating();
  }

  private open(index: number, clientId: string): Link {
    const parser = mqtt.parser({ protocolVersion: this.o.version });
    const link: Link = {
      socket: null,
      queue: [],
      pending: null,
      dirty: false,
      lastTx: 0,
      failReason: null,
      closed: false,
      pins: null,
      pinned: false,
      ws: null,
      tls13: null,
      parser,
      acks: [],
      ready: Promise.withResolvers<void>(),
      index,
      clientId,
    };
    link.ready.promise.catch(() => {});
    parser.on("packet", (p) => this.onPacket(link, p));
    parser.on("error", () => link.socket?.end());
    const target = this.o.targets[index % this.o.targets.length]!;
    const tls: TLSOptions | undefined = this.o.tls ? { cert: this.o.cert, key: this.o.key, ca: this.o.caPem, rejectUnauthorized: !this.o.insecure, ...tlsOfferOptions(this.o) } : undefined;
    this.transport.dial(link, { target, ...(tls ? { tls } : {}), ...(this.o.ws ? { ws: this.o.ws } : {}) });
    return link;
  }

  private onPacket(link: Link, p: mqtt.Packet): void {
    const send = (packet: mqtt.Packet): void => write(link, mqtt.generate(packet, { protocolVersion: this.o.version }));
    switch (p.cmd) {
      case "connack": {
        const code = p.reasonCode ?? p.returnCode ?? 0;
        if (code !== 0) return link.ready.reject(new Error(`the broker refused the verifying consumer (code ${code})`));
        return send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: this.filter(), qos: this.o.subscribe?.qos ?? 1 }] });
      }
      case "suback": {
        const granted = p.granted[0];
        if (typeof granted !== "number" || granted >= 0x80) return link.ready.reject(new Error(`the broker refused the subscription to ${this.filter()}`));
        return link.ready.resolve();
      }
      case "pubrel":
        link.acks.push(encodeAck(CMD.PUBCOMP, p.messageId!));
        return;
      case "publish": {
        if (p.qos === 1) link.acks.push(encodeAck(CMD.PUBACK, p.messageId!));
        else if (p.qos === 2) link.acks.push(encodeAck(CMD.PUBREC, p.messageId!));
        this.messages++;
        this.bytes += p.payload.length;
        if (this.o.subscribe) {
          const { timestamp } = payloadStamp(p.payload as Uint8Array);
          if (Number.isFinite(timestamp)) this.latency.recordMs(Math.max(0, Date.now() - timestamp));
          return;
        }
        if (!p.topic.endsWith("/attrs")) return;
        const device = p.topic.slice(0, -"/attrs".length);
        if (this.o.own && !this.o.own(device)) return;
        const { timestamp, seq } = payloadStamp(p.payload as Uint8Array);
        if (Number.isFinite(seq)) this.tracker.record(device, seq);
        if (Number.isFinite(timestamp)) this.latency.recordMs(Math.max(0, Date.now() - timestamp));
        return;
      }
    }
  }

  /** Commands round-robin over the devices heard from, at the set rate: `{"timestamp","seq"}` on `<device>/config`, QoS 1. */
  private startActuating(): void {
    let last = performance.now();
    let tokens = 0;
    this.actuator = setInterval(() => {
      const now = performance.now();
      tokens = Math.min(tokens + (this.o.actuateRate * (now - last)) / 1000, Math.max(1, this.o.actuateRate));
      last = now;
      const devices = this.tracker.known();
      const link = this.links.find((l) => l.socket);
      if (!devices.length || !link) return;
      for (; tokens >= 1; tokens--) {
        const device = devices[this.nextCommand++ % devices.length]!;
        const seq = (this.commandSeqs.get(device) ?? 0) + 1;
        this.commandSeqs.set(device, seq);
        const payload = JSON.stringify({ timestamp: Date.now(), seq });
        ++this.commandSeq;
        write(link, mqtt.generate({ cmd: "publish", topic: `${device}/config`, payload, qos: 1, retain: false, dup: false, messageId: (this.commandSeq % 65535) + 1 }, { protocolVersion: this.o.version }));
        this.commandsSent++;
      }
    }, 50);
  }

  /** Stops commanding (so what was sent can still arrive) without closing the subscriptions. */
  stopActuating(): void {
    if (this.actuator) clearInterval(this.actuator);
    this.actuator = null;
  }

  /** Running totals, for a report or a controller. */
  totals(): VerifiedTotals {
    const t = this.tracker;
    return { delivered: t.delivered, duplicated: t.duplicated, reordered: t.reordered, commands_sent: this.commandsSent, latency: this.latency.toSparse() };
  }

  /** Counts afresh (a stats reset). */
  resetMessages(): void {
    this.messages = this.bytes = 0;
    this.latency.reset();
  }

  /** What plain subscribers counted so far. */
  subscriberTotals(): SubscriberTotals {
    return { messages: this.messages, bytes: this.bytes, latency: this.latency.toSparse() };
  }

  /** Subscribers, after the devices stopped: wait up to `waitMs`, until `expected` messages came or none for a second, then close. */
  async settleMessages(expected: number, waitMs: number): Promise<void> {
    await this.untilQuiet(() => this.messages >= expected, () => this.messages, waitMs);
    this.close();
  }

  /** Stops commanding while the devices still listen, and gives what was sent up to 3 s to be counted by `received()` (workers report every second). */
  async settleCommands(received: () => number): Promise<void> {
    this.stopActuating();
    const end = performance.now() + 3000;
    while (performance.now() < end && received() < this.commandsSent) await Bun.sleep(50);
  }

  /** After the devices stopped: waits up to `waitMs` for messages on their way — until `sent` are delivered, or none came for a second — then closes. */
  async settle(sent: number, waitMs: number): Promise<void> {
    this.stopActuating();
    await this.untilQuiet(() => this.tracker.delivered >= sent, () => this.tracker.delivered + this.tracker.duplicated, waitMs);
    this.close();
  }

  /** Waits up to `waitMs` until `done()`, or until `heard()` has not moved for a second. */
  private async untilQuiet(done: () => boolean, heard: () => number, waitMs: number): Promise<void> {
    const end = performance.now() + waitMs;
    let last = -1;
    let quietSince = performance.now();
    while (performance.now() < end && !done()) {
      const now = heard();
      if (now !== last) {
        last = now;
        quietSince = performance.now();
      } else if (performance.now() - quietSince > 1000) break;
      await Bun.sleep(50);
    }
  }

  close(): void {
    this.stopActuating();
    if (this.pinger) clearInterval(this.pinger);
    for (const l of this.links) {
      write(l, mqtt.generate({ cmd: "disconnect" }, { protocolVersion: this.o.version }));
      l.socket?.end();
    }
  }
}
