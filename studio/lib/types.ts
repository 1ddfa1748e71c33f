/**
 * Types of the WorkflowSpec (mirrors graph/spec.py) and of the REST API.
 *
 * The spec types are written by hand for readability; tests/schema-types.test.ts checks
 * them against lib/workflow.schema.json (generated from the pydantic models by
 * scripts/gen-schema.sh). The `*_KEYS` records below are typed `Record<keyof X, true>`,
 * so the compiler proves each list equals the type's keys and the test proves each list
 * equals the schema's properties.
 */

// ------------------------------------------------------------------ spec

export const NODE_TYPES = ["input", "router", "llm", "image", "db", "aggregator", "api", "human", "workflow", "map", "tool"] as const;
export type NodeType = (typeof NODE_TYPES)[number];

export const SOURCE_KINDS = ["llm", "image", "db", "api", "mcp"] as const;
export type SourceKind = (typeof SOURCE_KINDS)[number];

/** Which source kind each node type may use; null = the node takes no source. */
export const NODE_SOURCE_KIND: Record<NodeType, SourceKind | null> = {
  input: null,
  router: "llm",
  llm: "llm",
  image: "image",
  db: "db",
  aggregator: null,
  api: "api",
  human: null,
  workflow: null,
  map: null,
  tool: "mcp",
};

export interface Position {
  x: number;
  y: number;
}

interface CallConfig {
  timeout_seconds?: number | null;
  max_retries?: number | null;
}

export interface InputConfig {
  defaults?: Record<string, unknown>;
}

export interface RouterRule {
  condition: string;
  value: string;
}

export interface RouterConfig extends CallConfig {
  mode?: "rules" | "llm";
  output_key?: string;
  rules?: RouterRule[];
  default?: string | null;
  labels?: string[];
  prompt?: string | null;
  temperature?: number | null;
}

export interface LLMConfig extends CallConfig {
  prompt: string;
  system?: string | null;
  output_key?: string;
  max_tokens?: number | null;
  temperature?: number | null;
  stream?: boolean;
  tools?: string[];
  max_tool_calls?: number;
}

export interface ImageConfig extends CallConfig {
  prompt: string;
  size?: string;
  n?: number;
  quality?: string | null;
  output_key?: string;
}

export interface DBConfig extends CallConfig {
  query: string;
  params?: Record<string, unknown>;
  output_key?: string;
  max_rows?: number;
}

export interface AggregatorConfig {
  fields: string[];
  output_key?: string;
  template?: string | null;
}

export interface APIConfig extends CallConfig {
  method?: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  path?: string;
  query?: Record<string, string>;
  headers?: Record<string, string>;
  body?: unknown;
  output_key?: string;
}

export interface HumanConfig {
  prompt: string;
  output_key?: string;
  choices?: string[];
  timeout_s?: number | null;
  on_timeout?: string | null;
}

export interface WorkflowConfig {
  workflow: string;
  version?: number | null;
  input?: string;
  metadata?: Record<string, string>;
  output_key?: string;
}

export interface MapConfig {
  over: string;
  workflow: string;
  version?: number | null;
  input?: string;
  output_key?: string;
  max_items?: number;
}

export interface ToolConfig extends CallConfig {
  tool: string;
  arguments?: Record<string, unknown>;
  output_key?: string;
}

export interface RetryPolicy {
  max_attempts?: number;
  backoff_s?: number;
}

export interface NodeConfigByType {
  input: InputConfig;
  router: RouterConfig;
  llm: LLMConfig;
  image: ImageConfig;
  db: DBConfig;
  aggregator: AggregatorConfig;
  api: APIConfig;
  human: HumanConfig;
  workflow: WorkflowConfig;
  map: MapConfig;
  tool: ToolConfig;
}

interface NodeBase {
  id: string;
  source?: string | null;
  queue?: string | null;
  sub_queue?: string | null;
  label?: string | null;
  position?: Position | null;
  retry?: RetryPolicy | null;
}

export type SpecNodeOf<T extends NodeType> = NodeBase & { type: T; config?: NodeConfigByType[T] };
export type SpecNode = { [T in NodeType]: SpecNodeOf<T> }[NodeType];

export interface SpecEdge {
  from: string;
  to: string | string[];
  condition?: string | null;
  on_error?: boolean;
}

export interface SubQueue {
  id: string;
  weight?: number;
}

export interface QueueSpec {
  id: string;
  max_messages_per_second?: number | null;
  max_requests_per_minute?: number | null;
  max_tokens_per_minute?: number | null;
  burst_size?: number | null;
  sub_queues?: SubQueue[];
  max_concurrency?: number | null;
  concurrency_key?: string | null;
}

interface SourceBase {
  id: string;
  description?: string | null;
  timeout_seconds?: number | null;
  max_retries?: number | null;
}

export interface LLMSource extends SourceBase {
  kind: "llm";
  provider?: "openai";
  model: string;
  api_key_env?: string | null;
  base_url_env?: string | null;
  input_cost_per_1k?: number | null;
  output_cost_per_1k?: number | null;
}

export interface ImageSource extends SourceBase {
  kind: "image";
  provider?: "openai";
  model: string;
  api_key_env?: string | null;
  base_url_env?: string | null;
  cost_per_image?: number | null;
}

export interface DBSource extends SourceBase {
  kind: "db";
  driver: "postgresql" | "sqlite";
  dsn_env: string;
  statement_timeout_ms?: number;
}

export interface APISource extends SourceBase {
  kind: "api";
  base_url: string;
  auth_env?: string | null;
  auth_header?: string;
  auth_scheme?: string | null;
  allow_private?: boolean;
}

export interface MCPSource extends SourceBase {
  kind: "mcp";
  transport: "stdio" | "http";
  command?: string | null;
  args?: string[];
  env?: Record<string, string>;
  url?: string | null;
  auth_env?: string | null;
  allow_private?: boolean;
}

export type SourceSpec = LLMSource | ImageSource | DBSource | APISource | MCPSource;

export interface WorkflowSpec {
  id: string;
  name: string;
  description?: string | null;
  start_node: string;
  nodes: SpecNode[];
  edges?: SpecEdge[];
  queues?: QueueSpec[];
  sources?: SourceSpec[];
}

// Key lists, proven equal to the types above by the compiler (Record<keyof T, true>)
// and to the JSON Schema by tests/schema-types.test.ts.
type Keys<T> = Record<keyof Required<T>, true>;
const CALL_KEYS: Keys<CallConfig> = { timeout_seconds: true, max_retries: true };

export const NODE_CONFIG_KEYS: { [T in NodeType]: Keys<NodeConfigByType[T]> } = {
  input: { defaults: true },
  router: {
    ...CALL_KEYS, mode: true, output_key: true, rules: true, default: true, labels: true,
    prompt: true, temperature: true,
  },
  llm: {
    ...CALL_KEYS, prompt: true, system: true, output_key: true, max_tokens: true,
    temperature: true, stream: true, tools: true, max_tool_calls: true,
  },
  image: { ...CALL_KEYS, prompt: true, size: true, n: true, quality: true, output_key: true },
  db: { ...CALL_KEYS, query: true, params: true, output_key: true, max_rows: true },
  aggregator: { fields: true, output_key: true, template: true },
  api: {
    ...CALL_KEYS, method: true, path: true, query: true, headers: true, body: true,
    output_key: true,
  },
  human: { prompt: true, output_key: true, choices: true, timeout_s: true, on_timeout: true },
  workflow: { workflow: true, version: true, input: true, metadata: true, output_key: true },
  map: { over: true, workflow: true, version: true, input: true, output_key: true, max_items: true },
  tool: { ...CALL_KEYS, tool: true, arguments: true, output_key: true },
};

export const NODE_KEYS: Keys<SpecNodeOf<"llm">> = {
  id: true, type: true, source: true, queue: true, sub_queue: true, label: true,
  position: true, config: true, retry: true,
};
export const EDGE_KEYS: Keys<SpecEdge> = { from: true, to: true, condition: true, on_error: true };
export const QUEUE_KEYS: Keys<QueueSpec> = {
  id: true, max_messages_per_second: true, max_requests_per_minute: true,
  max_tokens_per_minute: true, burst_size: true, sub_queues: true, max_concurrency: true,
  concurrency_key: true,
};
export const SUB_QUEUE_KEYS: Keys<SubQueue> = { id: true, weight: true };
const SOURCE_BASE_KEYS: Keys<SourceBase> = {
  id: true, description: true, timeout_seconds: true, max_retries: true,
};
export const SOURCE_KEYS: {
  llm: Keys<LLMSource>; image: Keys<ImageSource>; db: Keys<DBSource>; api: Keys<APISource>;
  mcp: Keys<MCPSource>;
} = {
  llm: {
    ...SOURCE_BASE_KEYS, kind: true, provider: true, model: true, api_key_env: true,
    base_url_env: true, input_cost_per_1k: true, output_cost_per_1k: true,
  },
  image: {
    ...SOURCE_BASE_KEYS, kind: true, provider: true, model: true, api_key_env: true,
    base_url_env: true, cost_per_image: true,
  },
  db: { ...SOURCE_BASE_KEYS, kind: true, driver: true, dsn_env: true, statement_timeout_ms: true },
  api: {
    ...SOURCE_BASE_KEYS, kind: true, base_url: true, auth_env: true, auth_header: true,
    auth_scheme: true, allow_private: true,
  },
  mcp: {
    ...SOURCE_BASE_KEYS, kind: true, transport: true, command: true, args: true, env: true,
    url: true, auth_env: true, allow_private: true,
  },
};
export const WORKFLOW_KEYS: Keys<WorkflowSpec> = {
  id: true, name: true, description: true, start_node: true, nodes: true, edges: true,
  queues: true, sources: true,
};

// ------------------------------------------------------------------ API

export interface ApiProblem {
  path: string;
  message: string;
}

export interface ValidationResult {
  valid: boolean;
  errors: ApiProblem[];
}

export interface WorkflowSummary {
  id: string;
  name: string;
  description?: string | null;
  version: number;
  updated_at?: string;
}

export interface WorkflowRecord {
  id: string;
  name: string;
  version: number;
  spec: WorkflowSpec;
  created_at?: string;
  updated_at?: string;
}

export interface WorkflowVersion {
  version: number;
  created_at?: string;
  spec_hash?: string;
  /** Who saved it (the token's subject). */
  author?: string | null;
  /** Who edited the shared document (live co-editing) since the version before. */
  editors?: string[];
}

export interface Page<T> {
  items: T[];
  next_cursor?: string | null;
}

export type RunStatus = "queued" | "running" | "waiting" | "succeeded" | "failed" | "cancelled";

/** A question a waiting run asks a person (a `human` node). */
export interface WaitingFor {
  node: string;
  prompt: string;
  choices: string[];
}
export type StepStatus = "running" | "succeeded" | "failed";

export interface RunStep {
  run_id?: string;
  node_id: string;
  node_type?: string;
  status: StepStatus;
  attempt?: number;
  started_at?: string | null;
  finished_at?: string | null;
  duration_ms?: number | null;
  tokens?: number | null;
  cost?: number | null;
  error?: string | null;
}

export interface RunRecord {
  run_id: string;
  workflow_id?: string;
  workflow_version?: number;
  status: RunStatus;
  state?: Record<string, unknown> | null;
  error?: string | null;
  tokens_used?: number | null;
  cost?: number | null;
  created_at?: string;
  started_at?: string | null;
  finished_at?: string | null;
  steps?: RunStep[];
  /** A re-run points at the run it was started from, and the node it started at; a child
   * run (workflow and map nodes) at the run that started it (rerun_from empty). */
  parent_run_id?: string | null;
  rerun_from?: string | null;
  /** status `waiting`: what a person may answer (POST /runs/{id}/resume). */
  waiting_for?: WaitingFor[];
  /** Child runs started by this run's workflow and map nodes (GET /runs/{id}). */
  children?: ChildRun[];
}

/** A run started by a workflow or map node of its parent. */
export interface ChildRun {
  run_id: string;
  workflow_id?: string | null;
  workflow_version?: number | null;
  status: RunStatus;
  error?: string | null;
  /** The parent's node that started it. */
  node_id?: string | null;
  step_key?: string | null;
  /** Its position in the map's list (0 for a workflow node). */
  index: number;
  tokens_used?: number | null;
  cost?: number | null;
  created_at?: string | null;
  finished_at?: string | null;
}

export type RunSummary = Omit<RunRecord, "steps" | "state" | "children"> & Partial<Pick<RunRecord, "state">>;

export interface RunInput {
  user_input: string;
  metadata?: Record<string, unknown>;
}

/** Body of `POST /workflows/{id}/runs`: `stream` makes LLM nodes send `token` events. */
export interface RunStartOptions {
  stream?: boolean;
}

export const TERMINAL_RUN_STATUSES: readonly RunStatus[] = ["succeeded", "failed", "cancelled"];

// ------------------------------------------------------------------ versions: structural diff

/** An entry of a diff's `changed` list: the id and the changed field paths (`config.prompt`). */
export interface DiffChange {
  id: string;
  fields: string[];
}

export interface DiffSection {
  added: string[];
  removed: string[];
  changed: DiffChange[];
}

/** An added or removed edge; the server may send an edge object or a text key ("a -> b"). */
export type DiffEdge = SpecEdge | string;

/** `GET /workflows/{id}/versions/{a}/diff/{b}` */
export interface VersionDiff {
  from: number;
  to: number;
  nodes: DiffSection;
  edges: { added: DiffEdge[]; removed: DiffEdge[] };
  queues: DiffSection;
  sources: DiffSection;
  /** Changed top-level fields of the workflow (name, description, start_node...). */
  top: string[];
}

// ------------------------------------------------------------------ runs: trace and re-run

export interface TraceStep {
  index: number;
  node_id: string;
  node_type?: string | null;
  /** running, succeeded, failed, lost (its worker died; retried) or reused (a re-run kept it). */
  status: StepStatus | "lost" | "reused" | string;
  attempt?: number | null;
  started_at?: string | null;
  finished_at?: string | null;
  duration_ms?: number | null;
  tokens?: number | null;
  cost?: number | null;
  error?: string | null;
  /** What the node read. */
  input?: Record<string, unknown> | null;
  /** What the node wrote into the state (its delta). */
  output?: Record<string, unknown> | null;
  /** The whole state once this step was merged. */
  state_after?: Record<string, unknown> | null;
}

/** `GET /runs/{id}/trace` */
export interface RunTrace {
  run_id: string;
  workflow_id?: string | null;
  workflow_version?: number | null;
  status: RunStatus;
  parent_run_id?: string | null;
  rerun_from?: string | null;
  initial_state?: Record<string, unknown> | null;
  steps: TraceStep[];
  /** Child runs of its workflow and map nodes (each has a trace of its own). */
  children?: ChildRun[];
  final_state?: Record<string, unknown> | null;
}

/** `POST /runs/{id}/rerun` answers 202 with this. */
export interface RerunQueued {
  run_id: string;
  status: RunStatus;
  parent_run_id?: string | null;
}

// ------------------------------------------------------------------ metrics

export interface Percentiles {
  p50: number | null;
  p95: number | null;
}

export interface WorkflowMetrics {
  /** null: runs of no saved workflow (POST /workflows/execute). */
  workflow_id: string | null;
  runs: number;
  tokens: number;
  cost: number;
  p50_ms: number | null;
  p95_ms: number | null;
}

export interface NodeMetrics {
  workflow_id: string | null;
  node_id: string;
  node_type?: string | null;
  steps: number;
  tokens: number;
  cost: number;
  p50_ms: number | null;
  p95_ms: number | null;
}

export interface SourceMetrics {
  source_id: string;
  calls: number;
  tokens: number;
  cost: number;
  p50_ms: number | null;
  p95_ms: number | null;
}

export interface MetricsBucket {
  bucket: string;
  runs: number;
  tokens: number;
  cost: number;
  p50_ms: number | null;
}

/** `GET /metrics/summary?from=&to=&workflow_id=` */
export interface MetricsSummary {
  /** The range and bucket width the server used. */
  from?: string | null;
  to?: string | null;
  bucket_seconds?: number | null;
  runs: { total: number; by_status: Record<string, number> };
  tokens: number;
  cost: number;
  latency_ms: Percentiles;
  per_workflow: WorkflowMetrics[];
  per_node: NodeMetrics[];
  per_source: SourceMetrics[];
  timeseries: MetricsBucket[];
  queue_wait_ms: Percentiles;
}

export interface MetricsQuery {
  from: string;
  to: string;
  workflow_id?: string | null;
}
