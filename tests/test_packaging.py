"""The layout ships: every folder pyproject.toml maps into `agentflow` (package-dir) is in
the Docker image and in the wheel, and the wheel works outside the repository.

The wheel is built from a copy of exactly what the Dockerfile copies (pyproject.toml,
README.md and the package folders), installed with --no-deps into a fresh venv that sees
this environment's dependencies (a .pth line: the editable install of the repository is not
among them), then used from a folder outside the repository: `agentflow validate` on the
wheel's own examples/triage.json and `agentflow migrate` (alembic, the wheel's migrations)
against a SQLite database in a temporary AGENTFLOW_HOME.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PACKAGE_DIR = PYPROJECT["tool"]["setuptools"]["package-dir"]
PACKAGES = PYPROJECT["tool"]["setuptools"]["packages"]


def _source_dir(package: str) -> str:
    """The folder setuptools takes `package` from (the longest mapped prefix decides)."""
    parts = package.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in PACKAGE_DIR:
            return "/".join([PACKAGE_DIR[prefix], *parts[n:]])
    return "/".join(parts)


def test_every_package_folder_is_copied_into_the_image():
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \./\1$", dockerfile, re.M))
    folders = {d for d in PACKAGE_DIR.values()}
    assert folders <= copied, f"deploy/Dockerfile does not COPY {sorted(folders - copied)}"
    # the dependency layer installs pyproject.toml over empty placeholders of every package folder
    [loop] = re.findall(r"for d in ([^;]+); do", dockerfile)
    assert {_source_dir(p) for p in PACKAGES} <= set(loop.split()), loop
    ignored = {line.strip().rstrip("/") for line in (REPO / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()}
    assert not folders & ignored, f"the build context leaves out {sorted(folders & ignored)}"


def test_the_images_dependency_layer_builds(tmp_path):
    """The Dockerfile's first pip install: pyproject.toml over its placeholder folders."""
    [loop] = re.findall(r"for d in ([^;]+); do", (REPO / "deploy" / "Dockerfile").read_text())
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    for folder in loop.replace("\\", " ").split():
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "__init__.py").touch()
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _wheel(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for folder in set(PACKAGE_DIR.values()):
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path / "dist"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    [wheel] = out.glob("agentflow-*.whl")
    return wheel


def test_the_wheel_holds_every_folder_and_works_outside_the_repository(tmp_path):
    wheel = _wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("agentflow/graph/build.py", "agentflow/examples/triage.json", "agentflow/client/__init__.py",
                   "agentflow/cli.py", "agentflow/settings.py", "agentflow/store/migrations/env.py",
                   "agentflow/store/migrations/script.py.mako", "agentflow/ratelimit/README.md"):
        assert needed in names, needed
    versions = sorted(n for n in names if re.fullmatch(r"agentflow/store/migrations/versions/[^/]+\.py", n))
    assert [Path(v).name for v in versions] == sorted(p.name for p in (REPO / "store/migrations/versions").glob("*.py"))
    for package in PACKAGES:  # every package's modules, under its import name
        folder = REPO / _source_dir(package)
        for module in folder.glob("*.py"):
            assert f"{package.replace('.', '/')}/{module.name}" in names, (package, module.name)
    assert not any(n.startswith(("graph/", "api/", "sdk/", "tests/")) for n in names), "only agentflow/ at the top"

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    [site] = list(venv.glob("lib/python*/site-packages"))
    # this environment's dependencies, after the venv's own site-packages (where the wheel goes)
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    py = venv / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]

    work, home = tmp_path / "elsewhere", tmp_path / "home"
    work.mkdir()
    (work / "examples").mkdir()
    with zipfile.ZipFile(wheel) as z:
        (work / "examples" / "triage.json").write_bytes(z.read("agentflow/examples/triage.json"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DATABASE_URL", "REDIS_URL")}
    env["AGENTFLOW_HOME"] = str(home)
    where = subprocess.run([str(py), "-c", "import agentflow.graph, agentflow.client; print(agentflow.graph.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0 and where.stdout.startswith(str(site)), (where.stdout, where.stderr[-2000:])

    agentflow = str(venv / "bin" / "agentflow")
    valid = subprocess.run([agentflow, "validate", "examples/triage.json"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=120)
    assert valid.returncode == 0, valid.stdout + valid.stderr[-2000:]
    migrate = subprocess.run([agentflow, "migrate"], cwd=work, env=env, capture_output=True, text=True, timeout=180)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr[-3000:]
    [db] = list(home.glob("*.db"))
    with sqlite3.connect(db) as conn:
        [(head,)] = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    newest = sorted(p.stem for p in (REPO / "store/migrations/versions").glob("*.py"))[-1]
    assert newest.startswith(head) or re.search(rf"^revision\s*[:=].*['\"]{re.escape(head)}['\"]",
                                                (REPO / f"store/migrations/versions/{newest}.py").read_text(), re.M)
    assert {"workflows", "runs", "steps"} <= tables, tables
