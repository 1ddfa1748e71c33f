/**
 * Pure operations on a WorkflowSpec document. Every function returns a new object and
 * leaves untouched parts (and unknown keys) exactly as they were, so an imported spec
 * exports unchanged.
 */
import type { NodeType, Position, SourceSpec, SpecEdge, SpecNode, WorkflowSpec, QueueSpec } from "./types";

export function emptySpec(id = "untitled", name = "Untitled workflow"): WorkflowSpec {
  return { id, name, start_node: "", nodes: [], edges: [], queues: [], sources: [] };
}

export const edgesOf = (spec: WorkflowSpec): SpecEdge[] => spec.edges ?? [];
export const queuesOf = (spec: WorkflowSpec): QueueSpec[] => spec.queues ?? [];
export const sourcesOf = (spec: WorkflowSpec): SourceSpec[] => spec.sources ?? [];

export function targetsOf(edge: SpecEdge): string[] {
  if (Array.isArray(edge.to)) return edge.to;
  return typeof edge.to === "string" ? [edge.to] : [];
}

/** Canvas edge id for target `target` of spec edge `index` (a fan-out edge draws one line per target). */
export const flowEdgeId = (index: number, target: string) => `e${index}:${target}`;

export function parseFlowEdgeId(id: string): { index: number; target: string } | null {
  const m = /^e(\d+):(.*)$/.exec(id);
  return m ? { index: Number(m[1]), target: m[2] } : null;
}

/** A fresh node id from `base` that no node uses yet: llm, llm_2, llm_3... */
export function uniqueId(base: string, taken: Iterable<string>): string {
  const used = new Set(taken);
  const clean = base.replace(/[^A-Za-z0-9_-]/g, "_").replace(/^([^A-Za-z_])/, "_$1") || "node";
  if (!used.has(clean)) return clean;
  for (let i = 2; ; i++) if (!used.has(`${clean}_${i}`)) return `${clean}_${i}`;
}

/** The smallest config that passes the schema for a new node of this type. */
export function defaultConfig(type: NodeType): Record<string, unknown> | undefined {
  switch (type) {
    case "llm":
      return { prompt: "{user_input}" };
    case "image":
      return { prompt: "{user_input}" };
    case "db":
      return { query: "SELECT 1" };
    case "aggregator":
      return { fields: ["text_result"] };
    case "router":
      return { mode: "rules" };
    case "human":
      return { prompt: "Approve this? {user_input}" };
    case "workflow":
      return { workflow: "" };
    case "map":
      return { over: "db_result", workflow: "" };
    case "tool":
      return { tool: "" };
    default:
      return undefined;
  }
}

export function roundPos(p: Position): Position {
  return { x: Math.round(p.x), y: Math.round(p.y) };
}

export function addNode(spec: WorkflowSpec, type: NodeType, position?: Position, id?: string): { spec: WorkflowSpec; id: string } {
  const nodeId = id ?? uniqueId(type, spec.nodes.map((n) => n.id));
  const node: Record<string, unknown> = { id: nodeId, type };
  const config = defaultConfig(type);
  if (config) node.config = config;
  if (position) node.position = roundPos(position);
  const next: WorkflowSpec = { ...spec, nodes: [...spec.nodes, node as unknown as SpecNode] };
  if (!spec.start_node && (type === "input" || spec.nodes.length === 0)) next.start_node = nodeId;
  return { spec: next, id: nodeId };
}

export function updateNode(spec: WorkflowSpec, id: string, next: SpecNode): WorkflowSpec {
  let out: WorkflowSpec = { ...spec, nodes: spec.nodes.map((n) => (n.id === id ? next : n)) };
  if (next.id !== id) out = renameNodeRefs(out, id, next.id);
  return out;
}

function renameNodeRefs(spec: WorkflowSpec, from: string, to: string): WorkflowSpec {
  const edges = spec.edges?.map((e) => {
    const hit = e.from === from || targetsOf(e).includes(from);
    if (!hit) return e;
    const ne: SpecEdge = { ...e };
    if (ne.from === from) ne.from = to;
    if (Array.isArray(e.to)) ne.to = e.to.map((t) => (t === from ? to : t));
    else if (e.to === from) ne.to = to;
    return ne;
  });
  const out: WorkflowSpec = { ...spec };
  if (edges) out.edges = edges;
  if (spec.start_node === from) out.start_node = to;
  return out;
}

export function setNodePositions(spec: WorkflowSpec, positions: Record<string, Position>): WorkflowSpec {
  let changed = false;
  const nodes = spec.nodes.map((n) => {
    const p = positions[n.id];
    if (!p) return n;
    const r = roundPos(p);
    if (n.position && n.position.x === r.x && n.position.y === r.y) return n;
    changed = true;
    return { ...n, position: r } as SpecNode;
  });
  return changed ? { ...spec, nodes } : spec;
}

/** Remove nodes (and every edge end that names them) and canvas edges given by flow id. */
export function removeElements(spec: WorkflowSpec, nodeIds: string[], flowEdgeIds: string[]): WorkflowSpec {
  const goneNodes = new Set(nodeIds);
  const goneTargets = new Map<number, Set<string>>();
  for (const fid of flowEdgeIds) {
    const p = parseFlowEdgeId(fid);
    if (!p) continue;
    if (!goneTargets.has(p.index)) goneTargets.set(p.index, new Set());
    goneTargets.get(p.index)!.add(p.target);
  }
  if (!goneNodes.size && !goneTargets.size) return spec;
  const edges: SpecEdge[] = [];
  edgesOf(spec).forEach((e, i) => {
    if (goneNodes.has(e.from)) return;
    const drop = goneTargets.get(i);
    const keep = (t: string) => !goneNodes.has(t) && !drop?.has(t);
    if (Array.isArray(e.to)) {
      if (e.to.every(keep)) return void edges.push(e);
      const to = e.to.filter(keep);
      if (to.length) edges.push({ ...e, to });
    } else if (keep(e.to)) edges.push(e);
  });
  const out: WorkflowSpec = { ...spec, nodes: spec.nodes.filter((n) => !goneNodes.has(n.id)) };
  if (spec.edges || edges.length) out.edges = edges;
  return out;
}

export function connect(spec: WorkflowSpec, from: string, to: string): WorkflowSpec {
  const exists = edgesOf(spec).some((e) => e.from === from && targetsOf(e).includes(to) && !e.condition);
  if (exists) return spec;
  return { ...spec, edges: [...edgesOf(spec), { from, to }] };
}

export function updateEdge(spec: WorkflowSpec, index: number, edge: SpecEdge): WorkflowSpec {
  const edges = [...edgesOf(spec)];
  if (!edges[index]) return spec;
  edges[index] = edge;
  return { ...spec, edges };
}

export function setEdgeCondition(spec: WorkflowSpec, index: number, condition: string): WorkflowSpec {
  const edge = edgesOf(spec)[index];
  if (!edge) return spec;
  const next: SpecEdge = { ...edge };
  if (condition.trim()) next.condition = condition;
  else delete next.condition;
  return updateEdge(spec, index, next);
}

// ------------------------------------------------------------------ queues & sources

export function renameRefs(spec: WorkflowSpec, key: "queue" | "source", from: string, to: string): WorkflowSpec {
  if (from === to) return spec;
  let changed = false;
  const nodes = spec.nodes.map((n) => {
    if (n[key] !== from) return n;
    changed = true;
    return { ...n, [key]: to } as SpecNode;
  });
  return changed ? { ...spec, nodes } : spec;
}

export function upsertQueue(spec: WorkflowSpec, index: number | null, queue: QueueSpec): WorkflowSpec {
  const queues = [...queuesOf(spec)];
  if (index === null || index >= queues.length) return { ...spec, queues: [...queues, queue] };
  const old = queues[index];
  queues[index] = queue;
  return renameRefs({ ...spec, queues }, "queue", old.id, queue.id);
}

export function removeQueue(spec: WorkflowSpec, index: number): WorkflowSpec {
  return { ...spec, queues: queuesOf(spec).filter((_, i) => i !== index) };
}

export function upsertSource(spec: WorkflowSpec, index: number | null, source: SourceSpec): WorkflowSpec {
  const sources = [...sourcesOf(spec)];
  if (index === null || index >= sources.length) return { ...spec, sources: [...sources, source] };
  const old = sources[index];
  sources[index] = source;
  return renameRefs({ ...spec, sources }, "source", old.id, source.id);
}

export function removeSource(spec: WorkflowSpec, index: number): WorkflowSpec {
  return { ...spec, sources: sourcesOf(spec).filter((_, i) => i !== index) };
}

// ------------------------------------------------------------------ validation paths

export type ProblemTarget =
  | { kind: "node"; id: string; field: string }
  | { kind: "edge"; index: number; field: string }
  | { kind: "queue"; id: string; field: string }
  | { kind: "source"; id: string; field: string }
  | { kind: "workflow"; field: string };

/** Map an API error path (`nodes[2].config.prompt`) to the element it names. */
export function targetOfPath(spec: WorkflowSpec, path: string): ProblemTarget {
  const m = /^(nodes|edges|queues|sources)\[(\d+)\]\.?(.*)$/.exec(path);
  if (!m) return { kind: "workflow", field: path };
  const [, list, idx, field] = m;
  const i = Number(idx);
  const idOf = (arr: { id?: unknown }[] | undefined) => {
    const id = arr?.[i]?.id;
    return typeof id === "string" ? id : `#${i}`;
  };
  switch (list) {
    case "nodes":
      return { kind: "node", id: idOf(spec.nodes), field };
    case "edges":
      return { kind: "edge", index: i, field };
    case "queues":
      return { kind: "queue", id: idOf(spec.queues), field };
    default:
      return { kind: "source", id: idOf(spec.sources), field };
  }
}

/** Is `value` shaped enough like a spec for the canvas to show it? (Schema checks are the API's job.) */
export function asSpec(value: unknown): { spec?: WorkflowSpec; error?: string } {
  if (!value || typeof value !== "object" || Array.isArray(value)) return { error: "a workflow spec must be a JSON object" };
  const v = value as Record<string, unknown>;
  if (!Array.isArray(v.nodes)) return { error: "`nodes` must be a list" };
  for (const [i, n] of (v.nodes as unknown[]).entries()) {
    if (!n || typeof n !== "object" || Array.isArray(n)) return { error: `nodes[${i}] must be an object` };
    if (typeof (n as { id?: unknown }).id !== "string") return { error: `nodes[${i}].id must be a string` };
  }
  for (const key of ["edges", "queues", "sources"]) {
    if (v[key] !== undefined && !Array.isArray(v[key])) return { error: `\`${key}\` must be a list` };
  }
  for (const [i, e] of ((v.edges as unknown[]) ?? []).entries()) {
    if (!e || typeof e !== "object" || Array.isArray(e)) return { error: `edges[${i}] must be an object` };
  }
  return { spec: value as WorkflowSpec };
}
