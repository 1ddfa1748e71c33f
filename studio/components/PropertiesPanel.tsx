"use client";
/** Settings of what is selected: a node, an edge, or (nothing selected) the workflow. */
import { useEffect, useMemo, useState, type ReactNode } from "react";
import * as api from "@/lib/api";
import { metaOf } from "@/lib/nodeMeta";
import { edgeSchema, nodeConfigSchema, nodeSchema, rootSchema } from "@/lib/schema";
import { edgesOf, parseFlowEdgeId, queuesOf, sourcesOf, targetsOf } from "@/lib/spec";
import { NODE_SOURCE_KIND, type NodeType, type SpecEdge, type SpecNode } from "@/lib/types";
import { useWorkflowStore, type Problem } from "@/lib/useWorkflowStore";
import { IdInput, SchemaForm, setKey, type FieldProps, type Obj } from "./SchemaForm";
import { Icon } from "./Icon";
import { Button, Empty, inputClass } from "./ui";

function byField(problems: Problem[] | undefined): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const p of problems ?? []) (out["field" in p.target ? p.target.field : ""] ??= []).push(p.message);
  return out;
}

function ProblemList({ problems }: { problems: string[] }) {
  if (!problems.length) return null;
  return (
    <ul className="mb-3 space-y-1 rounded-md border border-rose-200 bg-rose-50 p-2 text-xs text-rose-700">
      {problems.map((m, i) => (
        <li key={i}>{m}</li>
      ))}
    </ul>
  );
}

export function PropertiesPanel() {
  const selectedNodes = useWorkflowStore((s) => s.selectedNodes);
  const selectedEdges = useWorkflowStore((s) => s.selectedEdges);
  if (selectedNodes.length === 1 && selectedEdges.length === 0) return <NodeProperties id={selectedNodes[0]} />;
  if (selectedEdges.length === 1 && selectedNodes.length === 0) return <EdgeProperties flowId={selectedEdges[0]} />;
  if (selectedNodes.length + selectedEdges.length > 1) return <MultiSelection />;
  return <WorkflowProperties />;
}

function MultiSelection() {
  const nodes = useWorkflowStore((s) => s.selectedNodes);
  const edges = useWorkflowStore((s) => s.selectedEdges);
  const del = useWorkflowStore((s) => s.deleteSelection);
  return (
    <div className="p-3">
      <p className="mb-2 text-sm text-slate-600">
        {nodes.length} node{nodes.length === 1 ? "" : "s"} and {edges.length} edge{edges.length === 1 ? "" : "s"} selected.
      </p>
      <Button variant="danger" data-testid="delete-selection" onClick={del}>
        Delete selection
      </Button>
    </div>
  );
}

function WorkflowProperties() {
  const spec = useWorkflowStore((s) => s.spec);
  const setFields = useWorkflowStore((s) => s.setWorkflowFields);
  const problems = useWorkflowStore((s) => s.validation.index.workflow);
  const schema = rootSchema;
  const value = spec as unknown as Obj;
  return (
    <div className="p-3">
      <h2 className="mb-3 text-sm font-semibold text-slate-700">Workflow</h2>
      <SchemaForm
        schema={schema}
        value={value}
        omit={["nodes", "edges", "queues", "sources"]}
        testPrefix="wf"
        problems={byField(problems)}
        onChange={(next) => {
          const patch: Obj = {};
          for (const k of new Set([...Object.keys(next), ...Object.keys(value)])) if (next[k] !== value[k]) patch[k] = next[k];
          setFields(patch);
        }}
        widgets={{
          id: (p) => <IdInput testId={p.testId} value={String(p.value ?? "")} taken={[]} onCommit={(v) => p.onChange(v)} />,
          start_node: (p) => (
            <select data-testid={p.testId} className={inputClass} value={String(p.value ?? "")} onChange={(e) => p.onChange(e.target.value)}>
              {!spec.nodes.some((n) => n.id === p.value) && <option value={String(p.value ?? "")}>{p.value ? `${p.value} (missing)` : "choose…"}</option>}
              {spec.nodes.map((n) => (
                <option key={n.id} value={n.id}>
                  {n.id}
                </option>
              ))}
            </select>
          ),
        }}
      />
      <p className="mt-4 text-xs text-slate-400">
        {spec.nodes.length} nodes · {edgesOf(spec).length} edges · {queuesOf(spec).length} queues · {sourcesOf(spec).length} sources. Select a node or an edge to edit it; drag nodes from the palette.
      </p>
    </div>
  );
}

function RefSelect({ p, options, emptyLabel }: { p: FieldProps; options: { id: string; note?: string }[]; emptyLabel: string }) {
  const v = typeof p.value === "string" ? p.value : "";
  return (
    <select data-testid={p.testId} className={`${inputClass} ${p.invalid ? "border-rose-400" : ""}`} value={v} onChange={(e) => p.onChange(e.target.value === "" ? undefined : e.target.value)}>
      <option value="">{emptyLabel}</option>
      {v && !options.some((o) => o.id === v) && <option value={v}>{v} (missing)</option>}
      {options.map((o) => (
        <option key={o.id} value={o.id}>
          {o.id}
          {o.note ? ` — ${o.note}` : ""}
        </option>
      ))}
    </select>
  );
}

function NodeProperties({ id }: { id: string }) {
  const spec = useWorkflowStore((s) => s.spec);
  const node = useMemo(() => spec.nodes.find((n) => n.id === id), [spec.nodes, id]);
  const updateNode = useWorkflowStore((s) => s.updateNode);
  const deleteElements = useWorkflowStore((s) => s.deleteElements);
  const setFields = useWorkflowStore((s) => s.setWorkflowFields);
  const problems = useWorkflowStore((s) => s.validation.index.nodes[id]);
  const stale = useWorkflowStore((s) => s.validation.stale);
  if (!node) return <Empty>Node {id} no longer exists.</Empty>;
  const type = node.type as NodeType;
  const meta = metaOf(type);
  const schema = nodeSchema(type);
  const configSchema = nodeConfigSchema(type);
  const fieldProblems = byField(problems);
  const wantKind = NODE_SOURCE_KIND[type];
  const sources = sourcesOf(spec);
  const queues = queuesOf(spec);
  const queue = queues.find((q) => q.id === node.queue);
  const nodeObj = node as unknown as Obj;
  const set = (next: Obj) => updateNode(id, next as unknown as SpecNode);

  return (
    <div className="p-3" data-testid="node-properties" data-node={id}>
      <div className="mb-3 flex items-center gap-2">
        <span className={`flex h-7 w-7 items-center justify-center rounded-md text-base ${meta.accent}`}><Icon name={type} /></span>
        <div className="min-w-0 flex-1">
          <h2 className="truncate text-sm font-semibold text-slate-700">{node.label || node.id}</h2>
          <p className="text-xs text-slate-400">{meta.label} node</p>
        </div>
        {spec.start_node !== id && (
          <Button variant="ghost" className="text-xs" data-testid="make-start" onClick={() => setFields({ start_node: id })}>
            Set as start
          </Button>
        )}
        <Button variant="danger" className="text-xs" data-testid="delete-node" onClick={() => deleteElements([id], [])}>
          Delete
        </Button>
      </div>
      {(fieldProblems[""] ?? []).length > 0 && <ProblemList problems={fieldProblems[""]} />}
      {stale && problems?.length ? <p className="mb-2 text-[11px] text-amber-600">Problems are from the last validation; the workflow changed since.</p> : null}
      {schema ? (
        <SchemaForm
          schema={schema}
          value={nodeObj}
          omit={["type", "config", "position", ...(wantKind ? [] : ["source"])]}
          onChange={set}
          testPrefix="prop"
          problems={fieldProblems}
          widgets={{
            id: (p) => <IdInput testId={p.testId} value={id} taken={spec.nodes.map((n) => n.id).filter((x) => x !== id)} onCommit={(v) => p.onChange(v)} />,
            source: (p) => (
              <RefSelect
                p={p}
                emptyLabel={wantKind ? `none (needs a ${wantKind} source)` : "none"}
                options={sources.filter((s) => !wantKind || s.kind === wantKind).map((s) => ({ id: s.id, note: "model" in s ? String(s.model) : s.kind }))}
              />
            ),
            queue: (p) => <RefSelect p={p} emptyLabel="none (no rate limit)" options={queues.map((q) => ({ id: q.id }))} />,
            sub_queue: (p) => <RefSelect p={p} emptyLabel="none (use metadata.sub_queue)" options={(queue?.sub_queues ?? []).map((sq) => ({ id: sq.id, note: `weight ${sq.weight ?? 1}` }))} />,
          }}
        />
      ) : (
        <p className="text-sm text-rose-600">Unknown node type “{String(type)}”: edit it in the JSON tab.</p>
      )}
      {configSchema && (
        <div className="mt-4">
          <h3 className="mb-2 text-xs font-semibold uppercase tracking-wide text-slate-500">Configuration</h3>
          <SchemaForm
            schema={configSchema}
            value={(node.config as Obj | undefined) ?? {}}
            onChange={(cfg) => set(Object.keys(cfg).length || node.config ? setKey(nodeObj, "config", cfg) : nodeObj)}
            testPrefix="prop-config"
            problems={fieldProblems}
            pathPrefix="config."
            widgets={type === "workflow" || type === "map" ? childWidgets(spec.id, (node.config as Obj | undefined)?.workflow) : undefined}
          />
        </div>
      )}
    </div>
  );
}

/** Workflow and map nodes: pick the saved workflow they run, and optionally a version of it. */
function childWidgets(selfId: string, chosen: unknown): Record<string, (p: FieldProps) => ReactNode> {
  return {
    workflow: (p) => <WorkflowPicker p={p} selfId={selfId} />,
    version: (p) => <VersionPicker p={p} workflowId={typeof chosen === "string" ? chosen : ""} />,
  };
}

function WorkflowPicker({ p, selfId }: { p: FieldProps; selfId: string }) {
  const workflows = useWorkflowStore((s) => s.workflows);
  const status = useWorkflowStore((s) => s.workflowsStatus);
  const load = useWorkflowStore((s) => s.loadWorkflows);
  useEffect(() => {
    if (status === "idle") void load();
  }, [status, load]);
  // a workflow may not run itself (the server rejects any loop through workflow and map nodes)
  const options = workflows.filter((w) => w.id !== selfId).map((w) => ({ id: w.id, note: w.name !== w.id ? w.name : undefined }));
  return (
    <div>
      <RefSelect p={p} options={options} emptyLabel={status === "loading" ? "loading saved workflows…" : "choose a saved workflow"} />
      <button type="button" className="mt-0.5 text-[11px] text-indigo-600 hover:underline" data-testid={`${p.testId}-refresh`} onClick={() => void load()}>
        ↻ refresh list
      </button>
    </div>
  );
}

function VersionPicker({ p, workflowId }: { p: FieldProps; workflowId: string }) {
  const [versions, setVersions] = useState<number[]>([]);
  useEffect(() => {
    let live = true;
    if (!workflowId) return setVersions([]);
    api.listVersions(workflowId).then(
      (r) => live && setVersions((r.items ?? []).map((v) => v.version).sort((a, b) => b - a)),
      () => live && setVersions([]),
    );
    return () => {
      live = false;
    };
  }, [workflowId]);
  const v = typeof p.value === "number" ? String(p.value) : "";
  return (
    <select data-testid={p.testId} className={`${inputClass} ${p.invalid ? "border-rose-400" : ""}`} value={v} onChange={(e) => p.onChange(e.target.value === "" ? undefined : Number(e.target.value))}>
      <option value="">latest (when the run starts)</option>
      {v && !versions.includes(Number(v)) && <option value={v}>version {v} (missing)</option>}
      {versions.map((n) => (
        <option key={n} value={String(n)}>
          version {n}
        </option>
      ))}
    </select>
  );
}

function EdgeProperties({ flowId }: { flowId: string }) {
  const spec = useWorkflowStore((s) => s.spec);
  const updateEdge = useWorkflowStore((s) => s.updateEdge);
  const deleteElements = useWorkflowStore((s) => s.deleteElements);
  const parsed = parseFlowEdgeId(flowId);
  const problems = useWorkflowStore((s) => (parsed ? s.validation.index.edges[parsed.index] : undefined));
  const edge = parsed ? edgesOf(spec)[parsed.index] : undefined;
  if (!parsed || !edge) return <Empty>Edge no longer exists.</Empty>;
  const targets = targetsOf(edge);
  const fieldProblems = byField(problems);
  return (
    <div className="p-3" data-testid="edge-properties" data-edge-index={parsed.index}>
      <div className="mb-3 flex items-center justify-between">
        <h2 className="text-sm font-semibold text-slate-700">
          Edge <span className="font-mono">{edge.from}</span> → <span className="font-mono">{targets.join(", ")}</span>
        </h2>
        <Button variant="danger" className="text-xs" data-testid="delete-edge" onClick={() => deleteElements([], targets.map((t) => `e${parsed.index}:${t}`))}>
          Delete
        </Button>
      </div>
      {(fieldProblems[""] ?? []).length > 0 && <ProblemList problems={fieldProblems[""]} />}
      <SchemaForm
        schema={edgeSchema()}
        value={edge as unknown as Obj}
        onChange={(next) => updateEdge(parsed.index, next as unknown as SpecEdge)}
        testPrefix="edge"
        problems={fieldProblems}
        widgets={{
          from: (p) => (
            <select data-testid={p.testId} className={inputClass} value={String(p.value)} onChange={(e) => p.onChange(e.target.value)}>
              {spec.nodes.map((n) => (
                <option key={n.id} value={n.id}>
                  {n.id}
                </option>
              ))}
            </select>
          ),
          to: (p) => (
            <div className="space-y-1" data-testid={p.testId}>
              <div className="flex flex-wrap gap-x-3 gap-y-1">
                {spec.nodes
                  .filter((n) => n.id !== edge.from)
                  .map((n) => (
                    <label key={n.id} className="inline-flex items-center gap-1 text-xs text-slate-700">
                      <input
                        type="checkbox"
                        data-testid={`edge-to-${n.id}`}
                        className="accent-indigo-600"
                        checked={targets.includes(n.id)}
                        onChange={(e) => {
                          const next = e.target.checked ? [...targets, n.id] : targets.filter((t) => t !== n.id);
                          if (!next.length) return;
                          p.onChange(next.length === 1 && !Array.isArray(edge.to) ? next[0] : next);
                        }}
                      />
                      {n.id}
                    </label>
                  ))}
              </div>
              <p className="text-[11px] text-slate-400">Several targets run in parallel (fan-out).</p>
            </div>
          ),
          on_error: (p) => (
            <label className="inline-flex items-center gap-2 text-xs text-slate-700">
              <input
                type="checkbox"
                data-testid={p.testId}
                className="h-4 w-4 accent-red-600"
                checked={Boolean(p.value)}
                onChange={(e) => {
                  // an on_error edge is taken exactly when its node fails: it takes no condition
                  const next: Obj = { ...(edge as unknown as Obj) };
                  if (e.target.checked) {
                    next.on_error = true;
                    delete next.condition;
                  } else delete next.on_error;
                  updateEdge(parsed.index, next as unknown as SpecEdge);
                }}
              />
              taken when <span className="font-mono">{edge.from}</span> fails (on error)
            </label>
          ),
          condition: (p) => edge.on_error ? (
            <p className="text-[11px] text-slate-400" data-testid={p.testId}>None: an on-error edge is taken exactly when its node fails; state.error then holds its node and message.</p>
          ) : (
            <div>
              <input
                data-testid={p.testId}
                className={`${inputClass} font-mono ${p.invalid ? "border-rose-400" : ""}`}
                placeholder="always (e.g. intent == 'text')"
                value={typeof p.value === "string" ? p.value : ""}
                onChange={(e) => p.onChange(e.target.value.trim() === "" ? undefined : e.target.value)}
              />
            </div>
          ),
        }}
      />
    </div>
  );
}
