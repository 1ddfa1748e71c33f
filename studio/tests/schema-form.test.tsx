/**
 * The property forms come from the JSON Schema: a field added to a node config in the
 * backend appears in Studio with no UI code (rendered here with react-dom/server).
 */
import { renderToStaticMarkup } from "react-dom/server";
import { afterEach, describe, expect, it } from "vitest";
import { SchemaForm } from "@/components/SchemaForm";
import { bundledSchema, checkObject, fieldKind, nodeConfigSchema, rootSchema, schemaNodeTypes, setRootSchema, type JsonSchema } from "@/lib/schema";
import { NODE_TYPES } from "@/lib/types";

const render = (schema: JsonSchema, value: Record<string, unknown>) =>
  renderToStaticMarkup(<SchemaForm schema={schema} value={value} onChange={() => {}} testPrefix="prop-config" />);

afterEach(() => {
  setRootSchema(bundledSchema);
});

describe("forms generated from the schema", () => {
  it("renders every LLM config field with an input of its type", () => {
    const html = render(nodeConfigSchema("llm")!, { prompt: "Hi {user_input}", max_tokens: 10 });
    for (const key of Object.keys(nodeConfigSchema("llm")!.properties!)) expect(html).toContain(`data-testid="prop-config-${key}"`);
    expect(html).toMatch(/<textarea[^>]*data-testid="prop-config-prompt"[^>]*>Hi \{user_input\}<\/textarea>/);
    expect(html).toMatch(/<input[^>]*type="checkbox"[^>]*data-testid="prop-config-stream"|data-testid="prop-config-stream"[^>]*type="checkbox"/);
  });

  it("a field added to the backend's schema appears without UI code", () => {
    const schema = JSON.parse(JSON.stringify(rootSchema)) as JsonSchema;
    schema.$defs!.LLMConfig.properties!.top_p = { anyOf: [{ type: "number", minimum: 0, maximum: 1 }, { type: "null" }], default: null, title: "Top P", description: "Nucleus sampling." };
    schema.$defs!.LLMConfig.properties!.style = { enum: ["terse", "chatty"], type: "string", default: "terse", title: "Style" };
    expect(setRootSchema(schema)).toBe(true);
    const html = render(nodeConfigSchema("llm")!, { prompt: "x", top_p: 3 });
    expect(html).toContain('data-testid="prop-config-top_p"');
    expect(html).toContain("Nucleus sampling.");
    expect(html).toContain('data-testid="prop-config-top_p-error"'); // 3 > maximum 1, checked inline
    expect(html).toMatch(/<select[^>]*data-testid="prop-config-style"/);
    expect(html).toContain("chatty");
  });

  it("a node type added to the backend's schema joins the palette", () => {
    const schema = JSON.parse(JSON.stringify(rootSchema)) as JsonSchema;
    schema.$defs!.EchoNode = { ...schema.$defs!.InputNode, title: "EchoNode", properties: { ...schema.$defs!.InputNode.properties, type: { const: "echo", type: "string" } } };
    schema.properties!.nodes.items!.discriminator!.mapping.echo = "#/$defs/EchoNode";
    schema.properties!.nodes.items!.oneOf!.push({ $ref: "#/$defs/EchoNode" });
    setRootSchema(schema);
    expect(schemaNodeTypes()).toEqual([...NODE_TYPES, "echo"]);
  });

  it("rejects something that is not a WorkflowSpec schema", () => {
    expect(setRootSchema({ hello: 1 })).toBe(false);
    expect(rootSchema).toBe(bundledSchema);
  });

  it("maps schema types to inputs", () => {
    const router = nodeConfigSchema("router")!.properties!;
    expect(fieldKind("mode", router.mode)).toBe("enum");
    expect(fieldKind("rules", router.rules)).toBe("object-list");
    expect(fieldKind("labels", router.labels)).toBe("string-list");
    expect(fieldKind("temperature", router.temperature)).toBe("number");
    const api = nodeConfigSchema("api")!.properties!;
    expect(fieldKind("headers", api.headers)).toBe("map");
    expect(fieldKind("body", api.body)).toBe("json");
    expect(fieldKind("max_retries", api.max_retries)).toBe("integer");
  });

  it("checks values inline against the schema's constraints", () => {
    const errs = checkObject(nodeConfigSchema("image")!, { prompt: "", size: "big", n: 0 });
    expect(errs.prompt).toEqual(["required"]);
    expect(errs.size?.[0]).toMatch(/must match/);
    expect(errs.n).toEqual(["must be ≥ 1"]);
    const ok = checkObject(nodeConfigSchema("image")!, { prompt: "{user_input}", size: "1024x1024", n: 2 });
    expect(ok).toEqual({});
  });
});
