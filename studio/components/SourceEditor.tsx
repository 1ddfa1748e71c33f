"use client";
/**
 * Sources: those in this workflow (part of the spec) and the reusable library on the
 * server (`/sources`). A source names environment variables; Studio never asks for the
 * secret values themselves.
 */
import { useEffect, useState, type ReactNode } from "react";
import { schemaSourceKinds, sourceSchema } from "@/lib/schema";
import { sourcesOf } from "@/lib/spec";
import type { SourceKind, SourceSpec } from "@/lib/types";
import { useWorkflowStore } from "@/lib/useWorkflowStore";
import { IdInput, SchemaForm, type FieldProps, type Obj } from "./SchemaForm";
import { Button, Empty, errorInputClass, inputClass, Section } from "./ui";

const SECRET_LIKE = /^(sk-|xox|ghp_|AKIA)|:\/\/|\s/;

/** An environment-variable name, never its value. */
function EnvInput({ p }: { p: FieldProps }) {
  const v = typeof p.value === "string" ? p.value : "";
  const secret = v !== "" && SECRET_LIKE.test(v);
  return (
    <div>
      <div className="flex items-center">
        <span className="rounded-l-md border border-r-0 border-slate-300 bg-slate-100 px-2 py-1 font-mono text-xs text-slate-500">$</span>
        <input data-testid={p.testId} className={`${inputClass} rounded-l-none font-mono ${p.invalid || secret ? errorInputClass : ""}`} value={v} placeholder="ENV_VAR_NAME" onChange={(e) => p.onChange(e.target.value === "" ? undefined : e.target.value)} />
      </div>
      {secret && <p className="text-xs text-rose-600">This looks like a secret or a URL: enter the variable’s name instead.</p>}
    </div>
  );
}

function sourceWidgets(id: string, taken: string[], onRename: (v: string) => void, schemaKeys: string[]) {
  const widgets: Record<string, (p: FieldProps) => ReactNode> = {
    id: (p) => <IdInput testId={p.testId} value={id} taken={taken} onCommit={onRename} />,
  };
  for (const k of schemaKeys) if (k.endsWith("_env")) widgets[k] = (p) => <EnvInput p={p} />;
  return widgets;
}

function blankSource(kind: SourceKind, id: string): SourceSpec {
  switch (kind) {
    case "llm":
      return { id, kind, model: "gpt-4o-mini", api_key_env: "OPENAI_API_KEY" };
    case "image":
      return { id, kind, model: "dall-e-3", api_key_env: "OPENAI_API_KEY" };
    case "db":
      return { id, kind, driver: "postgresql", dsn_env: "DATABASE_DSN" };
    case "mcp":
      return { id, kind, transport: "http", url: "http://127.0.0.1:9000/mcp" };
    default:
      return { id, kind: "api", base_url: "https://api.example.com" };
  }
}

function SourceForm({ source, testPrefix, taken, onChange, problems }: { source: SourceSpec; testPrefix: string; taken: string[]; onChange(s: SourceSpec): void; problems?: Record<string, string[]> }) {
  const schema = sourceSchema(source.kind);
  if (!schema) return <p className="text-xs text-rose-600">Unknown source kind “{String(source.kind)}”: edit it in the JSON tab.</p>;
  const keys = Object.keys(schema.properties ?? {});
  return (
    <SchemaForm
      schema={schema}
      value={source as unknown as Obj}
      omit={["kind"]}
      testPrefix={testPrefix}
      problems={problems}
      onChange={(next) => onChange(next as unknown as SourceSpec)}
      widgets={sourceWidgets(source.id, taken, (v) => onChange({ ...source, id: v }), keys)}
    />
  );
}

function KindPicker({ onAdd, testId, label }: { onAdd(kind: SourceKind): void; testId: string; label: string }) {
  const [kind, setKind] = useState<SourceKind>("llm");
  return (
    <div className="flex items-center gap-1">
      <select data-testid={`${testId}-kind`} className={`${inputClass} w-24 py-0.5 text-xs`} value={kind} onChange={(e) => setKind(e.target.value as SourceKind)}>
        {schemaSourceKinds().map((k) => (
          <option key={k} value={k}>
            {k}
          </option>
        ))}
      </select>
      <Button data-testid={testId} className="text-xs" onClick={() => onAdd(kind)}>
        {label}
      </Button>
    </div>
  );
}

export function SourceEditor() {
  const spec = useWorkflowStore((s) => s.spec);
  const upsert = useWorkflowStore((s) => s.upsertSource);
  const remove = useWorkflowStore((s) => s.removeSource);
  const publish = useWorkflowStore((s) => s.publishSource);
  const index = useWorkflowStore((s) => s.validation.index.sources);
  const library = useWorkflowStore((s) => s.library);
  const libraryStatus = useWorkflowStore((s) => s.libraryStatus);
  const loadLibrary = useWorkflowStore((s) => s.loadLibrary);
  const sources = sourcesOf(spec);
  const ids = sources.map((s) => s.id);

  useEffect(() => {
    if (libraryStatus === "idle") void loadLibrary();
  }, [libraryStatus, loadLibrary]);

  return (
    <div data-testid="source-editor">
      <Section
        title="Sources in this workflow"
        actions={
          <KindPicker
            testId="source-add"
            label="+ Source"
            onAdd={(kind) => {
              let n = 1;
              while (ids.includes(n === 1 ? kind : `${kind}_${n}`)) n++;
              upsert(null, blankSource(kind, n === 1 ? kind : `${kind}_${n}`));
            }}
          />
        }
      >
        {sources.length === 0 && <Empty>No sources yet. LLM, image, database and API nodes need one.</Empty>}
        <div className="space-y-3">
          {sources.map((s, i) => {
            const problems: Record<string, string[]> = {};
            for (const p of index[s.id] ?? []) (problems[p.target.kind === "source" ? p.target.field : ""] ??= []).push(p.message);
            const users = spec.nodes.filter((n) => n.source === s.id).map((n) => n.id);
            return (
              <div key={i} className="rounded-lg border border-slate-200 bg-white p-3 shadow-sm" data-testid={`source-${s.id}`}>
                <div className="mb-2 flex items-center justify-between gap-2">
                  <span className="font-mono text-sm font-semibold text-slate-700">{s.id}</span>
                  <span className="rounded bg-slate-100 px-1.5 py-0.5 text-[10px] font-semibold uppercase text-slate-500">{s.kind}</span>
                  <span className="flex-1" />
                  <Button variant="ghost" className="text-xs" data-testid={`source-${s.id}-publish`} title="Save to the server's source library" onClick={() => void publish(s)}>
                    Save to library
                  </Button>
                  <Button variant="ghost" className="text-xs text-rose-600" data-testid={`source-${s.id}-delete`} onClick={() => remove(i)}>
                    Remove
                  </Button>
                </div>
                {(problems[""] ?? []).map((m, j) => (
                  <p key={j} className="mb-2 text-xs text-rose-600">
                    {m}
                  </p>
                ))}
                <SourceForm source={s} testPrefix={`source-${s.id}`} taken={ids.filter((_, j) => j !== i)} problems={problems} onChange={(next) => upsert(i, next)} />
                <p className="mt-2 text-[11px] text-slate-400">{users.length ? `Used by ${users.join(", ")}` : "No node uses this source yet."}</p>
              </div>
            );
          })}
        </div>
      </Section>
      <Library library={library} status={libraryStatus} workflowIds={ids} />
    </div>
  );
}

function Library({ library, status, workflowIds }: { library: SourceSpec[]; status: string; workflowIds: string[] }) {
  const loadLibrary = useWorkflowStore((s) => s.loadLibrary);
  const publish = useWorkflowStore((s) => s.publishSource);
  const del = useWorkflowStore((s) => s.deleteLibrarySource);
  const use = useWorkflowStore((s) => s.useLibrarySource);
  const [draft, setDraft] = useState<SourceSpec | null>(null);
  const [editing, setEditing] = useState<string | null>(null);
  const [editDraft, setEditDraft] = useState<SourceSpec | null>(null);
  const libIds = library.map((s) => s.id);
  return (
    <Section
      title="Source library (server)"
      actions={
        <div className="flex items-center gap-1">
          <Button variant="ghost" className="text-xs" data-testid="library-refresh" onClick={() => void loadLibrary()}>
            ↻
          </Button>
          <KindPicker testId="library-new" label="+ New" onAdd={(kind) => setDraft(blankSource(kind, `${kind}_source`))} />
        </div>
      }
    >
      {draft && (
        <div className="mb-3 rounded-lg border border-indigo-200 bg-indigo-50/40 p-3" data-testid="library-draft">
          <SourceForm source={draft} testPrefix="library-draft" taken={libIds} onChange={setDraft} />
          <div className="mt-2 flex gap-2">
            <Button variant="primary" className="text-xs" data-testid="library-draft-create" onClick={async () => (await publish(draft)) && setDraft(null)}>
              Create
            </Button>
            <Button variant="ghost" className="text-xs" onClick={() => setDraft(null)}>
              Cancel
            </Button>
          </div>
        </div>
      )}
      {status === "loading" && <Empty>Loading…</Empty>}
      {status === "failed" && <Empty>The source library is not available.</Empty>}
      {status === "done" && library.length === 0 && <Empty>No shared sources yet. “Save to library” on a source above shares it between workflows.</Empty>}
      <ul className="space-y-1">
        {library.map((s) => (
          <li key={s.id} className="rounded-md border border-slate-200 bg-white px-2 py-1.5" data-testid={`library-${s.id}`}>
            <div className="flex items-center gap-2">
              <span className="font-mono text-sm text-slate-700">{s.id}</span>
              <span className="rounded bg-slate-100 px-1.5 py-0.5 text-[10px] font-semibold uppercase text-slate-500">{s.kind}</span>
              <span className="truncate text-xs text-slate-400">{"model" in s ? s.model : "driver" in s ? s.driver : "base_url" in s ? s.base_url : ""}</span>
              <span className="flex-1" />
              <Button variant="ghost" className="text-xs" data-testid={`library-${s.id}-use`} onClick={() => use(s)}>
                {workflowIds.includes(s.id) ? "Replace in workflow" : "Use"}
              </Button>
              <Button
                variant="ghost"
                className="text-xs"
                data-testid={`library-${s.id}-edit`}
                onClick={() => {
                  setEditing(editing === s.id ? null : s.id);
                  setEditDraft(s);
                }}
              >
                Edit
              </Button>
              <Button variant="ghost" className="text-xs text-rose-600" data-testid={`library-${s.id}-delete`} onClick={() => confirm(`Delete source ${s.id} from the library?`) && void del(s.id)}>
                Delete
              </Button>
            </div>
            {editing === s.id && editDraft && (
              <div className="mt-2 border-t border-slate-100 pt-2">
                <SourceForm source={editDraft} testPrefix={`library-${s.id}-form`} taken={libIds.filter((x) => x !== s.id)} onChange={setEditDraft} />
                <Button variant="primary" className="mt-2 text-xs" data-testid={`library-${s.id}-save`} onClick={async () => (await publish({ ...editDraft, id: s.id })) && setEditing(null)}>
                  Save
                </Button>
              </div>
            )}
          </li>
        ))}
      </ul>
    </Section>
  );
}

