/**
 * Live co-editing of the open workflow: a Yjs document shared through the API's
 * y-websocket endpoint `/workflows/{id}/collab`, bound to the store.
 *
 * The document's layout is the server's (api/collab_doc.py): every value a JSON string,
 * one Y.Map per node, so two people who edit different nodes or fields both keep their
 * edit. The binding writes what changed in the store (spec diff, positions while a node is
 * dragged) into the document, and shows what others changed (`applyRemote`, which makes
 * no undo step of ours). Undo is a Y.UndoManager that tracks only this page's edits.
 * Presence (name, colour, pointer, selection) goes through Yjs awareness.
 *
 * When the server refuses or cannot be reached, Studio keeps working on its own: nothing
 * is bound until the document has synced.
 */
import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";
import * as api from "./api";
import { roundPos } from "./spec";
import type { Position, WorkflowSpec } from "./types";
import { collabOff, setUndoDelegate, type Peer, type StudioState } from "./useWorkflowStore";

/** Transaction origin of this page's edits: the only ones its undo manager tracks. */
export const LOCAL_ORIGIN = "studio-local";
const LISTS = ["edges", "queues", "sources"] as const;
type ListKey = (typeof LISTS)[number];
const NOT_META = new Set<string>(["nodes", ...LISTS]);

/** The parts of a zustand store the binding uses (the app's store, or a test's). */
export interface StoreLike {
  getState(): StudioState;
  subscribe(listener: (state: StudioState, prev: StudioState) => void): () => void;
}

export interface Roots {
  meta: Y.Map<string>;
  nodes: Y.Map<Y.Map<string>>;
  order: Y.Array<string>;
  edges: Y.Array<string>;
  queues: Y.Array<string>;
  sources: Y.Array<string>;
}

export function roots(doc: Y.Doc): Roots {
  return {
    meta: doc.getMap<string>("meta"),
    nodes: doc.getMap<Y.Map<string>>("nodes"),
    order: doc.getArray<string>("order"),
    edges: doc.getArray<string>("edges"),
    queues: doc.getArray<string>("queues"),
    sources: doc.getArray<string>("sources"),
  };
}

/** JSON with sorted keys (as the server writes it), so equal values compare equal. */
export function dump(value: unknown): string {
  return JSON.stringify(value, (_k, v) =>
    v && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]])) : v,
  );
}

function parse(text: unknown): unknown {
  if (typeof text !== "string") return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The spec the document holds; null while it holds none. */
export function readSpec(doc: Y.Doc): WorkflowSpec | null {
  const r = roots(doc);
  if (r.meta.size === 0 && r.nodes.size === 0) return null;
  const spec: Record<string, unknown> = {};
  r.meta.forEach((v, k) => {
    const value = parse(v);
    if (value !== undefined) spec[k] = value;
  });
  const seen = new Set<string>();
  const ids: string[] = [];
  for (const id of r.order.toArray()) {
    if (r.nodes.has(id) && !seen.has(id)) {
      seen.add(id);
      ids.push(id);
    }
  }
  ids.push(...[...r.nodes.keys()].filter((id) => !seen.has(id)).sort());
  spec.nodes = ids.map((id) => {
    const node: Record<string, unknown> = {};
    r.nodes.get(id)!.forEach((v, k) => {
      const value = parse(v);
      if (value !== undefined) node[k] = value;
    });
    return node;
  });
  for (const name of LISTS) {
    const items = r[name].toArray().map(parse).filter((v) => v !== undefined);
    if (items.length || name === "edges") spec[name] = items; // an empty optional list is absent
  }
  return spec as unknown as WorkflowSpec;
}

function diffList(arr: Y.Array<string>, before: unknown[], after: unknown[]) {
  const a = before.map(dump);
  const b = after.map(dump);
  if (a.length === b.length && a.every((x, i) => x === b[i])) return;
  const current = arr.toArray();
  if (current.length !== a.length || current.some((x, i) => x !== a[i])) {
    // the document is not what we last saw (should not happen): write the whole list
    arr.delete(0, arr.length);
    arr.insert(0, b);
    return;
  }
  let head = 0;
  while (head < a.length && head < b.length && a[head] === b[head]) head++;
  let tail = 0;
  while (tail < a.length - head && tail < b.length - head && a[a.length - 1 - tail] === b[b.length - 1 - tail]) tail++;
  arr.delete(head, a.length - head - tail);
  arr.insert(head, b.slice(head, b.length - tail));
}

/** Write the change from `prev` to `next` into the document: only the fields that changed. */
export function writeSpec(doc: Y.Doc, prev: WorkflowSpec | null, next: WorkflowSpec, origin: unknown = LOCAL_ORIGIN): void {
  const r = roots(doc);
  const before = (prev ?? { nodes: [] }) as unknown as Record<string, unknown>;
  const after = next as unknown as Record<string, unknown>;
  doc.transact(() => {
    for (const k of new Set([...Object.keys(before), ...Object.keys(after)])) {
      if (NOT_META.has(k)) continue;
      if (after[k] === undefined) {
        if (r.meta.has(k)) r.meta.delete(k);
      } else if (!prev || dump(before[k]) !== dump(after[k]) || !r.meta.has(k)) {
        r.meta.set(k, dump(after[k]));
      }
    }
    const oldNodes = new Map((prev?.nodes ?? []).map((n) => [n.id, n as unknown as Record<string, unknown>]));
    const newNodes = new Map(next.nodes.map((n) => [n.id, n as unknown as Record<string, unknown>]));
    for (const [id, node] of newNodes) {
      const old = oldNodes.get(id);
      const ym = r.nodes.get(id);
      if (!old || !ym) {
        const fresh = new Y.Map<string>();
        for (const [k, v] of Object.entries(node)) if (v !== undefined) fresh.set(k, dump(v));
        r.nodes.set(id, fresh);
        continue;
      }
      for (const k of new Set([...Object.keys(old), ...Object.keys(node)])) {
        if (node[k] === undefined) {
          if (ym.has(k)) ym.delete(k);
        } else if (dump(old[k]) !== dump(node[k])) ym.set(k, dump(node[k]));
      }
    }
    for (const id of oldNodes.keys()) if (!newNodes.has(id)) r.nodes.delete(id);
    const order = r.order.toArray();
    for (let i = order.length - 1; i >= 0; i--) if (oldNodes.has(order[i]) && !newNodes.has(order[i])) r.order.delete(i, 1);
    const listed = new Set(r.order.toArray());
    next.nodes.forEach((n, i) => {
      if (!listed.has(n.id)) r.order.insert(Math.min(i, r.order.length), [n.id]);
    });
    for (const name of LISTS) {
      diffList(r[name], ((before[name] as unknown[]) ?? []), ((after[name] as unknown[]) ?? []));
    }
  }, origin);
}

/** Positions of nodes being dragged, so the others see the drag as it happens. */
export function writePositions(doc: Y.Doc, positions: Record<string, Position>, origin: unknown = LOCAL_ORIGIN): void {
  const r = roots(doc);
  doc.transact(() => {
    for (const [id, p] of Object.entries(positions)) {
      const ym = r.nodes.get(id);
      if (ym && p) ym.set("position", dump(roundPos(p)));
    }
  }, origin);
}

export interface Binding {
  undoManager: Y.UndoManager;
  unbind(): void;
}

export interface BindOptions {
  /** A viewer: local edits are undone at once and never written. */
  readOnly?: boolean;
  onReadOnlyEdit?(): void;
  /** The store's spec when joining began: edits made while connecting (a rename, a save)
   * are merged into the document instead of being replaced by it. */
  base?: WorkflowSpec;
}

/**
 * Bind a synced document to the store's open workflow `workflowId`. The document wins
 * when it holds a spec (it is the live draft); an empty one is filled from the store.
 */
export function bindStore(doc: Y.Doc, store: StoreLike, workflowId: string, opts: BindOptions = {}): Binding {
  const r = roots(doc);
  const ours = (s: StudioState) => s.savedId === workflowId && s.spec.id === workflowId && s.viewingVersion === null;
  let synced: WorkflowSpec | null = null; // the spec last in agreement with the document
  let applying = false;

  /** Show `spec` in the store without taking it for a local edit. */
  const show = (s: StudioState, spec: WorkflowSpec) => {
    applying = true;
    try {
      s.applyRemote(spec);
    } finally {
      applying = false;
    }
    synced = store.getState().spec;
  };

  const pull = () => {
    const s = store.getState();
    if (!ours(s)) return;
    const spec = readSpec(doc);
    if (!spec) return;
    if (synced === null && dump(spec) === dump(s.spec)) {
      synced = s.spec; // the same workflow: nothing to show
      return;
    }
    show(s, spec);
  };

  const first = store.getState();
  if (readSpec(doc) === null && ours(first) && !opts.readOnly) {
    writeSpec(doc, null, first.spec, "seed"); // not an undo step
    synced = first.spec;
  } else {
    if (opts.base && !opts.readOnly && ours(first) && first.spec !== opts.base && readSpec(doc)) {
      writeSpec(doc, opts.base, first.spec, "joining"); // only what changed while connecting; not an undo step
    }
    pull();
  }

  const onUpdate = (_update: Uint8Array, origin: unknown) => {
    if (origin !== LOCAL_ORIGIN) pull();
  };
  doc.on("update", onUpdate);

  const unsubscribe = store.subscribe((s, prev) => {
    if (applying || !ours(s)) return;
    if (synced === null) {
      pull();
      return;
    }
    if (s.spec !== synced) {
      if (opts.readOnly) {
        show(s, readSpec(doc) ?? synced);
        opts.onReadOnlyEdit?.();
        return;
      }
      writeSpec(doc, synced, s.spec, LOCAL_ORIGIN);
      synced = s.spec;
    }
    if (s.dragging && s.layout !== prev.layout && !opts.readOnly) {
      const moved: Record<string, Position> = {};
      for (const [id, p] of Object.entries(s.layout)) if (prev.layout[id] !== p) moved[id] = p;
      if (Object.keys(moved).length) writePositions(doc, moved, LOCAL_ORIGIN);
    }
  });

  const undoManager = new Y.UndoManager([r.meta, r.nodes, r.order, r.edges, r.queues, r.sources], {
    trackedOrigins: new Set([LOCAL_ORIGIN]),
    captureTimeout: 400,
  });
  const stacks = () =>
    store.getState().setCollab({ canUndo: undoManager.undoStack.length > 0, canRedo: undoManager.redoStack.length > 0 });
  undoManager.on("stack-item-added", stacks);
  undoManager.on("stack-item-popped", stacks);
  undoManager.on("stack-cleared", stacks);

  return {
    undoManager,
    unbind() {
      unsubscribe();
      doc.off("update", onUpdate);
      undoManager.destroy();
    },
  };
}

// ------------------------------------------------------------------ the session

const COLORS = ["#e11d48", "#2563eb", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4d7c0f"];
export const colorOf = (clientId: number) => COLORS[Math.abs(clientId) % COLORS.length];

/** Close codes after which reconnecting cannot help (api/collab.py). */
const FINAL_CODES = new Set([1003, 1009, 4400, 4401, 4403, 4404]);

interface Session {
  provider: WebsocketProvider;
  setCursor(p: Position | null): void;
  stop(): void;
}

let session: Session | null = null;

/** Tell the others where this user's pointer is on the canvas (flow coordinates). */
export function shareCursor(p: Position | null): void {
  session?.setCursor(p);
}

function socketBase(): string {
  const base = api.API_BASE || (typeof window !== "undefined" ? window.location.origin : "");
  return base.replace(/^http/, "ws");
}

function peersOf(awareness: WebsocketProvider["awareness"]): Peer[] {
  const peers: Peer[] = [];
  awareness.getStates().forEach((state, clientId) => {
    if (clientId === awareness.clientID || !state?.user) return;
    const user = state.user as { name?: unknown; color?: unknown };
    const cursor = state.cursor as Position | null | undefined;
    peers.push({
      clientId,
      name: typeof user.name === "string" ? user.name : "someone",
      color: typeof user.color === "string" ? user.color : colorOf(clientId),
      cursor: cursor && typeof cursor.x === "number" && typeof cursor.y === "number" ? cursor : null,
      selection: Array.isArray(state.selection) ? (state.selection as unknown[]).filter((x): x is string => typeof x === "string") : [],
    });
  });
  return peers.sort((a, b) => a.clientId - b.clientId);
}

/** Join the collaborative session of `workflowId`; returns what leaves it. `signal`: the
 * caller moved on (another workflow opened) while we asked who we are: join nothing. */
export async function startCollab(workflowId: string, store: StoreLike, signal?: AbortSignal): Promise<() => void> {
  session?.stop();
  const base = store.getState().spec;
  store.getState().setCollab({ ...collabOff(), status: "connecting" });
  let me: { subject: string; role: string };
  try {
    me = await api.getMe();
  } catch (e) {
    if (!signal?.aborted) store.getState().setCollab({ status: "unavailable", reason: (e as Error).message });
    return () => undefined;
  }
  if (signal?.aborted) return () => undefined;
  session?.stop();
  const readOnly = me.role === "viewer";
  const token = api.currentApiToken();
  const doc = new Y.Doc();
  const provider = new WebsocketProvider(socketBase(), `workflows/${encodeURIComponent(workflowId)}/collab`, doc, {
    protocols: ["agentflow", ...(token ? [`bearer.${token}`] : [])],
    disableBc: true, // tabs share through the server only (its auth and checks apply)
    maxBackoffTime: 5000,
  });
  const color = colorOf(doc.clientID);
  provider.awareness.setLocalStateField("user", { name: me.subject, color });
  provider.awareness.setLocalStateField("selection", store.getState().selectedNodes);
  let binding: Binding | null = null;
  let stopped = false;

  const onAwareness = () => store.getState().setCollab({ peers: peersOf(provider.awareness) });
  provider.awareness.on("change", onAwareness);
  provider.on("status", ({ status }) => {
    if (stopped) return;
    if (status !== "connected") store.getState().setCollab({ status: store.getState().collab.status === "unavailable" ? "unavailable" : "connecting" });
    else if (binding) store.getState().setCollab({ status: "live" });
  });
  provider.on("sync", (isSynced: boolean) => {
    if (stopped || !isSynced) return;
    if (!binding) {
      binding = bindStore(doc, store, workflowId, {
        readOnly,
        base,
        onReadOnlyEdit: () => store.getState().notify("info", "You can watch this workflow but not change it (role viewer)"),
      });
      const undo = binding.undoManager;
      setUndoDelegate({ undo: () => undo.undo(), redo: () => undo.redo() });
    }
    store.getState().setCollab({ status: "live", readOnly, reason: null });
  });
  provider.on("connection-close", (event: CloseEvent | null) => {
    if (stopped || !event || !FINAL_CODES.has(event.code)) return;
    provider.disconnect(); // refused: retrying would be refused again
    store.getState().setCollab({ status: "unavailable", reason: event.reason || `closed (${event.code})`, peers: [] });
    if (event.code === 1009 || event.code === 4400) store.getState().notify("error", `Live editing stopped: ${event.reason}`);
  });
  const unsubscribeSelection = store.subscribe((s, prev) => {
    if (s.selectedNodes !== prev.selectedNodes) provider.awareness.setLocalStateField("selection", s.selectedNodes);
  });

  let last = 0;
  let pending: ReturnType<typeof setTimeout> | null = null;
  const current: Session = {
    provider,
    setCursor(p) {
      const send = () => {
        last = Date.now();
        pending = null;
        provider.awareness.setLocalStateField("cursor", p ? roundPos(p) : null);
      };
      if (pending) clearTimeout(pending);
      const wait = 40 - (Date.now() - last); // at most 25 pointer updates a second
      if (wait <= 0) send();
      else pending = setTimeout(send, wait);
    },
    stop() {
      if (stopped) return;
      stopped = true;
      if (pending) clearTimeout(pending);
      unsubscribeSelection();
      provider.awareness.off("change", onAwareness);
      binding?.unbind();
      setUndoDelegate(null);
      provider.destroy();
      doc.destroy();
      if (session === current) {
        session = null;
        store.getState().setCollab(collabOff());
      }
    },
  };
  session = current;
  return current.stop;
}
