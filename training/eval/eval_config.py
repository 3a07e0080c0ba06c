"""The `eval` command's settings (`EvalConfig`, the published values as defaults), its command line,
and the checks that run before torch is imported (`training.run` calls `check`, then imports
`training.eval.evaluate`, whose `main` streams the records).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.cli import UsageError
from training import checkpoints
from training.data.chat_template import DEFAULT_SYSTEM_PROMPT
from training.eval.proactive_format import gold_files, read_frame_input, read_gold


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds_per_frame: float = Field(2.0, gt=0)  # FACTS.md: frame interval 2 s by default
    max_frames: int = Field(90, ge=1)  # FACTS.md: 90 frames at 2 s/frame
    frames_per_turn: int = Field(2, ge=1)  # FACTS.md: 2 frames per user turn
    max_pixels: int = Field(128 * 28 * 28, ge=56 * 56)  # FACTS.md: 128 visual tokens per frame
    max_new_tokens_per_turn: int = Field(100, ge=1)  # FACTS.md: at most 100 new tokens per turn
    system_prompt: str = DEFAULT_SYSTEM_PROMPT  # FACTS.md system prompt gist
    draft_no_reply: bool = True  # verify `NO REPLY` in the turn's own forward (same outputs, faster silence)
    # Frames into the cache first, then the decision forward: latency counts the decision (training.streaming)
    ingest_frames_first: bool = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="checkpoint folder or hub name")
    which.add_argument("--preset", choices=["tiny"], help="tiny: a random tiny Qwen2.5-VL, no download")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, nargs="+",
                        help="gold files (JSON list or JSONL) or folders of <TASK>/anno.json")
    source.add_argument("--frame-input", type=Path, help="a per-turn frame-input file (frames as files)")
    parser.add_argument("--videos", type=Path, help="folder holding the records' videos (with --data)")
    parser.add_argument("--frames-root", type=Path, default=None,
                        help="folder the frame-input's image paths are relative to (default: its folder)")
    parser.add_argument("--category", default=None, help="category of every gold record (default: folder or file name)")
    parser.add_argument("--out", type=Path, required=True, help="prediction JSONL (appended; resumes)")
    defaults = EvalConfig()
    parser.add_argument("--seconds-per-frame", type=float, default=defaults.seconds_per_frame)
    parser.add_argument("--max-frames", type=int, default=defaults.max_frames)
    parser.add_argument("--max-pixels", type=int, default=defaults.max_pixels)
    parser.add_argument("--max-new-tokens-per-turn", type=int, default=defaults.max_new_tokens_per_turn)
    parser.add_argument("--no-draft", action="store_true",
                        help="decode NO REPLY token by token instead of verifying it in one forward")
    parser.add_argument("--frames-in-decision", action="store_true",
                        help="encode each turn's frames in its decision forward (one call per turn; latency "
                             "then includes the frames), not in a forward of their own before it")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")


def check(args: argparse.Namespace) -> tuple[EvalConfig, list, Path]:
    """(settings, the records to stream, the folder their videos or frames are in), with the model
    checked to be loadable; a mistake is a UsageError."""
    try:
        cfg = EvalConfig(seconds_per_frame=args.seconds_per_frame, max_frames=args.max_frames,
                         max_pixels=args.max_pixels, max_new_tokens_per_turn=args.max_new_tokens_per_turn,
                         draft_no_reply=not args.no_draft, ingest_frames_first=not args.frames_in_decision)
        if args.frame_input is not None:
            records = read_frame_input(args.frame_input)
            root = args.frames_root or args.frame_input.parent
        else:
            if args.videos is None:
                raise ValueError("--data needs --videos")
            records = [r for path in gold_files(args.data) for r in read_gold(path, args.category)]
            root = args.videos
    except (ValidationError, ValueError, OSError) as error:
        raise UsageError(f"eval: {error}", "check --data/--frame-input and the frame options") from None
    checkpoints.require_model(args.model, args.preset)
    return cfg, records, root
