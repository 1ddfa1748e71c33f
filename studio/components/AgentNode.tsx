"use client";
/** A node on the canvas: its type, id, source and queue, run status and validation problems. */
import { memo } from "react";
import { Handle, Position, type NodeProps } from "@xyflow/react";
import type { AgentFlowNode } from "@/lib/flow";
import { metaOf } from "@/lib/nodeMeta";
import { Icon } from "./Icon";
import { formatMs } from "./ui";

const STATUS_RING: Record<string, string> = {
  idle: "border-slate-200",
  running: "border-blue-500 ring-4 ring-blue-200",
  succeeded: "border-emerald-500 ring-2 ring-emerald-200",
  failed: "border-rose-500 ring-2 ring-rose-200",
};

const DIFF_RING: Record<string, string> = {
  added: "border-emerald-500 ring-4 ring-emerald-200",
  changed: "border-amber-500 ring-4 ring-amber-200",
  removed: "border-dashed border-rose-400 ring-2 ring-rose-100 opacity-60",
};
const DIFF_BADGE: Record<string, string> = {
  added: "bg-emerald-600",
  changed: "bg-amber-500",
  removed: "bg-rose-500",
};

function AgentNodeView({ id, data, selected }: NodeProps<AgentFlowNode>) {
  const { spec, status, step, problems, isStart, diff, replay, streaming } = data;
  const meta = metaOf(spec.type);
  const hasProblems = problems.length > 0;
  const ring = diff
    ? DIFF_RING[diff]
    : replay === "current"
      ? "border-indigo-600 ring-[6px] ring-indigo-300 scale-105"
      : replay === "pending"
        ? "border-slate-200 opacity-45 grayscale"
        : hasProblems && status === "idle"
          ? "border-rose-500 ring-2 ring-rose-200"
          : STATUS_RING[status] ?? STATUS_RING.idle;
  const sub = [spec.source && `src ${spec.source}`, spec.queue && `queue ${spec.queue}${spec.sub_queue ? `/${spec.sub_queue}` : ""}`].filter(Boolean).join(" · ");
  return (
    <div
      data-testid={`node-${id}`}
      data-status={status}
      data-type={spec.type}
      data-diff={diff ?? undefined}
      data-replay={replay ?? undefined}
      data-streaming={streaming ? "true" : undefined}
      className={`agent-node status-${replay ? `replay-${replay}` : status} ${hasProblems ? "has-problems" : ""} ${diff ? `diff-${diff}` : ""} w-[220px] rounded-xl border-2 bg-white shadow-sm transition-transform ${ring} ${selected ? "outline outline-2 outline-offset-2 outline-indigo-500" : ""}`}
    >
      {spec.type !== "input" && <Handle type="target" position={Position.Left} data-testid={`handle-in-${id}`} className="!h-3 !w-3 !border-2 !border-white !bg-slate-400" />}
      <div className="flex items-center gap-2 px-3 pt-2">
        <span className={`flex h-6 w-6 shrink-0 items-center justify-center rounded-md text-sm ${meta.accent}`}><Icon name={spec.type} className="h-3.5 w-3.5" /></span>
        <div className="min-w-0 flex-1">
          <div className="truncate text-sm font-semibold text-slate-800">{spec.label || id}</div>
        </div>
        {diff && (
          <span data-testid={`node-diff-${id}`} className={`rounded px-1 text-[9px] font-bold uppercase text-white ${DIFF_BADGE[diff]}`}>
            {diff}
          </span>
        )}
        {replay === "current" && <span className="rounded bg-indigo-600 px-1 text-[9px] font-bold uppercase text-white">now</span>}
        {streaming && (
          <span data-testid={`node-streaming-${id}`} className="flex items-center gap-1 rounded bg-blue-50 px-1 text-[9px] font-semibold uppercase text-blue-700" title="Tokens are streaming">
            <i className="inline-block h-1.5 w-1.5 animate-ping rounded-full bg-blue-500" />
            stream
          </span>
        )}
        {isStart && <span className="rounded bg-emerald-600 px-1 text-[9px] font-bold uppercase text-white">start</span>}
      </div>
      <div className="flex items-center justify-between gap-2 px-3 pb-2 pt-0.5">
        <span className="truncate text-[11px] text-slate-400">
          {meta.label}
          {spec.label ? ` · ${id}` : ""}
          {sub ? ` · ${sub}` : ""}
        </span>
        {step && (
          <span className="shrink-0 text-[10px] text-slate-500" data-testid={`node-metrics-${id}`}>
            {formatMs(step.duration_ms)}
            {step.tokens ? ` · ${step.tokens} tok` : ""}
          </span>
        )}
      </div>
      {hasProblems && (
        <div data-testid={`node-error-${id}`} title={problems.map((p) => p.message).join("\n")} className="rounded-b-xl border-t border-rose-200 bg-rose-50 px-3 py-1 text-[11px] text-rose-700">
          <span className="font-semibold">{problems.length > 1 ? `${problems.length} problems: ` : ""}</span>
          <span className="line-clamp-2">{problems[0].message}</span>
        </div>
      )}
      {step?.error && !hasProblems && (
        <div className="line-clamp-2 rounded-b-xl border-t border-rose-200 bg-rose-50 px-3 py-1 text-[11px] text-rose-700" title={step.error}>
          {step.error}
        </div>
      )}
      <Handle type="source" position={Position.Right} data-testid={`handle-out-${id}`} className="!h-3 !w-3 !border-2 !border-white !bg-indigo-500" />
    </div>
  );
}

export const AgentNode = memo(AgentNodeView);
