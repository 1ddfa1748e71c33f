/**
 * Child runs (workflow and map nodes) as the run panel shows them, and how an edge is drawn.
 * Pure functions over the API's answers, so they are tested without a browser.
 */
import type { ChildRun, RunRecord, SpecEdge, WorkflowSpec } from "./types";

/** Does the workflow start child runs (so its runs are worth polling for their children)? */
export function startsChildren(spec: Pick<WorkflowSpec, "nodes">): boolean {
  return spec.nodes.some((n) => n.type === "workflow" || n.type === "map");
}

/** The children of each node, in the order of the map's list. */
export function childrenByNode(children: ChildRun[] | undefined): Record<string, ChildRun[]> {
  const out: Record<string, ChildRun[]> = {};
  for (const c of children ?? []) (out[c.node_id ?? "?"] ??= []).push(c);
  for (const list of Object.values(out)) list.sort((a, b) => a.index - b.index);
  return out;
}

export interface ChildProgress {
  /** Children that have ended (any way). */
  done: number;
  total: number;
  failed: number;
  /** Indexes of the children that did not succeed, in order. */
  failedIndexes: number[];
}

const ENDED = new Set(["succeeded", "failed", "cancelled"]);

/** "n of m children done" of one node's children. */
export function childProgress(children: ChildRun[]): ChildProgress {
  const failedIndexes = children.filter((c) => c.status === "failed" || c.status === "cancelled").map((c) => c.index).sort((a, b) => a - b);
  return { done: children.filter((c) => ENDED.has(c.status)).length, total: children.length, failed: failedIndexes.length, failedIndexes };
}

/** How the run relates to another: a child of a workflow/map node, or a re-run from a node. */
export function parentLink(run: Pick<RunRecord, "parent_run_id" | "rerun_from">): { kind: "child" | "rerun"; runId: string } | null {
  if (!run.parent_run_id) return null;
  return { kind: run.rerun_from ? "rerun" : "child", runId: run.parent_run_id };
}

export type EdgeKind = "on_error" | "condition" | "always";

/** on_error edges are drawn red and dashed, labelled "on error". */
export function edgeKind(edge: Pick<SpecEdge, "condition" | "on_error">): EdgeKind {
  if (edge.on_error) return "on_error";
  return edge.condition ? "condition" : "always";
}
