/**
 * The only module that talks to the AgentFlow REST API. Same origin in production
 * (Studio is served by `agentflow serve`); `NEXT_PUBLIC_API_URL` points `npm run dev`
 * at a running server.
 */
import type {
  ApiProblem,
  Page,
  RunInput,
  RunRecord,
  RunStep,
  RunSummary,
  SourceSpec,
  ValidationResult,
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

async function request<T>(method: string, path: string, body?: unknown, okStatuses: number[] = []): Promise<T> {
  let res: Response;
  try {
    res = await fetch(API_BASE + path, {
      method,
      headers: body === undefined ? { Accept: "application/json" } : { "Content-Type": "application/json", Accept: "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, `cannot reach the AgentFlow API (${(e as Error).message})`);
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
    const msg = detailText(d.detail) || (typeof data === "string" && data) || `${res.status} ${res.statusText}`;
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

// ------------------------------------------------------------------ schema & validation

export const getSchema = () => request<Record<string, unknown>>("GET", "/schema");

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

// ------------------------------------------------------------------ runs

export const startRun = (workflowId: string, input: RunInput) =>
  request<{ run_id: string; status: string }>("POST", `/workflows/${enc(workflowId)}/runs`, { input });

export const listRuns = (workflowId: string, limit = 20) =>
  request<Page<RunSummary>>("GET", `/workflows/${enc(workflowId)}/runs${q({ limit })}`);

export const getRun = (runId: string) => request<RunRecord>("GET", `/runs/${enc(runId)}`);

export const cancelRun = (runId: string) => request<unknown>("POST", `/runs/${enc(runId)}/cancel`);

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

/**
 * Follow a run live over `GET /runs/{id}/events`; if the stream cannot be opened or
 * breaks before its `end` event, poll `GET /runs/{id}` every `pollMs` instead.
 * Returns a function that stops watching.
 */
export function watchRun(runId: string, h: RunWatchHandlers, opts: { pollMs?: number; sse?: boolean } = {}): () => void {
  const pollMs = opts.pollMs ?? 500;
  let stopped = false;
  let es: EventSource | null = null;
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

  if (opts.sse === false || typeof EventSource === "undefined") {
    startPolling();
    return stop;
  }

  es = new EventSource(`${API_BASE}/runs/${enc(runId)}/events`);
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
