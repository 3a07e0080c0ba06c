"""`python -m training.run eval`: stream a ProactiveVideoQA-format set through a model, write predictions.

    python -m training.run eval (--model PATH | --preset tiny) --data GOLD [GOLD ...] --videos DIR \
        --out predictions.jsonl [--seconds-per-frame 2 --max-frames 90]
    python -m training.run eval (--model PATH | --preset tiny) --frame-input FRAME_INPUT.json \
        --out predictions.jsonl [--frames-root DIR] [--seconds-per-frame 2]

`--data` takes gold files (JSON list or JSONL) or folders holding the benchmark's `<TASK>/anno.json`.
Each gold record (one question, asked at t = 0) becomes a single-question episode
(`training.eval.proactive_format.gold_to_dialogue` -> `training.data.episodes.build_episode`, the same
timeline and chat template as training); TV's `Subtitle:` turns enter as text after the frames of
the first turn at or after their time. It is streamed turn by turn with the KV cache kept, greedy
(FACTS.md: the public evaluation loop). `--frame-input` feeds the benchmark's per-turn format
instead: each turn's listed frame files (paths relative to `--frames-root`, default the file's
folder), `skip_inference` turns fed without a reply, `must_reply` turns forced to start with
`I must reply.`; a turn's time is its last frame's index times `--seconds-per-frame`.
Per-turn decision latency is split into silent (`NO REPLY`) and spoken turns. `NO REPLY` is verified
as a draft in the turn's own forward (`training.streaming`, same greedy outputs); `--no-draft` turns
it off. A turn's frames enter the cache in a forward of their own before its decision (their time is
`ingest_median_s` in the latency file); `--frames-in-decision` puts them back in the decision forward.

One prediction line per question id, `{question_id, model_response_list: [{role, content, time}]}`
with `NO REPLY` turns removed, is appended and flushed as soon as it is done, under the ORIGINAL
question id (ids are keys, never file names: only the internal Dialogue gets a safe name); ids
already in the output file are skipped (resume). Per-turn decision latency (median, p95) is printed
and written to `<out stem>.latency.json`.

A record whose video (or a frame file) is missing or undecodable, or that does not form an
episode, is skipped and counted by reason (no prediction line: `score` then counts the question at
the no-reply score).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from pydantic import ValidationError

from curation.skips import Skip
from training.data.chat_template import TurnRenderer
from training.data.episodes import (
    STAGE,
    Episode,
    EpisodeConfig,
    add_timed_texts,
    build_episode,
    decode_episode_frames,
)
from training.data.frame_folders import load_frame_files, resolve_frame

# The config lives with the command line, which checks it before torch is imported.
from training.eval.eval_config import EvalConfig
from training.eval.proactive_format import (
    FrameInputRecord,
    GoldRecord,
    frame_input_times,
    gold_to_dialogue,
    prediction_line,
)
from training.streaming import (
    StreamConfig,
    StreamTurn,
    TurnReply,
    episode_stream_turns,
    latency_split,
    stream_turns,
)


def latency_path(out: Path) -> Path:
    return out.with_name(out.stem + ".latency.json")


def index_videos(videos_dir: Path) -> dict[str, Path]:
    """File name and stem -> path of every file under `videos_dir` (the first one found wins)."""
    index: dict[str, Path] = {}
    for path in sorted(videos_dir.rglob("*")):
        if path.is_file():
            index.setdefault(path.name, path)
            index.setdefault(path.stem, path)
    return index


def resolve_video(videos_dir: Path, video: str, index: dict[str, Path] | None = None) -> Path | Skip:
    """The record's video: its relative path under `videos_dir`, else a file of that name or stem
    anywhere below it; a path escaping the folder is refused."""
    root = videos_dir.resolve()
    path = (root / video).resolve()
    if not path.is_relative_to(root):
        return Skip(STAGE, "video_path_outside", f"{video!r} leaves {root}")
    if path.is_file():
        return path
    index = index_videos(root) if index is None else index
    found = index.get(Path(video).name) or index.get(Path(video).stem)
    return found if found is not None else Skip(STAGE, "video_missing", f"{video!r} not found under {root}")


def done_question_ids(out: Path) -> set[str]:
    """Ids with a complete line in `out`; a torn last line (a crash mid-write) is cut off."""
    if not out.is_file():
        return set()
    text = out.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
        out.write_text(text, encoding="utf-8")
    done = set()
    for line in text.splitlines():
        try:
            done.add(str(json.loads(line)["question_id"]))
        except (ValueError, KeyError, TypeError):
            continue
    return done


def gold_episode(record: GoldRecord, video: Path | str, cfg: EvalConfig) -> Episode | Skip:
    """The streaming episode a gold record is evaluated as (its turns come from the timeline alone)."""
    from curation.video.frames import frame_timeline

    try:
        dialogue = gold_to_dialogue(record)
    except ValidationError as error:
        return Skip(STAGE, "bad_gold_record", f"{record.question_id}: {error.errors()[0]['msg']}")
    episode = build_episode(dialogue, video, EpisodeConfig(seconds_per_frame=cfg.seconds_per_frame,
                                                           max_frames=cfg.max_frames,
                                                           frames_per_turn=cfg.frames_per_turn), frame_timeline)
    if not episode.turns:
        return Skip(STAGE, "no_frames", f"{record.question_id}: the timeline holds no frame")
    return add_timed_texts(episode, list(record.timed_texts))


def predict_record(record: GoldRecord, video: Path, model, renderer: TurnRenderer, image_processor,
                   cfg: EvalConfig) -> tuple[dict, list[TurnReply]] | Skip:
    """One prediction line and the streamed turns (latencies) of one gold record, or why it was skipped."""
    from curation.video.frames import decode_frames  # the one frame decoder

    episode = gold_episode(record, video, cfg)
    if isinstance(episode, Skip):
        return episode
    frames = decode_episode_frames(episode, cfg.max_pixels, decode_frames)
    if isinstance(frames, Skip):
        return frames
    result = stream_turns(model, renderer, image_processor, episode_stream_turns(episode, frames),
                          StreamConfig(max_new_tokens_per_turn=cfg.max_new_tokens_per_turn,
                                       draft_no_reply=cfg.draft_no_reply,
                                       ingest_frames_first=cfg.ingest_frames_first))
    line = prediction_line(record.question_id, [(t.time_s, t.text) for t in result.turns if t.text])
    return line, result.turns


def predict_frame_input(record: FrameInputRecord, frames_root: Path, model, renderer: TurnRenderer,
                        image_processor, cfg: EvalConfig) -> tuple[dict, list[TurnReply]] | Skip:
    """One prediction line from a frame-input record: its frame files fed turn by turn."""
    paths = [resolve_frame(frames_root, p) for turn in record.turns for p in turn.images]
    frames = load_frame_files(paths, cfg.max_pixels)
    if isinstance(frames, Skip):
        return frames
    turns, at = [], 0
    for turn, time_s in zip(record.turns, frame_input_times(record, cfg.seconds_per_frame), strict=True):
        n = len(turn.images)
        turns.append(StreamTurn(time_s=time_s, frames=frames[at:at + n], text=turn.text,
                                must_reply=turn.must_reply, skip_inference=turn.skip_inference))
        at += n
    result = stream_turns(model, renderer, image_processor, turns,
                          StreamConfig(max_new_tokens_per_turn=cfg.max_new_tokens_per_turn,
                                       draft_no_reply=cfg.draft_no_reply,
                                       ingest_frames_first=cfg.ingest_frames_first))
    line = prediction_line(record.question_id, [(t.time_s, t.text) for t in result.turns if t.text])
    return line, result.turns


def evaluate(gold: list[GoldRecord] | list[FrameInputRecord], videos_dir: Path, out: Path, model,
             renderer: TurnRenderer, image_processor, cfg: EvalConfig) -> dict:
    """Append predictions for every record not yet in `out`; the run's summary. Gold records are
    streamed from the videos under `videos_dir`; frame-input records from frame files under it."""
    done = done_question_ids(out)
    index = {} if gold and isinstance(gold[0], FrameInputRecord) else index_videos(videos_dir.resolve())
    skipped: Counter[str] = Counter()
    turns: list[TurnReply] = []
    written = resumed = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    from tqdm.auto import tqdm

    # Questions, turns and the running latency while it streams (a question takes seconds to minutes).
    bar = tqdm(gold, desc="eval", unit="question", dynamic_ncols=True)
    with out.open("a", encoding="utf-8") as sink, bar:
        for record in bar:
            if record.question_id in done:
                resumed += 1
                continue
            if isinstance(record, FrameInputRecord):
                got = predict_frame_input(record, videos_dir, model, renderer, image_processor, cfg)
            else:
                video = resolve_video(videos_dir, record.video, index)
                got = video if isinstance(video, Skip) else predict_record(
                    record, video, model, renderer, image_processor, cfg)
            if isinstance(got, Skip):
                skipped[got.reason] += 1
                bar.write(f"skip {record.question_id}: {got.reason} ({got.detail})", file=sys.stderr)
                continue
            line, record_turns = got
            sink.write(json.dumps(line, ensure_ascii=False) + "\n")
            sink.flush()
            done.add(record.question_id)
            turns += record_turns
            written += 1
            running = latency_split(turns)
            bar.set_postfix_str(f"{running['turns']} turns, latency median {running['latency_median_s'] * 1e3:.0f} ms "
                                f"p95 {running['latency_p95_s'] * 1e3:.0f} ms, {sum(skipped.values())} skipped")
    return {"written": written, "already_done": resumed, "skipped": dict(skipped), **latency_split(turns)}


def load_everything(args, gold: list[GoldRecord], cfg: EvalConfig):
    path = args.model
    if args.preset == "tiny":
        from training.model import prepare_tiny_checkpoint

        texts = [t.text for r in gold for t in r.turns if t.text] if gold and isinstance(gold[0], FrameInputRecord) \
            else [r.question for r in gold] + [a.content for r in gold for a in r.answers]
        path = str(prepare_tiny_checkpoint(texts, args.out.parent / "tiny-model"))
    return load_eval_model(path, args.device, cfg)


def load_eval_model(path: str, device: str | None, cfg: EvalConfig):
    """(model in eval mode on `device`, renderer, image processor) of a checkpoint; device None: cuda if available."""
    import torch

    from training.model import load_image_processor, load_model, load_tokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = load_model(path, dtype=dtype).to(device).eval()
    tokenizer = load_tokenizer(path)
    return model, TurnRenderer(tokenizer, cfg.system_prompt), load_image_processor(path, cfg.max_pixels)


def main(args, checked: tuple[EvalConfig, list, Path]) -> int:
    """`python -m training.run eval ...`: `checked` is `check(args)`, run by training.run before importing this."""
    cfg, records, root = checked
    model, renderer, image_processor = load_everything(args, records, cfg)
    summary = evaluate(records, root, args.out, model, renderer, image_processor, cfg)
    latency_path(args.out).write_text(json.dumps({**summary, "config": cfg.model_dump()}, indent=2) + "\n",
                                      encoding="utf-8")
    def median(turns: int, key: str) -> str:  # a group with no turn has no median (not "0.0 ms")
        return f"{turns} turns, median {summary[key] * 1e3:.1f} ms" if turns else "no turns"

    latency = (f"per-turn decision latency over {median(summary['turns'], 'latency_median_s')}, p95 "
               f"{summary['latency_p95_s'] * 1e3:.1f} ms; silent {median(summary['silent_turns'], 'silent_latency_median_s')}; "
               f"spoken {median(summary['spoken_turns'], 'spoken_latency_median_s')}; frames ingested before each "
               f"decision: median {summary['ingest_median_s'] * 1e3:.1f} ms" if summary["turns"] else "no turn streamed")
    print(f"{summary['written']} written, {summary['already_done']} already done, skipped {summary['skipped']}; {latency}")
    print(json.dumps(summary))
    return 0
