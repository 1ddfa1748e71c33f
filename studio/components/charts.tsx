/** Small hand-drawn SVG charts for the dashboard (no chart library: a few hundred bytes each). */
import { niceMax } from "@/lib/metrics";

export interface ChartPoint {
  t: number;
  v: number | null;
  label?: string;
}

const W = 480;
const H = 170;
const PAD = { l: 44, r: 10, t: 10, b: 24 };
const PW = W - PAD.l - PAD.r;
const PH = H - PAD.t - PAD.b;
const GRID = [0, 0.5, 1];

function timeLabel(t: number, spanMs: number): string {
  const d = new Date(t);
  if (spanMs <= 2 * 86_400_000) return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return d.toLocaleDateString([], { month: "short", day: "numeric" });
}

/** Runs (bars) or tokens, cost, latency (line and area) over the selected time range. */
export function TimeChart({
  title,
  testId,
  points,
  domain,
  kind,
  color,
  format,
  bucketMs,
}: {
  title: string;
  testId: string;
  points: ChartPoint[];
  domain: [number, number];
  kind: "bars" | "line";
  color: string;
  format: (v: number) => string;
  /** Width of a bucket (bars are drawn that wide); else the smallest gap between buckets. */
  bucketMs?: number;
}) {
  const [t0, t1] = domain[1] > domain[0] ? domain : [domain[0], domain[0] + 1];
  const span = t1 - t0;
  const values = points.map((p) => p.v).filter((v): v is number => v !== null);
  const max = niceMax(Math.max(0, ...values));
  // A bucket is drawn at its middle when its width is known.
  const off = bucketMs && bucketMs > 0 ? bucketMs / 2 : 0;
  const x = (t: number) => PAD.l + ((Math.min(t1, Math.max(t0, t + off)) - t0) / span) * PW;
  const xAxis = (t: number) => PAD.l + ((t - t0) / span) * PW;
  const y = (v: number) => PAD.t + PH - (v / max) * PH;
  const sorted = [...points].sort((a, b) => a.t - b.t);
  // Bar width: the smallest gap between buckets (a single bucket gets a thin bar).
  let gap = bucketMs && bucketMs > 0 ? bucketMs : Infinity;
  for (let i = 1; i < sorted.length; i++) gap = Math.min(gap, sorted[i].t - sorted[i - 1].t);
  const barW = Math.max(2, Math.min(40, (Number.isFinite(gap) ? (gap / span) * PW : PW / 40) * 0.8));
  const line = sorted.filter((p) => p.v !== null);
  const path = line.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v!).toFixed(1)}`).join(" ");
  const area = line.length ? `${path} L${x(line[line.length - 1].t).toFixed(1)},${PAD.t + PH} L${x(line[0].t).toFixed(1)},${PAD.t + PH} Z` : "";
  const total = values.reduce((a, b) => a + b, 0);
  const gridLabels = GRID.map((f) => format(max * f));
  return (
    <figure data-testid={testId} data-points={points.length} data-total={total} className="rounded-xl border border-slate-200 bg-white p-3 shadow-sm">
      <figcaption className="mb-1 flex items-baseline justify-between text-xs">
        <span className="font-semibold text-slate-600">{title}</span>
        <span className="text-slate-400">{points.length ? `${points.length} bucket${points.length === 1 ? "" : "s"}` : "no data"}</span>
      </figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} className="h-auto w-full" role="img" aria-label={title}>
        {GRID.map((f, i) => (
          <g key={f}>
            <line x1={PAD.l} x2={W - PAD.r} y1={y(max * f)} y2={y(max * f)} stroke="#e2e8f0" strokeDasharray={f ? "3 3" : undefined} />
            {/* a small maximum rounds the middle line to the top's label ("1, 1, 0"): say it once */}
            {gridLabels.lastIndexOf(gridLabels[i]) === i && (
              <text x={PAD.l - 6} y={y(max * f) + 3} textAnchor="end" fontSize="10" fill="#94a3b8" data-testid="chart-tick">
                {gridLabels[i]}
              </text>
            )}
          </g>
        ))}
        {[t0, t0 + span / 2, t1].map((t, i) => (
          <text key={i} x={xAxis(t)} y={H - 6} textAnchor={i === 0 ? "start" : i === 2 ? "end" : "middle"} fontSize="10" fill="#94a3b8">
            {timeLabel(t, span)}
          </text>
        ))}
        {kind === "bars" &&
          sorted.map((p, i) =>
            p.v === null ? null : (
              <rect key={i} x={x(p.t) - barW / 2} y={y(p.v)} width={barW} height={Math.max(0, PAD.t + PH - y(p.v))} rx={1.5} fill={color} opacity={0.85}>
                <title>{`${p.label ?? new Date(p.t).toLocaleString()}: ${format(p.v)}`}</title>
              </rect>
            ),
          )}
        {kind === "line" && line.length > 0 && (
          <>
            <path d={area} fill={color} opacity={0.12} />
            <path d={path} fill="none" stroke={color} strokeWidth={2} strokeLinejoin="round" />
            {line.map((p, i) => (line.length > 24 && !p.v ? null :
              <circle key={i} cx={x(p.t)} cy={y(p.v!)} r={line.length > 60 ? 1.5 : 3} fill="white" stroke={color} strokeWidth={1.5}>
                <title>{`${p.label ?? new Date(p.t).toLocaleString()}: ${format(p.v!)}`}</title>
              </circle>
            ))}
          </>
        )}
        {!points.length && (
          <text x={PAD.l + PW / 2} y={PAD.t + PH / 2} textAnchor="middle" fontSize="12" fill="#cbd5e1">
            no runs in this range
          </text>
        )}
      </svg>
    </figure>
  );
}

const STATUS_FILL: Record<string, string> = {
  succeeded: "#10b981",
  failed: "#f43f5e",
  cancelled: "#f59e0b",
  running: "#3b82f6",
  queued: "#94a3b8",
  waiting: "#f97316",
};

/** Runs by status as one stacked bar with a legend. */
export function StatusBar({ byStatus, testId }: { byStatus: Record<string, number>; testId: string }) {
  const entries = Object.entries(byStatus).filter(([, n]) => n > 0);
  const total = entries.reduce((a, [, n]) => a + n, 0);
  return (
    <div data-testid={testId} className="space-y-2">
      <div className="flex h-3 w-full overflow-hidden rounded-full bg-slate-100">
        {entries.map(([status, n]) => (
          <div key={status} title={`${status}: ${n}`} style={{ width: `${(100 * n) / total}%`, background: STATUS_FILL[status] ?? "#64748b" }} />
        ))}
      </div>
      <ul className="flex flex-wrap gap-x-4 gap-y-1 text-xs text-slate-600">
        {entries.length === 0 && <li className="text-slate-400">no runs</li>}
        {entries.map(([status, n]) => (
          <li key={status} data-testid={`${testId}-${status}`} data-value={n} className="flex items-center gap-1.5">
            <i className="inline-block h-2.5 w-2.5 rounded-sm" style={{ background: STATUS_FILL[status] ?? "#64748b" }} />
            {status}
            <span className="font-semibold text-slate-800">{n}</span>
            <span className="text-slate-400">{total ? `${Math.round((100 * n) / total)}%` : ""}</span>
          </li>
        ))}
      </ul>
    </div>
  );
}
