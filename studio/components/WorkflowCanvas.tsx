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
import { deriveEdges, makeNodeDeriver, type AgentFlowNode, type ConditionFlowEdge } from "@/lib/flow";
import { NODE_HEIGHT, NODE_WIDTH } from "@/lib/layout";
import { metaOf } from "@/lib/nodeMeta";
import { NODE_TYPES, type NodeType, type Position } from "@/lib/types";
import { useWorkflowStore } from "@/lib/useWorkflowStore";
import { AgentNode } from "./AgentNode";
import { ConditionEdge } from "./ConditionEdge";

export const DND_TYPE = "application/x-agentflow-node";

const nodeTypes = { agent: AgentNode };
const edgeTypes = { condition: ConditionEdge };
const defaultEdgeOptions = { markerEnd: { type: MarkerType.ArrowClosed, width: 16, height: 16 } };

const STATUS_COLOR: Record<string, string> = { running: "#3b82f6", succeeded: "#10b981", failed: "#f43f5e" };

export function WorkflowCanvas() {
  const spec = useWorkflowStore((s) => s.spec);
  const layout = useWorkflowStore((s) => s.layout);
  const measured = useWorkflowStore((s) => s.measured);
  const selectedNodes = useWorkflowStore((s) => s.selectedNodes);
  const selectedEdges = useWorkflowStore((s) => s.selectedEdges);
  const runView = useWorkflowStore((s) => s.runView);
  const validation = useWorkflowStore((s) => s.validation);
  const fitNonce = useWorkflowStore((s) => s.fitNonce);
  const { moveNodes, setMeasured, select, connect, deleteElements, addNode } = useWorkflowStore.getState();
  const { screenToFlowPosition, fitView, setViewport } = useReactFlow();

  const deriveNodes = useMemo(() => makeNodeDeriver(), []);
  const nodes = useMemo(
    () => deriveNodes({ spec, layout, measured, selectedNodes, runView, validation }),
    [deriveNodes, spec, layout, measured, selectedNodes, runView, validation],
  );
  const edges = useMemo(() => deriveEdges({ spec, selectedEdges, runView, validation }), [spec, selectedEdges, runView, validation]);

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
      if (!(NODE_TYPES as readonly string[]).includes(type)) return;
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
    if (useWorkflowStore.getState().spec.nodes.length === 0) void setViewport({ x: 0, y: 0, zoom: 1 });
    else void fitView({ padding: 0.15, maxZoom: 1.2 });
  }, [fitNonce, fitView, setViewport]);

  return (
    <div className="relative h-full w-full" data-testid="canvas" onDragOver={onDragOver} onDrop={onDrop}>
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
        deleteKeyCode={["Backspace", "Delete"]}
        zoomOnDoubleClick={false}
        multiSelectionKeyCode={["Shift", "Meta", "Control"]}
        selectionKeyCode="Shift"
        minZoom={0.05}
        maxZoom={2}
        proOptions={{ hideAttribution: true }}
      >
        <Background variant={BackgroundVariant.Dots} gap={18} size={1} color="#cbd5e1" />
        <MiniMap pannable zoomable className="!bg-white" nodeStrokeWidth={3} nodeColor={(n) => STATUS_COLOR[(n.data as AgentFlowNode["data"]).status] ?? metaOf((n.data as AgentFlowNode["data"]).spec.type).color} />
        <Controls showInteractive={false} />
      </ReactFlow>
      {spec.nodes.length === 0 && (
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
