"""One long-lived thread pool for every LangGraph run in this process.

LangGraph gives each `invoke` a thread pool of its own (`get_executor_for_config`: for
checkpoint saves and parallel branches) and shuts it down when the run ends, so every
run creates and joins threads: about 3 ms of CPU per run on a driver running many short
runs (bench/throughput.py). Here runs submit to one shared pool instead. Nothing else
changes: LangGraph's BackgroundExecutor tracks its own tasks and waits for them before
the run ends. A run whose config sets `max_concurrency` keeps a pool of its own.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Iterator

# Threads start only when no idle one is free; each run's parallel branches wait in
# them, so the ceiling is high: concurrent runs x their widest fan-out.
MAX_THREADS = 256

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()
_installed = False


def shared_pool() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="agentflow-graph")
        return _pool


def install() -> None:
    """Route LangGraph's per-run executors to the shared pool (idempotent)."""
    global _installed
    if _installed:
        return
    try:
        from langgraph.pregel import _executor
    except ImportError:  # pragma: no cover - another LangGraph layout: keep its own pools
        return
    original = _executor.get_executor_for_config

    @contextmanager
    def executor_for_config(config: Any) -> Iterator[Any]:
        if (config or {}).get("max_concurrency") is not None:
            with original(config) as executor:
                yield executor
            return
        yield shared_pool()

    executor_for_config.__wrapped__ = original  # type: ignore[attr-defined]
    _executor.get_executor_for_config = executor_for_config
    _installed = True
