/** lib/api.ts auth: the bearer token on every request, the local token, SSE over fetch. */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import * as api from "@/lib/api";
import type { RunRecord, RunStep } from "@/lib/types";

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

type Call = { url: string; auth: string | null };

function recordingFetch(answer: (url: string, auth: string | null) => Response | Promise<Response>) {
  const calls: Call[] = [];
  const fn = vi.fn(async (url: string, init?: RequestInit) => {
    const headers = (init?.headers ?? {}) as Record<string, string>;
    const auth = headers.Authorization ?? null;
    calls.push({ url, auth });
    return answer(url, auth);
  });
  return { fn, calls };
}

function sseResponse(chunks: string[]): Response {
  const enc = new TextEncoder();
  const body = new ReadableStream<Uint8Array>({
    start(ctrl) {
      for (const c of chunks) ctrl.enqueue(enc.encode(c));
      ctrl.close();
    },
  });
  return new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } });
}

beforeEach(() => api.resetApiAuth());
afterEach(() => {
  vi.unstubAllGlobals();
  api.resetApiAuth();
});

describe("tokens", () => {
  it("asks the server for its local token once, then sends it on every request", async () => {
    const { fn, calls } = recordingFetch((url) =>
      url.endsWith("/auth/local-token") ? json(200, { token: "local-jwt", role: "admin" }) : json(200, { items: [], next_cursor: null }),
    );
    vi.stubGlobal("fetch", fn);
    await api.listWorkflows();
    await api.listSources();
    expect(calls.map((c) => c.url)).toEqual(["/auth/local-token", "/workflows?limit=50", "/sources"]);
    expect(calls[0].auth).toBeNull();
    expect(calls[1].auth).toBe("Bearer local-jwt");
    expect(calls[2].auth).toBe("Bearer local-jwt");
    expect(api.currentApiToken()).toBe("local-jwt");
  });

  it("sends no token when the server has no local token for us", async () => {
    const { fn, calls } = recordingFetch((url) =>
      url.endsWith("/auth/local-token") ? json(404, { detail: "no local token", errors: [] }) : json(200, { items: [] }),
    );
    vi.stubGlobal("fetch", fn);
    await api.listSources();
    expect(calls[1]).toEqual({ url: "/sources", auth: null });
  });

  it("uses a token it was given and never asks for the local one", async () => {
    const { fn, calls } = recordingFetch(() => json(200, { items: [] }));
    vi.stubGlobal("fetch", fn);
    api.setApiToken("given-jwt", false);
    await api.listSources();
    expect(calls).toEqual([{ url: "/sources", auth: "Bearer given-jwt" }]);
  });

  it("drops a token that gets a 401 and tries once more with a fresh one", async () => {
    let issued = 0;
    let accept = "Bearer local-1";
    const { fn, calls } = recordingFetch((url, auth) => {
      if (url.endsWith("/auth/local-token")) return json(200, { token: `local-${++issued}` });
      return auth === accept ? json(200, { items: [] }) : json(401, { detail: "token expired", errors: [] });
    });
    vi.stubGlobal("fetch", fn);
    api.setApiToken("stale", false);
    await api.listSources();
    expect(calls.map((c) => c.auth)).toEqual(["Bearer stale", null, "Bearer local-1"]);
    // nothing is accepted any more: one retry only, then the error says how to log in
    accept = "none";
    const err = await api.listSources().catch((e) => e);
    expect(err).toBeInstanceOf(api.ApiError);
    expect(err.status).toBe(401);
    expect(err.message).toMatch(/#token=/);
    expect(calls.slice(3).map((c) => c.auth)).toEqual(["Bearer local-1", null, "Bearer local-2"]);
  });
});

describe("watchRun with a token", () => {
  it("reads the event stream over fetch with the Authorization header", async () => {
    const { fn, calls } = recordingFetch(() =>
      sseResponse([
        ": ping\r\n\r\n",
        'event: step\r\ndata: {"node_id": "a", "status": "running"}\r\n\r\n',
        'event: token\r\ndata: {"node_id": "a", "delta": "Hel"}\r',
        '\n\r\nevent: token\ndata: {"node_id": "a", "delta": "lo"}\n\n',
        'event: step\r\ndata: {"node_id": "a", "status": "succeeded"}\r\n\r\n',
        'event: end\r\ndata: {"run_id": "r1", "status": "succeeded",\r\ndata: "steps": []}\r\n\r\n',
      ]),
    );
    vi.stubGlobal("fetch", fn);
    vi.stubGlobal("EventSource", undefined);
    api.setApiToken("jwt-1", false);
    const seen = { steps: [] as RunStep[], tokens: "", end: null as RunRecord | null, transport: [] as string[] };
    await new Promise<void>((resolve) => {
      api.watchRun("r1", {
        onStep: (s) => seen.steps.push(s),
        onToken: (_n, d) => (seen.tokens += d),
        onEnd: (r) => {
          seen.end = r;
          resolve();
        },
        onSnapshot: () => undefined,
        onTransport: (k) => seen.transport.push(k),
      });
    });
    expect(calls[0]).toEqual({ url: "/runs/r1/events", auth: "Bearer jwt-1" });
    expect(seen.steps.map((s) => s.status)).toEqual(["running", "succeeded"]);
    expect(seen.tokens).toBe("Hello");
    expect(seen.end?.status).toBe("succeeded");
    expect(seen.transport).toEqual(["sse"]);
  });

  it("falls back to polling (with the token) when the stream is refused", async () => {
    const { fn, calls } = recordingFetch((url) =>
      url.endsWith("/events") ? json(503, { detail: "down", errors: [] }) : json(200, { run_id: "r2", status: "succeeded", steps: [] }),
    );
    vi.stubGlobal("fetch", fn);
    api.setApiToken("jwt-2", false);
    const end = await new Promise<RunRecord>((resolve) => {
      api.watchRun("r2", { onStep: () => undefined, onToken: () => undefined, onEnd: resolve, onSnapshot: () => undefined });
    });
    expect(end.status).toBe("succeeded");
    expect(calls.map((c) => [c.url, c.auth])).toEqual([
      ["/runs/r2/events", "Bearer jwt-2"],
      ["/runs/r2", "Bearer jwt-2"],
    ]);
  });
});
