"""The whole build over a manifest mixing good videos with issue 14's hostile inputs, stopped by
SIGTERM halfway and run again: it ends, every manifest row is in `videos` (with dialogues) or in
`quarantine` with a reason, nothing is lost or hung, and the shards pass `python -m schemas validate`.

Run 1 keeps a download that never ends (a server trickling a byte every 0.2 s) in flight and is
sent SIGTERM once every other row has its result: it must exit within seconds with 143, keeping
those results. Run 2, with a small download budget, ends that row as `stage_timeout` and redoes
nothing else.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from curation.corpus.results import read_result
from tests import generated_corpus as gc
from tests.hostile_inputs import HostileServer, make_hostile_videos
from tests.openai_stub import StubServer
from tests.scripted_llm import FaultPlan

pytestmark = pytest.mark.slow

LONG_ID = "v" * 156
# row id -> the (stage, reason) it must end with; "dialogues" for a video that must get some;
# "video" for one that must pass every video stage (the scripted LLM's 30 look-alike captions of the
# ten-minute video make near-duplicate answers, so its dialogues may fail validation).
EXPECTED = {
    "long_gop": "dialogues", "vfr_one_keyframe": "dialogues", "held_frame": "dialogues",
    "sparse_long": "video", "audio_longer": "dialogues",
    "header_lies": ("probe", "truncated"),
    "meta_list": ("manifest", "invalid_row"), "bad\\ud800id": ("manifest", "unsafe_id"),
    "lic_surrogate": ("manifest", "invalid_row"), LONG_ID: ("manifest", "id_too_long"),
    "to_file": ("acquire", "redirect_refused"), "to_ftp": ("acquire", "redirect_refused"),
    "loop": ("acquire", "redirect_loop"),
    "nul_text": ("source_text", "bad_text_format"), "open_quote": ("source_text", "bad_text_format"),
    "unknown_text": ("source_text", "bad_text_format"),
    "stamped": ("dialogues", "forbidden_text"),
    "trickle": ("acquire", "stage_timeout"),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile-flow")
    good = gc.make_videos(folder / "videos", 3)
    hostile = make_hostile_videos(folder / "hostile")
    texts = {"nul_text": "start,end,text\n0,2,a grid\n2,4,bars\x00 slide\n",
             "open_quote": 'start,end,text\n0,2,"a grid of squares\n2,4,bars slide\n4,6,a sweep\n',
             "unknown_text": "SECRET-TOKEN-abc123 is not a transcript\nnor is this\n",
             "stamped": "start,end,text\n0.0,3.0,At 00:01 a grid of squares flickers.\n"
                        "3.0,6.0,At 00:04 colour bars hold still.\n6.0,8.0,At 00:07 a gradient sweeps.\n"}
    for name, text in texts.items():
        (folder / f"{name}.{'txt' if name == 'unknown_text' else 'csv'}").write_text(text)
    with StubServer(FaultPlan()) as llm, HostileServer() as web:
        rows = [{"video_id": name, "uri": str(hostile[name]), "source": "hostile"} for name in hostile]
        rows += [
            {"video_id": "meta_list", "uri": str(good[0]), "metadata": [1, 2]},
            {"video_id": "bad\ud800id", "uri": str(good[0])},
            {"video_id": "lic_surrogate", "uri": str(good[0]), "licence": "CC\ud800"},
            {"video_id": LONG_ID, "uri": str(good[0])},
            {"video_id": "to_file", "uri": f"{web.url}/to-file"},
            {"video_id": "to_ftp", "uri": f"{web.url}/to-ftp"},
            {"video_id": "loop", "uri": f"{web.url}/loop-a"},
            *({"video_id": name, "uri": str(good[1]), "text_uri": str(folder / f"{name}.csv"),
               "text_origin": "narration"} for name in ("nul_text", "open_quote", "stamped")),
            {"video_id": "unknown_text", "uri": str(good[1]), "text_uri": str(folder / "unknown_text.txt")},
            {"video_id": "trickle", "uri": f"{web.url}/trickle.mp4"},  # last: the batch still running at SIGTERM
        ]
        manifest = gc.write_manifest(folder, good, rows)
        out = folder / "corpus"
        settings = {"admission.min_height": 0, "admission.max_duration_s": 700, "acquire.retries": 1,
                    "acquire.backoff_s": 0.05, "acquire.check_content_type": False}
        config = gc.write_config(folder, manifest, out, llm.url, **settings)
        results = out / "work" / "results"
        # Every row the batches process, but the never-ending download.
        others = [v.stem for v in good] + [i for i, e in EXPECTED.items()
                                           if i != "trickle" and (isinstance(e, str) or e[0] != "manifest")]

        proc = gc.start_flow(config, folder / "run1.log")
        deadline = time.monotonic() + 540
        while not all(read_result(results, i) is not None for i in others):
            assert proc.poll() is None, (folder / "run1.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (folder / "run1.log").read_text()[-3000:]
            time.sleep(1.0)
        before = {i: read_result(results, i).model_dump_json() for i in others}
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        finally:
            gc.kill_group(proc)
        log1 = (folder / "run1.log").read_text()
        interrupted = {"code": code, "log": log1, "index": (out / "index.json").exists(),
                       "kept": all(read_result(results, i).model_dump_json() == before[i] for i in others),
                       "trickle": read_result(results, "trickle")}

        config2 = gc.write_config(folder, manifest, out, llm.url, **settings, **{"watchdog.acquire_s": 3})
        run2 = gc.run_flow(config2)
        assert run2.returncode == 0, run2.stdout[-2000:] + run2.stderr[-4000:]
        tables = {t: gc.table_rows(out, t) for t in ("videos", "dialogues", "quarantine")}
        summary = json.loads((out / "summary.json").read_text())
        yield {"out": out, "good": [v.stem for v in good], "interrupted": interrupted, "tables": tables,
               "summary": summary}


def test_sigterm_stops_the_run_within_seconds_and_keeps_finished_videos(world):
    run = world["interrupted"]
    assert run["code"] == 128 + signal.SIGTERM, run["log"][-3000:]
    assert "stopped by SIGTERM" in run["log"]
    assert not run["index"]  # no shards from a partial run
    assert run["kept"]  # every result finished before the signal is still there, unchanged
    assert run["trickle"] is None  # the interrupted video has no result: the next run does it
    assert world["summary"]["new_this_run"] == 1  # and only it


def test_every_manifest_row_ends_in_videos_or_quarantine(world):
    tables = world["tables"]
    with_dialogues = {d["video_id"] for d in tables["dialogues"]}
    videos = {v["video_id"] for v in tables["videos"]}
    quarantined = {}
    for q in tables["quarantine"]:
        quarantined.setdefault(q["item_id"], set()).add((q["stage"], q["reason"]))
        quarantined.setdefault(q["video_id"], set()).add((q["stage"], q["reason"]))
    for video_id in world["good"]:
        assert video_id in with_dialogues
    for video_id, expected in EXPECTED.items():
        if expected == "dialogues":
            assert video_id in with_dialogues, (video_id, quarantined.get(video_id))
        elif expected == "video":
            assert video_id in videos and {s for s, _ in quarantined.get(video_id, set())} <= {"dialogues"}
        else:
            assert expected in quarantined.get(video_id, set()), (video_id, quarantined.get(video_id))
    assert all(q["detail"] for q in tables["quarantine"])
    assert "SECRET" not in json.dumps(tables["quarantine"], default=str)  # details describe inputs, never quote them
    assert world["summary"]["counts"].get("text_filter_flagged", 0) >= 1


def test_the_shards_pass_the_schema_validator(world):
    shards = sorted(str(p) for p in (world["out"] / "data").rglob("*.parquet"))
    check = subprocess.run([sys.executable, "-m", "schemas", "validate", *shards], cwd=gc.ROOT,
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
