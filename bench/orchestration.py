"""Orchestration overhead of `build-corpus` per video, on tiny items whose stages do nothing.

Runs the real flow (Prefect's ephemeral API, real batch tasks, real result files, real shard
compaction, the dataset card) with every stage function replaced by a constant-time stand-in, at
1k and 10k items, each size in a fresh process so peak RSS is its own. The baseline, measured in
the same run, is the same stand-in pipeline called in a plain loop (result files, run summary,
shards and card included, no Prefect); both must publish the same rows per table.

    python -m bench.orchestration [--sizes 1000 10000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from schemas.cli import ArgumentParser


def _patch_stages(corpus_root: Path) -> None:
    import flows.video_pipeline as vp
    from curation.text.dialogues import DialogueOutcome
    from curation.video.acquire import AcquiredVideo
    from curation.video.probe import VideoProbe
    from curation.video.single_pass import DecodedVideo
    from schemas import Dialogue, Provenance, ReferenceAnswer, Scene, Segment, UserTurn

    videos = corpus_root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    stub = videos / "stub.mp4"
    stub.write_bytes(b"\0" * 16)
    probe = VideoProbe(duration_s=60.0, fps=25.0, width=640, height=480, codec="h264", has_audio=False,
                       container="mp4")

    def dialogue(video, segments, scenes, client, cfg):
        d = Dialogue(
            dialogue_id=f"{video.video_id}-sq-0", video_id=video.video_id, kind="single_question", duration_s=60.0,
            user_turns=[UserTurn(question_id=f"{video.video_id}-sq-0-q0", time_s=0.0, text="What happens?")],
            references=[ReferenceAnswer(question_id=f"{video.video_id}-sq-0-q0", question="What happens?",
                                        answer="Something.", reply_span=(10.0, 20.0), evidence=[])],
            provenance=Provenance(generator="bench", model="none", prompt_version="0"))
        return DialogueOutcome(dialogues=[d], quarantined=[])

    vp.acquire_video = lambda row, d, cfg: AcquiredVideo(path=stub, sha256="0" * 64, bytes=16)
    vp.probe_video = lambda path: probe
    vp.admit = lambda p, source, cfg: None
    vp.decode_video = lambda path, vid, dur, *rest: DecodedVideo(
        [Scene(video_id=vid, scene_id=0, start_s=0, end_s=dur, detector="none")], [0.0], None)
    vp.describe_video = lambda video, path, scenes, source, client, cfg, counts=None, decoded=None: [Segment(
        segment_id=f"{video.video_id}-s0000", video_id=video.video_id, start_s=0, end_s=60, text="x",
        origin="caption")]
    vp.generate_dialogues = dialogue


def _write_inputs(root: Path, n: int) -> Path:
    manifest = root / "manifest.jsonl"
    with manifest.open("w") as out:
        for i in range(n):
            out.write(json.dumps({"video_id": f"v{i:06d}", "uri": f"https://example.invalid/{i}.mp4"}) + "\n")
    config = root / "config.yaml"
    config.write_text(f"manifest: {manifest}\noutput_dir: {root / 'corpus'}\nbatch_size: 500\n"
                      "llm: {backend: replay, model: none, replay_path: /dev/null}\n")
    return config


def measure(mode: str, n: int) -> dict:
    """Run in this (fresh) process: `flow` through Prefect, `loop` without it."""
    import flows.quiet  # noqa: F401

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = _write_inputs(root, n)
        _patch_stages(root / "corpus")
        # Imports are not orchestration: both modes pay them before the clock starts.
        from curation.config import load_config
        from curation.corpus.card import write_dataset_card
        from curation.corpus.catalogue import sync_catalogue
        from curation.corpus.results import write_result
        from curation.corpus.shards import build_shards
        from curation.manifest import read_manifest
        from flows.build_corpus import _client, build_corpus
        from flows.summary import RunSummary
        from flows.video_pipeline import Limits, PipelineContext, run_video

        started = time.perf_counter()
        if mode == "flow":
            build_corpus(config=str(config))
        else:
            cfg = load_config(config)
            ctx = PipelineContext(config=cfg, corpus_root=root / "corpus", client=_client(cfg.llm.model_dump_json()),
                                  limits=Limits.from_workers(cfg.workers), fingerprint=cfg.fingerprint())
            results_dir = root / "corpus" / "work" / "results"
            for row in read_manifest(cfg.manifest).rows:
                write_result(results_dir, run_video(row, ctx))
            # What the flow does after its batches: the run summary, the shards and the card.
            catalogue = sync_catalogue(results_dir)
            summary = RunSummary(new_this_run=n)
            for entry in catalogue:
                summary.add(entry)
            index = build_shards(results_dir, root / "corpus", cfg.shards, catalogue=catalogue)
            write_dataset_card(root / "corpus", index, summary.as_dict(), llm_backend=cfg.llm.backend)
        seconds = time.perf_counter() - started
        rows = json.loads((root / "corpus" / "index.json").read_text())["created_from"]["rows"]
        card = (root / "corpus" / "README.md").is_file()
    return {"mode": mode, "items": n, "seconds": seconds, "rows_per_table": rows, "card": card,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m bench.orchestration")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--child", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]))))
        return
    rows = []
    for n in args.sizes:
        for mode in ("loop", "flow"):
            out = subprocess.run([sys.executable, "-m", "bench.orchestration", "--child", mode, str(n)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'items':>7} {'mode':>5} {'s total':>8} {'ms/item':>8} {'peak RSS MiB':>13} {'flow/loop':>10}")
    by = {(r["items"], r["mode"]): r for r in rows}
    for n in args.sizes:
        for mode in ("loop", "flow"):
            r = by[(n, mode)]
            ratio = r["seconds"] / by[(n, "loop")]["seconds"]
            print(f"{n:>7} {mode:>5} {r['seconds']:>8.2f} {1000 * r['seconds'] / n:>8.2f} "
                  f"{r['peak_rss_mib']:>13.0f} {ratio:>10.2f}")
    for n in args.sizes:
        loop, flow = by[(n, "loop")], by[(n, "flow")]
        same = loop["rows_per_table"] == flow["rows_per_table"] and loop["card"] and flow["card"]
        print(f"{n:>7} items: same records both ways: {'yes' if same else 'NO'} (rows per table "
              f"{flow['rows_per_table']}; card written: loop {loop['card']}, flow {flow['card']})")
    flow = [by[(n, "flow")] for n in args.sizes]
    print("orchestration overhead per item (flow - loop): "
          + ", ".join(f"{n}: {1000 * (by[(n, 'flow')]['seconds'] - by[(n, 'loop')]['seconds']) / n:.2f} ms" for n in args.sizes))
    if len(flow) > 1:
        print(f"peak RSS growth {flow[0]['items']} -> {flow[-1]['items']} items: "
              f"{flow[-1]['peak_rss_mib'] - flow[0]['peak_rss_mib']:+.0f} MiB (goal: flat)")


if __name__ == "__main__":
    main()
