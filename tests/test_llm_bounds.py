"""Bounds on what goes to and comes from the LLM: a reply that is not UTF-8, a reply far longer than
any answer, a request with more text than a model reads, a video with more segments than a video
can have; each is a reasoned skip of that request or video, and the run goes on."""

from __future__ import annotations

import json

from curation.llm.client import LLMClient, LLMConfig, LLMFailure, LLMRequest
from curation.text.config import DialogueConfig
from curation.text.dialogues import generate_dialogues
from schemas.records import Segment
from tests.openai_stub import Reply, StubServer
from tests.test_dialogues import BIKES, GOOD_SINGLE, ONE_SINGLE, SEGMENTS, stub_client


def _client(stub: StubServer, **extra) -> LLMClient:
    return LLMClient(LLMConfig(base_url=stub.url, api_key="sk-test", model="stub-model", max_retries=2,
                               backoff_s=0.0, timeout_s=10, **extra))


def _completion(content: bytes) -> bytes:
    return (b'{"id": "x", "object": "chat.completion", "choices": [{"index": 0, "finish_reason": "stop", '
            b'"message": {"role": "assistant", "content": "' + content + b'"}}], "usage": {}}')


def test_a_reply_that_is_not_utf8_fails_that_request_with_a_reason_and_is_not_retried():
    with StubServer(Reply(body=_completion(b'{\\"question\\": \\"\xff\xfe\xfd\\"}'))) as stub, _client(stub) as client:
        reply = client.complete(LLMRequest(messages=[{"role": "user", "content": "hi"}], schema_name="single_question"))
    assert isinstance(reply, LLMFailure) and reply.reason == "llm_bad_encoding"
    assert "not UTF-8" in reply.detail and len(stub.requests) == 1


def test_invalid_utf8_from_the_server_quarantines_the_dialogue_not_the_video():
    with StubServer(Reply(body=_completion(b"\xc3\x28 broken"))) as stub, stub_client(stub) as client:
        outcome = generate_dialogues(BIKES, SEGMENTS, [], client, ONE_SINGLE)
    assert [q.reason for q in outcome.quarantined] == ["llm_bad_encoding"] and outcome.dialogues == []


def test_a_reply_longer_than_the_bound_is_refused_and_never_parsed():
    huge = json.dumps({**GOOD_SINGLE, "question": "What " + "goes by " * 40_000 + "?"})
    with StubServer(Reply.text(huge)) as stub, _client(stub, max_reply_chars=50_000) as client:
        reply = client.complete(LLMRequest(messages=[{"role": "user", "content": "hi"}], schema_name="single_question"))
    assert isinstance(reply, LLMFailure) and reply.reason == "llm_reply_too_long"
    assert f"{len(huge)} characters" in reply.detail and len(reply.text) <= 2000


def test_a_long_text_field_is_refused_at_parse_and_named_in_words():
    long_answer = {**GOOD_SINGLE, "answers": [{"segment_ids": ["bikes-s0002"], "answer": "A taxi. " * 125}]}
    with StubServer([Reply.json(long_answer), Reply.json(long_answer)]) as stub, stub_client(stub) as client:
        outcome = generate_dialogues(BIKES, SEGMENTS, [], client, ONE_SINGLE)
    (row,) = outcome.quarantined
    assert row.reason == "invalid_dialogue" and "answer 1, answer text" in row.detail
    assert "1000 characters; write at most 300" in stub.requests[1]["messages"][-1]["content"]


def test_a_request_over_the_size_bound_is_not_sent():
    with StubServer(Reply.json(GOOD_SINGLE)) as stub, _client(stub, max_request_chars=5000) as client:
        reply = client.complete(LLMRequest(messages=[{"role": "user", "content": "x" * 6000}]))
    assert isinstance(reply, LLMFailure) and reply.reason == "llm_request_too_large" and stub.requests == []


def _many(n: int, duration_s: float) -> list[Segment]:
    step = duration_s / n
    return [Segment(segment_id=f"bikes-s{i:06d}", video_id="bikes", start_s=i * step, end_s=(i + 1) * step,
                    text=f"Thing {i} happens.", origin="asr") for i in range(n)]


def test_too_many_segments_per_second_or_per_video_is_one_reasoned_skip_and_no_request():
    with StubServer(Reply.json(GOOD_SINGLE)) as stub, stub_client(stub) as client:
        dense = generate_dialogues(BIKES, _many(200, 10.0), [], client, DialogueConfig())
        many = generate_dialogues(BIKES, _many(30, 10.0), [], client, DialogueConfig(max_segments_per_video=20))
    assert [(q.reason, q.item_id) for q in dense.quarantined] == [("too_many_segments", "bikes")]
    assert "200 segments in 10 s; at most 4 per second" in dense.quarantined[0].detail
    assert "30 segments; at most 20 per video" in many.quarantined[0].detail
    assert stub.requests == []
