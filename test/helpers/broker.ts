/**
 * An in-process MQTT broker on a free port (plain TCP), for behaviour mosquitto will not show
 * on demand: chosen CONNACK codes, silence, garbage. It acks what it receives and records it.
 */
import * as mqtt from "mqtt-packet";
import type { Socket, TCPSocketListener } from "bun";

export type Behaviour =
  | { kind: "normal" }
  /** Answer CONNECT with this return/reason code. */
  | { kind: "refuse"; code: number }
  /** Accept TCP and never say a word. */
  | { kind: "silent" }
  /** Send random bytes as soon as a client connects. */
  | { kind: "garbage"; bytes: number }
  /** Accept CONNECT, then never answer anything again (no PINGRESP, no PUBACK). */
  | { kind: "hang-after-connack" }
  /** Acks every publish but drops this share of the PUBACKs (seeded, so runs repeat). */
  | { kind: "drop-acks"; share: number }
  /** Never acks a publish (answers CONNECT, SUBSCRIBE and PINGREQ). */
  | { kind: "no-acks" }
  /** Refuses every publish with this MQTT 5 PUBACK reason code. */
  | { kind: "refuse-publish"; code: number }
  /**
   * Keeps sessions: a client id that connected before without Clean Session/Start is told
   * Session Present. While `holdAcks` is true no PUBLISH is acknowledged (a broker slow to ack).
   */
  | { kind: "session"; holdAcks: boolean }
  /** MQTT 5: a CONNACK with these properties (limits mosquitto 2.0 does not send, e.g. Maximum QoS). */
  | { kind: "connack-properties"; properties: NonNullable<mqtt.IConnackPacket["properties"]> }
  /** After SUBACK, send a PUBLISH whose Remaining Length claims `claim` bytes, then `send` bytes of it in `chunk`-byte writes. */
  | { kind: "huge"; claim: number; send: number; chunk: number };

interface Client {
  parser: mqtt.Parser;
  version: 4 | 5;
}

export class FakeBroker {
  readonly received: { cmd: string; clientId?: string; maximumPacketSize?: number; topic?: string; qos?: number; dup?: boolean; messageId?: number }[] = [];
  /** Client ids that connected with a persistent session (behaviour "session"). */
  private readonly sessions = new Set<string>();
  connections = 0;
  /** PUBACKs sent, and withheld (drop-acks, no-acks). */
  acksSent = 0;
  acksDropped = 0;
  private rand = 0x9e3779b9;
  private readonly sockets = new Set<Socket<Client>>();
  private server: TCPSocketListener<Client>;

  constructor(public behaviour: Behaviour = { kind: "normal" }) {
    const self = this;
    this.server = Bun.listen<Client>({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open(s) {
          self.connections++;
          self.sockets.add(s);
          const parser = mqtt.parser({ protocolVersion: 5 });
          s.data = { parser, version: 4 };
          parser.on("packet", (p) => self.onPacket(s, p));
          parser.on("error", () => s.end());
          if (self.behaviour.kind === "garbage") s.write(crypto.getRandomValues(new Uint8Array(self.behaviour.bytes)));
        },
        data(s, d) {
          if (self.behaviour.kind === "silent") return;
          s.data.parser.parse(Buffer.from(d));
        },
        error() {},
        close(s) {
          self.sockets.delete(s);
        },
      },
    });
  }

  /** Closes every client connection (a broker restart, as the clients see it). */
  dropClients(): void {
    for (const s of this.sockets) s.terminate();
    this.sockets.clear();
  }

  get port(): number {
    return this.server.port;
  }

  /** xorshift32 in [0, 1): seeded, so a test sees the same drops every run. */
  private random(): number {
    let x = this.rand;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.rand = x >>> 0;
    return this.rand / 2 ** 32;
  }

  /** A PUBLISH header claiming `claim` bytes, then `send` bytes of its body, a chunk per event-loop turn. */
  private async sendHuge(s: Socket<Client>, b: { claim: number; send: number; chunk: number }): Promise<void> {
    const header = [0x30];
    for (let n = b.claim; ; ) {
      const byte = n % 128;
      n = Math.floor(n / 128);
      header.push(n > 0 ? byte | 0x80 : byte);
      if (n === 0) break;
    }
    s.write(new Uint8Array(header));
    const chunk = new Uint8Array(b.chunk).fill(0x61);
    for (let sent = 0; sent < b.send && s.readyState === 1; sent += b.chunk) {
      s.write(chunk);
      await Bun.sleep(0);
    }
  }

  private onPacket(s: Socket<Client>, p: mqtt.Packet): void {
    const c = s.data;
    const send = (packet: mqtt.Packet): void => void s.write(mqtt.generate(packet, { protocolVersion: c.version }));
    this.received.push({ cmd: p.cmd, ...(p.cmd === "connect" ? { clientId: p.clientId, maximumPacketSize: p.properties?.maximumPacketSize } : {}), ...(p.cmd === "publish" ? { topic: p.topic, qos: p.qos, dup: p.dup, messageId: p.messageId } : {}) });
    const b = this.behaviour;
    if (p.cmd === "connect") {
      c.version = (p.protocolVersion ?? 4) as 4 | 5;
      if (b.kind === "refuse") return send(c.version === 5 ? { cmd: "connack", sessionPresent: false, reasonCode: b.code } : { cmd: "connack", sessionPresent: false, returnCode: b.code });
      const properties = b.kind === "connack-properties" ? { properties: b.properties } : {};
      let sessionPresent = false;
      if (b.kind === "session") {
        sessionPresent = !p.clean && this.sessions.has(p.clientId);
        if (p.clean) this.sessions.delete(p.clientId);
        else this.sessions.add(p.clientId);
      }
      return send(c.version === 5 ? { cmd: "connack", sessionPresent, reasonCode: 0, ...properties } : { cmd: "connack", sessionPresent, returnCode: 0 });
    }
    if (b.kind === "hang-after-connack") return;
    switch (p.cmd) {
      case "subscribe":
        send({ cmd: "suback", messageId: p.messageId!, granted: p.subscriptions.map((x) => x.qos) });
        if (b.kind === "huge") void this.sendHuge(s, b);
        return;
      case "publish":
        if (p.qos === 1) {
          if (b.kind === "no-acks" || (b.kind === "session" && b.holdAcks) || (b.kind === "drop-acks" && this.random() < b.share)) {
            this.acksDropped++;
            return;
          }
          if (b.kind === "refuse-publish") return send({ cmd: "puback", messageId: p.messageId!, reasonCode: b.code });
          this.acksSent++;
          send({ cmd: "puback", messageId: p.messageId! });
        }
        if (p.qos === 2) send({ cmd: "pubrec", messageId: p.messageId! });
        return;
      case "pubrel":
        return send({ cmd: "pubcomp", messageId: p.messageId! });
      case "pingreq":
        return send({ cmd: "pingresp" });
    }
  }

  count(cmd: string): number {
    return this.received.filter((r) => r.cmd === cmd).length;
  }

  stop(): void {
    this.server.stop(true);
  }

  [Symbol.dispose](): void {
    this.stop();
  }
}

/** Polls `cond` every 20 ms until it holds; throws with `what` after `timeoutMs`. */
export async function waitFor(cond: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(20);
  }
}
