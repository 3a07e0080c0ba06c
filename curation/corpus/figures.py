"""QA figures as PNG files, drawn from `curation.corpus.stats` numbers (and frames for the viewer)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on a build machine
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from curation.video.frames import decode_frames  # noqa: E402


def _no_data(ax) -> None:
    """An empty panel says so, with no axis ticks (matplotlib would draw a +-0.05 range)."""
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _bar(ax, rows: list[dict[str, Any]], label: str, value: str, title: str) -> None:
    if rows:
        ax.bar([str(r[label]) for r in rows], [r[value] for r in rows], color="tab:blue")
    else:
        _no_data(ax)
    ax.set_title(title)
    ax.set_xlabel(label.replace("_", " "))
    ax.set_ylabel(value)


def _hist(ax, values: list[float], title: str, xlabel: str) -> None:
    if values:
        ax.hist(values, bins=min(30, max(5, len(values))), color="tab:blue", edgecolor="white")
    else:
        _no_data(ax)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")


def _save(fig, out_dir: Path, name: str) -> str:
    path = out_dir / f"{name}.png"
    for ax in fig.axes:  # counts are whole numbers: no 0.25-video ticks on small corpora
        if ax.get_ylabel() in ("count", "videos", "dialogues", "questions", "episodes") and ax.get_yticks().size:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def draw_figures(stats: dict[str, Any], out_dir: str | Path) -> list[str]:
    """Write every QA figure; returns file names (relative to out_dir) in reading order."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = []

    fig, ax = plt.subplots(figsize=(9, 4))
    by_source: dict[str, dict[str, int]] = defaultdict(dict)
    for row in stats.get("videos_by_source_licence", []):
        # The legend names the licence id; the free text after it is in the card's licence table.
        label = licence_label(row["licence"])
        by_source[row["source"]][label] = by_source[row["source"]].get(label, 0) + row["videos"]
    bottom = defaultdict(int)
    for licence in sorted({lic for d in by_source.values() for lic in d}):
        heights = [by_source[s].get(licence, 0) for s in by_source]
        ax.bar(list(by_source), heights, bottom=[bottom[s] for s in by_source], label=licence)
        for s, h in zip(by_source, heights, strict=True):
            bottom[s] += h
    ax.set_title("videos per source, by licence")
    ax.set_ylabel("videos")
    if by_source:
        ax.legend(title="licence", fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    else:
        _no_data(ax)
    names.append(_save(fig, out_dir, "videos_by_source"))

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    _hist(axes[0], stats.get("video_durations_s", []), "video duration", "seconds")
    _bar(axes[1], stats.get("video_heights", []), "height", "videos", "resolution (frame height)")
    _hist(axes[2], stats.get("scene_lengths_s", []), "scene length", "seconds")
    names.append(_save(fig, out_dir, "videos_and_scenes"))

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    _bar(axes[0], stats.get("dialogues_by_kind", []), "kind", "dialogues", "dialogues per type")
    _bar(axes[1], stats.get("questions_per_dialogue", []), "questions", "dialogues", "questions per dialogue")
    _bar(axes[2], stats.get("answers_per_question", []), "answers", "questions", "answers per question")
    names.append(_save(fig, out_dir, "dialogues"))

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    _hist(axes[0], stats.get("reply_window_length_s", []), "reply-window length", "seconds")
    _hist(axes[1], stats.get("reply_window_start_fraction", []), "reply-window start within the video",
          "fraction of the video's duration")
    names.append(_save(fig, out_dir, "reply_windows"))

    fig, ax = plt.subplots(figsize=(7, 3.5))
    shares = {key.replace("_", " "): values for key, values in stats.get("no_reply_share", {}).items() if values}
    if shares:
        # Side by side in each bin, not overlaid: an overlap would be a third colour with no legend entry.
        ax.hist(list(shares.values()), bins=10, range=(0, 1), label=list(shares), edgecolor="white")
        ax.legend()
    else:
        _no_data(ax)
    ax.set_title("share of NO REPLY turns per episode")
    ax.set_xlabel("share of user turns")
    ax.set_ylabel("episodes")
    names.append(_save(fig, out_dir, "no_reply_share"))

    rows = stats.get("quarantine_by_stage_reason", [])
    fig, ax = plt.subplots(figsize=(9, max(2.5, 0.4 * len(rows) + 1)))
    ax.barh([f"{r['stage']}/{r['reason']}" for r in rows], [r["items"] for r in rows],
            color=[KIND_COLOURS.get(r["kind"], "tab:gray") for r in rows])
    ax.invert_yaxis()
    ax.set_title("quarantined items by stage/reason")
    ax.set_xlabel("items")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    # The legend names the kinds drawn; a kind that did not occur is said in words, not shown as a colour.
    kinds = [k for k in KIND_COLOURS if any(r["kind"] == k for r in rows)]
    absent = [f"{k}: none" for k in KIND_COLOURS if k not in kinds]
    handles = [Patch(color=KIND_COLOURS[k], label=f"{k}: {KIND_MEANING[k]}") for k in kinds]
    handles += [Patch(color="none", label=text) for text in absent if rows]
    if handles:
        ax.legend(handles=handles, fontsize=8, title="kind", bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set_xlim(0, max([r["items"] for r in rows] + [1]) * 1.1)
    if not rows:
        ax.text(0.5, 0.5, "nothing quarantined", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    names.append(_save(fig, out_dir, "quarantine"))

    names.append(_save(_usage_figure(stats.get("llm_usage") or {}), out_dir, "llm_usage"))
    return names


KIND_COLOURS = {"skip": "tab:orange", "error": "tab:red"}
KIND_MEANING = {"skip": "a rule said no", "error": "a crash"}
# Requests and tokens differ by orders of magnitude: two panels on linear axes, each bar labelled
# with its number (a log axis hid every zero and most small counts).
USAGE_PANELS = (("requests", ("calls", "cache_hits", "retries", "failures")),
                ("tokens", ("prompt_tokens", "completion_tokens")))


def licence_label(licence: str | None) -> str:
    """`CC-BY-3.0 (Big Buck Bunny, ...)` -> `CC-BY-3.0`: the id, which fits a legend."""
    text = (licence or "unknown").strip()
    return text.split(" (", 1)[0][:30] or "unknown"


def _usage_figure(usage: dict[str, int]):
    fig, axes = plt.subplots(1, 2, figsize=(11, 3))
    for ax, (title, keys) in zip(axes, USAGE_PANELS, strict=True):
        shown = [k for k in keys if k in usage] or list(keys)
        values = [usage.get(k, 0) for k in shown]
        bars = ax.barh([k.replace("_", " ") for k in shown], values, color="tab:green")
        ax.bar_label(bars, labels=[f"{v:,}" for v in values], padding=3, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"LLM {title}")
        ax.set_xlim(0, max(values + [1]) * 1.2)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if not any(usage.get(k, 0) for k in USAGE_PANELS[1][1]):
        axes[1].text(0.5, 0.5, "no tokens reported\n(replay or cached answers)", ha="center",
                     va="center", transform=axes[1].transAxes, fontsize=9, color="dimgray")
    return fig


LABEL_CHARS_ACROSS = 170  # characters of 8-point text across the figure's width (14 in at 100 dpi)


def _fit(text: str, chars: int) -> str:
    chars = max(chars, 8)
    return text if len(text) <= chars else text[: chars - 1] + "…"


def draw_dialogue(dialogue: Any, video_path: str | Path, out_path: str | Path, frames: int = 8,
                  max_pixels: int = 160 * 120) -> Path:
    """A strip of frames along the time axis; under it one row per question (its triangle and
    text) followed by one row per reference answer (its window as a bar, its text from the bar's
    start), so no two labels share a line. Immediate replies are pale. Texts are cut to the room
    left before the end of the axis; the full text is in the shards."""
    duration = dialogue.duration_s
    times = [duration * (i + 0.5) / frames for i in range(frames)]
    images = decode_frames(video_path, times, max_pixels)
    rows: list[tuple[str, Any, int]] = []  # ("question", turn, colour) / ("answer", reference, colour)
    for index, turn in enumerate(dialogue.user_turns):
        rows.append(("question", turn, index))
        refs = [r for r in dialogue.references if r.question_id == turn.question_id]
        rows += [("answer", ref, index) for ref in sorted(refs, key=lambda r: r.reply_span)]
    row_in = 0.28
    fig = plt.figure(figsize=(14, 2.3 + row_in * len(rows) + 0.6))
    grid = fig.add_gridspec(2, 1, height_ratios=[2.0, row_in * len(rows) + 0.2], hspace=0.28,
                            left=0.04, right=0.98, top=0.93, bottom=0.5 / (2.9 + row_in * len(rows)))
    strip = fig.add_subplot(grid[0])
    for t, image in zip(times, images, strict=True):
        half = duration / frames / 2
        strip.imshow(image, extent=(t - half, t + half, 0, 1), aspect="auto")
    strip.set_xlim(0, duration)
    strip.set_yticks([])
    strip.set_title(f"{dialogue.dialogue_id} ({dialogue.kind}), {duration:.1f} s")
    lanes = fig.add_subplot(grid[1], sharex=strip)
    colours = plt.get_cmap("tab10")

    def room(start_s: float) -> int:
        return int(LABEL_CHARS_ACROSS * (duration - start_s) / duration)

    for y, (kind, item, index) in enumerate(rows):
        colour = colours(index % 10)
        if kind == "question":
            lanes.plot([item.time_s], [y], marker="v", color=colour, markersize=9)
            lanes.text(item.time_s + duration * 0.008, y, _fit(f"Q{index}: {item.text}", room(item.time_s) - 2),
                       fontsize=8, color=colour, va="center", fontweight="bold", clip_on=True)
            continue
        start, end = item.reply_span
        lanes.barh(y, end - start, left=start, height=0.7, color=colour, alpha=0.25 if item.immediate else 0.55)
        lanes.text(start + duration * 0.004, y, _fit(item.answer, room(start) - 1), fontsize=8, va="center",
                   clip_on=True)
    lanes.set_ylim(len(rows) - 0.5, -0.5)
    lanes.set_yticks([])
    lanes.set_xlabel("seconds (triangles: questions asked; bars: reference reply windows, pale: immediate replies)")
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return Path(out_path)
