"""Plugin distributions made on the fly for in-process tests: a module and a dist-info
directory (METADATA + entry_points.txt) on sys.path, which importlib.metadata finds like
any installed distribution."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path


def write_dist(root: Path, name: str, version: str, modules: dict[str, str],
               nodes: dict[str, str] | None = None, sources: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for module, code in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(code))
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, table in (("agentflow.nodes", nodes), ("agentflow.sources", sources)):
        if table:
            lines.append(f"[{group}]")
            lines += [f"{k} = {v}" for k, v in table.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root


class FakePlugins:
    """Puts directories on sys.path and reloads the registry; undoes both on close."""

    def __init__(self):
        self.paths: list[str] = []
        self.modules: set[str] = set()

    def add(self, root: Path, **kw) -> None:
        write_dist(root, **kw)
        self.modules |= set(kw["modules"])
        self.paths.append(str(root))
        sys.path.insert(0, str(root))

    def reload(self):
        from agentflow.graph import registry

        return registry.reload()

    def close(self) -> None:
        for p in self.paths:
            sys.path.remove(p)
        for m in self.modules:
            sys.modules.pop(m, None)
        self.reload()
