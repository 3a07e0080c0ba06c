"""Soak: the real flow over a few hundred generated videos with faults switched on.

    .venv/bin/python -m bench.soak --videos 300 --fault-rate 0.2

Videos are served by a loopback file server that drops connections mid-file or answers 500 on a
schedule (then recovers); the LLM is a scripted OpenAI-compatible server that answers 429/500,
truncated or empty JSON, citations of segments that do not exist, and slow answers on a
schedule; the manifest also carries every bad input of the curation issue. Reports videos
processed, faults injected and survived, rows lost (must be 0) and the flow's peak memory
(resident set of the flow process and its children, sampled every 0.2 s).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from schemas.cli import ArgumentParser
from tests import generated_corpus as gc
from tests.bad_inputs import make_bad_files
from tests.flaky_http import FlakyFileServer
from tests.openai_stub import StubServer
from tests.scripted_llm import FaultPlan

ROOT = Path(__file__).resolve().parents[1]


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants (Linux /proc), in MiB."""
    total_kib, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total_kib += next((int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:")), 0)
            for thread in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (thread / "children").read_text().split()]
        except (OSError, ValueError):
            continue  # the process ended while we looked
    return total_kib / 1024


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--fault-rate", type=float, default=0.2)
    parser.add_argument("--workdir", type=Path, default=None, help="kept after the run when given")
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / ".cache" / "soak-videos")
    args = parser.parse_args(argv)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="soak-"))
    started = time.perf_counter()
    videos = gc.make_videos(args.cache, args.videos)
    print(f"{len(videos)} generated videos ready in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    served = work / "served"
    served.mkdir(parents=True, exist_ok=True)
    for video in videos:
        target = served / video.name
        if not target.exists():
            target.hardlink_to(video)
    bad = make_bad_files(args.cache.parent / "soak-bad", videos[0])
    for path in bad.values():
        if not (served / path.name).exists():
            (served / path.name).hardlink_to(path)

    plan = FaultPlan(rate=args.fault_rate, slow_s=3.0)  # slower than llm.timeout_s: a timeout
    with FlakyFileServer(served, rate=args.fault_rate) as files, StubServer(plan) as llm:
        rows = [{"video_id": v.stem, "uri": f"{files.url}/{v.name}"} for v in videos]
        extra = [{"video_id": n, "uri": f"{files.url}/{p.name}"} for n, p in bad.items()]
        extra += [{"video_id": "http_404", "uri": f"{files.url}/missing.mp4"},
                  {"video_id": "../escape", "uri": f"{files.url}/{videos[0].name}"},
                  {"video_id": "bad_scheme", "uri": "ftp://example.invalid/x.mp4"},
                  {"video_id": rows[0]["video_id"], "uri": rows[0]["uri"]}]  # duplicate id
        manifest = gc.write_manifest(work, [Path(r["uri"]) for r in rows], extra)
        # write_manifest takes paths; rewrite uris to the flaky server's URLs.
        lines = [json.loads(x) for x in manifest.read_text().splitlines()]
        for line, row in zip(lines, rows, strict=False):
            line["uri"] = row["uri"]
        manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
        out = work / "corpus"
        config = gc.write_config(work, manifest, out, llm.url, batch_size=100,
                                 **{"workers.downloads": 8, "workers.llm": 8, "llm.max_in_flight": 16,
                                    "llm.timeout_s": 2.0, "acquire.backoff_s": 0.1})
        t0 = time.perf_counter()
        log = work / "flow.log"
        proc = gc.start_flow(config, log)
        peak_mib = 0.0
        while proc.poll() is None:  # sampled, so a spike shorter than the period can be missed
            peak_mib = max(peak_mib, tree_rss_mib(proc.pid))
            time.sleep(0.2)
        seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        print(log.read_text()[-6000:], file=sys.stderr)
        return 1

    summary = json.loads((out / "summary.json").read_text())
    dialogues = gc.table_rows(out, "dialogues")
    quarantine = gc.table_rows(out, "quarantine")
    finished = {d["video_id"] for d in dialogues}
    stopped = {q["video_id"] or q["item_id"] for q in quarantine if q["stage"] != "dialogues"}
    manifest_ids = {json.loads(x)["video_id"] for x in manifest.read_text().splitlines()}
    lost = sorted(manifest_ids - finished - stopped - {q["item_id"] for q in quarantine})
    acquired = {f"{v['video_id']}.mp4" for v in gc.table_rows(out, "videos")}
    duplicates = len(dialogues) - len({d["dialogue_id"] for d in dialogues})
    report = {
        "manifest_rows": len(lines), "videos_with_dialogues": len(finished), "dialogues": len(dialogues),
        "quarantined_items": len(quarantine),
        "quarantine_reasons": {f"{q['stage']}/{q['reason']}": q["count"] for q in summary.get("quarantined", [])},
        "llm_faults_injected": plan.injected, "llm_faults_injected_total": sum(plan.injected.values()),
        # retried and then answered well; the rest (bad JSON, bad citations) went through repair
        "llm_requests_faulted_then_answered": plan.survived(),
        "dialogues_quarantined": sum(q["stage"] == "dialogues" for q in quarantine),
        "download_faults_injected": files.injected,
        "download_faults_injected_total": sum(files.injected.values()),
        "good_videos_faulted_then_acquired": f"{len(acquired & files.faulted)} of "
                                             f"{len({v.name for v in videos} & files.faulted)}",
        "rows_lost": len(lost), "lost_ids": lost[:10], "duplicate_dialogues": duplicates,
        "seconds": round(seconds, 1), "peak_rss_mib_flow_tree": round(peak_mib, 1), "workdir": str(work) if args.workdir else None,
    }
    print(json.dumps(report, indent=2))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if not lost and not duplicates else 1


if __name__ == "__main__":
    sys.exit(main())
