"use client";
/** Problems found by `POST /workflows/validate`; each one jumps to what it names. */
import { edgesOf, flowEdgeId, targetsOf } from "@/lib/spec";
import { useWorkflowStore, type Problem } from "@/lib/useWorkflowStore";
import { Button, Empty } from "./ui";

function describe(p: Problem): string {
  const t = p.target;
  switch (t.kind) {
    case "node":
      return `node ${t.id}`;
    case "edge":
      return `edge #${t.index + 1}`;
    case "queue":
      return `queue ${t.id}`;
    case "source":
      return `source ${t.id}`;
    default:
      return "workflow";
  }
}

export function ValidationPanel() {
  const v = useWorkflowStore((s) => s.validation);
  const busy = useWorkflowStore((s) => s.busy.validate);
  const validate = useWorkflowStore((s) => s.validate);
  const select = useWorkflowStore((s) => s.select);
  const setTab = useWorkflowStore((s) => s.setTab);
  const spec = useWorkflowStore((s) => s.spec);

  const go = (p: Problem) => {
    const t = p.target;
    if (t.kind === "node") {
      select([t.id], []);
      setTab("properties");
    } else if (t.kind === "edge") {
      const e = edgesOf(spec)[t.index];
      if (e) {
        select([], targetsOf(e).slice(0, 1).map((x) => flowEdgeId(t.index, x)));
        setTab("properties");
      }
    } else if (t.kind === "queue") setTab("queues");
    else if (t.kind === "source") setTab("sources");
    else {
      select([], []);
      setTab("properties");
    }
  };

  let status = "Not validated yet";
  if (v.status === "running") status = "Validating…";
  else if (v.status === "failed") status = `Validation failed: ${v.message ?? ""}`;
  else if (v.status === "done") status = v.valid ? "Valid" : `${v.problems.length} problem${v.problems.length === 1 ? "" : "s"}`;

  return (
    <div className="p-3">
      <div className="mb-3 flex items-center justify-between">
        <div>
          <h2 className="text-sm font-semibold text-slate-700">Validation</h2>
          <p data-testid="validation-status" data-valid={v.valid === null ? "" : String(v.valid)} className={`text-xs ${v.valid ? "text-emerald-600" : v.status === "done" || v.status === "failed" ? "text-rose-600" : "text-slate-400"}`}>
            {status}
          </p>
        </div>
        <Button variant="primary" className="text-xs" disabled={busy} data-testid="validate-again" onClick={() => void validate()}>
          {busy ? "Validating…" : "Validate"}
        </Button>
      </div>
      {v.stale && <p className="mb-2 rounded bg-amber-50 px-2 py-1 text-xs text-amber-700">The workflow changed since this validation.</p>}
      {v.status === "done" && v.valid && <Empty>No problems: the workflow can run.</Empty>}
      <ul className="space-y-1" data-testid="problem-list">
        {v.problems.map((p, i) => (
          <li key={i}>
            <button type="button" data-testid="problem-item" data-path={p.path} className="w-full rounded-md border border-rose-200 bg-rose-50 px-2 py-1.5 text-left hover:bg-rose-100" onClick={() => go(p)}>
              <div className="flex items-baseline justify-between gap-2">
                <span className="text-xs font-semibold text-rose-700">{describe(p)}</span>
                <span className="font-mono text-[10px] text-rose-400">{p.path || "(spec)"}</span>
              </div>
              <p className="text-xs text-rose-700">{p.message}</p>
            </button>
          </li>
        ))}
      </ul>
    </div>
  );
}
