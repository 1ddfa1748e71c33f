/** The dashboard's time ranges and the reading of `GET /metrics/summary` (pure). */
import type { MetricsBucket, MetricsQuery, MetricsSummary, Percentiles } from "./types";

export const RANGES = {
  "1h": { label: "Last hour", ms: 3_600_000 },
  "24h": { label: "Last day", ms: 86_400_000 },
  "7d": { label: "Last week", ms: 7 * 86_400_000 },
} as const;
export type RangeId = keyof typeof RANGES;
export const RANGE_IDS = Object.keys(RANGES) as RangeId[];

export function rangeQuery(range: RangeId, now: number, workflowId?: string | null): MetricsQuery {
  return { from: new Date(now - RANGES[range].ms).toISOString(), to: new Date(now).toISOString(), workflow_id: workflowId || undefined };
}

const num = (x: unknown): number => (typeof x === "number" && Number.isFinite(x) ? x : Number(x) || 0);
const numOrNull = (x: unknown): number | null => (x === null || x === undefined || x === "" || !Number.isFinite(Number(x)) ? null : Number(x));
const pct = (x: unknown): Percentiles => {
  const o = (x && typeof x === "object" ? x : {}) as Record<string, unknown>;
  return { p50: numOrNull(o.p50), p95: numOrNull(o.p95) };
};
const list = <T>(x: unknown, f: (o: Record<string, unknown>) => T): T[] =>
  Array.isArray(x) ? x.filter((o) => o && typeof o === "object").map((o) => f(o as Record<string, unknown>)) : [];

/** The summary with every figure present and numeric (missing lists are empty). */
export function normalizeSummary(raw: unknown): MetricsSummary {
  const o = (raw && typeof raw === "object" ? raw : {}) as Record<string, unknown>;
  const runs = (o.runs && typeof o.runs === "object" ? o.runs : {}) as Record<string, unknown>;
  const byStatus: Record<string, number> = {};
  for (const [k, v] of Object.entries((runs.by_status ?? {}) as Record<string, unknown>)) byStatus[k] = num(v);
  const timeseries: MetricsBucket[] = list(o.timeseries, (b) => ({ bucket: String(b.bucket ?? ""), runs: num(b.runs), tokens: num(b.tokens), cost: num(b.cost), p50_ms: numOrNull(b.p50_ms) }));
  timeseries.sort((a, b) => bucketTime(a.bucket) - bucketTime(b.bucket));
  return {
    from: typeof o.from === "string" ? o.from : null,
    to: typeof o.to === "string" ? o.to : null,
    bucket_seconds: numOrNull(o.bucket_seconds),
    runs: { total: num(runs.total), by_status: byStatus },
    tokens: num(o.tokens),
    cost: num(o.cost),
    latency_ms: pct(o.latency_ms),
    per_workflow: list(o.per_workflow, (w) => ({ workflow_id: w.workflow_id == null ? null : String(w.workflow_id), runs: num(w.runs), tokens: num(w.tokens), cost: num(w.cost), p50_ms: numOrNull(w.p50_ms), p95_ms: numOrNull(w.p95_ms) })),
    per_node: list(o.per_node, (n) => ({ workflow_id: n.workflow_id == null ? null : String(n.workflow_id), node_id: String(n.node_id ?? ""), node_type: n.node_type == null ? null : String(n.node_type), steps: num(n.steps), tokens: num(n.tokens), cost: num(n.cost), p50_ms: numOrNull(n.p50_ms), p95_ms: numOrNull(n.p95_ms) })),
    per_source: list(o.per_source, (s) => ({ source_id: String(s.source_id ?? ""), calls: num(s.calls), tokens: num(s.tokens), cost: num(s.cost), p50_ms: numOrNull(s.p50_ms), p95_ms: numOrNull(s.p95_ms) })),
    timeseries,
    queue_wait_ms: pct(o.queue_wait_ms),
  };
}

/** A bucket's time in ms (NaN-safe: unknown labels sort first). */
export function bucketTime(bucket: string): number {
  const t = Date.parse(bucket);
  return Number.isNaN(t) ? 0 : t;
}

/** Share of finished runs that succeeded, or null when none finished. */
export function successRate(s: MetricsSummary): number | null {
  const b = s.runs.by_status;
  const done = (b.succeeded ?? 0) + (b.failed ?? 0) + (b.cancelled ?? 0);
  return done ? (b.succeeded ?? 0) / done : null;
}

export function formatCount(n: number): string {
  if (Math.abs(n) >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (Math.abs(n) >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return String(Math.round(n));
}

/** Nice axis maximum (1, 2, 2.5, 5 x 10^k) at or above `max`. */
export function niceMax(max: number): number {
  if (!(max > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= max) return m * p;
  return 10 * p;
}
