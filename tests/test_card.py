"""The dataset card: a parseable Hub header whose configs, files and features match the shards."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import datasets
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from curation.corpus.card import basic_stats, render_card, stats_of, write_dataset_card
from curation.corpus.card_header import hub_features, licence_of, size_category
from schemas import TABLES, Quarantine, Scene, Segment, arrow_schema
from tests.conftest import dialogue_row
from tests.sample_corpus import build_corpus, write_shard

SUMMARY = {"videos": 2, "with_dialogues": 1, "dialogues": {"multi_question": 2},
           "quarantined": [{"stage": "probe", "reason": "not_a_video", "kind": "skip", "count": 1},
                           {"stage": "scenes", "reason": "crash", "kind": "error", "count": 1}],
           "durations_s": {"probe": 0.5}, "llm_usage": {"calls": 4, "prompt_tokens": 900},
           "config_fingerprint": "cfg-1234abcd"}
CREATED = "2026-11-25T00:00:00Z"


def _build(root: Path) -> dict:
    build_corpus(root, {"train": [dialogue_row()], "validation": [dialogue_row(dialogue_id="bikes-mq-1")]},
                 ["bikes"])
    index = json.loads((root / "index.json").read_text())
    scenes = [Scene(video_id="bikes", scene_id=i, start_s=i * 2.5, end_s=(i + 1) * 2.5, detector="adaptive")
              for i in range(4)]
    segments = [Segment(segment_id=f"bikes-s{i:04d}", video_id="bikes", start_s=i, end_s=i + 1.5,
                        text=f"caption {i}", origin="caption", scene_id=0) for i in range(3)]
    quarantine = [Quarantine(item_id="not_a_video", video_id="not_a_video", stage="probe", reason="not_a_video",
                             detail="no video stream", created_at=CREATED),
                  Quarantine(item_id="broken", video_id="broken", stage="scenes", reason="crash",
                             detail="ValueError", kind="error", created_at=CREATED)]
    index["shards"] += [write_shard(root, "scenes", "train", scenes, Scene),
                        write_shard(root, "segments", "train", segments, Segment),
                        write_shard(root, "quarantine", "all", quarantine, Quarantine)]
    (root / "index.json").write_text(json.dumps(index))
    return index


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict, str]:
    root = tmp_path_factory.mktemp("card") / "corpus"
    index = _build(root)
    card = write_dataset_card(root, index, SUMMARY, llm_backend="replay")
    return root, index, card.read_text()


def _header(card: str) -> dict:
    match = re.match(r"---\n(.*?)\n---\n", card, re.S)
    assert match, "card must open with a YAML block between --- lines"
    return yaml.safe_load(match.group(1))


def test_header_parses_and_every_config_lists_exactly_the_index_shards(corpus):
    root, index, card = corpus
    header = _header(card)
    configs = {c["config_name"]: c for c in header["configs"]}
    assert set(configs) == {"videos", "dialogues", "scenes", "segments", "quarantine"}
    assert configs["dialogues"].get("default") is True
    for table, config in configs.items():
        listed = [p for entry in config["data_files"] for p in entry["path"]]
        assert sorted(listed) == sorted(s["path"] for s in index["shards"] if s["table"] == table)
        assert all((root / p).is_file() for p in listed)
    # `all` is a reserved split name in datasets: one-split tables are published as train.
    assert [e["split"] for e in configs["quarantine"]["data_files"]] == ["train"]
    assert [e["split"] for e in configs["dialogues"]["data_files"]] == ["train", "validation"]
    assert header["license"] == "unknown"
    assert header["size_categories"] == ["n<1K"]
    assert "video-text-to-text" in header["task_categories"]


def test_features_match_each_tables_shard_schema(corpus):
    root, index, card = corpus
    infos = {i["config_name"]: i for i in _header(card)["dataset_info"]}
    for table, info in infos.items():
        shard = next(s for s in index["shards"] if s["table"] == table)
        schema = pq.read_schema(root / shard["path"])
        declared = datasets.Features._from_yaml_list(info["features"])
        assert list(declared) == schema.names
        assert declared == hub_features(schema)
        assert sum(s["num_examples"] for s in info["splits"]) == sum(
            s["rows"] for s in index["shards"] if s["table"] == table)
    video_features = datasets.Features._from_yaml_list(infos["videos"]["features"])
    assert video_features["metadata"] == datasets.List({"key": datasets.Value("string"),
                                                        "value": datasets.Value("string")})
    assert video_features["duration_s"] == datasets.Value("float64")
    dialogue = datasets.Features._from_yaml_list(infos["dialogues"]["features"])
    assert dialogue["references"].feature["reply_span"].length == 2


@pytest.mark.parametrize("table", ["dialogues", "videos", "scenes", "segments", "quarantine"])
def test_load_dataset_reads_each_config_from_the_card(corpus, table, tmp_path):
    root, index, card = corpus
    header = _header(card)
    config = next(c for c in header["configs"] if c["config_name"] == table)
    info = next(i for i in header["dataset_info"] if i["config_name"] == table)
    data_files = {e["split"]: [str(root / p) for p in e["path"]] for e in config["data_files"]}
    loaded = datasets.load_dataset("parquet", data_files=data_files, cache_dir=str(tmp_path),
                                   features=datasets.Features._from_yaml_list(info["features"]))
    assert {split: len(ds) for split, ds in loaded.items()} == {
        s["name"]: s["num_examples"] for s in info["splits"]}
    if table == "dialogues":
        row = loaded["train"][0]
        assert row["references"][1]["reply_span"] == [7.5, 10.0]
        assert row["provenance"]["parameters"] == [{"key": "temperature", "value": "0"}]


def test_a_legacy_map_column_is_declared_json_and_loads(tmp_path):
    path = tmp_path / "legacy.parquet"
    table = pa.table({"metadata": pa.array([[("a", "1")], []], type=pa.map_(pa.string(), pa.string()))})
    pq.write_table(table, path)
    features = hub_features(table.schema)
    assert features["metadata"] == datasets.Json()
    assert datasets.Features._from_yaml_list(features._to_yaml_list()) == features
    loaded = datasets.load_dataset("parquet", data_files=str(path), features=features, cache_dir=str(tmp_path))
    assert loaded["train"]["metadata"] == [[["a", "1"]], []]


def test_a_local_copy_loads_by_config_name_like_the_hub(corpus, tmp_path):
    root, _, _ = corpus
    loaded = datasets.load_dataset(str(root), "dialogues", cache_dir=str(tmp_path))
    assert {split: len(ds) for split, ds in loaded.items()} == {"train": 1, "validation": 1}


def test_body_states_replay_provenance_quarantine_and_embeds_existing_figures(corpus):
    root, _, card = corpus
    assert "no model was run" in card and "replay file of hand-written answers" in card
    assert "cfg-1234abcd" in card
    assert "| probe | not_a_video | skip | 1 |" in card and "| scenes | crash | error | 1 |" in card
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", card)
    assert len(figures) >= 5
    assert all((root / f).is_file() and not Path(f).is_absolute() for f in figures)
    assert "REPO_ID" not in card and f'load_dataset("{root.name}", "dialogues")' in card
    assert "read_parquet(" in card


def test_the_card_explains_every_column_windows_citation_limitations_and_licences(corpus):
    from curation.corpus.card_text import FIELDS, licence_link

    root, _, card = corpus
    for table, cls in TABLES.items():  # every stored column has a row in the field table
        documented = {name for name, _ in FIELDS[table]}
        assert set(stored_columns(arrow_schema(cls))) == documented, table
    for name in ("reply_span", "evidence", "immediate", "provenance.parameters"):
        assert f"| `{name}` |" in card or f"| `references[].{name}` |" in card
    for heading in ("## How reply windows and `NO REPLY` work", "## Fields", "## Limitations and biases",
                    "## Citation"):
        assert heading in card
    assert "@inproceedings{wang2026mmduet2" in card and "2507.09313" in card
    assert "`train`" in card.split("## Quarantine")[1].split("##")[0]  # the split name readers see
    assert licence_link("CC-BY-3.0 (Big Buck Bunny)") == "https://spdx.org/licenses/CC-BY-3.0.html"
    assert licence_link("bought from a stock site") == ""


def stored_columns(schema, prefix=""):
    """Dotted column names as the card's field table writes them (`references[].answer`)."""
    for field in schema:
        kind, name = field.type, prefix + field.name
        if pa.types.is_list(kind) and pa.types.is_struct(kind.value_type) and \
                {f.name for f in kind.value_type} != {"key", "value"}:
            yield from stored_columns(kind.value_type, name + "[].")
        elif pa.types.is_struct(kind):
            yield from stored_columns(kind, name + ".")
        else:
            yield name


def test_the_card_says_nothing_about_replay_for_a_model_backend(corpus):
    root, index, _ = corpus
    card = render_card(root, index, SUMMARY, "openai", stats={"counts": {}}, figures=[])
    assert "no model was run" not in card and "`openai`" in card


def test_stats_fall_back_to_counts_licences_and_kinds_when_corpus_stats_fails(corpus):
    root, index, _ = corpus
    stats = basic_stats(root, index, duckdb.ParserException("boom"))
    assert stats["counts"] == {"dialogues": 2, "videos": 1, "scenes": 4, "segments": 3, "quarantine": 2}
    assert stats["videos_by_source_licence"] == [{"source": "sample", "licence": "unknown", "videos": 1}]
    assert stats["dialogues_by_kind"] == [{"kind": "multi_question", "dialogues": 2}]


def test_corpus_stats_feed_the_cards_tables_and_distributions(corpus):
    root, index, card = corpus
    assert "stats_error" not in stats_of(root, index)
    assert "`curation.corpus.stats` failed" not in card
    assert "- scene lengths s: n=4, min 2.50, median 2.50, max 2.50" in card
    assert "### answers per question" in card


def test_identical_inputs_give_a_byte_identical_card_and_figures(tmp_path):
    root = tmp_path / "c"
    first = write_dataset_card(root, _build(root), SUMMARY, llm_backend="replay").read_text()
    pngs = {p.name: p.read_bytes() for p in (root / "figures").glob("*.png")}
    shutil.rmtree(root)  # a rebuild from scratch of the same rows
    again = write_dataset_card(root, _build(root), SUMMARY, llm_backend="replay").read_text()
    assert again == first
    assert {p.name: p.read_bytes() for p in (root / "figures").glob("*.png")} == pngs


def test_licence_is_one_hub_id_when_all_videos_agree_else_other_with_the_breakdown():
    rows = [{"source": "web", "licence": "CC-BY-4.0", "videos": 3}, {"source": "ego", "licence": "cc-by-4.0",
                                                                      "videos": 1}]
    assert licence_of({"videos_by_source_licence": rows}) == ("cc-by-4.0", {"CC-BY-4.0": 3, "cc-by-4.0": 1})
    mixed = rows + [{"source": "yt", "licence": "Creative Commons Attribution", "videos": 2}]
    assert licence_of({"videos_by_source_licence": mixed})[0] == "other"
    assert licence_of({})[0] == "unknown"
    assert size_category(999) == "n<1K" and size_category(1000) == "1K<n<10K"


def test_full_statistics_render_as_tables_and_distributions(corpus):
    root, index, _ = corpus
    stats = {"counts": {"videos": 1, "segments": 3, "scenes": 4, "dialogues": 2, "quarantine": 2},
             "videos_by_source_licence": [{"source": "web", "licence": "CC-BY-4.0", "videos": 1, "minutes": 0.17}],
             "video_durations_s": [10.0], "scene_lengths_s": [2.5, 2.5, 2.5, 2.5],
             "dialogues_by_kind": [{"kind": "multi_question", "dialogues": 2}],
             "questions_per_dialogue": [{"questions": 2, "dialogues": 2}],
             "answers_per_question": [{"answers": 2, "questions": 2}],
             "reply_window_length_s": [1.8, 2.5, 1.8, 2.5],
             "no_reply_share": {"1s_per_frame": [0.6, 0.6], "2s_per_frame": [1 / 3, 1 / 3]},
             "quarantine_by_stage_reason": [{"stage": "probe", "reason": "not_a_video", "kind": "skip", "items": 1}]}
    card = render_card(root, index, {}, "openai", stats=stats, figures=["dialogues.png"])
    assert _header(card)["license"] == "cc-by-4.0"
    assert "Every source video is under `cc-by-4.0`." in card
    assert "| web | CC-BY-4.0 | 1 | 0.17 |" in card and "| 2 | 2 |" in card
    assert "- scene lengths s: n=4, min 2.50, median 2.50, max 2.50" in card
    assert "at 2s per frame: n=2, min 0.33" in card
    assert "| probe | not_a_video | skip | 1 |" in card  # from the stats when the summary has none
    assert "![dialogues](figures/dialogues.png)" in card and "`curation.corpus.stats` failed" not in card
