/**
 * Trace replay: a cursor over the steps of a finished run. Cursor `i` is "after step i":
 * the canvas shows step i's node as current, the steps before it as done, the rest pending.
 * Pure functions; the store keeps the cursor.
 */
import type { RunStep, RunTrace, TraceStep } from "./types";

export type ReplayNodeState = "current" | "done" | "failed" | "pending";
type State = Record<string, unknown>;

const isObj = (x: unknown): x is State => Boolean(x) && typeof x === "object" && !Array.isArray(x);

/** The trace with its steps in index order (and always a list). */
export function normalizeTrace(raw: RunTrace): RunTrace {
  const steps = Array.isArray(raw?.steps) ? [...raw.steps] : [];
  steps.sort((a, b) => (a.index ?? 0) - (b.index ?? 0));
  return { ...raw, steps };
}

export function clampCursor(trace: RunTrace | null, cursor: number): number {
  const n = trace?.steps.length ?? 0;
  if (!n || !Number.isFinite(cursor)) return 0;
  return Math.min(n - 1, Math.max(0, Math.trunc(cursor)));
}

/** The state once step `cursor` was merged: the step's `state_after`, else the initial state with every output up to it. */
export function stateAfter(trace: RunTrace, cursor: number): State {
  const step = trace.steps[cursor];
  if (step && isObj(step.state_after)) return step.state_after;
  let state: State = isObj(trace.initial_state) ? { ...trace.initial_state } : {};
  for (let i = 0; i <= cursor && i < trace.steps.length; i++) {
    const s = trace.steps[i];
    if (isObj(s.state_after)) state = { ...s.state_after };
    else if (isObj(s.output)) state = { ...state, ...s.output };
  }
  return state;
}

/** The state step `cursor` started from: the state after the previous step, or the run's initial state. */
export function stateBefore(trace: RunTrace, cursor: number): State {
  if (cursor <= 0) return isObj(trace.initial_state) ? trace.initial_state : {};
  return stateAfter(trace, cursor - 1);
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** Top-level keys a step added, changed and removed. */
export function stateDelta(before: State, after: State): { added: string[]; changed: string[]; removed: string[] } {
  const added: string[] = [];
  const changed: string[] = [];
  const removed: string[] = [];
  for (const k of Object.keys(after)) {
    if (!(k in before)) added.push(k);
    else if (!same(before[k], after[k])) changed.push(k);
  }
  for (const k of Object.keys(before)) if (!(k in after)) removed.push(k);
  return { added, changed, removed };
}

/** The latest step of each node up to the cursor (as run steps, for the canvas), and their order. */
export function stepsUpTo(trace: RunTrace, cursor: number): { steps: Record<string, RunStep>; order: string[] } {
  const steps: Record<string, RunStep> = {};
  const order: string[] = [];
  for (let i = 0; i <= cursor && i < trace.steps.length; i++) {
    const s: TraceStep = trace.steps[i];
    if (!steps[s.node_id]) order.push(s.node_id);
    steps[s.node_id] = {
      node_id: s.node_id,
      node_type: s.node_type ?? undefined,
      status: s.status === "failed" || s.status === "lost" ? "failed" : s.status === "running" ? "running" : "succeeded",
      started_at: s.started_at,
      finished_at: s.finished_at,
      duration_ms: s.duration_ms,
      tokens: s.tokens,
      cost: s.cost,
      error: s.error,
    };
  }
  return { steps, order };
}

/** How each node looks at the cursor: the current step's node, done (or failed) before it, pending after. */
export function replayNodeStates(trace: RunTrace, cursor: number, nodeIds: Iterable<string>): Record<string, ReplayNodeState> {
  const { steps } = stepsUpTo(trace, cursor);
  const current = trace.steps[cursor]?.node_id;
  const out: Record<string, ReplayNodeState> = {};
  for (const id of nodeIds) {
    if (id === current) out[id] = "current";
    else if (steps[id]) out[id] = steps[id].status === "failed" ? "failed" : "done";
    else out[id] = "pending";
  }
  return out;
}
