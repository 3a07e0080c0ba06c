"""The dataset card's fixed prose: what every field means, how reply windows and `NO REPLY` work,
how to cite, limitations and biases, and a link per licence.

Kept apart from `card.py` (which computes the numbers) so the words can be read and edited in one
place. Field meanings follow `schemas.records`; a test checks every stored column is described.
"""

from __future__ import annotations

import re

# table -> [(column, meaning)]; nested columns are dotted as `datasets` shows them.
FIELDS: dict[str, list[tuple[str, str]]] = {
    "dialogues": [
        ("dialogue_id", "`<video_id>-dN`; unique in the corpus"),
        ("video_id", "the video this dialogue is about (a row of `videos`)"),
        ("kind", "`single_question`: one question at the start, answered as the video shows it; "
                 "`multi_question`: questions asked along the video, each answered in its window"),
        ("duration_s", "the video's duration in seconds"),
        ("user_turns[].question_id", "`<dialogue_id>-qN`"),
        ("user_turns[].time_s", "when the user asks, in seconds from the start of the video"),
        ("user_turns[].text", "the question"),
        ("references[].question_id", "the question this answer belongs to (one question may have several answers)"),
        ("references[].question", "the question's text, repeated so a reference reads on its own"),
        ("references[].answer", "the reference reply"),
        ("references[].reply_span", "`[start_s, end_s]`: the window in which this reply should be given"),
        ("references[].evidence", "ids of the `segments` rows (`<video_id>-sNNNN`) the answer rests on; "
                                  "the window spans them"),
        ("references[].immediate", "true for the reply due as soon as a mid-video question is asked "
                                   "(a summary of what was seen so far); its window starts at the question (1 s long by default)"),
        ("provenance.generator", "the stable name of the code that wrote the row"),
        ("provenance.model", "the LLM that wrote it (`replay` answers are hand-written)"),
        ("provenance.prompt_version", "the prompt file version (`prompts/<name>.vN.md`)"),
        ("provenance.parameters", "generation parameters, as sorted `{key, value}` entries"),
        ("provenance.created_at", "when the row was written (UTC)"),
        ("quality.grounding", "quality gate: the least grounded answer's share of content words found in the "
                              "segments it cites (null `quality`: the gate was off)"),
        ("quality.max_answer_similarity", "quality gate: the largest similarity between two answers"),
        ("quality.max_restatement", "quality gate: the largest share of an answer's words that are its question's"),
        ("quality.repetition", "quality gate: the largest share of repeated word 3-grams in one text"),
        ("quality.gate", "the version of the gate's rules"),
    ],
    "videos": [
        ("video_id", "a safe file name; the key every other table refers to"),
        ("source", "the source family from the manifest (admission rules are chosen by it)"),
        ("uri", "the URL the video was fetched from (http(s)://, hf://, s3://, gs://, `youtube:ID`), to fetch "
                "it again and check it against `sha256`; `local:<file name>` when the builder read a file of "
                "its own (not fetchable: the video is identified by `sha256`)"),
        ("path", "the local copy, relative to the corpus root (video bytes are not in the shards)"),
        ("sha256", "the checksum of the acquired file, to verify a download"),
        ("bytes", "file size"),
        ("duration_s", "duration in seconds"),
        ("fps", "frames per second"),
        ("width", "frame width in pixels"),
        ("height", "frame height in pixels"),
        ("codec", "video codec"),
        ("has_audio", "whether the file has an audio stream"),
        ("licence", "the licence recorded in the manifest, as written there"),
        ("metadata", "other manifest columns, as sorted `{key, value}` entries"),
    ],
    "segments": [
        ("segment_id", "`<video_id>-sNNNN`, in time order"),
        ("video_id", "the video"),
        ("start_s", "start in seconds"),
        ("end_s", "end in seconds"),
        ("text", "what happens or is said in the span"),
        ("origin", "`asr` (speech), `narration` (shipped with the source) or `caption` (a vision LLM's)"),
        ("scene_id", "the scene a caption describes, if any"),
    ],
    "scenes": [
        ("video_id", "the video"),
        ("scene_id", "0, 1, ... in time order"),
        ("start_s", "start in seconds"),
        ("end_s", "end in seconds"),
        ("detector", "`adaptive`, `content` or `split-long` (a long scene cut into pieces)"),
        ("score", "the detector's score at the cut that opens the scene"),
    ],
    "quarantine": [
        ("item_id", "the video or dialogue id left out (may be unsafe: that can be why)"),
        ("video_id", "its video"),
        ("stage", "the pipeline stage that left it out (`manifest`, `acquire`, `probe`, ...)"),
        ("reason", "a stable code, e.g. `truncated`, `not_video`, `too_short`"),
        ("detail", "what was found, in words"),
        ("raw_replies", "for a failed LLM request: its raw replies (first try and repair), a JSON file under "
                        "the build folder's `work/llm_replies/`"),
        ("kind", "`skip` (a rule said no) or `error` (a crash, retried on the next build)"),
        ("created_at", "when it was recorded (UTC)"),
    ],
}


def fields_section(tables: list[str]) -> list[str]:
    lines = ["## Fields", ""]
    for table in tables:
        if table in FIELDS:
            lines += [f"### `{table}`", "", "| field | meaning |", "|---|---|"]
            lines += [f"| `{name}` | {meaning} |" for name, meaning in FIELDS[table]]
            lines.append("")
    return lines


def windows_section() -> list[str]:
    return ["## How reply windows and `NO REPLY` work", "",
            "The corpus stores dialogues, not episodes: a trainer turns each one into an episode at "
            "read time. The video is streamed as user turns of 2 frames, one frame every 2 s (at "
            "most 90 frames); a turn's time is that of its last frame. A question enters as text at "
            "the first turn at or after its `time_s`. After every turn the assistant either replies "
            "or outputs the literal `NO REPLY`.", "",
            "Each reference answer is due inside its `reply_span`: the span of the segments it cites "
            "as `evidence`, so the reply comes once the frames have shown the answer, not before. "
            "For supervised training the answer sits at the last turn inside its window (MMDuet2's "
            "choice; `answer_position=start` is the other option); an `immediate` reply sits at its "
            "question's own turn. Every other turn's target is `NO REPLY`. Reinforcement learning "
            "and the ProactiveVideoQA metric (PAUC) instead reward a reply by how early in the window "
            "it comes and how well it matches the answer.", "",
            "A `single_question` dialogue asks once at the start and expects one or more replies as "
            "the video unfolds; a `multi_question` dialogue asks along the video, and each question "
            "may get an `immediate` reply (a 1 s window at the question, by default) and answers in later windows.", ""]


CITATION = """```bibtex
@inproceedings{wang2026mmduet2,
  title     = {MMDuet2: Enhancing Proactive Interaction of Video MLLMs with Multi-Turn Reinforcement Learning},
  author    = {Wang, Yueqian and Liu, Songxiang and Wang, Disong and Xu, Nuo and Wan, Guanglu and Zhang, Huishuai and Zhao, Dongyan},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2026},
  note      = {arXiv:2512.06810}
}

@article{wang2025proactivebench,
  title   = {ProactiveBench: A Comprehensive Benchmark Evaluating Proactive Interactions in Video Large Language Models},
  author  = {Wang, Yueqian and Meng, Xiaojun and Wang, Yifan and Zhang, Huishuai and Zhao, Dongyan},
  journal = {arXiv preprint arXiv:2507.09313},
  year    = {2025}
}
```"""


def citation_section() -> list[str]:
    return ["## Citation", "",
            "The dialogue format and the training method follow MMDuet2; the evaluation format and "
            "the PAUC metric come from the ProactiveVideoQA benchmark (first released as "
            "ProactiveBench). If you use this data, cite them:", "", CITATION, ""]


def limitations_section(replay: bool) -> list[str]:
    lines = ["## Limitations and biases", ""]
    if replay:
        lines.append("- **This build's answers are hand-written replay answers, not a model's.** It "
                     "tests the pipeline end to end; do not train on it for results.")
    lines += [
        "- Dialogues are written by an LLM from segment text (ASR, narration or its own captions), "
        "not from watching the video: what the text misses, the dialogue misses, and a caption "
        "model's errors become reference answers. Validation checks structure and grounding "
        "(every answer cites segments; windows follow them), not truth.",
        "- Reply windows inherit the timing of the text they cite. Speech and narration often lead "
        "or lag what is shown; scene cuts decide caption boundaries.",
        "- English only; questions reflect the writing model's habits (phrasing, what it finds "
        "worth asking) more than real users'.",
        "- The sources decide what is shown: web video over-represents some places, people and "
        "activities. The `videos` table's `source` column says where each row comes from; check "
        "the statistics above before drawing conclusions from a subset.",
        "- Videos are not redistributed: a source that disappears makes its rows unusable; the "
        "`sha256` column tells whether a re-downloaded file is the same.",
        "- Quarantined items are listed with their reasons, so a filter's bias (for example "
        "against short or silent videos) can be measured rather than guessed.", ""]
    return lines


_SPDX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")
# SPDX ids without a version number; every other id carries one (CC-BY-4.0, Apache-2.0, ...).
_SPDX_UNVERSIONED = {"MIT", "ISC", "Unlicense", "Zlib", "WTFPL", "0BSD", "MIT-0", "Beerware"}


def licence_link(licence: str) -> str:
    """A link for a licence recorded as `SPDX-ID (free text)`; the SPDX list has a page per id.
    Free text with no id gets no link (a guess would be worse than none)."""
    head = licence.strip().split(" ", 1)[0] if licence else ""
    if not _SPDX.match(head) or not (any(c.isdigit() for c in head) or head in _SPDX_UNVERSIONED):
        return ""
    return f"https://spdx.org/licenses/{head}.html"
