"""The import contracts of pyproject.toml ([tool.importlinter]), checked with `lint-imports`
over the installed package tree (scripts/import_contracts.py):

- graph/ imports none of the other folders;
- ratelimit/ imports neither graph/ nor api/ (nor anything else of AgentFlow);
- the embedded executor (runs/) never imports Celery (nor workers/);
- the layers: cli | client > api > workers > runs > store > graph | ratelimit | examples > settings;
- no import cycles: between the folders, or between the modules of any package.

And the check can fail: the same contracts over a copy of the tree with one forbidden
import (or cycle) each are reported broken, each naming the import that breaks it.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("import_contracts", REPO / "scripts" / "import_contracts.py")
contracts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(contracts)

NAMES = [c["name"] for c in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]]


def _status(output: str) -> dict[str, str]:
    """{contract name: KEPT | BROKEN} from lint-imports' summary."""
    return {name: m.group(1) for name in NAMES
            if (m := re.search(re.escape(name) + r" (KEPT|BROKEN)", output))}


def test_every_contract_is_kept(tmp_path):
    tree = contracts.mirror(tmp_path)
    done = contracts.lint(tree)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert len(NAMES) >= 4 and _status(done.stdout) == {name: "KEPT" for name in NAMES}, done.stdout
    # the modules of every folder were looked at, not just agentflow/'s CLI and settings
    # (the count also holds the external packages imported; alembic's scripts are no package)
    modules = sum(len([f for f in src.glob("*.py") if f.stem.isidentifier()])
                  for src in contracts.package_dirs().values() if (src / "__init__.py").exists())
    analyzed = int(re.search(r"Analyzed (\d+) files", done.stdout).group(1))
    assert modules > 100 and analyzed >= modules, (analyzed, modules)


def test_a_forbidden_import_or_a_cycle_breaks_them(tmp_path):
    tree = contracts.mirror(tmp_path)
    root = tree / "agentflow"
    (root / "graph" / "probe_upward.py").write_text("from agentflow.workers import lease\n")
    (root / "ratelimit" / "probe_engine.py").write_text("from agentflow.graph import errors\n")
    (root / "runs" / "probe_celery.py").write_text("import celery\n")
    (root / "store" / "probe_up.py").write_text("from agentflow.runs import events\n")
    (root / "api" / "probe_a.py").write_text("from agentflow.api import probe_b\n")
    (root / "api" / "probe_b.py").write_text("from agentflow.api import probe_a\n")
    done = contracts.lint(tree)
    out = done.stdout
    assert done.returncode != 0
    assert _status(out) == {name: "BROKEN" for name in NAMES}, out
    assert "agentflow.graph.probe_upward -> agentflow.workers.lease" in out
    assert "agentflow.ratelimit.probe_engine -> agentflow.graph.errors" in out
    assert "agentflow.runs.probe_celery -> celery" in out
    assert "agentflow.store.probe_up -> agentflow.runs.events" in out
    assert re.search(r"No cycles are allowed in agentflow\.api\.\s+.*\n+- \.probe_[ab] -> \.probe_[ab]", out), out
