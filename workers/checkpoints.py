"""LangGraph's Postgres checkpointer, holding the run driver's checkpoints until they matter.

A run the driver `track`s keeps its checkpoints in memory; one is written only after a
superstep in which a node sent to a queue finished (`remote_done`), so the stored
checkpoint always follows the last finished step that called anything outside. After a
crash, the resumed run recomputes nothing that was paid: the driver's own nodes since
that checkpoint are read back by step key (`NodeDispatcher.recall`), and so are the
nodes sent to queues. The bench's 4-node run writes 2 checkpoints instead of 5; each was
about 1 ms of the driver's CPU (bench/throughput.py). A task's own writes (`put_writes`)
are not kept either: the next checkpoint includes them. A fresh tracked run has nothing
stored, so LangGraph's first read of it does not go to the database.

A thread that is not tracked is saved as by the stock PostgresSaver.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from langgraph.checkpoint.postgres import PostgresSaver


class HoldingPostgresSaver(PostgresSaver):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._tracked: dict[str, _Held] = {}  # thread id -> what a tracked run holds

    # ---- tracked runs: checkpoints written only after a remote step
    def track(self, thread_id: str, fresh: bool) -> None:
        """Hold this run's checkpoints until a remote step finished (`remote_done`);
        `fresh`: nothing is stored for it yet (a first attempt), so reads skip the database."""
        with self._lock:
            self._tracked[thread_id] = _Held(fresh)

    def remote_done(self, thread_id: str, superstep: int) -> None:
        """A node sent to a queue finished in this superstep: the checkpoint that follows
        it (LangGraph's metadata "step" of the same number) is written. The saves run in
        the background, so the step number, not the order of calls, decides."""
        with self._lock:
            held = self._tracked.get(thread_id)
            if held is not None:
                held.remote = superstep if held.remote is None else max(held.remote, superstep)

    def get_tuple(self, config):
        thread_id = config["configurable"]["thread_id"]
        with self._lock:
            held = self._tracked.get(thread_id)
            fresh = held is not None and held.fresh and held.checkpoint is None
        if fresh:
            return None
        if held is not None:
            self._write_held(thread_id)  # what is read must include what is held
        return super().get_tuple(config)

    def _write_held(self, thread_id: str) -> None:
        with self._lock:
            held = self._tracked.get(thread_id)
            if held is None or held.checkpoint is None:
                return
            args, held.checkpoint = held.checkpoint, None
            versions, held.versions = held.versions, {}
        config, checkpoint, metadata = args
        super().put(config, checkpoint, metadata, versions)
        with self._lock:
            held.fresh, held.written = False, checkpoint["id"]

    def put_writes(self, config, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = "") -> None:
        with self._lock:
            if config["configurable"]["thread_id"] in self._tracked:
                # the next checkpoint includes these writes, and a crash before it recomputes
                # the superstep, reading its finished steps back by key: nothing to keep
                return
        super().put_writes(config, writes, task_id, task_path)

    def put(self, config, checkpoint, metadata, new_versions):
        thread_id = config["configurable"]["thread_id"]
        with self._lock:
            held = self._tracked.get(thread_id)
            if held is None:
                write = None
            else:
                held.versions.update(new_versions)  # the channels changed since the last write
                if held.written is _UNSET:  # the first save: its parent is what was loaded, if anything
                    held.written = None if held.fresh else config["configurable"].get("checkpoint_id")
                # the parent is the last checkpoint written, not a held one that never was
                parent = {**config, "configurable": {**config["configurable"], "checkpoint_id": held.written}}
                if held.written is None:
                    parent["configurable"].pop("checkpoint_id")
                held.checkpoint = (parent, checkpoint, metadata)
                write = held.remote is not None and metadata.get("step", -1) >= held.remote
                if write:
                    held.remote = None
        if held is None:
            return super().put(config, checkpoint, metadata, new_versions)
        if write:
            self._write_held(thread_id)
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": config["configurable"]["checkpoint_ns"],
                                 "checkpoint_id": checkpoint["id"]}}

    def discard(self, thread_id: str) -> None:
        """Forget what a run holds (it ended; nothing will resume it)."""
        with self._lock:
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
