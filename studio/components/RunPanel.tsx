"use client";
/** Test input, the live run (over SSE, else polling), its steps and final state, and past runs. */
import { useEffect, useState } from "react";
import { resumeRun } from "@/lib/api";
import { parentLink, startsChildren } from "@/lib/children";
import { TERMINAL_RUN_STATUSES, type WaitingFor } from "@/lib/types";
import { useWorkflowStore } from "@/lib/useWorkflowStore";
import { ChildOf, ChildRuns } from "./ChildRuns";
import { Icon } from "./Icon";
import { Button, Empty, formatCost, formatMs, formatTime, inputClass, Section, StatusBadge } from "./ui";

function elapsed(a?: string | null, b?: string | null): number | null {
  if (!a || !b) return null;
  const d = new Date(b).getTime() - new Date(a).getTime();
  return Number.isFinite(d) ? d : null;
}

export function RunPanel() {
  const runView = useWorkflowStore((s) => s.runView);
  const runs = useWorkflowStore((s) => s.runs);
  const spec = useWorkflowStore((s) => s.spec);
  const savedId = useWorkflowStore((s) => s.savedId);
  const dirty = useWorkflowStore((s) => s.dirty);
  const busy = useWorkflowStore((s) => s.busy.run);
  const startRun = useWorkflowStore((s) => s.startRun);
  const cancelRun = useWorkflowStore((s) => s.cancelRun);
  const openRun = useWorkflowStore((s) => s.openRun);
  const openRunOf = useWorkflowStore((s) => s.openRunOf);
  const loadRuns = useWorkflowStore((s) => s.loadRuns);
  const openReplay = useWorkflowStore((s) => s.openReplay);
  const streamRuns = useWorkflowStore((s) => s.streamRuns);
  const setStreamRuns = useWorkflowStore((s) => s.setStreamRuns);
  const [input, setInput] = useState("");
  const [metadata, setMetadata] = useState("{}");
  const [metaError, setMetaError] = useState<string | null>(null);

  useEffect(() => {
    if (savedId) void loadRuns();
  }, [savedId, loadRuns]);

  const start = () => {
    let md: Record<string, unknown> = {};
    try {
      const parsed = metadata.trim() ? JSON.parse(metadata) : {};
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("metadata must be a JSON object");
      md = parsed;
      setMetaError(null);
    } catch (e) {
      setMetaError((e as Error).message);
      return;
    }
    void startRun({ user_input: input, metadata: md });
  };

  const run = runView.run;
  const live = run && !TERMINAL_RUN_STATUSES.includes(run.status);
  const stepNodes = runView.order;
  const totalTokens = run?.tokens_used ?? Object.values(runView.steps).reduce((s, x) => s + (x.tokens ?? 0), 0);
  const totalCost = run?.cost ?? Object.values(runView.steps).reduce((s, x) => s + (x.cost ?? 0), 0);

  return (
    <div data-testid="run-panel">
      <Section title="Test input">
        <label className="text-xs font-medium text-slate-600" htmlFor="run-input">
          user_input
        </label>
        <textarea id="run-input" data-testid="run-input" className={`${inputClass} mb-2`} rows={3} placeholder="What the user says…" value={input} onChange={(e) => setInput(e.target.value)} />
        <label className="text-xs font-medium text-slate-600" htmlFor="run-metadata">
          metadata (JSON)
        </label>
        <textarea id="run-metadata" data-testid="run-metadata" className={`${inputClass} font-mono text-xs ${metaError ? "border-rose-400" : ""}`} rows={2} value={metadata} onChange={(e) => setMetadata(e.target.value)} />
        {metaError && <p className="text-xs text-rose-600">{metaError}</p>}
        <div className="mt-2 flex items-center gap-2">
          <Button variant="primary" data-testid="run-start" disabled={busy || Boolean(live)} onClick={start}>
            ▶ {busy ? "Starting…" : "Run"}
          </Button>
          {live && (
            <Button variant="danger" data-testid="run-cancel" onClick={() => void cancelRun()}>
              Cancel
            </Button>
          )}
          <label className="flex items-center gap-1 text-[11px] text-slate-500" title="LLM nodes send their tokens as they come">
            <input type="checkbox" data-testid="run-stream" checked={streamRuns} onChange={(e) => setStreamRuns(e.target.checked)} />
            stream
          </label>
          <span className="text-[11px] text-slate-400">{dirty || savedId !== spec.id ? "Saves a new version first." : "Runs the saved version."}</span>
        </div>
      </Section>

      <Section
        title="Run"
        actions={
          run ? (
            <span className="flex items-center gap-1">
              {!live && (
                <Button variant="ghost" className="text-xs" data-testid="run-replay" title="Step through this run" onClick={() => void openReplay(run.run_id)}>
                  <Icon name="play" className="h-3 w-3" /> Replay
                </Button>
              )}
              <StatusBadge status={run.status} testId="run-status" />
            </span>
          ) : null
        }
      >
        {!run && <Empty>No run yet.</Empty>}
        {run?.status === "waiting" && (run.waiting_for ?? []).map((w) => <ApprovalForm key={w.node} runId={run.run_id} wait={w} />)}
        {run && (
          <div className="space-y-3">
            <div className="grid grid-cols-2 gap-x-3 gap-y-1 text-xs text-slate-600">
              <span className="text-slate-400">Run</span>
              <span className="truncate font-mono" data-testid="run-id">{run.run_id}</span>
              {parentLink(run)?.kind === "rerun" && (
                <>
                  <span className="text-slate-400">Re-run of</span>
                  <span className="truncate font-mono" data-testid="run-parent">{run.parent_run_id}</span>
                </>
              )}
              <ChildOf run={run} open={(id) => void openRunOf(id)} testId="run-parent-open" />
              <span className="text-slate-400">Version</span>
              <span>{run.workflow_version ?? "–"}</span>
              <span className="text-slate-400">Duration</span>
              <span>{formatMs(elapsed(run.started_at, run.finished_at))}</span>
              <span className="text-slate-400">Tokens</span>
              <span data-testid="run-tokens">{totalTokens ?? 0}</span>
              <span className="text-slate-400">Cost</span>
              <span>{formatCost(totalCost)}</span>
              <span className="text-slate-400">Updates</span>
              <span data-testid="run-transport">{runView.watching ? (runView.transport === "poll" ? "polling every 0.5 s" : "live (server events)") : "finished"}</span>
            </div>
            {run.error && (
              <pre data-testid="run-error" className="whitespace-pre-wrap rounded-md border border-rose-200 bg-rose-50 p-2 text-xs text-rose-700">
                {run.error}
              </pre>
            )}
            <table className="w-full text-xs">
              <thead>
                <tr className="text-left text-[10px] uppercase text-slate-400">
                  <th className="py-1 font-medium">Node</th>
                  <th className="font-medium">Status</th>
                  {/* gaps between the number columns: "28" and "$0.00000" ran together */}
                  <th className="pl-3 text-right font-medium">Time</th>
                  <th className="pl-3 text-right font-medium">Tokens</th>
                  <th className="pl-3 text-right font-medium">Cost</th>
                </tr>
              </thead>
              <tbody>
                {stepNodes.map((id) => {
                  const s = runView.steps[id];
                  const type = s.node_type ?? spec.nodes.find((n) => n.id === id)?.type ?? "";
                  return (
                    <tr key={id} data-testid={`run-step-${id}`} data-status={s.status} className="border-t border-slate-100 align-top">
                      <td className="py-1 pr-1">
                        <span className="mr-1 inline-block align-[-2px] text-slate-500"><Icon name={type} className="h-3 w-3" /></span>
                        <span className="font-mono">{id}</span>
                        {(s.attempt ?? 1) > 1 && <span className="ml-1 text-[10px] text-slate-400">attempt {s.attempt}</span>}
                        {s.error && <p className="whitespace-pre-wrap text-rose-600">{s.error}</p>}
                        {runView.tokens[id] && (
                          <p data-testid={`run-stream-${id}`} data-live={s.status === "running" ? "true" : undefined} className={`mt-0.5 max-h-32 overflow-y-auto whitespace-pre-wrap rounded border-l-2 px-1.5 py-0.5 ${s.status === "running" ? "border-blue-400 bg-blue-50/60 text-slate-700" : "border-slate-200 text-slate-500"}`}>
                            {runView.tokens[id]}
                            {s.status === "running" && <span className="ml-0.5 inline-block h-3 w-1 animate-pulse bg-blue-500 align-[-2px]" />}
                          </p>
                        )}
                      </td>
                      <td>
                        <StatusBadge status={s.status} />
                      </td>
                      <td className="whitespace-nowrap pl-3 text-right tabular-nums">{formatMs(s.duration_ms ?? elapsed(s.started_at, s.finished_at))}</td>
                      <td className="whitespace-nowrap pl-3 text-right tabular-nums" data-testid={`run-step-tokens-${id}`}>{s.tokens ?? "–"}</td>
                      <td className="whitespace-nowrap pl-3 text-right tabular-nums" data-testid={`run-step-cost-${id}`}>{formatCost(s.cost)}</td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
            {startsChildren(spec) && <ChildRuns run={run} live={Boolean(live)} open={(id) => void openRunOf(id)} />}
            {run.state && (
              <div>
                <h4 className="mb-1 text-xs font-semibold text-slate-500">Final state</h4>
                <pre data-testid="run-final-state" className="max-h-80 overflow-auto rounded-md bg-slate-900 p-2 text-[11px] leading-snug text-slate-100">
                  {JSON.stringify(run.state, null, 2)}
                </pre>
              </div>
            )}
          </div>
        )}
      </Section>

      <Section
        title="Past runs"
        actions={
          <Button variant="ghost" className="text-xs" data-testid="runs-refresh" onClick={() => void loadRuns()}>
            ↻
          </Button>
        }
      >
        {!savedId && <Empty>Save the workflow to run it.</Empty>}
        {savedId && runs.length === 0 && <Empty>No runs yet.</Empty>}
        <ul className="space-y-1">
          {runs.map((r) => (
            <li key={r.run_id} className={`flex items-center rounded-md ${run?.run_id === r.run_id ? "bg-indigo-50" : "hover:bg-slate-100"}`}>
              <button type="button" data-testid="run-history-item" data-run-id={r.run_id} className="flex min-w-0 flex-1 items-center gap-2 px-2 py-1 text-left text-xs" onClick={() => void openRun(r.run_id)}>
                <StatusBadge status={r.status} />
                <span className="truncate font-mono text-slate-600">{r.run_id.slice(0, 8)}</span>
                {r.parent_run_id && <span className="text-[10px] text-slate-400" title={`re-run of ${r.parent_run_id}`}>↳ re-run</span>}
                <span className="flex-1" />
                <span className="text-slate-400">{formatTime(r.created_at)}</span>
              </button>
              {TERMINAL_RUN_STATUSES.includes(r.status) && (
                <button type="button" data-testid="run-history-replay" data-run-id={r.run_id} title="Replay this run step by step" className="flex items-center gap-1 px-2 py-1 text-xs text-indigo-600 hover:text-indigo-800" onClick={() => void openReplay(r.run_id)}>
                  <Icon name="play" className="h-3 w-3" /> Replay
                </button>
              )}
            </li>
          ))}
        </ul>
      </Section>
    </div>
  );
}

/** A waiting run's question: the prompt, optional values (JSON), one button per choice. */
function ApprovalForm({ runId, wait }: { runId: string; wait: WaitingFor }) {
  const notify = useWorkflowStore((s) => s.notify);
  const openRun = useWorkflowStore((s) => s.openRun);
  const [values, setValues] = useState("{}");
  const [error, setError] = useState<string | null>(null);
  const [sending, setSending] = useState(false);
  const answer = async (choice: string) => {
    let parsed: Record<string, unknown> = {};
    try {
      const v = values.trim() ? JSON.parse(values) : {};
      if (!v || typeof v !== "object" || Array.isArray(v)) throw new Error("values must be a JSON object");
      parsed = v;
    } catch (e) {
      setError((e as Error).message);
      return;
    }
    setError(null);
    setSending(true);
    try {
      await resumeRun(runId, wait.node, choice, parsed);
      notify("info", `Answered ${choice}`);
      void openRun(runId);
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setSending(false);
    }
  };
  return (
    <div data-testid={`approval-${wait.node}`} className="mb-3 rounded border border-orange-300 bg-orange-50 p-2 text-xs">
      <p className="mb-1 font-medium text-orange-800">Waiting for you at {wait.node}</p>
      <p data-testid="approval-prompt" className="mb-2 whitespace-pre-wrap text-slate-700">{wait.prompt}</p>
      <label className="text-[11px] text-slate-500" htmlFor={`approval-values-${wait.node}`}>values (JSON, optional)</label>
      <textarea id={`approval-values-${wait.node}`} data-testid="approval-values" rows={2} className={`${inputClass} mb-2 font-mono text-xs`} value={values} onChange={(e) => setValues(e.target.value)} />
      <div className="flex flex-wrap gap-2">
        {wait.choices.map((c) => (
          <Button key={c} variant={c === "reject" ? "danger" : "primary"} data-testid={`approval-choice-${c}`} disabled={sending} onClick={() => void answer(c)}>
            {c}
          </Button>
        ))}
      </div>
      {error && <p className="mt-1 text-rose-600">{error}</p>}
    </div>
  );
}
