"""The import graph of the top-level packages runs one way, function-level imports included.

    common  ←  model  ←  transforms  ←  pipelines
                  ↖      training   ←┘   (the ``tileseg`` dispatcher only)

``python -m tests.test_layering`` prints the package graph with a count of imports per edge.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "model", "transforms", "training", "pipelines")

#: What each package may import (everything else among PACKAGES is a layering error).
ALLOWED = {
    "common": set(),
    "model": {"common"},
    "transforms": {"common", "model"},
    "training": {"common", "model"},
    "pipelines": {"common", "model", "transforms", "training"},
}
#: pipelines may reach training only to dispatch ``tileseg train`` / ``tileseg evaluate``.
TRAINING_IMPORTERS = {"pipelines/cli.py"}


def import_edges(root: Path = REPO) -> dict[tuple[str, str], list[str]]:
    """(importer package, imported package) → ["file:line module", ...], every import statement."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), rel)):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in PACKAGES and top != pkg:
                        edges[(pkg, top)].append(f"{rel}:{node.lineno} {name}")
    return dict(edges)


def test_packages_import_only_lower_layers() -> None:
    bad = [f"{a} -> {b}: {', '.join(where)}" for (a, b), where in import_edges().items() if b not in ALLOWED[a]]
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_only_the_cli_dispatcher_reaches_training() -> None:
    where = import_edges().get(("pipelines", "training"), [])
    files = {w.split(":")[0] for w in where}
    assert files <= TRAINING_IMPORTERS, f"pipelines must not build on training: {where}"


def test_allowed_graph_is_acyclic() -> None:
    """The rule itself admits no cycle (so any graph that obeys it has none)."""
    order: list[str] = []
    remaining = dict(ALLOWED)
    while remaining:
        ready = [p for p, deps in remaining.items() if deps <= set(order)]
        assert ready, f"cycle among {sorted(remaining)}"
        order += sorted(ready)
        for p in ready:
            del remaining[p]


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "x.py").write_text("def f():\n    from pipelines.segment import run\n")
    for pkg in PACKAGES[1:]:
        (tmp_path / pkg).mkdir()
    assert import_edges(tmp_path) == {("common", "pipelines"): ["common/x.py:2 pipelines.segment"]}


if __name__ == "__main__":
    for (a, b), where in sorted(import_edges().items()):
        print(f"{a} -> {b}: {len(where)}")
    sys.exit(0)
