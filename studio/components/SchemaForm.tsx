"use client";
/**
 * A form generated from a JSON Schema object (lib/workflow.schema.json). Each property
 * gets an input by its type; an emptied field is removed from the object rather than
 * set to a default, so untouched specs stay byte-for-byte what they were.
 */
import { useEffect, useState, type ReactNode } from "react";
import { checkValue, fieldKind, fieldShape, label as labelOf, resolve, type JsonSchema } from "@/lib/schema";
import { Button, errorInputClass, inputClass } from "./ui";

export type Obj = Record<string, unknown>;

export interface FieldProps {
  name: string;
  schema: JsonSchema;
  value: unknown;
  required: boolean;
  onChange(value: unknown): void;
  testId: string;
  invalid: boolean;
}

export interface SchemaFormProps {
  schema: JsonSchema;
  value: Obj;
  onChange(next: Obj): void;
  omit?: string[];
  /** Custom inputs for some keys; everything else comes from the schema. */
  widgets?: Record<string, (p: FieldProps) => ReactNode>;
  testPrefix: string;
  /** Server problems keyed by dotted path relative to this object (`config.prompt`). */
  problems?: Record<string, string[]>;
  pathPrefix?: string;
  /** Keys shown under "Advanced". */
  advanced?: string[];
}

const DEFAULT_ADVANCED = ["timeout_seconds", "max_retries"];

export function setKey(obj: Obj, key: string, value: unknown): Obj {
  const next = { ...obj };
  if (value === undefined) delete next[key];
  else next[key] = value;
  return next;
}

export function SchemaForm(props: SchemaFormProps) {
  const { schema, value, onChange, omit = [], widgets = {}, testPrefix, problems = {}, pathPrefix = "", advanced = DEFAULT_ADVANCED } = props;
  const required = new Set(schema.required ?? []);
  const keys = Object.keys(schema.properties ?? {}).filter((k) => !omit.includes(k));
  const main = keys.filter((k) => !advanced.includes(k));
  const adv = keys.filter((k) => advanced.includes(k));
  // Keys in the object the schema does not know: shown read-only so nothing is hidden.
  const unknown = Object.keys(value).filter((k) => !(schema.properties ?? {})[k] && !omit.includes(k));

  const renderField = (key: string) => (
    <FieldRow
      key={key}
      name={key}
      schema={schema.properties![key]}
      value={value[key]}
      required={required.has(key)}
      onChange={(v) => onChange(setKey(value, key, v))}
      testId={`${testPrefix}-${key}`}
      widget={widgets[key]}
      serverProblems={problems[pathPrefix + key] ?? []}
      problems={problems}
      pathPrefix={`${pathPrefix}${key}.`}
    />
  );

  return (
    <div className="space-y-3">
      {main.map(renderField)}
      {adv.length > 0 && (
        <details className="rounded-md border border-slate-200 px-2 py-1" open={adv.some((k) => value[k] !== undefined)}>
          <summary className="cursor-pointer text-xs font-medium text-slate-500">Advanced</summary>
          <div className="space-y-3 py-2">{adv.map(renderField)}</div>
        </details>
      )}
      {unknown.map((k) => (
        <div key={k} className="text-xs text-amber-700">
          <span className="font-mono">{k}</span>: not in the schema (kept as is)
          <pre className="mt-1 overflow-auto rounded bg-amber-50 p-1">{JSON.stringify(value[k])}</pre>
        </div>
      ))}
    </div>
  );
}

interface RowProps extends Omit<FieldProps, "invalid"> {
  widget?: (p: FieldProps) => ReactNode;
  serverProblems: string[];
  problems: Record<string, string[]>;
  pathPrefix: string;
}

function FieldRow({ name, schema, value, required, onChange, testId, widget, serverProblems, problems, pathPrefix }: RowProps) {
  const [draftError, setDraftError] = useState<string | null>(null);
  const kind = fieldKind(name, schema);
  const { core } = fieldShape(schema);
  const clientProblems = checkValue(schema, value, required);
  const all = [...(draftError ? [draftError] : []), ...clientProblems, ...serverProblems];
  const invalid = all.length > 0;
  const fp: FieldProps = { name, schema, value, required, onChange, testId, invalid };
  const title = labelOf(name, core);
  const defaultHint = core.default !== undefined && core.default !== null && value === undefined ? `default: ${JSON.stringify(core.default)}` : null;

  let input: ReactNode;
  if (widget) input = widget(fp);
  else
    switch (kind) {
      case "const":
        if (required) {
          input = <span className="rounded bg-slate-100 px-2 py-0.5 font-mono text-xs">{String(core.const)}</span>;
          break;
        }
      // an optional single-value field: "default" (unset) or the value set explicitly
      // falls through
      case "enum": {
        const options = core.enum ?? [core.const];
        input = (
          <select data-testid={testId} className={`${inputClass} ${invalid ? errorInputClass : ""}`} value={value === undefined || value === null ? "" : String(value)} onChange={(e) => onChange(e.target.value === "" ? undefined : options.find((x) => String(x) === e.target.value))}>
            {!required && <option value="">{core.default !== undefined && core.default !== null ? `default (${String(core.default)})` : "—"}</option>}
            {required && value === undefined && <option value="">choose…</option>}
            {options.map((x) => (
              <option key={String(x)} value={String(x)}>
                {String(x)}
              </option>
            ))}
          </select>
        );
        break;
      }
      case "string":
      case "text":
        input = (
          <TextInput testId={testId} multiline={kind === "text"} mono={name === "query"} value={typeof value === "string" ? value : value === undefined || value === null ? "" : String(value)} placeholder={defaultHint ?? ""} invalid={invalid} onChange={(v) => onChange(v === "" ? undefined : v)} />
        );
        break;
      case "number":
      case "integer":
        input = <NumberInput testId={testId} value={value} integer={kind === "integer"} invalid={invalid} placeholder={defaultHint ?? ""} onChange={onChange} onDraftError={setDraftError} />;
        break;
      case "boolean": {
        const checked = typeof value === "boolean" ? value : Boolean(core.default);
        input = (
          <label className="inline-flex items-center gap-2 text-sm text-slate-700">
            <input data-testid={testId} type="checkbox" className="h-4 w-4 accent-indigo-600" checked={checked} onChange={(e) => onChange(e.target.checked)} />
            {value === undefined ? <span className="text-xs text-slate-400">(default)</span> : null}
          </label>
        );
        break;
      }
      case "string-list":
        input = <ListInput testId={testId} value={value} invalid={invalid} onChange={onChange} />;
        break;
      case "object-list":
        input = <ObjectList name={name} testId={testId} itemSchema={resolve(core.items)} value={value} onChange={onChange} problems={problems} pathPrefix={pathPrefix.slice(0, -1)} />;
        break;
      case "map":
        input = <MapInput testId={testId} value={value} stringsOnly={typeof core.additionalProperties === "object" && resolve(core.additionalProperties).type === "string"} onChange={onChange} />;
        break;
      case "object":
        input = (
          <div className="rounded-md border border-slate-200 p-2">
            <SchemaForm schema={core} value={(value as Obj) ?? {}} onChange={(v) => onChange(v)} testPrefix={testId} problems={problems} pathPrefix={pathPrefix} />
          </div>
        );
        break;
      default:
        input = <JsonInput testId={testId} value={value} invalid={invalid} onChange={onChange} onDraftError={setDraftError} />;
    }

  return (
    <div data-field={name}>
      <div className="mb-0.5 flex items-baseline justify-between gap-2">
        <label className="text-xs font-medium text-slate-600">
          {title}
          {required && <span className="text-rose-500"> *</span>}
        </label>
        {defaultHint && kind !== "string" && kind !== "text" && kind !== "number" && kind !== "integer" && <span className="text-[10px] text-slate-400">{defaultHint}</span>}
      </div>
      {input}
      {core.description && <p className="mt-0.5 text-[11px] leading-snug text-slate-400">{core.description}</p>}
      {all.length > 0 && (
        <p data-testid={`${testId}-error`} className="mt-0.5 text-xs text-rose-600">
          {all.join("; ")}
        </p>
      )}
    </div>
  );
}

// ------------------------------------------------------------------ inputs

export function TextInput({ testId, value, onChange, multiline, mono, invalid, placeholder }: { testId: string; value: string; onChange(v: string): void; multiline?: boolean; mono?: boolean; invalid?: boolean; placeholder?: string }) {
  const cls = `${inputClass} ${invalid ? errorInputClass : ""} ${mono ? "font-mono text-xs" : ""}`;
  return multiline ? (
    <textarea data-testid={testId} className={cls} rows={Math.min(10, Math.max(3, value.split("\n").length + 1))} value={value} placeholder={placeholder} onChange={(e) => onChange(e.target.value)} />
  ) : (
    <input data-testid={testId} className={cls} value={value} placeholder={placeholder} onChange={(e) => onChange(e.target.value)} />
  );
}

/** A number field that keeps what is typed until it parses (so "1." or "-" are not lost). */
export function NumberInput({ testId, value, onChange, integer, invalid, placeholder, onDraftError }: { testId: string; value: unknown; onChange(v: number | undefined): void; integer?: boolean; invalid?: boolean; placeholder?: string; onDraftError?(e: string | null): void }) {
  const shown = typeof value === "number" ? String(value) : "";
  const [draft, setDraft] = useState(shown);
  useEffect(() => {
    if (Number(draft) !== value || draft.trim() === "") setDraft(shown);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [shown]);
  return (
    <input
      data-testid={testId}
      inputMode={integer ? "numeric" : "decimal"}
      className={`${inputClass} ${invalid ? errorInputClass : ""}`}
      value={draft}
      placeholder={placeholder}
      onChange={(e) => {
        const t = e.target.value;
        setDraft(t);
        if (t.trim() === "") {
          onDraftError?.(null);
          onChange(undefined);
          return;
        }
        const n = Number(t);
        if (Number.isNaN(n) || !/^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(t.trim())) {
          onDraftError?.("not a number (not applied)");
          return;
        }
        onDraftError?.(null);
        onChange(n);
      }}
    />
  );
}

function ListInput({ testId, value, onChange, invalid }: { testId: string; value: unknown; onChange(v: unknown): void; invalid: boolean }) {
  const list = Array.isArray(value) ? value.map(String) : [];
  const [draft, setDraft] = useState(list.join("\n"));
  useEffect(() => {
    const parsed = draft.split("\n").map((s) => s.trim()).filter(Boolean);
    if (parsed.join("\n") !== list.join("\n")) setDraft(list.join("\n"));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [list.join("\n")]);
  return (
    <textarea
      data-testid={testId}
      className={`${inputClass} ${invalid ? errorInputClass : ""} font-mono text-xs`}
      rows={Math.max(2, list.length + 1)}
      placeholder="one per line"
      value={draft}
      onChange={(e) => {
        setDraft(e.target.value);
        const items = e.target.value.split("\n").map((s) => s.trim()).filter(Boolean);
        onChange(items.length ? items : value === undefined ? undefined : []);
      }}
    />
  );
}

function blankItem(s: JsonSchema, index: number): Obj {
  const out: Obj = {};
  for (const key of s.required ?? []) {
    const { core } = fieldShape(s.properties?.[key] ?? {});
    if (key === "id") out[key] = `item_${index + 1}`;
    else if (core.default !== undefined) out[key] = core.default;
    else if (core.type === "string") out[key] = "";
    else if (core.type === "number" || core.type === "integer") out[key] = 1;
    else if (core.type === "array") out[key] = [];
  }
  for (const [key, p] of Object.entries(s.properties ?? {})) {
    const { core } = fieldShape(p);
    if (out[key] === undefined && (core.type === "number" || core.type === "integer") && typeof core.default === "number") out[key] = core.default;
  }
  return out;
}

function ObjectList({ name, testId, itemSchema, value, onChange, problems, pathPrefix }: { name: string; testId: string; itemSchema: JsonSchema; value: unknown; onChange(v: unknown): void; problems: Record<string, string[]>; pathPrefix: string }) {
  const items = Array.isArray(value) ? (value as Obj[]) : [];
  return (
    <div className="space-y-2" data-testid={testId}>
      {items.map((item, i) => (
        <div key={i} className="relative rounded-md border border-slate-200 bg-slate-50 p-2" data-testid={`${testId}-${i}`}>
          <button type="button" aria-label={`remove ${name} ${i + 1}`} data-testid={`${testId}-${i}-remove`} className="absolute right-1 top-1 rounded px-1 text-xs text-slate-400 hover:bg-rose-50 hover:text-rose-600" onClick={() => onChange(items.filter((_, j) => j !== i))}>
            ✕
          </button>
          <SchemaForm schema={itemSchema} value={item ?? {}} onChange={(v) => onChange(items.map((x, j) => (j === i ? v : x)))} testPrefix={`${testId}-${i}`} problems={problems} pathPrefix={`${pathPrefix}[${i}].`} />
        </div>
      ))}
      <Button data-testid={`${testId}-add`} variant="ghost" className="text-xs" onClick={() => onChange([...items, blankItem(itemSchema, items.length)])}>
        + Add {itemSchema.title ?? "item"}
      </Button>
    </div>
  );
}

function MapInput({ testId, value, onChange, stringsOnly }: { testId: string; value: unknown; onChange(v: unknown): void; stringsOnly: boolean }) {
  const obj = value && typeof value === "object" && !Array.isArray(value) ? (value as Obj) : {};
  const entries = Object.entries(obj);
  const show = (v: unknown) => (typeof v === "string" ? v : JSON.stringify(v));
  const parse = (t: string, old: unknown) => {
    if (stringsOnly || typeof old === "string" || old === undefined) return t;
    try {
      return JSON.parse(t);
    } catch {
      return t;
    }
  };
  const rename = (from: string, to: string) => {
    const next: Obj = {};
    for (const [k, v] of entries) next[k === from ? to : k] = v;
    onChange(next);
  };
  return (
    <div className="space-y-1" data-testid={testId}>
      {entries.map(([k, v], i) => (
        <div key={i} className="flex gap-1">
          <input data-testid={`${testId}-key-${i}`} className={`${inputClass} w-2/5 font-mono text-xs`} value={k} onChange={(e) => rename(k, e.target.value)} />
          <input data-testid={`${testId}-value-${i}`} className={`${inputClass} font-mono text-xs`} value={show(v)} onChange={(e) => onChange({ ...obj, [k]: parse(e.target.value, v) })} />
          <button type="button" className="px-1 text-xs text-slate-400 hover:text-rose-600" aria-label={`remove ${k}`} onClick={() => onChange(Object.fromEntries(entries.filter(([x]) => x !== k)))}>
            ✕
          </button>
        </div>
      ))}
      <Button
        data-testid={`${testId}-add`}
        variant="ghost"
        className="text-xs"
        onClick={() => {
          let n = entries.length + 1;
          while (`key${n}` in obj) n++;
          onChange({ ...obj, [`key${n}`]: "" });
        }}
      >
        + Add entry
      </Button>
    </div>
  );
}

export function JsonInput({ testId, value, onChange, invalid, onDraftError }: { testId: string; value: unknown; onChange(v: unknown): void; invalid: boolean; onDraftError?(e: string | null): void }) {
  const shown = value === undefined ? "" : JSON.stringify(value, null, 2);
  const [draft, setDraft] = useState(shown);
  useEffect(() => {
    let same = false;
    try {
      same = draft.trim() !== "" && JSON.stringify(JSON.parse(draft)) === JSON.stringify(value);
    } catch {
      same = false;
    }
    if (!same) setDraft(shown);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [shown]);
  return (
    <textarea
      data-testid={testId}
      className={`${inputClass} ${invalid ? errorInputClass : ""} font-mono text-xs`}
      rows={Math.min(10, Math.max(2, shown.split("\n").length))}
      placeholder="JSON"
      value={draft}
      onChange={(e) => {
        setDraft(e.target.value);
        if (e.target.value.trim() === "") {
          onDraftError?.(null);
          onChange(undefined);
          return;
        }
        try {
          const v = JSON.parse(e.target.value);
          onDraftError?.(null);
          onChange(v);
        } catch {
          onDraftError?.("invalid JSON (not applied)");
        }
      }}
    />
  );
}

/** An id field: edits commit on Enter or blur, and only when valid and unused. */
export function IdInput({ testId, value, taken, onCommit, pattern = /^[A-Za-z_][A-Za-z0-9_-]*$/ }: { testId: string; value: string; taken: string[]; onCommit(v: string): void; pattern?: RegExp }) {
  const [draft, setDraft] = useState(value);
  useEffect(() => setDraft(value), [value]);
  const error = draft === value ? null : !draft ? "required" : !pattern.test(draft) ? "letters, digits, _ and -, starting with a letter or _" : taken.includes(draft) ? `"${draft}" is already used` : null;
  const commit = () => {
    if (draft !== value && !error) onCommit(draft);
  };
  return (
    <div>
      <input
        data-testid={testId}
        className={`${inputClass} font-mono ${error ? errorInputClass : ""}`}
        value={draft}
        onChange={(e) => setDraft(e.target.value)}
        onBlur={commit}
        onKeyDown={(e) => {
          if (e.key === "Enter") commit();
          if (e.key === "Escape") setDraft(value);
        }}
      />
      {error && (
        <p data-testid={`${testId}-error`} className="mt-0.5 text-xs text-rose-600">
          {error} (not applied)
        </p>
      )}
    </div>
  );
}
