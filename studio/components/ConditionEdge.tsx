"use client";
/** An edge with its condition as a label; double-click the label (or the edge) to edit it. */
import { memo, useEffect, useState } from "react";
import { BaseEdge, EdgeLabelRenderer, getBezierPath, type EdgeProps } from "@xyflow/react";
import type { ConditionFlowEdge } from "@/lib/flow";
import { useWorkflowStore } from "@/lib/useWorkflowStore";

const DIFF_STROKE: Record<string, string> = { added: "#10b981", removed: "#f43f5e", changed: "#f59e0b" };
const ON_ERROR_STROKE = "#dc2626";

function ConditionEdgeView({ id, source, target, sourceX, sourceY, targetX, targetY, sourcePosition, targetPosition, data, selected, markerEnd }: EdgeProps<ConditionFlowEdge>) {
  const [path, labelX, baseY] = getBezierPath({ sourceX, sourceY, targetX, targetY, sourcePosition, targetPosition });
  // Edges with the same two ends share a path: spread their labels apart.
  const labelY = baseY + ((data?.parallel ?? 0) - ((data?.parallelCount ?? 1) - 1) / 2) * 24;
  const setCondition = useWorkflowStore((s) => s.setEdgeCondition);
  const [editing, setEditing] = useState(false);
  const [draft, setDraft] = useState(data?.condition ?? "");
  useEffect(() => setDraft(data?.condition ?? ""), [data?.condition]);
  const problems = data?.problems ?? [];
  const diff = data?.diff ?? null;
  const readOnly = Boolean(data?.readOnly);
  const onError = Boolean(data?.onError);
  const stroke = diff ? DIFF_STROKE[diff] : problems.length ? "#e11d48" : onError ? ON_ERROR_STROKE : data?.taken ? "#10b981" : selected ? "#6366f1" : "#94a3b8";
  const dashed = diff === "removed" || onError;
  const select = useWorkflowStore((s) => s.select);
  const commit = () => {
    setEditing(false);
    if (data && draft !== (data.condition ?? "")) setCondition(data.index, draft);
  };
  return (
    <>
      <BaseEdge id={id} path={path} markerEnd={markerEnd} style={{ stroke, strokeWidth: selected || diff ? 2.5 : 1.5, ...(dashed ? { strokeDasharray: "6 4" } : {}) }} interactionWidth={16} />
      {data && (
        <EdgeLabelRenderer>
          <div
            className="nodrag nopan absolute"
            style={{ transform: `translate(-50%, -50%) translate(${labelX}px, ${labelY}px)`, pointerEvents: "all" }}
            data-testid={`edge-label-${data.index}-${target}`}
            data-from={source}
            data-to={target}
            data-diff={diff ?? undefined}
            data-on-error={onError ? "true" : undefined}
            onClick={() => !readOnly && select([], [id])}
            onDoubleClick={(e) => {
              e.stopPropagation();
              if (!readOnly && !onError) setEditing(true); // an on_error edge takes no condition
            }}
          >
            {editing ? (
              <input
                autoFocus
                data-testid={`edge-input-${data.index}-${target}`}
                className="w-48 rounded border border-indigo-400 bg-white px-1.5 py-0.5 font-mono text-[11px] shadow focus:outline-none"
                value={draft}
                placeholder="always"
                onChange={(e) => setDraft(e.target.value)}
                onBlur={commit}
                onKeyDown={(e) => {
                  if (e.key === "Enter") commit();
                  if (e.key === "Escape") {
                    setDraft(data.condition ?? "");
                    setEditing(false);
                  }
                }}
              />
            ) : onError ? (
              <button
                type="button"
                title={problems.map((p) => p.message).join("\n") || `Taken when ${source} fails after its retries; state.error holds {node, message}`}
                className="rounded-full border border-red-300 bg-red-50 px-2 py-0.5 text-[10px] font-medium text-red-700 shadow-sm"
              >
                on error
              </button>
            ) : (
              <button
                type="button"
                title={problems.map((p) => p.message).join("\n") || "Double-click to edit the condition"}
                className={`rounded-full border font-mono text-[10px] shadow-sm ${problems.length ? "border-rose-300 bg-rose-50 px-2 py-0.5 text-rose-700" : data.condition ? "border-amber-300 bg-amber-50 px-2 py-0.5 text-amber-800" : `border-slate-200 bg-white px-1.5 text-slate-400 ${selected ? "" : "opacity-60 hover:opacity-100"}`}`}
              >
                {data.fanout > 1 && <span className="mr-1 text-indigo-500" title={`fan-out to ${data.fanout} nodes`}>∥{data.fanout}</span>}
                {data.condition || (selected ? "+ condition" : "if")}
              </button>
            )}
          </div>
        </EdgeLabelRenderer>
      )}
    </>
  );
}

export const ConditionEdge = memo(ConditionEdgeView);
