"""The ASR route through the real flow: the sample's narrated clip is transcribed and its sentences
become segments, scenes label them and the replayed dialogues cite them; its silent-speech
neighbour (a sine tone) is captioned with the reason; summary.json and the card count the routes;
a changed `asr:` setting redoes the video without transcribing it again."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from curation.corpus.results import read_result
from tests.conftest import SAMPLES, build_sample_corpus
from tests.speech_media import needs_asr

pytestmark = [pytest.mark.slow, needs_asr]


def _rows(corpus, table):
    index = json.loads((corpus / "index.json").read_text())
    return [r for s in index["shards"] if s["table"] == table for r in pq.read_table(corpus / s["path"]).to_pylist()]


def test_the_sample_routes_each_video_and_its_speech_flows_into_dialogues(sample_corpus):
    results = sample_corpus / "work" / "results"
    routes = {v: read_result(results, v).text_route for v in
              ("spoken_tour", "generated_six_scenes", "bikes", "bigbuckbunny", "generated_four_scenes")}
    assert {v: (r.route, r.reason) for v, r in routes.items()} == {
        "spoken_tour": ("asr", "speech_found"), "generated_six_scenes": ("captions", "no_speech"),
        "bikes": ("source_text", "text_uri"), "bigbuckbunny": ("source_text", "text_uri"),
        "generated_four_scenes": ("source_text", "text_uri")}
    assert "under 20% speech" in routes["generated_six_scenes"].detail  # the reason says which rule

    segments = [s for s in _rows(sample_corpus, "segments") if s["video_id"] == "spoken_tour"]
    assert len(segments) == 6 and {s["origin"] for s in segments} == {"asr"}
    assert [s["scene_id"] for s in segments] == [0, 0, 1, 1, 2, 2]  # scenes label ASR sentences too
    assert segments[2]["text"].startswith("Now the screen shows the classic")
    cited = {e for d in _rows(sample_corpus, "dialogues") if d["video_id"] == "spoken_tour"
             for r in d["references"] for e in r["evidence"]}
    assert cited and cited <= {s["segment_id"] for s in segments}

    summary = json.loads((sample_corpus / "summary.json").read_text())
    assert {(r["route"], r["reason"]): r["videos"] for r in summary["text_routes"]} == {
        ("source_text", "text_uri"): 3, ("asr", "speech_found"): 1, ("captions", "no_speech"): 1}
    card = (sample_corpus / "README.md").read_text()
    assert "## Text sources" in card and "| asr | speech_found | 1 |" in card


def test_a_changed_asr_setting_redoes_the_video_from_the_cached_transcript(sample_corpus, tmp_path):
    out = tmp_path / "corpus"
    shutil.copytree(sample_corpus, out)
    row = json.loads(next(line for line in (SAMPLES / "manifest.jsonl").read_text().splitlines()
                          if '"spoken_tour"' in line))
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps(row | {"uri": str(SAMPLES / row["uri"])}) + "\n")
    proc = build_sample_corpus(out, "--set", f"manifest={manifest}", "--set", "asr.route.min_avg_logprob=-0.8")
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["new_this_run"] == 1  # the setting is part of what decides reuse
    result = read_result(out / "work" / "results", "spoken_tour")
    assert result.counts["asr_from_cache"] == 1 and "asr_transcribed" not in result.counts
    assert result.text_route.route == "asr" and result.dialogues
