"""State files are caches: a damaged catalogue page, a catalogue cell that is not UTF-8 (or is
quietly wrong), an index.json of any bad shape are rebuilt, never a traceback on every run; and one
build holds an output folder at a time, the second told who holds it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from curation.corpus.build_lock import CorpusBusy, corpus_lock
from curation.corpus.catalogue import CATALOGUE_NAME, sync_catalogue
from curation.corpus.shards import build_shards, update_shards
from flows.publish_build import _add_usage
from tests.conftest import ROOT, SAMPLES
from tests.test_shards import SMALL, check_index_matches_files, ids_of, store

PAGE = 4096


@pytest.fixture
def synced(tmp_path):
    results = tmp_path / "results"
    store(results, ids_of(60))
    expected = {e.video_id: e for e in sync_catalogue(results)}
    return results, expected


def _entries(results):
    return {e.video_id: e for e in sync_catalogue(results)}


def test_a_damaged_catalogue_page_is_rebuilt_from_the_files(synced):
    results, expected = synced
    path = results / CATALOGUE_NAME
    data = bytearray(path.read_bytes())
    data[3 * PAGE: 3 * PAGE + 300] = b"Z" * 300  # one page of the results table
    path.write_bytes(bytes(data))
    with sqlite3.connect(path) as con, pytest.raises(sqlite3.DatabaseError, match="malformed"):
        con.execute("select * from results").fetchall()  # the damage the issue saw
    assert _entries(results) == expected
    assert _entries(results) == expected  # and the rebuilt one is whole on the next run


def test_a_catalogue_cell_that_is_not_utf8_is_rebuilt_from_the_files(synced):
    results, expected = synced
    with sqlite3.connect(results / CATALOGUE_NAME) as con:
        con.execute("update results set source = cast(x'ff00fe' as text) where video_id = 'vid0007'")
    with sqlite3.connect(results / CATALOGUE_NAME) as con, pytest.raises(sqlite3.OperationalError, match="UTF-8"):
        con.execute("select source from results").fetchall()
    assert _entries(results) == expected


@pytest.mark.parametrize("column,value", [("quarantine", "[[\"dialogues\""), ("config_fingerprint", "fpX"),
                                          ("source", "other"), ("inputs", "{}")])
def test_a_catalogue_cell_quietly_changed_is_read_again_from_its_file(synced, column, value):
    results, expected = synced
    with sqlite3.connect(results / CATALOGUE_NAME) as con:
        con.execute(f"update results set {column} = ? where video_id = 'vid0003'", (value,))
    catalogue = sync_catalogue(results)
    assert catalogue.read_files == 1 and {e.video_id: e for e in catalogue} == expected


@pytest.mark.parametrize("damage", [
    lambda index: index["buckets"].update(count=0),  # the ZeroDivisionError
    lambda index: index["buckets"].update(count=True),
    lambda index: index.update(buckets=[1, 2]),
    lambda index: index["buckets"].update(digests=["x"]),
    lambda index: index["shards"][0].pop("bucket"),
    lambda index: index["shards"][0].update(rows="many"),
    lambda index: index["shards"][0].update(table="nope"),
    lambda index: index["shards"].append(7),
])
def test_a_damaged_index_costs_a_full_rewrite_not_a_crash(tmp_path, damage):
    results, root = tmp_path / "results", tmp_path / "corpus"
    store(results, ids_of(4))
    built = build_shards(results, root, SMALL)
    index = json.loads((root / "index.json").read_text())
    damage(index)
    (root / "index.json").write_text(json.dumps(index))
    again = update_shards(results, root, SMALL)
    assert again.index == built  # the same results, rewritten in full: the same bytes
    check_index_matches_files(root, again.index)


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", '{"shards": 3}'])
def test_an_unreadable_index_is_rebuilt(tmp_path, text):
    results, root = tmp_path / "results", tmp_path / "corpus"
    store(results, ids_of(4))
    built = build_shards(results, root, SMALL)
    (root / "index.json").write_text(text)
    assert update_shards(results, root, SMALL).index == built


@pytest.mark.parametrize("text", ["[1]", "{\"calls\": \"x\"}", "\x00\x01"])
def test_damaged_llm_usage_starts_the_count_again(tmp_path, text):
    path = tmp_path / "llm_usage.json"
    path.write_text(text)
    assert _add_usage(path, {"calls": 2}) == {"calls": 2}
    assert _add_usage(path, {"calls": 1}) == {"calls": 3}


def test_one_build_per_output_dir_and_the_refusal_names_the_holder(tmp_path):
    with corpus_lock(tmp_path):
        with corpus_lock(tmp_path):  # the command line, then the flow in the same process
            pass
        holder = subprocess.run(
            [sys.executable, "-c", "import sys; from curation.corpus.build_lock import corpus_lock, CorpusBusy\n"
             f"try:\n    with corpus_lock({str(tmp_path)!r}): sys.exit(0)\nexcept CorpusBusy as e: print(e); sys.exit(5)"],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert holder.returncode == 5, holder.stderr
        assert f"pid {os.getpid()} on " in holder.stdout and "being built by another run" in holder.stdout
    with corpus_lock(tmp_path):  # released when the holder's block ends
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; from curation.corpus.build_lock import corpus_lock\n"
                             f"with corpus_lock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)"],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(CorpusBusy, match=f"pid {proc.pid} "):
            with corpus_lock(tmp_path):
                pass
    finally:
        proc.kill()
        proc.wait()
    with corpus_lock(tmp_path):
        pass


@pytest.mark.slow
def test_a_second_build_on_a_busy_output_dir_is_one_error_line(tmp_path):
    out = tmp_path / "corpus"
    with corpus_lock(out):
        proc = subprocess.run([sys.executable, "-m", "flows.build_corpus", "--config", str(SAMPLES / "sample.yaml"),
                               "--set", f"output_dir={out}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"pid {os.getpid()} " in lines[0], proc.stderr
    assert "Dask" not in proc.stderr and not (out / "work" / "run-marker").exists()


def test_a_shard_changed_in_place_to_the_same_size_is_rewritten(tmp_path):
    results, root = tmp_path / "results", tmp_path / "corpus"
    store(results, ids_of(4))
    built = build_shards(results, root, SMALL)
    victim = root / built["shards"][0]["path"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    update = update_shards(results, root, SMALL)
    assert update.index == built and built["shards"][0]["path"] in update.written
    check_index_matches_files(root, update.index)


def test_a_catalogue_path_taken_by_a_folder_is_rebuilt(synced):
    results, expected = synced
    (results / CATALOGUE_NAME).unlink()
    (results / CATALOGUE_NAME).mkdir()
    assert _entries(results) == expected
