"""Imports flow one way: schemas <- curation <- flows, schemas <- training (which may reuse
curation's frame decoder, LLM client and index reader). curation imports neither Prefect nor
torch. No module imports itself back through another, lazily or only for type checking."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("schemas", "curation", "flows", "training")
FORBIDDEN = {
    "schemas": {"curation", "flows", "training", "prefect", "torch"},
    "curation": {"flows", "training", "prefect", "torch", "transformers"},
    "training": {"flows", "prefect"},
}
# What the trainer may take from curation: the one frame decoder and its clock, LLM client and index reader.
TRAINING_MAY_USE = {"curation.skips", "curation.video.frames", "curation.video.stream_time", "curation.llm.client",
                    "curation.llm.config", "curation.corpus.shards"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imported_names(path: Path) -> set[str]:
    """Every absolute import in the file, at any depth (lazy and TYPE_CHECKING ones included):
    `from a.b import c` yields `a.b.c` when that is a module, else `a.b`."""
    modules = project_modules()
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names.add(full if full in modules else node.module)
    return names


def imported_roots(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported_names(path)}


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: {m for m in imported_names(path) if m in modules and m != name}
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_flow_one_way(package):
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_training_takes_only_the_shared_pieces_from_curation():
    borrowed = {name for path in (ROOT / "training").rglob("*.py") for name in imported_names(path)
                if name.split(".")[0] == "curation"}
    assert borrowed <= TRAINING_MAY_USE, sorted(borrowed - TRAINING_MAY_USE)


def test_no_import_circles():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_planted_circle():
    graph = import_graph()
    graph["curation.video.frames"] = graph["curation.video.frames"] | {"curation.video.scenes"}
    graph["curation.video.scenes"] = graph["curation.video.scenes"] | {"curation.video.frames"}
    assert set(find_cycle(graph)) == {"curation.video.frames", "curation.video.scenes"}


def test_every_subpackage_says_what_it_owns():
    for init in ROOT.glob("*/*/__init__.py"):
        if init.parent.parent.name in PACKAGES:
            doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
            assert doc and len(doc.splitlines()) >= 2, f"{init.relative_to(ROOT)} needs a docstring"


def test_every_module_imports_from_outside_the_repository(tmp_path):
    # A served deployment, a notebook kernel or a training job rarely runs from the repo root.
    code = (
        "import importlib, pkgutil\n"
        f"for root in {PACKAGES!r}:\n"
        "    package = importlib.import_module(root)\n"
        "    for info in pkgutil.walk_packages(package.__path__, root + '.'):\n"
        "        if not info.name.endswith('__main__'):\n"
        "            importlib.import_module(info.name)\n"
        "            print(info.name)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = set(proc.stdout.split())
    expected = {name for name in project_modules() if "." in name and not name.endswith("__main__")}
    assert expected <= imported, sorted(expected - imported)
