"""The whole build under faults: a misbehaving LLM, flaky downloads and every bad input at once.

One module-wide world runs the real flow twice (each run costs most of a minute here): first with
the LLM server failing on a schedule, videos served over HTTP by a server that drops connections
mid-file or answers 500 before recovering, and a manifest mixing good rows with every bad input of
the curation issue; then again after the LLM server has recovered. Each test checks one promise on
those two runs. The safety scans at the bottom are fast and need no flow run.
"""

from __future__ import annotations

import ast
import hashlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from curation.config import load_config
from curation.corpus.catalogue import sync_catalogue
from curation.corpus.results import read_result, result_path
from curation.corpus.reuse import redo_reason
from curation.manifest import ManifestRow, read_manifest
from curation.text.dialogue_validation import dialogue_problems
from curation.text.dialogues import DialogueConfig
from curation.video.acquire import AcquireConfig, acquire_video
from schemas.arrow import from_table, read_parquet
from schemas.records import Dialogue, Segment
from tests import generated_corpus as gc
from tests.bad_inputs import BAD_INPUTS, always_500_name, make_bad_files
from tests.flaky_http import FlakyFileServer
from tests.openai_stub import StubServer
from tests.scripted_llm import FaultPlan, kind_of

GOOD_VIDEOS = 8
# What an LLM fault may leave behind (the reasons curation.llm declares, curation.text.dialogues,
# curation.text.descriptions): anything else on a good video is a bug, not a survived fault.
LLM_REASONS = {"llm_failed", "llm_empty", "llm_invalid_json", "llm_rejected", "invalid_dialogue",
               "no_valid_dialogue", "no_captions"}
class Combined:
    """Dialogue requests fault on `first`'s schedule, captions on `captions'`, repairs on `repairs'`."""

    def __init__(self, first: FaultPlan, captions: FaultPlan, repairs: FaultPlan):
        self.plans = {"first": first, "captions": captions, "repairs": repairs}

    def __call__(self, body):
        if kind_of(body) == "scene_caption":
            return self.plans["captions"](body)
        repair = any(m.get("role") == "assistant" for m in body["messages"])  # carries the first answer
        return self.plans["repairs" if repair else "first"](body)


def _records(out: Path, cls: type) -> list:
    """A table's records through index.json, as the trainer would read them."""
    index = json.loads((out / "index.json").read_text())
    return [r for s in index["shards"] if s["table"] == cls.table
            for r in from_table(read_parquet(out / s["path"]), cls)]


def _snapshot(out: Path) -> dict:
    return {t: gc.table_rows(out, t) for t in ("videos", "segments", "dialogues", "quarantine")} | {
        "summary": json.loads((out / "summary.json").read_text()),
        "dialogue_records": _records(out, Dialogue), "segment_records": _records(out, Segment)}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    videos = gc.make_videos(folder / "videos", GOOD_VIDEOS)
    served = folder / "served"
    served.mkdir()
    for video in videos:
        (served / video.name).hardlink_to(video)
    always_bad = folder / "always-bad"
    always_bad.mkdir()
    err_name = always_500_name()
    (always_bad / err_name).hardlink_to(videos[0])
    bad = make_bad_files(folder / "bad", videos[0])

    # Dialogue requests fail on every try, so transient faults end as llm_failed (and the empty,
    # truncated, bad-citation ones go through repair); caption requests fail once and are survived
    # by the client's retries; repairs fail sometimes (invalid_dialogue, which is final).
    first = FaultPlan(rate=0.9, attempts=100, slow_s=4.0)
    captions = FaultPlan(rate=0.6, attempts=1, kinds=("429", "500", "slow"), slow_s=4.0)
    repairs = FaultPlan(rate=0.3, attempts=1, kinds=("truncated", "bad_ids"))
    hang = socket.create_server(("127.0.0.1", 0), backlog=16)  # accepts connections, never answers
    with FlakyFileServer(served, rate=1.0, failures=2) as files, \
            FlakyFileServer(always_bad, rate=1.0, failures=10**6) as failing, \
            StubServer(Combined(first, captions, repairs)) as llm, hang:
        manifest = gc.write_manifest(folder, videos, [
            *({"video_id": name, "uri": str(path)} for name, path in bad.items()),
            {"video_id": "http_404", "uri": f"{files.url}/missing.mp4"},
            {"video_id": "http_500", "uri": f"{failing.url}/{err_name}"},
            {"video_id": "http_timeout", "uri": f"http://127.0.0.1:{hang.getsockname()[1]}/slow.mp4"},
            {"video_id": "../escape", "uri": str(videos[0])},
            {"video_id": "bad_scheme", "uri": "ftp://127.0.0.1/video.mp4"},
            {"video_id": videos[1].stem, "uri": str(bad["text_as_mp4"])},  # a duplicate id: first row wins
        ])
        rows = [json.loads(line) for line in manifest.read_text().splitlines()]
        for row in rows[:GOOD_VIDEOS]:  # the good videos come over flaky HTTP
            row["uri"] = f"{files.url}/{Path(row['uri']).name}"
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))

        out = folder / "corpus"
        config = gc.write_config(folder, manifest, out, llm.url, **{
            "llm.timeout_s": 2.0, "llm.max_retries": 1, "acquire.timeout_s": 1.0, "acquire.retries": 3,
            "acquire.backoff_s": 0.05})
        run1 = gc.run_flow(config)
        assert run1.returncode == 0, run1.stdout[-2000:] + run1.stderr[-4000:]
        after_faults = _snapshot(out)
        results_dir = out / "work" / "results"
        fingerprint = load_config(config).fingerprint()
        ids = [r["video_id"] for r in rows[:GOOD_VIDEOS]] + [n for n in BAD_INPUTS if n != "../escape"]
        first_results = {i: read_result(results_dir, i) for i in ids}
        catalogue = sync_catalogue(results_dir)  # what the flow's resume check reads
        assert {i for i, r in first_results.items() if r is not None} == {i for i in ids if i in catalogue}
        manifest_rows = {row.video_id: row for row in read_manifest(manifest).rows}
        retryable = {i for i in first_results
                     if redo_reason(catalogue.get(i), manifest_rows[i], fingerprint, out,
                                    load_config(config).verdict_limits()) is not None}
        final_bytes = {i: result_path(results_dir, i).read_bytes() for i in ids if i not in retryable}

        first.rate = captions.rate = repairs.rate = 0.0  # the server has recovered
        run2 = gc.run_flow(config)
        assert run2.returncode == 0, run2.stdout[-2000:] + run2.stderr[-4000:]
        yield {"out": out, "videos": videos, "good_ids": [v.stem for v in videos], "bad": bad,
               "after_faults": after_faults, "after_recovery": _snapshot(out), "retryable": retryable,
               "final_bytes": final_bytes, "results_dir": results_dir, "llm_faults": dict(first.injected),
               "caption_faults": dict(captions.injected),
               "repair_faults": dict(repairs.injected), "download_faults": dict(files.injected)}


def _dialogues_valid(snapshot: dict) -> None:
    cfg = DialogueConfig()
    segments = snapshot["segment_records"]
    dialogues = sorted(snapshot["dialogue_records"],
                       key=lambda d: (d.video_id, int(d.dialogue_id.rsplit("-d", 1)[1])))
    assert len(dialogues) == len(snapshot["dialogues"]) > 0
    earlier: dict[str, list[str]] = {}
    for dialogue in dialogues:
        asked = earlier.setdefault(dialogue.video_id, [])
        assert dialogue_problems(dialogue, segments, cfg, asked) == [], dialogue.dialogue_id
        asked += [t.text for t in dialogue.user_turns]


@pytest.mark.slow
def test_llm_faults_leave_valid_dialogues_or_documented_quarantine(world):
    assert set(world["llm_faults"]) == {"429", "500", "truncated", "empty", "bad_ids", "slow"}, world["llm_faults"]
    assert world["caption_faults"], "caption requests should have been faulted too"
    snap = world["after_faults"]
    shards = sorted((world["out"]).rglob("*.parquet"))
    check = subprocess.run([sys.executable, "-m", "schemas", "validate", *map(str, shards)], cwd=gc.ROOT,
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    _dialogues_valid(snap)
    with_dialogues = {d["video_id"] for d in snap["dialogues"]}
    for video_id in world["good_ids"]:
        rows = [q for q in snap["quarantine"] if q["video_id"] == video_id and q["reason"] != "duplicate_id"]
        if video_id not in with_dialogues:
            assert rows, f"{video_id} has neither dialogues nor a quarantine row"
        for q in rows:
            assert q["stage"] in ("descriptions", "dialogues") and q["reason"] in LLM_REASONS, q
            assert q["detail"], q
    # The schedule is strong enough that some videos really lost dialogues to the outage.
    assert {q["reason"] for q in snap["quarantine"]} & {"llm_failed", "invalid_dialogue", "llm_invalid_json"}


@pytest.mark.slow
def test_a_rerun_after_recovery_redoes_only_the_retryable_videos(world):
    before, after = world["after_faults"]["summary"], world["after_recovery"]["summary"]
    assert world["retryable"], "the faults should have left some videos to redo"
    assert after["new_this_run"] == len(world["retryable"]), (after, world["retryable"])
    for video_id, data in world["final_bytes"].items():  # finished results are not rewritten
        assert result_path(world["results_dir"], video_id).read_bytes() == data, video_id
    assert after["with_dialogues"] >= before["with_dialogues"]
    assert {d["video_id"] for d in world["after_recovery"]["dialogues"]} == set(world["good_ids"])
    assert not [q for q in world["after_recovery"]["quarantine"] if q["reason"] == "llm_failed"]
    _dialogues_valid(world["after_recovery"])


@pytest.mark.slow
def test_downloads_that_fail_mid_file_are_resumed_and_complete(world):
    assert world["download_faults"]["drop_mid_file"] and world["download_faults"]["http_500"], world["download_faults"]
    videos = {v["video_id"]: v for v in world["after_faults"]["videos"]}
    for source in world["videos"]:
        row = videos[source.stem]
        expected = hashlib.sha256(source.read_bytes()).hexdigest()
        assert row["sha256"] == expected and row["bytes"] == source.stat().st_size
        assert hashlib.sha256((world["out"] / row["path"]).read_bytes()).hexdigest() == expected
    acquire_rows = [q for q in world["after_faults"]["quarantine"]
                    if q["stage"] == "acquire" and q["video_id"] in world["good_ids"]]
    assert acquire_rows == []


@pytest.mark.slow
def test_every_bad_input_ends_as_a_readable_quarantine_row(world):
    for snap in (world["after_faults"], world["after_recovery"]):
        quarantine = snap["quarantine"]
        for item, (stage, reasons) in BAD_INPUTS.items():
            rows = [q for q in quarantine if item in (q["item_id"], q["video_id"])]
            assert len(rows) == 1, (item, rows)
            assert rows[0]["stage"] == stage and rows[0]["reason"] in reasons, rows[0]
            assert len(rows[0]["detail"]) > 5, rows[0]
        duplicate = [q for q in quarantine if q["reason"] == "duplicate_id"]
        # Named apart from the first row's id, which its own video may need in this table too.
        assert [(q["stage"], q["video_id"]) for q in duplicate] == [("manifest", world["good_ids"][1])]
        assert duplicate[0]["item_id"].startswith(world["good_ids"][1] + "@line-")
        # Nothing bad reached the video table, and the duplicate did not replace the good row.
        assert sorted(v["video_id"] for v in snap["videos"]) == sorted(world["good_ids"])
    escaped = [p for p in world["out"].parent.rglob("*escape*")]
    assert escaped == []


# --- safety scans: fast, no flow run -------------------------------------------------------------
SCANNED = ("curation", "flows", "training", "schemas")
RUNNERS = {("subprocess", n) for n in ("run", "call", "check_call", "check_output", "Popen",
                                       "getoutput", "getstatusoutput")} | {("os", "system"), ("os", "popen")}


def _shell_calls(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value
        name = (owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", ""), node.func.attr)
        if name not in RUNNERS:
            continue
        if name in {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"), ("subprocess", "getstatusoutput")}:
            found.append(f"line {node.lineno}: {'.'.join(name)} always runs a shell")
            continue
        if any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
               for k in node.keywords):
            found.append(f"line {node.lineno}: {'.'.join(name)}(shell=...)")
        command = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "args"), None)
        if isinstance(command, ast.Constant | ast.JoinedStr | ast.BinOp):
            found.append(f"line {node.lineno}: {'.'.join(name)} given a string command")
    return found


def test_subprocesses_get_argument_lists_never_shell_strings():
    offenders = []
    files = [p for d in SCANNED for p in (gc.ROOT / d).rglob("*.py")]
    assert len(files) > 20
    for path in files:
        offenders += [f"{path.relative_to(gc.ROOT)} {hit}" for hit in _shell_calls(ast.parse(path.read_text()))]
    assert offenders == []


def test_the_shell_scan_catches_what_it_should():
    bad = ("import os, subprocess\nsubprocess.run('ls', shell=True)\nos.system('ls')\n"
           "subprocess.check_output(f'ls {x}')\nsubprocess.Popen(['ls'], shell=True)\n")
    assert len(_shell_calls(ast.parse(bad))) == 5
    assert _shell_calls(ast.parse("import subprocess\nsubprocess.run(['ls', x], check=True)\n")) == []


@pytest.mark.parametrize("uri", ["ftp://127.0.0.1/video.mp4", "gopher://127.0.0.1/v.mp4", "s3://bucket/v.mp4",
                                 "file:///etc/passwd"])
def test_acquire_refuses_schemes_outside_the_allowlist_and_writes_nothing(tmp_path, uri):
    cfg = AcquireConfig(allowed_schemes={"http", "https"})
    out = tmp_path / "videos"
    skip = acquire_video(ManifestRow(video_id="v1", uri=uri), out, cfg)
    assert (skip.stage, skip.reason) == ("acquire", "scheme_not_allowed")
    assert not out.exists() or list(out.iterdir()) == []


def test_acquire_refuses_ids_that_leave_the_output_folder(tmp_path):
    video = gc.make_videos(tmp_path / "src", 1)[0]
    for video_id in ("../up", "a/b", "/abs", ".."):
        row = ManifestRow.model_construct(video_id=video_id, uri=str(video), source="web", licence=None,
                                          metadata={}, sha256=None, text_uri=None, text_format=None,
                                          text_origin=None)
        skip = acquire_video(row, tmp_path / "out" / "videos")
        assert (skip.stage, skip.reason) == ("acquire", "unsafe_id"), video_id
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [video.name]


def test_an_oversized_http_body_is_refused_under_the_size_cap(tmp_path):
    video = gc.make_videos(tmp_path / "src", 1)[0]
    size = video.stat().st_size
    with FlakyFileServer(video.parent, rate=0.0) as files:
        row = ManifestRow(video_id="big", uri=f"{files.url}/{video.name}")
        out = tmp_path / "videos"
        skip = acquire_video(row, out, AcquireConfig(max_bytes=size - 1, retries=0))
        assert (skip.stage, skip.reason) == ("acquire", "too_large") and str(size - 1) in skip.detail
        assert [p for p in out.iterdir() if p.is_file()] == []  # no part file left behind
        fetched = acquire_video(row, out, AcquireConfig(max_bytes=size, retries=0))
        assert fetched.bytes == size

