"use client";
/**
 * Trace replay of a finished run: play, pause, step, scrub; the canvas highlights the
 * current step's node; this panel shows the step's input and output and the state after
 * it, and re-runs from the current node with an editable state.
 */
import { useState } from "react";
import { stateAfter, stateBefore, stateDelta } from "@/lib/replay";
import type { RunTrace } from "@/lib/types";
import { useWorkflowStore } from "@/lib/useWorkflowStore";
import { ChildOf, ChildRuns } from "./ChildRuns";
import { Icon } from "./Icon";
import { Button, Empty, formatCost, formatMs, inputClass, Section, StatusBadge } from "./ui";

const json = (x: unknown) => JSON.stringify(x ?? null, null, 2);

function JsonBlock({ value, testId, className = "" }: { value: unknown; testId: string; className?: string }) {
  return (
    <pre data-testid={testId} className={`max-h-72 overflow-auto rounded-md bg-slate-900 p-2 text-[11px] leading-snug text-slate-100 ${className}`}>
      {json(value)}
    </pre>
  );
}

/** The re-run form: its draft is the state the current node started from (reset when the cursor moves). */
function Rerun({ trace, cursor }: { trace: RunTrace; cursor: number }) {
  const step = trace.steps[cursor];
  const [draft, setDraft] = useState(() => json(stateBefore(trace, cursor)));
  const [error, setError] = useState<string | null>(null);
  const rerunning = useWorkflowStore((s) => s.replay.rerunning);
  const rerunFrom = useWorkflowStore((s) => s.rerunFrom);
  const start = () => {
    let state: unknown;
    try {
      state = JSON.parse(draft);
      if (!state || typeof state !== "object" || Array.isArray(state)) throw new Error("the state must be a JSON object");
    } catch (e) {
      setError((e as Error).message);
      return;
    }
    setError(null);
    void rerunFrom(step.node_id, state as Record<string, unknown>);
  };
  return (
    <Section title={`Re-run from ${step.node_id}`}>
      <p className="mb-1 text-[11px] text-slate-500">
        A new run starts at <span className="font-mono">{step.node_id}</span> with this state (the state it received in this run; edit it to try a variation).
      </p>
      <textarea
        data-testid="rerun-state"
        aria-label="State for the re-run"
        rows={8}
        spellCheck={false}
        className={`${inputClass} font-mono text-[11px] ${error ? "border-rose-400" : ""}`}
        value={draft}
        onChange={(e) => setDraft(e.target.value)}
      />
      {error && (
        <p data-testid="rerun-error" className="text-xs text-rose-600">
          {error}
        </p>
      )}
      <div className="mt-2 flex items-center gap-2">
        <Button variant="primary" data-testid="rerun-start" disabled={rerunning} onClick={start}>
          ⟳ {rerunning ? "Starting…" : "Re-run from here"}
        </Button>
        <Button variant="ghost" className="text-xs" data-testid="rerun-reset" onClick={() => setDraft(json(stateBefore(trace, cursor)))}>
          Reset
        </Button>
      </div>
    </Section>
  );
}

export function ReplayPanel() {
  const replay = useWorkflowStore((s) => s.replay);
  const overlayKind = useWorkflowStore((s) => s.overlay?.kind ?? null);
  const { replaySeek, replayStep, replayPlay, replayPause, closeReplay, showOverlay, setTab, openRunOf } = useWorkflowStore.getState();
  const { trace, cursor, status } = replay;

  if (status === "idle" || (!trace && status !== "loading" && status !== "failed")) {
    return (
      <div data-testid="replay-panel" data-status="idle">
        <Section title="Replay">
          <Empty>Pick a finished run in the Run tab (Past runs → Replay) to step through it.</Empty>
          <Button className="mt-2 text-xs" onClick={() => setTab("run")}>
            Go to runs
          </Button>
        </Section>
      </div>
    );
  }
  if (status === "loading" || !trace) {
    return (
      <div data-testid="replay-panel" data-status={status}>
        <Section title="Replay">
          {status === "loading" ? <Empty>Loading the trace…</Empty> : <p className="text-xs text-rose-600" data-testid="replay-error">{replay.error}</p>}
        </Section>
      </div>
    );
  }

  const n = trace.steps.length;
  const step = trace.steps[cursor];
  const atEnd = n > 0 && cursor === n - 1;
  const before = n ? stateBefore(trace, cursor) : {};
  const after = n ? stateAfter(trace, cursor) : {};
  const delta = stateDelta(before, after);

  return (
    <div data-testid="replay-panel" data-status={status} data-cursor={cursor} data-steps={n}>
      <Section
        title="Replay"
        actions={
          <span className="flex items-center gap-1">
            <StatusBadge status={trace.status} testId="replay-run-status" />
            <Button variant="ghost" className="text-xs" data-testid="replay-close" onClick={closeReplay}>
              ✕
            </Button>
          </span>
        }
      >
        <div className="mb-2 grid grid-cols-2 gap-x-3 gap-y-0.5 text-xs text-slate-600">
          <span className="text-slate-400">Run</span>
          <span className="truncate font-mono" data-testid="replay-run-id">{trace.run_id}</span>
          <span className="text-slate-400">Workflow</span>
          <span className="truncate">
            {trace.workflow_id ?? "–"}
            {trace.workflow_version ? ` · v${trace.workflow_version}` : ""}
          </span>
          <ChildOf run={trace} open={(id) => void openRunOf(id)} testId="replay-parent-open" />
        </div>
        {(trace.children?.length ?? 0) > 0 && <ChildRuns run={trace} live={false} open={(id) => void openRunOf(id)} />}
        {n === 0 && <Empty>This run has no steps.</Empty>}
        {n > 0 && (
          <>
            <div className="flex items-center gap-1" role="group" aria-label="Replay controls">
              <Button variant="ghost" data-testid="replay-first" title="First step" disabled={cursor === 0} onClick={() => replayStep(-n)}>
                <Icon name="first" />
              </Button>
              <Button variant="ghost" data-testid="replay-back" title="Step back" disabled={cursor === 0} onClick={() => replayStep(-1)}>
                <Icon name="prev" />
              </Button>
              {replay.playing ? (
                <Button variant="primary" data-testid="replay-pause" title="Pause" onClick={replayPause}>
                  <Icon name="pause" className="h-3.5 w-3.5" /> Pause
                </Button>
              ) : (
                <Button variant="primary" data-testid="replay-play" title="Play" onClick={replayPlay}>
                  <Icon name="play" className="h-3.5 w-3.5" /> Play
                </Button>
              )}
              <Button variant="ghost" data-testid="replay-forward" title="Step forward" disabled={atEnd} onClick={() => replayStep(1)}>
                <Icon name="next" />
              </Button>
              <Button variant="ghost" data-testid="replay-last" title="Last step" disabled={atEnd} onClick={() => replayStep(n)}>
                <Icon name="last" />
              </Button>
              <span className="flex-1" />
              <span className="text-xs text-slate-500" data-testid="replay-position">
                step {cursor + 1} / {n}
              </span>
            </div>
            <input
              type="range"
              data-testid="replay-slider"
              aria-label="Replay position"
              className="mt-2 w-full accent-indigo-600"
              min={0}
              max={n - 1}
              step={1}
              value={cursor}
              onChange={(e) => {
                replayPause();
                replaySeek(Number(e.target.value));
              }}
            />
            {overlayKind !== "replay" && (
              <Button variant="ghost" className="mt-1 text-xs" data-testid="replay-show" onClick={() => void showOverlay("replay")}>
                Show on canvas
              </Button>
            )}
            <ol className="mt-2 max-h-40 space-y-0.5 overflow-y-auto">
              {trace.steps.map((s, i) => (
                <li key={`${s.index}-${i}`}>
                  <button
                    type="button"
                    data-testid={`replay-step-${i}`}
                    data-node={s.node_id}
                    data-current={i === cursor ? "true" : undefined}
                    className={`flex w-full items-center gap-2 rounded px-1.5 py-0.5 text-left text-xs ${i === cursor ? "bg-indigo-100 text-indigo-800" : i < cursor ? "text-slate-600 hover:bg-slate-100" : "text-slate-400 hover:bg-slate-100"}`}
                    onClick={() => {
                      replayPause();
                      replaySeek(i);
                    }}
                  >
                    <span className="w-5 text-right text-[10px] text-slate-400">{i + 1}</span>
                    <Icon name={s.node_type ?? ""} className="h-3 w-3" />
                    <span className="flex-1 truncate font-mono">{s.node_id}</span>
                    {s.status === "failed" && <span className="text-[10px] font-semibold text-rose-600">failed</span>}
                    <span className="text-[10px] text-slate-400">{formatMs(s.duration_ms)}</span>
                  </button>
                </li>
              ))}
            </ol>
          </>
        )}
      </Section>

      {step && (
        <Section title="Step">
          <div data-testid="replay-current" data-node={step.node_id} data-status={step.status} className="grid grid-cols-2 gap-x-3 gap-y-0.5 text-xs text-slate-600">
            <span className="text-slate-400">Node</span>
            <span className="font-mono font-semibold" data-testid="replay-current-node">{step.node_id}</span>
            <span className="text-slate-400">Type</span>
            <span>{step.node_type ?? "–"}</span>
            <span className="text-slate-400">Status</span>
            <span>
              <StatusBadge status={String(step.status)} />
            </span>
            <span className="text-slate-400">Time</span>
            <span>{formatMs(step.duration_ms)}</span>
            <span className="text-slate-400">Tokens · cost</span>
            <span>
              {step.tokens ?? 0} · {formatCost(step.cost)}
            </span>
          </div>
          {step.error && <pre className="mt-2 whitespace-pre-wrap rounded-md border border-rose-200 bg-rose-50 p-2 text-xs text-rose-700">{step.error}</pre>}
          <div className="mt-2 grid grid-cols-1 gap-2">
            <div>
              <h4 className="mb-1 text-xs font-semibold text-slate-500">Input (what the node read)</h4>
              <JsonBlock value={step.input ?? null} testId="replay-input" className="max-h-40" />
            </div>
            <div>
              <h4 className="mb-1 text-xs font-semibold text-slate-500">Output (what it wrote)</h4>
              <JsonBlock value={step.output ?? null} testId="replay-output" className="max-h-40" />
            </div>
          </div>
          <div className="mt-2 flex flex-wrap gap-1 text-[11px]" data-testid="replay-delta">
            {delta.added.map((k) => (
              <span key={`a${k}`} className="rounded border border-emerald-200 bg-emerald-50 px-1 font-mono text-emerald-700">+ {k}</span>
            ))}
            {delta.changed.map((k) => (
              <span key={`c${k}`} className="rounded border border-amber-200 bg-amber-50 px-1 font-mono text-amber-800">~ {k}</span>
            ))}
            {delta.removed.map((k) => (
              <span key={`r${k}`} className="rounded border border-rose-200 bg-rose-50 px-1 font-mono text-rose-700">− {k}</span>
            ))}
            {!delta.added.length && !delta.changed.length && !delta.removed.length && <span className="text-slate-400">the state did not change</span>}
          </div>
        </Section>
      )}

      {step && (
        <Section title={`State after step ${cursor + 1}`}>
          <JsonBlock value={after} testId="replay-state" />
          {atEnd && trace.final_state && (
            <div className="mt-2">
              <h4 className="mb-1 text-xs font-semibold text-slate-500">Final state (end of the run)</h4>
              <JsonBlock value={trace.final_state} testId="replay-final-state" />
            </div>
          )}
        </Section>
      )}

      {step && <Rerun key={`${trace.run_id}:${cursor}`} trace={trace} cursor={cursor} />}
    </div>
  );
}
