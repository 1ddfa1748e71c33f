"use client";
/** Versions of the open workflow: compare two (the diff is also drawn on the canvas), open or restore one. */
import { useEffect, useState } from "react";
import { diffSize, edgeEnds } from "@/lib/history";
import type { DiffEdge, DiffSection } from "@/lib/types";
import { useWorkflowStore } from "@/lib/useWorkflowStore";
import { Button, Empty, formatTime, inputClass, Section } from "./ui";

const CHIP: Record<string, string> = {
  added: "border-emerald-200 bg-emerald-50 text-emerald-700",
  removed: "border-rose-200 bg-rose-50 text-rose-700 line-through decoration-rose-300",
  changed: "border-amber-200 bg-amber-50 text-amber-800",
};
const SIGN: Record<string, string> = { added: "+", removed: "−", changed: "~" };

function edgeText(e: DiffEdge): string {
  const ends = edgeEnds(e);
  if (!ends) return typeof e === "string" ? e : JSON.stringify(e);
  const to = ends.to.length > 1 ? `[${ends.to.join(", ")}]` : ends.to[0];
  return `${ends.from} → ${to}${ends.condition ? ` if ${ends.condition}` : ""}`;
}

function SectionDiff({ name, kind, section }: { name: string; kind: string; section: DiffSection }) {
  if (!section.added.length && !section.removed.length && !section.changed.length) return null;
  return (
    <div data-testid={`diff-${kind}`} className="space-y-1">
      <h4 className="text-[11px] font-semibold uppercase tracking-wide text-slate-400">{name}</h4>
      <ul className="flex flex-wrap gap-1">
        {section.added.map((id) => (
          <li key={`a-${id}`} data-testid={`diff-${kind}-added-${id}`} className={`rounded border px-1.5 py-0.5 font-mono text-[11px] ${CHIP.added}`}>
            {SIGN.added} {id}
          </li>
        ))}
        {section.removed.map((id) => (
          <li key={`r-${id}`} data-testid={`diff-${kind}-removed-${id}`} className={`rounded border px-1.5 py-0.5 font-mono text-[11px] ${CHIP.removed}`}>
            {SIGN.removed} {id}
          </li>
        ))}
      </ul>
      {section.changed.length > 0 && (
        <ul className="space-y-0.5">
          {section.changed.map((c) => (
            <li key={`c-${c.id}`} data-testid={`diff-${kind}-changed-${c.id}`} className={`rounded border px-1.5 py-0.5 text-[11px] ${CHIP.changed}`}>
              <span className="font-mono font-semibold">
                {SIGN.changed} {c.id}
              </span>
              {c.fields.length > 0 && <span className="ml-1 font-mono text-amber-700">{c.fields.join(", ")}</span>}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

export function HistoryPanel() {
  const savedId = useWorkflowStore((s) => s.savedId);
  const versions = useWorkflowStore((s) => s.versions);
  const savedVersion = useWorkflowStore((s) => s.savedVersion);
  const viewingVersion = useWorkflowStore((s) => s.viewingVersion);
  const dirty = useWorkflowStore((s) => s.dirty);
  const compare = useWorkflowStore((s) => s.compare);
  const overlayKind = useWorkflowStore((s) => s.overlay?.kind ?? null);
  const { compareVersions, closeCompare, restoreVersion, openVersion, loadVersions, showOverlay } = useWorkflowStore.getState();

  const newest = versions[0]?.version ?? null;
  const [from, setFrom] = useState<number | null>(null);
  const [to, setTo] = useState<number | null>(null);
  // Default: the version before the newest against the newest.
  useEffect(() => {
    if (!versions.length) return;
    const has = (v: number | null) => v !== null && versions.some((x) => x.version === v);
    setTo((t) => (has(t) ? t : versions[0].version));
    setFrom((f) => (has(f) ? f : versions[Math.min(1, versions.length - 1)].version));
  }, [versions]);

  useEffect(() => {
    if (savedId) void loadVersions();
  }, [savedId, loadVersions]);

  if (!savedId) {
    return (
      <div data-testid="history-panel">
        <Section title="History">
          <Empty>Save the workflow to keep versions: every save is a new version.</Empty>
        </Section>
      </div>
    );
  }

  const guard = () => !dirty || confirm("Discard the unsaved changes of the open workflow?");
  const current = viewingVersion ?? savedVersion;
  const diff = compare?.diff ?? null;

  return (
    <div data-testid="history-panel">
      <Section title="Compare versions">
        {versions.length < 2 && <Empty>Save another version to compare.</Empty>}
        {versions.length >= 2 && (
          <div className="flex items-center gap-2 text-xs">
            <select data-testid="history-from" aria-label="Older version" className={`${inputClass} w-auto`} value={from ?? ""} onChange={(e) => setFrom(Number(e.target.value))}>
              {versions.map((v) => (
                <option key={v.version} value={v.version}>
                  v{v.version}
                </option>
              ))}
            </select>
            <span className="text-slate-400">→</span>
            <select data-testid="history-to" aria-label="Newer version" className={`${inputClass} w-auto`} value={to ?? ""} onChange={(e) => setTo(Number(e.target.value))}>
              {versions.map((v) => (
                <option key={v.version} value={v.version}>
                  v{v.version}
                </option>
              ))}
            </select>
            <Button variant="primary" data-testid="history-compare" disabled={from === null || to === null || from === to || compare?.status === "loading"} onClick={() => from !== null && to !== null && void compareVersions(from, to)}>
              Compare
            </Button>
          </div>
        )}
        {compare && (
          <div data-testid="diff-summary" data-status={compare.status} data-from={compare.from} data-to={compare.to} className="mt-3 space-y-2">
            <div className="flex items-center justify-between">
              <span className="text-xs font-semibold text-slate-600">
                v{compare.from} → v{compare.to}
                {diff && <span className="ml-2 font-normal text-slate-400" data-testid="diff-count">{diffSize(diff) === 0 ? "no differences" : `${diffSize(diff)} difference${diffSize(diff) === 1 ? "" : "s"}`}</span>}
              </span>
              <span className="flex gap-1">
                {diff && overlayKind !== "diff" && (
                  <Button variant="ghost" className="text-xs" data-testid="diff-show" onClick={() => void showOverlay("diff")}>
                    Show on canvas
                  </Button>
                )}
                <Button variant="ghost" className="text-xs" data-testid="diff-close" onClick={closeCompare}>
                  ✕ Close
                </Button>
              </span>
            </div>
            {compare.status === "loading" && <Empty>Comparing…</Empty>}
            {compare.status === "failed" && <p className="text-xs text-rose-600">{compare.error}</p>}
            {diff && (
              <>
                <SectionDiff name="Nodes" kind="node" section={diff.nodes} />
                {(diff.edges.added.length > 0 || diff.edges.removed.length > 0) && (
                  <div data-testid="diff-edges" className="space-y-1">
                    <h4 className="text-[11px] font-semibold uppercase tracking-wide text-slate-400">Edges</h4>
                    <ul className="space-y-0.5">
                      {diff.edges.added.map((e, i) => (
                        <li key={`a${i}`} data-testid="diff-edge-added" className={`rounded border px-1.5 py-0.5 font-mono text-[11px] ${CHIP.added}`}>
                          + {edgeText(e)}
                        </li>
                      ))}
                      {diff.edges.removed.map((e, i) => (
                        <li key={`r${i}`} data-testid="diff-edge-removed" className={`rounded border px-1.5 py-0.5 font-mono text-[11px] ${CHIP.removed}`}>
                          − {edgeText(e)}
                        </li>
                      ))}
                    </ul>
                  </div>
                )}
                <SectionDiff name="Queues" kind="queue" section={diff.queues} />
                <SectionDiff name="Sources" kind="source" section={diff.sources} />
                {diff.top.length > 0 && (
                  <div data-testid="diff-top" className="space-y-1">
                    <h4 className="text-[11px] font-semibold uppercase tracking-wide text-slate-400">Workflow</h4>
                    <ul className="flex flex-wrap gap-1">
                      {diff.top.map((f) => (
                        <li key={f} className={`rounded border px-1.5 py-0.5 font-mono text-[11px] ${CHIP.changed}`}>
                          ~ {f}
                        </li>
                      ))}
                    </ul>
                  </div>
                )}
              </>
            )}
          </div>
        )}
      </Section>

      <Section
        title="Versions"
        actions={
          <Button variant="ghost" className="text-xs" data-testid="history-refresh" title="Refresh" onClick={() => void loadVersions()}>
            ↻
          </Button>
        }
      >
        {versions.length === 0 && <Empty>No versions yet.</Empty>}
        <ul className="space-y-1">
          {versions.map((v) => {
            const open = v.version === current;
            return (
              <li key={v.version} data-testid={`history-version-${v.version}`} className={`flex items-center gap-2 rounded-md border px-2 py-1.5 text-xs ${open ? "border-indigo-200 bg-indigo-50" : "border-slate-200 bg-white"}`}>
                <span className="w-8 font-semibold text-slate-700">v{v.version}</span>
                <span className="min-w-0 flex-1">
                  <span className="block truncate text-slate-500">{formatTime(v.created_at)}</span>
                  {(Boolean(v.author) || (v.editors?.length ?? 0) > 0) && (
                    <span data-testid={`history-who-${v.version}`} className="block truncate text-slate-500" title={v.editors?.length ? `edited by ${v.editors.join(", ")}` : undefined}>
                      {v.author ? `saved by ${v.author}` : ""}
                      {v.editors && v.editors.length > 0 ? `${v.author ? " · " : ""}edited by ${v.editors.join(", ")}` : ""}
                    </span>
                  )}
                  {v.spec_hash && <span className="block truncate font-mono text-[10px] text-slate-400" title={v.spec_hash}>{v.spec_hash.slice(0, 12)}</span>}
                </span>
                {v.version === newest && <span className="rounded bg-slate-100 px-1 text-[10px] text-slate-500">current</span>}
                {open && <span className="rounded bg-indigo-100 px-1 text-[10px] text-indigo-700">open</span>}
                {!open && (
                  <Button variant="ghost" className="px-1.5 text-xs" data-testid={`history-open-${v.version}`} title="Open this version in the designer" onClick={() => guard() && void openVersion(v.version)}>
                    Open
                  </Button>
                )}
                {v.version !== newest && (
                  <Button className="px-1.5 text-xs" data-testid={`history-restore-${v.version}`} title="Make this version current again (saved as a new version)" onClick={() => guard() && void restoreVersion(v.version)}>
                    ↺ Restore
                  </Button>
                )}
              </li>
            );
          })}
        </ul>
      </Section>
    </div>
  );
}
