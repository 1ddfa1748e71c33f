"""Example workflows shipped in `examples/*.json`, saved at startup when absent."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..examples import HERE as EXAMPLES_HERE
from ..graph.validate import validate
from ..graph.spec import WorkflowSpec
from ..settings import Settings
from ..store.models import DEFAULT_TENANT
from ..store.workflows import WorkflowStore

log = logging.getLogger("agentflow.api")
EXAMPLES_DIR = EXAMPLES_HERE


def examples_enabled(settings: Settings) -> bool:
    """AGENTFLOW_LOAD_EXAMPLES=1/0; by default on in embedded mode, off in distributed mode."""
    value = os.environ.get("AGENTFLOW_LOAD_EXAMPLES")
    if value is None or value.strip() == "":
        return not settings.distributed
    return value.strip().lower() in ("1", "true", "yes", "on")


def load_examples(store: WorkflowStore, directory: Path | None = None,
                  tenant_id: str = DEFAULT_TENANT) -> list[str]:
    """Save each valid example whose id the tenant does not have yet; returns the ids saved."""
    directory = directory or EXAMPLES_DIR
    if not directory.is_dir():
        return []
    pending = []
    for path in sorted(directory.glob("*.json")):
        try:
            pending.append((path.name, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError) as exc:
            log.warning("example %s is not readable JSON: %s", path.name, exc)
    saved: list[str] = []
    resolver = store.resolver(tenant_id)
    # An example may run another (workflow and map nodes), which must be saved first: save
    # in rounds, each taking the examples whose children are saved by now.
    while pending:
        waiting = []
        for name, data in pending:
            problems = validate(data, resolver)
            if problems:
                waiting.append((name, data, problems))
                continue
            spec = WorkflowSpec.model_validate(data)
            if not store.exists(tenant_id, spec.id):
                store.save(tenant_id, spec)
                saved.append(spec.id)
        if len(waiting) == len(pending):
            for name, _, problems in waiting:
                log.warning("example %s is not a valid spec (%d problems, first: %s: %s)", name,
                            len(problems), problems[0].path, problems[0].message)
            break
        pending = [(name, data) for name, data, _ in waiting]
    if saved:
        log.info("loaded example workflows: %s", ", ".join(saved))
    return saved
