"use client";
/** Who else has the workflow open (live co-editing, lib/collab.ts), and where they are on the canvas. */
import { ViewportPortal } from "@xyflow/react";
import { NODE_HEIGHT, NODE_WIDTH } from "@/lib/layout";
import { useWorkflowStore } from "@/lib/useWorkflowStore";

const initials = (name: string) =>
  name
    .split(/[\s@._-]+/)
    .filter(Boolean)
    .slice(0, 2)
    .map((w) => w[0]!.toUpperCase())
    .join("") || "?";

const LABEL: Record<string, string> = { connecting: "connecting…", live: "live", unavailable: "offline" };

/** The toolbar's badge: live or not, view only, and one dot per co-editor. */
export function PresenceBar() {
  const collab = useWorkflowStore((s) => s.collab);
  if (collab.status === "off") return null;
  const tone =
    collab.status === "live" ? "bg-emerald-50 text-emerald-700" : collab.status === "unavailable" ? "bg-slate-100 text-slate-500" : "bg-amber-50 text-amber-700";
  return (
    <div className="flex shrink-0 items-center gap-1.5" data-testid="collab">
      <span
        data-testid="collab-status"
        data-status={collab.status}
        title={collab.status === "unavailable" ? `Live editing is off: ${collab.reason ?? "the server cannot be reached"}` : "Edits are shared with everyone who has this workflow open"}
        className={`whitespace-nowrap rounded px-1.5 py-0.5 text-[11px] font-medium ${tone}`}
      >
        {LABEL[collab.status]}
        {collab.readOnly && collab.status === "live" ? " · view only" : ""}
      </span>
      <div className="flex -space-x-1.5">
        {collab.peers.slice(0, 5).map((p) => (
          <span
            key={p.clientId}
            data-testid="collab-peer"
            data-name={p.name}
            title={p.name}
            style={{ background: p.color }}
            className="flex h-6 w-6 items-center justify-center rounded-full border-2 border-white text-[10px] font-semibold text-white"
          >
            {initials(p.name)}
          </span>
        ))}
        {collab.peers.length > 5 && <span className="pl-2 text-[11px] text-slate-500">+{collab.peers.length - 5}</span>}
      </div>
    </div>
  );
}

/** On the canvas: each co-editor's pointer with their name, and a ring around what they selected. */
export function PeerOverlay() {
  const peers = useWorkflowStore((s) => s.collab.peers);
  const layout = useWorkflowStore((s) => s.layout);
  const measured = useWorkflowStore((s) => s.measured);
  if (!peers.length) return null;
  return (
    <ViewportPortal>
      {peers.flatMap((p) =>
        p.selection
          .filter((id) => layout[id])
          .map((id) => {
            const pos = layout[id];
            const size = measured[id] ?? { width: NODE_WIDTH, height: NODE_HEIGHT };
            return (
              <div
                key={`${p.clientId}:${id}`}
                data-testid="peer-selection"
                data-node={id}
                data-name={p.name}
                className="pointer-events-none absolute rounded-xl border-2"
                style={{ borderColor: p.color, transform: `translate(${pos.x - 5}px, ${pos.y - 5}px)`, width: size.width + 10, height: size.height + 10 }}
              />
            );
          }),
      )}
      {peers
        .filter((p) => p.cursor)
        .map((p) => (
          <div
            key={p.clientId}
            data-testid="peer-cursor"
            data-name={p.name}
            className="pointer-events-none absolute left-0 top-0 z-50"
            style={{ transform: `translate(${p.cursor!.x}px, ${p.cursor!.y}px)` }}
          >
            <svg width="16" height="18" viewBox="0 0 16 18" className="drop-shadow">
              <path d="M1 1 L1 15 L5 11 L8 17 L10.5 16 L7.5 10 L13 10 Z" fill={p.color} stroke="white" strokeWidth="1.2" />
            </svg>
            <span className="ml-3 whitespace-nowrap rounded px-1.5 py-0.5 text-[11px] font-medium text-white shadow" style={{ background: p.color }}>
              {p.name}
            </span>
          </div>
        ))}
    </ViewportPortal>
  );
}
