/** Auto-layout (left to right) with dagre. */
import dagre from "@dagrejs/dagre";
import { edgesOf, targetsOf } from "./spec";
import type { Position, WorkflowSpec } from "./types";

export const NODE_WIDTH = 220;
export const NODE_HEIGHT = 76;

export type Size = { width: number; height: number };

export function layoutPositions(
  spec: WorkflowSpec,
  sizes: Record<string, Size | undefined> = {},
  only?: Set<string>,
): Record<string, Position> {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: 50, ranksep: 150, marginx: 20, marginy: 20 });
  g.setDefaultEdgeLabel(() => ({}));
  const ids = new Set(spec.nodes.map((n) => n.id));
  for (const n of spec.nodes) {
    const s = sizes[n.id];
    g.setNode(n.id, { width: s?.width ?? NODE_WIDTH, height: s?.height ?? NODE_HEIGHT });
  }
  for (const e of edgesOf(spec)) {
    for (const t of targetsOf(e)) if (ids.has(e.from) && ids.has(t) && e.from !== t) g.setEdge(e.from, t);
  }
  dagre.layout(g);
  const out: Record<string, Position> = {};
  for (const n of spec.nodes) {
    if (only && !only.has(n.id)) continue;
    const p = g.node(n.id);
    const s = sizes[n.id];
    out[n.id] = {
      x: Math.round(p.x - (s?.width ?? NODE_WIDTH) / 2),
      y: Math.round(p.y - (s?.height ?? NODE_HEIGHT) / 2),
    };
  }
  return out;
}

/** Canvas positions for a spec: a node's own `position` when it has one, else a computed one. */
export function positionsFor(spec: WorkflowSpec, sizes: Record<string, Size | undefined> = {}): Record<string, Position> {
  const missing = new Set(
    spec.nodes.filter((n) => !(n.position && typeof n.position.x === "number" && typeof n.position.y === "number")).map((n) => n.id),
  );
  const computed = missing.size ? layoutPositions(spec, sizes, missing) : {};
  const out: Record<string, Position> = {};
  for (const n of spec.nodes) out[n.id] = missing.has(n.id) ? computed[n.id] : { x: n.position!.x, y: n.position!.y };
  return out;
}
