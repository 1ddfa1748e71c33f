"use client";
/** Workflow name and version, and the commands: undo/redo, layout, import/export, validate, save, run. */
import { useRef } from "react";
import { asSpec } from "@/lib/spec";
import { useWorkflowStore } from "@/lib/useWorkflowStore";
import { specText } from "./JsonPreview";
import { PresenceBar } from "./Presence";
import { Button } from "./ui";

export function Toolbar() {
  const name = useWorkflowStore((s) => s.spec.name);
  const id = useWorkflowStore((s) => s.spec.id);
  const savedVersion = useWorkflowStore((s) => s.savedVersion);
  const viewingVersion = useWorkflowStore((s) => s.viewingVersion);
  const savedId = useWorkflowStore((s) => s.savedId);
  const dirty = useWorkflowStore((s) => s.dirty);
  // in a live session, undo is the session's: only this user's own edits
  const canUndo = useWorkflowStore((s) => !s.overlay && (s.collab.status === "live" ? s.collab.canUndo : s.past.length > 0));
  const canRedo = useWorkflowStore((s) => !s.overlay && (s.collab.status === "live" ? s.collab.canRedo : s.future.length > 0));
  const busy = useWorkflowStore((s) => s.busy);
  const st = useWorkflowStore.getState();
  const fileRef = useRef<HTMLInputElement>(null);

  const onImport = async (file: File) => {
    const text = await file.text();
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      st.notify("error", `${file.name} is not valid JSON: ${(e as Error).message}`);
      return;
    }
    const r = asSpec(parsed);
    if (r.error) {
      st.notify("error", `${file.name}: ${r.error}`);
      return;
    }
    st.loadSpec(r.spec!);
    st.notify("success", `Imported ${file.name}`);
  };

  const onExport = () => {
    const spec = useWorkflowStore.getState().spec;
    const blob = new Blob([specText(spec) + "\n"], { type: "application/json" });
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = `${spec.id || "workflow"}.json`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  };

  const version = savedId === id && savedVersion ? `v${viewingVersion ?? savedVersion}` : "unsaved";

  return (
    <header className="flex h-12 shrink-0 items-center gap-2 border-b border-slate-200 bg-white px-3">
      <div className="flex items-center gap-2 pr-2">
        <span className="flex h-7 w-7 items-center justify-center rounded-lg bg-indigo-600 text-sm font-bold text-white">A</span>
        <span className="hidden whitespace-nowrap text-sm font-semibold text-slate-700 2xl:inline">AgentFlow Studio</span>
      </div>
      <input
        data-testid="workflow-name"
        aria-label="Workflow name"
        className="w-72 min-w-[9rem] shrink rounded-md border border-transparent px-2 py-1 text-sm font-semibold text-slate-800 hover:border-slate-200 focus:border-indigo-500 focus:outline-none"
        value={name ?? ""}
        onChange={(e) => st.setWorkflowFields({ name: e.target.value })}
      />
      <span className="min-w-0 max-w-[14rem] shrink truncate whitespace-nowrap font-mono text-xs text-slate-400" data-testid="workflow-id" title={id}>
        {id}
      </span>
      <span data-testid="workflow-version" className="shrink-0 whitespace-nowrap rounded bg-slate-100 px-1.5 py-0.5 text-[11px] font-medium text-slate-500">
        {version}
      </span>
      {dirty && <span data-testid="dirty" title="Unsaved changes" className="h-2 w-2 shrink-0 rounded-full bg-amber-400" />}
      <PresenceBar />
      <div className="mx-2 h-6 w-px bg-slate-200" />
      <Button variant="ghost" data-testid="btn-undo" disabled={!canUndo} onClick={st.undo} title="Undo (Ctrl+Z)">
        ↶
      </Button>
      <Button variant="ghost" data-testid="btn-redo" disabled={!canRedo} onClick={st.redo} title="Redo (Ctrl+Shift+Z)">
        ↷
      </Button>
      <Button variant="ghost" data-testid="btn-layout" onClick={st.autoLayout} title="Arrange the nodes left to right">
        ⇶ Layout
      </Button>
      <Button variant="ghost" data-testid="btn-fit" onClick={st.requestFit} title="Zoom to fit">
        ⤢ Fit
      </Button>
      <div className="flex-1" />
      <a
        href="/dashboard/"
        data-testid="btn-dashboard"
        title="Runs, tokens, cost and latency over time"
        className="inline-flex items-center gap-1 whitespace-nowrap rounded-md px-2.5 py-1 text-sm font-medium text-slate-600 hover:bg-slate-100"
      >
        ▦ Dashboard
      </a>
      <a
        href="/plugins/"
        data-testid="btn-plugins"
        title="Installed node plugins and what failed to load"
        className="inline-flex items-center gap-1 whitespace-nowrap rounded-md px-2.5 py-1 text-sm font-medium text-slate-600 hover:bg-slate-100"
      >
        ⊞ Plugins
      </a>
      <Button variant="ghost" data-testid="btn-history" onClick={() => st.setTab("history")} title="Versions: compare, open, restore">
        ⟲ History
      </Button>
      <input
        ref={fileRef}
        type="file"
        accept="application/json,.json"
        className="hidden"
        data-testid="import-file"
        onChange={(e) => {
          const f = e.target.files?.[0];
          if (f) void onImport(f);
          e.target.value = "";
        }}
      />
      <Button data-testid="btn-import" onClick={() => fileRef.current?.click()} title="Load a spec file">
        Import
      </Button>
      <Button data-testid="btn-export" onClick={onExport} title="Download the spec as JSON">
        Export
      </Button>
      <Button data-testid="btn-validate" disabled={busy.validate} onClick={() => void st.validate().then(() => st.setTab("problems"))}>
        ✓ Validate
      </Button>
      <Button data-testid="btn-save" disabled={busy.save} onClick={() => void st.save()} title="Save a new version (Ctrl+S)">
        {busy.save ? "Saving…" : "Save"}
      </Button>
      <Button variant="primary" data-testid="btn-run" onClick={() => st.setTab("run")}>
        ▶ Run
      </Button>
    </header>
  );
}
