"use client";
import { useEffect, useState } from "react";
import * as api from "@/lib/api";
import { childProgress, childrenByNode, parentLink } from "@/lib/children";
import type { ChildRun } from "@/lib/types";
import { StatusBadge } from "./ui";

/** The child runs of workflow and map nodes: per node "n of m children done", each child
 * with a link that opens it. The live event stream carries the parent's steps only, so
 * the children are read from GET /runs/{id} every second while the run is live. */
export function ChildRuns({ run, live, open }: { run: { run_id: string; children?: ChildRun[] }; live: boolean; open(runId: string): void }) {
  const [children, setChildren] = useState<ChildRun[]>(run.children ?? []);
  useEffect(() => {
    let stop = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const read = async () => {
      try {
        const rec = await api.getRun(run.run_id);
        if (!stop) setChildren(rec.children ?? []);
      } catch {
        /* the next poll may answer; the run panel shows the run's own errors */
      }
      if (!stop && live) timer = setTimeout(read, 1000);
    };
    void read();
    return () => {
      stop = true;
      if (timer) clearTimeout(timer);
    };
  }, [run.run_id, live]);
  const groups = childrenByNode(children);
  const nodes = Object.keys(groups);
  return (
    <div data-testid="run-children">
      <h4 className="mb-1 text-xs font-semibold text-slate-500">Child runs</h4>
      {nodes.length === 0 && <p className="text-xs text-slate-400">{live ? "None started yet." : "None."}</p>}
      {nodes.map((nodeId) => {
        const list = groups[nodeId];
        const p = childProgress(list);
        return (
          <div key={nodeId} className="mb-2" data-testid={`run-children-${nodeId}`} data-done={p.done} data-total={p.total} data-failed={p.failed}>
            <div className="mb-1 flex items-center gap-2 text-xs">
              <span className="font-mono text-slate-600">{nodeId}</span>
              <span data-testid={`run-children-progress-${nodeId}`} className="text-slate-500">
                {p.done} of {p.total} children done{p.failed ? `, ${p.failed} failed (items ${p.failedIndexes.join(", ")})` : ""}
              </span>
            </div>
            <div className="mb-1 h-1.5 overflow-hidden rounded bg-slate-100">
              <div className={`h-full ${p.failed ? "bg-rose-400" : "bg-emerald-400"}`} style={{ width: `${p.total ? (100 * p.done) / p.total : 0}%` }} />
            </div>
            <ul className="max-h-40 space-y-0.5 overflow-y-auto">
              {list.map((c) => (
                <li key={c.run_id} className="flex items-center gap-2 text-[11px]">
                  <span className="w-8 text-right text-slate-400">#{c.index}</span>
                  <StatusBadge status={c.status} />
                  <button type="button" data-testid="run-child-open" data-run-id={c.run_id} className="truncate font-mono text-indigo-600 hover:underline" title={c.error ?? `open child run of ${c.workflow_id}`} onClick={() => open(c.run_id)}>
                    {c.workflow_id} · {c.run_id.slice(0, 8)}
                  </button>
                </li>
              ))}
            </ul>
          </div>
        );
      })}
    </div>
  );
}

/** "Child of <parent>" (two cells of a label/value grid) when the run is a child run. */
export function ChildOf({ run, open, testId }: { run: { parent_run_id?: string | null; rerun_from?: string | null }; open(runId: string): void; testId: string }) {
  const link = parentLink(run);
  if (link?.kind !== "child") return null;
  return (
    <>
      <span className="text-slate-400">Child of</span>
      <button type="button" className="truncate text-left font-mono text-indigo-600 hover:underline" data-testid={testId} onClick={() => open(link.runId)}>
        {link.runId}
      </button>
    </>
  );
}
