"""A published row carries a URL, never the builder's local path (curation.corpus.public_rows)."""

from __future__ import annotations

import re

import pyarrow.parquet as pq
import pytest

from curation.corpus.public_rows import public_uri, redact_local_paths
from curation.corpus.results import read_result, write_result
from curation.corpus.shards import ShardConfig, update_shards
from schemas import Quarantine
from tests.test_results import FIXED_TIME, make_result

# An absolute POSIX path that is not part of a URL (what no published cell may hold).
LOCAL_PATH = re.compile(r"(?:^|[\s'\"(\[=,])/(?:[^\s/'\"]+/)+")


@pytest.mark.parametrize(("uri", "public"), [
    ("/home/me/samples/videos/bikes.mp4", "local:bikes.mp4"),
    ("file:///home/me/a%20b.mp4", "local:a b.mp4"),
    ("https://example.org/v/a.mp4", "https://example.org/v/a.mp4"),
    ("https://me:secret@example.org/a.mp4?X-Amz-Signature=abc&X-Amz-Credential=k&part=2",
     "https://example.org/a.mp4?part=2"),
    ("https://www.youtube.com/watch?v=abc", "https://www.youtube.com/watch?v=abc"),
    ("youtube:abc", "youtube:abc"),
    ("s3://bucket/clips/a.mp4", "s3://bucket/clips/a.mp4"),
])
def test_public_uri_keeps_urls_and_names_a_local_file_by_its_name_only(uri, public):
    assert public_uri(uri) == public


@pytest.mark.parametrize(("detail", "public"), [
    ("/home/me/samples/bad/empty.mp4 has zero bytes", "empty.mp4 has zero bytes"),
    ("[Errno 2] No such file or directory: '/tmp/x/a.mp4'", "[Errno 2] No such file or directory: 'a.mp4'"),
    ('File "/home/me/repo/curation/video/probe.py", line 3', 'File "probe.py", line 3'),
    ("file:///home/me/a.mp4: not a video", "a.mp4: not a video"),
    ("HTTP 404 for https://example.org/a/b.mp4", "HTTP 404 for https://example.org/a/b.mp4"),
    ("10.0 s < 30 s for web; ratio 1/2", "10.0 s < 30 s for web; ratio 1/2"),
])
def test_local_paths_in_a_detail_are_cut_to_their_last_component(detail, public):
    assert redact_local_paths(detail) == public


def test_shards_publish_the_public_form_and_results_keep_the_builders(tmp_path):
    results = tmp_path / "work" / "results"
    result = make_result("vid-1", quarantined=1)
    local = tmp_path / "clips" / "vid-1.mp4"
    bad = Quarantine(item_id="vid-1-x", video_id="vid-1", stage="probe", reason="not_video",
                     detail=f"{local}: first bytes are not a known video container", created_at=FIXED_TIME)
    result = result.model_copy(update={"video": result.video.model_copy(update={"uri": str(local)}),
                                       "quarantine": [*result.quarantine, bad]})
    write_result(results, result)
    index = update_shards(results, tmp_path, ShardConfig(buckets=1)).index
    rows = {table: [r for s in index["shards"] if s["table"] == table
                    for r in pq.read_table(tmp_path / s["path"]).to_pylist()] for table in ("videos", "quarantine")}
    assert [v["uri"] for v in rows["videos"]] == ["local:vid-1.mp4"]
    assert "vid-1.mp4: first bytes are not a known video container" in [q["detail"] for q in rows["quarantine"]]
    assert str(tmp_path) not in repr(rows)
    assert read_result(results, "vid-1").video.uri == str(local)  # the builder's cache keeps it
