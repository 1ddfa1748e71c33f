"use client";
/** Runs, tokens, cost and latency over a time range, per workflow, node and source (`GET /metrics/summary`). */
import { useEffect, type ReactNode } from "react";
import { bucketTime, formatCount, RANGE_IDS, RANGES, successRate, type RangeId } from "@/lib/metrics";
import { useWorkflowStore } from "@/lib/useWorkflowStore";
import { StatusBar, TimeChart } from "./charts";
import { Icon } from "./Icon";
import { Button, formatCost, formatMs } from "./ui";

const AUTO_REFRESH_MS = 15_000;

function Kpi({ label, value, raw, sub, testId }: { label: string; value: ReactNode; raw: number | null; sub?: ReactNode; testId: string }) {
  return (
    <div data-testid={testId} data-value={raw ?? ""} className="rounded-xl border border-slate-200 bg-white px-4 py-3 shadow-sm">
      <div className="text-[11px] font-semibold uppercase tracking-wide text-slate-400">{label}</div>
      <div className="mt-1 text-2xl font-semibold text-slate-800">{value}</div>
      {sub && <div className="mt-0.5 text-xs text-slate-500">{sub}</div>}
    </div>
  );
}

function Table({ title, testId, head, rows, empty }: { title: string; testId: string; head: string[]; rows: { key: string; cells: ReactNode[]; attrs?: Record<string, string> }[]; empty: string }) {
  return (
    <section className="rounded-xl border border-slate-200 bg-white shadow-sm">
      <h2 className="border-b border-slate-100 px-4 py-2 text-xs font-semibold uppercase tracking-wide text-slate-500">{title}</h2>
      <div className="max-h-80 overflow-auto">
        <table data-testid={testId} className="w-full text-xs">
          <thead className="sticky top-0 bg-white">
            <tr className="text-left text-[10px] uppercase text-slate-400">
              {head.map((h, i) => (
                <th key={h} className={`px-4 py-1.5 font-medium ${i ? "text-right" : ""}`}>
                  {h}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {rows.length === 0 && (
              <tr>
                <td colSpan={head.length} className="px-4 py-3 text-slate-400">
                  {empty}
                </td>
              </tr>
            )}
            {rows.map((r) => (
              <tr key={r.key} className="border-t border-slate-100" {...r.attrs}>
                {r.cells.map((c, i) => (
                  <td key={i} className={`px-4 py-1.5 ${i ? "text-right tabular-nums" : ""}`}>
                    {c}
                  </td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}

export function Dashboard() {
  const d = useWorkflowStore((s) => s.dashboard);
  const workflows = useWorkflowStore((s) => s.workflows);
  const { loadDashboard, loadWorkflows, setDashboardRange, setDashboardWorkflow } = useWorkflowStore.getState();

  // First load: the range and workflow in the address, the workflow list, the figures.
  useEffect(() => {
    (window as unknown as { __agentflowStore?: unknown }).__agentflowStore = useWorkflowStore;
    const params = new URLSearchParams(window.location.search);
    const range = params.get("range");
    const st = useWorkflowStore.getState();
    useWorkflowStore.setState({
      dashboard: {
        ...st.dashboard,
        range: range && range in RANGES ? (range as RangeId) : st.dashboard.range,
        workflowId: params.get("workflow") || null,
      },
    });
    void loadWorkflows();
    void loadDashboard();
  }, [loadDashboard, loadWorkflows]);

  // Keep ?range=&workflow= in the address; refresh every 15 s (now moves on).
  useEffect(() => {
    const url = new URL(window.location.href);
    url.searchParams.set("range", d.range);
    if (d.workflowId) url.searchParams.set("workflow", d.workflowId);
    else url.searchParams.delete("workflow");
    if (url.href !== window.location.href) window.history.replaceState(null, "", url);
    const t = setInterval(() => void useWorkflowStore.getState().loadDashboard(), AUTO_REFRESH_MS);
    return () => clearInterval(t);
  }, [d.range, d.workflowId]);

  const s = d.summary;
  const domain: [number, number] =
    s?.from && s?.to && !Number.isNaN(Date.parse(s.from)) && !Number.isNaN(Date.parse(s.to))
      ? [Date.parse(s.from), Date.parse(s.to)]
      : d.query
        ? [Date.parse(d.query.from), Date.parse(d.query.to)]
        : [Date.now() - RANGES[d.range].ms, Date.now()];
  const bucketMs = s?.bucket_seconds ? s.bucket_seconds * 1000 : undefined;
  const series = (pick: (b: NonNullable<typeof s>["timeseries"][number]) => number | null) =>
    (s?.timeseries ?? []).map((b) => ({ t: bucketTime(b.bucket) || domain[0], v: pick(b), label: new Date(bucketTime(b.bucket)).toLocaleString() }));
  const names = new Map(workflows.map((w) => [w.id, w.name]));
  const rate = s ? successRate(s) : null;

  return (
    <div className="min-h-screen bg-slate-100 text-slate-800" data-testid="dashboard" data-status={d.status}>
      <header className="flex h-12 items-center gap-3 border-b border-slate-200 bg-white px-4">
        <a href="/" data-testid="dash-back" className="flex items-center gap-2" title="Back to the designer">
          <span className="flex h-7 w-7 items-center justify-center rounded-lg bg-indigo-600 text-sm font-bold text-white">A</span>
          <span className="text-sm font-semibold text-slate-700">AgentFlow Studio</span>
        </a>
        <span className="text-slate-300">/</span>
        <h1 className="text-sm font-semibold text-slate-800">Dashboard</h1>
        <div className="flex-1" />
        <div className="flex overflow-hidden rounded-md border border-slate-300 bg-white" role="group" aria-label="Time range">
          {RANGE_IDS.map((r) => (
            <button
              key={r}
              type="button"
              data-testid={`dash-range-${r}`}
              aria-pressed={d.range === r}
              className={`px-3 py-1 text-xs font-medium ${d.range === r ? "bg-indigo-600 text-white" : "text-slate-600 hover:bg-slate-50"}`}
              onClick={() => setDashboardRange(r)}
            >
              {RANGES[r].label}
            </button>
          ))}
        </div>
        <select
          data-testid="dash-workflow"
          aria-label="Workflow"
          className="rounded-md border border-slate-300 bg-white px-2 py-1 text-xs"
          value={d.workflowId ?? ""}
          onChange={(e) => setDashboardWorkflow(e.target.value || null)}
        >
          <option value="">All workflows</option>
          {d.workflowId && !names.has(d.workflowId) && <option value={d.workflowId}>{d.workflowId}</option>}
          {workflows.map((w) => (
            <option key={w.id} value={w.id}>
              {w.name} ({w.id})
            </option>
          ))}
        </select>
        <Button variant="ghost" data-testid="dash-refresh" disabled={d.status === "loading"} onClick={() => void loadDashboard()} title="Refresh (also every 15 s)">
          ↻
        </Button>
      </header>

      <main className="mx-auto max-w-7xl space-y-4 p-4">
        {d.status === "failed" && (
          <div data-testid="dash-error" className="rounded-lg border border-rose-200 bg-rose-50 px-4 py-2 text-sm text-rose-700">
            Cannot read the metrics: {d.error}
          </div>
        )}
        {!s && d.status !== "failed" && <p className="text-sm text-slate-400">Loading…</p>}
        {s && (
          <>
            <div className="grid grid-cols-2 gap-3 md:grid-cols-3 xl:grid-cols-6">
              <Kpi testId="dash-kpi-runs" label="Runs" raw={s.runs.total} value={formatCount(s.runs.total)} sub={rate === null ? "none finished" : `${Math.round(rate * 100)}% succeeded`} />
              <Kpi testId="dash-kpi-tokens" label="Tokens" raw={s.tokens} value={formatCount(s.tokens)} sub={s.runs.total ? `${formatCount(s.tokens / s.runs.total)} per run` : undefined} />
              <Kpi testId="dash-kpi-cost" label="Cost" raw={s.cost} value={formatCost(s.cost)} sub={s.runs.total ? `${formatCost(s.cost / s.runs.total)} per run` : undefined} />
              <Kpi testId="dash-kpi-p50" label="Latency p50" raw={s.latency_ms.p50} value={formatMs(s.latency_ms.p50)} sub="per run" />
              <Kpi testId="dash-kpi-p95" label="Latency p95" raw={s.latency_ms.p95} value={formatMs(s.latency_ms.p95)} sub="per run" />
              <Kpi testId="dash-kpi-queue" label="Queue wait" raw={s.queue_wait_ms.p50} value={formatMs(s.queue_wait_ms.p50)} sub={`p95 ${formatMs(s.queue_wait_ms.p95)}`} />
            </div>

            <section className="rounded-xl border border-slate-200 bg-white px-4 py-3 shadow-sm">
              <h2 className="mb-2 text-xs font-semibold uppercase tracking-wide text-slate-500">Runs by status</h2>
              <StatusBar byStatus={s.runs.by_status} testId="dash-status" />
            </section>

            <div className="grid grid-cols-1 gap-3 lg:grid-cols-2">
              <TimeChart title="Runs" testId="dash-chart-runs" kind="bars" color="#6366f1" domain={domain} bucketMs={bucketMs} points={series((b) => b.runs)} format={(v) => formatCount(v)} />
              <TimeChart title="Tokens" testId="dash-chart-tokens" kind="line" color="#8b5cf6" domain={domain} bucketMs={bucketMs} points={series((b) => b.tokens)} format={(v) => formatCount(v)} />
              <TimeChart title="Cost" testId="dash-chart-cost" kind="line" color="#10b981" domain={domain} bucketMs={bucketMs} points={series((b) => b.cost)} format={(v) => `$${v < 1 ? v.toFixed(v ? 3 : 0) : v.toFixed(2)}`} />
              <TimeChart title="Latency p50" testId="dash-chart-latency" kind="line" color="#f59e0b" domain={domain} bucketMs={bucketMs} points={series((b) => b.p50_ms)} format={(v) => formatMs(v)} />
            </div>

            <Table
              title="Per workflow"
              testId="dash-workflows"
              head={["Workflow", "Runs", "Tokens", "Cost", "p50", "p95"]}
              empty="No runs in this range."
              rows={s.per_workflow.map((w) => ({
                key: w.workflow_id ?? "",
                attrs: { "data-testid": "dash-workflow-row", "data-workflow": w.workflow_id ?? "", "data-runs": String(w.runs), "data-tokens": String(w.tokens) },
                cells: [
                  w.workflow_id === null ? (
                    <span key="n" className="italic text-slate-500" title="Runs of POST /workflows/execute">unsaved specs</span>
                  ) : (
                    <button key="n" type="button" className="text-left hover:text-indigo-700" title="Show only this workflow" onClick={() => setDashboardWorkflow(w.workflow_id)}>
                      <span className="font-medium">{names.get(w.workflow_id) ?? w.workflow_id}</span>
                      <span className="ml-1 font-mono text-[10px] text-slate-400">{w.workflow_id}</span>
                    </button>
                  ),
                  w.runs,
                  formatCount(w.tokens),
                  formatCost(w.cost),
                  formatMs(w.p50_ms),
                  formatMs(w.p95_ms),
                ],
              }))}
            />
            <div className="grid grid-cols-1 gap-3 xl:grid-cols-2">
              <Table
                title="Per node"
                testId="dash-nodes"
                head={["Node", "Steps", "Tokens", "Cost", "p50", "p95"]}
                empty="No steps in this range."
                rows={s.per_node.map((n) => ({
                  key: `${n.workflow_id}/${n.node_id}`,
                  attrs: { "data-testid": "dash-node-row", "data-node": n.node_id, "data-workflow": n.workflow_id ?? "" },
                  cells: [
                    <span key="n" className="flex items-center gap-1.5">
                      <Icon name={n.node_type ?? ""} className="h-3 w-3 text-slate-500" />
                      <span className="font-mono">{n.node_id}</span>
                      <span className="truncate text-[10px] text-slate-400">{n.workflow_id}</span>
                    </span>,
                    n.steps,
                    formatCount(n.tokens),
                    formatCost(n.cost),
                    formatMs(n.p50_ms),
                    formatMs(n.p95_ms),
                  ],
                }))}
              />
              <Table
                title="Per source"
                testId="dash-sources"
                head={["Source", "Calls", "Tokens", "Cost", "p50", "p95"]}
                empty="No source calls in this range."
                rows={s.per_source.map((x) => ({
                  key: x.source_id,
                  attrs: { "data-testid": "dash-source-row", "data-source": x.source_id },
                  cells: [<span key="n" className="font-mono">{x.source_id}</span>, x.calls, formatCount(x.tokens), formatCost(x.cost), formatMs(x.p50_ms), formatMs(x.p95_ms)],
                }))}
              />
            </div>
            <p className="text-right text-[11px] text-slate-400" data-testid="dash-range-text">
              {d.query ? `${new Date(d.query.from).toLocaleString()} – ${new Date(d.query.to).toLocaleString()}` : ""}
            </p>
          </>
        )}
      </main>
    </div>
  );
}
