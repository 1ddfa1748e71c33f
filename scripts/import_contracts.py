"""Check the import contracts of pyproject.toml ([tool.importlinter]) with `lint-imports`.

Why a wrapper: the top-level folders (graph/, api/, ...) install as `agentflow.graph`,
`agentflow.api`, ... through setuptools package-dir, so `agentflow/` on disk holds only
the CLI and settings, and import-linter (grimp) finds packages by walking the root
package's folder. This mirrors the installed tree - each package of pyproject's
`packages` list where package-dir puts it, its modules as symlinks - into a scratch
folder and runs `lint-imports` on that, so it checks exactly the modules a wheel holds.

    python scripts/import_contracts.py [lint-imports options, e.g. --verbose]

Run by tests/test_import_contracts.py (so by `make test`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def package_dirs(repo: Path = REPO) -> dict[str, Path]:
    """{package name: its source folder} for every package pyproject installs."""
    tool = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = tool.get("package-dir", {})
    out = {}
    for pkg in tool["packages"]:
        parts = pkg.split(".")
        # the longest mapped prefix decides, as in setuptools
        for n in range(len(parts), 0, -1):
            prefix = ".".join(parts[:n])
            if prefix in mapping:
                out[pkg] = repo / mapping[prefix] / Path(*parts[n:])
                break
        else:
            out[pkg] = repo / Path(*parts)
    return out


def mirror(dest: Path, repo: Path = REPO) -> Path:
    """Lay the installed package tree out under `dest` (modules symlinked); returns dest."""
    for pkg, src in package_dirs(repo).items():
        target = dest / Path(*pkg.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for module in src.glob("*.py"):
            link = target / module.name
            if not link.exists():
                link.symlink_to(module)
    return dest


def lint(tree: Path, *args: str, repo: Path = REPO) -> subprocess.CompletedProcess:
    """`lint-imports` with pyproject's contracts over the mirrored tree (output captured)."""
    exe = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    # run from the tree so the editable install's finder is not what resolves `agentflow`
    return subprocess.run([str(exe), str(repo / "pyproject.toml"), "--no-cache", *args],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=300)


def main(argv: list[str]) -> int:
    tree = Path(tempfile.mkdtemp(prefix="af-imports-"))
    try:
        done = lint(mirror(tree), *argv)
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        return done.returncode
    finally:
        shutil.rmtree(tree, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
