/**
 * A small, independent MQTT client for tests: connects over mutual TLS with one certificate,
 * and records every packet it receives. It checks cicada against the broker from the outside,
 * so it shares no code with cicada's engine.
 */
import * as mqtt from "mqtt-packet";
import type { Socket } from "bun";

export interface ProbeOptions {
  host?: string;
  port: number;
  ca: string;
  cert: string;
  key: string;
  clientId: string;
  protocolVersion?: 4 | 5;
  keepalive?: number;
  /** Plain TCP (a benchmark broker without TLS). */
  plain?: boolean;
}

export class Probe {
  readonly packets: mqtt.Packet[] = [];
  /** Resolves with the CONNACK, or rejects when the connection ends (or fails) before it. */
  readonly connack: Promise<mqtt.IConnackPacket>;
  /** Resolves when the socket is closed, with the error that closed it, if any. */
  readonly closed: Promise<Error | undefined>;
  private socket?: Socket<undefined>;
  private nextId = 1;
  private waiters: { match: (p: mqtt.Packet) => boolean; resolve: (p: mqtt.Packet) => void }[] = [];

  private constructor(readonly opts: ProbeOptions) {
    const ack = Promise.withResolvers<mqtt.IConnackPacket>();
    const closed = Promise.withResolvers<Error | undefined>();
    this.connack = ack.promise;
    this.closed = closed.promise;
    ack.promise.catch(() => {});
    const parser = mqtt.parser({ protocolVersion: opts.protocolVersion ?? 4 });
    parser.on("packet", (p) => {
      this.packets.push(p);
      if (p.cmd === "connack") ack.resolve(p);
      if (p.cmd === "publish" && p.qos === 1) this.send({ cmd: "puback", messageId: p.messageId! });
      this.waiters = this.waiters.filter((w) => (w.match(p) ? (w.resolve(p), false) : true));
    });
    let error: Error | undefined;
    parser.on("error", (e) => (error = e));
    Bun.connect({
      hostname: opts.host ?? "127.0.0.1",
      port: opts.port,
      ...(opts.plain ? {} : { tls: { ca: opts.ca, cert: opts.cert, key: opts.key, rejectUnauthorized: true } }),
      socket: {
        open: (s) => {
          this.socket = s;
          this.send({ cmd: "connect", clientId: opts.clientId, protocolVersion: opts.protocolVersion ?? 4, clean: true, keepalive: opts.keepalive ?? 30 });
        },
        data: (_s, d) => void parser.parse(Buffer.from(d)),
        error: (_s, e) => void (error = e),
        close: () => {
          ack.reject(error ?? new Error("closed before CONNACK"));
          closed.resolve(error);
        },
        connectError: (_s, e) => {
          ack.reject(e);
          closed.resolve(e);
        },
      },
    }).catch((e) => {
      ack.reject(e);
      closed.resolve(e);
    });
  }

  static connect(opts: ProbeOptions): Probe {
    return new Probe(opts);
  }

  send(p: mqtt.Packet): void {
    this.socket?.write(mqtt.generate(p, { protocolVersion: this.opts.protocolVersion ?? 4 }));
  }

  /** Waits for the first received packet (past or future) that matches. */
  next(match: (p: mqtt.Packet) => boolean, timeoutMs = 10_000): Promise<mqtt.Packet> {
    const seen = this.packets.find(match);
    if (seen) return Promise.resolve(seen);
    const { promise, resolve, reject } = Promise.withResolvers<mqtt.Packet>();
    this.waiters.push({ match, resolve });
    const t = setTimeout(() => reject(new Error(`no matching packet within ${timeoutMs} ms`)), timeoutMs);
    return promise.finally(() => clearTimeout(t));
  }

  async subscribe(topic: string, qos: 0 | 1 | 2 = 1): Promise<mqtt.ISubackPacket> {
    const messageId = this.nextId++;
    this.send({ cmd: "subscribe", messageId, subscriptions: [{ topic, qos }] });
    return (await this.next((p) => p.cmd === "suback" && p.messageId === messageId)) as mqtt.ISubackPacket;
  }

  async publish(topic: string, payload: string, qos: 0 | 1 = 1): Promise<void> {
    const messageId = qos ? this.nextId++ : undefined;
    this.send({ cmd: "publish", topic, payload: Buffer.from(payload), qos, retain: false, dup: false, messageId });
    if (qos) await this.next((p) => p.cmd === "puback" && p.messageId === messageId);
  }

  close(): void {
    this.socket?.end();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await Promise.race([this.closed, Bun.sleep(2000)]);
  }
}
