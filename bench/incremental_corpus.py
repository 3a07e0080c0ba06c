"""The corpus side of a build at scale: a full build vs a re-run that adds one video.

Synthetic per-video results (`bench.synthetic_results`, about 10 KB each, written by
`write_result`) at 5k and 52k videos. Each measurement runs in a fresh process, so CPU time and
peak RSS are its own; imports are paid before the clock starts.

- full: from a store with no catalogue and no corpus: sync the catalogue (every file read once),
  the run summary from it, every shard written.
- rerun: the same corpus plus one new result: sync (a `stat` per file, one read), summary,
  shard update (one bucket rebuilt). The baseline for its ratio is the full build at the same size;
  beside it, whether the rerun's shards hold the full build's rows plus the added video's, per table.
- card: the dataset card and figures after the re-run (DuckDB over the shards), shown apart.

    python -m bench.incremental_corpus [--sizes 5000 52000] [--workdir /tmp/pv-bench-corpus]

The result stores are kept in the work folder between runs (writing 52k results takes about a
minute); the corpus folders are rebuilt every run.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from schemas.cli import ArgumentParser


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(mode: str, results_dir: Path, corpus: Path) -> dict:
    """One measurement in this (fresh) process."""
    import pandas  # noqa: F401  (pyarrow's from_pylist loads it on first use: an import, not work)
    import pyarrow.compute  # noqa: F401

    from curation.corpus.card import write_dataset_card
    from curation.corpus.catalogue import sync_catalogue
    from curation.corpus.shards import update_shards
    from flows.summary import RunSummary

    if mode == "card":
        from curation.corpus.shards import read_index

        started, wall = _cpu_s(), time.perf_counter()
        summary = json.loads((corpus / "summary.json").read_text())
        write_dataset_card(corpus, read_index(corpus), summary, llm_backend="replay")
        return {"mode": mode, "cpu_s": _cpu_s() - started, "wall_s": time.perf_counter() - wall}
    started, wall = _cpu_s(), time.perf_counter()
    catalogue = sync_catalogue(results_dir)
    summary = RunSummary()
    for entry in catalogue:
        summary.add(entry)
    update = update_shards(results_dir, corpus, catalogue=catalogue)
    cpu, seconds = _cpu_s() - started, time.perf_counter() - wall
    (corpus / "summary.json").write_text(json.dumps(summary.as_dict()))
    return {"mode": mode, "cpu_s": cpu, "wall_s": seconds, "read_files": catalogue.read_files,
            "videos": summary.videos, "files": len(update.index["shards"]),
            "rows_per_table": update.index["created_from"]["rows"],
            "written_per_table": dict(Counter(p.split("/")[1] for p in update.written)),
            "largest_mb": max((e["bytes"] for e in update.index["shards"]), default=0) / 1e6,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _child(mode: str, results_dir: Path, corpus: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.incremental_corpus", "--child", mode, str(results_dir),
                          str(corpus)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_size(n: int, workdir: Path) -> dict:
    from bench.synthetic_results import video_id_of, write_results
    from curation.corpus.catalogue import CATALOGUE_NAME
    from curation.corpus.results import VideoResult, result_path

    results_dir, corpus = workdir / f"results-{n}", workdir / f"corpus-{n}"
    extra = result_path(results_dir, video_id_of(n))
    extra.unlink(missing_ok=True)  # left by an interrupted run
    write_results(results_dir, range(n))
    (results_dir / CATALOGUE_NAME).unlink(missing_ok=True)
    shutil.rmtree(corpus, ignore_errors=True)
    full = _child("full", results_dir, corpus)
    write_results(results_dir, range(n, n + 1))
    try:
        added = VideoResult.model_validate_json(extra.read_text())
        rerun = _child("rerun", results_dir, corpus)
        card = _child("card", results_dir, corpus)
    finally:
        extra.unlink(missing_ok=True)
    # The rerun's corpus must be the full build's plus exactly the added video's rows.
    added_rows = {"videos": int(added.video is not None), "segments": len(added.segments), "scenes": len(added.scenes),
                  "dialogues": len(added.dialogues), "quarantine": len(added.quarantine)}
    tables = set(full["rows_per_table"]) | set(rerun["rows_per_table"]) | set(added_rows)
    same = all(rerun["rows_per_table"].get(t, 0) == full["rows_per_table"].get(t, 0) + added_rows.get(t, 0)
               for t in tables)
    return {"n": n, "full": full, "rerun": rerun, "card": card, "same_records": same}


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m bench.incremental_corpus")
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 52000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/pv-bench-corpus"))
    parser.add_argument("--child", nargs=3, metavar=("MODE", "RESULTS", "CORPUS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child[0], Path(args.child[1]), Path(args.child[2]))))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = [run_size(n, args.workdir) for n in args.sizes]
    print(f"{'videos':>7} {'full CPU s':>10} {'rerun CPU s':>11} {'rerun/full':>10} {'files':>6} "
          f"{'rewritten per table (rerun)':>28} {'largest MB':>10} {'full RSS MiB':>12} {'card CPU s':>10}")
    for r in rows:
        written = r["rerun"]["written_per_table"]
        print(f"{r['n']:>7} {r['full']['cpu_s']:>10.2f} {r['rerun']['cpu_s']:>11.2f} "
              f"{r['rerun']['cpu_s'] / r['full']['cpu_s']:>10.3f} {r['full']['files']:>6} "
              f"{max(written.values(), default=0):>3} max, {sum(written.values()):>3} files{'':>11} "
              f"{r['full']['largest_mb']:>10.1f} {r['full']['peak_rss_mib']:>12.0f} {r['card']['cpu_s']:>10.2f}")
        print(f"         full read {r['full']['read_files']} result files, rerun read {r['rerun']['read_files']}; "
              f"rerun rewrote {written}")
        print(f"         rows per table, full {r['full']['rows_per_table']}, rerun {r['rerun']['rows_per_table']}: "
              f"the full build's plus the added video's: {'yes' if r['same_records'] else 'NO'}")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(f"peak RSS of a full build {last['n']} / {first['n']} videos: "
              f"{last['full']['peak_rss_mib'] / first['full']['peak_rss_mib']:.2f} (goal <= 1.3)")
    print("goals: rerun/full <= 0.05; at most 2 files rewritten per table when one video is added")


if __name__ == "__main__":
    main()
