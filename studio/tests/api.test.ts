/** lib/api.ts: error bodies, validation answers, and following a run (SSE, else polling). */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import * as api from "@/lib/api";
import type { RunRecord, RunStep } from "@/lib/types";

type Listener = (ev: MessageEvent) => void;

class FakeEventSource {
  static last: FakeEventSource | null = null;
  listeners: Record<string, Listener[]> = {};
  onerror: ((ev: Event) => void) | null = null;
  closed = false;
  constructor(readonly url: string) {
    FakeEventSource.last = this;
  }
  addEventListener(type: string, fn: Listener) {
    (this.listeners[type] ??= []).push(fn);
  }
  emit(type: string, data: unknown) {
    for (const fn of this.listeners[type] ?? []) fn({ data: JSON.stringify(data) } as MessageEvent);
  }
  close() {
    this.closed = true;
  }
}

const json = (status: number, body: unknown) =>
  new Response(body === undefined ? null : JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

function handlers() {
  const seen = { steps: [] as RunStep[], tokens: "", end: null as RunRecord | null, snapshots: 0, transport: [] as string[] };
  const h: api.RunWatchHandlers = {
    onStep: (s) => seen.steps.push(s),
    onToken: (_n, d) => (seen.tokens += d),
    onEnd: (r) => (seen.end = r),
    onSnapshot: () => seen.snapshots++,
    onTransport: (k) => seen.transport.push(k),
  };
  return { seen, h };
}

beforeEach(() => {
  vi.stubGlobal("EventSource", FakeEventSource);
  api.setApiToken(null, false); // no token: EventSource, and no GET /auth/local-token (tests/auth.test.ts)
});
afterEach(() => {
  vi.unstubAllGlobals();
  vi.useRealTimers();
});

describe("requests", () => {
  it("treats 422 from validate as an answer with errors", async () => {
    vi.stubGlobal("fetch", vi.fn(async () => json(422, { detail: "invalid", valid: false, errors: [{ path: "nodes[0].id", message: "bad" }] })));
    expect(await api.validateSpec({})).toEqual({ valid: false, errors: [{ path: "nodes[0].id", message: "bad" }] });
  });

  it("raises ApiError with the detail and the errors of a 4xx", async () => {
    vi.stubGlobal("fetch", vi.fn(async () => json(422, { detail: "invalid workflow spec", errors: [{ path: "start_node", message: "missing" }] })));
    const err = await api.saveWorkflow({ id: "x", name: "x", start_node: "", nodes: [] }).catch((e) => e);
    expect(err).toBeInstanceOf(api.ApiError);
    expect(err.status).toBe(422);
    expect(err.message).toContain("invalid workflow spec");
    expect(err.errors).toEqual([{ path: "start_node", message: "missing" }]);
  });

  it("says when the API cannot be reached", async () => {
    vi.stubGlobal("fetch", vi.fn(async () => Promise.reject(new TypeError("Failed to fetch"))));
    await expect(api.listWorkflows()).rejects.toThrow(/cannot reach the AgentFlow API/);
  });
});

describe("watchRun", () => {
  it("follows steps, tokens and the end over server-sent events", () => {
    const { seen, h } = handlers();
    api.watchRun("r1", h);
    const es = FakeEventSource.last!;
    expect(es.url).toBe("/runs/r1/events");
    es.emit("step", { node_id: "a", status: "running" });
    es.emit("token", { node_id: "a", delta: "Hel" });
    es.emit("token", { node_id: "a", delta: "lo" });
    es.emit("step", { node_id: "a", status: "succeeded", duration_ms: 5 });
    es.emit("end", { run_id: "r1", status: "succeeded", steps: [] });
    expect(seen.steps.map((s) => s.status)).toEqual(["running", "succeeded"]);
    expect(seen.tokens).toBe("Hello");
    expect(seen.end?.status).toBe("succeeded");
    expect(es.closed).toBe(true);
    expect(seen.transport).toEqual(["sse"]);
  });

  it("falls back to polling every 500 ms when the stream breaks", async () => {
    vi.useFakeTimers();
    const states = ["running", "running", "succeeded"];
    const fetchMock = vi.fn(async () => json(200, { run_id: "r2", status: states.shift() ?? "succeeded", steps: [] }));
    vi.stubGlobal("fetch", fetchMock);
    const { seen, h } = handlers();
    api.watchRun("r2", h);
    FakeEventSource.last!.onerror!(new Event("error"));
    expect(FakeEventSource.last!.closed).toBe(true);
    await vi.advanceTimersByTimeAsync(0);
    expect(fetchMock).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(500);
    await vi.advanceTimersByTimeAsync(500);
    expect(fetchMock).toHaveBeenCalledTimes(3);
    expect(seen.end?.status).toBe("succeeded");
    expect(seen.snapshots).toBe(3);
    await vi.advanceTimersByTimeAsync(2000);
    expect(fetchMock).toHaveBeenCalledTimes(3); // stopped at the terminal status
    expect(seen.transport).toEqual(["sse", "poll"]);
  });

  it("polls when EventSource does not exist, and stops when asked", async () => {
    vi.useFakeTimers();
    vi.stubGlobal("EventSource", undefined);
    const fetchMock = vi.fn(async () => json(200, { run_id: "r3", status: "running", steps: [] }));
    vi.stubGlobal("fetch", fetchMock);
    const { seen, h } = handlers();
    const stop = api.watchRun("r3", h);
    await vi.advanceTimersByTimeAsync(1100);
    expect(fetchMock.mock.calls.length).toBeGreaterThanOrEqual(3);
    stop();
    const n = fetchMock.mock.calls.length;
    await vi.advanceTimersByTimeAsync(2000);
    expect(fetchMock.mock.calls.length).toBe(n);
    expect(seen.end).toBeNull();
  });
});
