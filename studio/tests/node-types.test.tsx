/**
 * GET /node-types drives the palette, and a type the schema does not know (a plugin
 * installed after Studio was built) gets its form from the schema it carries.
 */
import { renderToStaticMarkup } from "react-dom/server";
import { afterEach, describe, expect, it } from "vitest";
import { SchemaForm } from "@/components/SchemaForm";
import { bundledSchema, checkObject, nodeConfigSchema, nodeTypeInfo, paletteTypes, schemaNodeTypes, setNodeTypes, setRootSchema, type NodeTypeInfo } from "@/lib/schema";
import { NODE_TYPES } from "@/lib/types";

const origin = { kind: "plugin" as const, package: "agentflow-text-tools", version: "0.1.0" };
const textStats: NodeTypeInfo = {
  type: "text_stats",
  description: "Count characters, words, lines and sentences of a text",
  queue: "agentflow.text",
  source_kind: null,
  origin,
  schema: {
    title: "TextStatsNode",
    type: "object",
    properties: {
      id: { type: "string" },
      type: { const: "text_stats", type: "string" },
      config: { $ref: "#/$defs/TextStatsConfig" },
    },
    required: ["id", "type"],
    $defs: {
      TextStatsConfig: {
        title: "TextStatsConfig",
        type: "object",
        properties: {
          text: { type: "string", default: "{user_input}", description: "Template over the state." },
          output_key: { type: "string", default: "text_stats", pattern: "^[A-Za-z][A-Za-z0-9_]*$" },
        },
      },
    },
  },
};
const builtins = NODE_TYPES.map((t) => ({ ...textStats, type: t, origin: { kind: "builtin" as const, package: "agentflow", version: "0.1.0" }, schema: { title: t } }));

afterEach(() => {
  setRootSchema(bundledSchema);
});

describe("node types from the server", () => {
  it("lists the server's types in its order, plugins included", () => {
    expect(setNodeTypes({ node_types: [...builtins, textStats], source_kinds: [], plugins: [], errors: [] })).toBe(true);
    expect(paletteTypes()).toEqual([...NODE_TYPES, "text_stats"]);
    expect(nodeTypeInfo("text_stats")?.origin.package).toBe("agentflow-text-tools");
  });

  it("merges the schema of a type the bundled schema lacks, so its form renders and checks", () => {
    expect(schemaNodeTypes()).not.toContain("text_stats");
    setNodeTypes({ node_types: [...builtins, textStats], source_kinds: [], plugins: [], errors: [] });
    expect(schemaNodeTypes()).toContain("text_stats");
    const cfg = nodeConfigSchema("text_stats")!;
    expect(Object.keys(cfg.properties!)).toEqual(["text", "output_key"]);
    const html = renderToStaticMarkup(<SchemaForm schema={cfg} value={{ text: "{user_input}" }} onChange={() => {}} testPrefix="prop-config" />);
    expect(html).toContain('data-testid="prop-config-text"');
    expect(checkObject(cfg, { output_key: "1bad" })).toHaveProperty("output_key");
    expect(nodeConfigSchema("llm")?.properties).toHaveProperty("prompt"); // built-ins untouched
  });

  it("ignores an answer that is not a node-type list", () => {
    expect(setNodeTypes({ nodes: [] })).toBe(false);
    expect(setNodeTypes({ node_types: [{ description: "no type" }] })).toBe(false);
  });
});
