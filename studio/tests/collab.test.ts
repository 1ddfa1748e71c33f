/** The Yjs <-> store binding: two stores on two documents joined as the server joins them. */
import { beforeEach, describe, expect, it } from "vitest";
import * as Y from "yjs";
import { bindStore, dump, readSpec, roots, writeSpec, type Binding } from "@/lib/collab";
import type { WorkflowSpec } from "@/lib/types";
import { createWorkflowStore } from "@/lib/useWorkflowStore";

type Store = ReturnType<typeof createWorkflowStore>;

const SPEC: WorkflowSpec = {
  id: "shared",
  name: "Shared",
  start_node: "in",
  nodes: [
    { id: "in", type: "input", config: {} },
    { id: "ask", type: "llm", config: { prompt: "Hello {user_input}", output_key: "answer" } },
  ] as WorkflowSpec["nodes"],
  edges: [{ from: "in", to: "ask" }],
};

/** Two documents that pass every update to each other, as the server's room does. */
function joined(): [Y.Doc, Y.Doc] {
  const a = new Y.Doc();
  const b = new Y.Doc();
  a.on("update", (u: Uint8Array, origin: unknown) => origin !== "wire" && Y.applyUpdate(b, u, "wire"));
  b.on("update", (u: Uint8Array, origin: unknown) => origin !== "wire" && Y.applyUpdate(a, u, "wire"));
  return [a, b];
}

function openIn(store: Store, spec: WorkflowSpec = SPEC) {
  store.getState().loadSpec(structuredClone(spec), { history: false });
  store.setState({ savedId: spec.id, savedVersion: 1, dirty: false });
}

let docA: Y.Doc, docB: Y.Doc, A: Store, B: Store, bindA: Binding, bindB: Binding;

beforeEach(() => {
  [docA, docB] = joined();
  A = createWorkflowStore();
  B = createWorkflowStore();
  openIn(A);
  openIn(B);
  bindA = bindStore(docA, A, "shared"); // the first one in fills the empty document
  bindB = bindStore(docB, B, "shared");
});

const ids = (s: Store) => s.getState().spec.nodes.map((n) => n.id);

describe("the shared document", () => {
  it("reads back what was written, in the server's layout (JSON strings)", () => {
    const doc = new Y.Doc();
    writeSpec(doc, null, SPEC);
    expect(readSpec(doc)).toEqual(SPEC);
    expect(roots(doc).meta.get("name")).toBe('"Shared"');
    expect(roots(doc).nodes.get("ask")!.get("config")).toBe(dump(SPEC.nodes[1].config));
    expect(roots(doc).order.toArray()).toEqual(["in", "ask"]);
  });

  it("an edit in one store (add a node, connect it, rename) appears in the other", () => {
    const id = A.getState().addNode("aggregator", { x: 400, y: 100 });
    A.getState().connect("ask", id);
    A.getState().setWorkflowFields({ name: "Renamed together" });
    expect(ids(B)).toContain(id);
    expect(B.getState().spec.edges).toContainEqual({ from: "ask", to: id });
    expect(B.getState().spec.name).toBe("Renamed together");
    expect(B.getState().layout[id]).toEqual({ x: 400, y: 100 });
    expect(dump(B.getState().spec)).toBe(dump(A.getState().spec));
  });

  it("edits of different nodes made at the same time both survive", () => {
    // cut the wire, edit on both sides, then exchange what each has
    const [a, b] = [new Y.Doc(), new Y.Doc()];
    const sa = createWorkflowStore();
    const sb = createWorkflowStore();
    openIn(sa);
    openIn(sb);
    bindStore(a, sa, "shared");
    Y.applyUpdate(b, Y.encodeStateAsUpdate(a));
    bindStore(b, sb, "shared");
    const ask = sa.getState().spec.nodes[1];
    sa.getState().updateNode("ask", { ...ask, config: { ...ask.config, prompt: "From A" } } as typeof ask);
    const input = sb.getState().spec.nodes[0];
    sb.getState().updateNode("in", { ...input, config: { defaults: { lang: "en" } } } as typeof input);
    Y.applyUpdate(b, Y.encodeStateAsUpdate(a, Y.encodeStateVector(b)));
    Y.applyUpdate(a, Y.encodeStateAsUpdate(b, Y.encodeStateVector(a)));
    for (const s of [sa, sb]) {
      const nodes = s.getState().spec.nodes;
      expect((nodes[1].config as { prompt: string }).prompt).toBe("From A");
      expect(nodes[0].config).toEqual({ defaults: { lang: "en" } });
    }
  });

  it("a node dragged in one store moves in the other while it is dragged", () => {
    A.getState().moveNodes({ ask: { x: 10, y: 20 } }, false);
    expect(B.getState().layout.ask).toEqual({ x: 10, y: 20 });
    A.getState().moveNodes({ ask: { x: 30.4, y: 40.6 } }, true);
    expect(B.getState().spec.nodes[1].position).toEqual({ x: 30, y: 41 });
  });

  it("undo undoes only one's own edits", () => {
    A.getState().setWorkflowFields({ name: "A's name" });
    bindA.undoManager.stopCapturing();
    const id = B.getState().addNode("aggregator", { x: 0, y: 300 });
    expect(ids(A)).toContain(id);
    bindA.undoManager.undo();
    expect(A.getState().spec.name).toBe("Shared");
    expect(B.getState().spec.name).toBe("Shared");
    expect(ids(A)).toContain(id); // B's node stays
    expect(ids(B)).toContain(id);
    bindA.undoManager.redo();
    expect(B.getState().spec.name).toBe("A's name");
    expect(A.getState().collab.canRedo).toBe(false);
    expect(A.getState().collab.canUndo).toBe(true);
    bindB.unbind();
  });

  it("a remote edit makes no undo step of the store's own", () => {
    const before = B.getState().past.length;
    A.getState().setWorkflowFields({ name: "Remote" });
    expect(B.getState().past.length).toBe(before);
    expect(B.getState().dirty).toBe(true);
  });

  it("a viewer's edits are undone at once and never reach the document", () => {
    const [a, b] = joined();
    const editor = createWorkflowStore();
    const viewer = createWorkflowStore();
    openIn(editor);
    openIn(viewer);
    bindStore(a, editor, "shared");
    let told = 0;
    bindStore(b, viewer, "shared", { readOnly: true, onReadOnlyEdit: () => told++ });
    viewer.getState().addNode("llm", { x: 0, y: 0 });
    viewer.getState().setWorkflowFields({ name: "Viewer was here" });
    expect(told).toBe(2);
    expect(viewer.getState().spec.name).toBe("Shared");
    expect(ids(viewer)).toEqual(["in", "ask"]);
    expect(readSpec(a)!.name).toBe("Shared");
    editor.getState().setWorkflowFields({ name: "Editor" });
    expect(viewer.getState().spec.name).toBe("Editor"); // still watches
  });

  it("another workflow opened in the editor is not written into this document", () => {
    const other = { ...SPEC, id: "other", name: "Other" };
    A.getState().loadSpec(other, { history: false });
    A.setState({ savedId: "other" });
    A.getState().setWorkflowFields({ name: "Other renamed" });
    expect(readSpec(docA)!.name).toBe("Shared");
    expect(B.getState().spec.name).toBe("Shared");
  });

  it("edits made while joining (a rename saved as a new version) survive the first sync", () => {
    const room = new Y.Doc();
    writeSpec(room, null, SPEC, "seed"); // the room seeded itself from the older version
    const late = createWorkflowStore();
    openIn(late);
    const base = late.getState().spec; // joining began here
    late.getState().setWorkflowFields({ name: "Renamed while connecting" });
    late.setState({ savedVersion: 2, dirty: false }); // ... and saved
    const other = createWorkflowStore();
    openIn(other);
    other.getState().setWorkflowFields({ description: "edited by the other one" });
    writeSpec(room, SPEC, other.getState().spec, "wire"); // another editor's live change in the room
    bindStore(room, late, "shared", { base });
    expect(readSpec(room)!.name).toBe("Renamed while connecting");
    expect(late.getState().spec.name).toBe("Renamed while connecting");
    expect(late.getState().spec.description).toBe("edited by the other one"); // merged, not replaced
  });
});
