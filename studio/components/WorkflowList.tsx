"use client";
/** Saved workflows (the server's examples among them) and the versions of the open one. */
import { useWorkflowStore } from "@/lib/useWorkflowStore";
import { Button, Empty, formatTime } from "./ui";

export function WorkflowList() {
  const workflows = useWorkflowStore((s) => s.workflows);
  const status = useWorkflowStore((s) => s.workflowsStatus);
  const savedId = useWorkflowStore((s) => s.savedId);
  const versions = useWorkflowStore((s) => s.versions);
  const savedVersion = useWorkflowStore((s) => s.savedVersion);
  const viewingVersion = useWorkflowStore((s) => s.viewingVersion);
  const dirty = useWorkflowStore((s) => s.dirty);
  const { loadWorkflows, openWorkflow, openVersion, deleteWorkflow, newWorkflow } = useWorkflowStore.getState();

  const guard = () => !dirty || confirm("Discard the unsaved changes of the open workflow?");

  return (
    <div className="px-3 py-3" data-testid="workflow-list">
      <div className="mb-2 flex items-center justify-between">
        <h3 className="text-xs font-semibold uppercase tracking-wide text-slate-500">Workflows</h3>
        <div className="flex gap-1">
          <Button variant="ghost" className="px-1.5 text-xs" data-testid="workflows-refresh" title="Refresh" onClick={() => void loadWorkflows()}>
            ↻
          </Button>
          <Button variant="ghost" className="px-1.5 text-xs" data-testid="workflow-new" title="New workflow" onClick={() => guard() && newWorkflow()}>
            + New
          </Button>
        </div>
      </div>
      {status === "loading" && workflows.length === 0 && <Empty>Loading…</Empty>}
      {status === "failed" && <Empty>Cannot list workflows (is the API running?)</Empty>}
      {status === "done" && workflows.length === 0 && <Empty>No saved workflows yet.</Empty>}
      <ul className="space-y-0.5">
        {workflows.map((w) => {
          const current = w.id === savedId;
          return (
            <li key={w.id}>
              <div className={`group flex items-center rounded-md ${current ? "bg-indigo-50" : "hover:bg-slate-100"}`}>
                <button type="button" data-testid={`workflow-item-${w.id}`} className="min-w-0 flex-1 px-2 py-1 text-left" onClick={() => guard() && void openWorkflow(w.id)} title={w.description ?? undefined}>
                  <span className={`block truncate text-sm ${current ? "font-semibold text-indigo-700" : "text-slate-700"}`}>{w.name}</span>
                  <span className="block truncate font-mono text-[10px] text-slate-400">
                    {w.id} · v{w.version}
                  </span>
                </button>
                <button type="button" aria-label={`delete ${w.id}`} data-testid={`workflow-delete-${w.id}`} className="invisible px-2 text-xs text-slate-400 hover:text-rose-600 group-hover:visible" onClick={() => confirm(`Delete workflow ${w.id} and all its versions?`) && void deleteWorkflow(w.id)}>
                  ✕
                </button>
              </div>
              {current && versions.length > 0 && (
                <ul className="mb-1 ml-3 border-l border-indigo-100 pl-2" data-testid="version-list">
                  {versions.map((v) => {
                    const active = viewingVersion === null ? v.version === (savedVersion ?? versions[0].version) : v.version === viewingVersion;
                    return (
                      <li key={v.version}>
                        <button type="button" data-testid={`version-item-${v.version}`} className={`flex w-full justify-between rounded px-1 py-0.5 text-left text-[11px] ${active ? "bg-indigo-100 text-indigo-700" : "text-slate-500 hover:bg-slate-100"}`} onClick={() => guard() && void openVersion(v.version)}>
                          <span>v{v.version}</span>
                          <span className="text-slate-400">{formatTime(v.created_at)}</span>
                        </button>
                      </li>
                    );
                  })}
                </ul>
              )}
            </li>
          );
        })}
      </ul>
    </div>
  );
}
