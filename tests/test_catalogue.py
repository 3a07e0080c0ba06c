"""The results catalogue: one read per new or changed result file, the same answers as the files."""

import hashlib
import sqlite3

from curation.corpus.catalogue import CATALOGUE_NAME, sync_catalogue
from curation.corpus.results import VideoResult, result_path, write_result
from schemas import Quarantine
from tests.test_results import FIXED_TIME, make_result


def test_each_result_file_is_read_once_until_it_changes(tmp_path):
    for i in range(6):
        write_result(tmp_path, make_result(f"v{i}", n_dialogues=1 + i % 2, quarantined=i % 3 == 0))
    first = sync_catalogue(tmp_path)
    assert first.read_files == 6 and [e.video_id for e in first] == [f"v{i}" for i in range(6)]
    again = sync_catalogue(tmp_path)
    assert again.read_files == 0 and again.entries == first.entries

    write_result(tmp_path, make_result("v2", n_dialogues=3))  # redone: a new file, read again
    write_result(tmp_path, make_result("v9"))
    result_path(tmp_path, "v4").unlink()
    third = sync_catalogue(tmp_path)
    assert third.read_files == 2
    assert sorted(third.entries) == ["v0", "v1", "v2", "v3", "v5", "v9"]
    assert third.get("v2").dialogue_kinds == {"multi_question": 3}
    assert third.get("v2").sha256 == hashlib.sha256(result_path(tmp_path, "v2").read_bytes()).hexdigest()


def test_entries_answer_what_the_flow_asks_without_the_files(tmp_path):
    crash = Quarantine(item_id="v1", video_id="v1", stage="scenes", reason="crash", kind="error",
                       detail="boom", created_at=FIXED_TIME)
    write_result(tmp_path, make_result("v0", n_dialogues=2, quarantined=1))
    write_result(tmp_path, VideoResult(video_id="v1", config_fingerprint="fp1", quarantine=[crash],
                                       stage_durations_s={"scenes": 1.5}))
    catalogue = sync_catalogue(tmp_path)
    v0, v1 = catalogue.get("v0"), catalogue.get("v1")
    assert (v0.config_fingerprint, v0.with_dialogues, v0.dialogue_kinds) == ("fp0", True, {"multi_question": 2})
    assert v0.quarantine == [("dialogues", "window_outside_video", "skip")]
    assert v0.stage_stats["durations_s"] == {"probe": 0.25}
    assert (v1.config_fingerprint, v1.with_dialogues, v1.quarantine) == ("fp1", False, [("scenes", "crash", "error")])
    assert "v2" not in catalogue and catalogue.get("v2") is None


def test_damaged_misplaced_and_temp_files_are_not_results(tmp_path):
    write_result(tmp_path, make_result("v0"))
    path = write_result(tmp_path, make_result("v1"))
    assert sorted(sync_catalogue(tmp_path).entries) == ["v0", "v1"]
    path.write_bytes(path.read_bytes()[:100])  # torn by hand: the video must be redone
    (path.parent / ".tmp-v7-x.part").write_text("{}")
    wrong_folder = tmp_path / "zz"
    wrong_folder.mkdir()
    (wrong_folder / "v0.json").write_bytes(result_path(tmp_path, "v0").read_bytes())
    assert sorted(sync_catalogue(tmp_path).entries) == ["v0"]
    write_result(tmp_path, make_result("v1"))
    assert sorted(sync_catalogue(tmp_path).entries) == ["v0", "v1"]


def test_a_damaged_catalogue_is_rebuilt_from_the_files(tmp_path):
    for i in range(3):
        write_result(tmp_path, make_result(f"v{i}"))
    good = sync_catalogue(tmp_path)
    (tmp_path / CATALOGUE_NAME).write_bytes(b"not a database at all" * 100)
    rebuilt = sync_catalogue(tmp_path)
    assert rebuilt.read_files == 3 and rebuilt.entries == good.entries
    with sqlite3.connect(tmp_path / CATALOGUE_NAME) as con:  # a row that lies about its file
        con.execute("update results set file_key = 'stale', sha256 = 'x' where video_id = 'v1'")
    fixed = sync_catalogue(tmp_path)
    assert fixed.read_files == 1 and fixed.entries == good.entries


def test_an_absent_store_is_empty_and_creates_nothing(tmp_path):
    catalogue = sync_catalogue(tmp_path / "results")
    assert len(catalogue) == 0 and list(catalogue) == []
    assert not (tmp_path / "results").exists()
