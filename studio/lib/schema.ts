/**
 * Reading the WorkflowSpec JSON Schema (lib/workflow.schema.json, generated from the
 * backend's pydantic models). Property forms are built from it, so a field added to a
 * node config in spec.py appears in Studio without UI code.
 */
import rawSchema from "./workflow.schema.json";
import type { NodeType, SourceKind } from "./types";

export interface JsonSchema {
  $ref?: string;
  $defs?: Record<string, JsonSchema>;
  type?: string | string[];
  title?: string;
  description?: string;
  default?: unknown;
  const?: unknown;
  enum?: unknown[];
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
  additionalProperties?: boolean | JsonSchema;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  pattern?: string;
  discriminator?: { propertyName: string; mapping: Record<string, string> };
}

/** The bundled schema (scripts/gen-schema.sh); replaced by the server's `GET /schema` when it answers. */
export const bundledSchema = rawSchema as unknown as JsonSchema;
export let rootSchema: JsonSchema = bundledSchema;

/** Use the server's schema, so a field added to the backend shows without rebuilding Studio. */
export function setRootSchema(s: unknown): boolean {
  const cand = s as JsonSchema | null;
  if (!cand?.properties?.nodes?.items?.discriminator?.mapping || !cand.$defs) return false;
  rootSchema = cand;
  return true;
}

export function resolve(s: JsonSchema | undefined, root?: JsonSchema): JsonSchema {
  root ??= rootSchema;
  let cur = s ?? {};
  for (let i = 0; cur.$ref && i < 20; i++) {
    const name = cur.$ref.replace(/^#\/\$defs\//, "");
    cur = root.$defs?.[name] ?? {};
  }
  return cur;
}

function mapping(listKey: "nodes" | "sources"): Record<string, string> {
  return rootSchema.properties?.[listKey]?.items?.discriminator?.mapping ?? {};
}

/** Discriminator values in the order the schema lists them (spec.py's order). */
function orderedKeys(listKey: "nodes" | "sources"): string[] {
  const m = mapping(listKey);
  const byRef = Object.fromEntries(Object.entries(m).map(([k, ref]) => [ref, k]));
  const ordered = (rootSchema.properties?.[listKey]?.items?.oneOf ?? []).map((s) => byRef[s.$ref ?? ""]).filter(Boolean);
  return [...ordered, ...Object.keys(m).filter((k) => !ordered.includes(k))];
}

export const schemaNodeTypes = (): string[] => orderedKeys("nodes");

// ------------------------------------------------------------------ GET /node-types

export interface Origin {
  kind: "builtin" | "plugin";
  package: string;
  version: string | null;
}
export interface NodeTypeInfo {
  type: string;
  description: string;
  queue: string;
  source_kind: string | null;
  origin: Origin;
  schema: JsonSchema;
}
export interface LoadError {
  group: string;
  name: string;
  package: string | null;
  version: string | null;
  error: string;
}
export interface PluginInfo {
  package: string;
  version: string | null;
  node_types: string[];
  source_kinds: string[];
  errors: LoadError[];
}
export interface NodeTypes {
  node_types: NodeTypeInfo[];
  source_kinds: { kind: string; description: string; origin: Origin; schema: JsonSchema }[];
  plugins: PluginInfo[];
  errors: LoadError[];
}

let nodeTypes: NodeTypes | null = null;

/**
 * The server's node types (built-in and installed plugins): the palette lists them, and a
 * type the schema does not know yet gets its JSON Schema merged in, so its form works too.
 * A plugin shows after a server restart, with no Studio rebuild.
 */
export function setNodeTypes(body: unknown): boolean {
  const cand = body as NodeTypes | null;
  if (!Array.isArray(cand?.node_types) || !cand.node_types.every((t) => typeof t?.type === "string" && t.schema)) return false;
  nodeTypes = cand;
  const missing = cand.node_types.filter((t) => !mapping("nodes")[t.type]);
  if (missing.length) rootSchema = withNodeSchemas(rootSchema, missing);
  return true;
}

export const getNodeTypes = (): NodeTypes | null => nodeTypes;
export const nodeTypeInfo = (type: string): NodeTypeInfo | undefined => nodeTypes?.node_types.find((t) => t.type === type);

/** The palette's types: the server's list once it answered, else the schema's. */
export const paletteTypes = (): string[] => (nodeTypes ? nodeTypes.node_types.map((t) => t.type) : schemaNodeTypes());

function withNodeSchemas(root: JsonSchema, types: NodeTypeInfo[]): JsonSchema {
  const defs = { ...(root.$defs ?? {}) };
  const items = root.properties?.nodes?.items ?? {};
  const map = { ...(items.discriminator?.mapping ?? {}) };
  const oneOf = [...(items.oneOf ?? [])];
  for (const t of types) {
    const { $defs: own, ...node } = t.schema;
    for (const [k, v] of Object.entries(own ?? {})) defs[k] ??= v; // its refs are "#/$defs/X" already
    const name = `${node.title ?? t.type}__${t.type}`;
    defs[name] = node;
    map[t.type] = `#/$defs/${name}`;
    oneOf.push({ $ref: map[t.type] });
  }
  const nodes = { ...root.properties!.nodes, items: { ...items, oneOf, discriminator: { propertyName: "type", mapping: map } } };
  return { ...root, $defs: defs, properties: { ...root.properties, nodes } };
}
export const schemaSourceKinds = (): string[] => orderedKeys("sources");

export function nodeSchema(type: NodeType | string): JsonSchema | null {
  const ref = mapping("nodes")[type];
  return ref ? resolve({ $ref: ref }) : null;
}

export function nodeConfigSchema(type: NodeType | string): JsonSchema | null {
  const n = nodeSchema(type);
  return n?.properties?.config ? resolve(n.properties.config) : null;
}

export function sourceSchema(kind: SourceKind | string): JsonSchema | null {
  const ref = mapping("sources")[kind];
  return ref ? resolve({ $ref: ref }) : null;
}

export const queueSchema = (): JsonSchema => resolve({ $ref: "#/$defs/Queue" });
export const edgeSchema = (): JsonSchema => resolve({ $ref: "#/$defs/Edge" });

/** A property's schema with `$ref` resolved and an `anyOf [X, null]` unwrapped. */
export function fieldShape(s: JsonSchema): { core: JsonSchema; nullable: boolean } {
  const r = resolve(s);
  const branches = r.anyOf ?? r.oneOf;
  if (branches) {
    const nonNull = branches.filter((b) => b.type !== "null");
    const nullable = nonNull.length < branches.length;
    if (nonNull.length === 1) {
      const core = resolve(nonNull[0]);
      return { core: { ...core, description: r.description ?? core.description, title: r.title ?? core.title, default: r.default }, nullable };
    }
    return { core: r, nullable };
  }
  return { core: r, nullable: false };
}

export type FieldKind =
  | "const"
  | "enum"
  | "string"
  | "text"
  | "number"
  | "integer"
  | "boolean"
  | "string-list"
  | "object-list"
  | "map"
  | "object"
  | "json";

const MULTILINE = new Set(["prompt", "system", "query", "template", "description"]);

export function fieldKind(key: string, s: JsonSchema): FieldKind {
  const { core } = fieldShape(s);
  if (core.const !== undefined) return "const";
  if (core.enum) return "enum";
  switch (core.type) {
    case "string":
      return MULTILINE.has(key) ? "text" : "string";
    case "number":
      return "number";
    case "integer":
      return "integer";
    case "boolean":
      return "boolean";
    case "array": {
      const it = resolve(core.items);
      if (it.type === "string") return "string-list";
      if (it.type === "object" || it.properties) return "object-list";
      return "json";
    }
    case "object":
      if (core.properties) return "object";
      return "map";
    default:
      return "json";
  }
}

export function label(key: string, s: JsonSchema): string {
  return s.title ?? key.replace(/_/g, " ").replace(/^\w/, (c) => c.toUpperCase());
}

/** Problems with one value against its property schema (constraints the form can check). */
export function checkValue(s: JsonSchema, value: unknown, required = false): string[] {
  if (value === undefined || value === null || value === "") {
    return required ? ["required"] : [];
  }
  const { core } = fieldShape(s);
  const out: string[] = [];
  const t = core.type;
  if ((t === "number" || t === "integer") && typeof value !== "number") return ["must be a number"];
  if (t === "integer" && typeof value === "number" && !Number.isInteger(value)) out.push("must be a whole number");
  if (t === "string" && typeof value !== "string") return ["must be text"];
  if (t === "boolean" && typeof value !== "boolean") return ["must be true or false"];
  if (t === "array" && !Array.isArray(value)) return ["must be a list"];
  if (typeof value === "number") {
    if (core.minimum !== undefined && value < core.minimum) out.push(`must be ≥ ${core.minimum}`);
    if (core.maximum !== undefined && value > core.maximum) out.push(`must be ≤ ${core.maximum}`);
    if (core.exclusiveMinimum !== undefined && value <= core.exclusiveMinimum) out.push(`must be > ${core.exclusiveMinimum}`);
    if (core.exclusiveMaximum !== undefined && value >= core.exclusiveMaximum) out.push(`must be < ${core.exclusiveMaximum}`);
  }
  if (typeof value === "string") {
    if (core.minLength !== undefined && value.length < core.minLength) out.push(`at least ${core.minLength} characters`);
    if (core.maxLength !== undefined && value.length > core.maxLength) out.push(`at most ${core.maxLength} characters`);
    if (core.pattern) {
      try {
        if (!new RegExp(core.pattern).test(value)) out.push(patternHint(core.pattern));
      } catch {
        /* a pattern JS cannot read: leave it to the server */
      }
    }
  }
  if (Array.isArray(value) && core.minItems !== undefined && value.length < core.minItems) {
    out.push(`at least ${core.minItems} item${core.minItems === 1 ? "" : "s"}`);
  }
  if (core.enum && !core.enum.includes(value)) out.push(`one of ${core.enum.join(", ")}`);
  return out;
}

function patternHint(pattern: string): string {
  if (pattern === "^[A-Za-z_][A-Za-z0-9_\\-]*$") return "letters, digits, _ and -, starting with a letter or _";
  if (pattern === "^[A-Za-z_][A-Za-z0-9_]*$") return "an environment variable name (letters, digits, _)";
  if (pattern === "^[A-Za-z][A-Za-z0-9_]*$") return "letters, digits and _, starting with a letter";
  if (pattern === "^https?://") return "must start with http:// or https://";
  return `must match ${pattern}`;
}

/** Every problem the form can see in an object against its schema, keyed by dotted field. */
export function checkObject(s: JsonSchema, value: Record<string, unknown> | undefined, prefix = ""): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  const obj = value ?? {};
  const req = new Set(s.required ?? []);
  for (const [key, prop] of Object.entries(s.properties ?? {})) {
    const msgs = checkValue(prop, obj[key], req.has(key));
    if (msgs.length) out[prefix + key] = msgs;
    const { core } = fieldShape(prop);
    const v = obj[key];
    if (core.properties && v && typeof v === "object" && !Array.isArray(v)) {
      Object.assign(out, checkObject(core, v as Record<string, unknown>, `${prefix}${key}.`));
    }
    if (core.type === "array" && Array.isArray(v)) {
      const it = resolve(core.items);
      if (it.properties)
        v.forEach((item, i) => {
          if (item && typeof item === "object") Object.assign(out, checkObject(it, item as Record<string, unknown>, `${prefix}${key}[${i}].`));
        });
    }
  }
  return out;
}
