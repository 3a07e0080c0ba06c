"""`python -m training.export FORMAT --corpus CORPUS --out DIR`: the corpus in the formats of the
MMDuet2 release and the ProactiveVideoQA benchmark, so the official training code can read it.

    swift-sft  ms-swift SFT JSONL, one dialogue a line, per split:
               DIR/proactive_video-mixed_question-<N>_sec_per_frame-<split>-sft.jsonl
    verl-rl    verl RL parquet of the `rl` split, one RL prompt a row: GRPO's own 20-60 s stretches with
               the dialogue before as context, its training and validation prompts (-> train, val),
               and one user-turn side file for all of them:
               DIR/proactive_video-mixed_question-<N>_sec_per_frame-20_60s_stretch_with_context-max_<F>_frames-{train,val}.parquet
               DIR/...-user_turns.json (a release split with no prompt is not written and is
               counted as skipped `no_<split>_prompts`; F: the frame cap, 90 at 2 s per frame)
    pvqa       ProactiveVideoQA gold and per-turn frame input of the validation split, one category
               per video source: DIR/<SOURCE>/anno.json, DIR/<SOURCE>-frame_input_format.json

Frames are extracted once per clip into DIR/frames/<video_id>-<start>s_<end>s/NNNNNN.jpg at the
episode timeline's interval and pixel budget (training.data.frame_folders); every file refers to
them relative to DIR. The turns, targets and frame times are the trainer's own episodes
(training.data.episodes), so `training.run sft|grpo data=FILE` reads back the same episodes.

Our mix is not the release's half/half: file names say `mixed_question`. The RL stretches are
GRPO's (`training.data.rl_prompts`), so the official trainer and ours see the same prompts.
A dialogue whose video is missing or cannot be cut into frames is skipped and counted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from curation.corpus.shards import CorpusError, read_index
from curation.skips import Skip
from curation.video.frames import frame_timeline
from schemas import Dialogue
from schemas.cli import ArgumentParser, UsageError, add_cli_flags, run_cli
from training.data.chat_template import DEFAULT_SYSTEM_PROMPT, questions_text
from training.data.corpus import CorpusSplit, read_split, splits_of
from training.data.episodes import Episode, EpisodeConfig, build_episode
from training.data.frame_folders import clip_folder_name, extract_frame_folder
from training.data.mmduet2 import RLStretch, sft_record, verl_row
from training.data.rl_prompts import RLPromptConfig, build_rl_prompts
from training.eval.proactive_format import (
    FrameInputRecord,
    FrameInputTurn,
    dialogue_to_gold,
    gold_to_dialogue,
    parse_gold_record,
    write_frame_input,
)

FORMATS = ("swift-sft", "verl-rl", "pvqa")
SPLIT_TAGS = {"train": "train", "validation": "val"}  # the release's split words


class ExportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    episodes: EpisodeConfig = EpisodeConfig()  # FACTS.md: 2 s per frame, 90 frames, 2 frames per turn
    max_pixels: int = Field(128 * 28 * 28, ge=56 * 56)  # FACTS.md: max pixels per frame 128*28*28
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    data_source: str = "proactive_video"
    prompts: RLPromptConfig = RLPromptConfig()  # the RL stretches, as GRPO builds them


def rl_stretches(dialogues: Iterable[Dialogue], cfg: ExportConfig) -> dict[str, list[RLStretch]]:
    """The RL prompts GRPO itself trains on (training.data.rl_prompts: 20-60 s stretches, the whole
    dialogue before each as context), as the release's stretches, by release split (train / val)."""
    prompts = build_rl_prompts(list(dialogues), cfg.prompts, cfg.episodes, frame_timeline)
    return {tag: [RLStretch(s.dialogue, s.start_s, s.end_s, s.start_s) for s in stretches]
            for tag, stretches in (("train", prompts.train), ("val", prompts.validation))}


class FrameStore:
    """Clip folders under DIR/frames, each extracted once; frame time -> path relative to DIR."""

    def __init__(self, out: Path, cfg: ExportConfig):
        self.out, self.cfg = out, cfg
        self.done: dict[str, dict[float, str] | Skip] = {}

    def frames_for(self, episode: Episode, video: Path, end_s: float) -> dict[float, str] | Skip:
        times = episode.frame_times_s
        name = clip_folder_name(episode.video_id, times[0], end_s)
        if name not in self.done:
            got = extract_frame_folder(video, self.out / "frames" / name, times,
                                       self.cfg.episodes.seconds_per_frame, self.cfg.max_pixels)
            self.done[name] = got if isinstance(got, Skip) else {
                t: p.relative_to(self.out).as_posix() for t, p in zip(times, got, strict=True)}
        return self.done[name]


def episodes_of(split: CorpusSplit, cfg: ExportConfig, store: FrameStore, skipped: Counter
                ) -> list[tuple[Dialogue, Episode, dict[float, str]]]:
    """Every dialogue of the split with its episode and frame files; the rest counted by reason."""
    out = []
    for dialogue in split.dialogues:
        video = split.video_path(dialogue.video_id)
        if video is None or not video.is_file():
            skipped["video_missing"] += 1
            continue
        episode = build_episode(dialogue, video, cfg.episodes, frame_timeline)
        if not episode.turns:
            skipped["no_frames"] += 1
            continue
        frames = store.frames_for(episode, video, dialogue.duration_s)
        if isinstance(frames, Skip):
            skipped[frames.reason] += 1
            continue
        out.append((dialogue, episode, frames))
    return out


def file_stem(cfg: ExportConfig) -> str:
    return f"{cfg.data_source}-mixed_question-{cfg.episodes.seconds_per_frame:g}_sec_per_frame"


def export_swift_sft(split: str, items, out: Path, cfg: ExportConfig) -> Path:
    path = out / f"{file_stem(cfg)}-{split}-sft.jsonl"
    with path.open("w", encoding="utf-8") as sink:
        for dialogue, episode, frames in items:
            metadata = {"question_id": dialogue.dialogue_id, "video_id": dialogue.video_id, "kind": dialogue.kind,
                        "seconds_per_frame": cfg.episodes.seconds_per_frame, "split": split}
            record = sft_record(episode, [frames[t] for t in episode.frame_times_s], cfg.system_prompt, metadata)
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def export_verl_rl(items, out: Path, cfg: ExportConfig, side: dict, skipped: Counter) -> list[Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    stem = f"{file_stem(cfg)}-{cfg.prompts.min_stretch_s:g}_{cfg.prompts.max_stretch_s:g}s_stretch_with_context" \
        f"-max_{cfg.episodes.frame_cap}_frames"
    by_id = {d.dialogue_id: (e, f) for d, e, f in items}
    written = []
    for tag, stretches in rl_stretches((d for d, _, _ in items), cfg).items():
        rows = []
        for stretch in stretches:
            episode, frames = by_id[stretch.dialogue.dialogue_id]
            got = verl_row(stretch, episode, frames, cfg.system_prompt, len(side), cfg.data_source)
            if isinstance(got, Skip):
                skipped[got.reason] += 1
                continue
            row, turns = got
            side[row["reward_model"]["ground_truth"]["question_id"]] = turns
            rows.append(row)
        if not rows:  # a small corpus's `val`: no file rather than one of 0 rows and no columns
            skipped[f"no_{tag}_prompts"] += 1
            continue
        written.append(out / f"{stem}-{tag}.parquet")
        pq.write_table(pa.Table.from_pylist(rows), written[-1])
    (out / f"{stem}-user_turns.json").write_text(json.dumps(side, ensure_ascii=False) + "\n", encoding="utf-8")
    return written


def export_pvqa(items, split: CorpusSplit, out: Path, cfg: ExportConfig, store: FrameStore,
                skipped: Counter) -> list[Path]:
    """Gold records (one per question) and their frame input, one category per video source."""
    gold: dict[str, list[dict]] = {}
    frame_input: dict[str, list[FrameInputRecord]] = {}
    for dialogue, _, _ in items:
        source = split.videos[dialogue.video_id].source.upper()
        for record in dialogue_to_gold(dialogue):
            # the record as the benchmark's reader sees it: asked at its own time, answered in its windows
            episode = build_episode(gold_to_dialogue(parse_gold_record(record)), "", cfg.episodes, frame_timeline)
            frames = store.frames_for(episode, split.video_path(dialogue.video_id), dialogue.duration_s)
            if isinstance(frames, Skip):
                skipped[frames.reason] += 1
                continue
            record["video"] = Path(split.videos[dialogue.video_id].path or "").name or record["video"]
            gold.setdefault(source, []).append(record)
            turns = tuple(FrameInputTurn(tuple(frames[t] for t in turn.frame_times_s), questions_text(turn.questions))
                          for turn in episode.turns)
            frame_input.setdefault(source, []).append(FrameInputRecord(record["question_id"], turns, cfg.system_prompt))
    written = []
    for source, records in gold.items():
        (out / source).mkdir(parents=True, exist_ok=True)
        (out / source / "anno.json").write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n",
                                                encoding="utf-8")
        write_frame_input(out / f"{source}-frame_input_format.json", frame_input[source])
        written += [out / source / "anno.json", out / f"{source}-frame_input_format.json"]
    return written


def export(fmt: str, corpus: Path, out: Path, splits: list[str], cfg: ExportConfig) -> dict:
    """Write `fmt` for every split the corpus has; what was written and what was skipped."""
    out.mkdir(parents=True, exist_ok=True)
    store = FrameStore(out, cfg)
    skipped: Counter[str] = Counter()
    side: dict[str, list] = {}
    written: list[Path] = []
    present = splits_of(corpus)
    for name in [s for s in splits if s in present]:
        split = read_split(corpus, name)
        items = episodes_of(split, cfg, store, skipped)
        if fmt == "swift-sft":
            written.append(export_swift_sft(name, items, out, cfg))
        elif fmt == "verl-rl":
            written += export_verl_rl(items, out, cfg, side, skipped)
        else:
            written += export_pvqa(items, split, out, cfg, store, skipped)
    return {"format": fmt, "written": [str(p) for p in written], "skipped": dict(skipped),
            "clip_folders": sum(not isinstance(v, Skip) for v in store.done.values())}


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv, known=(CorpusError,))


def _main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="python -m training.export", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("format", choices=FORMATS)
    parser.add_argument("--corpus", type=Path, required=True, help="corpus folder (its index.json)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (frames/ and the files)")
    parser.add_argument("--splits", default=None,
                        help="comma-separated corpus splits (default: train,validation; verl-rl: rl; pvqa: validation)")
    defaults = ExportConfig()
    parser.add_argument("--seconds-per-frame", type=float, default=defaults.episodes.seconds_per_frame)
    parser.add_argument("--max-frames", type=int, default=defaults.episodes.max_frames,
                        help="frame cap per episode (default: about 180 s of frames at the interval)")
    parser.add_argument("--frames-per-turn", type=int, default=defaults.episodes.frames_per_turn)
    parser.add_argument("--max-pixels", type=int, default=defaults.max_pixels)
    add_cli_flags(parser)
    args = parser.parse_args(argv)
    cfg = ExportConfig(episodes=EpisodeConfig(seconds_per_frame=args.seconds_per_frame, max_frames=args.max_frames,
                                              frames_per_turn=args.frames_per_turn),
                       max_pixels=args.max_pixels)
    read_index(args.corpus)  # a missing corpus is one line, before any frame is cut
    default = {"pvqa": "validation", "verl-rl": "rl"}.get(args.format, "train,validation")
    splits = (args.splits or default).split(",")
    try:
        summary = export(args.format, args.corpus, args.out, splits, cfg)
    except (ValueError, OSError) as error:  # a corpus or frame problem the user can look at
        raise UsageError(f"export: {error}") from None
    print(json.dumps(summary))
    return 0

if __name__ == "__main__":
    sys.exit(main())
