"""The package's shape: data flows one way (spec -> plan -> render -> executor | scheduler ->
scores -> report), the run-directory contract sits below all of them, functions stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.unit
PACKAGE = REPO / "telecom_lf"
# A module may import only modules of a lower layer. Helpers at the bottom; the run-directory
# contract below every stage; then the stages in the order data flows; the CLI on top.
LAYERS = [
    {"__init__", "errors"},
    {"fsutil", "guard"},
    {"rundir"},
    {"compat", "synth", "dora", "lock"},
    {"lfargs"},
    {"cluster", "data", "score", "use"},
    {"tiny", "selection"},
    {"spec"},
    {"plan"},
    {"slurm"},
    {"render"},
    {"diff", "executor"},
    {"report", "chat", "export", "probe"},
    {"scheduler"},
    {"demo", "lf_entry"},
    {"cli"},
]
RANK = {module: rank for rank, modules in enumerate(LAYERS) for module in modules}


def _package_imports(path: Path) -> set[str]:
    """Modules of telecom_lf that ``path`` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("telecom_lf."):
            found.add(node.module.split(".")[1])
    return found


def test_every_module_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules == set(RANK), f"place new modules in LAYERS: {sorted(modules ^ set(RANK))}"


@pytest.mark.parametrize("module", sorted(RANK))
def test_imports_only_go_down(module):
    upward = {name for name in _package_imports(PACKAGE / f"{module}.py")
              if name in RANK and RANK[name] >= RANK[module]}
    assert not upward, f"{module} imports {sorted(upward)}, which are not below it"


def test_no_function_over_60_lines():
    long = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({length} lines)")
    assert not long, long


def test_the_layer_test_fails_on_an_upward_import(tmp_path):
    """The checker itself: a contract module importing a stage would be caught."""
    bad = tmp_path / "rundir.py"
    bad.write_text("from . import render\nfrom .errors import TlfError\n")
    assert _package_imports(bad) == {"render", "errors"}
    assert RANK["render"] >= RANK["rundir"]


def test_no_module_shadows_the_standard_library():
    """torchrun runs telecom_lf/lf_entry.py as a script, so telecom_lf/ is sys.path[0] in every
    worker: a module named like a standard one (profile.py once) breaks `import cProfile` there."""
    import sys

    clashes = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem in sys.stdlib_module_names)
    assert not clashes, clashes
