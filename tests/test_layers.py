"""The code's layers (docs/architecture.md), read off the source: every import statement, at module
level or inside a function, of every module. `make lint` checks the same contracts with
import-linter; this keeps them checked where only pytest runs, and adds that the edge library's
modules import each other without cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("avsl_edge", "runtime", "training", "export")


def modules(package: str) -> dict[str, tuple[Path, bool]]:
    """dotted name -> (file, is a package's __init__)."""
    found = {}
    for f in sorted((REPO / package).rglob("*.py")):
        parts = list(f.relative_to(REPO).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (f, is_package)
    return found


def imports(name: str, path: Path, is_package: bool) -> list[tuple[str, int]]:
    """(imported module, line) for every import that runs (not those under ``if TYPE_CHECKING:``)."""
    out: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".")[: len(name.split(".")) - (0 if is_package else 1)]
                    base = base[: len(base) - (child.level - 1)]
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                out.append((module, child.lineno))
                out.extend((f"{module}.{a.name}", child.lineno) for a in child.names)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return out


def top(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize("package, forbidden", [
    ("avsl_edge", {"runtime", "training", "export", "torch", "torchvision", "torchaudio"}),
    ("runtime", {"training", "export", "torch", "torchvision", "torchaudio"}),
])
def test_a_layer_never_imports_the_layers_above_it_nor_torch_even_inside_a_function(package, forbidden):
    found = [f"{name}:{line} imports {target}" for name, (path, is_package) in modules(package).items()
             for target, line in imports(name, path, is_package) if top(target) in forbidden]
    assert found == []


def test_the_edge_library_imports_its_own_modules_without_cycles():
    mods = modules("avsl_edge")
    graph = {name: {t for t, _ in imports(name, path, is_package) if t in mods and t != name}
             for name, (path, is_package) in mods.items()}
    cycles = []

    def walk(node: str, trail: list[str], done: set[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in trail:
                cycles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in done:
                walk(nxt, trail + [nxt], done)
        done.add(node)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            walk(name, [name], done)
    assert cycles == []


def test_the_import_reader_sees_imports_inside_functions_and_resolves_relative_ones(tmp_path):
    """The checks above are only as good as this reader: a lazy import counts, TYPE_CHECKING ones do not."""
    f = tmp_path / "mod.py"
    f.write_text("from typing import TYPE_CHECKING\nfrom .a import b\nif TYPE_CHECKING:\n    import torch\n"
                 "def f():\n    from ..up import x\n    import runtime.camera\n")
    found = imports("avsl_edge.sub.mod", f, False)
    assert ("avsl_edge.sub.a", 2) in found and ("avsl_edge.sub.a.b", 2) in found
    assert ("avsl_edge.up", 6) in found and ("runtime.camera", 7) in found
    assert all(top(t) != "torch" for t, _ in found)


def test_the_edge_suite_passes_on_a_box_without_torch():
    """``pytest tests/edge`` with torch, scikit-learn and the training side unimportable, as on an edge
    box that installed only ``.[dev-edge]``."""
    import subprocess
    import sys

    blocked = ("torch", "torchvision", "torchaudio", "sklearn", "training", "export")
    code = (f"import sys\nfor m in {blocked!r}: sys.modules[m] = None\n"
            "import pytest\nsys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', 'tests/edge']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "skipped" not in out.stdout
