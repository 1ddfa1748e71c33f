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
    saved = []
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("example %s is not readable JSON: %s", path.name, exc)
            continue
        problems = validate(data)
        if problems:
            log.warning("example %s is not a valid spec (%d problems, first: %s: %s)", path.name,
                        len(problems), problems[0].path, problems[0].message)
            continue
        spec = WorkflowSpec.model_validate(data)
        if store.exists(tenant_id, spec.id):
            continue
        store.save(tenant_id, spec)
        saved.append(spec.id)
    if saved:
        log.info("loaded example workflows: %s", ", ".join(saved))
    return saved
