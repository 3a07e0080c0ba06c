"""A stored result is reused only if everything that made it is unchanged: the manifest row (uri,
licence, source, metadata, sha256, text_uri and its text), the video file, the acquired copy and
the config; a changed local source is copied again, so the redone row carries the new sha256."""

from __future__ import annotations

import os
import shutil

import pytest

from curation.corpus.catalogue import entry_of, sync_catalogue
from curation.corpus.results import VideoResult, write_result
from curation.corpus.reuse import redo_reason, row_inputs
from curation.hashing import sha256_file
from curation.manifest import ManifestRow
from curation.video.acquire import acquire_video
from schemas.records import Video
from tests.conftest import SAMPLES

GOOD = SAMPLES / "videos" / "bikes.mp4"
OTHER = SAMPLES / "videos" / "generated_four_scenes.mp4"


@pytest.fixture
def world(tmp_path):
    """Run 1 of the issue's row: good.mp4 under CC-BY-NC-4.0, with a narration file."""
    shutil.copy(GOOD, tmp_path / "good.mp4")
    shutil.copy(OTHER, tmp_path / "other.mp4")
    (tmp_path / "good.csv").write_text("start,end,text\n0,2,a man walks past\n")
    row = ManifestRow(video_id="good", uri=str(tmp_path / "good.mp4"), licence="CC-BY-NC-4.0",
                      text_uri=str(tmp_path / "good.csv"), metadata={"title": "bikes"})
    corpus = tmp_path / "corpus"
    inputs = row_inputs(row)  # taken before the first stage, as the pipeline does
    acquired = acquire_video(row, corpus / "videos")
    video = Video(video_id="good", source=row.source, uri=row.uri, licence=row.licence,
                  path=str(acquired.path.relative_to(corpus)), sha256=acquired.sha256, bytes=acquired.bytes,
                  duration_s=10.0, fps=25.0, width=320, height=240, codec="h264", has_audio=False)
    write_result(corpus / "work" / "results", VideoResult(video_id="good", config_fingerprint="fp", inputs=inputs,
                                                          video=video))
    entry = sync_catalogue(corpus / "work" / "results").get("good")
    return {"dir": tmp_path, "row": row, "corpus": corpus, "entry": entry, "acquired": acquired}


def test_an_unchanged_row_is_reused(world):
    assert redo_reason(world["entry"], world["row"], "fp", world["corpus"]) is None


@pytest.mark.parametrize("change", [{"licence": "CC0-1.0"}, {"source": "ego"}, {"metadata": {"title": "other"}},
                                    {"sha256": "0" * 64}, {"text_format": "narration"}, {"text_origin": "asr"}])
def test_any_change_to_the_row_redoes_it(world, change):
    row = world["row"].model_copy(update=change)
    assert redo_reason(world["entry"], row, "fp", world["corpus"]) == "row"


def test_the_issues_case_a_new_uri_and_licence_are_redone_and_fetched_again(world):
    row = world["row"].model_copy(update={"uri": str(world["dir"] / "other.mp4"), "licence": "CC0-1.0"})
    assert redo_reason(world["entry"], row, "fp", world["corpus"]) == "row"
    again = acquire_video(row, world["corpus"] / "videos")
    assert again.sha256 == sha256_file(OTHER) != world["acquired"].sha256


def test_the_text_the_row_points_to_is_part_of_what_made_the_result(world):
    (world["dir"] / "good.csv").write_text("start,end,text\n0,2,a woman rides past\n")
    assert redo_reason(world["entry"], world["row"], "fp", world["corpus"]) == "text"
    (world["dir"] / "good.csv").unlink()
    assert redo_reason(world["entry"], world["row"], "fp", world["corpus"]) == "text"


def test_a_local_video_replaced_at_the_same_path_is_redone_and_copied_again(world):
    source = world["dir"] / "good.mp4"
    os.replace(world["dir"] / "other.mp4", source)  # same path, other bytes (and a new inode)
    assert redo_reason(world["entry"], world["row"], "fp", world["corpus"]) == "video"
    again = acquire_video(world["row"], world["corpus"] / "videos")
    assert again.sha256 == sha256_file(OTHER) != world["acquired"].sha256


def test_a_deleted_acquired_copy_is_redone(world):
    world["acquired"].path.unlink()
    assert redo_reason(world["entry"], world["row"], "fp", world["corpus"]) == "copy"


def test_another_config_or_an_older_result_without_inputs_is_redone(world):
    assert redo_reason(world["entry"], world["row"], "fp2", world["corpus"]) == "config"
    old = VideoResult(video_id="good", config_fingerprint="fp")  # written before inputs were kept
    assert redo_reason(entry_of(old, "0" * 64), world["row"], "fp", world["corpus"]) == "row"
    assert redo_reason(None, world["row"], "fp", world["corpus"]) == "new"


def test_a_quarantine_verdict_made_under_other_limits_is_made_again(world):
    import flows.video_pipeline  # noqa: F401  declares `stage_timeout` final, as it is in every build
    from curation.config import CorpusConfig
    from curation.skips import Skip

    def config(**settings) -> CorpusConfig:
        return CorpusConfig(manifest="m.jsonl", **settings)

    row, small = world["row"], config(acquire={"max_bytes": 1000})
    too_large = Skip("acquire", "too_large", "over 1000 bytes").to_quarantine("good", "good")
    timed_out = Skip("scenes", "stage_timeout", "over 300 s").to_quarantine("good", "good")
    for verdict, changed, unrelated in ((too_large, config(acquire={"max_bytes": 10**9}),
                                         config(acquire={"max_bytes": 1000}, watchdog={"stage_base_s": 900})),
                                        (timed_out, config(acquire={"max_bytes": 1000}, watchdog={"stage_base_s": 900}),
                                         config(acquire={"max_bytes": 10**9}))):
        result = VideoResult(video_id="good", config_fingerprint="fp", inputs=row_inputs(row, small.verdict_limits()),
                             quarantine=[verdict])
        entry = entry_of(result, "0" * 64)
        assert redo_reason(entry, row, "fp", world["corpus"], small.verdict_limits()) is None  # final
        assert changed.fingerprint() == small.fingerprint()  # no finished video is redone for it
        assert redo_reason(entry, row, "fp", world["corpus"], changed.verdict_limits()) == "limits", verdict.reason
        assert redo_reason(entry, row, "fp", world["corpus"], unrelated.verdict_limits()) is None, verdict.reason
        finished = entry_of(result.model_copy(update={"quarantine": []}), "0" * 64)
        assert redo_reason(finished, row, "fp", world["corpus"], changed.verdict_limits()) is None
