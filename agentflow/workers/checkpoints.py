"""LangGraph's Postgres checkpointer, with a task's writes sent along with the next checkpoint.

LangGraph saves the writes of every finished task (`put_writes`) on its own, then the
superstep's checkpoint (`put`): for a run of one-task supersteps that is two round trips
and two background submissions per node, and the writes only matter if the driver dies
between the two. Here the writes wait in memory and go out in the same pipeline as the
next checkpoint of their run.

If the driver dies before that, the resumed run re-executes the tasks of that superstep:
the driver's own nodes are recomputed (they call nothing outside), and a node sent to a
queue is looked up by its step key and reused, so no finished step is paid twice.

A run the driver `track`s goes further: its checkpoints are held in memory and one is
written only after a superstep in which a node sent to a queue finished (`remote_done`),
so the stored checkpoint always follows the last finished node that called anything
outside. What is recomputed after a crash is only the driver's own nodes since then,
which cost nothing. The bench's 4-node run writes 2 checkpoints instead of 5; each was
about 1 ms of the driver's CPU (bench/throughput.py). A fresh tracked run has nothing
stored, so LangGraph's first read of it does not go to the database either.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from langgraph.checkpoint.base import WRITES_IDX_MAP
from langgraph.checkpoint.postgres import PostgresSaver


class PostgresSaverWithDeferredWrites(PostgresSaver):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._pending: dict[str, list[tuple[str, list]]] = {}  # thread id -> [(query, rows)]
        self._pending_lock = threading.Lock()
        self._local = threading.local()
        self._tracked: dict[str, _Held] = {}  # thread id -> what a tracked run holds

    # ---- tracked runs: checkpoints written only after a remote step
    def track(self, thread_id: str, fresh: bool) -> None:
        """Hold this run's checkpoints until a remote step finished (`remote_done`);
        `fresh`: nothing is stored for it yet (a first attempt), so reads skip the database."""
        with self._pending_lock:
            self._tracked[thread_id] = _Held(fresh)

    def remote_done(self, thread_id: str, superstep: int) -> None:
        """A node sent to a queue finished in this superstep: the checkpoint that follows
        it (LangGraph's metadata "step" of the same number) is written. The saves run in
        the background, so the step number, not the order of calls, decides."""
        with self._pending_lock:
            held = self._tracked.get(thread_id)
            if held is not None:
                held.remote = superstep if held.remote is None else max(held.remote, superstep)

    def get_tuple(self, config):
        thread_id = config["configurable"]["thread_id"]
        with self._pending_lock:
            held = self._tracked.get(thread_id)
            fresh = held is not None and held.fresh and held.checkpoint is None
        if fresh:
            return None
        if held is not None:
            self._write_held(thread_id)  # what is read must include what is held
        return super().get_tuple(config)

    def _write_held(self, thread_id: str) -> None:
        with self._pending_lock:
            held = self._tracked.get(thread_id)
            if held is None or held.checkpoint is None:
                return
            args, held.checkpoint = held.checkpoint, None
            versions, held.versions = held.versions, {}
        config, checkpoint, metadata = args
        super().put(config, checkpoint, metadata, versions)
        with self._pending_lock:
            held.fresh, held.written = False, checkpoint["id"]

    def put_writes(self, config, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = "") -> None:
        conf = config["configurable"]
        with self._pending_lock:
            if conf["thread_id"] in self._tracked:
                # the next checkpoint includes these writes, and a crash before it recomputes
                # the superstep, reusing its remote steps by key: nothing to keep
                return
        query = (self.UPSERT_CHECKPOINT_WRITES_SQL if all(w[0] in WRITES_IDX_MAP for w in writes)
                 else self.INSERT_CHECKPOINT_WRITES_SQL)
        rows = self._dump_writes(conf["thread_id"], conf["checkpoint_ns"], conf["checkpoint_id"], task_id,
                                 task_path, writes)
        with self._pending_lock:
            self._pending.setdefault(conf["thread_id"], []).append((query, rows))

    def put(self, config, checkpoint, metadata, new_versions):
        thread_id = config["configurable"]["thread_id"]
        with self._pending_lock:
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
                step = metadata.get("step", -1) if isinstance(metadata, dict) else -1
                write = held.remote is not None and step >= held.remote
                if write:
                    held.remote = None
        if held is not None:
            if write:
                self._write_held(thread_id)
            return {"configurable": {"thread_id": thread_id, "checkpoint_ns": config["configurable"]["checkpoint_ns"],
                                     "checkpoint_id": checkpoint["id"]}}
        with self._pending_lock:
            self._local.flush = self._pending.pop(thread_id, None)
        try:
            return super().put(config, checkpoint, metadata, new_versions)
        finally:
            self._local.flush = None

    @contextmanager
    def _cursor(self, *, pipeline: bool = False) -> Iterator[Any]:
        with super()._cursor(pipeline=pipeline) as cur:
            pending = getattr(self._local, "flush", None)
            if pending:  # inside put(): the held writes share its pipeline
                self._local.flush = None
                for query, rows in pending:
                    cur.executemany(query, rows)
            yield cur

    def flush(self, thread_id: str) -> None:
        """Write what a run still holds (its last task's writes, when no checkpoint followed)."""
        with self._pending_lock:
            pending = self._pending.pop(thread_id, None)
        if pending:
            with super()._cursor(pipeline=True) as cur:
                for query, rows in pending:
                    cur.executemany(query, rows)

    def discard(self, thread_id: str) -> None:
        """Forget what a run holds (it ended; nothing will resume it)."""
        with self._pending_lock:
            self._pending.pop(thread_id, None)
            self._tracked.pop(thread_id, None)


class _Held:
    """A tracked run: its newest unwritten checkpoint and the channels changed since the
    last one written (their blobs go out with the next write)."""

    __slots__ = ("fresh", "remote", "checkpoint", "versions", "written")

    def __init__(self, fresh: bool):
        self.fresh = fresh
        self.remote: int | None = None  # the latest superstep in which a remote step finished
        self.checkpoint: tuple | None = None  # (config with the written parent, checkpoint, metadata)
        self.versions: dict = {}
        self.written: Any = _UNSET  # id of the last checkpoint written (None: none is)


_UNSET = object()
