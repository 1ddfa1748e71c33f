/**
 * lib/types.ts agrees with lib/workflow.schema.json (generated from graph/spec.py):
 * the same node types, source kinds, and fields, both ways.
 */
import { describe, expect, it } from "vitest";
import { nodeConfigSchema, nodeSchema, queueSchema, edgeSchema, resolve, rootSchema, schemaNodeTypes, schemaSourceKinds, sourceSchema } from "@/lib/schema";
import { NODE_META } from "@/lib/nodeMeta";
import {
  EDGE_KEYS,
  NODE_CONFIG_KEYS,
  NODE_KEYS,
  NODE_TYPES,
  QUEUE_KEYS,
  SOURCE_KEYS,
  SOURCE_KINDS,
  SUB_QUEUE_KEYS,
  WORKFLOW_KEYS,
} from "@/lib/types";

const sorted = (xs: Iterable<string>) => [...xs].sort();
const props = (s: { properties?: Record<string, unknown> } | null) => sorted(Object.keys(s?.properties ?? {}));

describe("lib/types.ts matches the backend JSON Schema", () => {
  it("has every node type of the schema, and no other", () => {
    expect(sorted(NODE_TYPES)).toEqual(sorted(schemaNodeTypes()));
  });

  it("has every source kind of the schema, and no other", () => {
    expect(sorted(SOURCE_KINDS)).toEqual(sorted(schemaSourceKinds()));
  });

  it.each(NODE_TYPES.map((t) => [t]))("node %s: config fields agree", (type) => {
    expect(sorted(Object.keys(NODE_CONFIG_KEYS[type]))).toEqual(props(nodeConfigSchema(type)));
  });

  it.each(NODE_TYPES.map((t) => [t]))("node %s: node fields agree", (type) => {
    expect(sorted(Object.keys(NODE_KEYS))).toEqual(props(nodeSchema(type)));
    expect(nodeSchema(type)?.properties?.type?.const).toBe(type);
  });

  it.each(SOURCE_KINDS.map((k) => [k]))("source %s: fields agree", (kind) => {
    expect(sorted(Object.keys(SOURCE_KEYS[kind]))).toEqual(props(sourceSchema(kind)));
  });

  it("edges, queues, sub-queues and the workflow agree", () => {
    expect(sorted(Object.keys(EDGE_KEYS))).toEqual(props(edgeSchema()));
    expect(sorted(Object.keys(QUEUE_KEYS))).toEqual(props(queueSchema()));
    expect(sorted(Object.keys(SUB_QUEUE_KEYS))).toEqual(props(resolve({ $ref: "#/$defs/SubQueue" })));
    expect(sorted(Object.keys(WORKFLOW_KEYS))).toEqual(props(rootSchema));
  });

  it("required fields of node configs are required in the TS types", () => {
    // The TS config types mark exactly these as non-optional.
    const requiredInTs: Record<string, string[]> = { input: [], router: [], llm: ["prompt"], image: ["prompt"], db: ["query"], aggregator: ["fields"], api: [],
      human: ["prompt"], workflow: ["workflow"], map: ["over", "workflow"], tool: ["tool"] };
    for (const t of NODE_TYPES) expect(sorted(nodeConfigSchema(t)?.required ?? [])).toEqual(sorted(requiredInTs[t]));
  });

  it("every node type has palette metadata", () => {
    for (const t of schemaNodeTypes()) expect(NODE_META).toHaveProperty(t);
  });
});
