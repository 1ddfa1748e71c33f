/**
 * The only module that talks to the AgentFlow REST API. Same origin in production
 * (Studio is served by `agentflow serve`); `NEXT_PUBLIC_API_URL` points `npm run dev`
 * at a running server.
 */
import type {
  ApiProblem,
  MetricsQuery,
  MetricsSummary,
  Page,
  RerunQueued,
  RunInput,
  RunRecord,
  RunStartOptions,
  RunStep,
  RunSummary,
  RunTrace,
  SourceSpec,
  ValidationResult,
  VersionDiff,
  WorkflowRecord,
  WorkflowSpec,
  WorkflowSummary,
  WorkflowVersion,
} from "./types";

export const API_BASE = (process.env.NEXT_PUBLIC_API_URL ?? "").replace(/\/$/, "");

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly errors: ApiProblem[] = [],
    readonly body: unknown = null,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

function detailText(detail: unknown): string {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail))
    return detail
      .map((d) => (d && typeof d === "object" && "msg" in d ? String((d as { msg: unknown }).msg) : JSON.stringify(d)))
      .join("; ");
  return detail === undefined ? "" : JSON.stringify(detail);
}

// ------------------------------------------------------------------ auth
//
// Every request carries `Authorization: Bearer <token>` when Studio has a token:
// - one given by the user: open Studio as `/#token=<jwt>` (from `agentflow token create`),
//   or call setApiToken(); it is kept in localStorage ("agentflow.token");
// - else, the local admin token that a server in local auth mode (`make run`) hands to
//   this machine at `GET /auth/local-token`, asked for once per page load.
// A token that gets a 401 is dropped, and the request is tried once more.

const TOKEN_KEY = "agentflow.token";
let auth: { token: string | null; settled: boolean } = { token: null, settled: false };
let discovery: Promise<string | null> | null = null;

function storage(): Storage | null {
  try {
    return typeof localStorage === "undefined" ? null : localStorage;
  } catch {
    return null;
  }
}

/** Use `token` for every request (null: none, and do not ask the server for its local token). */
export function setApiToken(token: string | null, persist = true): void {
  auth = { token, settled: true };
  discovery = null;
  if (!persist) return;
  try {
    if (token) storage()?.setItem(TOKEN_KEY, token);
    else storage()?.removeItem(TOKEN_KEY);
  } catch {
    /* storage full or disabled: the token still holds for this page */
  }
}

/** Forget the token; the next request looks for one again. */
export function resetApiAuth(): void {
  auth = { token: null, settled: false };
  discovery = null;
}

/** The token known right now, without asking the server (null: none yet). */
export const currentApiToken = (): string | null => (auth.settled ? auth.token : null);

function tokenFromLocation(): string | null {
  if (typeof window === "undefined" || !window.location?.hash) return null;
  const params = new URLSearchParams(window.location.hash.slice(1));
  const token = params.get("token");
  if (!token) return null;
  params.delete("token");
  const rest = params.toString();
  const url = new URL(window.location.href);
  url.hash = rest ? `#${rest}` : "";
  window.history.replaceState(window.history.state, "", url); // keep it out of the address bar
  return token;
}

async function apiToken(): Promise<string | null> {
  if (auth.settled) return auth.token;
  const given = tokenFromLocation() ?? storage()?.getItem(TOKEN_KEY) ?? null;
  if (given) {
    setApiToken(given);
    return given;
  }
  discovery ??= (async () => {
    try {
      const res = await fetch(API_BASE + "/auth/local-token", { headers: { Accept: "application/json" }, cache: "no-store" });
      const data = res.ok ? ((await res.json()) as { token?: unknown }) : null;
      auth = { token: data && typeof data.token === "string" ? data.token : null, settled: true };
    } catch {
      auth = { token: null, settled: false }; // server unreachable: ask again next time
    }
    discovery = null;
    return auth.token;
  })();
  return discovery;
}

function authHeader(token: string | null): Record<string, string> {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function request<T>(method: string, path: string, body?: unknown, okStatuses: number[] = [], retried = false): Promise<T> {
  let res: Response;
  const token = await apiToken();
  try {
    res = await fetch(API_BASE + path, {
      method,
      headers: {
        ...(body === undefined ? { Accept: "application/json" } : { "Content-Type": "application/json", Accept: "application/json" }),
        ...authHeader(token),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, `cannot reach the AgentFlow API (${(e as Error).message})`);
  }
  if (res.status === 401 && token && !retried) {
    // expired or from another server: drop it and look again (e.g. a fresh local token)
    setApiToken(null);
    resetApiAuth();
    return request<T>(method, path, body, okStatuses, true);
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let data: unknown = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!res.ok && !okStatuses.includes(res.status)) {
    const d = (data && typeof data === "object" ? data : {}) as { detail?: unknown; errors?: ApiProblem[] };
    let msg = detailText(d.detail) || (typeof data === "string" && data) || `${res.status} ${res.statusText}`;
    if (res.status === 401) msg += " - open Studio as /#token=<token> (agentflow token create --tenant T --role R)";
    throw new ApiError(res.status, `${method} ${path}: ${msg}`, Array.isArray(d.errors) ? d.errors : [], data);
  }
  return data as T;
}

const q = (params: Record<string, string | number | undefined | null>) => {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") s.set(k, String(v));
  const str = s.toString();
  return str ? `?${str}` : "";
};
const enc = encodeURIComponent;

/** Who the API takes us for: the name shown to co-editors, and whether we may edit. */
export const getMe = () => request<{ subject: string; tenant: string; role: string; auth: string }>("GET", "/auth/me");

// ------------------------------------------------------------------ schema & validation

export const getSchema = () => request<Record<string, unknown>>("GET", "/schema");
/** Node types and source kinds, built-in and plugins, with their schemas and load errors. */
export const getNodeTypes = () => request<unknown>("GET", "/node-types");

/** 200 and 422 are both answers here: `{valid, errors}`. */
export async function validateSpec(spec: unknown): Promise<ValidationResult> {
  const r = await request<Partial<ValidationResult> & { detail?: unknown }>("POST", "/workflows/validate", spec, [422]);
  const errors = Array.isArray(r?.errors) ? r.errors : [];
  return { valid: Boolean(r?.valid) && errors.length === 0, errors };
}

// ------------------------------------------------------------------ workflows

export const listWorkflows = (limit = 50, cursor?: string | null) =>
  request<Page<WorkflowSummary>>("GET", `/workflows${q({ limit, cursor })}`);

export const getWorkflow = (id: string) => request<WorkflowRecord>("GET", `/workflows/${enc(id)}`);

/** Save a spec; the server stores it as a new version (first save creates the workflow). */
export const saveWorkflow = (spec: WorkflowSpec) => request<WorkflowRecord>("POST", "/workflows", spec);

export const replaceWorkflow = (id: string, spec: WorkflowSpec) => request<WorkflowRecord>("PUT", `/workflows/${enc(id)}`, spec);

export const deleteWorkflow = (id: string) => request<void>("DELETE", `/workflows/${enc(id)}`);

export const listVersions = (id: string) => request<Page<WorkflowVersion>>("GET", `/workflows/${enc(id)}/versions`);

export const getVersion = (id: string, version: number) =>
  request<WorkflowVersion & { spec: WorkflowSpec }>("GET", `/workflows/${enc(id)}/versions/${version}`);

/** The structural diff of two versions (nodes, edges, queues, sources, top-level fields). */
export const diffVersions = (id: string, from: number, to: number) =>
  request<VersionDiff>("GET", `/workflows/${enc(id)}/versions/${from}/diff/${to}`);

/** Make an old version current again: the server saves it as a new version. */
export const rollbackWorkflow = (id: string, version: number) =>
  request<WorkflowRecord>("POST", `/workflows/${enc(id)}/rollback`, { version });

// ------------------------------------------------------------------ runs

/**
 * Start a run of the saved workflow. `stream: true` asks LLM nodes to stream their tokens;
 * a server that does not know the flag (422 naming `stream`) gets the plain request.
 */
export async function startRun(workflowId: string, input: RunInput, opts: RunStartOptions = {}) {
  const path = `/workflows/${enc(workflowId)}/runs`;
  type Queued = { run_id: string; status: string };
  if (!opts.stream) return request<Queued>("POST", path, { input });
  try {
    return await request<Queued>("POST", path, { input, stream: true });
  } catch (e) {
    if (e instanceof ApiError && e.status === 422 && JSON.stringify(e.body ?? "").includes("stream")) return request<Queued>("POST", path, { input });
    throw e;
  }
}

export const listRuns = (workflowId: string, limit = 20) =>
  request<Page<RunSummary>>("GET", `/workflows/${enc(workflowId)}/runs${q({ limit })}`);

export const getRun = (runId: string) => request<RunRecord>("GET", `/runs/${enc(runId)}`);

export const cancelRun = (runId: string) => request<unknown>("POST", `/runs/${enc(runId)}/cancel`);
/** Answer a run that waits for a person; it then advances (202). */
export const resumeRun = (runId: string, node: string, choice: string, values: Record<string, unknown> = {}) =>
  request<{ run_id: string; status: string }>("POST", `/runs/${enc(runId)}/resume`, { node, choice, values });

/** Every step of a finished run with its input, output and the state after it. */
export const getTrace = (runId: string) => request<RunTrace>("GET", `/runs/${enc(runId)}/trace`);

/** Start a new run from `fromNode` with `state` (answers 202 with the new run's id). */
export const rerunFrom = (runId: string, fromNode: string, state: Record<string, unknown>, opts: RunStartOptions = {}) =>
  request<RerunQueued>("POST", `/runs/${enc(runId)}/rerun`, { from_node: fromNode, state, ...(opts.stream ? { stream: true } : {}) });

// ------------------------------------------------------------------ metrics

export const getMetricsSummary = (query: MetricsQuery) =>
  request<MetricsSummary>("GET", `/metrics/summary${q({ from: query.from, to: query.to, workflow_id: query.workflow_id })}`);

export interface RunWatchHandlers {
  onStep(step: RunStep): void;
  onToken(nodeId: string, delta: string): void;
  onEnd(run: RunRecord): void;
  /** Called with each polled snapshot when the event stream is not available. */
  onSnapshot(run: RunRecord): void;
  onTransport?(kind: "sse" | "poll"): void;
  onError?(message: string): void;
}

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

type StreamListener = (ev: MessageEvent) => void;

/**
 * The part of EventSource that watchRun uses, over fetch: EventSource cannot send an
 * Authorization header, and a token in the URL would end up in access logs.
 */
export class FetchEventSource {
  onerror: ((ev: Event) => void) | null = null;
  private listeners: Record<string, StreamListener[]> = {};
  private ctrl = new AbortController();
  private closed = false;
  private buf = "";
  private event = "";
  private data: string[] = [];

  constructor(readonly url: string, token: string | null) {
    void this.run(token);
  }

  addEventListener(type: string, fn: StreamListener): void {
    (this.listeners[type] ??= []).push(fn);
  }

  close(): void {
    this.closed = true;
    this.ctrl.abort();
  }

  private fail(): void {
    if (this.closed) return;
    this.closed = true;
    this.onerror?.(new Event("error"));
  }

  private async run(token: string | null): Promise<void> {
    try {
      const res = await fetch(this.url, {
        headers: { Accept: "text/event-stream", ...authHeader(token) },
        signal: this.ctrl.signal,
        cache: "no-store",
      });
      if (!res.ok || !res.body) return this.fail();
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.closed) break;
        this.feed(decoder.decode(value, { stream: true }));
      }
      this.fail(); // the stream ended (if `end` came first, close() was already called)
    } catch {
      this.fail();
    }
  }

  private feed(chunk: string): void {
    this.buf += chunk;
    for (;;) {
      const m = /\r\n|\n|\r/.exec(this.buf);
      if (!m) return;
      if (m[0] === "\r" && m.index === this.buf.length - 1) return; // "\r\n" split across chunks
      const line = this.buf.slice(0, m.index);
      this.buf = this.buf.slice(m.index + m[0].length);
      this.line(line);
      if (this.closed) return;
    }
  }

  private line(line: string): void {
    if (line === "") {
      const data = this.data.join("\n");
      const type = this.event || "message";
      const had = this.data.length > 0;
      this.event = "";
      this.data = [];
      if (had) for (const fn of this.listeners[type] ?? []) fn({ data } as MessageEvent);
      return;
    }
    if (line.startsWith(":")) return; // a comment (keep-alive ping)
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? "" : line.slice(i + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
  }
}

/**
 * Follow a run live over `GET /runs/{id}/events`; if the stream cannot be opened or
 * breaks before its `end` event, poll `GET /runs/{id}` every `pollMs` instead.
 * Returns a function that stops watching.
 */
export function watchRun(runId: string, h: RunWatchHandlers, opts: { pollMs?: number; sse?: boolean } = {}): () => void {
  const pollMs = opts.pollMs ?? 500;
  let stopped = false;
  let es: EventSource | FetchEventSource | null = null;
  let timer: ReturnType<typeof setTimeout> | null = null;

  const stop = () => {
    stopped = true;
    es?.close();
    es = null;
    if (timer) clearTimeout(timer);
  };

  const poll = async () => {
    if (stopped) return;
    try {
      const run = await getRun(runId);
      if (stopped) return;
      h.onSnapshot(run);
      if (TERMINAL.has(run.status)) {
        stop();
        h.onEnd(run);
        return;
      }
    } catch (e) {
      h.onError?.((e as Error).message);
    }
    if (!stopped) timer = setTimeout(poll, pollMs);
  };

  const startPolling = () => {
    if (stopped) return;
    es?.close();
    es = null;
    h.onTransport?.("poll");
    void poll();
  };

  const token = currentApiToken();
  const streamUrl = `${API_BASE}/runs/${enc(runId)}/events`;
  if (opts.sse === false || (typeof EventSource === "undefined" && !token)) {
    startPolling();
    return stop;
  }

  // with a token: fetch, which can send it; without: the browser's EventSource
  es = token ? new FetchEventSource(streamUrl, token) : new EventSource(streamUrl);
  h.onTransport?.("sse");
  const parse = (ev: MessageEvent) => {
    try {
      return JSON.parse(ev.data);
    } catch {
      return null;
    }
  };
  es.addEventListener("step", (ev) => {
    const step = parse(ev as MessageEvent);
    if (step && typeof step.node_id === "string") h.onStep(step as RunStep);
  });
  es.addEventListener("token", (ev) => {
    const t = parse(ev as MessageEvent);
    if (t && typeof t.node_id === "string") h.onToken(t.node_id, String(t.delta ?? ""));
  });
  es.addEventListener("waiting", () => {
    // the run paused for a person: read its questions (the record carries waiting_for)
    void getRun(runId).then((run) => !stopped && h.onSnapshot(run), () => undefined);
  });
  es.addEventListener("end", (ev) => {
    const run = parse(ev as MessageEvent);
    es?.close();
    es = null;
    if (run && typeof run === "object" && "status" in run) {
      stop();
      h.onEnd(run as RunRecord);
    } else startPolling(); // an end without a run body: read it
  });
  es.onerror = () => {
    // The stream closed or never opened before `end`: carry on by polling.
    if (!stopped && es) startPolling();
  };
  return stop;
}

// ------------------------------------------------------------------ sources

export const listSources = () => request<Page<SourceSpec>>("GET", "/sources");
export const createSource = (s: SourceSpec) => request<SourceSpec>("POST", "/sources", s);
export const updateSource = (id: string, s: SourceSpec) => request<SourceSpec>("PUT", `/sources/${enc(id)}`, s);
export const deleteSource = (id: string) => request<void>("DELETE", `/sources/${enc(id)}`);
