/** Parsers for durations and ranges as users type them: "10m", "1h30m", "500ms", "29.5s..30s". */

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** "1h30m", "10m", "2.5s", "500ms"; a bare number is in `bareUnit`. Returns ms, or undefined when malformed. */
export function parseDuration(text: string, bareUnit: "ms" | "s" = "s"): number | undefined {
  const t = text.trim();
  if (/^\d+(\.\d+)?$/.test(t)) return Number(t) * UNIT_MS[bareUnit]!;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  let total = 0;
  let matched = 0;
  for (const m of t.matchAll(re)) {
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
    matched += m[0].length;
  }
  return matched === t.length && matched > 0 ? total : undefined;
}

/** "29.5s..30s" or "30s" (a fixed interval) → [min, max] ms, or undefined. */
export function parseRange(text: string, bareUnit: "ms" | "s" = "s"): [number, number] | undefined {
  const parts = text.split("..");
  if (parts.length > 2) return undefined;
  const lo = parseDuration(parts[0]!, bareUnit);
  const hi = parts.length === 2 ? parseDuration(parts[1]!, bareUnit) : lo;
  if (lo === undefined || hi === undefined || hi < lo) return undefined;
  return [lo, hi];
}

const UNIT_BYTES: Record<string, number> = { "": 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2 };

/** "1048576", "64KiB", "1MiB" (K and M are binary, as an MQTT maximum packet size is). Returns bytes, or undefined when malformed. */
export function parseBytes(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
  const unit = m ? UNIT_BYTES[m[2]!.toLowerCase()] : undefined;
  return m && unit ? Math.round(Number(m[1]) * unit) : undefined;
}

/** 1536 → "1.5 KiB". */
export function fmtBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}
