"""Every Redis key the distributed runtime uses, named in one place.

A run's keys share the `{run_id}` hash tag, so a Redis Cluster keeps one run's keys in one slot.
"""

from __future__ import annotations

DELAYED = "af:delayed"          # ZSET: messages to send later (member = message JSON, score = due time)
PUMP_LOCK = "af:pump-lock"      # the one process that moves due delayed messages to their queues
SWEEP_LOCK = "af:sweep-lock"    # the one process that runs the recovery sweep
SCHEDULE_LOCK = "af:schedule-lock"  # the one process that fires due schedules


def run_lock(run_id: str) -> str:
    """Held by the driver advancing this run (a lease)."""
    return f"af:run-lock:{{{run_id}}}"


def run_news(run_id: str) -> str:
    """Set by whatever should wake the run (a finished step, an answer, a child's end); the
    driver clears it before it advances, and advances again if it reappears."""
    return f"af:run-news:{{{run_id}}}"


def step_lock(step_key: str) -> str:
    """Held by the worker executing this step (a lease renewed while the step runs)."""
    return f"af:step-lock:{{{_run_of(step_key)}}}:{step_key}"


def step_sent(step_key: str) -> str:
    """This step's message was sent and has not been lost (Redis restarted empty: gone)."""
    return f"af:sent:{{{_run_of(step_key)}}}:{step_key}"


def _run_of(step_key: str) -> str:
    return step_key.split(":", 1)[0]
