/** How each node type looks in the palette and on the canvas. */
import type { NodeType } from "./types";

export interface NodeMeta {
  label: string;
  description: string;
  /** Tailwind classes for the type's accent. */
  accent: string;
  /** Minimap colour. */
  color: string;
}

export const NODE_META: Record<NodeType, NodeMeta> = {
  input: { label: "Input", description: "Entry point: the user's input and metadata", accent: "bg-emerald-100 text-emerald-700", color: "#10b981" },
  router: { label: "Router", description: "Pick a branch by rules or by asking an LLM", accent: "bg-amber-100 text-amber-700", color: "#f59e0b" },
  llm: { label: "LLM", description: "Generate text with a language model", accent: "bg-violet-100 text-violet-700", color: "#8b5cf6" },
  image: { label: "Image", description: "Generate an image from a prompt", accent: "bg-pink-100 text-pink-700", color: "#ec4899" },
  db: { label: "Database", description: "Run a read-only SQL query", accent: "bg-sky-100 text-sky-700", color: "#0ea5e9" },
  aggregator: { label: "Aggregator", description: "Combine state fields into the final output", accent: "bg-slate-200 text-slate-700", color: "#64748b" },
  api: { label: "HTTP API", description: "Call an external HTTP API", accent: "bg-teal-100 text-teal-700", color: "#14b8a6" },
  human: { label: "Human", description: "Wait for a person to approve or answer", accent: "bg-orange-100 text-orange-700", color: "#f97316" },
  workflow: { label: "Sub-workflow", description: "Run a saved workflow as a child run", accent: "bg-indigo-100 text-indigo-700", color: "#6366f1" },
  map: { label: "Map", description: "Run a workflow for each item of a list", accent: "bg-lime-100 text-lime-700", color: "#84cc16" },
  tool: { label: "MCP tool", description: "Call a tool of an MCP server", accent: "bg-cyan-100 text-cyan-700", color: "#06b6d4" },
};

export const metaOf = (type: string): NodeMeta =>
  (NODE_META as Record<string, NodeMeta>)[type] ?? { label: type, description: "", accent: "bg-slate-100 text-slate-600", color: "#94a3b8" };
