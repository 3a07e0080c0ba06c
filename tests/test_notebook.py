"""The data-QA notebook runs top to bottom on the sample corpus, and the stats CLI agrees."""

import json
import os
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_notebook_runs_top_to_bottom_on_the_sample_corpus(sample_corpus, monkeypatch):
    from curation.corpus.hub_upload import plan_upload

    files_before = sorted(p for p in sample_corpus.rglob("*") if "work" not in p.parts)
    # Relative to the repository root, as `CORPUS=corpus` is, while the kernel runs in notebooks/.
    monkeypatch.setenv("CORPUS", os.path.relpath(sample_corpus, ROOT))
    nb = nbformat.read(ROOT / "notebooks" / "data_qa.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 6  # the figures and the dialogue viewer were drawn, not just text
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    # The notebook only reads the corpus: its frame strip (video frames, not ours to publish) and
    # its figures are drawn elsewhere, so a push still sends exactly the card's figures.
    assert sorted(p for p in sample_corpus.rglob("*") if "work" not in p.parts) == files_before
    figures = [i.path_in_repo for i in plan_upload(sample_corpus) if i.path_in_repo.startswith("figures/")]
    card = (sample_corpus / "README.md").read_text()
    assert figures and all(f"]({f})" in card for f in figures) and "figures/dialogue_viewer.png" not in figures


def test_stats_cli_prints_the_numbers_the_card_carries(sample_corpus):
    env = {**os.environ, "COLUMNS": "120"}
    proc = subprocess.run([sys.executable, "-m", "curation.corpus.stats", str(sample_corpus), "--json"],
                          cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["counts"]["videos"] == 5
    assert stats["counts"]["dialogues"] >= 10
    text = subprocess.run([sys.executable, "-m", "curation.corpus.stats", str(sample_corpus)], cwd=ROOT,
                          capture_output=True, text=True, env=env)
    assert text.returncode == 0 and "NO REPLY" in text.stdout


def test_datasets_and_duckdb_read_the_shards_as_they_are(sample_corpus):
    import duckdb
    from datasets import load_dataset

    index = json.loads((sample_corpus / "index.json").read_text())
    files = [str(sample_corpus / s["path"]) for s in index["shards"] if s["table"] == "dialogues"]
    rows = sum(s["rows"] for s in index["shards"] if s["table"] == "dialogues")
    ds = load_dataset("parquet", data_files=files, split="train",
                      cache_dir=str(sample_corpus.parent / "hf-cache"))
    assert len(ds) == rows and ds[0]["references"][0]["reply_span"]
    assert duckdb.sql(f"select count(*) from read_parquet({files!r})").fetchall()[0][0] == rows
