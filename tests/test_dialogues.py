"""Dialogue writing through the real LLM client: windows grounded by construction, mix control,
the one repair attempt, quarantine, and the sample through the replay backend (cache: zero calls
and identical records on a second run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curation.config import load_config
from curation.llm.client import LLMClient, LLMConfig
from curation.llm.replay_build import run_sample
from curation.text.dialogue_validation import dialogue_problems
from curation.text.dialogues import (
    DialogueConfig,
    DialogueOutcome,
    dialogue_count,
    dialogue_from_output,
    generate_dialogues,
    plan_kinds,
)
from curation.text.source_text import read_source_segments
from schemas.records import Dialogue, Provenance, Video
from tests.conftest import SAMPLES
from tests.openai_stub import Reply, StubServer

SEGMENTS = read_source_segments(SAMPLES / "text" / "bikes.csv", "bikes")
BIKES = Video(video_id="bikes", source="sample-real", uri="videos/bikes.mp4", sha256="0" * 64, bytes=1,
              duration_s=10.0, fps=25.0, width=640, height=272, codec="h264", has_audio=False)
PROV = Provenance(generator="tests", model="m", prompt_version="p")
ONE_SINGLE = DialogueConfig(min_dialogues=1, max_dialogues=1, single_question_share=1.0)

GOOD_SINGLE = {"question": "What kinds of traffic go by on this street?", "answers": [
    {"segment_ids": ["bikes-s0002"], "answer": "A taxi passes so close that only its roof is in view."},
    {"segment_ids": ["bikes-s0003", "bikes-s0004"], "answer": "A van waits while a cyclist and then cars go by."}]}
BAD_SINGLE = {"question": "Does a cyclist in dark clothes ride past a small van?", "answers": [
    {"segment_ids": ["bikes-s0003"], "answer": "A cyclist in dark clothes rides past a small van."}]}
MULTI = {"questions": [
    {"question": "Who is walking along here?", "asked_at_segment": "bikes-s0000", "immediate_reply": None,
     "answers": [{"segment_ids": ["bikes-s0001"], "answer": "A man in a dark suit and tie."}]},
    {"question": "What is chained up near the bollards?", "asked_at_segment": "bikes-s0005",
     "immediate_reply": "Nothing has been chained up so far.",
     "answers": [{"segment_ids": ["bikes-s0005"], "answer": "A bicycle, locked to a railing."}]}]}


def stub_client(stub: StubServer, tmp_path: Path | None = None) -> LLMClient:
    return LLMClient(LLMConfig(base_url=stub.url, api_key="sk-test", model="stub-model", max_retries=0,
                               timeout_s=10, cache_dir=str(tmp_path) if tmp_path else None))


# --- planning -----------------------------------------------------------------------------------
def test_dialogue_count_grows_with_length_within_bounds():
    cfg = DialogueConfig()
    assert [dialogue_count(d, cfg) for d in (5, 92.7, 164.4, 241, 400, 3600)] == [2, 2, 2, 3, 4, 4]


@pytest.mark.parametrize("share", [0.5, 0.25, 0.8])
def test_mix_share_holds_over_many_videos_and_is_stable(share):
    cfg = DialogueConfig(single_question_share=share)
    kinds = [k for i in range(3000) for k in plan_kinds(f"v{i:05d}", 60.0, 10, cfg)]
    assert abs(kinds.count("single_question") / len(kinds) - share) < 0.02
    assert plan_kinds("v00042", 60.0, 10, cfg) == plan_kinds("v00042", 60.0, 10, cfg)


def test_default_mix_gives_two_dialogue_videos_one_of_each():
    for i in range(200):
        assert plan_kinds(f"v{i}", 60.0, 10, DialogueConfig()) == ["single_question", "multi_question"]


def test_too_few_segments_for_several_questions_means_single_question_only():
    assert plan_kinds("v", 60.0, 1, DialogueConfig()) == ["single_question", "single_question"]


# --- grounding by construction ------------------------------------------------------------------
def test_windows_are_the_span_of_the_cited_segments():
    dialogue, problems = dialogue_from_output("single_question", GOOD_SINGLE, "bikes-d0", BIKES, SEGMENTS, PROV,
                                              DialogueConfig())
    assert problems == []
    assert [(r.reply_span, r.evidence) for r in dialogue.references] == [
        ((3.0, 4.0), ["bikes-s0002"]), ((4.0, 7.5), ["bikes-s0003", "bikes-s0004"])]
    assert [t.time_s for t in dialogue.user_turns] == [0.0]
    assert dialogue_problems(dialogue, SEGMENTS, DialogueConfig()) == []


def test_multi_question_times_come_from_segments_and_immediate_replies_sit_at_the_question():
    dialogue, problems = dialogue_from_output("multi_question", MULTI, "bikes-d1", BIKES, SEGMENTS, PROV,
                                              DialogueConfig())
    assert problems == [] and dialogue_problems(dialogue, SEGMENTS, DialogueConfig()) == []
    assert [(t.question_id, t.time_s) for t in dialogue.user_turns] == [("bikes-d1-q0", 0.0), ("bikes-d1-q1", 7.5)]
    immediate = [r for r in dialogue.references if r.immediate]
    assert [(r.question_id, r.reply_span, r.evidence) for r in immediate] == [("bikes-d1-q1", (7.5, 8.5), [])]


@pytest.mark.parametrize("segment_id", ["bikes-s0042", "bigbuckbunny-s0001", "bikes-s0001; DROP", "12.5"])
def test_ids_outside_the_video_are_rejected(segment_id):
    bad = json.loads(json.dumps(GOOD_SINGLE))
    bad["answers"][1]["segment_ids"] = [segment_id]
    _, problems = dialogue_from_output("single_question", bad, "bikes-d0", BIKES, SEGMENTS, PROV, DialogueConfig())
    assert any(f"cites {segment_id!r}, which is not one of the listed segment ids" in p for p in problems)
    moved = json.loads(json.dumps(MULTI))
    moved["questions"][1]["asked_at_segment"] = segment_id
    _, problems = dialogue_from_output("multi_question", moved, "bikes-d1", BIKES, SEGMENTS, PROV, DialogueConfig())
    assert any("asked_at_segment" in p for p in problems)


# --- repair and quarantine through a real HTTP server --------------------------------------------
def test_a_bad_answer_is_repaired_once(tmp_path):
    with StubServer([Reply.json(BAD_SINGLE), Reply.json(GOOD_SINGLE)]) as stub, stub_client(stub) as client:
        outcome = generate_dialogues(BIKES, SEGMENTS, [], client, ONE_SINGLE)
    assert outcome.quarantined == [] and len(outcome.dialogues) == 1
    dialogue = outcome.dialogues[0]
    assert dialogue.provenance.parameters["repaired"] == "true"
    assert dialogue.provenance.prompt_version == "single_question.v2+repair.v1"
    assert dialogue.user_turns[0].text == GOOD_SINGLE["question"]
    first, repair = stub.requests
    assert repair["messages"][: len(first["messages"])] == first["messages"]
    assert json.loads(repair["messages"][-2]["content"]) == BAD_SINGLE
    assert "gives its answer away" in repair["messages"][-1]["content"]
    tally = outcome.tally
    assert (tally["attempted"], tally["valid_first_try"], tally["valid_after_repair"], tally["quarantined"]) == (
        1, 0, 1, 0)
    assert tally["completion_tokens"] == 2 * 7  # the first answer and the repair (the stub says 7 each)


def test_still_bad_after_repair_is_quarantined_with_its_reasons():
    with StubServer([Reply.json(BAD_SINGLE), Reply.json(BAD_SINGLE)]) as stub, stub_client(stub) as client:
        outcome = generate_dialogues(BIKES, SEGMENTS, [], client, ONE_SINGLE)
    assert outcome.dialogues == [] and len(stub.requests) == 2
    (row,) = outcome.quarantined
    assert (row.item_id, row.video_id, row.stage, row.reason) == ("bikes-d0", "bikes", "dialogues", "invalid_dialogue")
    assert "after one repair" in row.detail and "gives its answer away" in row.detail
    assert outcome.tally["attempted"] == outcome.tally["quarantined"] == 1


def test_truncated_json_gets_the_repair_attempt_too():
    truncated = json.dumps(GOOD_SINGLE)[:40]
    with StubServer([Reply.text(truncated), Reply.json(GOOD_SINGLE)]) as stub, stub_client(stub) as client:
        outcome = generate_dialogues(BIKES, SEGMENTS, [], client, ONE_SINGLE)
    assert len(outcome.dialogues) == 1 and outcome.dialogues[0].provenance.parameters["repaired"] == "true"
    assert stub.requests[1]["messages"][-2]["content"] == truncated


@pytest.mark.parametrize("reply, reason", [(Reply.error(400, "bad request"), "llm_rejected"),
                                           (Reply.error(500, "boom"), "llm_failed"),
                                           (Reply.text(""), "llm_empty")])
def test_llm_failures_are_quarantined_with_the_failure_reason(reply, reason):
    with StubServer(reply) as stub, stub_client(stub) as client:
        outcome = generate_dialogues(BIKES, SEGMENTS, [], client, ONE_SINGLE)
    assert outcome.dialogues == [] and [q.reason for q in outcome.quarantined] == [reason]
    # No repair for a failure without an answer (the backend may retry without structured output).
    assert not any(m["role"] == "assistant" for body in stub.requests for m in body["messages"])


def test_no_segments_is_one_quarantine_row_and_no_call():
    with StubServer(Reply.json(GOOD_SINGLE)) as stub, stub_client(stub) as client:
        outcome = generate_dialogues(BIKES, [], [], client, DialogueConfig())
    assert [q.reason for q in outcome.quarantined] == ["no_segments"] and stub.requests == []


def test_later_prompts_list_the_questions_already_asked():
    with StubServer([Reply.json(GOOD_SINGLE), Reply.json(MULTI)]) as stub, stub_client(stub) as client:
        outcome = generate_dialogues(BIKES, SEGMENTS, [], client, DialogueConfig())
    assert [d.kind for d in outcome.dialogues] == ["single_question", "multi_question"]
    assert GOOD_SINGLE["question"] in stub.requests[1]["messages"][1]["content"]
    assert "[bikes-s0003] 4.0-6.0 s: A small van" in stub.requests[0]["messages"][1]["content"]


# --- the sample through the replay backend ------------------------------------------------------
def _replay_run(tmp_path: Path) -> tuple[dict, dict]:
    config = load_config(SAMPLES / "sample.yaml", {"llm.cache_dir": str(tmp_path / "cache")})
    with LLMClient(config.llm) as client:
        results = run_sample(config, client, tmp_path / "work")
        return results, client.usage_snapshot()


def test_sample_videos_get_both_dialogue_types_all_valid_and_a_rerun_is_free(tmp_path):
    first, usage = _replay_run(tmp_path)
    outcomes = {k: v for k, v in first.items() if isinstance(v, DialogueOutcome)}
    assert set(outcomes) == {"bikes", "bigbuckbunny", "generated_four_scenes", "generated_six_scenes", "spoken_tour"}
    # 6 captions, 10 dialogues, 1 repair; the one failure is the flawed first answer, whose invented id
    # the request's enum refuses at parse
    assert usage["failures"] == 1 and usage["calls"] == 17
    for outcome in outcomes.values():
        assert outcome.quarantined == []
        assert sorted(d.kind for d in outcome.dialogues) == ["multi_question", "single_question"]
        for d in outcome.dialogues:
            assert Dialogue.model_validate(d.model_dump()) == d
    assert outcomes["bikes"].dialogues[0].provenance.parameters["repaired"] == "true"
    again, usage2 = _replay_run(tmp_path)
    # Only answers that parse are cached: the refused first answer is asked again, the rest is free.
    assert usage2["calls"] == 1 and usage2["cache_hits"] == 16
    assert {k: v.dialogues for k, v in again.items() if isinstance(v, DialogueOutcome)} == {
        k: v.dialogues for k, v in outcomes.items()}


def test_prompts_are_versioned_files(tmp_path):
    from curation.text.prompts import load_prompt, parse_prompt

    newest = {"single_question": 2, "multi_question": 2, "scene_caption": 1, "repair": 1,
              "single_question_compact": 1, "multi_question_compact": 1}
    for name, version in newest.items():
        prompt = load_prompt(name)
        assert prompt.prompt_version == f"{name}.v{version}" and prompt.system and prompt.user_template
        assert load_prompt(name, 1).prompt_version == f"{name}.v1"  # old versions stay loadable
    with pytest.raises(FileNotFoundError):
        load_prompt("single_question", 99)
    with pytest.raises(ValueError, match="needs exactly"):
        parse_prompt("x", "v1", "## user\nonly a user part")


# --- the compact shape ------------------------------------------------------------------------
COMPACT = DialogueConfig(min_dialogues=2, max_dialogues=2, single_question_share=0.5, output_shape="compact")
COMPACT_SINGLE = {"question": "What kinds of traffic go by on this street?", "replies": [
    "NO REPLY", "NO REPLY", "A taxi passes so close that only its roof is in view.",
    "A van waits while a cyclist rides past it.", "NO REPLY", "NO REPLY"]}
COMPACT_MULTI = {"questions": [
    {"question": "Who is walking along here?", "immediate_reply": None,
     "replies": ["NO REPLY", "A man in a dark suit and tie.", "NO REPLY"]},
    {"question": "What is chained up near the bollards?", "immediate_reply": "Nothing has been chained up so far.",
     "replies": ["NO REPLY", "NO REPLY", "A bicycle, locked to a railing."]}]}


def test_compact_replies_give_the_same_records_as_cited_ones():
    with StubServer([Reply.json(COMPACT_SINGLE), Reply.json(COMPACT_MULTI)]) as stub, stub_client(stub) as client:
        compact = generate_dialogues(BIKES, SEGMENTS, [], client, COMPACT)
    full_single = {"question": COMPACT_SINGLE["question"], "answers": [
        {"segment_ids": ["bikes-s0002"], "answer": COMPACT_SINGLE["replies"][2]},
        {"segment_ids": ["bikes-s0003"], "answer": COMPACT_SINGLE["replies"][3]}]}
    # Code asked question 2 at the first segment of the second run of three.
    full_multi = {"questions": [
        {**{k: v for k, v in COMPACT_MULTI["questions"][0].items() if k != "replies"}, "asked_at_segment": "bikes-s0000",
         "answers": [{"segment_ids": ["bikes-s0001"], "answer": "A man in a dark suit and tie."}]},
        {**{k: v for k, v in COMPACT_MULTI["questions"][1].items() if k != "replies"}, "asked_at_segment": "bikes-s0003",
         "answers": [{"segment_ids": ["bikes-s0005"], "answer": "A bicycle, locked to a railing."}]}]}
    with StubServer([Reply.json(full_single), Reply.json(full_multi)]) as stub2, stub_client(stub2) as client:
        full = generate_dialogues(BIKES, SEGMENTS, [], client, COMPACT.model_copy(update={"output_shape": "full"}))
    assert compact.quarantined == [] == full.quarantined
    strip = lambda d: d.model_dump(exclude={"provenance": {"prompt_version", "parameters", "created_at"}})  # noqa: E731
    assert [strip(d) for d in compact.dialogues] == [strip(d) for d in full.dialogues]
    body = stub.requests[0]
    assert body["response_format"]["json_schema"]["name"] == "single_question_compact"
    replies = body["response_format"]["json_schema"]["schema"]["properties"]["replies"]
    assert replies["minItems"] == replies["maxItems"] == len(SEGMENTS)
    multi = stub.requests[1]["response_format"]["json_schema"]["schema"]["properties"]["questions"]
    assert multi["minItems"] == multi["maxItems"] == 2
    assert "Question 2: asked at the start of [bikes-s0003]" in stub.requests[1]["messages"][1]["content"]


def test_a_compact_reply_with_the_wrong_number_of_replies_is_sent_back():
    short = {"question": COMPACT_SINGLE["question"], "replies": COMPACT_SINGLE["replies"][:4]}
    one = COMPACT.model_copy(update={"min_dialogues": 1, "max_dialogues": 1, "single_question_share": 1.0})
    with StubServer([Reply.json(short), Reply.json(COMPACT_SINGLE)]) as stub, stub_client(stub) as client:
        outcome = generate_dialogues(BIKES, SEGMENTS, [], client, one)
    assert len(outcome.dialogues) == 1 and outcome.tally["valid_after_repair"] == 1
    assert "4 items; give at least 6" in stub.requests[1]["messages"][-1]["content"]


def test_every_request_carries_its_videos_ids_as_an_enum_and_bounded_lists():
    with StubServer([Reply.json(GOOD_SINGLE), Reply.json(MULTI)]) as stub, stub_client(stub) as client:
        generate_dialogues(BIKES, SEGMENTS, [], client, DialogueConfig())
    ids = [s.segment_id for s in SEGMENTS]
    single = stub.requests[0]["response_format"]["json_schema"]["schema"]
    cited = single["properties"]["answers"]["items"]["properties"]
    assert cited["segment_ids"]["items"]["enum"] == ids and cited["segment_ids"]["maxItems"] == 4
    assert single["properties"]["answers"]["maxItems"] == 6 and cited["answer"]["maxLength"] == 300
    asked = stub.requests[1]["response_format"]["json_schema"]["schema"]["properties"]["questions"]
    assert asked["items"]["properties"]["asked_at_segment"]["enum"] == ids and asked["maxItems"] == 4
