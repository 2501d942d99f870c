"""The package's architecture holds: the subpackages form layers (no import cycle, each imports
only those below it at module level), core imports nothing above it, nothing outside the
registry reads its private table, and every method's source file exists."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import attribkit as ak
from attribkit.cli import app

SRC = Path(ak.__file__).parent
#: lowest first: a package may import, at module level, only those before it
LAYERS = [
    "core",
    "models",
    "internals",
    "tasks",
    "methods",
    "viz",
    "evaluation",
    "by_design",
    "applied",
    "store",
    "dataset",
    "testing",
    "viewer",
    "cli",
]


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "attribkit" else None


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported attribkit package, at module level?) for every import in a file; imports
    under ``if TYPE_CHECKING:`` are left out (they never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    top = {id(n) for stmt in tree.body for n in ast.walk(stmt)} - {
        id(n)
        for stmt in tree.body
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        for n in ast.walk(stmt)
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) or n is not stmt
    }
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            pkg = _package(name)
            if pkg is not None:
                out.append((pkg.removesuffix(".py"), id(node) in top and _module_level(tree, node)))
    return out


def _module_level(tree: ast.Module, node: ast.AST) -> bool:
    """Whether ``node`` runs at import: not inside any function body."""
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and any(
            n is node for n in ast.walk(fn)
        ):
            return False
    return True


def _layer_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 else rel.stem


FILES = [p for p in SRC.rglob("*.py") if _layer_of(p) in LAYERS]


def test_every_subpackage_has_a_layer() -> None:
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(LAYERS), f"give {packages - set(LAYERS)} a place in LAYERS"


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(SRC)) for p in FILES])
def test_module_level_imports_go_down_the_layers(path: Path) -> None:
    me = LAYERS.index(_layer_of(path))
    for pkg, module_level in _imports(path):
        if module_level and pkg in LAYERS:
            assert LAYERS.index(pkg) <= me, (
                f"{path.relative_to(SRC)} imports attribkit.{pkg} at module level, a layer above "
                f"{_layer_of(path)}: import it inside the function that needs it, or move the code"
            )


def test_core_imports_nothing_above_it() -> None:
    # the only upward references of core are lazy ones in Attribution's rendering and
    # comparison conveniences (to_html, explain, compare, _repr_html_)
    allowed_lazy = {"viz", "evaluation"}
    for path in (SRC / "core").rglob("*.py"):
        for pkg, module_level in _imports(path):
            if pkg == "core" or pkg not in LAYERS:
                continue
            assert not module_level, f"core/{path.name} imports attribkit.{pkg} at module level"
            assert path.name == "attribution.py" and pkg in allowed_lazy, (
                f"core/{path.name} imports attribkit.{pkg}; core imports nothing above it"
            )


def test_nothing_outside_the_registry_reads_its_table() -> None:
    for path in SRC.rglob("*.py"):
        if path.name != "registry.py":
            assert "_REGISTRY" not in path.read_text(encoding="utf-8"), path


def test_methods_json_names_each_source_file() -> None:
    result = CliRunner().invoke(app, ["methods", "--json"])
    assert result.exit_code == 0, result.output
    specs = json.loads(result.output)
    assert {(s["kind"], s["name"]) for s in specs} == {(s.kind, s.name) for s in ak.list_methods()}
    for s in specs:
        assert Path(s["source"]).is_file(), s
        assert s["cost"] and s["cite"] and s["takes"]
    kinds = {s["kind"] for s in specs}
    assert {"perturbation", "gradient", "context", "generation", "image"} <= kinds
    only = json.loads(CliRunner().invoke(app, ["methods", "--kind", "image", "--json"]).output)
    assert only and {s["kind"] for s in only} == {"image"}
    bad = CliRunner().invoke(app, ["methods", "--kind", "nope"])
    assert bad.exit_code == 2 and "choose one of" in bad.output


def test_every_task_kind_takes_its_methods_through_one_attribute() -> None:
    from attribkit import testing

    for task in (testing.toy_context_task(), testing.toy_image_task()):
        assert ak.attribute(task, "loo").task == task.kind  # generic perturbation method
    gen = testing.toy_generation_task()
    a = ak.attribute(gen, "reagent", seed=0, max_steps=4)
    assert a.task == "generation" and a.scores.shape == (gen.n_rows, gen.n_units)
    with pytest.raises(ak.InputError, match=r"choose one of: .*reagent"):
        ak.attribute(gen, "no_such_method")
    with pytest.raises(ak.InputError, match="perturbation methods do not apply"):
        ak.attribute(gen, "kernel_shap")
