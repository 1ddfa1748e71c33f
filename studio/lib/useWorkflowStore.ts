/**
 * The one store of Studio. The spec document is the source of truth: the canvas, the
 * property forms and the JSON preview are all views of `spec` (plus `layout`, the canvas
 * positions that are not written into the spec unless the user placed the node).
 * Components stay dumb: they read from here and call these actions.
 */
import { create } from "zustand";
import * as api from "./api";
import { diffSpec, edgeMarks, nodeMarks, normalizeDiff, type DiffMark } from "./history";
import { layoutPositions, positionsFor, type Size } from "./layout";
import { normalizeSummary, rangeQuery, type RangeId } from "./metrics";
import { clampCursor, normalizeTrace } from "./replay";
import { setNodeTypes, setRootSchema } from "./schema";
import * as S from "./spec";
import type {
  ApiProblem,
  MetricsQuery,
  MetricsSummary,
  NodeType,
  Position,
  QueueSpec,
  RunInput,
  RunRecord,
  RunStep,
  RunSummary,
  RunTrace,
  SourceSpec,
  SpecEdge,
  SpecNode,
  VersionDiff,
  WorkflowSpec,
  WorkflowSummary,
  WorkflowVersion,
} from "./types";
import { TERMINAL_RUN_STATUSES } from "./types";

export type RightTab = "properties" | "queues" | "sources" | "json" | "problems" | "run" | "history" | "replay";

export interface Snapshot {
  spec: WorkflowSpec;
  layout: Record<string, Position>;
}

export interface Problem extends ApiProblem {
  target: S.ProblemTarget;
}

export interface ProblemIndex {
  nodes: Record<string, Problem[]>;
  edges: Record<number, Problem[]>;
  queues: Record<string, Problem[]>;
  sources: Record<string, Problem[]>;
  workflow: Problem[];
}

export interface ValidationView {
  status: "idle" | "running" | "done" | "failed";
  valid: boolean | null;
  problems: Problem[];
  index: ProblemIndex;
  /** The spec changed since these results. */
  stale: boolean;
  message: string | null;
}

export interface RunView {
  run: RunRecord | null;
  /** Latest step per node. */
  steps: Record<string, RunStep>;
  /** Node ids in the order their steps started. */
  order: string[];
  tokens: Record<string, string>;
  transport: "sse" | "poll" | null;
  watching: boolean;
  error: string | null;
}

/** Two versions compared in the History tab. */
export interface CompareView {
  from: number;
  to: number;
  status: "loading" | "done" | "failed";
  diff: VersionDiff | null;
  error: string | null;
}

/**
 * What the canvas shows instead of the document while a diff or a replay is open: a
 * read-only spec (the newer version with ghosts of removed nodes, or the run's version).
 */
export interface CanvasOverlay {
  kind: "diff" | "replay";
  spec: WorkflowSpec;
  layout: Record<string, Position>;
  /** Diff marks by node id, and by `from\0to` for edges. */
  marks: Record<string, DiffMark>;
  edgeMarks: Record<string, DiffMark>;
  title: string;
}

export interface ReplayView {
  runId: string | null;
  status: "idle" | "loading" | "done" | "failed";
  trace: RunTrace | null;
  /** Index of the current step: the state shown is the state after it. */
  cursor: number;
  playing: boolean;
  rerunning: boolean;
  error: string | null;
}

export interface DashboardView {
  range: RangeId;
  workflowId: string | null;
  status: "idle" | "loading" | "done" | "failed";
  summary: MetricsSummary | null;
  query: MetricsQuery | null;
  error: string | null;
}

/** Someone else in the workflow's collaborative session (their awareness state). */
export interface Peer {
  clientId: number;
  name: string;
  color: string;
  /** Where their pointer is on the canvas, in flow coordinates. */
  cursor: Position | null;
  selection: string[];
}

/** Live co-editing of the open workflow (lib/collab.ts); "off" when there is none. */
export interface CollabView {
  status: "off" | "connecting" | "live" | "unavailable";
  /** Why it is unavailable (the server's close reason). */
  reason: string | null;
  peers: Peer[];
  /** The signed-in user may watch but not edit (role viewer). */
  readOnly: boolean;
  canUndo: boolean;
  canRedo: boolean;
}

/** Undo and redo of a collaborative session: only this user's own edits (Y.UndoManager). */
export interface UndoDelegate {
  undo(): void;
  redo(): void;
}

export interface Notice {
  kind: "info" | "success" | "error";
  text: string;
  at: number;
}

interface Data extends Snapshot {
  measured: Record<string, Size>;
  past: Snapshot[];
  future: Snapshot[];
  lastCommit: { key: string; at: number } | null;
  dragging: boolean;
  selectedNodes: string[];
  selectedEdges: string[];
  dirty: boolean;
  savedId: string | null;
  savedVersion: number | null;
  viewingVersion: number | null;
  workflows: WorkflowSummary[];
  workflowsStatus: "idle" | "loading" | "done" | "failed";
  versions: WorkflowVersion[];
  validation: ValidationView;
  runView: RunView;
  runs: RunSummary[];
  library: SourceSpec[];
  libraryStatus: "idle" | "loading" | "done" | "failed";
  tab: RightTab;
  notice: Notice | null;
  busy: { save: boolean; validate: boolean; run: boolean };
  fitNonce: number;
  /** Bumped when the server's schema replaces the bundled one (forms re-render). */
  schemaRevision: number;
  compare: CompareView | null;
  overlay: CanvasOverlay | null;
  replay: ReplayView;
  /** Start runs with `stream: true` (LLM nodes send their tokens as they come). */
  streamRuns: boolean;
  dashboard: DashboardView;
  collab: CollabView;
}

export interface Actions {
  // document
  newWorkflow(): void;
  loadSpec(spec: WorkflowSpec, opts?: { history?: boolean }): void;
  applyJson(spec: WorkflowSpec): void;
  setWorkflowFields(patch: Record<string, unknown>): void;
  addNode(type: NodeType, position?: Position): string;
  updateNode(id: string, node: SpecNode): void;
  connect(from: string, to: string): void;
  updateEdge(index: number, edge: SpecEdge): void;
  setEdgeCondition(index: number, condition: string): void;
  deleteElements(nodeIds: string[], flowEdgeIds: string[]): void;
  deleteSelection(): void;
  upsertQueue(index: number | null, queue: QueueSpec): void;
  removeQueue(index: number): void;
  upsertSource(index: number | null, source: SourceSpec): void;
  removeSource(index: number): void;
  autoLayout(): void;
  undo(): void;
  redo(): void;
  // canvas
  moveNodes(positions: Record<string, Position>, done: boolean): void;
  setMeasured(sizes: Record<string, Size>): void;
  select(nodes: string[], edges: string[]): void;
  setTab(tab: RightTab): void;
  requestFit(): void;
  notify(kind: Notice["kind"], text: string): void;
  // server
  loadSchema(): Promise<void>;
  validate(): Promise<boolean>;
  loadWorkflows(): Promise<void>;
  openWorkflow(id: string): Promise<boolean>;
  openVersion(version: number): Promise<void>;
  loadVersions(): Promise<void>;
  save(): Promise<boolean>;
  deleteWorkflow(id: string): Promise<void>;
  startRun(input: RunInput): Promise<string | null>;
  openRun(runId: string): Promise<void>;
  /** Open a run of any workflow (a child or parent run): its workflow, then the run. */
  openRunOf(runId: string): Promise<void>;
  cancelRun(): Promise<void>;
  loadRuns(): Promise<void>;
  clearRun(): void;
  loadLibrary(): Promise<void>;
  publishSource(source: SourceSpec): Promise<boolean>;
  deleteLibrarySource(id: string): Promise<void>;
  useLibrarySource(source: SourceSpec): void;
  // versions: diff and restore
  compareVersions(from: number, to: number): Promise<void>;
  closeCompare(): void;
  restoreVersion(version: number): Promise<boolean>;
  // trace replay
  openReplay(runId: string): Promise<void>;
  closeReplay(): void;
  /** Show the open diff or replay on the canvas again (an edit of the document hides it). */
  showOverlay(kind: CanvasOverlay["kind"]): Promise<void>;
  replaySeek(cursor: number): void;
  replayStep(delta: number): void;
  replayPlay(): void;
  replayPause(): void;
  rerunFrom(fromNode: string, state: Record<string, unknown>): Promise<string | null>;
  setStreamRuns(on: boolean): void;
  // collaboration (lib/collab.ts)
  /** The shared document changed under us: show it, without an undo step of ours. */
  applyRemote(spec: WorkflowSpec): void;
  setCollab(patch: Partial<CollabView>): void;
  // dashboard
  loadDashboard(): Promise<void>;
  setDashboardRange(range: RangeId): void;
  setDashboardWorkflow(id: string | null): void;
}

export type StudioState = Data & Actions;

const HISTORY_LIMIT = 100;
const COALESCE_MS = 1200;

const emptyIndex = (): ProblemIndex => ({ nodes: {}, edges: {}, queues: {}, sources: {}, workflow: [] });
const emptyValidation = (): ValidationView => ({ status: "idle", valid: null, problems: [], index: emptyIndex(), stale: false, message: null });
const emptyRun = (): RunView => ({ run: null, steps: {}, order: [], tokens: {}, transport: null, watching: false, error: null });
export const collabOff = (): CollabView => ({ status: "off", reason: null, peers: [], readOnly: false, canUndo: false, canRedo: false });
const emptyReplay = (): ReplayView => ({ runId: null, status: "idle", trace: null, cursor: 0, playing: false, rerunning: false, error: null });
export const REPLAY_STEP_MS = 800;

function newId() {
  return `workflow-${Math.random().toString(36).slice(2, 7)}`;
}

export function indexProblems(spec: WorkflowSpec, errors: ApiProblem[]): { problems: Problem[]; index: ProblemIndex } {
  const index = emptyIndex();
  const problems = errors.map((e) => ({ ...e, target: S.targetOfPath(spec, e.path ?? "") }));
  for (const p of problems) {
    const t = p.target;
    if (t.kind === "node") (index.nodes[t.id] ??= []).push(p);
    else if (t.kind === "edge") (index.edges[t.index] ??= []).push(p);
    else if (t.kind === "queue") (index.queues[t.id] ??= []).push(p);
    else if (t.kind === "source") (index.sources[t.id] ??= []).push(p);
    else index.workflow.push(p);
  }
  return { problems, index };
}

function stepsFrom(run: RunRecord): Pick<RunView, "steps" | "order"> {
  const steps: Record<string, RunStep> = {};
  const order: string[] = [];
  for (const s of run.steps ?? []) {
    if (!steps[s.node_id]) order.push(s.node_id);
    steps[s.node_id] = s;
  }
  return { steps, order };
}

let stopWatch: (() => void) | null = null;
let playTimer: ReturnType<typeof setTimeout> | null = null;
const stopPlaying = () => {
  if (playTimer) clearTimeout(playTimer);
  playTimer = null;
};

/** A token arrived for `nodeId`: append it, and give the node a running step if its start was not seen yet. */
export function appendToken(rv: RunView, nodeId: string, delta: string): RunView {
  const tokens = { ...rv.tokens, [nodeId]: (rv.tokens[nodeId] ?? "") + delta };
  if (rv.steps[nodeId]) return { ...rv, tokens };
  return { ...rv, tokens, order: [...rv.order, nodeId], steps: { ...rv.steps, [nodeId]: { node_id: nodeId, status: "running" } } };
}

/** While a collaborative session is live, undo and redo are its (only one's own edits). */
let undoDelegate: UndoDelegate | null = null;
export function setUndoDelegate(d: UndoDelegate | null): void {
  undoDelegate = d;
}

/** Keep canvas positions of nodes that still exist; place new ones. */
export function mergeLayout(spec: WorkflowSpec, old: Record<string, Position>, sizes: Record<string, Size>): Record<string, Position> {
  const missing = new Set<string>();
  const out: Record<string, Position> = {};
  for (const n of spec.nodes) {
    const p = n.position;
    if (p && typeof p.x === "number" && typeof p.y === "number") {
      const o = old[n.id];
      out[n.id] = o && o.x === p.x && o.y === p.y ? o : { x: p.x, y: p.y };
    } else if (old[n.id]) out[n.id] = old[n.id];
    else missing.add(n.id);
  }
  if (missing.size) Object.assign(out, layoutPositions(spec, sizes, missing));
  return out;
}

export const createWorkflowStore = () =>
  create<StudioState>()((set, get) => {
    /** Apply a change to the document as one undoable step. */
    const commit = (change: (s: Snapshot) => Partial<Snapshot>, coalesceKey?: string, extra: Partial<Data> = {}) => {
      const st = get();
      const cur: Snapshot = { spec: st.spec, layout: st.layout };
      const patch = change(cur);
      const next: Snapshot = { spec: patch.spec ?? cur.spec, layout: patch.layout ?? cur.layout };
      if (next.spec === cur.spec && next.layout === cur.layout) return;
      const now = Date.now();
      const merge = coalesceKey && st.lastCommit?.key === coalesceKey && now - st.lastCommit.at < COALESCE_MS;
      const past = merge ? st.past : [...st.past, cur].slice(-HISTORY_LIMIT);
      const validation = st.validation.status === "done" ? { ...st.validation, stale: true } : st.validation;
      if (st.replay.playing) stopPlaying();
      set({
        ...next,
        past,
        future: [],
        lastCommit: coalesceKey ? { key: coalesceKey, at: now } : null,
        dirty: true,
        validation,
        // The canvas shows the document again: a diff or replay would hide this edit.
        overlay: null,
        ...(st.replay.playing ? { replay: { ...st.replay, playing: false } } : {}),
        ...extra,
      });
    };

    const resetDocument = (spec: WorkflowSpec, extra: Partial<Data> = {}) => {
      stopWatch?.();
      stopWatch = null;
      stopPlaying();
      set({
        compare: null,
        overlay: null,
        replay: emptyReplay(),
        spec,
        layout: positionsFor(spec, get().measured),
        past: [],
        future: [],
        lastCommit: null,
        dirty: false,
        selectedNodes: [],
        selectedEdges: [],
        validation: emptyValidation(),
        runView: emptyRun(),
        fitNonce: get().fitNonce + 1,
        ...extra,
      });
    };

    const fail = (e: unknown) => {
      const msg = e instanceof Error ? e.message : String(e);
      get().notify("error", msg);
      return msg;
    };

    const setProblems = (errors: ApiProblem[], valid: boolean) => {
      const { problems, index } = indexProblems(get().spec, errors);
      set({ validation: { status: "done", valid, problems, index, stale: false, message: null } });
    };

    const runHandlers = (runId: string): api.RunWatchHandlers => {
      const mine = () => get().runView.run?.run_id === runId;
      return {
        onTransport: (kind) => mine() && set((s) => ({ runView: { ...s.runView, transport: kind } })),
        onStep: (step) => {
          if (!mine()) return;
          set((s) => {
            const rv = s.runView;
            const order = rv.steps[step.node_id] ? rv.order : [...rv.order, step.node_id];
            const run = rv.run && rv.run.status === "queued" ? { ...rv.run, status: "running" as const } : rv.run;
            return { runView: { ...rv, run, order, steps: { ...rv.steps, [step.node_id]: { ...rv.steps[step.node_id], ...step } } } };
          });
        },
        onToken: (nodeId, delta) => {
          if (!mine()) return;
          set((s) => ({ runView: appendToken(s.runView, nodeId, delta) }));
        },
        onSnapshot: (run) => {
          if (!mine()) return;
          set((s) => ({ runView: { ...s.runView, run, ...(run.steps ? stepsFrom(run) : {}) } }));
        },
        onEnd: (run) => {
          if (!mine()) return;
          stopWatch = null;
          set((s) => ({ runView: { ...s.runView, run, watching: false, ...(run.steps ? stepsFrom(run) : {}) } }));
          void get().loadRuns();
        },
        onError: (message) => mine() && set((s) => ({ runView: { ...s.runView, error: message } })),
      };
    };

    const watch = (runId: string) => {
      stopWatch?.();
      stopWatch = api.watchRun(runId, runHandlers(runId));
    };

    const initial = S.emptySpec("new-workflow"); // fixed for the static prerender; Studio picks a fresh id on mount
    return {
      spec: initial,
      layout: {},
      measured: {},
      past: [],
      future: [],
      lastCommit: null,
      dragging: false,
      selectedNodes: [],
      selectedEdges: [],
      dirty: false,
      savedId: null,
      savedVersion: null,
      viewingVersion: null,
      workflows: [],
      workflowsStatus: "idle",
      versions: [],
      validation: emptyValidation(),
      runView: emptyRun(),
      runs: [],
      library: [],
      libraryStatus: "idle",
      tab: "properties",
      notice: null,
      busy: { save: false, validate: false, run: false },
      fitNonce: 0,
      schemaRevision: 0,
      compare: null,
      overlay: null,
      replay: emptyReplay(),
      streamRuns: true,
      dashboard: { range: "24h", workflowId: null, status: "idle", summary: null, query: null, error: null },
      collab: collabOff(),

      // ---------------------------------------------------------------- document
      newWorkflow() {
        resetDocument(S.emptySpec(newId()), { savedId: null, savedVersion: null, viewingVersion: null, versions: [], runs: [], tab: "properties" });
      },

      loadSpec(spec, opts = {}) {
        if (opts.history === false) {
          resetDocument(spec, { savedId: null, savedVersion: null, viewingVersion: null, versions: [], runs: [] });
          set({ dirty: true });
          return;
        }
        stopWatch?.();
        stopWatch = null;
        // Another workflow's file: no longer the saved one (its versions and runs are not this).
        const other = get().savedId !== null && spec.id !== get().savedId;
        commit(() => ({ spec, layout: positionsFor(spec, get().measured) }), undefined, {
          selectedNodes: [],
          selectedEdges: [],
          fitNonce: get().fitNonce + 1,
          validation: emptyValidation(),
          runView: emptyRun(),
          ...(other ? { savedId: null, savedVersion: null, viewingVersion: null, versions: [], runs: [], compare: null, replay: emptyReplay() } : {}),
        });
      },

      applyJson(spec) {
        commit((s) => ({ spec, layout: mergeLayout(spec, s.layout, get().measured) }), "json");
        const ids = new Set(spec.nodes.map((n) => n.id));
        const { selectedNodes } = get();
        if (selectedNodes.some((id) => !ids.has(id))) set({ selectedNodes: selectedNodes.filter((id) => ids.has(id)), selectedEdges: [] });
      },

      setWorkflowFields(patch) {
        commit((s) => {
          const spec = { ...s.spec } as unknown as Record<string, unknown>;
          for (const [k, v] of Object.entries(patch)) {
            if (v === undefined) delete spec[k];
            else spec[k] = v;
          }
          return { spec: spec as unknown as WorkflowSpec };
        }, `wf:${Object.keys(patch).join(",")}`);
      },

      addNode(type, position) {
        let id = "";
        commit((s) => {
          const pos = position ?? { x: 80 + (s.spec.nodes.length % 5) * 60, y: 80 + s.spec.nodes.length * 30 };
          const r = S.addNode(s.spec, type, pos);
          id = r.id;
          return { spec: r.spec, layout: { ...s.layout, [r.id]: S.roundPos(pos) } };
        }, undefined, {});
        set({ selectedNodes: [id], selectedEdges: [], tab: "properties" });
        return id;
      },

      updateNode(id, node) {
        commit((s) => {
          const spec = S.updateNode(s.spec, id, node);
          if (node.id === id) return { spec };
          const layout = { ...s.layout, [node.id]: s.layout[id] };
          delete layout[id];
          return { spec, layout };
        }, `node:${id}`);
        if (node.id !== id) {
          const m = { ...get().measured };
          if (m[id]) m[node.id] = m[id];
          set({ selectedNodes: get().selectedNodes.map((n) => (n === id ? node.id : n)), measured: m, lastCommit: { key: `node:${node.id}`, at: Date.now() } });
        }
      },

      connect(from, to) {
        commit((s) => ({ spec: S.connect(s.spec, from, to) }));
      },

      updateEdge(index, edge) {
        commit((s) => ({ spec: S.updateEdge(s.spec, index, edge) }), `edge:${index}`);
      },

      setEdgeCondition(index, condition) {
        commit((s) => ({ spec: S.setEdgeCondition(s.spec, index, condition) }), `edge:${index}`);
      },

      deleteElements(nodeIds, flowEdgeIds) {
        commit((s) => {
          const spec = S.removeElements(s.spec, nodeIds, flowEdgeIds);
          if (!nodeIds.length) return { spec };
          const layout = { ...s.layout };
          for (const id of nodeIds) delete layout[id];
          return { spec, layout };
        });
        set({ selectedNodes: [], selectedEdges: [] });
      },

      deleteSelection() {
        const { selectedNodes, selectedEdges } = get();
        if (selectedNodes.length || selectedEdges.length) get().deleteElements(selectedNodes, selectedEdges);
      },

      upsertQueue(index, queue) {
        commit((s) => ({ spec: S.upsertQueue(s.spec, index, queue) }), `queue:${index}`);
      },
      removeQueue(index) {
        commit((s) => ({ spec: S.removeQueue(s.spec, index) }));
      },
      upsertSource(index, source) {
        commit((s) => ({ spec: S.upsertSource(s.spec, index, source) }), `source:${index}`);
      },
      removeSource(index) {
        commit((s) => ({ spec: S.removeSource(s.spec, index) }));
      },

      autoLayout() {
        commit((s) => {
          const layout = layoutPositions(s.spec, get().measured);
          return { spec: S.setNodePositions(s.spec, layout), layout };
        });
        set({ fitNonce: get().fitNonce + 1 });
      },

      undo() {
        if (undoDelegate && !get().overlay) return undoDelegate.undo();
        const st = get();
        const prev = st.past[st.past.length - 1];
        if (!prev || st.overlay) return; // a diff or replay is on show: the document is out of sight
        set({
          ...prev,
          past: st.past.slice(0, -1),
          future: [{ spec: st.spec, layout: st.layout }, ...st.future],
          lastCommit: null,
          dirty: true,
          selectedNodes: st.selectedNodes.filter((id) => prev.spec.nodes.some((n) => n.id === id)),
          selectedEdges: [],
        });
      },

      redo() {
        if (undoDelegate && !get().overlay) return undoDelegate.redo();
        const st = get();
        const next = st.future[0];
        if (!next || st.overlay) return;
        set({
          ...next,
          past: [...st.past, { spec: st.spec, layout: st.layout }],
          future: st.future.slice(1),
          lastCommit: null,
          dirty: true,
          selectedNodes: st.selectedNodes.filter((id) => next.spec.nodes.some((n) => n.id === id)),
          selectedEdges: [],
        });
      },

      applyRemote(spec) {
        const st = get();
        if (spec === st.spec) return;
        const ids = new Set(spec.nodes.map((n) => n.id));
        set({
          spec,
          layout: mergeLayout(spec, st.layout, st.measured),
          dirty: true,
          validation: st.validation.status === "done" ? { ...st.validation, stale: true } : st.validation,
          selectedNodes: st.selectedNodes.filter((id) => ids.has(id)),
        });
      },

      setCollab(patch) {
        set({ collab: { ...get().collab, ...patch } });
      },

      // ---------------------------------------------------------------- canvas
      moveNodes(positions, done) {
        const st = get();
        if (!st.dragging) {
          // First movement of a drag: one undo step for the whole drag.
          set({ past: [...st.past, { spec: st.spec, layout: st.layout }].slice(-HISTORY_LIMIT), future: [], dragging: true, lastCommit: null });
        }
        const layout = { ...get().layout };
        for (const [id, p] of Object.entries(positions)) layout[id] = p;
        if (!done) {
          set({ layout });
          return;
        }
        const moved: Record<string, Position> = {};
        for (const id of Object.keys(positions)) moved[id] = layout[id];
        set({ layout, dragging: false, spec: S.setNodePositions(get().spec, moved), dirty: true });
      },

      setMeasured(sizes) {
        set({ measured: { ...get().measured, ...sizes } });
      },

      select(nodes, edges) {
        const st = get();
        const same = (a: string[], b: string[]) => a.length === b.length && a.every((x, i) => x === b[i]);
        if (same(nodes, st.selectedNodes) && same(edges, st.selectedEdges)) return;
        set({ selectedNodes: nodes, selectedEdges: edges, ...(nodes.length || edges.length ? { tab: st.tab === "properties" || st.tab === "json" || st.tab === "problems" || st.tab === "run" ? st.tab : "properties" } : {}) });
      },

      setTab(tab) {
        set({ tab });
      },

      requestFit() {
        set({ fitNonce: get().fitNonce + 1 });
      },

      notify(kind, text) {
        set({ notice: { kind, text, at: Date.now() } });
      },

      // ---------------------------------------------------------------- server
      async loadSchema() {
        try {
          if (setRootSchema(await api.getSchema())) set({ schemaRevision: get().schemaRevision + 1 });
        } catch {
          /* keep the bundled schema */
        }
        try {
          // after the schema: a type it lacks is merged into it (lib/schema.ts setNodeTypes)
          if (setNodeTypes(await api.getNodeTypes())) set({ schemaRevision: get().schemaRevision + 1 });
        } catch {
          /* the palette keeps the schema's types */
        }
      },

      async validate() {
        set((s) => ({ busy: { ...s.busy, validate: true }, validation: { ...s.validation, status: "running" } }));
        try {
          const r = await api.validateSpec(get().spec);
          setProblems(r.errors, r.valid);
          get().notify(r.valid ? "success" : "error", r.valid ? "The workflow is valid" : `${r.errors.length} problem${r.errors.length === 1 ? "" : "s"} found`);
          return r.valid;
        } catch (e) {
          const message = fail(e);
          set((s) => ({ validation: { ...s.validation, status: "failed", message } }));
          return false;
        } finally {
          set((s) => ({ busy: { ...s.busy, validate: false } }));
        }
      },

      async loadWorkflows() {
        set({ workflowsStatus: "loading" });
        try {
          const items: WorkflowSummary[] = [];
          let cursor: string | null | undefined = null;
          for (let page = 0; page < 20; page++) {
            const r: Awaited<ReturnType<typeof api.listWorkflows>> = await api.listWorkflows(100, cursor);
            items.push(...(r.items ?? []));
            cursor = r.next_cursor;
            if (!cursor) break;
          }
          set({ workflows: items, workflowsStatus: "done" });
        } catch (e) {
          fail(e);
          set({ workflowsStatus: "failed" });
        }
      },

      async openWorkflow(id) {
        try {
          const rec = await api.getWorkflow(id);
          resetDocument(rec.spec, { savedId: rec.id, savedVersion: rec.version, viewingVersion: null, versions: [], runs: [] });
          void get().loadVersions();
          void get().loadRuns();
          return true;
        } catch (e) {
          fail(e);
          return false;
        }
      },

      async openVersion(version) {
        const id = get().savedId;
        if (!id) return;
        try {
          const v = await api.getVersion(id, version);
          const latest = get().versions.reduce((m, x) => Math.max(m, x.version), 0);
          resetDocument(v.spec, { savedId: id, viewingVersion: version === latest ? null : version, runs: get().runs, versions: get().versions });
          if (version !== latest) get().notify("info", `Viewing version ${version}; saving makes it the newest version`);
        } catch (e) {
          fail(e);
        }
      },

      async loadVersions() {
        const id = get().savedId;
        if (!id) return set({ versions: [] });
        try {
          const r = await api.listVersions(id);
          set({ versions: [...(r.items ?? [])].sort((a, b) => b.version - a.version) });
        } catch (e) {
          fail(e);
        }
      },

      async save() {
        const spec = get().spec;
        set((s) => ({ busy: { ...s.busy, save: true } }));
        try {
          const rec = await api.saveWorkflow(spec);
          set({ savedId: rec.id, savedVersion: rec.version, viewingVersion: null, dirty: get().spec !== spec });
          get().notify("success", `Saved ${rec.name ?? rec.id} as version ${rec.version}`);
          void get().loadWorkflows();
          void get().loadVersions();
          return true;
        } catch (e) {
          if (e instanceof api.ApiError && e.errors.length) {
            setProblems(e.errors, false);
            set({ tab: "problems" });
          }
          fail(e);
          return false;
        } finally {
          set((s) => ({ busy: { ...s.busy, save: false } }));
        }
      },

      async deleteWorkflow(id) {
        try {
          await api.deleteWorkflow(id);
          if (get().savedId === id) set({ savedId: null, savedVersion: null, versions: [], runs: [], dirty: true });
          get().notify("info", `Deleted ${id}`);
          await get().loadWorkflows();
        } catch (e) {
          fail(e);
        }
      },

      async startRun(input) {
        set((s) => ({ busy: { ...s.busy, run: true } }));
        try {
          const st = get();
          if (st.dirty || st.savedId !== st.spec.id) {
            if (!(await get().save())) return null;
          }
          const { run_id } = await api.startRun(get().spec.id, input, { stream: get().streamRuns });
          set({
            runView: { ...emptyRun(), run: { run_id, status: "queued", workflow_id: get().spec.id }, watching: true },
            tab: "run",
          });
          watch(run_id);
          return run_id;
        } catch (e) {
          fail(e);
          return null;
        } finally {
          set((s) => ({ busy: { ...s.busy, run: false } }));
        }
      },

      async openRun(runId) {
        try {
          const run = await api.getRun(runId);
          const live = !TERMINAL_RUN_STATUSES.includes(run.status);
          stopWatch?.();
          stopWatch = null;
          set({ runView: { ...emptyRun(), run, ...stepsFrom(run), watching: live }, tab: "run" });
          if (live) watch(runId);
        } catch (e) {
          fail(e);
        }
      },

      async openRunOf(runId) {
        try {
          const run = await api.getRun(runId);
          if (run.workflow_id && run.workflow_id !== get().savedId) {
            if (!(await get().openWorkflow(run.workflow_id))) return;
          }
          await get().openRun(runId);
        } catch (e) {
          fail(e);
        }
      },

      async cancelRun() {
        const id = get().runView.run?.run_id;
        if (!id) return;
        try {
          await api.cancelRun(id);
          get().notify("info", "Cancel requested");
        } catch (e) {
          fail(e);
        }
      },

      async loadRuns() {
        const id = get().savedId;
        if (!id) return set({ runs: [] });
        try {
          const r = await api.listRuns(id, 20);
          set({ runs: r.items ?? [] });
        } catch {
          set({ runs: [] });
        }
      },

      clearRun() {
        stopWatch?.();
        stopWatch = null;
        set({ runView: emptyRun() });
      },

      async loadLibrary() {
        set({ libraryStatus: "loading" });
        try {
          const r = await api.listSources();
          set({ library: r.items ?? [], libraryStatus: "done" });
        } catch (e) {
          fail(e);
          set({ libraryStatus: "failed" });
        }
      },

      async publishSource(source) {
        try {
          const exists = get().library.some((s) => s.id === source.id);
          if (exists) await api.updateSource(source.id, source);
          else await api.createSource(source);
          get().notify("success", `Source ${source.id} saved to the library`);
          await get().loadLibrary();
          return true;
        } catch (e) {
          fail(e);
          return false;
        }
      },

      async deleteLibrarySource(id) {
        try {
          await api.deleteSource(id);
          get().notify("info", `Source ${id} deleted from the library`);
          await get().loadLibrary();
        } catch (e) {
          fail(e);
        }
      },

      useLibrarySource(source) {
        const sources = S.sourcesOf(get().spec);
        const i = sources.findIndex((s) => s.id === source.id);
        get().upsertSource(i < 0 ? null : i, source);
      },

      // ---------------------------------------------------------------- versions: diff, restore
      async compareVersions(from, to) {
        const id = get().savedId;
        if (!id) return;
        stopPlaying();
        set((s) => ({
          compare: { from, to, status: "loading", diff: null, error: null },
          tab: "history",
          ...(s.overlay?.kind === "replay" ? { overlay: null } : {}),
          replay: { ...s.replay, playing: false },
        }));
        const current = () => get().compare?.from === from && get().compare?.to === to && get().savedId === id;
        try {
          const [raw, a, b] = await Promise.all([
            api.diffVersions(id, from, to),
            api.getVersion(id, from).catch(() => null),
            api.getVersion(id, to).catch(() => null),
          ]);
          if (!current()) return;
          const diff = normalizeDiff(raw);
          set({ compare: { from, to, status: "done", diff, error: null } });
          const docVersion = get().viewingVersion ?? get().savedVersion;
          const toSpec = b?.spec ?? (docVersion === to && !get().dirty ? get().spec : null);
          if (toSpec) {
            const spec = diffSpec(a?.spec ?? null, toSpec, diff);
            set({
              overlay: { kind: "diff", spec, layout: positionsFor(spec, get().measured), marks: nodeMarks(diff), edgeMarks: edgeMarks(diff), title: `Comparing v${from} → v${to}` },
              fitNonce: get().fitNonce + 1,
            });
          }
        } catch (e) {
          if (!current()) return;
          const message = fail(e);
          set({ compare: { from, to, status: "failed", diff: null, error: message } });
        }
      },

      closeCompare() {
        const st = get();
        set({ compare: null, ...(st.overlay?.kind === "diff" ? { overlay: null, fitNonce: st.fitNonce + 1 } : {}) });
      },

      async restoreVersion(version) {
        const id = get().savedId;
        if (!id) return false;
        try {
          const rec = await api.rollbackWorkflow(id, version);
          const spec = rec.spec ?? (await api.getWorkflow(id)).spec;
          resetDocument(spec, { savedId: rec.id ?? id, savedVersion: rec.version, viewingVersion: null, versions: get().versions, runs: get().runs });
          get().notify("success", `Restored version ${version} as version ${rec.version}`);
          void get().loadVersions();
          void get().loadWorkflows();
          return true;
        } catch (e) {
          fail(e);
          return false;
        }
      },

      // ---------------------------------------------------------------- trace replay
      async openReplay(runId) {
        stopPlaying();
        set((s) => ({
          replay: { ...emptyReplay(), runId, status: "loading" },
          tab: "replay",
          compare: null,
          ...(s.overlay ? { overlay: null } : {}),
        }));
        const mine = () => get().replay.runId === runId;
        try {
          const trace = normalizeTrace(await api.getTrace(runId));
          if (!mine()) return;
          set({ replay: { ...emptyReplay(), runId, status: "done", trace } });
          await get().showOverlay("replay");
        } catch (e) {
          if (!mine()) return;
          const message = fail(e);
          set({ replay: { ...emptyReplay(), runId, status: "failed", error: message } });
        }
      },

      closeReplay() {
        stopPlaying();
        const st = get();
        set({ replay: emptyReplay(), ...(st.overlay?.kind === "replay" ? { overlay: null, fitNonce: st.fitNonce + 1 } : {}) });
      },

      async showOverlay(kind) {
        if (kind === "diff") {
          const c = get().compare;
          if (c) await get().compareVersions(c.from, c.to);
          return;
        }
        const trace = get().replay.trace;
        if (!trace) return;
        // The canvas shows the version the run ran (the open document when it is that version).
        const st = get();
        let spec: WorkflowSpec | null = null;
        const docVersion = st.viewingVersion ?? st.savedVersion;
        if (trace.workflow_id && trace.workflow_id === st.savedId && trace.workflow_version === docVersion && !st.dirty) spec = st.spec;
        else if (trace.workflow_id && trace.workflow_version) {
          try {
            spec = (await api.getVersion(trace.workflow_id, trace.workflow_version)).spec;
          } catch {
            spec = null;
          }
        }
        if (get().replay.trace !== trace) return;
        spec ??= get().spec;
        const layout = spec === get().spec ? get().layout : positionsFor(spec, get().measured);
        set({
          overlay: { kind: "replay", spec, layout, marks: {}, edgeMarks: {}, title: `Replay of run ${trace.run_id.slice(0, 8)}${trace.workflow_version ? ` (v${trace.workflow_version})` : ""}` },
          fitNonce: get().fitNonce + (spec === get().spec ? 0 : 1),
        });
      },

      replaySeek(cursor) {
        const r = get().replay;
        if (!r.trace) return;
        const c = clampCursor(r.trace, cursor);
        if (c !== r.cursor) set({ replay: { ...r, cursor: c } });
      },

      replayStep(delta) {
        get().replayPause();
        get().replaySeek(get().replay.cursor + delta);
      },

      replayPlay() {
        const r = get().replay;
        if (!r.trace || !r.trace.steps.length) return;
        stopPlaying();
        const last = r.trace.steps.length - 1;
        set({ replay: { ...r, playing: true, cursor: r.cursor >= last ? 0 : r.cursor } });
        const tick = () => {
          const cur = get().replay;
          if (!cur.playing || !cur.trace) return;
          if (cur.cursor >= cur.trace.steps.length - 1) {
            playTimer = null;
            set({ replay: { ...cur, playing: false } });
            return;
          }
          set({ replay: { ...cur, cursor: cur.cursor + 1 } });
          playTimer = setTimeout(tick, REPLAY_STEP_MS);
        };
        playTimer = setTimeout(tick, REPLAY_STEP_MS);
      },

      replayPause() {
        stopPlaying();
        const r = get().replay;
        if (r.playing) set({ replay: { ...r, playing: false } });
      },

      async rerunFrom(fromNode, state) {
        const r = get().replay;
        if (!r.runId) return null;
        get().replayPause();
        set({ replay: { ...get().replay, rerunning: true } });
        try {
          const queued = await api.rerunFrom(r.runId, fromNode, state, { stream: get().streamRuns });
          const workflowId = r.trace?.workflow_id ?? get().savedId ?? undefined;
          stopWatch?.();
          stopWatch = null;
          const st = get();
          set({
            runView: { ...emptyRun(), run: { run_id: queued.run_id, status: queued.status ?? "queued", workflow_id: workflowId, parent_run_id: queued.parent_run_id ?? r.runId, rerun_from: fromNode }, watching: true },
            replay: emptyReplay(),
            ...(st.overlay?.kind === "replay" ? { overlay: null } : {}),
            tab: "run",
          });
          watch(queued.run_id);
          get().notify("info", `Re-running from ${fromNode}`);
          return queued.run_id;
        } catch (e) {
          fail(e);
          set({ replay: { ...get().replay, rerunning: false } });
          return null;
        }
      },

      setStreamRuns(on) {
        set({ streamRuns: on });
      },

      // ---------------------------------------------------------------- dashboard
      async loadDashboard() {
        const d = get().dashboard;
        const query = rangeQuery(d.range, Date.now(), d.workflowId);
        set({ dashboard: { ...d, status: "loading", query, error: null } });
        const mine = () => get().dashboard.query === query;
        try {
          const summary = normalizeSummary(await api.getMetricsSummary(query));
          if (mine()) set({ dashboard: { ...get().dashboard, status: "done", summary } });
        } catch (e) {
          if (mine()) set({ dashboard: { ...get().dashboard, status: "failed", error: e instanceof Error ? e.message : String(e) } });
        }
      },

      setDashboardRange(range) {
        set({ dashboard: { ...get().dashboard, range } });
        void get().loadDashboard();
      },

      setDashboardWorkflow(id) {
        set({ dashboard: { ...get().dashboard, workflowId: id || null } });
        void get().loadDashboard();
      },
    };
  });

export const useWorkflowStore = createWorkflowStore();
