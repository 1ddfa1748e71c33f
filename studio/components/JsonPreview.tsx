"use client";
/**
 * The spec as JSON, live both ways: canvas edits show here at once, and valid JSON typed
 * here is applied to the canvas. Invalid JSON is shown with its error and not applied.
 */
import { useMemo, useState } from "react";
import { asSpec } from "@/lib/spec";
import { useWorkflowStore } from "@/lib/useWorkflowStore";
import { Button } from "./ui";

export function specText(spec: unknown): string {
  return JSON.stringify(spec, null, 2);
}

function lineOf(text: string, message: string): string {
  const m = /position (\d+)/.exec(message);
  if (!m || /line \d+/.test(message)) return message;
  const pos = Number(m[1]);
  const line = text.slice(0, pos).split("\n").length;
  return `${message} (line ${line})`;
}

export function JsonPreview() {
  const spec = useWorkflowStore((s) => s.spec);
  const applyJson = useWorkflowStore((s) => s.applyJson);
  const text = useMemo(() => specText(spec), [spec]);
  const [draft, setDraft] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const shown = draft ?? text;

  const onEdit = (t: string) => {
    setDraft(t);
    let parsed: unknown;
    try {
      parsed = JSON.parse(t);
    } catch (e) {
      setError(`Invalid JSON, not applied: ${lineOf(t, (e as Error).message)}`);
      return;
    }
    const r = asSpec(parsed);
    if (r.error) {
      setError(`Not applied: ${r.error}`);
      return;
    }
    setError(null);
    applyJson(r.spec!);
  };

  return (
    <div className="flex h-full flex-col p-3">
      <div className="mb-2 flex items-center justify-between">
        <div>
          <h2 className="text-sm font-semibold text-slate-700">Workflow JSON</h2>
          <p className="text-xs text-slate-400">Edit here and the canvas follows.</p>
        </div>
        <div className="flex gap-1">
          {draft !== null && (
            <Button variant="ghost" className="text-xs" data-testid="json-revert" onClick={() => (setDraft(null), setError(null))}>
              {error ? "Discard edits" : "Reformat"}
            </Button>
          )}
          <Button variant="ghost" className="text-xs" data-testid="json-copy" onClick={() => void navigator.clipboard?.writeText(shown)}>
            Copy
          </Button>
        </div>
      </div>
      {error && (
        <p data-testid="json-error" className="mb-2 rounded-md border border-rose-200 bg-rose-50 px-2 py-1 text-xs text-rose-700">
          {error}
        </p>
      )}
      <textarea
        data-testid="json-preview"
        spellCheck={false}
        className={`min-h-0 flex-1 resize-none rounded-md border bg-slate-900 p-2 font-mono text-xs leading-relaxed text-slate-100 focus:outline-none focus:ring-2 ${error ? "border-rose-500 focus:ring-rose-500" : "border-slate-700 focus:ring-indigo-500"}`}
        value={shown}
        onChange={(e) => onEdit(e.target.value)}
        onBlur={() => {
          if (!error) setDraft(null);
        }}
      />
    </div>
  );
}
