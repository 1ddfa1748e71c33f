"use client";
/** Installed plugins (packages declaring the `agentflow.nodes` entry point), what they add, and what failed to load (`GET /node-types`). */
import { useEffect, useState, type ReactNode } from "react";
import * as api from "@/lib/api";
import { metaOf } from "@/lib/nodeMeta";
import type { NodeTypes } from "@/lib/schema";
import { Icon } from "./Icon";

function Card({ title, testId, head, children }: { title: string; testId: string; head: string[]; children: ReactNode }) {
  return (
    <section className="rounded-xl border border-slate-200 bg-white shadow-sm">
      <h2 className="border-b border-slate-100 px-4 py-2 text-xs font-semibold uppercase tracking-wide text-slate-500">{title}</h2>
      <table data-testid={testId} className="w-full text-sm">
        <thead>
          <tr className="text-left text-[10px] uppercase text-slate-400">
            {head.map((h) => (
              <th key={h} className="px-4 py-1.5 font-medium">
                {h}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>{children}</tbody>
      </table>
    </section>
  );
}

export function PluginsPage() {
  const [data, setData] = useState<NodeTypes | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    api
      .getNodeTypes()
      .then((body) => setData(body as NodeTypes))
      .catch((e: Error) => setError(e.message));
  }, []);

  const plugins = data?.plugins ?? [];
  return (
    <div className="min-h-screen bg-slate-50">
      <header className="flex h-12 items-center gap-3 border-b border-slate-200 bg-white px-4">
        <a href="/" className="flex items-center gap-2 text-sm font-semibold text-slate-700" data-testid="back-to-studio">
          <span className="flex h-7 w-7 items-center justify-center rounded-lg bg-indigo-600 text-sm font-bold text-white">A</span>
          AgentFlow Studio
        </a>
        <span className="text-slate-300">/</span>
        <h1 className="text-sm font-semibold text-slate-700">Plugins</h1>
      </header>
      <main className="mx-auto max-w-5xl space-y-4 p-6">
        <p className="text-sm text-slate-600">
          A plugin is a Python package that declares the <code className="rounded bg-slate-100 px-1">agentflow.nodes</code> entry point; PyPI is the
          catalogue. Install one with <code className="rounded bg-slate-100 px-1">agentflow plugins install NAME</code>, then restart{" "}
          <code className="rounded bg-slate-100 px-1">agentflow serve</code> and every worker: its node types appear in the palette.
        </p>
        {error && (
          <div data-testid="plugins-error" className="rounded-lg border border-red-200 bg-red-50 px-4 py-2 text-sm text-red-700">
            Cannot read the node types: {error}
          </div>
        )}
        <Card title="Installed plugins" testId="plugins-table" head={["Package", "Version", "Adds", "Status"]}>
          {data && plugins.length === 0 && (
            <tr>
              <td colSpan={4} className="px-4 py-3 text-slate-400">
                No plugins installed.
              </td>
            </tr>
          )}
          {plugins.map((p) => (
            <tr key={p.package} data-testid={`plugin-${p.package}`} className="border-t border-slate-100 align-top">
              <td className="px-4 py-2 font-medium text-slate-700">{p.package}</td>
              <td className="px-4 py-2 font-mono text-xs text-slate-500">{p.version ?? "?"}</td>
              <td className="px-4 py-2 text-slate-600">
                {[...p.node_types.map((t) => `node type ${t}`), ...p.source_kinds.map((k) => `source kind ${k}`)].join(", ") || "—"}
              </td>
              <td className="px-4 py-2">
                {p.errors.length === 0 ? (
                  <span className="rounded bg-emerald-50 px-1.5 py-0.5 text-xs text-emerald-700">loaded</span>
                ) : (
                  p.errors.map((e) => (
                    <div key={`${e.group}:${e.name}`} data-testid="plugin-error" className="text-xs text-red-700">
                      <span className="font-medium">{e.name}</span> failed to load: <span className="font-mono">{e.error}</span>
                    </div>
                  ))
                )}
              </td>
            </tr>
          ))}
        </Card>
        <Card title="Node types" testId="node-types-table" head={["Type", "Description", "Queue", "From"]}>
          {(data?.node_types ?? []).map((t) => (
            <tr key={t.type} data-testid={`node-type-${t.type}`} className="border-t border-slate-100">
              <td className="px-4 py-1.5">
                <span className="flex items-center gap-2">
                  <span className={`flex h-6 w-6 items-center justify-center rounded ${metaOf(t.type).accent}`}>
                    <Icon name={t.type} />
                  </span>
                  <span className="font-mono text-xs text-slate-700">{t.type}</span>
                </span>
              </td>
              <td className="px-4 py-1.5 text-slate-600">{t.description || metaOf(t.type).description}</td>
              <td className="px-4 py-1.5 font-mono text-xs text-slate-500">{t.queue}</td>
              <td className="px-4 py-1.5 text-xs text-slate-500">
                {t.origin.kind === "builtin" ? "built-in" : `${t.origin.package} ${t.origin.version ?? ""}`}
              </td>
            </tr>
          ))}
        </Card>
      </main>
    </div>
  );
}
