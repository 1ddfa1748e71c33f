"use client";
/** The right-hand tabs: properties, queues, sources, JSON, problems and runs. */
import { useWorkflowStore, type RightTab } from "@/lib/useWorkflowStore";
import { HistoryPanel } from "./HistoryPanel";
import { JsonPreview } from "./JsonPreview";
import { PropertiesPanel } from "./PropertiesPanel";
import { QueueEditor } from "./QueueEditor";
import { ReplayPanel } from "./ReplayPanel";
import { RunPanel } from "./RunPanel";
import { SourceEditor } from "./SourceEditor";
import { ValidationPanel } from "./ValidationPanel";

const TABS: { id: RightTab; label: string }[] = [
  { id: "properties", label: "Properties" },
  { id: "queues", label: "Queues" },
  { id: "sources", label: "Sources" },
  { id: "json", label: "JSON" },
  { id: "problems", label: "Problems" },
  { id: "run", label: "Run" },
  { id: "history", label: "History" },
  { id: "replay", label: "Replay" },
];

export function RightPanel() {
  const tab = useWorkflowStore((s) => s.tab);
  const setTab = useWorkflowStore((s) => s.setTab);
  const problems = useWorkflowStore((s) => s.validation.problems.length);
  const runStatus = useWorkflowStore((s) => s.runView.run?.status);
  const replaying = useWorkflowStore((s) => s.replay.status !== "idle");
  const comparing = useWorkflowStore((s) => s.compare !== null);
  const schemaRevision = useWorkflowStore((s) => s.schemaRevision); // forms follow the server's schema
  return (
    <aside className="flex h-full w-[460px] shrink-0 flex-col border-l border-slate-200 bg-slate-50">
      <nav className="flex shrink-0 overflow-x-auto border-b border-slate-200 bg-white px-1" role="tablist">
        {TABS.map((t) => (
          <button
            key={t.id}
            type="button"
            role="tab"
            aria-selected={tab === t.id}
            data-testid={`tab-${t.id}`}
            onClick={() => setTab(t.id)}
            className={`relative whitespace-nowrap px-1.5 py-2 text-xs font-medium ${tab === t.id ? "text-indigo-700 after:absolute after:inset-x-1 after:bottom-0 after:h-0.5 after:bg-indigo-600" : "text-slate-500 hover:text-slate-700"}`}
          >
            {t.label}
            {t.id === "problems" && problems > 0 && <span className="ml-1 rounded-full bg-rose-500 px-1.5 text-[10px] text-white">{problems}</span>}
            {t.id === "history" && comparing && <span className="ml-1 inline-block h-1.5 w-1.5 rounded-full bg-amber-500" />}
            {t.id === "replay" && replaying && <span className="ml-1 inline-block h-1.5 w-1.5 rounded-full bg-indigo-500" />}
            {t.id === "run" && runStatus && <span className={`ml-1 inline-block h-1.5 w-1.5 rounded-full ${runStatus === "succeeded" ? "bg-emerald-500" : runStatus === "failed" ? "bg-rose-500" : "bg-blue-500"}`} />}
          </button>
        ))}
      </nav>
      <div key={schemaRevision} className="min-h-0 flex-1 overflow-y-auto" role="tabpanel" data-testid={`panel-${tab}`}>
        {tab === "properties" && <PropertiesPanel />}
        {tab === "queues" && <QueueEditor />}
        {tab === "sources" && <SourceEditor />}
        {tab === "json" && <JsonPreview />}
        {tab === "problems" && <ValidationPanel />}
        {tab === "run" && <RunPanel />}
        {tab === "history" && <HistoryPanel />}
        {tab === "replay" && <ReplayPanel />}
      </div>
    </aside>
  );
}
