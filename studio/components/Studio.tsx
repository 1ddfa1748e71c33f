"use client";
/** The designer: palette and workflows on the left, canvas in the middle, tabs on the right. */
import { useEffect } from "react";
import { ReactFlowProvider } from "@xyflow/react";
import { startCollab } from "@/lib/collab";
import { useWorkflowStore } from "@/lib/useWorkflowStore";
import { NodePalette } from "./NodePalette";
import { RightPanel } from "./RightPanel";
import { Toolbar } from "./Toolbar";
import { WorkflowCanvas } from "./WorkflowCanvas";
import { WorkflowList } from "./WorkflowList";

const isTyping = (t: EventTarget | null) =>
  t instanceof HTMLElement && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName));

function Notice() {
  const notice = useWorkflowStore((s) => s.notice);
  useEffect(() => {
    if (!notice) return;
    const t = setTimeout(() => {
      if (useWorkflowStore.getState().notice === notice) useWorkflowStore.setState({ notice: null });
    }, notice.kind === "error" ? 8000 : 3500);
    return () => clearTimeout(t);
  }, [notice]);
  if (!notice) return null;
  const cls = notice.kind === "error" ? "border-rose-200 bg-rose-50 text-rose-700" : notice.kind === "success" ? "border-emerald-200 bg-emerald-50 text-emerald-700" : "border-slate-200 bg-white text-slate-700";
  return (
    <div data-testid="notice" data-kind={notice.kind} role="status" className={`pointer-events-auto absolute bottom-4 left-1/2 z-20 max-w-xl -translate-x-1/2 rounded-lg border px-4 py-2 text-sm shadow-lg ${cls}`}>
      {notice.text}
    </div>
  );
}

export function Studio() {
  const savedId = useWorkflowStore((s) => s.savedId);

  // First load: the workflow list, and the workflow named in ?workflow=<id>.
  useEffect(() => {
    const st = useWorkflowStore.getState();
    (window as unknown as { __agentflowStore?: unknown }).__agentflowStore = useWorkflowStore;
    void st.loadSchema();
    void st.loadWorkflows();
    const id = new URLSearchParams(window.location.search).get("workflow");
    if (id) void st.openWorkflow(id);
    else st.newWorkflow();
  }, []);

  // Live co-editing of the saved workflow open here; Studio works alone when it is not available.
  useEffect(() => {
    if (!savedId) return;
    const moved = new AbortController();
    let stop: (() => void) | null = null;
    void startCollab(savedId, useWorkflowStore, moved.signal).then((s) => {
      if (moved.signal.aborted) s();
      else stop = s;
    });
    return () => {
      moved.abort();
      stop?.();
    };
  }, [savedId]);

  // Keep ?workflow=<id> in the address so a reload reopens it.
  useEffect(() => {
    const url = new URL(window.location.href);
    if (savedId) url.searchParams.set("workflow", savedId);
    else url.searchParams.delete("workflow");
    if (url.href !== window.location.href) window.history.replaceState(null, "", url);
  }, [savedId]);

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const mod = e.ctrlKey || e.metaKey;
      if (!mod) return;
      const st = useWorkflowStore.getState();
      const k = e.key.toLowerCase();
      if (k === "s") {
        e.preventDefault();
        void st.save();
        return;
      }
      if (isTyping(e.target)) return;
      if (k === "z" && !e.shiftKey) {
        e.preventDefault();
        st.undo();
      } else if ((k === "z" && e.shiftKey) || k === "y") {
        e.preventDefault();
        st.redo();
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, []);

  return (
    <ReactFlowProvider>
      <div className="flex h-screen flex-col bg-slate-100 text-slate-800">
        <Toolbar />
        <div className="flex min-h-0 flex-1">
          <aside className="flex w-64 shrink-0 flex-col overflow-y-auto border-r border-slate-200 bg-slate-50" data-testid="sidebar">
            <NodePalette />
            <div className="border-t border-slate-200" />
            <WorkflowList />
          </aside>
          <main className="relative min-w-0 flex-1">
            <WorkflowCanvas />
            <Notice />
          </main>
          <RightPanel />
        </div>
      </div>
    </ReactFlowProvider>
  );
}
