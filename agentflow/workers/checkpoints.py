"""LangGraph's Postgres checkpointer, with a task's writes sent along with the next checkpoint.

LangGraph saves the writes of every finished task (`put_writes`) on its own, then the
superstep's checkpoint (`put`): for a run of one-task supersteps that is two round trips
and two background submissions per node, and the writes only matter if the driver dies
between the two. Here the writes wait in memory and go out in the same pipeline as the
next checkpoint of their run.

If the driver dies before that, the resumed run re-executes the tasks of that superstep:
the driver's own nodes are recomputed (they call nothing outside), and a node sent to a
queue is looked up by its step key and reused, so no finished step is paid twice.
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

    def put_writes(self, config, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = "") -> None:
        conf = config["configurable"]
        query = (self.UPSERT_CHECKPOINT_WRITES_SQL if all(w[0] in WRITES_IDX_MAP for w in writes)
                 else self.INSERT_CHECKPOINT_WRITES_SQL)
        rows = self._dump_writes(conf["thread_id"], conf["checkpoint_ns"], conf["checkpoint_id"], task_id,
                                 task_path, writes)
        with self._pending_lock:
            self._pending.setdefault(conf["thread_id"], []).append((query, rows))

    def put(self, config, checkpoint, metadata, new_versions):
        with self._pending_lock:
            self._local.flush = self._pending.pop(config["configurable"]["thread_id"], None)
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
