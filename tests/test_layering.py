"""Imports flow one way: schemas <- curation <- flows, schemas <- training (which may reuse
curation's frame decoder and LLM client). curation imports neither Prefect nor torch."""

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

FORBIDDEN = {
    "schemas": {"curation", "flows", "training", "prefect", "torch"},
    "curation": {"flows", "training", "prefect", "torch", "transformers"},
    "training": {"flows", "prefect"},
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_flow_one_way(package):
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_packages_import_from_outside_the_repository(tmp_path):
    # A served deployment, a notebook kernel or a training job rarely runs from the repo root.
    import subprocess
    import sys

    code = "import schemas, curation.prompts, flows.quiet, training.run; from schemas import Dialogue"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
