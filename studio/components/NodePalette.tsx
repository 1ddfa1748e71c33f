"use client";
/** Every node type, built-in and installed plugins' (GET /node-types): drag one onto the canvas, or click to add it. */
import { useReactFlow } from "@xyflow/react";
import { metaOf } from "@/lib/nodeMeta";
import { nodeTypeInfo, paletteTypes } from "@/lib/schema";
import type { NodeType } from "@/lib/types";
import { useWorkflowStore } from "@/lib/useWorkflowStore";
import { NODE_HEIGHT, NODE_WIDTH } from "@/lib/layout";
import { Icon } from "./Icon";
import { DND_TYPE } from "./WorkflowCanvas";

export function NodePalette() {
  const addNode = useWorkflowStore((s) => s.addNode);
  useWorkflowStore((s) => s.schemaRevision); // re-render when the server's schema and node types arrive
  const { screenToFlowPosition } = useReactFlow();
  // The server decides which node types exist; the meta table only decorates the built-in ones.
  const types = paletteTypes() as NodeType[];

  const addAtCentre = (type: NodeType) => {
    const el = document.querySelector('[data-testid="canvas"]');
    const r = el?.getBoundingClientRect();
    const n = useWorkflowStore.getState().spec.nodes.length;
    const centre = r ? screenToFlowPosition({ x: r.left + r.width / 2, y: r.top + r.height / 2 }) : { x: 200, y: 200 };
    addNode(type, { x: centre.x - NODE_WIDTH / 2 + (n % 4) * 24, y: centre.y - NODE_HEIGHT / 2 + (n % 4) * 24 });
  };

  return (
    <div className="px-3 py-3">
      <h3 className="mb-2 text-xs font-semibold uppercase tracking-wide text-slate-500">Nodes</h3>
      <ul className="space-y-1.5">
        {types.map((type) => {
          const info = nodeTypeInfo(type);
          const base = metaOf(type);
          const meta = { ...base, description: base.description || info?.description || "" };
          const plugin = info?.origin.kind === "plugin";
          return (
            <li key={type}>
              <button
                type="button"
                draggable
                data-testid={`palette-${type}`}
                data-origin={info?.origin.kind ?? "builtin"}
                title={`Drag onto the canvas or click to add a ${meta.label} node${plugin ? ` (plugin ${info.origin.package} ${info.origin.version ?? ""})` : ""}`}
                onDragStart={(e) => {
                  e.dataTransfer.setData(DND_TYPE, type);
                  e.dataTransfer.setData("text/plain", type);
                  e.dataTransfer.effectAllowed = "move";
                }}
                onClick={() => addAtCentre(type)}
                className="flex w-full cursor-grab items-center gap-2 rounded-lg border border-slate-200 bg-white px-2 py-1.5 text-left shadow-sm transition hover:border-indigo-300 hover:shadow active:cursor-grabbing"
              >
                <span className={`flex h-7 w-7 shrink-0 items-center justify-center rounded-md text-base ${meta.accent}`}><Icon name={type} /></span>
                <span className="min-w-0">
                  <span className="block text-sm font-medium text-slate-700">
                    {meta.label}
                    {plugin && <span className="ml-1.5 rounded bg-slate-100 px-1 py-px align-middle text-[10px] font-normal text-slate-500">plugin</span>}
                  </span>
                  <span className="block truncate text-[11px] text-slate-400">{meta.description}</span>
                </span>
              </button>
            </li>
          );
        })}
      </ul>
    </div>
  );
}
