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
    {"fsutil", "guard", "inputs"},
    {"records"},
    {"rundir"},
    {"compat", "synth", "dora", "basecache", "lock", "processes", "paths"},
    {"lfargs"},
    {"cluster", "data", "score", "use", "tracking"},
    {"tiny", "selection", "compare"},
    {"spec"},
    {"plan"},
    {"slurm"},
    {"render"},
    {"diff", "executor"},
    {"report", "chat", "export", "probe"},
    {"scheduler"},
    {"demo", "lf_entry"},
    {"cli_base"},
    {"cli_data", "cli_use"},
    {"cli"},
]
RANK = {module: rank for rank, modules in enumerate(LAYERS) for module in modules}


def _module_files(module: str) -> list[Path]:
    """A module's source: ``telecom_lf/<module>.py``, or every file of the package ``telecom_lf/<module>/``."""
    package = PACKAGE / module
    return sorted(package.glob("*.py")) if package.is_dir() else [PACKAGE / f"{module}.py"]


def _package_imports(path: Path) -> set[str]:
    """Modules of telecom_lf that ``path`` imports, at the top or inside functions (a file of a
    subpackage: its ``..`` imports; its own siblings are the package itself, not counted)."""
    depth = 2 if path.parent != PACKAGE and path.parent.parent == PACKAGE else 1
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == depth:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("telecom_lf."):
            found.add(node.module.split(".")[1])
    return found


def _modules() -> set[str]:
    return {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir()
                                                      if p.is_dir() and (p / "__init__.py").exists()}


def test_every_module_has_a_layer():
    assert _modules() == set(RANK), f"place new modules in LAYERS: {sorted(_modules() ^ set(RANK))}"


@pytest.mark.parametrize("module", sorted(RANK))
def test_imports_only_go_down(module):
    found = set().union(*(_package_imports(path) for path in _module_files(module)))
    upward = {name for name in found if name in RANK and RANK[name] >= RANK[module]}
    assert not upward, f"{module} imports {sorted(upward)}, which are not below it"


def test_no_module_over_600_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 600}
    assert not long, long


def test_no_function_over_60_lines():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
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

    clashes = sorted(m for m in _modules() if m in sys.stdlib_module_names)
    assert not clashes, clashes
