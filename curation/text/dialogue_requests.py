"""The LLM requests of dialogue writing: the prompt, the schema narrowed to the video, the repair.

Every request carries `schemas.llm_output.request_schema` for its video: segment ids as an enum of
the video's own ids, lists bounded by its segment count and the configured answer and question
bounds, every text bounded. The client sends it as the structured-output constraint and checks the
reply against it, so a server without structured outputs meets the same rules.

The compact shape (`DialogueConfig.output_shape: compact`) asks for one reply per segment in order
(`NO REPLY` for silence) and no ids; for multi_question, code splits the segments into one part per
question (`question_parts`), each asked at its part's first segment.
"""

from __future__ import annotations

from curation.llm.client import LLMRequest
from curation.text.config import DialogueConfig
from curation.text.prompts import Prompt, load_prompt
from schemas.llm_output import RequestBounds, request_schema
from schemas.records import Scene, Segment, Video


def render_segments(segments: list[Segment], scenes: list[Scene]) -> str:
    """`[<segment_id>] 12.0-18.5 s: text` lines, with a line at each scene boundary."""
    events: list[tuple[float, int, str]] = [
        (sc.start_s, 0, f"-- scene {sc.scene_id}: {sc.start_s:.1f}-{sc.end_s:.1f} s --") for sc in scenes]
    events += [(s.start_s, 1, f"[{s.segment_id}] {s.start_s:.1f}-{s.end_s:.1f} s: {s.text}") for s in segments]
    return "\n".join(line for _, _, line in sorted(events, key=lambda e: (e[0], e[1])))


def question_parts(segment_count: int, cfg: DialogueConfig) -> list[int]:
    """Compact multi_question: segments per question, in order. About one question per three
    segments within the configured bounds, the segments split as evenly as they go."""
    k = max(cfg.min_questions, min(cfg.max_questions, round(segment_count / 3)))
    k = max(1, min(k, segment_count))
    base, extra = divmod(segment_count, k)
    return [base + (1 if i < extra else 0) for i in range(k)]


def schema_name(kind: str, cfg: DialogueConfig) -> str:
    return f"{kind}_compact" if cfg.output_shape == "compact" else kind


def _prompt_for(kind: str, cfg: DialogueConfig) -> Prompt:
    version = cfg.single_question_prompt if kind == "single_question" else cfg.multi_question_prompt
    name = schema_name(kind, cfg)
    return load_prompt(name, version if name == kind else None)


def _parts_text(segments: list[Segment], parts: list[int]) -> str:
    lines, start = [], 0
    for i, size in enumerate(parts):
        first, last = segments[start], segments[start + size - 1]
        lines.append(f"Question {i + 1}: asked at the start of [{first.segment_id}]; {size} "
                     f"repl{'y' if size == 1 else 'ies'}, for [{first.segment_id}] to [{last.segment_id}]")
        start += size
    return "\n".join(lines)


def build_request(kind: str, video: Video, segments: list[Segment], scenes: list[Scene], cfg: DialogueConfig,
                  tag: str, earlier_questions: list[str]) -> LLMRequest:
    prompt = _prompt_for(kind, cfg)
    name = schema_name(kind, cfg)
    parts = question_parts(len(segments), cfg) if name == "multi_question_compact" else []
    bounds = RequestBounds(tuple(s.segment_id for s in segments), cfg.min_answers, cfg.max_answers,
                           cfg.min_questions, cfg.max_questions, cfg.max_question_chars, cfg.max_answer_chars,
                           tuple(parts), cfg.max_cited_segments)
    values = {"min_answers": cfg.min_answers, "max_answers": cfg.max_answers, "min_questions": cfg.min_questions,
              "max_questions": cfg.max_questions, "max_question_chars": cfg.max_question_chars,
              "max_answer_chars": cfg.max_answer_chars}
    avoid = ""
    if earlier_questions:
        avoid = "Already asked about this video (ask about something else):\n" + "\n".join(
            f"- {q}" for q in earlier_questions) + "\n"
    user = prompt.render_user(video_id=video.video_id, duration_s=f"{video.duration_s:.1f}", avoid=avoid,
                              segments=render_segments(segments, scenes), segment_count=len(segments),
                              parts=_parts_text(segments, parts) if parts else "", **values)
    messages = [{"role": "system", "content": prompt.render_system(**values)}, {"role": "user", "content": user}]
    return LLMRequest(messages=messages, schema_name=name, response_schema=request_schema(name, bounds),
                      prompt_version=prompt.prompt_version, temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                      tag=tag)


def build_repair_request(original: LLMRequest, bad_text: str, problems: list[str], cfg: DialogueConfig) -> LLMRequest:
    prompt = load_prompt("repair", cfg.repair_prompt)
    follow_up = prompt.render_user(problems="\n".join(f"- {p}" for p in problems))
    messages = [*original.messages, {"role": "assistant", "content": bad_text},
                {"role": "user", "content": follow_up}]
    return original.model_copy(update={"messages": messages, "tag": f"{original.tag}/repair",
                                       "prompt_version": f"{original.prompt_version}+{prompt.prompt_version}"})
