/**
 * Versions: reading the server's structural diff of two versions, and what the canvas
 * shows for it (the newer version, plus ghosts of the removed nodes and edges, each
 * marked added, removed or changed). Pure functions; the store calls them.
 */
import { edgesOf, targetsOf } from "./spec";
import type { DiffChange, DiffEdge, DiffSection, SpecEdge, VersionDiff, WorkflowSpec } from "./types";

export type DiffMark = "added" | "removed" | "changed";

const strings = (xs: unknown): string[] => (Array.isArray(xs) ? xs.filter((x) => typeof x === "string" || typeof x === "number").map(String) : []);

function changes(xs: unknown): DiffChange[] {
  if (!Array.isArray(xs)) return [];
  const out: DiffChange[] = [];
  for (const x of xs) {
    if (typeof x === "string") out.push({ id: x, fields: [] });
    else if (x && typeof x === "object" && "id" in x) {
      const o = x as { id: unknown; fields?: unknown };
      out.push({ id: String(o.id), fields: strings(o.fields) });
    }
  }
  return out;
}

function section(raw: unknown): DiffSection {
  const o = (raw && typeof raw === "object" ? raw : {}) as Record<string, unknown>;
  return { added: strings(o.added), removed: strings(o.removed), changed: changes(o.changed) };
}

/** The diff with every list present (a server may leave empty ones out). */
export function normalizeDiff(raw: unknown): VersionDiff {
  const o = (raw && typeof raw === "object" ? raw : {}) as Record<string, unknown>;
  const edges = (o.edges && typeof o.edges === "object" ? o.edges : {}) as Record<string, unknown>;
  const edgeList = (xs: unknown): DiffEdge[] => (Array.isArray(xs) ? xs.filter((x) => typeof x === "string" || (x && typeof x === "object")) : []);
  return {
    from: Number(o.from),
    to: Number(o.to),
    nodes: section(o.nodes),
    edges: { added: edgeList(edges.added), removed: edgeList(edges.removed) },
    queues: section(o.queues),
    sources: section(o.sources),
    top: strings(o.top),
  };
}

/** Number of differences; 0 means the two versions are the same graph. */
export function diffSize(d: VersionDiff): number {
  const s = (x: DiffSection) => x.added.length + x.removed.length + x.changed.length;
  return s(d.nodes) + s(d.queues) + s(d.sources) + d.edges.added.length + d.edges.removed.length + d.top.length;
}

/** The ends of a diff edge: an edge object, a `[from, to]` pair, or text like `a -> b` / `a -> [b, c]`. */
export function edgeEnds(e: DiffEdge | unknown): { from: string; to: string[]; condition: string | null } | null {
  if (Array.isArray(e) && e.length >= 2) return { from: String(e[0]), to: Array.isArray(e[1]) ? e[1].map(String) : [String(e[1])], condition: e.length > 2 && e[2] != null ? String(e[2]) : null };
  if (e && typeof e === "object") {
    const o = e as Partial<SpecEdge>;
    if (typeof o.from !== "string") return null;
    return { from: o.from, to: targetsOf(o as SpecEdge), condition: o.condition ?? null };
  }
  if (typeof e !== "string") return null;
  const m = /^\s*(.+?)\s*(?:->|→|=>)\s*(.+)$/.exec(e);
  if (!m) return null;
  const rest = m[2].trim();
  const list = /^\[([^\]]*)\]/.exec(rest);
  const to = list ? list[1].split(",").map((x) => x.trim().replace(/^['"]|['"]$/g, "")).filter(Boolean) : [/^[^\s,;|(\[:]+/.exec(rest)?.[0] ?? ""].filter(Boolean);
  const cond = /(?:\bif\b|\bwhen\b|\[|\()\s*(.+?)[\])]?\s*$/.exec(list ? rest.slice(list[0].length) : rest.slice(to[0]?.length ?? 0));
  return to.length ? { from: m[1], to, condition: cond ? cond[1] : null } : null;
}

export const pairKey = (from: string, to: string) => `${from}\u0000${to}`;

/** Diff marks of the nodes, by id. */
export function nodeMarks(d: VersionDiff): Record<string, DiffMark> {
  const out: Record<string, DiffMark> = {};
  for (const id of d.nodes.changed) out[id.id] = "changed";
  for (const id of d.nodes.added) out[id] = "added";
  for (const id of d.nodes.removed) out[id] = "removed";
  return out;
}

/** Diff marks of the canvas edges, by `from\0to` (one per fan-out target). An edge both removed and added changed. */
export function edgeMarks(d: VersionDiff): Record<string, DiffMark> {
  const out: Record<string, DiffMark> = {};
  for (const e of d.edges.added) for (const t of edgeEnds(e)?.to ?? []) out[pairKey(edgeEnds(e)!.from, t)] = "added";
  for (const e of d.edges.removed) {
    const ends = edgeEnds(e);
    for (const t of ends?.to ?? []) {
      const k = pairKey(ends!.from, t);
      out[k] = out[k] === "added" || out[k] === "changed" ? "changed" : "removed";
    }
  }
  return out;
}

/**
 * What the canvas draws for a diff: the newer spec, with the removed nodes (taken from the
 * older spec) and the removed edges appended, so they show as ghosts.
 */
export function diffSpec(fromSpec: WorkflowSpec | null, toSpec: WorkflowSpec, d: VersionDiff): WorkflowSpec {
  const have = new Set(toSpec.nodes.map((n) => n.id));
  const removed = new Set(d.nodes.removed.filter((id) => !have.has(id)));
  const ghosts = (fromSpec?.nodes ?? []).filter((n) => removed.has(n.id));
  const ids = new Set([...have, ...ghosts.map((n) => n.id)]);
  const drawn = new Set<string>();
  for (const e of edgesOf(toSpec)) for (const t of targetsOf(e)) drawn.add(pairKey(e.from, t));
  const extraEdges: SpecEdge[] = [];
  const addGhostEdge = (from: string, to: string, condition: string | null) => {
    const k = pairKey(from, to);
    if (drawn.has(k) || !ids.has(from) || !ids.has(to)) return;
    drawn.add(k);
    extraEdges.push(condition ? { from, to, condition } : { from, to });
  };
  for (const e of d.edges.removed) {
    const ends = edgeEnds(e);
    if (ends) for (const t of ends.to) addGhostEdge(ends.from, t, ends.condition);
  }
  // Edges of removed nodes go with them, even when the diff lists only the node.
  for (const e of fromSpec ? edgesOf(fromSpec) : [])
    for (const t of targetsOf(e)) if (removed.has(e.from) || removed.has(t)) addGhostEdge(e.from, t, e.condition ?? null);
  if (!ghosts.length && !extraEdges.length) return toSpec;
  return { ...toSpec, nodes: [...toSpec.nodes, ...ghosts], edges: [...edgesOf(toSpec), ...extraEdges] };
}
