/** What a swarm is told: its settings, where its identities come from, and their defaults. */
import type { MqttSession, ProtocolVersion, PublishProperties, QoS } from "../mqtt/codec.ts";
import type { LifecyclePlan } from "../lifecycle/types.ts";
import type { Target, TlsOffer } from "../transport/connect.ts";
import type { LoadedScenario, ScenarioRef } from "../scenario/load.ts";

/** With TlsOffer: --tls-version (absent: 1.2 and 1.3, the broker picks) and --tls-groups (absent: DEFAULT_TLS_GROUPS). */
export interface SwarmConfig extends TlsOffer {
  targets: Target[];
  /** Local addresses to connect from, spread over devices (empty: the kernel chooses). */
  sources: string[];
  tls: boolean;
  /** MQTT over WebSocket at this path, offering this subprotocol (--transport ws|wss; TLS under it with `tls`). */
  ws?: { path: string; protocol?: string };
  /** Clean or persistent sessions (--clean, --session-expiry); default clean. */
  session?: MqttSession;
  /** MQTT 5 properties on every publish (--user-property, --message-expiry, --content-type). */
  properties?: PublishProperties;
  /** MQTT 5: publish with a topic alias once the broker allows one (--topic-alias). */
  topicAlias?: boolean;
  /** Skip verifying the broker's certificate (dojot's tool did). */
  insecure: boolean;
  /** CA that signed the broker certificate (PEM). */
  caPem?: string;
  tenant: string;
  qos: QoS;
  version: ProtocolVersion;
  keepaliveS: number;
  /** Publish interval range, ms: each device waits uniformly within it (--msg-rate sets both ends to users/rate). */
  intervalMs: [number, number];
  /** false: devices connect and hold, and never publish (--publish off). */
  publish?: boolean;
  /** --msg-rate max: as fast as each device's in-flight window allows. */
  max?: boolean;
  /** Pad the default payload to this size (--payload-size), or with payloadSizeMax to one size per device in [payloadSize, payloadSizeMax]. */
  payloadSize: number;
  payloadSizeMax?: number;
  /** Topic template (--topic): {tenant}, {id}, {index}, {machine} per device, {seq} and {rand:N} per message. Default: the device's identity (its certificate's CN) + `/attrs`. */
  topic?: string;
  /** Payload template (--payload): {timestamp}, {seq}, {rand:a..b}, {string:N} per message. Default: `{"timestamp":…,"seq":…}` padded to payloadSize. */
  payload?: string;
  /** Publish with the retain flag (--retain). */
  retain?: boolean;
  /** Devices per second that disconnect and reconnect at once (--churn): a reconnect storm. */
  churn?: number;
  /** This machine's name, for {machine} (the host name, or the federated machine's name). */
  machine?: string;
  /** Reconnect backoff bounds, ms. */
  reconnectMs: [number, number];
  connectTimeoutMs: number;
  /**
   * Connects in flight at once in this process (--max-connecting): new devices wait while this
   * many are dialling, in TLS or awaiting CONNACK (reconnects count, and are not held). Unset: no limit.
   */
  maxConnecting?: number;
  users: number;
  /** New devices per second. */
  rate: number;
  /** Largest inbound packet a device accepts, bytes (default DEFAULT_MAX_PACKET_SIZE); MQTT 5 tells the broker. */
  maxPacketSize?: number;
  /** QoS 1/2 publishes a device may have unacknowledged (--inflight, default 8); a publish that finds the window full is skipped as window_full. */
  inflight?: number;
  /** A publish not acknowledged this long after it was sent fails as ack_timeout (--ack-timeout, ms, default 30 s). */
  ackTimeoutMs?: number;
  /** On stop, how long outstanding acks are awaited before the rest count as unacked_at_stop (--drain, ms, default 5 s). */
  drainMs?: number;
  /** Renew and revoke certificates during the run (RENEW_DEVICES / REVOKE_DEVICES). */
  lifecycle?: LifecyclePlan;
  /** What the devices do (--scenario): a file on this machine and its content's hash; absent, the built-in device. */
  scenario?: ScenarioRef;
}

/** `cfg` as the scenario `sc` asks: its name, its MQTT version and its session win over the run's flags. */
export function withScenario(cfg: SwarmConfig, sc: LoadedScenario): SwarmConfig {
  return {
    ...cfg,
    scenario: sc.ref,
    ...(sc.version ? { version: sc.version } : {}),
    ...(sc.session ? { session: { clean: sc.session.clean, expiryS: sc.session.expiryS } } : {}),
  };
}

/** How devices publish, changeable while they run (the API's msg_rate and publish). */
export interface Publishing {
  /** Publish interval range, ms. */
  intervalMs: [number, number];
  /** false: publishing is paused (or off for the run). */
  publish: boolean;
  /** --msg-rate max: each device publishes as fast as its in-flight window allows (the interval is ignored). */
  max?: boolean;
}

/**
 * `base` with the publishing settings `p` gives; what `p` leaves out stays as it was. Every place
 * that holds publishing settings (a swarm, a worker's spec, the controller's beat) changes them
 * through this, so a change means the same everywhere.
 */
export function withPublishing<T extends Partial<Publishing>>(base: T, p: Partial<Publishing>): T {
  return {
    ...base,
    ...(p.intervalMs ? { intervalMs: p.intervalMs } : {}),
    ...(p.publish !== undefined ? { publish: p.publish } : {}),
    ...(p.max !== undefined ? { max: p.max } : {}),
  };
}

/** Where device identities come from (a certificate directory, later Redis). */
export interface IdentitySource {
  readonly count: number;
  id(index: number): string;
  /** PEM certificate and key of device `index`. */
  load(index: number): { cert: string; key: string };
  /** Device `index`'s place among the whole fleet's identities (for {index}); default `index`. */
  position?(index: number): number;
}

/** A topic template with the per-device placeholders filled in ({seq} and {rand:N} stay, for each message). */
export function deviceTopic(template: string, d: { tenant: string; id: string; index: number; machine: string }): string {
  return template.replace(/\{(tenant|id|index|machine)\}/g, (_, k: "tenant" | "id" | "index" | "machine") => String(d[k]));
}

/** 1 MiB: far above what a device is sent (config, acks), far below what would hurt the process. */
export const DEFAULT_MAX_PACKET_SIZE = 1024 * 1024;

export const DEFAULT_ACK_TIMEOUT_MS = 30_000;
export const DEFAULT_DRAIN_MS = 5000;

/** A publish that leaves later than this after its scheduled time counts as a late send. */
export const LATE_MS = 100;
