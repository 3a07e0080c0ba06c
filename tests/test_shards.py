import hashlib
import json
import os
import re
from collections import Counter
from pathlib import Path

import duckdb
import fsspec
import pandas as pd
import pyarrow.parquet as pq
import pytest

from curation.corpus.results import VideoResult, write_result
from curation.corpus.shards import (
    ALL_SPLIT,
    DEFAULT_BUCKETS,
    SPLITS,
    ShardConfig,
    assign_splits,
    bucket_of,
    build_shards,
    publish,
    read_table,
    split_fraction,
    split_of,
    update_shards,
)
from schemas import SCHEMA_VERSION, Dialogue, Quarantine, Video, from_table
from schemas.arrow import TABLE_KEY, VERSION_KEY
from tests.test_results import FIXED_TIME, make_result
from training.data.corpus import read_split

# Small enough that 40 videos roll over several files per (table, split).
SMALL = ShardConfig(target_shard_bytes=6_000, batch_rows=8, validation_share=0.3, rl_share=0.2)
# <table>/<split>-<bucket>-<part>-<sha8>; any split name (issue 16 adds one).
NAME = re.compile(r"^data/(videos|segments|scenes|dialogues|quarantine)/([a-z]+)-(\d{5})-(\d{2})-([0-9a-f]{8})\.parquet$")


def store(results_dir: Path, ids, **kwargs) -> dict[str, VideoResult]:
    made = {}
    for i, video_id in enumerate(ids):
        made[video_id] = make_result(video_id, n_dialogues=1 + i % 3, quarantined=i % 2, **kwargs)
        write_result(results_dir, made[video_id])
    return made


def ids_of(n: int, start: int = 0) -> list[str]:
    return [f"vid{i:04d}" for i in range(start, start + n)]


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def check_index_matches_files(root: Path, index: dict) -> None:
    assert index["schema_version"] == SCHEMA_VERSION
    for entry in index["shards"]:
        path = root / entry["path"]
        data = path.read_bytes()
        name = NAME.match(entry["path"])
        assert name and name.group(2) == entry["split"] and int(name.group(3)) == entry["bucket"], entry["path"]
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["sha256"][:8] == name.group(5)
        assert entry["bytes"] == len(data)
        meta = pq.read_metadata(path)
        assert entry["rows"] == meta.num_rows
        assert meta.schema.to_arrow_schema().metadata[VERSION_KEY] == SCHEMA_VERSION.encode()
        assert meta.schema.to_arrow_schema().metadata[TABLE_KEY] == entry["table"].encode()
    listed = {e["path"] for e in index["shards"]}
    on_disk = {p.relative_to(root).as_posix() for p in (root / "data").rglob("*") if p.is_file()}
    assert on_disk == listed  # nothing stale, no temp files left


def test_every_record_lands_once_in_its_table_and_split(tmp_path):
    made = store(tmp_path / "results", ids_of(40))
    manifest_row = Quarantine(item_id="../x", video_id="../x", stage="manifest", reason="unsafe_id",
                              created_at=FIXED_TIME)
    write_result(tmp_path / "results", VideoResult(video_id="manifest-00aa", config_fingerprint="fp0",
                                                   quarantine=[manifest_row]))
    root = tmp_path / "corpus"
    index = build_shards(tmp_path / "results", root, SMALL)
    check_index_matches_files(root, index)
    assert index["created_from"]["results"] == 41
    assert index["created_from"]["results_with_dialogues"] == 40

    dialogues = from_table(read_table(root, "dialogues"), Dialogue)
    expected = [d for vid in sorted(made) for d in made[vid].dialogues]
    assert sorted(d.dialogue_id for d in dialogues) == sorted(d.dialogue_id for d in expected)
    assert {d.dialogue_id: d for d in dialogues} == {d.dialogue_id: d for d in expected}  # lossless
    videos = sorted(from_table(read_table(root, "videos"), Video), key=lambda v: v.video_id)
    assert videos == [made[v].video for v in sorted(made)]
    assert read_table(root, "segments").num_rows == 40 * 5 and read_table(root, "scenes").num_rows == 40 * 2
    quarantine = from_table(read_table(root, "quarantine", split="all"), Quarantine)
    assert len(quarantine) == 20 + 1 and manifest_row in quarantine
    assert {e["split"] for e in index["shards"] if e["table"] == "quarantine"} == {"all"}
    assert read_table(root, "dialogues", split="nope").num_rows == 0
    with pytest.raises(ValueError, match="unknown table"):
        read_table(root, "frames")


def test_a_videos_rows_never_straddle_splits(tmp_path):
    store(tmp_path / "results", ids_of(40))
    root = tmp_path / "corpus"
    build_shards(tmp_path / "results", root, SMALL)
    for table in ("videos", "segments", "scenes", "dialogues"):
        seen: dict[str, set[str]] = {}
        for split in SPLITS:
            for video_id in read_table(root, table, split).column("video_id").to_pylist():
                seen.setdefault(video_id, set()).add(split)
        assert all(splits == {split_of(v, SMALL)} for v, splits in seen.items()), table
        assert len(seen) == 40
    counts = Counter(split_of(v, SMALL) for v in ids_of(40))
    assert counts["validation"] > 0 and counts["rl"] > 0 and counts["train"] > counts["validation"]
    # the trainer's reader sees the same splits: SFT's train never holds an rl video
    train, rl = read_split(root, "train"), read_split(root, "rl")
    assert {d.video_id for d in train.dialogues} == {v for v in ids_of(40) if split_of(v, SMALL) == "train"}
    assert {d.video_id for d in rl.dialogues} == {v for v in ids_of(40) if split_of(v, SMALL) == "rl"}
    assert not {d.video_id for d in train.dialogues} & {d.video_id for d in rl.dialogues}


def test_split_is_a_pure_function_of_id_seed_and_share():
    ids = ids_of(400)
    cfg = ShardConfig()
    assert [split_of(v, cfg) for v in ids] == [split_of(v, ShardConfig()) for v in ids]
    share = sum(split_of(v, cfg) == "validation" for v in ids) / len(ids)
    assert 0.02 < share < 0.09  # default 5%
    reseeded = ShardConfig(split_seed="other")
    assert [split_of(v, cfg) for v in ids] != [split_of(v, reseeded) for v in ids]
    assert {split_of(v, ShardConfig(validation_share=0.0, rl_share=0.0)) for v in ids} == {"train"}
    assert {split_of(v, ShardConfig(validation_share=1.0, rl_share=0.0)) for v in ids} == {"validation"}
    # growing the validation share only moves videos from train to validation, never back
    small, large = ShardConfig(validation_share=0.05), ShardConfig(validation_share=0.2)
    assert all(split_of(v, large) == "validation" for v in ids if split_of(v, small) == "validation")


def test_rl_split_is_disjoint_stable_and_sized_per_source():
    ids = ids_of(20_000)
    cfg = ShardConfig()
    splits = [split_of(v, cfg) for v in ids]
    assert splits == [split_of(v, ShardConfig()) for v in ids]  # stable
    share = Counter(splits)["rl"] / len(ids)
    assert 0.03 < share < 0.042  # default 3.6%: FACTS.md's 1,900 of ~52.8k videos
    # adding the rl split kept every validation video where it was (bands at opposite ends)
    no_rl = ShardConfig(rl_share=0.0)
    assert [v for v, s in zip(ids, splits, strict=True) if s == "validation"] == [v for v in ids if split_of(v, no_rl) == "validation"]
    paper = ShardConfig(rl_share_by_source={"web": 0.03, "ego": 0.157})
    assert 0.14 < Counter(split_of(v, paper, "ego") for v in ids)["rl"] / len(ids) < 0.175
    assert 0.025 < Counter(split_of(v, paper, "web") for v in ids)["rl"] / len(ids) < 0.035
    with pytest.raises(ValueError, match="rl share"):
        ShardConfig(validation_share=0.5, rl_share=0.6)


def test_a_tiny_corpus_gets_a_video_in_every_split_by_rank():
    cfg = ShardConfig()
    four = [(v, "sample") for v in ids_of(4)]
    assert set(split_of(v, cfg) for v, _ in four) != set(SPLITS)  # by hash alone a split is empty
    ranked = assign_splits(four, cfg)
    assert Counter(ranked.values()) == {"train": 2, "validation": 1, "rl": 1}
    order = [v for _, v in sorted((split_fraction(v, cfg), v) for v, _ in four)]
    assert (ranked[order[0]], ranked[order[-1]]) == ("validation", "rl")  # the ends of the hash order
    assert assign_splits(four, cfg) == ranked
    assert Counter(assign_splits(four[:2], cfg).values()) == Counter(split_of(v, cfg) for v, _ in four[:2])
    assert "rl" not in assign_splits(four, ShardConfig(rl_share=0.0)).values()
    many = [(v, "web") for v in ids_of(400)]
    assert assign_splits(many, cfg) == {v: split_of(v, cfg) for v, _ in many}  # a real corpus: hash alone


def test_build_applies_the_tiny_corpus_rule_only_to_videos_with_dialogues(tmp_path):
    made = store(tmp_path / "results", ids_of(4))
    write_result(tmp_path / "results", make_result("novid", n_dialogues=0, quarantined=1))
    index = build_shards(tmp_path / "results", tmp_path / "corpus", ShardConfig())
    assert index["split"]["ranked_small_corpus"] is True
    by_split = {s: {d.video_id for d in read_split(tmp_path / "corpus", s).dialogues} for s in SPLITS}
    assert all(by_split.values()) and set().union(*by_split.values()) == set(made)


def test_a_bucket_rolls_to_a_new_part_at_the_target_size(tmp_path):
    store(tmp_path / "results", ids_of(40))
    cfg = SMALL.model_copy(update={"target_shard_bytes": 3_000, "buckets": 2})
    index = build_shards(tmp_path / "results", tmp_path / "corpus", cfg)
    by_key: dict[tuple[str, str, int], list[dict]] = {}
    for entry in index["shards"]:
        by_key.setdefault((entry["table"], entry["split"], entry["bucket"]), []).append(entry)
    assert len(by_key[("dialogues", "train", 0)]) >= 2
    for entries in by_key.values():
        parts = [int(NAME.match(e["path"]).group(4)) for e in entries]
        assert parts == list(range(len(entries)))
        assert all(e["bytes"] >= cfg.target_shard_bytes for e in entries[:-1])  # only the last is short
    one_file = build_shards(tmp_path / "results", tmp_path / "big", cfg.model_copy(update={"target_shard_bytes": 10**9}))
    assert Counter((e["table"], e["split"], e["bucket"]) for e in one_file["shards"]) == Counter(by_key.keys())
    for key, entries in by_key.items():
        big = next(e for e in one_file["shards"] if (e["table"], e["split"], e["bucket"]) == key)
        assert big["rows"] == sum(e["rows"] for e in entries)


def test_identical_results_give_byte_identical_shards_and_index(tmp_path):
    store(tmp_path / "results", ids_of(25))
    first = build_shards(tmp_path / "results", tmp_path / "a", SMALL)
    second = build_shards(tmp_path / "results", tmp_path / "b", SMALL)
    assert first == second
    assert files_under(tmp_path / "a") == files_under(tmp_path / "b")
    before = files_under(tmp_path / "a")
    assert build_shards(tmp_path / "results", tmp_path / "a", SMALL) == first  # rebuild in place: no change
    assert files_under(tmp_path / "a") == before
    for entry in first["shards"]:  # no wall-clock anywhere in the file's metadata
        meta = pq.read_metadata(tmp_path / "a" / entry["path"])
        assert meta.created_by.startswith("parquet-cpp-arrow")
        assert b"2026-" not in b"".join(meta.metadata.values())


def test_rebuild_after_new_results_neither_duplicates_nor_drops(tmp_path):
    results, root = tmp_path / "results", tmp_path / "corpus"
    made = store(results, ids_of(20))
    old = build_shards(results, root, SMALL)
    made |= store(results, ids_of(10, start=20))
    write_result(results, make_result("vid0003", n_dialogues=3))  # a redone video replaces its rows
    new = build_shards(results, root, SMALL)
    check_index_matches_files(root, new)  # old files no longer listed are gone
    assert {e["path"] for e in old["shards"]} - {e["path"] for e in new["shards"]}
    ids = read_table(root, "dialogues").column("dialogue_id").to_pylist()
    assert len(ids) == len(set(ids))
    expected = {d.dialogue_id for v, r in made.items() if v != "vid0003" for d in r.dialogues}
    assert set(ids) == expected | {f"vid0003-mq-{d}" for d in range(3)}
    assert sorted(read_table(root, "videos").column("video_id").to_pylist()) == ids_of(30)


def test_adding_a_video_leaves_every_other_shard_file_byte_identical(tmp_path):
    results, root = tmp_path / "results", tmp_path / "corpus"
    cfg = SMALL.model_copy(update={"target_shard_bytes": 10**9, "buckets": 8})
    store(results, ids_of(40))
    before_index = build_shards(results, root, cfg)
    before = files_under(root / "data")
    new_id = "vid0040"
    write_result(results, make_result(new_id, n_dialogues=2, quarantined=1))
    update = update_shards(results, root, cfg)
    after = files_under(root / "data")
    check_index_matches_files(root, update.index)

    changed = sorted(f"data/{p}" for p in after if before.get(p) != after[p])
    assert changed == sorted(update.written)
    # One file per table, in the new video's bucket and split (quarantine rows: split `all`).
    assert Counter(p.split("/")[1] for p in changed) == {t: 1 for t in
                                                          ("videos", "segments", "scenes", "dialogues", "quarantine")}
    entries = {e["path"]: e for e in update.index["shards"]}
    for path in changed:
        table = path.split("/")[1]
        assert entries[path]["bucket"] == bucket_of(new_id, 8)
        assert entries[path]["split"] == (ALL_SPLIT if table == "quarantine" else split_of(new_id, cfg))
    # Every other file keeps its name and bytes; the replaced ones are gone after the swap.
    replaced = {e["path"] for e in before_index["shards"]} - set(entries)
    assert len(replaced) == len(changed) and sorted(update.removed) == sorted(replaced)
    assert {p: b for p, b in before.items() if f"data/{p}" not in replaced} == {
        p: b for p, b in after.items() if f"data/{p}" not in changed}
    assert update.kept == len(entries) - len(changed)
    # The update equals a full build of the same results, byte for byte.
    assert build_shards(results, tmp_path / "fresh", cfg) == update.index
    assert files_under(tmp_path / "fresh" / "data") == after
    # Nothing changed: nothing written, nothing removed.
    again = update_shards(results, root, cfg)
    assert (again.written, again.removed, again.index) == ([], [], update.index)


def test_the_bucket_count_is_fixed_per_corpus_until_the_config_names_another(tmp_path):
    results, root = tmp_path / "results", tmp_path / "corpus"
    store(results, ids_of(20))
    first = build_shards(results, root, SMALL.model_copy(update={"buckets": 4}))
    assert first["buckets"]["count"] == 4 and {e["bucket"] for e in first["shards"]} == set(range(4))
    assert build_shards(results, root, SMALL) == first  # no count in the config: the corpus's own
    assert build_shards(results, tmp_path / "new", SMALL)["buckets"]["count"] == DEFAULT_BUCKETS
    regrouped = update_shards(results, root, SMALL.model_copy(update={"buckets": 2}))
    assert regrouped.index["buckets"]["count"] == 2 and regrouped.kept == 0
    assert sorted(regrouped.removed) == sorted(e["path"] for e in first["shards"])
    check_index_matches_files(root, regrouped.index)
    # Another split is another layout: every bucket is rebuilt (files whose bytes stay are kept).
    half = SMALL.model_copy(update={"validation_share": 0.5})
    resplit = update_shards(results, root, half)
    assert resplit.written and resplit.index["buckets"]["count"] == 2
    check_index_matches_files(root, resplit.index)
    assert {v: split_of(v, half) for v in ids_of(20)} == {
        v: s for s in SPLITS for v in read_table(root, "videos", s).column("video_id").to_pylist()}


def test_a_kept_file_that_went_missing_is_written_again(tmp_path):
    results, root = tmp_path / "results", tmp_path / "corpus"
    store(results, ids_of(20))
    cfg = SMALL.model_copy(update={"buckets": 4})
    index = build_shards(results, root, cfg)
    lost = next(e for e in index["shards"] if e["table"] == "dialogues")
    (root / lost["path"]).unlink()
    update = update_shards(results, root, cfg)
    assert update.index == index and lost["path"] in update.written
    assert {e["bucket"] for e in index["shards"] if e["path"] in update.written} == {lost["bucket"]}
    check_index_matches_files(root, update.index)


def test_crash_before_the_index_swap_leaves_the_old_corpus_readable(tmp_path, monkeypatch):
    results, root = tmp_path / "results", tmp_path / "corpus"
    store(results, ids_of(20))
    old = build_shards(results, root, SMALL)
    old_text = (root / "index.json").read_text()
    old_dialogues = read_table(root, "dialogues")
    store(results, ids_of(8, start=20))
    real_replace = os.replace

    def crash_at_index(src, dst):
        if Path(dst).name == "index.json":
            raise OSError("killed before the index swap")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_at_index)
    with pytest.raises(OSError, match="killed before"):
        build_shards(results, root, SMALL)
    monkeypatch.undo()
    assert (root / "index.json").read_text() == old_text
    for entry in old["shards"]:  # every file the old index lists is still there, unchanged
        assert hashlib.sha256((root / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    assert read_table(root, "dialogues").equals(old_dialogues)
    assert not list(root.glob(".tmp-*"))

    new = build_shards(results, root, SMALL)  # the re-run after the crash
    check_index_matches_files(root, new)
    ids = read_table(root, "dialogues").column("dialogue_id").to_pylist()
    assert len(ids) == len(set(ids)) == sum(1 + i % 3 for i in range(20)) + sum(1 + i % 3 for i in range(8))


def test_stale_temp_files_from_a_killed_build_are_removed(tmp_path):
    results, root = tmp_path / "results", tmp_path / "corpus"
    store(results, ids_of(5))
    (root / "data" / "dialogues").mkdir(parents=True)
    (root / "data" / "dialogues" / ".tmp-train-00000-999.parquet.part").write_bytes(b"PAR1 half")
    (root / "data" / "dialogues" / "train-00007-deadbeef.parquet").write_bytes(b"old shard")
    check_index_matches_files(root, build_shards(results, root, SMALL))


def test_empty_store_gives_an_empty_but_valid_corpus(tmp_path):
    index = build_shards(tmp_path / "results", tmp_path / "corpus")
    assert index["shards"] == [] and index["created_from"]["results"] == 0
    table = read_table(tmp_path / "corpus", "dialogues")
    assert table.num_rows == 0 and table.schema.metadata[VERSION_KEY] == SCHEMA_VERSION.encode()


def test_pandas_and_duckdb_read_the_shards_as_they_are(tmp_path):
    store(tmp_path / "results", ids_of(30))
    root = tmp_path / "corpus"
    index = build_shards(tmp_path / "results", root, SMALL)
    paths = [str(root / e["path"]) for e in index["shards"] if e["table"] == "dialogues"]
    frame = pd.concat([pd.read_parquet(p) for p in paths])
    assert len(frame) == sum(1 + i % 3 for i in range(30)) and frame["dialogue_id"].is_unique
    con = duckdb.connect()
    count, videos = con.execute(
        f"select count(*), count(distinct video_id) from read_parquet({paths!r})").fetchone()
    assert (count, videos) == (len(frame), 30)
    answer = con.execute(f'select "references"[1].answer from read_parquet({paths[:1]!r}) order by dialogue_id limit 1').fetchone()[0]
    assert answer == "A man in a dark suit."


def _load_with_datasets(root: Path, index: dict, table: str, cache: Path):
    import datasets
    files = {}
    for entry in index["shards"]:
        if entry["table"] == table:
            # `all` is reserved by `datasets`; the card names that split `train` too (curation/corpus/card.py).
            split = "train" if entry["split"] == "all" else entry["split"]
            files.setdefault(split, []).append(str(root / entry["path"]))
    return datasets.load_dataset("parquet", data_files=files, cache_dir=str(cache))


@pytest.mark.parametrize("table", ["segments", "scenes", "quarantine"])
def test_datasets_loads_the_shards_from_local_files(tmp_path, monkeypatch, table):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    store(tmp_path / "results", ids_of(12))
    root = tmp_path / "corpus"
    index = build_shards(tmp_path / "results", root, SMALL)
    loaded = _load_with_datasets(root, index, table, tmp_path / "hf-cache")
    assert sum(ds.num_rows for ds in loaded.values()) == read_table(root, table).num_rows > 0
    if table != "quarantine":
        for split, ds in loaded.items():
            assert ds.num_rows == read_table(root, table, split).num_rows


@pytest.mark.parametrize("table", ["videos", "dialogues"])
def test_datasets_loads_tables_with_dict_columns(tmp_path, monkeypatch, table):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    store(tmp_path / "results", ids_of(6))
    root = tmp_path / "corpus"
    index = build_shards(tmp_path / "results", root, SMALL)
    loaded = _load_with_datasets(root, index, table, tmp_path / "hf-cache")
    assert sum(ds.num_rows for ds in loaded.values()) == read_table(root, table).num_rows
    column = "metadata" if table == "videos" else "provenance"
    first = next(iter(loaded.values()))[0][column]
    entries = first if table == "videos" else first["parameters"]
    assert all(set(e) == {"key", "value"} for e in entries)  # dicts as sorted key/value entries


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_publish_copies_the_corpus_to_an_fsspec_url_index_last(tmp_path, scheme):
    results, root = tmp_path / "results", tmp_path / "corpus"
    store(results, ids_of(10))
    url = f"memory://corpus-{tmp_path.name}" if scheme == "memory" else (tmp_path / "remote").as_uri()
    cfg = SMALL.model_copy(update={"publish_url": url})
    (root / "figures").mkdir(parents=True)
    (root / "figures" / "durations.png").write_bytes(b"png")
    (root / "figures" / "dialogue_viewer.png").write_bytes(b"frames of a video: not the card's")
    (root / "README.md").write_text("# card\n![durations](figures/durations.png)\n")
    index = build_shards(results, root, cfg)  # publishes because publish_url is set
    fs, base = fsspec.core.url_to_fs(url)
    remote = json.loads(fs.cat_file(f"{base}/index.json"))
    assert remote == index
    for entry in index["shards"]:
        assert hashlib.sha256(fs.cat_file(f"{base}/{entry['path']}")).hexdigest() == entry["sha256"]
    assert fs.cat_file(f"{base}/figures/durations.png") == b"png"
    assert fs.cat_file(f"{base}/README.md") == b"# card\n![durations](figures/durations.png)\n"
    assert not fs.exists(f"{base}/figures/dialogue_viewer.png")  # only what the card shows

    # Re-publishing sends only what is not there yet: the shards are skipped.
    assert publish(root, url) == ["README.md", "figures/durations.png", "index.json"]

    store(results, ids_of(3, start=10))
    new = build_shards(results, root, cfg)
    remote_shards = sorted(p.split(f"{base.strip('/')}/", 1)[1] for p in fs.find(f"{base}/data"))
    assert remote_shards == sorted(e["path"] for e in new["shards"])  # stale remote shards removed
    assert not [p for p in fs.find(base) if ".tmp-" in p]
