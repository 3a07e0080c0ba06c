"""The dataset card: `<corpus>/README.md` with the Hub's YAML header, written from the corpus itself.

The header (configs, features, licence, size) comes from `curation.corpus.card_header`; the body says
what the corpus is, how it was built, its statistics and figures, the quarantine, and how to load
it. Nothing here reads the environment, and nothing varies between two builds of the same rows
(no timestamps, no run timings), so the card is byte-identical for identical inputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import yaml

from curation.corpus.card_header import TABLE_ORDER, card_header, licence_of, pipeline_version
from curation.corpus.card_text import (
    citation_section,
    fields_section,
    licence_link,
    limitations_section,
    windows_section,
)
from curation.corpus.dialogue_yield import yield_line, yield_rows
from curation.corpus.figures import draw_figures
from curation.corpus.release import write_durably
from curation.corpus.stats import corpus_stats
from curation.speech.route import route_rows
from schemas.records import SCHEMA_VERSION

CARD_NAME = "README.md"
FIGURES_DIR = "figures"


def _table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["(none)"]
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]).replace("|", "\\|") for c in cols) + " |" for r in rows]
    return lines


def _describe(values: list[float]) -> str:
    if not values:
        return "no data"
    ordered = sorted(values)
    return (f"n={len(ordered)}, min {ordered[0]:.2f}, median {ordered[len(ordered) // 2]:.2f}, "
            f"max {ordered[-1]:.2f}")


def _provenance(summary: dict[str, Any], llm_backend: str) -> list[str]:
    lines = ["## How it was built", "",
             "Built by the `build-corpus` Prefect flow of the proactive-video toolkit: each video is "
             "probed and cut into scenes, and the configured LLM backend writes its descriptions and "
             "dialogues; every "
             "dialogue is validated against the schema before it is written, and every skipped "
             "or failed item lands in the `quarantine` table with its stage and reason.", "",
             f"- pipeline version: `{pipeline_version()}`, record schema version `{SCHEMA_VERSION}`",
             f"- LLM backend: `{llm_backend}`"]
    for key, label in (("config_fingerprint", "config fingerprint"), ("llm_model", "LLM model")):
        if summary.get(key):
            lines.append(f"- {label}: `{summary[key]}`")
    if summary.get("llm_usage"):
        usage = ", ".join(f"{k}={v}" for k, v in sorted(summary["llm_usage"].items()))
        lines.append(f"- LLM usage over the corpus: {usage}")
    if llm_backend == "replay":
        lines += ["", "**Answers come from a replay file of hand-written answers; no model was run.** "
                  "This corpus exercises the pipeline; it is not model-generated data."]
    return lines + [""]


def _licence_section(stats: dict[str, Any]) -> list[str]:
    licence, counts = licence_of(stats)
    lines = ["## Licence", ""]
    if licence not in ("other", "unknown"):
        lines.append(f"Every source video is under `{licence}`.")
    else:
        lead = ("The source videos do not share one Hub licence id" if licence == "other"
                else "No licence was recorded for the source videos")
        lines.append(f"{lead}, so the card says `{licence}`. Each video keeps its own licence; per "
                     "source, as recorded in the manifest:")
    rows = [{"source": r["source"], "licence": r["licence"], "videos": r["videos"],
             "link": f"[{link.rsplit('/', 1)[-1].removesuffix('.html')}]({link})" if (link := licence_link(r["licence"])) else "-"}
            for r in stats.get("videos_by_source_licence", [])]
    lines += ["", *_table(rows)]
    lines += ["", "The video files themselves are not part of this dataset (their bytes are not ours "
              "to redistribute): the `videos` table gives each video's `sha256` and, where it came "
              "from a URL, that `uri`, so that users can fetch and verify it (`local:<file name>` "
              "marks a video the builder read from its own disk).", ""]
    return lines


def _stats_section(stats: dict[str, Any], figures: list[str]) -> list[str]:
    lines = ["## Statistics", ""]
    if stats.get("stats_error"):
        lines += [f"Only row counts, licences and dialogue kinds: `curation.corpus.stats` failed "
                  f"(`{stats['stats_error']}`).", ""]
    lines += [*_table([{"table": k, "rows": v} for k, v in stats.get("counts", {}).items()]), ""]
    for key in ("videos_by_source_licence", "dialogues_by_kind", "questions_per_dialogue",
                "answers_per_question", "segments_by_origin"):
        if stats.get(key):
            lines += [f"### {key.replace('_', ' ')}", "", *_table(stats[key]), ""]
    for key in ("video_durations_s", "scene_lengths_s", "reply_window_length_s", "reply_window_start_fraction"):
        lines.append(f"- {key.replace('_', ' ')}: {_describe(stats.get(key, []))}")
    for key, values in sorted(stats.get("no_reply_share", {}).items()):
        lines.append(f"- share of `NO REPLY` turns per episode at {key.replace('_', ' ')}: {_describe(values)}")
    lines.append("")
    lines += [f"![{Path(name).stem.replace('_', ' ')}]({FIGURES_DIR}/{name})" for name in figures]
    return lines + [""]


def _quarantine_section(summary: dict[str, Any], stats: dict[str, Any]) -> list[str]:
    rows = summary.get("quarantined")
    if rows is None:
        rows = [{"stage": r["stage"], "reason": r["reason"], "kind": r["kind"], "count": r["items"]}
                for r in stats.get("quarantine_by_stage_reason", [])]
    rows = sorted(rows, key=lambda r: (r["stage"], r["reason"], r["kind"]))
    return ["## Quarantine", "",
            "Items left out, by stage and reason (`error` = a crash, `skip` = a rule said no); "
            "the rows are in the `quarantine` config. Its files are named `all-*.parquet` (one split "
            "for everything); `datasets` reserves the name `all`, so the config and "
            "`load_dataset(..., \"quarantine\")` call that split `train`.", "", *_table(rows), ""]


def _routes_section(summary: dict[str, Any]) -> list[str]:
    rows = route_rows(summary.get("counts") or {})
    if not rows:
        return []
    return ["## Text sources", "",
            "Where each video's segments came from: the source's own timestamped text (`source_text`), "
            "its speech transcribed by Whisper (`asr`, when the transcript passed every rule: enough "
            "speech, a kept language, 1-4 words per second, a mean log-prob above the floor), or "
            "captions of its scenes (`captions`, with the rule or audio problem that ruled speech "
            "out).", "", *_table(rows), ""]


def _yield_section(summary: dict[str, Any]) -> list[str]:
    report = summary.get("dialogue_yield")
    if not report or not report.get("attempted"):
        return []
    return ["## Dialogue yield", "",
            "What the LLM's dialogue requests gave in the builds behind this corpus: valid at the first "
            "answer, valid after the one repair request, or quarantined (by reason; `low_quality`: "
            "valid, but the quality gate refused it). Tokens count the first answer and the repair; "
            "seconds are the dialogue stage's wall time. The raw replies of every failed request are "
            "under `work/llm_replies/` of the build folder, named in each quarantine row.", "",
            yield_line(report), "", *_table(yield_rows(report)), ""]


def _quality_section(stats: dict[str, Any]) -> list[str]:
    figures = stats.get("dialogue_quality") or {}
    if not figures:
        return []
    return ["## Dialogue quality", "",
            "Figures the quality gate stored on each dialogue (`dialogues.quality`; thresholds in the "
            "build config's `dialogues.quality`): `grounding`, the least grounded answer's share of "
            "content words found in the segments it cites; `max_answer_similarity` between two "
            "answers; `max_restatement`, the largest share of an answer's words that are its "
            "question's; `repetition`, the largest share of repeated word 3-grams in one text.", "",
            *(f"- {name.replace('_', ' ')}: {_describe(values)}" for name, values in figures.items()), ""]


def _loading_section(header: dict[str, Any], where: str) -> list[str]:
    first = next((c for c in header["configs"] if c.get("default")), header["configs"][0] if header["configs"] else None)
    glob = f"data/{first['config_name']}/*.parquet" if first else "data/dialogues/*.parquet"
    # The card is written before anyone pushes it, so it cannot know a Hub id: it names the local
    # folder, which is what `load_dataset` takes too, and says what to put there after a push.
    return ["## Loading", "", "With `datasets` (one config per table; `dialogues` is the default). "
            f"`{where}` is this corpus's folder; after `python -m flows.push_to_hub --repo-id USER/NAME`, "
            "pass that Hub id instead:", "",
            "```python", "from datasets import load_dataset",
            f'dialogues = load_dataset("{where}", "dialogues")',
            f'videos = load_dataset("{where}", "videos", split="train")', "```", "",
            "Dict-valued columns (`videos.metadata`, `dialogues.provenance.parameters`) are lists "
            "of `{key, value}` entries, sorted by key.", "",
            "With DuckDB, straight from the Parquet files:", "", "```python", "import duckdb",
            f"duckdb.sql(\"select kind, count(*) from read_parquet('{glob}') group by kind\").show()",
            "```", "", "With pandas:", "", "```python", "import pandas as pd",
            f'df = pd.read_parquet("{glob.rsplit("/", 1)[0]}")', "```", "",
            "`index.json` lists every shard with its rows, bytes and sha256.", ""]


def _viewer_section() -> list[str]:
    return ["## Viewing", "",
            "To watch each video with its questions and reference answers on a timeline, and to "
            "browse the quarantine with its reasons, write the offline viewer page with the "
            "proactive-video toolkit: `python -m curation.viewer --corpus path/to/corpus --out viewer/`, then "
            "open `viewer/index.html`.", ""]


def render_card(corpus_root: Path, index: dict[str, Any], summary: dict[str, Any], llm_backend: str,
                stats: dict[str, Any], figures: list[str]) -> str:
    header = card_header(corpus_root, index, stats)
    counts = stats.get("counts", {})
    body = ["# Proactive video dialogues", "",
            "Timestamped, multi-turn dialogues about videos in the style of MMDuet2: a user asks "
            "questions while the video plays and the assistant replies when the frames show the "
            "answer, staying silent (`NO REPLY`) otherwise. Each reference answer carries the time "
            "span in which it should be given.", "",
            f"This build holds {counts.get('dialogues', 0)} dialogues over {counts.get('videos', 0)} "
            f"videos; {counts.get('quarantine', 0)} items were quarantined.", ""]
    body += _provenance(summary, llm_backend)
    body += windows_section()
    body += fields_section([c["config_name"] for c in header["configs"]])
    body += _licence_section(stats)
    body += _stats_section(stats, figures)
    body += _quarantine_section(summary, stats)
    body += _routes_section(summary)
    body += _yield_section(summary)
    body += _quality_section(stats)
    body += _loading_section(header, corpus_root.name)
    body += _viewer_section()
    body += limitations_section(replay=llm_backend == "replay")
    body += citation_section()
    front = yaml.safe_dump(header, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{front}---\n\n" + "\n".join(body)


def basic_stats(corpus_root: Path, index: dict[str, Any], error: Exception) -> dict[str, Any]:
    """What the card cannot do without (counts, licences, kinds), when `corpus_stats` fails."""
    def column(table: str, name: str) -> list[Any]:
        paths = [corpus_root / s["path"] for s in index.get("shards", []) if s["table"] == table]
        return [v for p in paths for v in pq.read_table(p, columns=[name]).column(name).to_pylist()]

    def tally(values: list[Any], label: str, value: str) -> list[dict[str, Any]]:
        return [{label: k, value: values.count(k)} for k in sorted(set(values), key=str)]

    counts = {t: sum(s["rows"] for s in index.get("shards", []) if s["table"] == t) for t in TABLE_ORDER}
    pairs = list(zip(column("videos", "source"), column("videos", "licence"), strict=True))
    licences = [{"source": src, "licence": lic or "unknown", "videos": n}
                for (src, lic), n in sorted(((p, pairs.count(p)) for p in set(pairs)), key=str)]
    return {"counts": counts, "videos_by_source_licence": licences,
            "dialogues_by_kind": tally(column("dialogues", "kind"), "kind", "dialogues"),
            "stats_error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}


def stats_of(corpus_root: Path, index: dict[str, Any]) -> dict[str, Any]:
    """`corpus_stats`, or `basic_stats` if it fails: a build should not end without its card."""
    try:
        return corpus_stats(corpus_root, index)
    except duckdb.Error as error:
        return basic_stats(corpus_root, index, error)


def write_dataset_card(corpus_root: str | Path, index: dict[str, Any], summary: dict[str, Any],
                       llm_backend: str, into: str | Path | None = None) -> Path:
    """Compute statistics of the shards `index` lists, draw figures into `<into>/figures/` and write
    `<into>/README.md`; `into` is the corpus itself unless given (a build stages both, to release
    them with the index: `curation.corpus.release`)."""
    root = Path(corpus_root)
    out = Path(into) if into is not None else root
    stats = stats_of(root, index)
    # The summary handed in is this build's; a summary.json on disk (what corpus_stats reads) may
    # be missing or older when the card is written outside the flow.
    stats["llm_usage"] = dict(sorted((summary.get("llm_usage") or {}).items()))
    figures = draw_figures(stats, out / FIGURES_DIR)
    text = render_card(root, json.loads(json.dumps(index)), summary, llm_backend, stats, figures)
    path = out / CARD_NAME
    write_durably(path, text.encode("utf-8"))
    return path
