// scenario/ — device behaviour written by users in TypeScript: the API they write against (here) and loading their files (load.ts).
// Imports point down only: ARCHITECTURE.md lists the layers, test/architecture.test.ts checks them.
/**
 * The API of a scenario file, `import { defineScenario } from "cicada/scenario"`. A scenario
 * decides what a device does and when; the engine encodes, sends, counts and times. Hooks run
 * on the engine's timer wheel, one device at a time: keep them short (a hook that blocks holds
 * up every device of its process, and the report names it).
 *
 * This file is also the reference: `cicada scenario init` writes it out as `cicada.d.ts`, and the
 * README's "Scenarios" section is checked against it by test/readme.test.ts.
 */

/** A time: ms as a number, or text such as "500ms", "5s", "10m", "1h30m". */
export type Duration = number | string;

/** A publish interval: one time, a range `[min, max]` or "29.5s..30s" (uniform jitter), or a function of the device. */
export type Interval<S> = Duration | [Duration, Duration] | ((d: Device<S>) => Duration | [Duration, Duration]);

export interface PublishOptions {
  /** 0, 1 or 2; default the run's --qos. */
  qos?: 0 | 1 | 2;
  retain?: boolean;
  /** MQTT 5: where the receiver should answer (request/response). */
  responseTopic?: string;
  /** MQTT 5: carried back in the answer to match it to its request. */
  correlationData?: Uint8Array | string;
  /** MQTT 5 user properties. */
  userProperties?: Record<string, string>;
  /** MQTT 5 content type, e.g. "application/json". */
  contentType?: string;
  /** MQTT 5: seconds the broker keeps the message for absent subscribers. */
  messageExpiry?: number;
}

/** A message the device received. */
export interface Message {
  topic: string;
  /** The payload as JSON when it parses, else as text. */
  payload: unknown;
  /** The payload's bytes as they came. */
  bytes: Uint8Array;
  qos: 0 | 1 | 2;
  retain: boolean;
  /** MQTT 5: the sender's Response Topic. */
  responseTopic?: string;
  /** MQTT 5: the sender's Correlation Data. */
  correlationData?: Uint8Array;
  userProperties?: Record<string, string | string[]>;
  contentType?: string;
}

/** One simulated device, as its hooks see it. The object is the device's for the whole run: closures may keep it. */
export interface Device<S = Record<string, unknown>> {
  /** The device's identity (its certificate file's id). */
  readonly id: string;
  /** Its MQTT client id: its certificate's CN, tenant:id by default. */
  readonly clientId: string;
  readonly tenant: string;
  /** Its place in the whole fleet, from 0 (the same on every machine and reconnect). */
  readonly index: number;
  /** This device's own state: what `state()` returned, kept across reconnects. */
  state: S;
  /** True while connected. */
  readonly connected: boolean;
  /** Wall-clock ms: in an `every` hook, the time it was scheduled for (so a late generator does not shift timestamps). */
  now(): number;
  /** The device's next message number, from 1, across reconnects. */
  seq(): number;
  /** A random number in [0, 1). */
  random(): number;
  /** A topic named in the scenario's `topics`, its {placeholders} filled for this device; any other text as given. */
  topic(nameOrTopic: string): string;
  /**
   * Publishes `payload` (an object is sent as JSON, a string as UTF-8, bytes as they are) on a
   * named topic or a topic. Counted in the publish row like every publish: acked, refused, timed
   * out. Returns false when it could not leave (not connected, in-flight window full, a limit the
   * broker announced), which is counted with its reason.
   */
  publish(topic: string, payload?: unknown, options?: PublishOptions): boolean;
  /** True when a QoS 1/2 publish would leave now: connected, room in the in-flight window (--inflight) and in the socket. */
  canPublish(): boolean;
  /** Subscribes to a named topic or a topic filter; its SUBACK is counted in the subscribe row. */
  subscribe(topic: string, options?: { qos?: 0 | 1 | 2 }): void;
  /** Answers a request: publishes to its `responseTopic` with its `correlationData` (MQTT 5). False when it has no response topic. */
  reply(request: Message, payload?: unknown, options?: PublishOptions): boolean;
  /** A success on the custom row `row`, with a latency in ms if given (`d.measure("firmware_download", ms)`). */
  measure(row: string, ms?: number): void;
  /** A failure on the custom row `row`, counted by `reason` (`d.fail("firmware", "checksum")`). */
  fail(row: string, reason: string): void;
  /** Goes offline: DISCONNECT now, connect again after `duration` (a persistent session keeps what arrives meanwhile). */
  offline(duration: Duration): void;
}

/** A hook that runs on an interval while the device is connected. */
export interface Every<S = Record<string, unknown>> {
  /** Names the hook in the report (default every[i]). */
  name?: string;
  interval: Interval<S>;
  /** When the first run comes after a connect: "random" (default; spreads devices over the interval), "now", or "interval" (one whole interval later, e.g. a wall-clock time the interval function computes). */
  start?: "random" | "now" | "interval";
  run(d: Device<S>): void;
}

/**
 * A device type: the default export of a scenario file. A hook may be async: what it awaits runs
 * later, outside the timer wheel, and a rejection is counted as a scenario_error. An exception
 * in a timer of the scenario's own (setTimeout) is not caught: use `every` instead.
 */
export interface Scenario<S = Record<string, unknown>> {
  /** Letters, digits, - and _; shown in the report. */
  name: string;
  description?: string;
  /** Topics by name, with {tenant}, {id}, {clientId}, {index}, {machine} filled per device. */
  topics?: Record<string, string>;
  /** The MQTT version the scenario needs (5 for request/response); default the run's --mqtt. */
  mqtt?: "3.1.1" | "5";
  /** Persistent sessions: `clean: false` keeps the device's subscriptions and queued messages while it is offline. */
  session?: { clean: boolean; expiry?: Duration };
  /** A new device's state (once per device, kept across reconnects). */
  state?(d: Device<never>): S;
  /** Runs after each CONNACK (subscriptions are made here: the run's --clean decides whether they outlive the connection). */
  onConnect?(d: Device<S>): void;
  every?: Every<S>[];
  /** Runs for every message the device receives (QoS 1 and 2 are acknowledged by the engine). */
  onMessage?(d: Device<S>, topic: string, payload: unknown, message: Message): void;
  /** Runs when the connection ends, with the reason (`offline`, `closed_by_broker`, …). */
  onDisconnect?(d: Device<S>, reason: string): void;
}

/** Gives a scenario its types; returns it unchanged (the engine supplies it: scenario/load.ts). */
export declare function defineScenario<S = Record<string, unknown>>(scenario: Scenario<S>): Scenario<S>;
