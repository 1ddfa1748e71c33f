"""LangGraph's Postgres checkpointer, holding a driver's checkpoints until the run pauses.

A driver advances a run until it must wait (a remote step, a person, child runs) or ends.
While it advances, the checkpoints and task writes of a `track`ed run stay in memory; `flush`
writes the newest checkpoint and the writes made against it (the finished tasks of an
interrupted superstep, and its interrupts) when the driver stops. So a pause costs one
checkpoint write, however many of the driver's own nodes ran before it. After a crash in
between, the run resumes from the last flushed checkpoint: its nodes are read back by step
key (`NodeDispatcher.recall`), so nothing is paid twice. A fresh tracked run has nothing
stored, so LangGraph's first read of it does not go to the database.

A flush is one transaction: the checkpoint, its channel blobs and the task writes made
against it commit together (the pool's connections are autocommit, so the stock saver
commits each statement on its own). A driver killed mid-flush leaves the previous
checkpoint whole, never a checkpoint without its writes; and a pause costs Postgres one
commit instead of one per row.

A flush can be fenced (`track(fence=...)`): a query run first in its transaction, which must
find a row, and locks it until the commit. The driver's fence finds the run only while no
newer driver has begun it, so a driver that was cut off (its lease lapsed, another took the
run over) cannot write its stale checkpoint over the newer one's: its flush raises Superseded.

A thread that is not tracked is saved as by the stock PostgresSaver.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from langgraph.checkpoint.postgres import PostgresSaver


class HoldingPostgresSaver(PostgresSaver):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._tracked: dict[str, _Held] = {}  # thread id -> what a tracked run holds
        self._flushing = threading.local()  # the cursor of this thread's flush, while it runs

    @contextmanager
    def _cursor(self, *, pipeline: bool = False) -> Iterator[Any]:
        # PostgresSaver's own put and put_writes take their cursor here: inside a flush they
        # share the flush's, so they commit together
        shared = getattr(self._flushing, "cursor", None)
        if shared is not None:
            yield shared
            return
        with super()._cursor(pipeline=pipeline) as cur:
            yield cur

    def track(self, thread_id: str, fresh: bool, loaded=None, fence: tuple[str, tuple] | None = None) -> None:
        """Hold this run's checkpoints until `flush`; `fresh`: nothing is stored for it yet
        (its first advance), so reads skip the database; `loaded`: the latest checkpoint
        tuple the caller has just read, which LangGraph's first read then reuses; `fence`:
        (SQL, parameters) that must find a row for a flush to commit."""
        with self._lock:
            self._tracked[thread_id] = _Held(fresh, loaded, fence)

    def get_tuple(self, config):
        thread_id = config["configurable"]["thread_id"]
        with self._lock:
            held = self._tracked.get(thread_id)
            fresh = held is not None and held.fresh and held.checkpoint is None
            loaded = held.loaded if held is not None else None
            if held is not None:
                # reused once: by LangGraph's own load, its first call after `track` (a loop
                # reads before it puts), so nothing put can have made it stale; later reads
                # go to the database (it changes what it loaded)
                held.loaded = None
        if fresh:
            return None
        if loaded is not None and config["configurable"].get("checkpoint_id") in (None, loaded.config[
                "configurable"]["checkpoint_id"]):
            return loaded  # nothing was put since it was read: it is what the database holds
        if held is not None:
            self.flush(thread_id, keep=True)  # what is read must include what is held
        return super().get_tuple(config)

    def put_writes(self, config, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = "") -> None:
        thread_id = config["configurable"]["thread_id"]
        with self._lock:
            held = self._tracked.get(thread_id)
            if held is not None:
                held.writes.append((config, list(writes), task_id, task_path))
                return
        super().put_writes(config, writes, task_id, task_path)

    def put(self, config, checkpoint, metadata, new_versions):
        thread_id = config["configurable"]["thread_id"]
        with self._lock:
            held = self._tracked.get(thread_id)
            if held is not None:
                held.versions.update(new_versions)  # the channels changed since the last write
                if held.written is _UNSET:  # the first save: its parent is what was loaded, if anything
                    held.written = None if held.fresh else config["configurable"].get("checkpoint_id")
                # the parent is the last checkpoint written, not a held one that never was
                parent = {**config, "configurable": {**config["configurable"], "checkpoint_id": held.written}}
                if held.written is None:
                    parent["configurable"].pop("checkpoint_id")
                held.checkpoint = (parent, checkpoint, metadata)
                # writes against older checkpoints are part of this one now
                held.writes = [w for w in held.writes if w[0]["configurable"].get("checkpoint_id") == checkpoint["id"]]
        if held is None:
            return super().put(config, checkpoint, metadata, new_versions)
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": config["configurable"]["checkpoint_ns"],
                                 "checkpoint_id": checkpoint["id"]}}

    def flush(self, thread_id: str, keep: bool = True) -> None:
        """Write the newest held checkpoint and the task writes made against it; `keep`
        False also stops tracking the run (its driver stops here)."""
        with self._lock:
            held = self._tracked.get(thread_id) if keep else self._tracked.pop(thread_id, None)
            if held is None:
                return
            pending, held.checkpoint = held.checkpoint, None
            versions, held.versions = held.versions, {}
            writes, held.writes = held.writes, []
        target = pending[1]["id"] if pending is not None else (held.written if held.written is not _UNSET else None)
        writes = [w for w in writes if target is None or w[0]["configurable"].get("checkpoint_id") == target]
        if pending is None and not writes:
            return
        with super()._cursor(pipeline=True) as cur, cur.connection.transaction():
            if held.fence is not None and cur.execute(*held.fence).fetchone() is None:
                raise Superseded(thread_id)
            self._flushing.cursor = cur
            try:
                if pending is not None:
                    config, checkpoint, metadata = pending
                    super().put(config, checkpoint, metadata, versions)
                for config, task_writes, task_id, task_path in writes:
                    super().put_writes(config, task_writes, task_id, task_path)
            finally:
                self._flushing.cursor = None
        if pending is not None:
            with self._lock:
                held.fresh, held.written = False, target

    def discard(self, thread_id: str) -> None:
        """Forget what a run holds (it ended; nothing will resume it)."""
        with self._lock:
            self._tracked.pop(thread_id, None)


class Superseded(Exception):
    """A flush's fence found nothing: a newer driver has begun the run, and what this one holds is stale."""


class _Held:
    """A tracked run: its newest unwritten checkpoint, the channels changed since the last one
    written (their blobs go out with the next write), and the task writes since."""

    __slots__ = ("fresh", "checkpoint", "versions", "writes", "written", "loaded", "fence")

    def __init__(self, fresh: bool, loaded=None, fence: tuple[str, tuple] | None = None):
        self.fresh = fresh
        self.fence = fence
        self.loaded = loaded  # the stored latest tuple, until the first get_tuple takes it
        self.checkpoint: tuple | None = None  # (config with the written parent, checkpoint, metadata)
        self.versions: dict = {}
        self.writes: list[tuple] = []
        self.written: Any = _UNSET  # id of the last checkpoint written (None: none is)


_UNSET = object()
