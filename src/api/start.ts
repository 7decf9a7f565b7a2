/**
 * What a run started over HTTP may set: one schema (validation and the OpenAPI document) and,
 * checked against it by the type system, the `cicada run` flag each field sets.
 */
import { z } from "@hono/zod-openapi";
import { TLS_GROUPS_FORMAT, TLS_STACKS, TLS_VERSIONS } from "../transport/connect.ts";

export const Start = z
  .object({
    users: z.number().int().min(1).optional().openapi({ example: 500, description: "Devices to simulate" }),
    rate: z.number().positive().optional().openapi({ example: 100, description: "New devices per second while ramping" }),
    host: z.string().min(1).optional().openapi({ example: "127.0.0.1", description: "Broker host(s), comma-separated" }),
    port: z.union([z.string(), z.number().int()]).optional().openapi({ example: 8883, description: "Broker port(s), comma-separated" }),
    duration: z.string().optional().openapi({ example: "5m" }),
    qos: z.number().int().min(0).max(2).optional(),
    interval: z.string().optional().openapi({ example: "29.5s..30s" }),
    msg_rate: z.number().positive().optional().openapi({ example: 1000, description: "Total publishes per second over all devices (instead of interval)" }),
    publish: z.enum(["on", "off"]).optional().openapi({ description: "off: connect and hold only" }),
    mqtt: z.enum(["3.1.1", "5"]).optional(),
    payload_size: z.number().int().min(0).optional(),
    tenant: z.string().optional(),
    tls: z.boolean().optional(),
    tls_stack: z.enum(TLS_STACKS).optional().openapi({ description: "Whose TLS the devices speak: bun (default) or cicada (cicada's own TLS 1.3 client, less memory per device)" }),
    tls_version: z.enum(TLS_VERSIONS).optional().openapi({ description: "Offer only this TLS version (default: both, the broker picks)" }),
    tls_groups: z.string().regex(TLS_GROUPS_FORMAT).max(200).optional().openapi({ example: "X25519:P-256", description: "Key-exchange groups the devices offer, in order (default X25519:P-256:P-384)" }),
    max_connecting: z.number().int().min(0).optional().openapi({ example: 200, description: "Connects in flight per worker process while ramping (0: no limit)" }),
    insecure: z.boolean().optional(),
    reset_stats: z.boolean().optional(),
    scenario: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/).optional().openapi({ example: "tracker", description: "A scenario by name, from the server's --scenarios directory (never a path)" }),
    label: z.string().max(200).optional().openapi({ description: "A name for the run in the history" }),
  })
  .strict()
  .openapi("StartRun", { description: "Settings for the run; absent ones are the server's own (its cicada run flags)" });

export type StartRequest = z.infer<typeof Start>;

/** The flag each field sets (null: not a run setting). Every field of Start must be here, and nothing else. */
const FLAGS = {
  users: "users",
  rate: "rate",
  host: "host",
  port: "port",
  duration: "duration",
  qos: "qos",
  interval: "interval",
  msg_rate: "msg-rate",
  publish: "publish",
  mqtt: "mqtt",
  payload_size: "payload-size",
  tenant: "tenant",
  tls: "tls",
  tls_stack: "tls-stack",
  tls_version: "tls-version",
  tls_groups: "tls-groups",
  max_connecting: "max-connecting",
  insecure: "insecure",
  reset_stats: "reset-stats",
  scenario: "scenario",
  label: null,
} as const satisfies Record<keyof StartRequest, string | null>;

/** The request as `cicada run` flags, to follow the server's own (later flags win). */
export function startArgv(req: StartRequest): string[] {
  const argv: string[] = [];
  for (const [field, flag] of Object.entries(FLAGS) as [keyof StartRequest, string | null][]) {
    const v = req[field];
    if (flag === null || v === undefined) continue;
    if (typeof v === "boolean") argv.push(v ? `--${flag}` : flag === "tls" ? "--no-tls" : `--${flag}=false`);
    else argv.push(`--${flag}`, String(v));
  }
  return argv;
}
