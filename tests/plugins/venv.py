"""A fresh virtualenv with the example plugin (plugins/agentflow-text-tools) and a broken
plugin installed by pip, as a user would: the tests run agentflow from that venv, so the
plugin is found through its installed entry points, never imported from the tree.

The venv has no packages of its own but the two plugins; a .pth file adds this
project's environment (agentflow and its dependencies) behind them, which is what
`--system-site-packages` would do if the project's environment were the system one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEXT_TOOLS = ROOT / "plugins" / "agentflow-text-tools"
BROKEN = Path(__file__).resolve().parent / "broken_plugin"


@dataclass
class PluginVenv:
    path: Path

    @property
    def python(self) -> str:
        return str(self.path / "bin" / "python")

    def site_packages(self) -> str:
        return subprocess.run([self.python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              check=True, capture_output=True, text=True).stdout.strip()

    def agentflow(self, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([self.python, "-m", "agentflow.cli", *args], env=env, capture_output=True,
                              text=True, timeout=timeout, cwd=self.path)


def fresh_venv(where: Path, with_pip: bool = False) -> PluginVenv:
    """A new venv that sees this project's environment (agentflow and its dependencies)."""
    subprocess.run([sys.executable, "-m", "venv", *([] if with_pip else ["--without-pip"]), str(where)],
                   check=True, timeout=300)
    venv = PluginVenv(where)
    ours = sysconfig.get_path("purelib")  # this project's environment (agentflow installed -e)
    # addsitedir, not a bare path line: it also runs that directory's .pth files (the editable install)
    Path(venv.site_packages(), "agentflow-project.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    return venv


def make_plugin_venv(where: Path) -> PluginVenv:
    venv = fresh_venv(where)
    # this interpreter's pip installs into the venv (`--python`), as a user's pip would
    subprocess.run([sys.executable, "-m", "pip", "--python", venv.python, "install", "--quiet", "--no-deps",
                    str(TEXT_TOOLS), str(BROKEN)], check=True, timeout=600,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    where_is = subprocess.run([venv.python, "-c", "import agentflow_text_tools as m; print(m.__file__)"],
                              check=True, capture_output=True, text=True).stdout.strip()
    assert where_is.startswith(venv.site_packages()), f"the plugin was imported from {where_is}, not the venv"
    return venv


def embedded_env(home: Path, **extra: str) -> dict:
    """Embedded mode (SQLite in `home`, no Redis), whatever the caller's environment says."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(AGENTFLOW_HOME=str(home), PYTHONUNBUFFERED="1", **extra)
    return env
