"""A batch on a worker that does not see the flow's output folder refuses to run, and says where."""

import json

from curation.config import load_config
from curation.corpus.run_marker import MARKER, unshared_output, write_run_marker
from flows.build_corpus import run_batch
from tests.conftest import SAMPLES


def test_the_marker_is_seen_through_the_same_folder_only(tmp_path):
    shared, elsewhere = tmp_path / "shared", tmp_path / "worker-disk"
    token = write_run_marker(shared)
    assert (shared / MARKER).read_text() == token and len(token) == 32
    assert unshared_output(shared, token) is None
    missing = unshared_output(elsewhere, token)
    assert missing["output_dir"] == str(elsewhere) and missing["marker"].startswith("unreadable")
    assert not elsewhere.exists()  # the check creates nothing
    # A folder left by an earlier run (a worker's own disk that once got a marker) is not enough.
    write_run_marker(elsewhere)
    assert unshared_output(elsewhere, token)["marker"] != token
    assert write_run_marker(shared) != token  # every run draws its own


def test_a_batch_that_cannot_see_the_run_marker_writes_nothing(tmp_path):
    out = tmp_path / "corpus"
    config = load_config(SAMPLES / "sample.yaml", {"output_dir": str(out)})
    row = json.loads((SAMPLES / "manifest.jsonl").read_text().splitlines()[0])
    answer = run_batch([row], config.model_dump_json(), run_token="0" * 32)
    assert answer["unshared"]["output_dir"] == str(out)
    assert answer["done"] == answer["failed"] == 0
    assert not out.exists()  # no result, video or cache written where the flow would not look
