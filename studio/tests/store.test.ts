/** The workflow store: add, connect, delete, undo/redo, JSON round trip. */
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { beforeEach, describe, expect, it } from "vitest";
import { flowEdgeId } from "@/lib/spec";
import type { WorkflowSpec } from "@/lib/types";
import { createWorkflowStore, indexProblems } from "@/lib/useWorkflowStore";
import { deriveEdges, makeNodeDeriver } from "@/lib/flow";
import { specText } from "@/components/JsonPreview";

// shared/ sits beside the repository (as on every developer machine and in CI); the package
// ships the same file, which a clone without shared/ uses.
const sharedTriage = fileURLToPath(new URL("../../../shared/examples/triage.json", import.meta.url));
const triagePath = existsSync(sharedTriage)
  ? sharedTriage
  : fileURLToPath(new URL("../../examples/triage.json", import.meta.url));
const readTriage = (): WorkflowSpec => JSON.parse(readFileSync(triagePath, "utf8"));

let store: ReturnType<typeof createWorkflowStore>;
const st = () => store.getState();

beforeEach(() => {
  store = createWorkflowStore();
});

describe("adding and connecting", () => {
  it("adds nodes with unique ids and a minimal valid config", () => {
    const a = st().addNode("input", { x: 0, y: 0 });
    const b = st().addNode("llm", { x: 300, y: 0 });
    const c = st().addNode("llm", { x: 300, y: 200 });
    expect([a, b, c]).toEqual(["input", "llm", "llm_2"]);
    expect(st().spec.start_node).toBe("input");
    expect(st().spec.nodes[1]).toEqual({ id: "llm", type: "llm", config: { prompt: "{user_input}" }, position: { x: 300, y: 0 } });
    expect(st().layout.llm_2).toEqual({ x: 300, y: 200 });
    expect(st().selectedNodes).toEqual(["llm_2"]);
  });

  it("connects nodes once, and draws one canvas edge per fan-out target", () => {
    st().addNode("input");
    st().addNode("llm");
    st().addNode("image");
    st().connect("input", "llm");
    st().connect("input", "llm");
    expect(st().spec.edges).toEqual([{ from: "input", to: "llm" }]);
    st().updateEdge(0, { from: "input", to: ["llm", "image"], condition: "intent == 'both'" });
    const edges = deriveEdges(st());
    expect(edges.map((e) => [e.id, e.source, e.target, e.data?.condition])).toEqual([
      ["e0:llm", "input", "llm", "intent == 'both'"],
      ["e0:image", "input", "image", "intent == 'both'"],
    ]);
  });

  it("edits an edge condition, and an empty one removes the key", () => {
    st().addNode("input");
    st().addNode("llm");
    st().connect("input", "llm");
    st().setEdgeCondition(0, "intent == 'text'");
    expect(st().spec.edges![0]).toEqual({ from: "input", to: "llm", condition: "intent == 'text'" });
    st().setEdgeCondition(0, "");
    expect(st().spec.edges![0]).toEqual({ from: "input", to: "llm" });
  });

  it("renaming a node updates edges, the start node and the selection", () => {
    st().addNode("input");
    st().addNode("llm");
    st().connect("input", "llm");
    const node = st().spec.nodes[0];
    st().updateNode("input", { ...node, id: "entry" });
    expect(st().spec.start_node).toBe("entry");
    expect(st().spec.edges).toEqual([{ from: "entry", to: "llm" }]);
    expect(st().layout.entry).toBeDefined();
    expect(st().layout.input).toBeUndefined();
  });
});

describe("deleting", () => {
  it("deleting a node removes its edges and fan-out targets", () => {
    st().loadSpec(readTriage());
    st().deleteElements(["painter"], []);
    const s = st().spec;
    expect(s.nodes.map((n) => n.id)).not.toContain("painter");
    expect(s.edges).toEqual([
      { from: "input", to: "router" },
      { from: "input", to: "orders" },
      { from: "router", to: "writer", condition: "intent == 'text'" },
      { from: "router", to: ["writer"], condition: "intent == 'both'" },
      { from: "writer", to: "final" },
      { from: "orders", to: "final" },
    ]);
  });

  it("deleting one line of a fan-out keeps the others", () => {
    st().loadSpec(readTriage());
    st().deleteElements([], [flowEdgeId(4, "painter")]);
    expect(st().spec.edges![4]).toEqual({ from: "router", to: ["writer"], condition: "intent == 'both'" });
  });

  it("deletes the selection", () => {
    st().addNode("input");
    st().addNode("llm");
    st().connect("input", "llm");
    st().select(["llm"], []);
    st().deleteSelection();
    expect(st().spec.nodes.map((n) => n.id)).toEqual(["input"]);
    expect(st().spec.edges).toEqual([]);
  });
});

describe("undo and redo", () => {
  it("undoes and redoes add, connect and delete", () => {
    st().addNode("input");
    st().addNode("llm");
    st().connect("input", "llm");
    const full = st().spec;
    st().deleteElements(["llm"], []);
    expect(st().spec.nodes).toHaveLength(1);
    st().undo();
    expect(st().spec).toEqual(full);
    st().undo();
    expect(st().spec.edges).toEqual([]);
    st().undo();
    st().undo();
    expect(st().spec.nodes).toHaveLength(0);
    expect(st().past).toHaveLength(0);
    st().redo();
    st().redo();
    st().redo();
    expect(st().spec).toEqual(full);
    st().redo();
    expect(st().spec.nodes).toHaveLength(1);
    st().redo(); // nothing left
    expect(st().spec.nodes).toHaveLength(1);
  });

  it("a new change clears the redo stack", () => {
    st().addNode("input");
    st().addNode("llm");
    st().undo();
    expect(st().future).toHaveLength(1);
    st().addNode("db");
    expect(st().future).toHaveLength(0);
  });

  it("typing into one field is one undo step", () => {
    st().addNode("llm");
    const n = st().spec.nodes[0];
    for (const p of ["A", "An", "Ans"]) st().updateNode("llm", { ...n, config: { prompt: p } } as never);
    expect(st().past).toHaveLength(2); // add + the typing
    st().undo();
    expect(st().spec.nodes[0]).toEqual(n);
  });

  it("a drag is one undo step and writes the position into the spec", () => {
    st().loadSpec(readTriage());
    const before = st().spec;
    st().moveNodes({ writer: { x: 10, y: 10 } }, false);
    st().moveNodes({ writer: { x: 20, y: 30.4 } }, false);
    st().moveNodes({ writer: { x: 20, y: 30.4 } }, true);
    expect(st().spec.nodes.find((n) => n.id === "writer")?.position).toEqual({ x: 20, y: 30 });
    expect(st().spec.nodes.find((n) => n.id === "router")?.position).toBeUndefined();
    st().undo();
    expect(st().spec).toBe(before);
  });
});

describe("JSON round trip", () => {
  it("an imported spec exports unchanged (no defaults, no positions added)", () => {
    const triage = readTriage();
    st().loadSpec(JSON.parse(JSON.stringify(triage)));
    expect(JSON.parse(specText(st().spec))).toEqual(triage);
    // Canvas positions exist for every node without touching the spec.
    expect(Object.keys(st().layout).sort()).toEqual(triage.nodes.map((n) => n.id).sort());
    // Selecting and measuring nodes changes nothing either.
    st().select(["router"], []);
    st().setMeasured({ router: { width: 220, height: 80 } });
    expect(JSON.parse(specText(st().spec))).toEqual(triage);
  });

  it("keeps keys it does not know", () => {
    const triage = readTriage() as unknown as Record<string, unknown>;
    const odd = { ...triage, x_extra: { a: 1 }, nodes: (triage.nodes as object[]).map((n, i) => (i === 0 ? { ...n, x_note: "hi" } : n)) };
    st().loadSpec(odd as never);
    st().addNode("llm");
    st().undo();
    expect(JSON.parse(specText(st().spec))).toEqual(odd);
  });

  it("JSON edits apply to the canvas and keep positions of untouched nodes", () => {
    st().loadSpec(readTriage());
    const layoutBefore = st().layout;
    const edited = JSON.parse(specText(st().spec));
    edited.nodes.push({ id: "extra", type: "llm", config: { prompt: "hi" } });
    edited.edges.push({ from: "final", to: "extra" });
    st().applyJson(edited);
    expect(st().spec.nodes.map((n) => n.id)).toContain("extra");
    expect(st().layout.router).toBe(layoutBefore.router);
    expect(st().layout.extra).toBeDefined();
    expect(deriveEdges(st()).some((e) => e.source === "final" && e.target === "extra")).toBe(true);
    st().undo();
    expect(st().spec.nodes.map((n) => n.id)).not.toContain("extra");
  });

  it("auto-layout writes positions for every node", () => {
    st().loadSpec(readTriage());
    st().autoLayout();
    for (const n of st().spec.nodes) expect(n.position).toEqual(st().layout[n.id]);
    const x = Object.fromEntries(st().spec.nodes.map((n) => [n.id, n.position!.x]));
    expect(x.input).toBeLessThan(x.router);
    expect(x.router).toBeLessThan(x.writer);
    expect(x.writer).toBeLessThan(x.final);
  });
});

describe("validation problems", () => {
  it("maps API error paths to the node, edge, queue or source they name", () => {
    const spec = readTriage();
    const { index, problems } = indexProblems(spec, [
      { path: "nodes[2].source", message: "unknown source" },
      { path: "edges[3].condition", message: "bad condition" },
      { path: "queues[1].burst_size", message: "too small" },
      { path: "sources[2].dsn_env", message: "bad name" },
      { path: "start_node", message: "missing" },
    ]);
    expect(index.nodes.writer.map((p) => p.message)).toEqual(["unknown source"]);
    expect(problems[0].target).toEqual({ kind: "node", id: "writer", field: "source" });
    expect(index.edges[3][0].target).toEqual({ kind: "edge", index: 3, field: "condition" });
    expect(index.queues.images[0].message).toBe("too small");
    expect(index.sources.shop[0].target).toEqual({ kind: "source", id: "shop", field: "dsn_env" });
    expect(index.workflow[0].target).toEqual({ kind: "workflow", field: "start_node" });
  });

  it("marks the node on the canvas", () => {
    st().loadSpec(readTriage());
    const { problems, index } = indexProblems(st().spec, [{ path: "nodes[2].source", message: "unknown source" }]);
    store.setState({ validation: { status: "done", valid: false, problems, index, stale: false, message: null } });
    const nodes = makeNodeDeriver()(st());
    expect(nodes.find((n) => n.id === "writer")?.data.problems).toHaveLength(1);
    expect(nodes.find((n) => n.id === "router")?.data.problems).toHaveLength(0);
  });
});

describe("canvas derivation", () => {
  it("reuses node objects that did not change (cheap drags)", () => {
    st().loadSpec(readTriage());
    const derive = makeNodeDeriver();
    const a = derive(st());
    st().moveNodes({ writer: { x: 1, y: 2 } }, false);
    const b = derive(st());
    const changed = b.filter((n, i) => n !== a[i]).map((n) => n.id);
    expect(changed).toEqual(["writer"]);
  });
});
