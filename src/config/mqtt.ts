/** How devices speak MQTT: the transport (TCP, TLS, WebSocket), sessions, and MQTT 5 properties. */
import { createSecureContext } from "node:tls";
import type { Options, OptionSpecs } from "./options.ts";
import type { MqttSession, PublishProperties } from "../mqtt/codec.ts";
import { DEFAULT_TLS_GROUPS, TLS_GROUPS_FORMAT, TLS_STACKS, TLS_VERSIONS, type TlsOffer, type TlsStack, type TlsVersion } from "../transport/connect.ts";
import { tls13GroupsProblem } from "../transport/tls13.ts";

export const MQTT_OPTIONS: OptionSpecs = {
  transport: { type: "string", arg: "tcp|tls|ws|wss", help: "How devices reach the broker: tls (default; each device's certificate), tcp, ws or wss (MQTT over WebSocket; wss with each device's certificate). Overrides --tls" },
  "tls-version": { type: "string", arg: "1.2|1.3", help: "Offer only this TLS version (default: 1.2 and 1.3, the broker picks; 1.3 is what it picks unless it lacks it). Devices of an older TLS stack speak 1.2, which holds less memory on both sides (README, Sizing)" },
  "tls-groups": { type: "string", arg: "LIST", help: `Key-exchange groups the devices offer, in order, colon-separated (default ${DEFAULT_TLS_GROUPS}; the first is the key share sent). X25519MLKEM768 offers the post-quantum hybrid (Bun's own default, a 1,216-byte key share); P-256 alone is what many embedded stacks offer` },
  "tls-stack": { type: "string", arg: "bun|cicada", help: "Whose TLS the devices speak: bun (default; Bun's TLS sockets, TLS 1.2 and 1.3) or cicada (cicada's own TLS 1.3 client over plain sockets: ~5 KB per held mTLS device where Bun's sockets hold ~20 KB, the same CPU per connect and ~5 µs more per message; TLS 1.3 only, groups X25519, P-256, P-384). README, Sizing" },
  "ws-path": { type: "string", arg: "PATH", default: "/mqtt", help: "With --transport ws|wss: the WebSocket endpoint's path" },
  "ws-protocol": { type: "string", arg: "NAME|none", default: "mqtt", help: "With --transport ws|wss: the subprotocol offered (MQTT's is mqtt; a websockify proxy in front of a broker takes binary or none)" },
  clean: { type: "string", arg: "true|false", default: "true", help: "false: persistent sessions (MQTT 5: Clean Start 0 with --session-expiry); the broker keeps a device's subscription and queues its messages while it is away" },
  "session-expiry": { type: "string", arg: "SECONDS", help: "MQTT 5: how long the broker keeps a session after its connection ends (default 0, or 3600 with --clean false)" },
  "user-property": { type: "string", arg: "K=V", multiple: true, help: "MQTT 5: a user property on every publish (repeatable)" },
  "message-expiry": { type: "string", arg: "SECONDS", help: "MQTT 5: Message Expiry Interval of every publish" },
  "content-type": { type: "string", arg: "TYPE", help: "MQTT 5: Content Type of every publish, e.g. application/json" },
  "topic-alias": { type: "boolean", help: "MQTT 5: after its first publish on a connection, a device sends its topic as a two-byte alias (when the broker's Topic Alias Maximum allows); the report counts the bytes saved" },
};

export type TransportKind = "tcp" | "tls" | "ws" | "wss";

/** With TlsOffer: --tls-version (absent: both) and --tls-groups (absent: DEFAULT_TLS_GROUPS). */
export interface MqttSettings extends TlsOffer {
  transport: TransportKind;
  /** TLS under MQTT (tls, wss). */
  tls: boolean;
  /** The WebSocket endpoint (ws, wss): path and subprotocol offered. */
  ws?: { path: string; protocol?: string };
  session: MqttSession;
  properties?: PublishProperties;
  topicAlias: boolean;
}

/** One hour: a persistent session outlives a reconnect storm or a broker restart test. */
const DEFAULT_PERSISTENT_EXPIRY_S = 3600;

/** Why `groups` is not a list of key-exchange groups this TLS library knows, or null when it is (BoringSSL's own check). */
function tlsGroupsProblem(groups: string): string | null {
  if (!TLS_GROUPS_FORMAT.test(groups)) return "must be group names separated by colons, e.g. X25519:P-256";
  try {
    createSecureContext({ ecdhCurve: groups });
    return null;
  } catch {
    return "names a group this TLS library does not know (it knows X25519, P-256, P-384, P-521, X25519MLKEM768)";
  }
}

/** --tls-stack, --tls-version and --tls-groups, which need TLS (`tls`; `hint` says how to get it). Problems go to `o.issues`. */
export function readTlsOffer(o: Options, tls: boolean, hint: string): TlsOffer {
  const offer: TlsOffer = {};
  const stack = o.has("tls-stack") ? o.choice<TlsStack>("tls-stack", TLS_STACKS, "bun") : "bun";
  if (stack !== "bun") offer.tlsStack = stack;
  if (o.has("tls-version")) offer.tlsVersion = o.choice<TlsVersion>("tls-version", TLS_VERSIONS, "1.3");
  if (stack === "cicada" && offer.tlsVersion === "1.2") o.issues.push(`${o.source("tls-version")} 1.2 cannot go with --tls-stack cicada, which speaks TLS 1.3 only: drop one of them`);
  if (o.has("tls-groups")) {
    const groups = o.str("tls-groups")!;
    const problem = tlsGroupsProblem(groups) ?? (stack === "cicada" ? tls13GroupsProblem(groups) : null);
    if (problem) o.fail("tls-groups", problem, groups);
    else offer.tlsGroups = groups;
  }
  for (const name of ["tls-stack", "tls-version", "tls-groups"]) if (o.has(name) && !tls) o.issues.push(`${o.source(name)} needs TLS: ${hint}`);
  return offer;
}

/** --transport and --ws-path, --clean, --session-expiry and the MQTT 5 publish properties. Problems go to `o.issues`. */
export function readMqtt(o: Options, version: 4 | 5): MqttSettings {
  const transport: TransportKind = o.has("transport") ? o.choice("transport", ["tcp", "tls", "ws", "wss"], "tls") : o.bool("tls") ? "tls" : "tcp";
  const ws = transport === "ws" || transport === "wss";
  const tls = transport === "tls" || transport === "wss";
  const offer = readTlsOffer(o, tls, "--transport tls or wss");
  const wsPath = o.str("ws-path") ?? "/mqtt";
  if (ws && !/^\/[\x21-\x7e]*$/.test(wsPath)) o.fail("ws-path", "must be a path starting with /, without spaces", wsPath);
  const wsProtocol = o.str("ws-protocol") ?? "mqtt";
  if (ws && !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(wsProtocol)) o.fail("ws-protocol", "must be a subprotocol name (a token), or none", wsProtocol);
  const clean = o.bool("clean");
  const v5 = version === 5;
  const only5 = (name: string): void => {
    if (o.has(name) && !v5) o.issues.push(`${o.source(name)} is an MQTT 5 property: add --mqtt 5`);
  };
  for (const name of ["session-expiry", "user-property", "message-expiry", "content-type"]) only5(name);
  if (o.bool("topic-alias") && !v5) o.issues.push("--topic-alias is an MQTT 5 feature: add --mqtt 5");
  const expiryS = o.has("session-expiry") ? o.int("session-expiry", 0, 0, 0xffffffff) : !clean && v5 ? DEFAULT_PERSISTENT_EXPIRY_S : 0;
  const userProperties: Record<string, string[]> = {};
  for (const kv of o.all("user-property")) {
    const eq = kv.indexOf("=");
    if (eq <= 0) {
      o.fail("user-property", "must be KEY=VALUE", kv);
      continue;
    }
    (userProperties[kv.slice(0, eq)] ??= []).push(kv.slice(eq + 1));
  }
  const properties: PublishProperties = {
    ...(Object.keys(userProperties).length ? { userProperties } : {}),
    ...(o.has("message-expiry") ? { messageExpiryInterval: o.int("message-expiry", 0, 1, 0xffffffff) } : {}),
    ...(o.has("content-type") ? { contentType: o.str("content-type")! } : {}),
  };
  return {
    transport,
    tls,
    ...offer,
    ...(ws ? { ws: { path: wsPath, ...(wsProtocol !== "none" ? { protocol: wsProtocol } : {}) } } : {}),
    session: { clean, expiryS: v5 ? expiryS : 0 },
    ...(Object.keys(properties).length ? { properties } : {}),
    topicAlias: v5 && o.bool("topic-alias"),
  };
}
