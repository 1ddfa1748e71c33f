"use client";
/** The React Flow canvas: a view of the store; every change goes back through store actions. */
import { useCallback, useEffect, useMemo, useRef, type DragEvent } from "react";
import {
  Background,
  BackgroundVariant,
  Controls,
  MarkerType,
  MiniMap,
  ReactFlow,
  useReactFlow,
  type Connection,
  type EdgeChange,
  type NodeChange,
  type OnDelete,
} from "@xyflow/react";
import { deriveEdges, makeNodeDeriver, type AgentFlowNode, type CanvasExtras, type ConditionFlowEdge } from "@/lib/flow";
import { replayNodeStates, stepsUpTo } from "@/lib/replay";
import { NODE_HEIGHT, NODE_WIDTH } from "@/lib/layout";
import { metaOf } from "@/lib/nodeMeta";
import { paletteTypes } from "@/lib/schema";
import type { NodeType, Position } from "@/lib/types";
import { useWorkflowStore, type RunView, type ValidationView } from "@/lib/useWorkflowStore";
import { AgentNode } from "./AgentNode";
import { ConditionEdge } from "./ConditionEdge";
import { PeerOverlay } from "./Presence";
import { shareCursor } from "@/lib/collab";

export const DND_TYPE = "application/x-agentflow-node";

const nodeTypes = { agent: AgentNode };
const edgeTypes = { condition: ConditionEdge };
const defaultEdgeOptions = { markerEnd: { type: MarkerType.ArrowClosed, width: 16, height: 16 } };

const STATUS_COLOR: Record<string, string> = { running: "#3b82f6", succeeded: "#10b981", failed: "#f43f5e" };
const DIFF_COLOR: Record<string, string> = { added: "#10b981", removed: "#f43f5e", changed: "#f59e0b" };
const NONE: string[] = [];
const QUIET_VALIDATION: ValidationView = { status: "idle", valid: null, problems: [], index: { nodes: {}, edges: {}, queues: {}, sources: {}, workflow: [] }, stale: false, message: null };
const QUIET_RUN: RunView = { run: null, steps: {}, order: [], tokens: {}, transport: null, watching: false, error: null };

function OverlayBanner() {
  const overlay = useWorkflowStore((s) => s.overlay);
  const { closeCompare, closeReplay } = useWorkflowStore.getState();
  if (!overlay) return null;
  const diff = overlay.kind === "diff";
  return (
    <div data-testid="canvas-overlay" data-kind={overlay.kind} className={`pointer-events-auto absolute left-1/2 top-3 z-10 flex -translate-x-1/2 items-center gap-3 rounded-full border px-4 py-1.5 text-xs shadow ${diff ? "border-amber-200 bg-amber-50 text-amber-800" : "border-indigo-200 bg-indigo-50 text-indigo-800"}`}>
      <span className="font-semibold">{overlay.title}</span>
      {diff && (
        <span className="flex items-center gap-2 text-[11px]">
          <span className="inline-flex items-center gap-1"><i className="inline-block h-2 w-2 rounded-full bg-emerald-500" />added</span>
          <span className="inline-flex items-center gap-1"><i className="inline-block h-2 w-2 rounded-full bg-amber-500" />changed</span>
          <span className="inline-flex items-center gap-1"><i className="inline-block h-2 w-2 rounded-full bg-rose-500" />removed</span>
        </span>
      )}
      <span className="text-[11px] opacity-70">read-only</span>
      <button type="button" data-testid="canvas-overlay-close" className="rounded-full px-2 font-medium hover:bg-white/70" onClick={() => (diff ? closeCompare() : closeReplay())}>
        ✕ Back to editing
      </button>
    </div>
  );
}

export function WorkflowCanvas() {
  const spec = useWorkflowStore((s) => s.spec);
  const layout = useWorkflowStore((s) => s.layout);
  const measured = useWorkflowStore((s) => s.measured);
  const selectedNodes = useWorkflowStore((s) => s.selectedNodes);
  const selectedEdges = useWorkflowStore((s) => s.selectedEdges);
  const runView = useWorkflowStore((s) => s.runView);
  const validation = useWorkflowStore((s) => s.validation);
  const fitNonce = useWorkflowStore((s) => s.fitNonce);
  const overlay = useWorkflowStore((s) => s.overlay);
  const trace = useWorkflowStore((s) => (s.overlay?.kind === "replay" ? s.replay.trace : null));
  const cursor = useWorkflowStore((s) => s.replay.cursor);
  const { moveNodes, setMeasured, select, connect, deleteElements, addNode } = useWorkflowStore.getState();
  const { screenToFlowPosition, fitView, setViewport } = useReactFlow();

  // A diff or a replay shows its own read-only spec; otherwise the canvas is the document.
  const view = useMemo(() => {
    if (!overlay) return { spec, layout, selectedNodes, selectedEdges, runView, validation, extras: undefined as CanvasExtras | undefined };
    const replayRun: RunView = trace ? { ...QUIET_RUN, ...stepsUpTo(trace, cursor) } : QUIET_RUN;
    const extras: CanvasExtras = {
      marks: overlay.marks,
      edgeMarks: overlay.edgeMarks,
      replay: trace ? replayNodeStates(trace, cursor, overlay.spec.nodes.map((n) => n.id)) : null,
      readOnly: true,
    };
    return { spec: overlay.spec, layout: overlay.layout, selectedNodes: NONE, selectedEdges: NONE, runView: replayRun, validation: QUIET_VALIDATION, extras };
  }, [overlay, trace, cursor, spec, layout, selectedNodes, selectedEdges, runView, validation]);

  const deriveNodes = useMemo(() => makeNodeDeriver(), []);
  const nodes = useMemo(() => deriveNodes({ ...view, measured }, view.extras), [deriveNodes, view, measured]);
  const edges = useMemo(() => deriveEdges(view, view.extras), [view]);
  const viewOnly = useWorkflowStore((s) => s.collab.readOnly && s.collab.status === "live");
  const readOnly = Boolean(overlay) || viewOnly;

  const onNodesChange = useCallback(
    (changes: NodeChange<AgentFlowNode>[]) => {
      const moved: Record<string, Position> = {};
      let dragging = false;
      let dragEnd = false;
      const sizes: Record<string, { width: number; height: number }> = {};
      let sel: Set<string> | null = null;
      for (const c of changes) {
        if (c.type === "position") {
          if (c.position) moved[c.id] = { x: c.position.x, y: c.position.y };
          else moved[c.id] = useWorkflowStore.getState().layout[c.id];
          if (c.dragging) dragging = true;
          else dragEnd = true;
        } else if (c.type === "dimensions" && c.dimensions) {
          const m = useWorkflowStore.getState().measured[c.id];
          if (!m || m.width !== c.dimensions.width || m.height !== c.dimensions.height) sizes[c.id] = c.dimensions;
        } else if (c.type === "select") {
          sel ??= new Set(useWorkflowStore.getState().selectedNodes);
          if (c.selected) sel.add(c.id);
          else sel.delete(c.id);
        }
      }
      if (Object.keys(sizes).length) setMeasured(sizes);
      if (Object.keys(moved).length) moveNodes(moved, dragEnd && !dragging);
      if (sel) {
        select([...sel], useWorkflowStore.getState().selectedEdges);
      }
    },
    [moveNodes, setMeasured, select],
  );

  const onEdgesChange = useCallback(
    (changes: EdgeChange<ConditionFlowEdge>[]) => {
      let sel: Set<string> | null = null;
      for (const c of changes) {
        if (c.type === "select") {
          sel ??= new Set(useWorkflowStore.getState().selectedEdges);
          if (c.selected) sel.add(c.id);
          else sel.delete(c.id);
        }
      }
      if (sel) select(useWorkflowStore.getState().selectedNodes, [...sel]);
    },
    [select],
  );

  const onConnect = useCallback((c: Connection) => c.source && c.target && connect(c.source, c.target), [connect]);

  const onDelete: OnDelete<AgentFlowNode, ConditionFlowEdge> = useCallback(
    ({ nodes: ns, edges: es }) => deleteElements(ns.map((n) => n.id), es.map((e) => e.id)),
    [deleteElements],
  );

  const onDragOver = useCallback((e: DragEvent) => {
    e.preventDefault();
    e.dataTransfer.dropEffect = "move";
  }, []);

  const onDrop = useCallback(
    (e: DragEvent) => {
      e.preventDefault();
      const type = e.dataTransfer.getData(DND_TYPE) || e.dataTransfer.getData("text/plain");
      if (!paletteTypes().includes(type)) return; // built-in or an installed plugin's type
      const p = screenToFlowPosition({ x: e.clientX, y: e.clientY });
      addNode(type as NodeType, { x: p.x - NODE_WIDTH / 2, y: p.y - NODE_HEIGHT / 2 });
    },
    [screenToFlowPosition, addNode],
  );

  // Fit the view after loads, imports and auto-layout; never while the user builds.
  const firstFit = useRef(true);
  useEffect(() => {
    if (firstFit.current) {
      firstFit.current = false;
      if (fitNonce === 0) return;
    }
    // An empty canvas gets the plain viewport (a queued fit would jump at the first drop);
    // otherwise React Flow queues the fit until the new nodes have been measured.
    const st = useWorkflowStore.getState();
    if ((st.overlay?.spec ?? st.spec).nodes.length === 0) void setViewport({ x: 0, y: 0, zoom: 1 });
    else void fitView({ padding: 0.15, maxZoom: 1.2 });
  }, [fitNonce, fitView, setViewport]);

  return (
    <div
      className="relative h-full w-full"
      data-testid="canvas"
      onDragOver={onDragOver}
      onDrop={onDrop}
      onMouseMove={(e) => shareCursor(screenToFlowPosition({ x: e.clientX, y: e.clientY }))}
      onMouseLeave={() => shareCursor(null)}
    >
      <ReactFlow<AgentFlowNode, ConditionFlowEdge>
        nodes={nodes}
        edges={edges}
        nodeTypes={nodeTypes}
        edgeTypes={edgeTypes}
        defaultEdgeOptions={defaultEdgeOptions}
        onNodesChange={onNodesChange}
        onEdgesChange={onEdgesChange}
        onConnect={onConnect}
        onDelete={onDelete}
        nodesDraggable={!readOnly}
        nodesConnectable={!readOnly}
        elementsSelectable={!readOnly}
        deleteKeyCode={readOnly ? null : ["Backspace", "Delete"]}
        zoomOnDoubleClick={false}
        multiSelectionKeyCode={["Shift", "Meta", "Control"]}
        selectionKeyCode="Shift"
        minZoom={0.05}
        maxZoom={2}
        proOptions={{ hideAttribution: true }}
      >
        <Background variant={BackgroundVariant.Dots} gap={18} size={1} color="#cbd5e1" />
        <MiniMap pannable zoomable className="!bg-white" nodeStrokeWidth={3} nodeColor={(n) => {
          const d = n.data as AgentFlowNode["data"];
          return (d.diff && DIFF_COLOR[d.diff]) || (d.replay === "pending" ? "#e2e8f0" : STATUS_COLOR[d.status]) || metaOf(d.spec.type).color;
        }} />
        <Controls showInteractive={false} />
        {!overlay && <PeerOverlay />}
      </ReactFlow>
      <OverlayBanner />
      {!overlay && spec.nodes.length === 0 && (
        <div className="pointer-events-none absolute inset-0 flex items-center justify-center">
          <div className="rounded-xl border-2 border-dashed border-slate-300 bg-white/70 px-8 py-6 text-center text-slate-500">
            <p className="text-sm font-medium">Drag nodes here from the palette</p>
            <p className="text-xs">or click a node type to add it · connect a node’s right handle to another’s left handle</p>
          </div>
        </div>
      )}
    </div>
  );
}
