/**
 * Versions (diff highlighting, restore), trace replay (cursor, state after a step, re-run),
 * streaming (token accumulation) and the dashboard, against fixture answers of the API.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import * as api from "@/lib/api";
import { deriveEdges, makeNodeDeriver } from "@/lib/flow";
import { diffSize, diffSpec, edgeEnds, edgeMarks, nodeMarks, normalizeDiff } from "@/lib/history";
import { bucketTime, niceMax, normalizeSummary, rangeQuery, successRate } from "@/lib/metrics";
import { clampCursor, normalizeTrace, replayNodeStates, stateAfter, stateBefore, stateDelta, stepsUpTo } from "@/lib/replay";
import type { RunTrace, WorkflowSpec } from "@/lib/types";
import { appendToken, createWorkflowStore, REPLAY_STEP_MS, type RunView } from "@/lib/useWorkflowStore";

// ------------------------------------------------------------------ fixtures

const V1: WorkflowSpec = {
  id: "wf",
  name: "WF",
  start_node: "input",
  nodes: [
    { id: "input", type: "input" },
    { id: "writer", type: "llm", config: { prompt: "Answer: {user_input}" } },
    { id: "painter", type: "image", config: { prompt: "{user_input}" } },
  ],
  edges: [
    { from: "input", to: "writer" },
    { from: "input", to: "painter" },
  ],
};

const V2: WorkflowSpec = {
  ...V1,
  name: "WF renamed",
  nodes: [
    { id: "input", type: "input" },
    { id: "writer", type: "llm", config: { prompt: "Answer briefly: {user_input}" } },
    { id: "final", type: "aggregator", config: { fields: ["text_result"] } },
  ],
  edges: [
    { from: "input", to: "writer" },
    { from: "writer", to: "final" },
  ],
};

const DIFF = {
  from: 1,
  to: 2,
  nodes: { added: ["final"], removed: ["painter"], changed: [{ id: "writer", fields: ["config.prompt"] }] },
  edges: { added: [{ from: "writer", to: "final" }], removed: [{ from: "input", to: "painter" }] },
  queues: { added: [], removed: [], changed: [] },
  sources: { added: [], removed: [], changed: [] },
  top: ["name"],
};

const TRACE: RunTrace = {
  run_id: "run-1",
  workflow_id: "wf",
  workflow_version: 2,
  status: "succeeded",
  initial_state: { user_input: "hi", metadata: {} },
  steps: [
    { index: 2, node_id: "final", node_type: "aggregator", status: "succeeded", input: { text_result: "A" }, output: { final_output: { text_result: "A" } }, state_after: { user_input: "hi", metadata: {}, text_result: "A", final_output: { text_result: "A" } } },
    { index: 0, node_id: "input", node_type: "input", status: "succeeded", input: {}, output: {}, state_after: { user_input: "hi", metadata: {} } },
    { index: 1, node_id: "writer", node_type: "llm", status: "succeeded", tokens: 12, input: { user_input: "hi" }, output: { text_result: "A" }, state_after: { user_input: "hi", metadata: {}, text_result: "A" } },
  ],
  final_state: { user_input: "hi", metadata: {}, text_result: "A", final_output: { text_result: "A" } },
};

const SUMMARY = {
  runs: { total: 3, by_status: { succeeded: 2, failed: 1 } },
  tokens: 120,
  cost: 0.0012,
  latency_ms: { p50: 40, p95: 90 },
  per_workflow: [{ workflow_id: "wf", runs: 3, tokens: 120, cost: 0.0012, p50_ms: 40, p95_ms: 90 }],
  per_node: [{ workflow_id: "wf", node_id: "writer", node_type: "llm", steps: 3, tokens: 120, cost: 0.0012, p50_ms: 20, p95_ms: 30 }],
  per_source: [{ source_id: "gpt", calls: 3, tokens: 120, cost: 0.0012, p50_ms: 20, p95_ms: 30 }],
  timeseries: [
    { bucket: "2026-01-01T10:00:00Z", runs: 2, tokens: 80, cost: 0.0008, p50_ms: 40 },
    { bucket: "2026-01-01T09:00:00Z", runs: 1, tokens: 40, cost: 0.0004, p50_ms: null },
  ],
  queue_wait_ms: { p50: 3, p95: 8 },
};

const json = (status: number, body: unknown) => new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

type Route = (url: URL, init: RequestInit | undefined) => Response | undefined;
/** A fake API: the first route that answers wins; every call is recorded. */
function fakeApi(...routes: Route[]) {
  const calls: { method: string; path: string; body: unknown }[] = [];
  const fetchMock = vi.fn(async (input: string, init?: RequestInit) => {
    const url = new URL(input, "http://studio.test");
    calls.push({ method: init?.method ?? "GET", path: url.pathname + url.search, body: init?.body ? JSON.parse(String(init.body)) : undefined });
    for (const r of routes) {
      const res = r(url, init);
      if (res) return res;
    }
    return json(404, { detail: `no route ${url.pathname}` });
  });
  vi.stubGlobal("fetch", fetchMock);
  return calls;
}
const on = (method: string, path: string | RegExp, answer: (url: URL, body: unknown) => Response): Route => (url, init) =>
  (init?.method ?? "GET") === method && (typeof path === "string" ? url.pathname === path : path.test(url.pathname)) ? answer(url, init?.body ? JSON.parse(String(init.body)) : undefined) : undefined;

class QuietEventSource {
  static urls: string[] = [];
  onerror: unknown = null;
  constructor(readonly url: string) {
    QuietEventSource.urls.push(url);
  }
  addEventListener() {}
  close() {}
}

let store: ReturnType<typeof createWorkflowStore>;
const st = () => store.getState();

beforeEach(() => {
  store = createWorkflowStore();
  vi.stubGlobal("EventSource", QuietEventSource);
  api.setApiToken(null, false); // no bearer token: no GET /auth/local-token among the calls
});
afterEach(() => {
  vi.unstubAllGlobals();
  vi.useRealTimers();
});

const versionRoutes = () => [
  on("GET", "/workflows/wf/versions/1/diff/2", () => json(200, DIFF)),
  on("GET", "/workflows/wf/versions/1", () => json(200, { version: 1, spec: V1 })),
  on("GET", "/workflows/wf/versions/2", () => json(200, { version: 2, spec: V2 })),
  on("GET", "/workflows/wf/versions", () => json(200, { items: [{ version: 3 }, { version: 2 }, { version: 1 }] })),
  on("GET", "/workflows", () => json(200, { items: [] })),
];

// ------------------------------------------------------------------ versions

describe("version diff", () => {
  it("normalizes a diff with missing lists and string changes", () => {
    const d = normalizeDiff({ from: 1, to: 2, nodes: { changed: ["writer"] } });
    expect(d.nodes).toEqual({ added: [], removed: [], changed: [{ id: "writer", fields: [] }] });
    expect(d.edges).toEqual({ added: [], removed: [] });
    expect(diffSize(d)).toBe(1);
    expect(diffSize(normalizeDiff(DIFF))).toBe(6);
  });

  it("reads edges as objects, pairs or text", () => {
    expect(edgeEnds({ from: "a", to: ["b", "c"], condition: "x == 1" })).toEqual({ from: "a", to: ["b", "c"], condition: "x == 1" });
    expect(edgeEnds(["a", "b"])).toEqual({ from: "a", to: ["b"], condition: null });
    expect(edgeEnds("node-1 -> node-2")).toMatchObject({ from: "node-1", to: ["node-2"] });
    expect(edgeEnds("router -> [writer, painter] if intent == 'both'")).toMatchObject({ from: "router", to: ["writer", "painter"], condition: "intent == 'both'" });
    expect(edgeEnds("nonsense")).toBeNull();
  });

  it("marks nodes and edges; a removed-and-added edge changed", () => {
    const d = normalizeDiff(DIFF);
    expect(nodeMarks(d)).toEqual({ final: "added", painter: "removed", writer: "changed" });
    expect(edgeMarks(d)).toEqual({ "writer\u0000final": "added", "input\u0000painter": "removed" });
    const both = normalizeDiff({ ...DIFF, edges: { added: ["a -> b"], removed: ["a -> b"] } });
    expect(edgeMarks(both)).toEqual({ "a\u0000b": "changed" });
    // One edge became two with other conditions: still changed, not removed.
    const twice = normalizeDiff({ ...DIFF, edges: { added: [{ from: "a", to: "b" }], removed: [{ from: "a", to: "b", condition: "x" }, { from: "a", to: "b", condition: "y" }] } });
    expect(edgeMarks(twice)).toEqual({ "a\u0000b": "changed" });
  });

  it("draws the newer version with ghosts of removed nodes and their edges", () => {
    const spec = diffSpec(V1, V2, normalizeDiff(DIFF));
    expect(spec.nodes.map((n) => n.id)).toEqual(["input", "writer", "final", "painter"]);
    expect(spec.edges).toEqual([...V2.edges!, { from: "input", to: "painter" }]);
    expect(diffSpec(V1, V2, normalizeDiff({ from: 1, to: 2 }))).toBe(V2);
  });

  it("highlights added, removed and changed nodes and edges on the canvas", async () => {
    fakeApi(...versionRoutes());
    st().loadSpec(V2, { history: false });
    store.setState({ savedId: "wf", savedVersion: 2, dirty: false });
    await st().compareVersions(1, 2);
    const c = st().compare!;
    expect(c.status).toBe("done");
    expect(c.diff!.nodes.changed).toEqual([{ id: "writer", fields: ["config.prompt"] }]);
    const o = st().overlay!;
    expect(o.kind).toBe("diff");
    expect(st().tab).toBe("history");
    // The canvas view: what WorkflowCanvas derives from the overlay.
    const view = { spec: o.spec, layout: o.layout, measured: {}, selectedNodes: [], selectedEdges: [], runView: st().runView, validation: st().validation };
    const nodes = makeNodeDeriver()(view, { marks: o.marks, edgeMarks: o.edgeMarks, readOnly: true });
    expect(Object.fromEntries(nodes.map((n) => [n.id, n.data.diff]))).toEqual({ input: null, writer: "changed", final: "added", painter: "removed" });
    expect(nodes.every((n) => n.draggable === false)).toBe(true);
    const edges = deriveEdges(view, { marks: o.marks, edgeMarks: o.edgeMarks, readOnly: true });
    expect(edges.map((e) => [e.source, e.target, e.data!.diff])).toEqual([
      ["input", "writer", null],
      ["writer", "final", "added"],
      ["input", "painter", "removed"],
    ]);
    // The document is untouched; closing the diff shows it again.
    expect(st().spec).toBe(V2);
    expect(st().past).toEqual([]);
    st().closeCompare();
    expect(st().overlay).toBeNull();
    expect(st().compare).toBeNull();
  });

  it("undo waits while a diff is on show; an edit of the document hides the diff", async () => {
    fakeApi(...versionRoutes());
    st().loadSpec(V2, { history: false });
    store.setState({ savedId: "wf", savedVersion: 2, dirty: false });
    st().addNode("image");
    await st().compareVersions(1, 2);
    st().undo();
    expect(st().spec.nodes.map((n) => n.id)).toContain("image");
    st().addNode("db");
    expect(st().overlay).toBeNull();
    expect(st().compare?.status).toBe("done");
  });

  it("restores a version: the rollback answer becomes the open document", async () => {
    const calls = fakeApi(on("POST", "/workflows/wf/rollback", () => json(200, { id: "wf", name: "WF", version: 3, spec: V1 })), ...versionRoutes());
    st().loadSpec(V2, { history: false });
    store.setState({ savedId: "wf", savedVersion: 2, dirty: false });
    await st().compareVersions(1, 2);
    expect(await st().restoreVersion(1)).toBe(true);
    expect(calls.find((c) => c.method === "POST")).toEqual({ method: "POST", path: "/workflows/wf/rollback", body: { version: 1 } });
    expect(st().spec).toEqual(V1);
    expect(st().savedVersion).toBe(3);
    expect(st().dirty).toBe(false);
    expect(st().overlay).toBeNull();
    expect(st().compare).toBeNull();
    expect(Object.keys(st().layout).sort()).toEqual(["input", "painter", "writer"]);
  });
});

// ------------------------------------------------------------------ replay

describe("trace replay", () => {
  const trace = normalizeTrace(TRACE);

  it("orders the steps and clamps the cursor", () => {
    expect(trace.steps.map((s) => s.node_id)).toEqual(["input", "writer", "final"]);
    expect(clampCursor(trace, -3)).toBe(0);
    expect(clampCursor(trace, 9)).toBe(2);
    expect(clampCursor(null, 4)).toBe(0);
  });

  it("selects the state after and before a step, and the step's delta", () => {
    expect(stateAfter(trace, 1)).toEqual({ user_input: "hi", metadata: {}, text_result: "A" });
    expect(stateBefore(trace, 1)).toEqual({ user_input: "hi", metadata: {} });
    expect(stateBefore(trace, 0)).toEqual(TRACE.initial_state);
    expect(stateAfter(trace, 2)).toEqual(TRACE.final_state);
    expect(stateDelta(stateBefore(trace, 1), stateAfter(trace, 1))).toEqual({ added: ["text_result"], changed: [], removed: [] });
    expect(stateDelta({ a: 1, b: 2 }, { a: 2 })).toEqual({ added: [], changed: ["a"], removed: ["b"] });
  });

  it("folds outputs when a step has no state_after", () => {
    const bare: RunTrace = { ...trace, steps: trace.steps.map(({ state_after: _s, ...rest }) => rest) };
    expect(stateAfter(bare, 1)).toEqual({ user_input: "hi", metadata: {}, text_result: "A" });
    expect(stateAfter(bare, 2)).toEqual({ user_input: "hi", metadata: {}, text_result: "A", final_output: { text_result: "A" } });
  });

  it("shows the current node, the done ones and the pending ones", () => {
    expect(replayNodeStates(trace, 1, ["input", "writer", "final", "painter"])).toEqual({ input: "done", writer: "current", final: "pending", painter: "pending" });
    const failed: RunTrace = { ...trace, steps: [{ ...trace.steps[0], status: "failed" }, ...trace.steps.slice(1)] };
    expect(replayNodeStates(failed, 2, ["input"])).toEqual({ input: "failed" });
    expect(stepsUpTo(trace, 1).order).toEqual(["input", "writer"]);
  });

  it("opens a trace, steps, scrubs, plays to the end and stops", async () => {
    vi.useFakeTimers();
    fakeApi(on("GET", "/runs/run-1/trace", () => json(200, TRACE)), on("GET", "/workflows/wf/versions/2", () => json(200, { version: 2, spec: V2 })));
    await st().openReplay("run-1");
    expect(st().tab).toBe("replay");
    expect(st().replay.status).toBe("done");
    expect(st().replay.cursor).toBe(0);
    expect(st().overlay?.kind).toBe("replay");
    expect(st().overlay?.spec).toEqual(V2);
    st().replayStep(1);
    expect(st().replay.cursor).toBe(1);
    st().replayStep(-5);
    expect(st().replay.cursor).toBe(0);
    st().replaySeek(99);
    expect(st().replay.cursor).toBe(2);
    st().replayPlay(); // at the end: starts over
    expect(st().replay).toMatchObject({ playing: true, cursor: 0 });
    await vi.advanceTimersByTimeAsync(REPLAY_STEP_MS);
    expect(st().replay.cursor).toBe(1);
    st().replayPause();
    await vi.advanceTimersByTimeAsync(REPLAY_STEP_MS * 3);
    expect(st().replay.cursor).toBe(1);
    st().replayPlay();
    await vi.advanceTimersByTimeAsync(REPLAY_STEP_MS * 5);
    expect(st().replay).toMatchObject({ playing: false, cursor: 2 });
    st().closeReplay();
    expect(st().overlay).toBeNull();
    expect(st().replay.status).toBe("idle");
  });

  it("re-runs from the current node with the edited state and follows the new run", async () => {
    const calls = fakeApi(
      on("GET", "/runs/run-1/trace", () => json(200, TRACE)),
      on("GET", "/workflows/wf/versions/2", () => json(200, { version: 2, spec: V2 })),
      on("POST", "/runs/run-1/rerun", () => json(202, { run_id: "run-2", status: "queued", parent_run_id: "run-1" })),
    );
    QuietEventSource.urls = [];
    await st().openReplay("run-1");
    st().replaySeek(1);
    const id = await st().rerunFrom("writer", { user_input: "edited" });
    expect(id).toBe("run-2");
    expect(calls.find((c) => c.method === "POST")).toEqual({ method: "POST", path: "/runs/run-1/rerun", body: { from_node: "writer", state: { user_input: "edited" }, stream: true } });
    expect(st().tab).toBe("run");
    expect(st().runView.run).toMatchObject({ run_id: "run-2", parent_run_id: "run-1", status: "queued" });
    expect(st().runView.watching).toBe(true);
    expect(QuietEventSource.urls).toEqual(["/runs/run-2/events"]);
    expect(st().overlay).toBeNull();
  });
});

// ------------------------------------------------------------------ streaming

describe("streaming tokens", () => {
  const empty: RunView = { run: null, steps: {}, order: [], tokens: {}, transport: null, watching: false, error: null };

  it("appends deltas per node, and a token before the step's start shows a running step", () => {
    let rv = appendToken(empty, "writer", "Hel");
    rv = appendToken(rv, "writer", "lo");
    rv = appendToken(rv, "other", "x");
    expect(rv.tokens).toEqual({ writer: "Hello", other: "x" });
    expect(rv.order).toEqual(["writer", "other"]);
    expect(rv.steps.writer.status).toBe("running");
    const withStep = appendToken({ ...empty, order: ["writer"], steps: { writer: { node_id: "writer", status: "running", attempt: 1 } } }, "writer", "a");
    expect(withStep.steps.writer.attempt).toBe(1);
  });

  it("a streaming node is marked on the canvas while its step runs", () => {
    st().loadSpec(V2, { history: false });
    const runView = appendToken(empty, "writer", "Hi");
    const nodes = makeNodeDeriver()({ ...st(), runView });
    expect(nodes.find((n) => n.id === "writer")!.data.streaming).toBe(true);
    const done = { ...runView, steps: { writer: { node_id: "writer", status: "succeeded" as const } } };
    expect(makeNodeDeriver()({ ...st(), runView: done }).find((n) => n.id === "writer")!.data.streaming).toBe(false);
  });

  it("starts runs with stream: true, and without it for a server that rejects the flag", async () => {
    const calls = fakeApi(on("POST", "/workflows/wf/runs", (_u, body) => ((body as { stream?: boolean }).stream ? json(422, { detail: "invalid", errors: [{ path: "stream", message: "extra fields not permitted" }] }) : json(202, { run_id: "r", status: "queued" }))));
    expect(await api.startRun("wf", { user_input: "x" }, { stream: true })).toEqual({ run_id: "r", status: "queued" });
    expect(calls.map((c) => c.body)).toEqual([{ input: { user_input: "x" }, stream: true }, { input: { user_input: "x" } }]);
  });

  it("the store starts runs streaming unless turned off", async () => {
    const calls = fakeApi(on("POST", "/workflows/wf/runs", () => json(202, { run_id: "r", status: "queued" })));
    st().loadSpec(V2, { history: false });
    store.setState({ savedId: "wf", savedVersion: 2, dirty: false });
    await st().startRun({ user_input: "x" });
    st().setStreamRuns(false);
    await st().startRun({ user_input: "y" });
    expect(calls.map((c) => c.body)).toEqual([{ input: { user_input: "x" }, stream: true }, { input: { user_input: "y" } }]);
  });
});

// ------------------------------------------------------------------ dashboard

describe("dashboard", () => {
  it("builds the range query and reads the summary", () => {
    const now = Date.parse("2026-01-01T12:00:00Z");
    expect(rangeQuery("1h", now, "wf")).toEqual({ from: "2026-01-01T11:00:00.000Z", to: "2026-01-01T12:00:00.000Z", workflow_id: "wf" });
    expect(rangeQuery("7d", now).from).toBe("2025-12-25T12:00:00.000Z");
    const s = normalizeSummary(SUMMARY);
    expect(s.timeseries.map((b) => b.bucket)).toEqual(["2026-01-01T09:00:00Z", "2026-01-01T10:00:00Z"]);
    expect(successRate(s)).toBeCloseTo(2 / 3);
    expect(normalizeSummary({}).runs).toEqual({ total: 0, by_status: {} });
    expect(normalizeSummary({}).latency_ms).toEqual({ p50: null, p95: null });
    expect(niceMax(0)).toBe(1);
    expect(niceMax(7)).toBe(10);
    expect(niceMax(120)).toBe(200);
    expect(bucketTime("not a date")).toBe(0);
  });

  it("loads the summary for the range and workflow picked", async () => {
    const calls = fakeApi(on("GET", "/metrics/summary", () => json(200, SUMMARY)));
    await st().loadDashboard();
    expect(st().dashboard.status).toBe("done");
    expect(st().dashboard.summary!.runs.total).toBe(3);
    st().setDashboardRange("1h");
    st().setDashboardWorkflow("wf");
    await vi.waitFor(() => expect(st().dashboard.status).toBe("done"));
    const last = new URL(calls[calls.length - 1].path, "http://x");
    expect(last.searchParams.get("workflow_id")).toBe("wf");
    const span = Date.parse(last.searchParams.get("to")!) - Date.parse(last.searchParams.get("from")!);
    expect(span).toBe(3_600_000);
  });

  it("reports a failing summary", async () => {
    fakeApi(on("GET", "/metrics/summary", () => json(503, { detail: "database unavailable" })));
    await st().loadDashboard();
    expect(st().dashboard.status).toBe("failed");
    expect(st().dashboard.error).toContain("database unavailable");
  });
});
