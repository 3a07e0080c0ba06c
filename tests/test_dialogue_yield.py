"""The dialogue yield report (issue 21): counted per dialogue request by the dialogue stage, summed
by the run summary from real outcomes through a real HTTP server, and shown in the card. Each
quarantine reason SmolLM2-135M-Instruct triggered in the integration run has a minimal
reproduction here: an answer cut at max_tokens inside a runaway `segment_ids` list, and an answer
citing captions and time spans instead of segment ids."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from curation.corpus.card import render_card
from curation.llm.parse import parse_output
from curation.text.dialogues import generate_dialogues
from flows.summary import RunSummary
from schemas.llm_output import MAX_CITED_SEGMENTS, json_schema
from tests.openai_stub import Reply, StubServer
from tests.test_card import _build
from tests.test_dialogues import BAD_SINGLE, BIKES, GOOD_SINGLE, ONE_SINGLE, SEGMENTS, stub_client

# What SmolLM2 wrote (shortened): ids counted on past the listed ones until the token limit.
RUNAWAY_IDS = '{"question": "What goes by?", "answers": [{"segment_ids": [' + ", ".join(
    f'"bikes-s{i:05d}"' for i in range(40))
# And citations that are a segment's text and its time span instead of its id.
TEXT_CITES = {"question": "What does the camera show?", "answers": [
    {"segment_ids": ["A man in a dark suit walks past.", "1.8-3.6 s"], "answer": "A man walking."}]}


def _summary_of(outcomes, seconds: float) -> RunSummary:
    summary = RunSummary()
    for outcome in outcomes:
        summary.counts.update({f"dialogues_{k}": v for k, v in outcome.tally.items() if v})
        summary.quarantined.update(Counter((q.stage, q.reason, "skip") for q in outcome.quarantined))
    summary.durations_s["dialogues"] = seconds
    return summary


def test_runaway_id_list_cut_at_max_tokens_is_repaired_with_a_reason_then_quarantined():
    cut = Reply(content=RUNAWAY_IDS, finish_reason="length", completion_tokens=1024)
    with StubServer([cut, cut]) as stub, stub_client(stub) as client:
        outcome = generate_dialogues(BIKES, SEGMENTS, [], client, ONE_SINGLE)
    (row,) = outcome.quarantined
    assert row.reason == "invalid_dialogue" and "cut at max_tokens" in row.detail
    assert "ran past the token limit" in stub.requests[1]["messages"][-1]["content"]
    # The repair reply repeats the first word for word: counted as such.
    assert outcome.tally == Counter(attempted=1, quarantined=1, prompt_tokens=22, completion_tokens=2048,
                                    repair_repeated=1)


def test_cited_captions_and_time_spans_are_named_and_quarantined():
    with StubServer([Reply.json(TEXT_CITES), Reply.json(TEXT_CITES)]) as stub, stub_client(stub) as client:
        outcome = generate_dialogues(BIKES, SEGMENTS, [], client, ONE_SINGLE)
    (row,) = outcome.quarantined
    assert row.reason == "invalid_dialogue"
    # The request's schema lists the video's ids as an enum; the client checks the reply against it
    # (a server without structured outputs meets the same rule) and names the place in words.
    assert "answer 1, cited id 2: '1.8-3.6 s' is not one of the listed segment ids" in row.detail
    assert "answer 1, cited id 2" in stub.requests[1]["messages"][-1]["content"]


def test_the_structured_output_schema_bounds_the_cited_ids():
    cited = json_schema("single_question")["$defs"]["CitedAnswer"]["properties"]["segment_ids"]
    assert cited["maxItems"] == MAX_CITED_SEGMENTS
    too_many = {"question": "q", "answers": [{"segment_ids": [f"bikes-s{i:04d}" for i in range(9)], "answer": "a"}]}
    with pytest.raises(ValueError):
        parse_output("single_question", json.dumps(too_many))


def test_yield_report_in_summary_and_card(tmp_path):
    outcomes = []
    for replies in ([Reply.json(GOOD_SINGLE)], [Reply.json(BAD_SINGLE), Reply.json(GOOD_SINGLE)],
                    [Reply.json(TEXT_CITES), Reply.json(TEXT_CITES)]):
        with StubServer(replies) as stub, stub_client(stub) as client:
            outcomes.append(generate_dialogues(BIKES, SEGMENTS, [], client, ONE_SINGLE))
    report = _summary_of(outcomes, seconds=6.0).as_dict()["dialogue_yield"]
    assert report == {"attempted": 3, "valid_first_try": 1, "valid_after_repair": 1, "quarantined": 1,
                      "quarantined_by_reason": {"invalid_dialogue": 1}, "prompt_tokens_per_dialogue": 18.33,
                      "completion_tokens_per_dialogue": 11.67, "seconds_per_dialogue": 2.0,
                      "repairs_repeating_the_first_reply": 1}  # the text citations, sent twice
    markdown = _summary_of(outcomes, 6.0).markdown()
    assert "| valid after one repair | 1 | 33% |" in markdown
    assert "| quarantined: invalid_dialogue | 1 | 33% |" in markdown
    root = tmp_path / "c"
    card = render_card(root, _build(root), {"dialogue_yield": report}, "openai", stats={}, figures=[])
    assert "## Dialogue yield" in card and "| valid at the first try | 1 | 33% |" in card
    assert ("3 dialogue requests; per dialogue: 18.33 prompt tokens, 11.67 completion tokens, 2.0 s; "
            "1 repair replies repeated the first") in card
