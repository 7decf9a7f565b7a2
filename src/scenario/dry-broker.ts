/**
 * A broker in this process, on loopback, for `cicada scenario check`: it accepts a few plain
 * MQTT connections (3.1.1 or 5), grants every subscription, acknowledges every publish, can send
 * a device messages, and tells its caller each packet a device sent. Nothing leaves the machine.
 */
import * as mqtt from "mqtt-packet";
import type { Socket, TCPSocketListener } from "bun";

export interface DryClient {
  id: string;
  version: 4 | 5;
  socket: Socket<DryState>;
}

interface DryState {
  parser: mqtt.Parser;
  client: DryClient | null;
}

export class DryBroker {
  private listener: TCPSocketListener<DryState> | null = null;
  readonly clients: DryClient[] = [];
  private nextId = 1;

  /** @param seen each packet a client sent, after the broker answered it */
  constructor(private readonly seen: (client: DryClient | null, packet: mqtt.Packet) => void) {}

  get port(): number {
    return this.listener!.port;
  }

  start(): void {
    this.listener = Bun.listen<DryState>({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open: (socket) => {
          const state: DryState = { parser: mqtt.parser({ protocolVersion: 5 }), client: null };
          socket.data = state;
          state.parser.on("packet", (p) => this.onPacket(socket, p));
          state.parser.on("error", () => socket.end());
        },
        data: (socket, bytes) => void socket.data.parser.parse(Buffer.from(bytes)),
        close: (socket) => {
          const c = socket.data.client;
          if (c) this.clients.splice(this.clients.indexOf(c), 1);
        },
      },
    });
  }

  /** Sends `payload` on `topic` to every connected client (QoS 1; MQTT 5 properties as given). */
  send(topic: string, payload: Buffer, properties?: mqtt.IPublishPacket["properties"]): number {
    for (const c of this.clients) this.write(c.socket, c.version, { cmd: "publish", topic, payload, qos: 1, retain: false, dup: false, messageId: this.nextId++, ...(c.version === 5 && properties ? { properties } : {}) });
    return this.clients.length;
  }

  stop(): void {
    for (const c of [...this.clients]) c.socket.end();
    this.listener?.stop(true);
  }

  private write(socket: Socket<DryState>, version: 4 | 5, p: mqtt.Packet): void {
    socket.write(mqtt.generate(p, { protocolVersion: version }));
  }

  private onPacket(socket: Socket<DryState>, p: mqtt.Packet): void {
    const state = socket.data;
    const version = state.client?.version ?? 4;
    switch (p.cmd) {
      case "connect": {
        const v = p.protocolVersion === 5 ? 5 : 4;
        // The parser started as MQTT 5 to read either CONNECT; what follows is in the client's version.
        if (v === 4) {
          state.parser = mqtt.parser({ protocolVersion: 4 });
          state.parser.on("packet", (q) => this.onPacket(socket, q));
          state.parser.on("error", () => socket.end());
        }
        state.client = { id: p.clientId, version: v, socket };
        this.clients.push(state.client);
        this.write(socket, v, { cmd: "connack", returnCode: 0, reasonCode: 0, sessionPresent: false });
        break;
      }
      case "subscribe":
        this.write(socket, version, { cmd: "suback", messageId: p.messageId, granted: p.subscriptions.map((s) => s.qos) });
        break;
      case "publish":
        if (p.qos === 1) this.write(socket, version, { cmd: "puback", messageId: p.messageId! });
        if (p.qos === 2) this.write(socket, version, { cmd: "pubrec", messageId: p.messageId! });
        break;
      case "pubrel":
        this.write(socket, version, { cmd: "pubcomp", messageId: p.messageId! });
        break;
      case "pingreq":
        this.write(socket, version, { cmd: "pingresp" });
        break;
      case "disconnect":
        socket.end();
        break;
    }
    this.seen(state.client, p);
  }
}
