"use client";
/** Queues: bandwidth limits and weighted sub-queues, checked as you type. */
import { checkValue, queueSchema, resolve } from "@/lib/schema";
import { queuesOf } from "@/lib/spec";
import type { QueueSpec, SubQueue } from "@/lib/types";
import { useWorkflowStore } from "@/lib/useWorkflowStore";
import { IdInput, NumberInput, SchemaForm, type FieldProps, type Obj } from "./SchemaForm";
import { Button, Empty, errorInputClass, inputClass } from "./ui";

export function QueueEditor() {
  const spec = useWorkflowStore((s) => s.spec);
  const upsert = useWorkflowStore((s) => s.upsertQueue);
  const remove = useWorkflowStore((s) => s.removeQueue);
  const index = useWorkflowStore((s) => s.validation.index.queues);
  const queues = queuesOf(spec);
  const ids = queues.map((q) => q.id);

  const add = () => {
    let n = queues.length + 1;
    while (ids.includes(`queue_${n}`)) n++;
    upsert(null, { id: `queue_${n}` });
  };

  return (
    <div className="p-3" data-testid="queue-editor">
      <div className="mb-3 flex items-center justify-between">
        <div>
          <h2 className="text-sm font-semibold text-slate-700">Queues</h2>
          <p className="text-xs text-slate-400">Rate limits shared by every node on the queue, across all workers.</p>
        </div>
        <Button data-testid="queue-add" onClick={add}>
          + Queue
        </Button>
      </div>
      {queues.length === 0 && <Empty>No queues. Nodes without a queue run without limits.</Empty>}
      <div className="space-y-3">
        {queues.map((q, i) => {
          const users = spec.nodes.filter((n) => n.queue === q.id).map((n) => n.id);
          const problems: Record<string, string[]> = {};
          for (const p of index[q.id] ?? []) (problems[p.target.kind === "queue" ? p.target.field : ""] ??= []).push(p.message);
          const dup = ids.indexOf(q.id) !== i;
          return (
            <div key={i} className="rounded-lg border border-slate-200 bg-white p-3 shadow-sm" data-testid={`queue-${q.id}`}>
              <div className="mb-2 flex items-center justify-between">
                <span className="font-mono text-sm font-semibold text-slate-700">{q.id}</span>
                <Button variant="ghost" className="text-xs text-rose-600" data-testid={`queue-${q.id}-delete`} onClick={() => remove(i)}>
                  Delete
                </Button>
              </div>
              {dup && <p className="mb-2 text-xs text-rose-600">Another queue already has the id “{q.id}”.</p>}
              {(problems[""] ?? []).map((m, j) => (
                <p key={j} className="mb-2 text-xs text-rose-600">
                  {m}
                </p>
              ))}
              <SchemaForm
                schema={queueSchema()}
                value={q as unknown as Obj}
                onChange={(next) => upsert(i, next as unknown as QueueSpec)}
                testPrefix={`queue-${q.id}`}
                problems={problems}
                widgets={{
                  id: (p) => <IdInput testId={p.testId} value={q.id} taken={ids.filter((_, j) => j !== i)} onCommit={(v) => p.onChange(v)} />,
                  sub_queues: (p) => <SubQueues p={p} />,
                }}
              />
              <p className="mt-2 text-[11px] text-slate-400">{users.length ? `Used by ${users.join(", ")}` : "No node uses this queue yet."}</p>
            </div>
          );
        })}
      </div>
    </div>
  );
}

function SubQueues({ p }: { p: FieldProps }) {
  const items = Array.isArray(p.value) ? (p.value as SubQueue[]) : [];
  const itemSchema = resolve(resolve(p.schema).items);
  const idSchema = itemSchema.properties?.id ?? {};
  const weightSchema = itemSchema.properties?.weight ?? {};
  const total = items.reduce((s, x) => s + (typeof x.weight === "number" && x.weight > 0 ? x.weight : x.weight === undefined ? 1 : 0), 0);
  const set = (next: SubQueue[]) => p.onChange(next);
  return (
    <div data-testid={p.testId} className="space-y-1">
      {items.length > 0 && (
        <div className="grid grid-cols-[1fr_5rem_3rem_1.5rem] gap-1 text-[10px] font-medium uppercase text-slate-400">
          <span>id</span>
          <span>weight</span>
          <span>share</span>
          <span />
        </div>
      )}
      {items.map((sq, i) => {
        const w = sq.weight === undefined ? 1 : sq.weight;
        const idErr = [...checkValue(idSchema, sq.id, true), ...(items.findIndex((x) => x.id === sq.id) !== i ? ["duplicate id"] : [])];
        const wErr = checkValue(weightSchema, sq.weight);
        return (
          <div key={i}>
            <div className="grid grid-cols-[1fr_5rem_3rem_1.5rem] items-center gap-1">
              <input data-testid={`${p.testId}-${i}-id`} className={`${inputClass} font-mono text-xs ${idErr.length ? errorInputClass : ""}`} value={sq.id} onChange={(e) => set(items.map((x, j) => (j === i ? { ...x, id: e.target.value } : x)))} />
              <NumberInput testId={`${p.testId}-${i}-weight`} value={sq.weight} invalid={wErr.length > 0} placeholder="1" onChange={(v) => set(items.map((x, j) => (j === i ? (v === undefined ? { id: x.id } : { ...x, weight: v }) : x)))} />
              <span className="text-right text-xs text-slate-500">{total > 0 && typeof w === "number" && w > 0 ? `${Math.round((w / total) * 100)}%` : "–"}</span>
              <button type="button" aria-label={`remove sub-queue ${sq.id}`} data-testid={`${p.testId}-${i}-remove`} className="text-xs text-slate-400 hover:text-rose-600" onClick={() => set(items.filter((_, j) => j !== i))}>
                ✕
              </button>
            </div>
            {(idErr.length > 0 || wErr.length > 0) && (
              <p data-testid={`${p.testId}-${i}-error`} className="text-xs text-rose-600">
                {[...idErr.map((m) => `id: ${m}`), ...wErr.map((m) => `weight: ${m}`)].join("; ")}
              </p>
            )}
          </div>
        );
      })}
      <Button
        variant="ghost"
        className="text-xs"
        data-testid={`${p.testId}-add`}
        onClick={() => {
          let n = items.length + 1;
          while (items.some((x) => x.id === `sub_${n}`)) n++;
          set([...items, { id: `sub_${n}`, weight: 1 }]);
        }}
      >
        + Sub-queue
      </Button>
      <p className="text-[11px] text-slate-400">A run picks a sub-queue by its metadata.sub_queue or the node’s sub_queue; capacity is shared by weight, idle weight is lent to the others.</p>
    </div>
  );
}
