"""A release is one swap: SIGKILL after any file operation leaves a corpus `datasets` loads, whose
card and index name only files that are there, and the next build lands the release (or drops
it) so card and index agree again.

The changed build rewrites every shard (another bucket count, as `--set shards.buckets=7` does)
and adds videos, so the card, index, figures and every shard change. `tests/release_child.py`
copies the corpus after each of the release's file operations (what a SIGKILL there leaves: a
killed process loses nothing it wrote), and SIGKILLs real releases right after each operation of
the swap (COMMIT, the renames, the deletes) and after a few of the staging ones; each killed
corpus must equal the copy taken after the same operation.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from curation.corpus.build_release import release_build
from curation.corpus.catalogue import sync_catalogue
from curation.corpus.release import STAGING, Release, finish_release, unlisted_shards
from curation.corpus.shards import ShardConfig
from tests.conftest import ROOT
from tests.test_shards import ids_of, store

pytestmark = pytest.mark.slow


def _child(*args) -> dict:
    proc = subprocess.run([sys.executable, "-m", "tests.release_child", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def card_files(root: Path) -> set[str]:
    front = (root / "README.md").read_text(encoding="utf-8").split("---\n")[1]
    return {path for config in yaml.safe_load(front)["configs"] for files in config["data_files"]
            for path in files["path"]}


def index_files(root: Path) -> set[str]:
    return {entry["path"] for entry in json.loads((root / "index.json").read_text())["shards"]}


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("release")
    results = folder / "results"
    store(results, ids_of(8))
    pristine = folder / "pristine"
    cfg = ShardConfig(buckets=2, validation_share=0.3, rl_share=0.2)
    release_build(results, pristine, cfg, sync_catalogue(results), {"videos": "-"}, "replay")
    old = {"card": card_files(pristine), "index": index_files(pristine)}
    store(results, ids_of(2, start=8))  # the next build: two more videos, and 3 buckets (every shard rewritten)

    corpus = folder / "corpus"
    shutil.copytree(pristine, corpus)
    run = _child("snapshots", results, corpus, folder / "snap", 3)
    new = {"card": card_files(corpus), "index": index_files(corpus)}
    ops, commit_at = run["operations"], run["commit_at"]
    staged = folder / "snap" / f"after-{commit_at - 1}"  # everything staged, nothing committed
    swap = _child("kill", results, staged, folder / "swap", 3, "commit", *range(1, ops - commit_at + 2))
    early = _child("kill", results, pristine, folder / "early", 3, "release", 1, commit_at // 2, commit_at - 1)
    killed = {commit_at - 1 + int(k): (folder / "swap" / f"kill-{k}" / "corpus", s) for k, s in swap["statuses"].items()}
    killed |= {int(k): (folder / "early" / f"kill-{k}" / "corpus", s) for k, s in early["statuses"].items()}
    yield {"folder": folder, "old": old, "new": new, "ops": ops, "commit_at": commit_at, "killed": killed}


def test_the_release_has_a_swap_to_kill_and_changes_every_shard(world):
    assert world["old"]["card"] == world["old"]["index"] and world["new"]["card"] == world["new"]["index"]
    old, new = world["old"]["index"], world["new"]["index"]
    assert len(old - new) >= 10 and len(new - old) >= 10  # rewritten under new names, the old ones deleted
    assert world["ops"] - world["commit_at"] >= 15  # COMMIT, the renames and the deletes of the swap


def test_a_real_sigkill_leaves_exactly_what_the_copy_after_that_operation_holds(world):
    swap_steps = {n for n in world["killed"] if n >= world["commit_at"]}
    assert swap_steps == set(range(world["commit_at"], world["ops"] + 1))  # every operation of the swap
    for n, (corpus, status) in world["killed"].items():
        if n < world["ops"]:
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9, n
        assert tree(corpus) == tree(world["folder"] / "snap" / f"after-{n}"), n


def test_after_a_kill_at_any_operation_the_card_and_index_name_only_files_that_are_there(world):
    old, new = world["old"], world["new"]
    for n in range(1, world["ops"] + 1):
        corpus = world["folder"] / "snap" / f"after-{n}"
        card, index = card_files(corpus), index_files(corpus)
        assert card in (old["card"], new["card"]) and index in (old["index"], new["index"]), n
        for rel in card | index:
            assert (corpus / rel).is_file(), (n, rel)
        if n < world["commit_at"]:  # not committed: the old corpus, untouched
            assert (card, index) == (old["card"], old["index"]), n


def test_datasets_loads_the_dialogues_of_every_state_a_kill_leaves(world, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    seen = {}
    for n in range(1, world["ops"] + 1):
        corpus = world["folder"] / "snap" / f"after-{n}"
        state = (tree(corpus).get("README.md"), tuple(sorted((p, (corpus / p).is_file()) for p in card_files(corpus))))
        if state in seen:
            continue
        loaded = datasets.load_dataset(str(corpus), "dialogues", cache_dir=str(tmp_path / f"hf-{n}"))
        seen[state] = sum(len(split) for split in loaded.values())
    # Every state loads: the old build's dialogues, or the new one's (two more videos, 3 more dialogues).
    assert sorted(set(seen.values())) == [15, 18]


def test_the_next_build_lands_a_committed_release_and_drops_an_uncommitted_one(world, tmp_path):
    old, new = world["old"], world["new"]
    for n in range(1, world["ops"] + 1):
        corpus = tmp_path / f"after-{n}"
        shutil.copytree(world["folder"] / "snap" / f"after-{n}", corpus)
        finish_release(corpus)
        committed = n >= world["commit_at"]
        want, source = (new, world["folder"] / "corpus") if committed else (old, world["folder"] / "pristine")
        assert card_files(corpus) == index_files(corpus) == want["index"], n
        assert not (corpus / STAGING).exists(), n
        for name in ("README.md", "index.json", "summary.json", "figures/dialogues.png"):
            assert (corpus / name).read_bytes() == (source / name).read_bytes(), (n, name)
        # An uncommitted build's new shards stay unlisted until the next release deletes them.
        assert not committed or unlisted_shards(corpus, want["index"]) == [], n


def test_an_abandoned_release_leaves_the_corpus_as_it_was(world, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(world["folder"] / "pristine", corpus)
    before = tree(corpus)
    release = Release(corpus)
    release.write("index.json", "{}")
    release.abandon()
    assert tree(corpus) == before and not (corpus / STAGING).exists()
