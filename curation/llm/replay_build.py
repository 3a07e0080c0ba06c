"""Build the sample's replay file: every LLM request the sample run makes, answered by hand.

    python -m curation.llm.replay_build --config samples/sample.yaml \
        --answers samples/replay_answers.yaml --out samples/replay.jsonl

Runs the real stages on the sample manifest (acquire into a temp dir, probe, admit, scenes,
source text, descriptions, dialogues), exactly as `flows.video_pipeline.run_video` chains them,
with a client that answers each request from the YAML by its tag (`caption/<video>/<scene>`,
`dialogue/<video>/<kind>/<n>`, `.../repair`). Every answer given is written as a replay line
`{"key", "tag", "text"}`; the keys are the real client's keys for the config's model. The tool
then runs the stages again through the real `LLMClient` on the new file and fails unless every
request is answered and every dialogue is valid.

Rebuild whenever a prompt, a stage that shapes a prompt, or the sample changes: the keys change.
A tag the YAML lacks is listed with its rendered prompt, so the answer can be written.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from curation.config import CorpusConfig, load_config
from curation.llm.cache import write_replay
from curation.llm.client import LLMClient, LLMConfig, LLMFailure, LLMRequest, LLMResponse
from curation.llm.parse import parse_reply
from curation.manifest import read_manifest
from curation.skips import Skip, declare_reasons
from curation.speech.route import route_speech
from curation.text.descriptions import describe_video
from curation.text.dialogues import DialogueOutcome, generate_dialogues
from curation.text.source_text import clip_segments, read_source_segments
from curation.video.acquire import acquire_video
from curation.video.probe import admit, probe_video
from curation.video.scenes import detect_scenes
from schemas.cli import ArgumentParser, add_cli_flags, run_cli
from schemas.records import Video

declare_reasons(final=("replay_missing", "llm_invalid_json"))


class AnswerBook:
    """Stands in for `LLMClient` (same `cfg`, `key_for`, `complete`, `complete_many`): answers by
    tag from hand-written texts and records what it answered."""

    def __init__(self, cfg: LLMConfig, answers: dict[str, Any]):
        self.cfg = cfg.model_copy(update={"cache_dir": None})
        self.answers = answers
        self.recorded: dict[str, dict[str, str]] = {}
        self.missing: dict[str, LLMRequest] = {}

    def key_for(self, request: LLMRequest) -> str:
        return request.key(self.cfg.model, self.cfg.temperature, self.cfg.max_tokens, images="position")

    def complete(self, request: LLMRequest) -> LLMResponse | LLMFailure:
        key = self.key_for(request)
        answer = self.answers.get(request.tag)
        if answer is None:
            self.missing[request.tag] = request
            return LLMFailure(key, "replay_missing", f"no answer for tag {request.tag!r}")
        text = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
        self.recorded[key] = {"key": key, "tag": request.tag, "text": text}
        try:
            data = parse_reply(request.schema_name, text, request.response_schema) if request.schema_name else None
        except ValueError as exc:
            return LLMFailure(key, "llm_invalid_json", str(exc), text)
        return LLMResponse(key, text, data)

    def complete_many(self, requests: Sequence[LLMRequest]) -> list[LLMResponse | LLMFailure]:
        return [self.complete(r) for r in requests]


def run_sample(config: CorpusConfig, client: Any, work_dir: Path) -> dict[str, DialogueOutcome | Skip]:
    """The stages of `flows.video_pipeline.run_video` up to dialogues, per manifest row."""
    results: dict[str, DialogueOutcome | Skip] = {}
    for row in read_manifest(config.manifest).rows:
        acquired = acquire_video(row, work_dir / "videos", config.acquire)
        if isinstance(acquired, Skip):
            results[row.video_id] = acquired
            continue
        probe = probe_video(acquired.path)
        skip = probe if isinstance(probe, Skip) else admit(probe, row.source, config.admission)
        if skip is not None:
            results[row.video_id] = skip
            continue
        video = Video(video_id=row.video_id, source=row.source, uri=row.uri, path=acquired.path.name,
                      sha256=acquired.sha256, bytes=acquired.bytes, duration_s=probe.duration_s, fps=probe.fps,
                      width=probe.width, height=probe.height, codec=probe.codec, has_audio=probe.has_audio)
        scenes = detect_scenes(acquired.path, row.video_id, config.scenes, probe.duration_s)
        if isinstance(scenes, Skip):
            results[row.video_id] = scenes
            continue
        source = []
        if not row.text_uri:  # speech, when the video has enough of it (else captions)
            speech = route_speech(acquired.path, video, config.asr, work_dir / "transcripts")
            if isinstance(speech, Skip):
                results[row.video_id] = speech
                continue
            source = speech.segments
        else:
            source = read_source_segments(row.text_uri, row.video_id, row.text_format, row.text_origin)
            if isinstance(source, Skip):
                results[row.video_id] = source
                continue
            source = clip_segments(source, probe.duration_s)
        segments = describe_video(video, acquired.path, scenes, source, client, config.descriptions)
        if isinstance(segments, Skip):
            results[row.video_id] = segments
            continue
        results[row.video_id] = generate_dialogues(video, segments, scenes, client, config.dialogues)
    return results


def _report(results: dict[str, DialogueOutcome | Skip]) -> list[str]:
    lines = []
    for video_id, out in results.items():
        if isinstance(out, Skip):
            lines.append(f"{video_id}: skipped at {out}")
        else:
            kinds = [f"{d.dialogue_id}:{d.kind}:{d.provenance.parameters.get('repaired')}" for d in out.dialogues]
            bad = [f"{q.item_id}:{q.reason}:{q.detail}" for q in out.quarantined]
            lines.append(f"{video_id}: dialogues {kinds}; quarantined {bad}")
    return lines


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="python -m curation.llm.replay_build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--answers", required=True)
    parser.add_argument("--out", required=True)
    add_cli_flags(parser)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    answers = yaml.safe_load(Path(args.answers).read_text(encoding="utf-8")) or {}
    book = AnswerBook(config.llm, answers)
    with tempfile.TemporaryDirectory(prefix="replay-build-") as tmp:
        run_sample(config, book, Path(tmp))
        if book.missing:
            for tag, request in sorted(book.missing.items()):
                print(f"=== missing answer for {tag} ===", file=sys.stderr)
                for message in request.messages[1:]:
                    content = message["content"]
                    texts = [p.get("text", "<image>") for p in content] if isinstance(content, list) else [content]
                    print(f"[{message['role']}] " + "\n".join(texts), file=sys.stderr)
            print(f"{len(book.missing)} tags have no answer in {args.answers}", file=sys.stderr)
            return 1
        unused = sorted(set(answers) - {row["tag"] for row in book.recorded.values()})
        count = write_replay(args.out, sorted(book.recorded.values(), key=lambda r: (r["tag"], r["key"])))
        print(f"wrote {count} replay answers to {args.out}" + (f"; unused tags: {unused}" if unused else ""))
        # Check: the real client on the new file answers every request and every dialogue is valid.
        real = config.llm.model_copy(update={"backend": "replay", "replay_path": str(Path(args.out).resolve()),
                                             "cache_dir": None})
        with LLMClient(real) as client:
            checked = run_sample(config, client, Path(tmp))
            usage = client.usage_snapshot()
    lines = _report(checked)
    print("\n".join(lines))
    print(f"replay check: {usage}")
    quarantined = [q for out in checked.values() if isinstance(out, DialogueOutcome) for q in out.quarantined]
    # A refused first answer is a failure the repair answers (the sample's deliberately flawed one):
    # what must hold is that no dialogue ends in quarantine.
    return 1 if quarantined else 0


if __name__ == "__main__":
    sys.exit(main())
