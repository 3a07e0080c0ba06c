"""push-to-hub against a real loopback HTTP server implementing the Hub endpoints the upload uses
(`tests/hub_stub.py`): create repo, paths-info, validate-yaml, preupload, LFS batch + PUT, commit."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import constants

from curation.corpus.hub_upload import HubPushError, plan_upload, push_corpus
from curation.hashing import sha256_file
from tests.conftest import ROOT, dialogue_row
from tests.hub_stub import HubStub
from tests.sample_corpus import build_corpus

TOKEN = "hf_plantedS3cretTokenForTheStubHub42"
REPO = "someone/proactive-corpus"


@pytest.fixture(autouse=True)
def hub_env(monkeypatch, tmp_path):
    # The stub speaks LFS, not Xet; the token comes from the environment as in production.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


@pytest.fixture(scope="module")
def corpus_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("push") / "corpus"
    build_corpus(root, {"train": [dialogue_row()], "validation": [dialogue_row(dialogue_id="bikes-mq-1")]},
                 ["bikes"])
    (root / "README.md").write_text("---\nlicense: unknown\n---\n\n# card\n\n"
                                    + "".join(f"![{n}](figures/{n}.png)\n" for n in ("a", "b", "c")))
    (root / "figures").mkdir()
    for name in ("a", "b", "c", "dialogue_viewer"):  # the last: a frame strip the card does not show
        (root / "figures" / f"{name}.png").write_bytes(b"\x89PNG fake " + name.encode() * 50)
    for private in ("work/results/bikes.json", "llm_cache/ab/cd.json", "data/dialogues/.tmp-x.parquet"):
        (root / private).parent.mkdir(parents=True, exist_ok=True)
        (root / private).write_text("{}")
    return root


@pytest.fixture
def corpus(corpus_template, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(corpus_template, tmp_path / "corpus"))


def test_plan_sends_shards_card_index_figures_never_videos_work_or_caches(corpus):
    (corpus / "data" / "dialogues" / "train-stale.parquet").write_bytes(b"an older build's shard")
    paths = [i.path_in_repo for i in plan_upload(corpus)]
    index = json.loads((corpus / "index.json").read_text())
    # What the index and the card list, nothing else: no stale shard, no frame image of a video.
    assert set(paths) == {s["path"] for s in index["shards"]} | {
        "index.json", "README.md", "figures/a.png", "figures/b.png", "figures/c.png"}
    assert paths[-2:] == ["index.json", "README.md"]  # last: they name the shards
    with_videos = [i.path_in_repo for i in plan_upload(corpus, include_videos=True)]
    assert set(with_videos) - set(paths) == {"videos/bikes.mp4"}
    assert all(i.sha256 == sha256_file(i.local_path) and i.bytes == i.local_path.stat().st_size
               for i in plan_upload(corpus))


def test_first_push_uploads_everything_and_a_second_uploads_nothing(corpus):
    plan = [i.path_in_repo for i in plan_upload(corpus)]
    with HubStub() as hub:
        first = push_corpus(corpus, REPO, endpoint=hub.endpoint, files_per_commit=3)
        assert first.uploaded == plan and first.skipped_same == []
        assert len(first.commits) == -(-len(plan) // 3)
        files = hub.files(REPO)
        assert {p: files[p] for p in plan} == {p: (corpus / p).read_bytes() for p in plan}
        assert hub.state.private[f"datasets/{REPO}"] is True
        lfs = hub.state.lfs_paths[f"datasets/{REPO}"]
        assert {p for p in plan if p.endswith(".parquet")} <= lfs and "README.md" not in lfs

        writes_before = len(hub.writes())
        second = push_corpus(corpus, REPO, endpoint=hub.endpoint, files_per_commit=3)
        assert second.uploaded == [] and second.skipped_same == plan and second.bytes == 0
        assert [r.path for r in hub.writes()[writes_before:]] == ["/api/repos/create"]  # exist_ok, no commit


def test_a_push_broken_in_the_middle_resumes_with_only_the_rest(corpus):
    plan = [i.path_in_repo for i in plan_upload(corpus)]
    with HubStub() as hub:
        hub.state.fail_commit_numbers = {2}
        with pytest.raises(HubPushError, match="3 files committed before it; re-run to resume"):
            push_corpus(corpus, REPO, endpoint=hub.endpoint, files_per_commit=3)
        assert set(hub.files(REPO)) == set(plan[:3])
        resumed = push_corpus(corpus, REPO, endpoint=hub.endpoint, files_per_commit=3)
        assert resumed.skipped_same == plan[:3] and resumed.uploaded == plan[3:]
        assert {p: hub.files(REPO)[p] for p in plan} == {p: (corpus / p).read_bytes() for p in plan}


def test_dry_run_sends_no_write_and_lists_what_would_go(corpus):
    plan = [i.path_in_repo for i in plan_upload(corpus)]
    with HubStub() as hub:
        fresh = push_corpus(corpus, REPO, endpoint=hub.endpoint, dry_run=True)
        assert fresh.dry_run and not fresh.remote_checked and fresh.uploaded == plan
        assert fresh.bytes == sum(i.bytes for i in plan_upload(corpus))
        assert hub.writes() == [] and hub.state.repos == {}

        push_corpus(corpus, REPO, endpoint=hub.endpoint)
        (corpus / "README.md").write_text((corpus / "README.md").read_text() + "\nmore\n")
        before = len(hub.state.requests)
        changed = push_corpus(corpus, REPO, endpoint=hub.endpoint, dry_run=True)
        assert changed.remote_checked and changed.uploaded == ["README.md"]
        assert changed.skipped_same == [p for p in plan if p != "README.md"]
        assert [r for r in hub.state.requests[before:] if r.is_write] == []
        assert "more" not in hub.files(REPO)["README.md"].decode()
        assert "| `README.md` | would upload |" in changed.markdown(REPO)


def _rename_shard(corpus: Path, old: str, new: str) -> None:
    (corpus / old).rename(corpus / new)
    index = json.loads((corpus / "index.json").read_text())
    for shard in index["shards"]:
        shard["path"] = new if shard["path"] == old else shard["path"]
    (corpus / "index.json").write_text(json.dumps(index))


def test_a_rebuild_deletes_the_old_builds_shards_in_the_last_commit(corpus):
    old, new = "data/dialogues/train-00000.parquet", "data/dialogues/train-00001.parquet"
    with HubStub() as hub:
        push_corpus(corpus, REPO, endpoint=hub.endpoint)
        _rename_shard(corpus, old, new)  # a rebuild: shard names carry their content hash
        dry = push_corpus(corpus, REPO, endpoint=hub.endpoint, dry_run=True)
        assert dry.deleted == [old] and set(dry.uploaded) == {new, "index.json"}
        assert old in hub.files(REPO)
        kept = push_corpus(corpus, REPO, endpoint=hub.endpoint, delete_stale=False)
        assert kept.deleted == [] and old in hub.files(REPO)
        pruned = push_corpus(corpus, REPO, endpoint=hub.endpoint, files_per_commit=1)
        assert pruned.deleted == [old] and pruned.uploaded == [] and len(pruned.commits) == 1
        assert old not in hub.files(REPO) and new in hub.files(REPO)


def test_after_adding_a_video_a_dry_run_lists_only_the_files_that_changed(tmp_path):
    from curation.corpus.results import write_result
    from curation.corpus.shards import ShardConfig, build_shards, update_shards
    from tests.test_results import make_result

    results, corpus = tmp_path / "results", tmp_path / "corpus"
    cfg = ShardConfig(buckets=8, validation_share=0.3)
    for i in range(30):
        write_result(results, make_result(f"vid{i:04d}", n_dialogues=1 + i % 3, quarantined=i % 2))
    first = build_shards(results, corpus, cfg)
    with HubStub() as hub:
        push_corpus(corpus, REPO, endpoint=hub.endpoint)
        write_result(results, make_result("vid0030", quarantined=1))
        update = update_shards(results, corpus, cfg)
        writes = len(hub.writes())
        dry = push_corpus(corpus, REPO, endpoint=hub.endpoint, dry_run=True)
        assert hub.writes()[writes:] == []
    # One shard per table (the new video's bucket), then the index that names them.
    assert len(update.written) == 5
    assert dry.uploaded == sorted(update.written) + ["index.json"]
    # Files the new one replaces (none where its bucket had no rows of that split yet) go.
    assert dry.deleted == sorted(update.removed)
    assert len(dry.skipped_same) == len(first["shards"]) - len(update.removed)
    assert dry.bytes == sum((corpus / p).stat().st_size for p in dry.uploaded)


def test_the_token_is_sent_to_the_hub_and_appears_nowhere_else(corpus, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    with HubStub() as hub:
        hub.state.fail_commit_numbers = {1}
        with pytest.raises(HubPushError) as failure:
            push_corpus(corpus, REPO, endpoint=hub.endpoint, files_per_commit=2)
        report = push_corpus(corpus, REPO, endpoint=hub.endpoint, files_per_commit=2)
        dry = push_corpus(corpus, "someone/absent", endpoint=hub.endpoint, dry_run=True)
        sent = {r.authorization for r in hub.state.requests if not r.path.startswith("/lfs-upload/")}
    assert sent == {f"Bearer {TOKEN}"}
    error = failure.value
    texts = [str(error), repr(error), repr(error.__cause__), repr(error.__context__), repr(report),
             repr(dry), report.markdown(REPO), caplog.text, *capsys.readouterr()]
    assert error.__cause__ is None and error.__context__ is None
    assert "500" in str(error)
    assert [i for i, text in enumerate(texts) if TOKEN in text] == []


def test_an_explicit_token_is_scrubbed_from_errors_too(corpus):
    secret = "hf_explicitTokenPassedAsArgument99"
    with HubStub() as hub:
        hub.state.fail_commit_numbers = {1}
        with pytest.raises(HubPushError) as failure:
            push_corpus(corpus, REPO, endpoint=hub.endpoint, token=secret)
        assert {r.authorization for r in hub.state.requests if r.path == "/api/repos/create"} == {
            f"Bearer {secret}"}
    assert secret not in str(failure.value)


@pytest.mark.slow
def test_the_flow_cli_pushes_then_dry_runs_without_leaking_the_token(corpus, tmp_path):
    env = {**os.environ, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(tmp_path / "hf"),
           "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_LOGGING_LEVEL": "DEBUG"}
    env.pop("PREFECT_API_URL", None)
    with HubStub() as hub:
        cmd = [sys.executable, "-m", "flows.push_to_hub", "--corpus", str(corpus), "--repo-id", REPO,
               "--endpoint", hub.endpoint]
        push = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert push.returncode == 0, push.stderr[-3000:]
        assert f"uploaded {len(plan_upload(corpus))} files" in push.stdout
        writes = len(hub.writes())
        dry = subprocess.run([*cmd, "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert dry.returncode == 0, dry.stderr[-3000:]
        assert hub.writes()[writes:] == []
    assert f"would upload 0 files (0 bytes), {len(plan_upload(corpus))} already on the Hub" in dry.stdout
    assert "README.md" in dry.stderr + dry.stdout
    outputs = push.stdout + push.stderr + dry.stdout + dry.stderr
    assert TOKEN not in outputs
    home = tmp_path / "prefect"
    assert not [p for p in home.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]


@pytest.mark.slow
def test_a_push_the_hub_refuses_is_one_error_line_and_a_failed_run(corpus, tmp_path):
    env = {**os.environ, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(tmp_path / "hf"),
           "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    with HubStub() as hub:
        hub.state.fail_commit_numbers = {1}
        push = subprocess.run([sys.executable, "-m", "flows.push_to_hub", "--corpus", str(corpus), "--repo-id", REPO,
                               "--endpoint", hub.endpoint], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
    assert push.returncode == 1, push.stderr[-3000:]
    errors = [line for line in push.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: push-to-hub: push to {REPO} failed")
    # no Prefect traceback or ERROR record before it; the run itself is recorded Failed
    assert "Traceback" not in push.stderr and "| ERROR" not in push.stderr and TOKEN not in push.stderr
    assert "Finished in state Failed(" in push.stderr
