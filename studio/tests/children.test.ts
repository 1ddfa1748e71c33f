/** Child runs in the run panel (map progress, parent links) and on_error edges on the canvas. */
import { describe, expect, it } from "vitest";
import { childProgress, childrenByNode, edgeKind, parentLink, startsChildren } from "@/lib/children";
import { deriveEdges } from "@/lib/flow";
import type { ChildRun, WorkflowSpec } from "@/lib/types";
import { createWorkflowStore } from "@/lib/useWorkflowStore";

const child = (index: number, status: ChildRun["status"], node_id = "each"): ChildRun => ({ run_id: `r${node_id}${index}`, workflow_id: "kid", status, node_id, index });

describe("child runs", () => {
  it("groups children by node in list order and counts the ended ones", () => {
    const groups = childrenByNode([child(2, "running"), child(0, "succeeded"), child(1, "failed"), child(0, "succeeded", "sub")]);
    expect(Object.keys(groups).sort()).toEqual(["each", "sub"]);
    expect(groups.each.map((c) => c.index)).toEqual([0, 1, 2]);
    expect(childProgress(groups.each)).toEqual({ done: 2, total: 3, failed: 1, failedIndexes: [1] });
    expect(childProgress([])).toEqual({ done: 0, total: 0, failed: 0, failedIndexes: [] });
    expect(childProgress([child(3, "cancelled"), child(4, "queued")])).toEqual({ done: 1, total: 2, failed: 1, failedIndexes: [3] });
  });

  it("tells a child run from a re-run", () => {
    expect(parentLink({ parent_run_id: "p", rerun_from: null })).toEqual({ kind: "child", runId: "p" });
    expect(parentLink({ parent_run_id: "p", rerun_from: "writer" })).toEqual({ kind: "rerun", runId: "p" });
    expect(parentLink({ parent_run_id: null })).toBeNull();
  });

  it("knows which workflows start children", () => {
    expect(startsChildren({ nodes: [{ id: "a", type: "input" }] })).toBe(false);
    expect(startsChildren({ nodes: [{ id: "a", type: "input" }, { id: "m", type: "map", config: { over: "x", workflow: "k" } }] })).toBe(true);
  });
});

describe("on_error edges", () => {
  const spec: WorkflowSpec = {
    id: "wf",
    name: "WF",
    start_node: "in",
    nodes: [
      { id: "in", type: "input" },
      { id: "sub", type: "workflow", config: { workflow: "kid" } },
      { id: "ok", type: "aggregator", config: { fields: ["workflow_result"] } },
      { id: "handle", type: "aggregator", config: { fields: ["error"] } },
    ],
    edges: [
      { from: "in", to: "sub" },
      { from: "sub", to: "ok", condition: "user_input == 'x'" },
      { from: "sub", to: "handle", on_error: true },
    ],
  };

  it("classifies edges", () => {
    expect(spec.edges!.map(edgeKind)).toEqual(["always", "condition", "on_error"]);
  });

  it("marks on_error edges for the canvas", () => {
    const store = createWorkflowStore();
    store.getState().loadSpec(spec);
    const edges = deriveEdges(store.getState());
    expect(edges.map((e) => [e.target, e.data?.onError, e.className ?? ""])).toEqual([
      ["sub", false, ""],
      ["ok", false, ""],
      ["handle", true, "edge-on-error"],
    ]);
  });
});
