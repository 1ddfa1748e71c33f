/**
 * React Flow views of the store: nodes and edges derived from the spec, the layout,
 * the selection, the live run and the validation problems. Node objects are reused
 * while their inputs are unchanged, so a drag re-renders only the dragged nodes.
 */
import type { Edge, Node } from "@xyflow/react";
import { edgeKind } from "./children";
import { edgesOf, flowEdgeId, targetsOf } from "./spec";
import { pairKey, type DiffMark } from "./history";
import type { ReplayNodeState } from "./replay";
import type { Position, RunStep, SpecNode, StepStatus } from "./types";
import type { Problem, StudioState } from "./useWorkflowStore";
import type { Size } from "./layout";

/** What a diff or a replay adds to the canvas (see CanvasOverlay in the store). */
export interface CanvasExtras {
  marks?: Record<string, DiffMark>;
  edgeMarks?: Record<string, DiffMark>;
  replay?: Record<string, ReplayNodeState> | null;
  /** A diff or replay is shown: nothing on the canvas edits the document. */
  readOnly?: boolean;
}
const NO_EXTRAS: CanvasExtras = {};

export interface AgentNodeData extends Record<string, unknown> {
  spec: SpecNode;
  isStart: boolean;
  status: StepStatus | "idle";
  step: RunStep | null;
  problems: Problem[];
  /** Added, removed or changed in the diff on show. */
  diff: DiffMark | null;
  /** Current, done, failed or pending at the replay cursor. */
  replay: ReplayNodeState | null;
  /** Tokens are arriving for this node's running step. */
  streaming: boolean;
}

export type AgentFlowNode = Node<AgentNodeData, "agent">;

export interface ConditionEdgeData extends Record<string, unknown> {
  index: number;
  target: string;
  condition: string | null;
  fanout: number;
  problems: Problem[];
  taken: boolean;
  /** Position among edges with the same ends (their labels are spread apart). */
  parallel: number;
  parallelCount: number;
  diff: DiffMark | null;
  readOnly: boolean;
  /** Taken only when `from` fails (drawn red and dashed, labelled "on error"). */
  onError: boolean;
}

export type ConditionFlowEdge = Edge<ConditionEdgeData, "condition">;

interface CacheEntry {
  spec: SpecNode;
  pos: Position;
  size: Size | undefined;
  selected: boolean;
  isStart: boolean;
  step: RunStep | null;
  problems: Problem[] | undefined;
  diff: DiffMark | null;
  replay: ReplayNodeState | null;
  streaming: boolean;
  node: AgentFlowNode;
}

const NO_PROBLEMS: Problem[] = [];
const FALLBACK_POS: Position = { x: 0, y: 0 };

export function makeNodeDeriver() {
  let cache = new Map<string, CacheEntry>();
  return (st: Pick<StudioState, "spec" | "layout" | "measured" | "selectedNodes" | "runView" | "validation">, extras: CanvasExtras = NO_EXTRAS): AgentFlowNode[] => {
    const next = new Map<string, CacheEntry>();
    const selected = new Set(st.selectedNodes);
    const out: AgentFlowNode[] = [];
    for (const n of st.spec.nodes) {
      if (next.has(n.id)) continue; // duplicate ids: draw the first, validation reports the rest
      const pos = st.layout[n.id] ?? n.position ?? FALLBACK_POS;
      const size = st.measured[n.id];
      const isSel = selected.has(n.id);
      const isStart = st.spec.start_node === n.id;
      const step = st.runView.steps[n.id] ?? null;
      const problems = st.validation.index.nodes[n.id];
      const diff = extras.marks?.[n.id] ?? null;
      const replay = extras.replay?.[n.id] ?? null;
      const streaming = !extras.readOnly && step?.status === "running" && Boolean(st.runView.tokens[n.id]);
      const c = cache.get(n.id);
      if (c && c.spec === n && c.pos === pos && c.size === size && c.selected === isSel && c.isStart === isStart && c.step === step && c.problems === problems && c.diff === diff && c.replay === replay && c.streaming === streaming) {
        next.set(n.id, c);
        out.push(c.node);
        continue;
      }
      const node: AgentFlowNode = {
        id: n.id,
        type: "agent",
        position: pos,
        selected: isSel,
        data: { spec: n, isStart, status: step?.status ?? "idle", step, problems: problems ?? NO_PROBLEMS, diff, replay, streaming },
        ...(size ? { measured: size } : {}),
        ...(extras.readOnly ? { draggable: false, connectable: false, deletable: false } : {}),
      };
      next.set(n.id, { spec: n, pos, size, selected: isSel, isStart, step, problems, diff, replay, streaming, node });
      out.push(node);
    }
    cache = next;
    return out;
  };
}

export function deriveEdges(st: Pick<StudioState, "spec" | "selectedEdges" | "runView" | "validation">, extras: CanvasExtras = NO_EXTRAS): ConditionFlowEdge[] {
  const selected = new Set(st.selectedEdges);
  const ids = new Set(st.spec.nodes.map((n) => n.id));
  const out: ConditionFlowEdge[] = [];
  const pairs = new Map<string, number>();
  for (const e of edgesOf(st.spec)) for (const t of targetsOf(e)) pairs.set(`${e.from}\u0000${t}`, (pairs.get(`${e.from}\u0000${t}`) ?? 0) + 1);
  const seen = new Map<string, number>();
  edgesOf(st.spec).forEach((e, index) => {
    const targets = targetsOf(e);
    for (const target of targets) {
      if (!ids.has(e.from) || !ids.has(target)) continue;
      const id = flowEdgeId(index, target);
      const problems = st.validation.index.edges[index] ?? NO_PROBLEMS;
      const taken = Boolean(st.runView.steps[e.from] && st.runView.steps[target]);
      const pair = `${e.from}\u0000${target}`;
      const parallel = seen.get(pair) ?? 0;
      seen.set(pair, parallel + 1);
      const diff = extras.edgeMarks?.[pairKey(e.from, target)] ?? (extras.marks?.[e.from] === "removed" || extras.marks?.[target] === "removed" ? "removed" : extras.marks?.[e.from] === "added" || extras.marks?.[target] === "added" ? "added" : null);
      out.push({
        id,
        source: e.from,
        target,
        type: "condition",
        selected: selected.has(id),
        className: [problems.length ? "edge-error" : "", taken ? "edge-taken" : "", diff ? `edge-diff-${diff}` : "", e.on_error ? "edge-on-error" : ""].join(" ").trim() || undefined,
        data: { index, target, condition: e.condition ?? null, fanout: targets.length, problems, taken, parallel, parallelCount: pairs.get(pair) ?? 1, diff, readOnly: Boolean(extras.readOnly), onError: edgeKind(e) === "on_error" },
        ...(extras.readOnly ? { deletable: false, selectable: false } : {}),
      });
    }
  });
  return out;
}
